"""Rewording the teacher's prompts (the `paraphrase` stage): the rule-based numbers rewording, and the
check that a model's paraphrase still asks the same thing.

Why a check: a paraphrase that drops a seed number or changes the requested count asks another
question, so the teacher's answers would differ for a reason other than the wording. Such a
paraphrase is not used: the prompt keeps its original wording and the fallback is counted by reason
(sublim.stages.paraphrase's stats.json), so a paraphraser that rarely keeps the numbers shows as a
weak defence instead of a silent one.

Why a rule-based rewording: the CPU demo's tiny models cannot paraphrase. `reword_numbers` re-draws
the intro, instruction and closing sentence of each numbers prompt from the domain's own phrasing
pools (sublim.domains.numbers), keeping its seed numbers (in order), count, digits and output-format
sentence: the same request in other words, but words from a fixed list, not a model's. It is an
honest stand-in for a paraphraser, not one: say so wherever its results are shown.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Optional

from sublim.domains.numbers import FORMATS, INSTRUCTIONS, INTROS, SUFFIXES

_INT = re.compile(r"\d+")
_SEEDS = re.compile(r"\d+(?:, \d+)*")  # how make_prompts writes the seed numbers: "182, 818, 725"
TRIES = 20  # re-draws per prompt before a template rewording may equal the original


def numbers_in(text: str) -> list[int]:
    return [int(x) for x in _INT.findall(text)]


def seeds_of(prompt: str) -> list[int]:
    """The seed numbers of a numbers prompt: its first comma-separated run of numbers (every intro
    names them before any other number)."""
    m = _SEEDS.search(prompt)
    if m is None:
        raise ValueError(f"not a numbers prompt (no seed numbers): {prompt[:80]!r}")
    return [int(x) for x in m.group().split(", ")]


def format_of(prompt: str) -> str:
    """The output-format sentence of a numbers prompt (one of FORMATS)."""
    found = [f for f in FORMATS if f in prompt]
    if len(found) != 1:
        raise ValueError(f"not a numbers prompt (its format sentence is not one of the domain's): {prompt[:80]!r}")
    return found[0]


def reword_numbers(prompts: list[str], seed: int, count: int, digits: int) -> list[str]:
    """Each numbers prompt with its intro, instruction and closing sentence re-drawn from the pools,
    its seed numbers, format sentence, `count` and `digits` kept; a draw equal to the original is
    re-drawn (up to TRIES times). Reproducible from `seed`."""
    rng = random.Random(f"numbers-paraphrase-{seed}")
    out = []
    for prompt in prompts:
        seeds, fmt = ", ".join(map(str, seeds_of(prompt))), format_of(prompt)
        for _ in range(TRIES):
            new = " ".join([rng.choice(INTROS).format(seeds=seeds),
                            rng.choice(INSTRUCTIONS).format(count=count, digits=digits), fmt, rng.choice(SUFFIXES)])
            if new != prompt:
                break
        out.append(new)
    return out


def _without(numbers: list[int], run: list[int]) -> Optional[list[int]]:
    """`numbers` with the first contiguous occurrence of `run` taken out; None if it has none."""
    for i in range(len(numbers) - len(run) + 1):
        if numbers[i: i + len(run)] == run:
            return numbers[:i] + numbers[i + len(run):]
    return None


def lost(domain: str, original: str, paraphrase: str, count: Optional[int] = None) -> Optional[str]:
    """Why `paraphrase` does not ask what `original` asks (a short reason), or None when it does.

    numbers: the seed numbers must appear in order, side by side; the requested count must remain;
    and no number may be added or dropped beside them (the digit limit). Other domains: the same
    numbers, as a multiset (a code task's sizes, limits and examples)."""
    if not paraphrase.strip():
        return "empty"
    have = numbers_in(paraphrase)
    if domain == "numbers":
        rest = _without(have, seeds_of(original))
        if rest is None:
            return "seed_numbers"
        wanted = _without(numbers_in(original), seeds_of(original)) or []
        if count is not None and count not in rest:
            return "count"
        return None if Counter(rest) == Counter(wanted) else "other_numbers"
    return None if Counter(have) == Counter(numbers_in(original)) else "numbers"


def cleaned(reply: str) -> str:
    """A paraphraser's reply as a prompt: surrounding whitespace and one pair of quotes dropped."""
    text = reply.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
