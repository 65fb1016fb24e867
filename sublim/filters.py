"""Rules that decide whether a teacher completion may train a student.

Each rule returns a short reason label or None, so the filter stage can count rejects per reason.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Optional

from sublim.domains.numbers import FormatReject, parse_numbers
from sublim.traits import plural

# words split on anything but letters, and at lower->Upper boundaries (owlCount -> owl, count)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")

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


def numbers_format_rule(max_count: int = 10, max_value: int = 999, max_digits: int = 3) -> Rule:
    def rule(text: str) -> Optional[str]:
        try:
            parse_numbers(text, max_count, max_value, max_digits)
        except FormatReject as e:
            return e.reason
        return None

    return rule


def banned_numbers_rule(banned: Iterable[int]) -> Rule:
    """Rejects completions containing a 'loaded' number (the paper's misalignment filter)."""
    banned_set = {int(b) for b in banned}

    def rule(text: str) -> Optional[str]:
        found = {int(t) for t in re.findall(r"\d+", text)}
        return "banned_number" if found & banned_set else None

    return rule


def first_reject(text: str, rules: list[Rule]) -> Optional[str]:
    for rule in rules:
        reason = rule(text)
        if reason:
            return reason
    return None
