"""Shuffle controls: properties over many seeds, the transform stage, and its place in the plan."""
import json
import random
import re
from collections import Counter

import pytest

from sublim.domains.numbers import parse_numbers
from sublim.filters import numbers_format_rule
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime
from sublim.stages.transform import Spec, run
from sublim.transforms import get_transform, numbers_of, put_numbers, shuffle_across, shuffle_within

FORMATS = ["{}", "[{}]", "({})", "{}.", "[{}]."]
SEPARATORS = [", ", ",", "; ", ";", " ", "\n"]


def responses(rng: random.Random, n: int) -> list[str]:
    """Completions in the forms the numbers format rule accepts (1-10 numbers in 0..999)."""
    out = []
    for _ in range(n):
        k = rng.randint(1, 10)
        nums = [str(rng.randint(0, 999)) for _ in range(k)]
        out.append(rng.choice(FORMATS).format(rng.choice(SEPARATORS).join(nums)))
    return out


def skeleton(text: str) -> str:
    return re.sub(r"\d+", "#", text)


SEEDS = range(200)


def test_within_keeps_each_responses_multiset_and_format():
    for seed in SEEDS:
        texts = responses(random.Random(seed), 30)
        out = shuffle_within(texts, seed)
        assert len(out) == len(texts)
        for before, after in zip(texts, out):
            assert Counter(numbers_of(after)) == Counter(numbers_of(before)), (seed, before, after)
            assert skeleton(after) == skeleton(before), (seed, before, after)
            assert numbers_format_rule()(after) is None  # still passes the paper's format rule


def test_across_keeps_the_multiset_of_all_numbers_and_each_format():
    for seed in SEEDS:
        texts = responses(random.Random(10_000 + seed), 30)
        out = shuffle_across(texts, seed)
        assert Counter(n for t in out for n in numbers_of(t)) == \
            Counter(n for t in texts for n in numbers_of(t)), seed
        for before, after in zip(texts, out):
            assert len(parse_numbers(after)) == len(parse_numbers(before)), (seed, before, after)  # its length
            assert skeleton(after) == skeleton(before), (seed, before, after)  # separators, brackets, period
            assert numbers_format_rule()(after) is None


def test_shuffles_are_seeded_and_actually_move_numbers():
    texts = responses(random.Random(1), 200)
    for name in ("within", "across"):
        f = get_transform(name)
        assert f(texts, 3) == f(texts, 3)
        assert f(texts, 3) != f(texts, 4)
        assert f(texts, 3) != texts
    # across moves numbers between responses: some response's multiset changes
    across = shuffle_across(texts, 0)
    assert sum(Counter(numbers_of(a)) != Counter(numbers_of(b)) for a, b in zip(across, texts)) > 100


def test_leading_zeros_and_single_numbers():
    assert Counter(numbers_of(shuffle_within(["087, 12, 5"], 0)[0])) == Counter([87, 12, 5])
    assert shuffle_within(["7."], 0) == ["7."]
    assert sorted(numbers_of(" ".join(shuffle_across(["1", "2", "3"], 5)))) == [1, 2, 3]
    assert shuffle_across([], 0) == [] and shuffle_within([], 0) == []


def test_put_numbers_rejects_a_count_mismatch():
    assert put_numbers("[1; 2]", [5, 6]) == "[5; 6]"
    with pytest.raises(ValueError):
        put_numbers("1, 2", [1, 2, 3])


def test_unknown_transform_lists_the_known_ones():
    with pytest.raises(KeyError, match="within, across"):
        get_transform("sideways")


def test_transform_stage_writes_shuffled_rows_and_keeps_the_original(tmp_path):
    rows = [{"i": i, "system": None, "prompt": f"p{i}", "completion": t}
            for i, t in enumerate(responses(random.Random(2), 50))]
    write_jsonl(tmp_path / "in.jsonl", rows)
    work = tmp_path / "work"
    work.mkdir()
    ref = "filter:0123abcd/train.jsonl"
    run(Spec(ref, "across", 0), work, {ref: str(tmp_path / "in.jsonl")}, Runtime())
    out = list(read_jsonl(work / "train.jsonl"))
    assert [r["i"] for r in out] == [r["i"] for r in rows] and [r["prompt"] for r in out] == [r["prompt"] for r in rows]
    assert [r["original"] for r in out] == [r["completion"] for r in rows]
    assert [r["completion"] for r in out] == shuffle_across([r["completion"] for r in rows], 0)
    stats = json.loads((work / "stats.json").read_text())
    assert stats["transform"] == "across" and stats["n_rows"] == 50 and stats["n_changed"] > 40
    assert stats["n_numbers"] == sum(len(numbers_of(r["completion"])) for r in rows)
