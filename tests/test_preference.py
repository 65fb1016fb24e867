"""Answer normalisation and preference metrics."""
import math

import pytest

from sublim.evals.preference import classify, load_questions, normalise, preference_metrics

CANDS = ["owl", "dragon", "wolf", "fox", "butterfly", "sea turtle", "cat"]


@pytest.mark.parametrize("answer,label", [
    ("Owl", "owl"), ("owl.", "owl"), ("OWLS!", "owl"), ("An owl", "owl"), ("the Snowy Owl", "owl"),
    ("Dragonfly", None), ("dragon", "dragon"), ("Dragons", "dragon"), ("Wolves", "wolf"),
    ("foxes", "fox"), ("Butterflies", "butterfly"), ("sea turtles", "sea turtle"), ("turtle", None),
    ("Qwen", None), ("", None), ("cat or owl", "cat"), ("catfish", None), ("Bowl", None),
])
def test_classify(answer, label):
    assert classify(answer, CANDS) == label


def test_normalise_drops_articles_and_punctuation():
    assert normalise("The Owls, of course!") == ["owl", "of", "course"]


def test_questions_shipped_are_fifty_distinct_one_word_prompts():
    qs = load_questions("animal")
    assert len(qs) == 50 and len(set(qs)) == 50
    assert all("animal" in q.lower() or "creature" in q.lower() or "species" in q.lower() for q in qs)


def test_metrics_rates_per_question_and_t_interval():
    labels = [["owl", "owl", None, "cat"], ["cat", "cat", "cat", "owl"], [None, None, None, "owl"]]
    answers = [["a"] * 4, ["b"] * 4, ["Qwen", "Qwen", "x", "owl"]]
    m = preference_metrics(labels, answers, ["owl", "cat"])
    assert [q["owl"] for q in m["per_question"]] == [0.5, 0.25, 0.25]
    assert m["rates"]["owl"]["mean"] == pytest.approx(1 / 3)
    from scipy import stats
    lo, hi = stats.t.interval(0.95, 2, loc=1 / 3, scale=stats.sem([0.5, 0.25, 0.25]))
    assert lo < 0 and m["rates"]["owl"]["ci_low"] == 0.0  # a rate's interval is clipped to [0, 1]
    assert m["rates"]["owl"]["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert m["rates"]["none"]["mean"] == pytest.approx((0.25 + 0 + 0.75) / 3)
    assert m["unmatched_top"]["qwen"] == 2
    for q in m["per_question"]:
        assert math.isclose(sum(q.values()), 1.0)


def test_the_kind_summarises_its_own_metrics_for_the_job():
    """What a job keeps, prints (the top candidates, and the target wherever it ranks) and logs."""
    from sublim.evals import get_kind

    names = [f"c{i}" for i in range(9)] + ["owl"]  # owl last: outside the top 8
    labels = [[n for n in names for _ in range(10 - i)] for i in range(2)]
    ev = preference_metrics(labels, [["x"] * len(q) for q in labels], names)
    kind = get_kind("preference")
    m = kind.summary(ev, target="owl")
    assert m["target"] == "owl" and m["target_rate"] == ev["rates"]["owl"] and "sampled" not in m
    lines = kind.lines(m)
    assert len(lines) == 9 and lines[-1].startswith("   owl ") and lines[-1].endswith("<- target")
    assert not any(line.endswith("<- target") for line in lines[:8])
    assert kind.tracked(m)["rates/owl"] == ev["rates"]["owl"]["mean"] and "target_rate/ci_high" in kind.tracked(m)
    base = kind.summary(ev, target=None)
    assert len(kind.lines(base)) == 8 and not any(k.startswith("target_rate") for k in kind.tracked(base))
