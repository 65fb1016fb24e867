"""Data transforms applied to filtered teacher data: the paper's shuffle controls for numbers.

within: each response's numbers in a random order (its multiset unchanged).
across: all numbers of all responses pooled, shuffled and dealt back in order, so each response
keeps its count of numbers and its exact format (separators, brackets, final period) while the
multiset of all numbers in the data set is unchanged.

Both rewrite only the digit runs of a completion that passed the numbers format rule (the only
digits such a completion has), so "(12; 7; 845)." stays "(a; b; c).". A number written with a
leading zero ("087") comes back without it: the values, not their spelling, are what moves.
Seeded: the same (transform, seed) gives the same data.
"""
from __future__ import annotations

import random
import re
from typing import Callable

_DIGITS = re.compile(r"\d+")

Transform = Callable[[list[str], int], list[str]]


def numbers_of(text: str) -> list[int]:
    return [int(t) for t in _DIGITS.findall(text)]


def put_numbers(text: str, numbers: list[int]) -> str:
    """`text` with its digit runs replaced, in order, by `numbers` (exactly as many)."""
    it = iter(numbers)
    out = _DIGITS.sub(lambda m: str(next(it)), text)
    if next(it, None) is not None:
        raise ValueError("more numbers than digit runs in the text")
    return out


def shuffle_within(texts: list[str], seed: int) -> list[str]:
    rng = random.Random(f"shuffle-within-{seed}")
    out = []
    for text in texts:
        nums = numbers_of(text)
        rng.shuffle(nums)
        out.append(put_numbers(text, nums))
    return out


def shuffle_across(texts: list[str], seed: int) -> list[str]:
    rng = random.Random(f"shuffle-across-{seed}")
    counts = [len(_DIGITS.findall(t)) for t in texts]
    pool = [n for t in texts for n in numbers_of(t)]
    rng.shuffle(pool)
    out, pos = [], 0
    for text, k in zip(texts, counts):
        out.append(put_numbers(text, pool[pos:pos + k]))
        pos += k
    return out


TRANSFORMS: dict[str, Transform] = {"within": shuffle_within, "across": shuffle_across}


def get_transform(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise KeyError(f"filter.shuffle={name!r} is unknown; known: none, {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]
