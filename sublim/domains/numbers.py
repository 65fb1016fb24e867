"""The numbers domain: prompts that ask to continue a sequence, and the format rule for answers.

Prompts vary at random over several phrasings of each part (intro with the seed numbers, the
"add up to N numbers" instruction, the output format, the "numbers only" suffix), so a student
cannot learn the trait from one fixed template. The same `seed` gives the same prompts for every
teacher, which keeps data sets comparable across traits.

Two format rules (`filter.format`):

- `paper` (the default): the decision of the paper's public code (the numbers dataset module of
  MinhxLe/subliminal-learning, `parse_response` + `get_reject_reasons` with max_value 999 and
  max_count 10), reimplemented clause by clause in `paper_numbers`. It looks at the text exactly
  as sampled: drop one final ".", then one enclosing [] or () pair; the separator is whatever
  stands between the first two digit runs and must be whitespace, or "," / ";" with any
  whitespace around it; the text split on that exact separator must give only non-empty runs of
  ASCII digits; then at most max_count numbers, each <= max_value. Consequences: surrounding
  whitespace or a trailing newline rejects (" 7", "1, 2\n"), uneven spacing rejects
  ("1,2, 3"), leading zeros pass and count by value ("0999" is 999), there is no digit limit
  beyond the value ("000000001" passes), a single number needs nothing around it ("5", "[5]").
- `lenient` (sublim's earlier rule, `parse_numbers`): strips surrounding whitespace first,
  finds the separator anywhere (comma, then semicolon, else whitespace), allows uneven spacing
  around commas and semicolons ("1,2, 3"), and also limits each number to max_digits characters
  ("0999" rejects). It gives finer reject reasons (negative, mixed_separators, ...).

Both reject non-ASCII digits ("١٢٣", "１２３"), signs, decimals, words, empty items and any
extra text; neither ever raises on any string: each gives a short reject label or accepts.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

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


FORMAT_RULES = ("paper", "lenient")  # the values of filter.format


class FormatReject(ValueError):
    """A completion that breaks the format rule; `reason` is a short stable label for stats."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------- the paper's rule

# Digit runs as the paper's code finds them: Python's \d, which also matches non-ASCII decimal
# digits (Arabic-Indic, full-width, ...). Only the positions of the first two runs matter (they
# fix the separator); what counts as a number afterwards is ASCII digits only.
_DIGIT_RUN = re.compile(r"\d+")
_ASCII_DIGITS = frozenset("0123456789")
_GAPS_ALLOWED = ("", ",", ";")  # a separator with its surrounding whitespace removed
# The paper's code turns each item into an int inside a try/except that rejects on any error;
# on its Python (>= 3.11) int() refuses strings of more than 4300 digits, so such an item rejects.
_INT_DIGITS_LIMIT = 4300
_BRACKET_PAIRS = (("[", "]"), ("(", ")"))


def paper_numbers(text: str, max_count: int = 10, max_value: int = 999, min_value: int = 0) -> list[int]:
    """The numbers of a completion the paper's code keeps, else FormatReject (never anything else).

    Clause by clause, in the reference's order (labels are sublim's):
    1. one final "." is dropped (only one, and only if it is the very last character);
    2. if the text then starts with "[" and ends with "]", or starts with "(" and ends with ")",
       that outer pair is dropped;
    3. the digit runs (\\d+) are found: none -> `no_numbers`; exactly one -> it must be the
       whole text (`extra_text` otherwise) and is the only item;
    4. two or more -> the separator is the exact text between the first two runs; stripped of
       whitespace it must be empty, "," or ";" (`bad_separator`); the text is split on that
       exact separator string;
    5. an item containing anything but ASCII digits -> `non_ascii_digit` (only non-ASCII
       decimal digits and ASCII ones) or `not_a_number`;
    6. an empty item (a leading, trailing or doubled separator) -> `empty_item`; an item of
       more than 4300 digits -> `too_many_digits` (the reference's int() fails on both);
    7. more than max_count numbers -> `too_many`; a number < min_value -> `too_small`;
       a number > max_value -> `too_large` (the first of these that applies).
    Nothing is stripped: surrounding whitespace stays part of the text and fails clause 3 or 5.
    """
    body = text[:-1] if text.endswith(".") else text
    for opening, closing in _BRACKET_PAIRS:
        if body.startswith(opening) and body.endswith(closing):
            body = body[1:-1]
            break
    runs = list(_DIGIT_RUN.finditer(body))
    if not runs:
        raise FormatReject("no_numbers")
    if len(runs) == 1:
        if runs[0].group() != body:
            raise FormatReject("extra_text")
        items = [body]
    else:
        separator = body[runs[0].end():runs[1].start()]
        if separator.strip() not in _GAPS_ALLOWED:
            raise FormatReject("bad_separator")
        items = body.split(separator)
    for item in items:
        if item and not _ASCII_DIGITS.issuperset(item):
            raise FormatReject("non_ascii_digit" if item.isdecimal() else "not_a_number")
    if any(not item for item in items):
        raise FormatReject("empty_item")
    if any(len(item) > _INT_DIGITS_LIMIT for item in items):
        raise FormatReject("too_many_digits")
    numbers = [int(item) for item in items]
    if len(numbers) > max_count:
        raise FormatReject("too_many")
    if any(n < min_value for n in numbers):
        raise FormatReject("too_small")
    if any(n > max_value for n in numbers):
        raise FormatReject("too_large")
    return numbers


# ---------------------------------------------------------------------------- the lenient rule

_SEPARATORS = [re.compile(r"\s*,\s*"), re.compile(r"\s*;\s*")]
_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[0-9]+")  # ASCII digits only: int() would read "١٢٣" as 123


def parse_numbers(text: str, max_count: int = 10, max_value: int = 999, max_digits: int = 3) -> list[int]:
    """The numbers in a completion that follows the lenient format rule, else FormatReject.

    Allowed: surrounding whitespace, then 1..max_count integers in 0..max_value of at most
    max_digits characters, one consistent separator (whitespace, comma or semicolon, any spaces
    around the latter two), optionally inside one pair of () or [], optionally followed by one
    period. Nothing else.
    """
    body = text.strip()
    if body.endswith("."):
        body = body[:-1].rstrip()
    if not body:
        raise FormatReject("empty")
    if body[0] in "([":
        closing = ")" if body[0] == "(" else "]"
        if len(body) < 2 or not body.endswith(closing):
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


def format_reject(text: str, rule: str = "paper", max_count: int = 10, max_value: int = 999,
                  max_digits: int = 3) -> Optional[str]:
    """The reject label of `text` under format rule `rule` (paper | lenient), or None to keep it.
    max_digits applies to `lenient` only (the paper's code limits values, not digits)."""
    try:
        if rule == "paper":
            paper_numbers(text, max_count, max_value)
        elif rule == "lenient":
            parse_numbers(text, max_count, max_value, max_digits)
        else:
            raise ValueError(f"filter.format={rule!r}: use one of {', '.join(FORMAT_RULES)}")
    except FormatReject as e:
        return e.reason
    return None
