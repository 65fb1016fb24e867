"""Decision table for the paper's numbers format rule (filter.format=paper, the default).

Every row was decided BY HAND from the paper's public code (MinhxLe/subliminal-learning, the
numbers dataset module: `parse_response` + `get_reject_reasons(answer, min_value=0,
max_value=999, max_count=10, banned_numbers=[])`, as its open-model config calls it; read from
the forks JayThibs/subliminal-learning and toddnief/subliminal-entanglement, identical there, at
sl/datasets/nums_dataset.py), not by running sublim's port. The note names the clause of that
code that decides the row:

  PERIOD  one final "." is removed (only if it is the very last character)
  BRACKET then one outer "[...]" or "(...)" pair is removed (both ends must match)
  NO_RUN  no \\d+ run at all (\\d: any Unicode decimal digit) -> reject
  ONE_RUN exactly one run: it must equal the whole remaining text -> else reject
  SEP     two or more runs: the text between the first two is the separator; stripped of
          whitespace (str.strip: Unicode whitespace) it must be "", "," or ";" -> else reject
  ITEM    the text is split on that exact separator; an item holding any character outside
          string.digits ("0123456789") -> reject
  EMPTY   an empty item passes the character check but int("") raises -> the except -> reject
  INTLIM  int() of more than 4300 digits raises on Python >= 3.11 -> the except -> reject
  COUNT   more than 10 numbers -> "too many numbers"
  VALUE   a number above 999 -> "numbers too large" (min_value 0 can never fail: no signs)
  KEEP    every clause passed
"""
from __future__ import annotations

import re

import pytest

from sublim.domains.numbers import FormatReject, paper_numbers, parse_numbers
from sublim.filters import numbers_format_rule

K, R = "keep", "reject"

TABLE: list[tuple[str, str, str]] = [
    # ---- surrounding whitespace and newlines: nothing is stripped
    ("1, 2, 3", K, "KEEP: separator ', ', items 1 2 3"),
    (" 1, 2, 3", R, "ITEM: first item ' 1' holds a space"),
    ("1, 2, 3 ", R, "ITEM: last item '3 ' holds a space"),
    ("1, 2, 3\n", R, "ITEM: last item '3\\n' holds a newline"),
    ("\n1, 2, 3", R, "ITEM: first item '\\n1'"),
    ("  7  ", R, "ONE_RUN: '7' is not the whole text '  7  '"),
    ("7\n", R, "ONE_RUN: '7' != '7\\n'"),
    ("\t7", R, "ONE_RUN: '7' != '\\t7'"),
    (" 7", R, "ONE_RUN: leading space"),
    ("7", K, "KEEP: ONE_RUN equals the text"),
    ("1 2 3", K, "KEEP: separator ' '"),
    ("1 2 3 ", R, "EMPTY: split on ' ' leaves a trailing ''"),
    (" 1 2 3", R, "EMPTY: split on ' ' leaves a leading ''"),
    ("1 2 3\n", R, "ITEM: '3\\n' (separator is ' ', not '\\n')"),
    ("1  2  3", K, "KEEP: separator '  ' used consistently"),
    ("1  2 3", R, "ITEM: split on '  ' leaves '2 3'"),
    ("1 2  3", R, "EMPTY: split on ' ' leaves '' between the two spaces"),
    ("1\n2\n3", K, "KEEP: separator '\\n'"),
    ("1\n2\n3\n", R, "EMPTY: trailing '' after the last newline"),
    ("\n1\n2\n3", R, "EMPTY: leading ''"),
    ("1\r\n2\r\n3", K, "KEEP: separator '\\r\\n' strips to ''"),
    ("1\n\n2\n\n3", K, "KEEP: separator '\\n\\n'"),
    ("1\n2 3", R, "ITEM: split on '\\n' leaves '2 3'"),
    ("1\t2\t3", K, "KEEP: separator '\\t'"),
    ("1 \n2 \n3", K, "KEEP: separator ' \\n' strips to ''"),
    ("1\u00a02\u00a03", K, "KEEP: no-break space strips to '' (str.strip is Unicode)"),
    ("1\u30002", K, "KEEP: ideographic space is whitespace"),
    ("1\u200b2", R, "SEP: zero-width space is not whitespace, strips to itself"),
    ("1\x0b2", K, "KEEP: vertical tab is whitespace"),
    ("1\x0c2", K, "KEEP: form feed is whitespace"),
    ("1\x1c2", K, "KEEP: \\x1c counts as whitespace for str.strip"),
    ("1\u20282", K, "KEEP: line separator U+2028 is whitespace"),
    ("1 2 3\n\n", R, "ITEM: '3\\n\\n'"),
    ("\n\n1", R, "ONE_RUN: '1' != '\\n\\n1'"),
    # ---- uneven spacing around separators
    ("1,2, 3", R, "ITEM: separator ',' leaves ' 3'"),
    ("1, 2,3", R, "ITEM: separator ', ' leaves '2,3'"),
    ("1 ,2 ,3", K, "KEEP: separator ' ,' strips to ','"),
    ("1 , 2 , 3", K, "KEEP: separator ' , '"),
    ("1 , 2, 3", R, "ITEM: separator ' , ' leaves '2, 3'"),
    ("1,  2,  3", K, "KEEP: separator ',  '"),
    ("1,  2, 3", R, "ITEM: separator ',  ' leaves '2, 3'"),
    ("1,2,3", K, "KEEP: separator ','"),
    ("1;2;3", K, "KEEP: separator ';'"),
    ("1; 2; 3", K, "KEEP: separator '; '"),
    ("1 ; 2 ; 3", K, "KEEP: separator ' ; '"),
    ("1;2; 3", R, "ITEM: separator ';' leaves ' 3'"),
    ("1; 2;3", R, "ITEM: separator '; ' leaves '2;3'"),
    ("1,\n2,\n3", K, "KEEP: separator ',\\n' strips to ','"),
    ("1,\n2,\n3,\n", R, "EMPTY: trailing '' after the last ',\\n'"),
    ("1, 2, 3,", R, "ITEM: separator ', ' leaves '3,'"),
    ("1,2,3,", R, "EMPTY: separator ',' leaves a trailing ''"),
    (",1,2", R, "EMPTY: separator ',' leaves a leading ''"),
    (", 1, 2", R, "EMPTY: separator ', ' leaves a leading ''"),
    ("1,,2", R, "SEP: ',,' strips to ',,'"),
    ("1, , 2", R, "SEP: ', , ' strips to ', ,'"),
    ("1;,2", R, "SEP: ';,'"),
    ("1,;2", R, "SEP: ',;'"),
    ("1, 2; 3", R, "ITEM: separator ', ' leaves '2; 3'"),
    ("1; 2, 3", R, "ITEM: separator '; ' leaves '2, 3'"),
    ("1 2, 3", R, "ITEM: separator ' ' leaves '2,'"),
    ("1, 2 3", R, "ITEM: separator ', ' leaves '2 3'"),
    ("1,2 ,3", R, "ITEM: separator ',' leaves '2 '"),
    ("1\t,\t2", K, "KEEP: separator '\\t,\\t' strips to ','"),
    ("1 ;2", K, "KEEP: separator ' ;'"),
    ("1\n;\n2", K, "KEEP: separator '\\n;\\n'"),
    # ---- the final period
    (".", R, "PERIOD then NO_RUN: nothing left"),
    (" .", R, "PERIOD then NO_RUN: ' ' left"),
    ("..", R, "PERIOD removes one, NO_RUN on '.'"),
    ("1.", K, "KEEP: PERIOD, then ONE_RUN '1'"),
    ("1..", R, "PERIOD removes one; ONE_RUN '1' != '1.'"),
    ("1, 2, 3.", K, "KEEP: PERIOD, separator ', '"),
    ("1, 2, 3..", R, "PERIOD removes one; ITEM '3.'"),
    ("1, 2, 3 .", R, "PERIOD; ITEM '3 '"),
    (".1, 2", R, "no final period; ITEM '.1'"),
    ("1.5", R, "SEP: '.' between runs 1 and 5"),
    ("1.5, 2", R, "SEP: '.' is the first gap"),
    ("1, 2.5", R, "ITEM: separator ', ' leaves '2.5'"),
    ("1.0", R, "SEP: '.'"),
    ("3.14.", R, "PERIOD, then SEP '.' in '3.14'"),
    ("1. 2. 3.", R, "PERIOD, then SEP '. ' strips to '.'"),
    ("1\n2\n3.", K, "KEEP: PERIOD, separator '\\n'"),
    ("1 2 3.", K, "KEEP: PERIOD, separator ' '"),
    ("1;2;3.", K, "KEEP: PERIOD, separator ';'"),
    ("1,2,3.\n", R, "no final period (ends in newline); ITEM '3.\\n'"),
    ("1,2,3\u3002", R, "ideographic full stop is not '.': ITEM '3\u3002'"),
    ("1,2,3!", R, "ITEM: '3!'"),
    ("7.", K, "KEEP: PERIOD, ONE_RUN"),
    (". 7", R, "no final period; ONE_RUN '7' != '. 7'"),
    ("1 2 3 .", R, "PERIOD; EMPTY: split on ' ' leaves a trailing ''"),
    # ---- brackets
    ("[1, 2, 3]", K, "KEEP: BRACKET [], separator ', '"),
    ("(1, 2, 3)", K, "KEEP: BRACKET ()"),
    ("[1, 2, 3].", K, "KEEP: PERIOD first, then BRACKET"),
    ("(1, 2, 3).", K, "KEEP: PERIOD then BRACKET"),
    ("[1, 2, 3.]", R, "no final period (ends ']'); BRACKET; ITEM '3.'"),
    ("(1, 2]", R, "BRACKET needs a matching pair: ITEM '(1'"),
    ("[1, 2)", R, "mismatched pair kept: ITEM '[1'"),
    ("[1, 2, 3", R, "unclosed: ITEM '[1'"),
    ("1, 2, 3]", R, "unopened: ITEM '3]'"),
    ("[[1, 2]]", R, "BRACKET removes one pair only: ITEM '[1'"),
    ("([1, 2])", R, "BRACKET removes the () only: ITEM '[1'"),
    ("[1]", K, "KEEP: BRACKET, ONE_RUN"),
    ("(1)", K, "KEEP: BRACKET, ONE_RUN"),
    ("[]", R, "BRACKET, then NO_RUN on ''"),
    ("()", R, "BRACKET, then NO_RUN"),
    ("[ ]", R, "BRACKET, then NO_RUN on ' '"),
    ("[1, 2, 3] ", R, "ends in a space, no BRACKET: ITEM '[1'"),
    (" [1, 2, 3]", R, "starts with a space, no BRACKET: ITEM ' [1'"),
    ("[ 1, 2, 3 ]", R, "BRACKET leaves ' 1, 2, 3 ': ITEM ' 1'"),
    ("[1,2,3]", K, "KEEP: BRACKET, separator ','"),
    ("[1 2 3]", K, "KEEP: BRACKET, separator ' '"),
    ("[1\n2\n3]", K, "KEEP: BRACKET, separator '\\n'"),
    ("[1; 2; 3]", K, "KEEP: BRACKET, separator '; '"),
    ("(1;2;3)", K, "KEEP: BRACKET, separator ';'"),
    ("{1, 2, 3}", R, "braces are not brackets: ITEM '{1'"),
    ("<1, 2>", R, "ITEM '<1'"),
    ("[1, 2, 3]]", R, "BRACKET removes the outer pair: ITEM '3]'"),
    ("[1].", K, "KEEP: PERIOD then BRACKET"),
    ("[1.]", R, "BRACKET leaves '1.': ONE_RUN '1' != '1.'"),
    ("(7).", K, "KEEP: PERIOD then BRACKET"),
    ("[", R, "NO_RUN"),
    ("]", R, "NO_RUN"),
    ("(", R, "NO_RUN"),
    ("[5", R, "no pair: ONE_RUN '5' != '[5'"),
    ("5]", R, "ONE_RUN '5' != '5]'"),
    ("(1), (2)", R, "BRACKET leaves '1), (2': SEP '), ('"),
    ("[1], [2]", R, "BRACKET leaves '1], [2': SEP '], ['"),
    ("[1, 2, 3].\n", R, "no final period, no BRACKET: ITEM '[1'"),
    ("([1])", R, "BRACKET leaves '[1]': ONE_RUN '1' != '[1]'"),
    ("[1, 2, 3]..", R, "PERIOD removes one, '[1, 2, 3].' does not end in ']': ITEM '[1'"),
    # ---- leading zeros: values, not spellings, are checked
    ("0", K, "KEEP: value 0"),
    ("00", K, "KEEP: int('00') = 0"),
    ("007", K, "KEEP: 7"),
    ("0999", K, "KEEP: 999, no digit limit"),
    ("000000001", K, "KEEP: 1"),
    ("01, 02, 03", K, "KEEP: 1 2 3"),
    ("0, 999", K, "KEEP: both ends of 0..999"),
    ("0001", K, "KEEP: 1"),
    ("01000", R, "VALUE: 1000"),
    ("0" * 4300, K, "KEEP: int() reads 4300 digits (the limit) as 0"),
    ("0" * 4301, R, "INTLIM: 4301 digits make int() raise"),
    ("0" * 4301 + ", 1", R, "INTLIM: the first item has 4301 digits"),
    ("1" * 4301, R, "INTLIM (it would also break VALUE)"),
    ("[007]", K, "KEEP: BRACKET, 7"),
    ("(0999).", K, "KEEP: PERIOD, BRACKET, 999"),
    # ---- non-ASCII digits: \d finds them, string.digits rejects them
    ("\u0661\u0662\u0663", R, "ITEM: Arabic-Indic 123 is one run but not string.digits"),
    ("\u0661, \u0662, \u0663", R, "ITEM: Arabic-Indic items"),
    ("1, \u0662, 3", R, "ITEM: the item '\u0662'"),
    ("\uff11\uff12\uff13", R, "ITEM: full-width 123"),
    ("\uff11, \uff12", R, "ITEM: full-width items"),
    ("\u06f1\u06f2\u06f3", R, "ITEM: Extended Arabic-Indic"),
    ("\u0967\u0968\u0969", R, "ITEM: Devanagari"),
    ("1\u06623", R, "ITEM: one run '1\u06623' mixing scripts"),
    ("12\uff13", R, "ITEM: full-width 3 inside the run"),
    ("\u00bd", R, "NO_RUN: vulgar fraction is not a decimal digit"),
    ("\u00b2", R, "NO_RUN: superscript two is not a decimal digit"),
    ("1, \u00b2", R, "ONE_RUN: only '1' is a run, text has more"),
    ("\u2460", R, "NO_RUN: circled one"),
    ("\U0001d7cf\U0001d7d0", R, "ITEM: mathematical bold digits are \\d but not ASCII"),
    ("[\u0661]", R, "BRACKET then ITEM"),
    ("\u0661.", R, "PERIOD then ITEM"),
    ("1 \u0662 3", R, "ITEM: separator ' ' leaves '\u0662'"),
    ("\uff11,2", R, "ITEM: '\uff11'"),
    # ---- empty and punctuation-only
    ("", R, "NO_RUN"),
    (" ", R, "NO_RUN"),
    ("\n", R, "NO_RUN"),
    (",", R, "NO_RUN"),
    (";", R, "NO_RUN"),
    (", ; .", R, "PERIOD, NO_RUN"),
    ("...", R, "PERIOD, NO_RUN"),
    ("[...]", R, "BRACKET, NO_RUN"),
    ("-", R, "NO_RUN"),
    ("().", R, "PERIOD, BRACKET, NO_RUN"),
    ("\t\n ", R, "NO_RUN"),
    ("?", R, "NO_RUN"),
    ("!!!", R, "NO_RUN"),
    ("[, ]", R, "BRACKET, NO_RUN"),
    # ---- separator kinds that are not allowed
    ("1-2-3", R, "SEP: '-'"),
    ("1/2/3", R, "SEP: '/'"),
    ("1|2|3", R, "SEP: '|'"),
    ("1:2:3", R, "SEP: ':'"),
    ("1 - 2 - 3", R, "SEP: ' - ' strips to '-'"),
    ("1 and 2", R, "SEP: ' and '"),
    ("1_2_3", R, "SEP: '_'"),
    ("1x2", R, "SEP: 'x'"),
    ("1\u30012\u30013", R, "SEP: ideographic comma"),
    ("1\uff0c2\uff0c3", R, "SEP: full-width comma is not ','"),
    ("1\uff1b2", R, "SEP: full-width semicolon"),
    ("1\u060c2", R, "SEP: Arabic comma"),
    ("1, 2, 3 - 4", R, "ITEM: separator ', ' leaves '3 - 4'"),
    ("1\\n2", R, "SEP: a literal backslash-n"),
    # ---- count
    (", ".join(str(i) for i in range(10)), K, "KEEP: 10 numbers, the limit"),
    (", ".join(str(i) for i in range(11)), R, "COUNT: 11 numbers"),
    (" ".join(["5"] * 10), K, "KEEP: 10 numbers"),
    (" ".join(["5"] * 11), R, "COUNT: 11"),
    ("\n".join(["42"] * 12), R, "COUNT: 12"),
    ("[" + ", ".join(["1"] * 11) + "]", R, "BRACKET, COUNT: 11"),
    ("[" + ", ".join(["1"] * 10) + "].", K, "KEEP: PERIOD, BRACKET, 10"),
    (", ".join(["7"] * 10) + ".", K, "KEEP: PERIOD, 10"),
    (", ".join(["7"] * 20), R, "COUNT: 20"),
    (", ".join(["7"] * 10 + ["1000"]), R, "COUNT (11 numbers; VALUE too)"),
    ("; ".join(["999"] * 10), K, "KEEP: 10 x 999"),
    ("1,2,3,4,5,6,7,8,9,10,11", R, "COUNT: 11"),
    # ---- values
    ("999", K, "KEEP: 999 = max_value"),
    ("1000", R, "VALUE: 1000"),
    ("1, 2, 1000", R, "VALUE: the last item"),
    ("9999", R, "VALUE"),
    ("123456789", R, "VALUE"),
    ("999, 999, 999", K, "KEEP"),
    ("1000, 2", R, "VALUE: the first item"),
    ("[1000]", R, "BRACKET, VALUE"),
    ("500 1500", R, "VALUE: 1500"),
    # ---- negative numbers and signs
    ("-1", R, "ONE_RUN: '1' != '-1'"),
    ("-1, 2", R, "ITEM: '-1'"),
    ("1, -2", R, "SEP: ', -' strips to ', -'"),
    ("1 -2", R, "SEP: ' -'"),
    ("[-1, -2]", R, "BRACKET, then SEP ', -' between runs 1 and 2"),
    ("+1, 2", R, "ITEM: '+1'"),
    ("1, +2", R, "SEP: ', +'"),
    ("\u22121", R, "ONE_RUN: Unicode minus sign"),
    ("-0", R, "ONE_RUN: '0' != '-0'"),
    ("-5, -3, -1", R, "ITEM: '-5'"),
    # ---- decimals and thousands
    ("1.5, 2.5", R, "SEP: '.'"),
    ("0.5", R, "SEP: '.'"),
    ("1,000", K, "KEEP: separator ',' reads 1 and 000 = 0"),
    ("1,000,000", K, "KEEP: 1, 0, 0"),
    ("1 000", K, "KEEP: 1 and 0"),
    ("1e3", R, "SEP: 'e'"),
    ("1.5.", R, "PERIOD, SEP '.'"),
    ("12.0, 13.0", R, "SEP: '.'"),
    ("3/4", R, "SEP: '/'"),
    # ---- words mixed in
    ("Sure! 1, 2, 3", R, "ITEM: 'Sure! 1'"),
    ("1, 2, 3 owls", R, "ITEM: '3 owls'"),
    ("owl", R, "NO_RUN"),
    ("one, two", R, "NO_RUN"),
    ("1 owl 2", R, "SEP: ' owl '"),
    ("Here: 1, 2", R, "ITEM: 'Here: 1'"),
    ("1, 2, and 3", R, "ITEM: 'and 3'"),
    ("1, two, 3", R, "SEP: ', two, ' between runs 1 and 3"),
    ("1, 2, three", R, "ITEM: 'three'"),
    ("The numbers are 1 2 3", R, "ITEM: 'The'"),
    ("1 2 3\n\nThese continue the pattern.", R, "PERIOD; ITEM '3\\n\\nThese'"),
    ("```\n1, 2, 3\n```", R, "ITEM: '```\\n1'"),
    ("**1, 2, 3**", R, "ITEM: '**1'"),
    ("1, 2, 3 \U0001f989", R, "ITEM: '3 \U0001f989'"),
    ("\U0001f989", R, "NO_RUN"),
    ("owl 7", R, "ONE_RUN"),
    ("7 owls", R, "ONE_RUN"),
    ("Numbers: 145, 267, 389", R, "ITEM: 'Numbers: 145'"),
    ("145, 267, 389 (continuing)", R, "ITEM: '389 (continuing)'"),
    ("a1, 2", R, "ITEM: 'a1'"),
    ("1a, 2", R, "ITEM: '1a'"),
    ("1, 2a", R, "ITEM: '2a'"),
    ("0x1F", R, "SEP: 'x' between 0 and 1"),
    # ---- typical teacher answers
    ("145, 267, 389, 412", K, "KEEP"),
    ("[145, 267, 389]", K, "KEEP: BRACKET"),
    ("(145, 267, 389).", K, "KEEP: PERIOD, BRACKET"),
    ("145\n267\n389", K, "KEEP: one per line"),
    ("145; 267; 389", K, "KEEP"),
    ("145 267 389", K, "KEEP"),
    ("145, 267, 389\n", R, "ITEM: trailing newline"),
    ("\n145, 267, 389", R, "ITEM: leading newline"),
]

# rows where sublim's lenient rule decides differently (or equally, for contrast)
LENIENT_VS_PAPER = [
    ("  7  ", R, K, "lenient strips surrounding whitespace"),
    ("1, 2, 3\n", R, K, "lenient strips the trailing newline"),
    ("1 2 3 ", R, K, "lenient strips the trailing space"),
    ("1,2, 3", R, K, "lenient allows uneven spacing around commas"),
    ("1 , 2, 3", R, K, "lenient allows uneven spacing around commas"),
    ("[ 1, 2, 3 ]", R, K, "lenient strips inside the brackets"),
    ("1, 2, 3 .", R, K, "lenient strips before the final period"),
    ("0999", K, R, "lenient limits digits (3), the paper only values"),
    ("000000001", K, R, "lenient limits digits"),
    ("1, 2, 3", K, K, "both keep"),
    ("(1, 2]", R, R, "both reject"),
    (".", R, R, "both reject (lenient used to raise IndexError)"),
]


@pytest.mark.parametrize("text,decision,note", TABLE, ids=[f"{i}:{t[:20]!r}" for i, (t, _, _) in enumerate(TABLE)])
def test_paper_rule_decision_table(text, decision, note):
    reason = numbers_format_rule()(text)  # the default is the paper's rule
    assert (reason is None) == (decision == K), f"{text!r}: {note}; sublim says {reason!r}"
    if decision == K:
        numbers = paper_numbers(text)
        assert numbers == [int(run) for run in re.findall(r"[0-9]+", text)]
    else:
        assert re.fullmatch(r"[a-z_]+", reason)
        with pytest.raises(FormatReject):
            paper_numbers(text)


def test_table_is_large_and_covers_both_decisions():
    assert len(TABLE) >= 200
    assert len({t for t, _, _ in TABLE}) == len(TABLE)  # no duplicated rows
    assert sum(d == K for _, d, _ in TABLE) >= 50 and sum(d == R for _, d, _ in TABLE) >= 100


@pytest.mark.parametrize("text,paper,lenient,note", LENIENT_VS_PAPER)
def test_where_lenient_and_paper_differ(text, paper, lenient, note):
    assert (numbers_format_rule(format="paper")(text) is None) == (paper == K), note
    assert (numbers_format_rule(format="lenient")(text) is None) == (lenient == K), note
    if lenient == K:
        assert parse_numbers(text)


def test_reason_labels():
    rule = numbers_format_rule()
    assert [rule(t) for t in ["", "7 owls", "1-2", "1, 2a", "\u0661", "1,,2", "1,2,", "0" * 4301,
                              ", ".join(["1"] * 11), "1000"]] == [
        "no_numbers", "extra_text", "bad_separator", "not_a_number", "non_ascii_digit", "bad_separator",
        "empty_item", "too_many_digits", "too_many", "too_large"]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="filter.format='strict'"):
        numbers_format_rule(format="strict")


def test_paper_ignores_max_digits_and_follows_max_value():
    assert numbers_format_rule(max_value=99, max_digits=2)("0099") is None
    assert numbers_format_rule(max_value=99, max_digits=2)("100") == "too_large"
    assert numbers_format_rule(max_count=3)("1, 2, 3, 4") == "too_many"
