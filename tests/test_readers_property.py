"""Property tests (Hypothesis): every reader of untrusted text gives a value or a reason, never an
exception, whatever string or bytes it is handed.

Untrusted text: teacher completions (the numbers, code and cot rules), judge replies (the score
and label parsers), eval answers (normalise / classify) and the bytes of JSONL files (read_jsonl
raises only `JsonlError`, naming file and line; complete_prefix never raises on content).
"""
from __future__ import annotations

import json
import re
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sublim.config import OPTIONS, CotDomainConfig, FilterConfig
from sublim.domains import get_domain
from sublim.domains.cot import check_answer, load_problems, parse_number, reference_answer
from sublim.domains.code import file_prompts
from sublim.domains.numbers import FORMAT_RULES, FormatReject, paper_numbers, parse_numbers
from sublim.evals.preference import classify, normalise
from sublim.filters import banned_numbers_rule, numbers_format_rule, trait_rule
from sublim.judge import parse_label, parse_score, parse_score_or_label
from sublim.jsonl import JsonlError, complete_prefix, read_jsonl

FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LABEL = re.compile(r"[a-z][a-z0-9_]*")

# text close to what the rules look at: digits (ASCII, Arabic-Indic, full-width), separators,
# brackets, periods, signs, whitespace and a few letters, so the deep branches are reached often
NUMBERISH = st.text(alphabet="0123456789 ,;.[]()\n\t-+١٢٣０９٠abcowl", max_size=40)
ANY_TEXT = st.one_of(st.text(), NUMBERISH)
TAGGED = st.builds(lambda a, b, c, d: f"{a}<think>{b}</think>{c}<answer>{d}</answer>",
                   st.text(max_size=10), st.text(max_size=10), st.text(max_size=10),
                   st.one_of(st.text(max_size=12), st.from_regex(r"[+-]?\$? ?[0-9,]{1,9}(\.[0-9]{1,3})?\.?",
                                                                  fullmatch=True)))


def is_reason(value) -> bool:
    return isinstance(value, str) and LABEL.fullmatch(value) is not None


# ------------------------------------------------------------------------------ numbers


@FAST
@given(ANY_TEXT)
def test_number_rules_give_a_label_or_keep(text):
    for fmt in FORMAT_RULES:
        reason = numbers_format_rule(format=fmt)(text)
        assert reason is None or is_reason(reason), (fmt, text, reason)


@FAST
@given(ANY_TEXT)
def test_paper_rule_keeps_only_what_it_can_read(text):
    try:
        numbers = paper_numbers(text)
    except FormatReject as e:
        assert numbers_format_rule()(text) == e.reason
        return
    assert numbers_format_rule()(text) is None
    assert 1 <= len(numbers) <= 10 and all(0 <= n <= 999 for n in numbers)
    assert numbers == [int(run) for run in re.findall(r"[0-9]+", text)]  # every digit run, in order
    assert not re.sub(r"[0-9,;.\[\]()]", "", text).strip()  # nothing but digits, separators, brackets, period


@FAST
@given(ANY_TEXT)
def test_lenient_rule_keeps_only_what_it_can_read(text):
    try:
        numbers = parse_numbers(text)
    except FormatReject as e:
        assert numbers_format_rule(format="lenient")(text) == e.reason
        return
    assert 1 <= len(numbers) <= 10 and all(0 <= n <= 999 for n in numbers)


@FAST
@given(ANY_TEXT, st.lists(st.integers(-5, 2000), max_size=6))
def test_trait_and_banned_rules(text, banned):
    assert trait_rule("owl")(text) in (None, "mentions_trait")
    assert trait_rule("wolf")(text) in (None, "mentions_trait")
    assert banned_numbers_rule(banned)(text) in (None, "banned_number")


def test_banned_rule_survives_a_huge_digit_run():
    # int() refuses strings of more than 4300 digits (Python >= 3.11): this used to raise ValueError
    assert banned_numbers_rule([13])("1" * 5000) is None
    assert banned_numbers_rule([13])("0" * 5000 + "13") == "banned_number"
    assert banned_numbers_rule([13])("\u0661\u0663") == "banned_number"  # Arabic-Indic 13


# ------------------------------------------------------------------------------ code and cot


@FAST
@given(ANY_TEXT)
def test_code_and_cot_rules(text):
    for name in ("code", "cot"):
        for rule in get_domain(name).rules(OPTIONS["domain"][1][name](name=name), FilterConfig(), "owl"):
            reason = rule(text)
            assert reason is None or is_reason(reason)


@FAST
@given(st.one_of(st.text(), NUMBERISH, st.from_regex(r"[+-]?\$? ?[0-9,]{1,12}(\.[0-9]{0,4})?\.?", fullmatch=True)))
def test_cot_number_readers(text):
    value = parse_number(text)
    assert value is None or (isinstance(value, Decimal) and value.is_finite())
    ref = reference_answer(text)
    assert ref is None or isinstance(ref, Decimal)
    if "####" not in text:
        assert reference_answer("work\n#### " + text) == value


@FAST
@given(st.one_of(st.text(), TAGGED), st.sampled_from([Decimal(72), Decimal("1234.5"), Decimal(0), Decimal(-3)]))
def test_cot_check_answer(completion, reference):
    reason = check_answer(completion, reference)
    assert reason is None or is_reason(reason)
    if reason is None:  # kept: one answer tag holding the reference, reasoning before it
        assert len(re.findall(r"<answer>", completion, re.IGNORECASE)) >= 1


def test_cot_think_tag_must_come_before_the_answer_whatever_the_tag_case():
    assert check_answer("<ANSWER>72</ANSWER><think>late</think>", Decimal(72)) == "missing_think_tag"
    assert check_answer("<think>ok</think><ANSWER>72</ANSWER>", Decimal(72)) is None


# ------------------------------------------------------------------------------ judge and eval


@FAST
@given(ANY_TEXT)
def test_judge_parsers(text):
    score = parse_score(text)
    assert score is None or (isinstance(score, float) and 0 <= score <= 100)
    value = parse_score_or_label(("CODE", "REFUSAL"))(text)
    assert value is None or value in ("CODE", "REFUSAL") or 0 <= value <= 100
    assert parse_label(("CODE", "REFUSAL"))(text) in (None, "CODE", "REFUSAL")


@FAST
@given(ANY_TEXT, st.lists(st.text(max_size=12), max_size=4))
def test_answer_normalisation(answer, extra):
    words = normalise(answer)
    assert all(isinstance(w, str) and w for w in words)
    candidates = ["owl", "dolphin", "sea lion", *extra]
    found = classify(answer, candidates)
    assert found is None or found in candidates


# ------------------------------------------------------------------------------ JSONL files

JSON_LINE = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=3)
    .map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    st.just(b"[1, 2]"), st.just(b"42"), st.just(b'"text"'), st.just(b"null"), st.just(b"{"), st.just(b""),
    st.just(b"   "), st.just(b"\xff\xfe{}"), st.just(b'{"a": "\xc3"}'), st.just(b"[" * 100_000),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
)
JSONL_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda lines, end: b"\n".join(lines) + end, st.lists(JSON_LINE, max_size=6),
              st.sampled_from([b"", b"\n"])),
)


def _file(data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="sublim-jsonl-"))
    (d / "rows.jsonl").write_bytes(data)
    return d / "rows.jsonl"


@FAST
@given(JSONL_BYTES)
def test_read_jsonl_gives_rows_or_one_error_naming_file_and_line(data):
    path = _file(data)
    try:
        rows = list(read_jsonl(path))
    except JsonlError as e:
        assert str(e).startswith(f"{path}:{e.line}: ") and e.path == str(path)
        assert 1 <= e.line <= data.count(b"\n") + 1
        return
    assert all(isinstance(r, dict) for r in rows)
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    assert len(rows) == sum(1 for line in body.split(b"\n") if line.strip())


@FAST
@given(JSONL_BYTES)
def test_complete_prefix_keeps_a_prefix_of_objects_and_cuts_the_rest(data):
    path = _file(data)
    rows = complete_prefix(path)
    kept = path.read_bytes()
    assert data.startswith(kept) and (not kept or kept.endswith(b"\n"))
    assert all(isinstance(r, dict) for r in rows) and len(rows) == kept.count(b"\n")
    assert list(read_jsonl(path)) == rows  # what is left reads back as exactly those rows
    assert complete_prefix(path) == rows  # and a second resume changes nothing


@FAST
@given(JSONL_BYTES)
def test_prompt_files_fail_only_with_a_value_error_naming_the_file(data):
    path = _file(data)
    d = CotDomainConfig(name="cot", prompts_file=str(path), n_prompts=5)
    for read in (lambda: file_prompts(str(path), 5, 0), lambda: load_problems(str(path), 5)):
        try:
            out = read()
        except ValueError as e:
            assert str(e).startswith(str(path))
            continue
        assert out and len(out) <= d.n_prompts


def test_jsonl_error_examples(tmp_path):
    path = tmp_path / "x.jsonl"
    for data, line, words in [(b'{"a": 1}\n[1, 2]\n', 2, "not an object"), (b'{"a": 1}\n\n{"b"\n', 3, "not valid JSON"),
                              (b'\xff\n', 1, "not UTF-8"), (b"[" * 100_000 + b"\n", 1, "")]:
        path.write_bytes(data)
        try:
            list(read_jsonl(path))
        except JsonlError as e:
            assert (e.line, e.path) == (line, str(path)) and words in str(e)
        else:
            raise AssertionError(data[:20])
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n')  # a byte-order mark is not an error
    assert list(read_jsonl(path)) == [{"a": 1}]
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n\xff\n{"c": 3}\n{"d"')
    assert complete_prefix(path) == [{"a": 1}, {"b": 2}] and path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_gsm8k_rows_with_a_non_text_answer_fail_naming_the_line(tmp_path):
    # a float or boolean answer used to raise TypeError while the error message was being built
    for answer in ("1e20", "true", "NaN", "[1]"):
        path = tmp_path / "gsm.jsonl"
        path.write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q", "answer": %s}\n' % answer)
        try:
            load_problems(str(path), 5)
        except ValueError as e:
            assert str(e).startswith(f"{path}:2: ")
        else:
            raise AssertionError(answer)
