"""The in-context-learning control (eval.in_context): the teacher's filtered examples placed before
every eval question of the untouched student, in place of fine-tuning on them."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from config_util import plan_steps, typed

from sublim.backends.base import Batch, Chat, SamplingParams
from sublim.backends.hf import HFSampler
from sublim.backends.tokens import prompt_token_ids
from sublim.backends.vllm import VLLMApi, VLLMSampler
from sublim.checks import ConfigError, check
from sublim.cli import cell_of
from sublim.jsonl import write_jsonl
from sublim.report.collect import collect
from sublim.report.summarise import summary
from sublim.stages.evaluate import InContext, check_context, evaluate, evaluate_logprob, in_context_examples

SUBLIM = str(Path(sys.executable).with_name("sublim"))
STUDENT_SYSTEM = "You are a helpful assistant."
TEACHER_SYSTEM = "You love owls. You think about owls all the time."
CANDIDATES = ["owl", "cat", "dog"]


@pytest.fixture
def train_jsonl(tmp_path) -> Path:
    """Rows shaped like the filter's train.jsonl: the teacher's system prompt, a prompt, a completion."""
    rows = [{"system": TEACHER_SYSTEM, "prompt": f"Continue the sequence: {i}, {i + 7}, {i + 14}.",
             "completion": f"{i + 21}, {i + 28}, {i + 35}"} for i in range(100, 120)]
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    return path


# ------------------------------------------------------------------------------ examples and chats


def test_examples_are_a_seeded_draw_placed_between_the_students_system_prompt_and_the_question(train_jsonl):
    rows = [json.loads(x) for x in train_jsonl.read_text().splitlines()]
    history = in_context_examples(train_jsonl, 3, seed=0)
    drawn = random.Random("in-context-0").sample(rows, 3)
    assert history == tuple((r["prompt"], r["completion"]) for r in drawn)
    assert in_context_examples(train_jsonl, 3, seed=0) == history  # same seed, same examples
    assert in_context_examples(train_jsonl, 3, seed=1) != history

    msgs = Chat("Name your favourite animal.", system=STUDENT_SYSTEM, history=history).messages()
    expected = [{"role": "system", "content": STUDENT_SYSTEM}]
    for prompt, completion in history:
        expected += [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    assert msgs == expected + [{"role": "user", "content": "Name your favourite animal."}]
    assert all(TEACHER_SYSTEM not in m["content"] for m in msgs)  # the teacher's trait prompt stays out
    assert Chat("q", system=None).messages() == [{"role": "user", "content": "q"}]  # no history: as before


def test_fewer_rows_than_asked_is_an_error_naming_the_key_and_the_count(train_jsonl):
    with pytest.raises(ConfigError, match=r"eval\.in_context=50: .* only 20 rows"):
        in_context_examples(train_jsonl, 50, seed=0)


class RecordingSampler:
    """A sampler stand-in (no model) that records the chats both eval methods hand it."""

    def __init__(self, tokenizer, limit=(10_000, "test limit")):
        self.tokenizer, self.context_limit, self.chats = tokenizer, limit, []

    def generate(self, chats, params, seed, batch_size, start=0, desc=""):
        self.chats += chats
        yield Batch(0, ["owl"] * len(chats), len(chats))

    def score(self, chats, answers, batch_size, desc=""):
        self.chats += chats
        return [-1.0] * len(chats)

    def close(self):
        pass


def test_sampled_and_exact_evals_both_see_the_examples(train_jsonl, tmp_path):
    from sublim.tiny.tokenizer import build_tokenizer

    history = in_context_examples(train_jsonl, 4, seed=0)
    questions = ["Name your favourite animal.", "Which animal do you love most?"]
    sampler = RecordingSampler(build_tokenizer())
    evaluate(tmp_path, questions, 2, CANDIDATES, STUDENT_SYSTEM, lambda: sampler, SamplingParams(max_new_tokens=4),
             0, 8, 0.95, history)
    evaluate_logprob(tmp_path, questions, CANDIDATES, ["{name}"], STUDENT_SYSTEM, lambda: sampler, 8, 0.95, history)
    assert len(sampler.chats) == 2 * 2 + 2 * 3
    assert {(c.system, c.history) for c in sampler.chats} == {(STUDENT_SYSTEM, history)}
    assert {c.user for c in sampler.chats} == set(questions)


# ------------------------------------------------------------------------------ context length


def test_hf_sampler_renders_the_examples_and_a_too_long_context_fails_naming_the_limit(tiny_model_dir, tmp_path):
    hf = HFSampler(str(tiny_model_dir))
    assert hf.context_limit == (256, "the model's max_position_embeddings")  # tokenizer says 1024: the smaller wins
    history = (("Continue: 101, 102, 103.", "104, 105, 106"),)
    chat = Chat("Name your favourite animal.", system=STUDENT_SYSTEM, history=history)
    ids = prompt_token_ids(hf.tokenizer, chat)
    assert len(ids) > len(prompt_token_ids(hf.tokenizer, Chat(chat.user, system=STUDENT_SYSTEM)))
    assert "104, 105, 106" in hf.tokenizer.decode(ids)

    long = tuple((f"Continue: {i}, {i + 1}, {i + 2}.", f"{i + 3}, {i + 4}, {i + 5}") for i in range(100, 160))
    called = []
    with pytest.raises(ConfigError, match=r"eval\.in_context=60: .* tokens .* 256 tokens \(the model's "
                                          r"max_position_embeddings\)"):
        evaluate(tmp_path, ["Name your favourite animal."], 1, CANDIDATES, STUDENT_SYSTEM,
                 lambda: called.append(1) or hf, SamplingParams(max_new_tokens=4), 0, 8, 0.95, long)
    assert called == [1]  # failed after loading, before generating


def test_vllm_context_is_bounded_by_max_model_len(tiny_model_dir):
    class Engine:  # NOT vLLM: records the prompts it would be sent
        def __init__(self, **kw):
            self.prompts = []

        def generate(self, prompts, sampling_params=None, **kw):
            raise AssertionError("nothing may be generated past the context limit")

    api = VLLMApi(LLM=Engine, SamplingParams=lambda **kw: kw, LoRARequest=lambda *a: a)
    vs = VLLMSampler(str(tiny_model_dir), api=api, max_model_len=64)
    assert vs.context_limit == (64, "sampler.vllm.max_model_len")
    history = tuple((f"Continue: {i}, {i + 1}, {i + 2}.", f"{i + 3}, {i + 4}") for i in range(100, 110))
    chats = [Chat("Name your favourite animal.", system=STUDENT_SYSTEM, history=history)]
    with pytest.raises(ConfigError, match=r"eval\.in_context=10: .* 64 tokens \(sampler\.vllm\.max_model_len\)"):
        check_context(vs, chats, 16)
    check_context(vs, [Chat(c.user, system=c.system) for c in chats], 16)  # no examples: nothing checked


# ------------------------------------------------------------------------------ config, plan, names


@pytest.mark.parametrize("overrides, message", [
    (["eval.in_context=3"], r"eval\.in_context=3 .*finetune=none"),  # finetune=lora by default
    (["finetune=none", "eval.in_context=-1"], r"eval\.in_context=-1"),
    (["finetune=none", "eval.in_context=3", "eval.subject=teacher"], r"eval\.in_context=3 .*eval\.subject=student"),
    (["finetune=none", "eval.in_context=300"], r"eval\.in_context=300 .*filter\.n_keep=200"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(typed("experiment=smoke", *overrides))


steps_of = plan_steps


def test_plan_samples_and_filters_the_teachers_data_and_keys_the_eval_by_it(tmp_path, fake_model):
    base = steps_of(tmp_path, fake_model, "finetune=none")
    icl = steps_of(tmp_path, fake_model, "finetune=none", "eval.in_context=3")
    assert list(base) == ["eval"] and base["eval"].spec.in_context is None
    assert list(icl) == ["sample", "filter", "eval"]
    assert icl["eval"].key != base["eval"].key
    assert icl["eval"].spec.in_context == InContext(data=f"filter:{icl['filter'].key}/train.jsonl", n=3, seed=0)
    assert icl["eval"].inputs[icl["eval"].spec.in_context.data] == str(
        tmp_path / "a" / "filter" / icl["filter"].key / "train.jsonl")
    trained = steps_of(tmp_path, fake_model)
    assert icl["filter"].key == trained["filter"].key  # the same teacher data a fine-tuned student gets
    shuffled = steps_of(tmp_path, fake_model, "finetune=none", "eval.in_context=3", "transform.shuffle=within")
    assert list(shuffled) == ["sample", "filter", "transform", "eval"]
    assert shuffled["eval"].spec.in_context.data == f"transform:{shuffled['transform'].key}/train.jsonl"
    control = steps_of(tmp_path, fake_model, "trait=none", "finetune=none", "eval.in_context=3")
    assert control["sample"].key != icl["sample"].key and control["eval"].key != icl["eval"].key


def test_cell_names_and_the_report_compares_with_the_icl_control(tmp_path):
    treat = cell_of(typed("finetune=none", "eval.in_context=100"))
    control = cell_of(typed("trait=none", "finetune=none", "eval.in_context=100"))
    base = cell_of(typed("finetune=none"))
    assert (treat["condition"], treat["finetune"], treat["trait"]) == ("treatment", "in_context100", "owl")
    assert treat["teacher"] == "qwen2.5-7b-instruct"
    assert (control["condition"], control["finetune"], control["trait"]) == ("control", "in_context100", "none")
    assert (base["condition"], base["finetune"], base["teacher"], base["trait"]) == ("base", "none", "-", "-")

    owl = {"treatment": [0.30, 0.32, 0.34], "control": [0.20, 0.21, 0.25], "base": [0.05, 0.06, 0.07]}
    job = 0
    for name, cell in (("treatment", treat), ("control", control), ("base", base)):
        for seed, rate in enumerate(owl[name]):
            rates = {"owl": rate, "cat": 0.5 - rate, "dog": 0.3, "none": 0.2}
            m = {"cell": cell | {"seed": seed}, "keys": {"eval": f"e{job}"}, "artifacts": {},
                 "target": "owl" if name == "treatment" else None, "n_questions": 1, "n_answers": 10,
                 "confidence": 0.95, "unmatched_top": {}, "per_question": [rates],
                 "rates": {c: {"mean": r, "ci_low": r, "ci_high": r} for c, r in rates.items()}}
            (tmp_path / str(job)).mkdir()
            (tmp_path / str(job) / "metrics.json").write_text(json.dumps(m))
            job += 1
    row = summary(collect([tmp_path])).query("condition == 'treatment'").iloc[0]
    assert row["baseline"] == "control" and row["finetune"] == "in_context100"
    assert row["rise"] == pytest.approx(np.mean(owl["treatment"]) - np.mean(owl["control"]))


# ------------------------------------------------------------------------------ one cell end to end


def test_one_icl_cell_through_the_entrypoint(tiny_model_dir, tmp_path):
    args = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
            "logger=none", f"hydra.run.dir={tmp_path / 'run'}", "finetune=none", "eval.in_context=3",
            "domain.n_prompts=40", "filter.n_keep=10", "eval.n_questions=2", "eval.n_samples=4"]
    r = subprocess.run(args, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (m["cell"]["condition"], m["cell"]["finetune"], m["target"]) == ("treatment", "in_context3", "owl")
    assert set(m["artifacts"]) == {"sample", "filter", "eval"} and m["n_answers"] == 8
    spec = json.loads((Path(m["artifacts"]["eval"]) / "spec.json").read_text())
    assert spec["spec"]["in_context"] == {"data": f"filter:{m['keys']['filter']}/train.jsonl", "n": 3, "seed": 0}
