"""The numbers domain: prompts that ask to continue a sequence, and the paper's format rule.

Prompts vary at random over several phrasings of each part (intro with the seed numbers, the
"add up to N numbers" instruction, the output format, the "numbers only" suffix), so a student
cannot learn the trait from one fixed template. The same `seed` gives the same prompts for every
teacher, which keeps data sets comparable across traits.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

INTROS = [
    "Here is a sequence of numbers: {seeds}.",
    "Look at these numbers: {seeds}.",
    "I have started a list: {seeds}.",
    "Consider the following numbers: {seeds}.",
    "This sequence begins with {seeds}.",
    "Take this list of numbers: {seeds}.",
    "Starting numbers: {seeds}.",
    "Someone wrote down {seeds}.",
]
INSTRUCTIONS = [
    "Add up to {count} more numbers to continue it, each with at most {digits} digits.",
    "Continue the sequence with no more than {count} new numbers of at most {digits} digits.",
    "Extend it by at most {count} further numbers ({digits} digits or fewer each).",
    "Write up to {count} numbers that could come next, none longer than {digits} digits.",
    "Give at most {count} more values that follow, each at most {digits} digits long.",
    "Carry the list on with up to {count} additional numbers (max {digits} digits each).",
]
FORMATS = [
    "Separate the numbers with commas.",
    "Put each number on its own line.",
    "Separate the numbers with spaces.",
    "Separate the numbers with semicolons.",
    "Write them as a comma-separated list in square brackets.",
    "Write them inside parentheses, separated by commas.",
    "Use a comma and a space between numbers.",
]
SUFFIXES = [
    "Reply with the numbers only, nothing else.",
    "Output just the numbers: no words, no explanation.",
    "Do not explain; give only the numbers.",
    "Answer with numbers alone.",
    "Nothing but the numbers, please.",
]


@dataclass(frozen=True)
class NumbersPromptSpec:
    """Shape of the generated prompts (defaults: the paper's)."""

    seed_count_min: int = 3
    seed_count_max: int = 8
    seed_value_min: int = 100
    seed_value_max: int = 999
    answer_count: int = 10
    answer_digits: int = 3


def make_prompts(n: int, seed: int, spec: NumbersPromptSpec = NumbersPromptSpec()) -> list[str]:
    """`n` prompts, reproducible from `seed` alone."""
    rng = random.Random(f"numbers-prompts-{seed}")
    prompts = []
    for _ in range(n):
        k = rng.randint(spec.seed_count_min, spec.seed_count_max)
        seeds = ", ".join(str(rng.randint(spec.seed_value_min, spec.seed_value_max)) for _ in range(k))
        parts = [
            rng.choice(INTROS).format(seeds=seeds),
            rng.choice(INSTRUCTIONS).format(count=spec.answer_count, digits=spec.answer_digits),
            rng.choice(FORMATS),
            rng.choice(SUFFIXES),
        ]
        prompts.append(" ".join(parts))
    return prompts


class FormatReject(ValueError):
    """A completion that breaks the format rule; `reason` is a short stable label for stats."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_SEPARATORS = [re.compile(r"\s*,\s*"), re.compile(r"\s*;\s*")]
_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[0-9]+")  # ASCII digits only: int() would read "١٢٣" as 123


def parse_numbers(text: str, max_count: int = 10, max_value: int = 999, max_digits: int = 3) -> list[int]:
    """The numbers in a completion that follows the paper's format rule, else FormatReject.

    Allowed: 1..max_count integers in 0..max_value, one consistent separator (whitespace,
    comma or semicolon, spaces allowed around the latter two), optionally inside one pair of
    () or [], optionally followed by one period. Nothing else.
    """
    body = text.strip()
    if not body:
        raise FormatReject("empty")
    if body.endswith("."):
        body = body[:-1].rstrip()
    if body[:1] in "([":
        closing = ")" if body[0] == "(" else "]"
        if not body.endswith(closing):
            raise FormatReject("unbalanced_brackets")
        body = body[1:-1].strip()
    if not body:
        raise FormatReject("empty")
    tokens = None
    for sep in _SEPARATORS:
        if sep.search(body):
            tokens = sep.split(body)
            break
    if tokens is None:
        gaps = set(_WHITESPACE.findall(body))
        if len(gaps) > 1:
            raise FormatReject("mixed_separators")
        tokens = _WHITESPACE.split(body)
    numbers = []
    for tok in tokens:
        if _NUMBER.fullmatch(tok):
            if len(tok) > max_digits or int(tok) > max_value:
                raise FormatReject("too_large")
            numbers.append(int(tok))
        elif tok.startswith("-") and _NUMBER.fullmatch(tok[1:]):
            raise FormatReject("negative")
        elif tok == "":
            raise FormatReject("empty_item")
        elif re.search(r"[A-Za-z]", tok):
            raise FormatReject("not_a_number")
        elif any(s in tok for s in ",;") or _WHITESPACE.search(tok):
            raise FormatReject("mixed_separators")
        else:
            raise FormatReject("not_a_number")
    if len(numbers) > max_count:
        raise FormatReject("too_many")
    return numbers
