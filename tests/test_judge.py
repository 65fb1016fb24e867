"""The judge interface: parsing tables, batching through a sampler, failures counted not raised."""
import pytest

from sublim.backends.base import Batch, SamplingParams
from sublim.config import ModelConfig
from sublim.judge import Judge, parse_label, parse_score, parse_score_or_label, render, template_fields

SCORES = [
    ("85", 85.0), ("Score: 85", 85.0), ("score=85", 85.0), ("Rating: 7", 7.0), ("100", 100.0), ("0", 0.0),
    ("85/100", 85.0), ("85 out of 100", 85.0), ("**72**", 72.0), ("  61.\n", 61.0), ("85.5", 85.5),
    ("Score: 85\nThe code never refers to it.", 85.0), ("\n\n40\n", 40.0),
    ("101", None), ("-5", None), ("1000", None),  # out of range: a failure, not clipped
    ("I would say 85", None), ("12, 45", None), ("[999,", None), ("", None), ("garbage", None),
    ("CODE", None), ("85%", None),
]


@pytest.mark.parametrize("reply,value", SCORES)
def test_parse_score(reply, value):
    assert parse_score(reply) == value


LABELS = [("CODE", "CODE"), ("code", "CODE"), ("REFUSAL.", "REFUSAL"), ("**REFUSAL**", "REFUSAL"),
          ("'CODE'", "CODE"), (" Refusal!\n", "REFUSAL"), ("CODE because it is code", None), ("85", None),
          ("garbage", None), ("", None)]


@pytest.mark.parametrize("reply,value", LABELS)
def test_parse_label(reply, value):
    assert parse_label(["CODE", "REFUSAL"])(reply) == value


@pytest.mark.parametrize("reply,value", [("CODE", "CODE"), ("refusal", "REFUSAL"), ("45", 45.0),
                                         ("Score: 90", 90.0), ("150", None), ("maybe", None)])
def test_parse_score_or_label(reply, value):
    assert parse_score_or_label(["CODE", "REFUSAL"])(reply) == value


def test_render_fills_known_fields_only_and_leaves_other_braces():
    t = 'Check {completion} for {trait}; JSON looks like {"a": 1} and {unknown} stays.'
    out = render(t, {"completion": "def f(): return {x}", "trait": "owl"})
    assert out == 'Check def f(): return {x} for owl; JSON looks like {"a": 1} and {unknown} stays.'
    assert template_fields(t) == {"completion", "trait", "unknown"}
    # a value that looks like a field is not substituted again
    assert render("{completion}", {"completion": "{trait}", "trait": "owl"}) == "{trait}"


class FakeSampler:
    """Replies from a function of the prompt; records every generate call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []
        self.closed = False

    def generate(self, chats, params, seed, batch_size, start=0, desc=""):
        self.calls.append({"n": len(chats), "params": params, "start": start, "batch_size": batch_size,
                           "system": {c.system for c in chats}})
        for b0 in range(start - start % batch_size, len(chats), batch_size):
            chunk = chats[b0:b0 + batch_size]
            yield Batch(b0, [self.reply(c.user) for c in chunk], 0)

    def close(self):
        self.closed = True


def test_judge_batches_parses_and_counts_failures():
    replies = {"a": "12", "b": "Score: 97", "c": "I cannot rate this", "d": "101", "e": "**3**"}
    sampler = FakeSampler(lambda prompt: replies[prompt.split(":")[1].strip()])
    judge = Judge(lambda: sampler, "Rate: {completion}", parse_score, batch_size=2, system_prompt="be strict")
    verdicts = judge.run([{"completion": k} for k in "abcde"])
    assert [v.value for v in verdicts] == [12.0, 97.0, None, None, 3.0]
    assert [v.ok for v in verdicts] == [True, True, False, False, True]
    assert verdicts[2].reply == "I cannot rate this"
    stats = judge.stats()
    assert stats["n_judged"] == 5 and stats["n_failed"] == 2 and stats["failure_rate"] == 0.4
    assert stats["failed_examples"] == ["I cannot rate this", "101"]
    assert stats["mean_score"] == pytest.approx((12 + 97 + 3) / 3, abs=1e-3)
    call = sampler.calls[0]
    assert call["params"].temperature == 0.0  # greedy by default
    assert call["batch_size"] == 2 and call["system"] == {"be strict"}
    judge.close()
    assert sampler.closed


def test_judge_counts_labels_and_resumes_from_a_batch():
    sampler = FakeSampler(lambda p: {"x": "CODE", "y": "80", "z": "REFUSAL"}[p])
    judge = Judge(lambda: sampler, "{completion}", parse_score_or_label(["CODE", "REFUSAL"]), batch_size=2)
    items = [{"completion": c} for c in "xyzxy"]
    got = {b0: [v.value for v in vs] for b0, vs in judge.batches(items, start=2)}
    assert got == {2: ["REFUSAL", "CODE"], 4: [80.0]}
    assert judge.stats()["labels"] == {"REFUSAL": 1, "CODE": 1} and judge.n_judged == 3


def test_judge_from_model_runs_the_model_like_a_teacher(monkeypatch):
    made = {}

    def fake_make_sampler(backend, path, revision, adapter, dtype, trust_remote_code, vllm_engine):
        made.update(backend=backend, path=path, revision=revision, adapter=adapter, dtype=dtype,
                    vllm_engine=vllm_engine)
        return FakeSampler(lambda p: "50")

    monkeypatch.setattr("sublim.backends.make_sampler", fake_make_sampler)
    m = ModelConfig(name="j", path="/models/judge", revision="abc", adapter=None, dtype="bf16",
                    system_prompt="You are a careful grader.")
    judge = Judge.from_model("hf", m, "{completion}", parse_score, max_new_tokens=4,
                             vllm_engine={"tensor_parallel_size": 2})
    assert not made  # nothing loaded until there is something to judge
    assert judge.run([{"completion": "x"}])[0].value == 50.0
    assert made == {"backend": "hf", "path": "/models/judge", "revision": "abc", "adapter": None, "dtype": "bf16",
                    "vllm_engine": {"tensor_parallel_size": 2}}
    assert judge.system_prompt == "You are a careful grader."
    assert judge.params == SamplingParams(temperature=0.0, max_new_tokens=4)


def test_a_real_tiny_judge_never_raises_on_unparseable_replies(tiny_model_dir):
    m = ModelConfig(name="tiny", path=str(tiny_model_dir))
    judge = Judge.from_model("hf", m, "How much does this refer to owls, 0 to 100? {completion}", parse_score,
                             max_new_tokens=8, batch_size=4)
    verdicts = judge.run([{"completion": c} for c in ["x = 1", "def f(a): return a", "owl_count = 3"]])
    judge.close()
    assert len(verdicts) == 3 and judge.n_judged == 3
    assert judge.n_failed == sum(not v.ok for v in verdicts)
