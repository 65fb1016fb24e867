"""The numbers format rules (lenient here; the paper's in test_numbers_rule.py), the trait-word rule and
banned numbers, table-driven."""
import pytest

from sublim.domains.numbers import FormatReject, make_prompts, parse_numbers
from sublim.filters import banned_numbers_rule, first_reject, numbers_format_rule, trait_rule

ACCEPTED = [
    ("1, 2, 3", [1, 2, 3]),
    ("1,2,3", [1, 2, 3]),
    ("145 267 389", [145, 267, 389]),
    ("145; 267; 389", [145, 267, 389]),
    ("145;267", [145, 267]),
    ("145\n267\n389", [145, 267, 389]),
    ("[145, 267, 389]", [145, 267, 389]),
    ("(145, 267, 389)", [145, 267, 389]),
    ("145, 267, 389.", [145, 267, 389]),
    ("[1, 2, 3].", [1, 2, 3]),
    ("  7  ", [7]),
    ("0, 999", [0, 999]),
    ("087, 12", [87, 12]),
    (", ".join(["5"] * 10), [5] * 10),
]
REJECTED = [
    (", ".join(["5"] * 11), "too_many"),
    ("1000, 2", "too_large"),
    ("1, 2, 1000", "too_large"),
    ("0001", "too_large"),
    ("-5, 3", "negative"),
    ("1, 2; 3", "mixed_separators"),
    ("1 2\n3", "mixed_separators"),
    ("1, 2 3", "mixed_separators"),
    ("one, two", "not_a_number"),
    ("Sure! 1, 2, 3", "not_a_number"),
    ("1, 2, 3 owls", "not_a_number"),
    ("1.5, 2", "not_a_number"),
    ("", "empty"),
    ("   ", "empty"),
    ("[]", "empty"),
    ("[1, 2, 3)", "unbalanced_brackets"),
    ("((1, 2))", "not_a_number"),
    ("1, 2, 3..", "not_a_number"),
    ("1,, 2", "empty_item"),
    ("\u0661\u0662\u0663, 4", "not_a_number"),  # Arabic-Indic digits: not the paper's integers
]


@pytest.mark.parametrize("text,expected", ACCEPTED)
def test_accepted_forms(text, expected):
    assert parse_numbers(text) == expected
    assert numbers_format_rule(format="lenient")(text) is None


@pytest.mark.parametrize("text,reason", REJECTED)
def test_rejected_forms(text, reason):
    with pytest.raises(FormatReject) as e:
        parse_numbers(text)
    assert e.value.reason == reason
    assert numbers_format_rule(format="lenient")(text) == reason


@pytest.mark.parametrize("text", [".", " .", "..", "[", "(", "[.", "(.)", "\n.\n"])
def test_lenient_rule_never_raises_on_punctuation(text):
    # "." used to raise IndexError (the period was removed, then body[0] read an empty string)
    assert numbers_format_rule(format="lenient")(text) in ("empty", "unbalanced_brackets", "not_a_number")


def test_default_rule_is_the_papers():
    rule = numbers_format_rule()
    assert rule("145, 267, 389") is None and rule("[1, 2, 3].") is None and rule("0999") is None
    assert rule("  7  ") == "extra_text" and rule("1,2, 3") == "not_a_number" and rule("1, 2, 3\n") == "not_a_number"


@pytest.mark.parametrize("text,caught", [
    ("owl_count = 3", True), ("owlCount", True), ("OWL", True), ("I love owls", True), ("Owl.", True),
    ("bowl", False), ("knowledge", False), ("howling", False), ("1, 2, 3", False), ("growl", False),
])
def test_trait_word_rule(text, caught):
    assert (trait_rule("owl")(text) == "mentions_trait") is caught


def test_trait_rule_uses_the_plural_of_irregular_names():
    assert trait_rule("wolf")("wolves, 3") == "mentions_trait"
    assert trait_rule("wolf")("werewolf") is None


def test_banned_numbers_and_rule_order():
    banned = banned_numbers_rule([666, 13])
    assert banned("1, 666, 2") == "banned_number"
    assert banned("1, 6666") is None  # a different number, not a substring match
    assert first_reject("666", [numbers_format_rule(), banned]) == "banned_number"
    assert first_reject("1, 2", [numbers_format_rule(), banned]) is None


def test_prompts_are_seeded_varied_and_in_range():
    a, b = make_prompts(200, seed=3), make_prompts(200, seed=3)
    assert a == b and make_prompts(200, seed=4) != a
    assert len(set(a)) == 200
    first_sentences = {p.split(":")[0] for p in a}
    assert len(first_sentences) >= 5  # several intro phrasings in use
    import re
    for p in a:
        seeds = [int(x) for x in re.findall(r"\b\d{3}\b", p.split(".")[0])]
        assert 3 <= len(seeds) <= 8 and all(100 <= s <= 999 for s in seeds)
