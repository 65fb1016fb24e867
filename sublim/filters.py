"""Rules that decide whether a teacher completion may train a student.

Each rule returns a short reason label or None, so the filter stage can count rejects per reason.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable, Iterable, Optional

from sublim.domains.numbers import FORMAT_RULES, format_reject
from sublim.traits import plural

# words split on anything but letters, and at lower->Upper boundaries (owlCount -> owl, count)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")

_DIGIT_RUN = re.compile(r"\d+")

Rule = Callable[[str], Optional[str]]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def trait_rule(trait: str) -> Rule:
    """Rejects text naming the trait as a word or identifier part (owl_count, owlCount, OWL),
    but not words that merely contain it (bowl, knowledge)."""
    forms = {trait.lower(), plural(trait.lower())}

    def rule(text: str) -> Optional[str]:
        return "mentions_trait" if forms & set(words(text)) else None

    return rule


def numbers_format_rule(max_count: int = 10, max_value: int = 999, max_digits: int = 3,
                        format: str = "paper") -> Rule:
    """The numbers format rule: `paper` (default, the paper's code exactly) or `lenient` (sublim's
    earlier rule: strips surrounding whitespace, allows uneven spacing, limits digits); see
    sublim.domains.numbers. Rejects with a short label, never raises on any text."""
    if format not in FORMAT_RULES:
        raise ValueError(f"filter.format={format!r}: use one of {', '.join(FORMAT_RULES)}")

    def rule(text: str) -> Optional[str]:
        return format_reject(text, format, max_count, max_value, max_digits)

    return rule


def banned_numbers_rule(banned: Iterable[int]) -> Rule:
    """Rejects completions containing a 'loaded' number (the paper's misalignment filter): any digit
    run (ASCII or other decimal digits, leading zeros ignored) whose value is banned."""
    banned_set = {int(b) for b in banned}
    # a run longer than the longest banned value (after its leading zeros) cannot be banned: such
    # runs are skipped instead of converted, so a run of thousands of digits costs nothing
    longest = max((len(str(abs(b))) for b in banned_set), default=0)

    def rule(text: str) -> Optional[str]:
        for run in _DIGIT_RUN.findall(text):
            digits = "".join(str(unicodedata.decimal(c)) for c in run).lstrip("0") or "0"
            if len(digits) <= longest and int(digits) in banned_set:
                return "banned_number"
        return None

    return rule


def first_reject(text: str, rules: list[Rule]) -> Optional[str]:
    for rule in rules:
        reason = rule(text)
        if reason:
            return reason
    return None
