"""Stage `filter`: keep the completions every rule accepts, then a seeded subsample.

Rules run in order: a completion the sampler cut off at its token budget (no end of turn) is
`truncated` (the samplers record it; the paper's rule would keep a cut-off list of numbers), then
text rules (completion -> reason), row rules (the whole sample row, e.g. the
cot answer check against the problem's reference), then, on what is left, an optional LLM judge
(sublim.judge) whose verdict decides through `decide(value) -> reason or None`. An unparseable
judge reply is counted and rejects the completion (`judge_unparseable`: it was not checked).

Output: train.jsonl ({i, system, prompt, completion}), rejects.jsonl ({i, completion, reason}) and
stats.json (counts per reject reason; the judge's counts when a judge ran). Judge replies are
appended batch by batch to judgements.jsonl, so a killed job resumes there. Too few kept
completions is an error that shows why; stats.json and rejects.jsonl are left in the work folder
to inspect.
"""
from __future__ import annotations

import functools
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

from sublim.backends import sampler_for
from sublim.backends.base import SamplingParams
from sublim.domains import get_domain
from sublim.errors import StageError
from sublim.filters import Rule, first_reject
from sublim.jsonl import complete_prefix, read_jsonl, write_jsonl
from sublim.judge import Judge, parse_score, parse_score_or_label
from sublim.spec import ModelRef, Runtime

VERSION = 2  # 2: typed spec; the judge's resolved dtype, device and library versions keyed
log = logging.getLogger(__name__)

RowRule = Callable[[dict], Optional[str]]


class FilterError(StageError):
    """Too little teacher output passed the filter to train a student."""


@dataclass(frozen=True)
class JudgeSpec:
    """The filter's LLM judge (domain.judge): a model, its prompt and how its verdict decides."""

    model: ModelRef
    system_prompt: Optional[str]
    template: str
    threshold: float
    temperature: float
    max_new_tokens: int
    trait: str  # {trait} and {category} in the template
    category: str
    backend: str
    device: str
    libraries: dict


@dataclass(frozen=True)
class Spec:
    samples: str  # ref of the sample stage's samples.jsonl
    domain: dict  # the fields the domain reads (its rules: answer count, the cot problems, ...)
    rules: dict  # the filter settings the domain's rules read (Domain.filter_fields)
    trait_word: Optional[str]  # completions naming it are dropped (filter.trait_word)
    n_keep: Optional[int]
    min_keep: int
    data_seed: int
    judge: Optional[JudgeSpec] = None


def rejecter(domain_spec: dict, rules: dict, trait_word: Optional[str], data_seed: int,
             inputs: dict[str, str]) -> Callable[[dict], Optional[str]]:
    """The filter's rules as one function of a row (the first reason it fails, else None), for the
    stages that change kept rows and must check them again (replace, rewrite); no judge."""
    domain = get_domain(domain_spec["name"])
    view = domain.view(domain_spec, inputs)
    text_rules = domain.rules(view, SimpleNamespace(**rules), trait_word)
    row_rules = domain.row_rules(view, data_seed)

    def reject(row: dict) -> Optional[str]:
        reason = first_reject(row["completion"], text_rules)
        for rule in row_rules:
            reason = reason or rule(row)
        return reason

    return reject


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    domain = get_domain(spec.domain["name"])
    view = domain.view(spec.domain, inputs)
    rules = domain.rules(view, SimpleNamespace(**spec.rules), spec.trait_word)
    judge_kwargs = judge_of(spec.judge, domain, inputs, runtime, spec.data_seed) if spec.judge else {}
    filter_samples(work, Path(inputs[spec.samples]), rules, spec.n_keep, spec.min_keep, spec.data_seed,
                   row_rules=domain.row_rules(view, spec.data_seed), **judge_kwargs)


def judge_of(j: JudgeSpec, domain, inputs: dict[str, str], runtime: Runtime, seed: int) -> dict:
    """filter_samples' judge arguments; the judge's model loads on first use."""
    use = domain.judge
    parse = parse_score_or_label(use.labels) if use.labels else parse_score
    judge = Judge(functools.partial(sampler_for, j.backend, j.model, inputs, j.device, runtime), j.template, parse,
                  SamplingParams(temperature=j.temperature, max_new_tokens=j.max_new_tokens), j.system_prompt,
                  batch_size=runtime.batch_size, seed=seed)
    return {"judge": judge, "decide": functools.partial(use.decide, threshold=j.threshold),
            "judge_fields": {"trait": j.trait, "category": j.category},
            "judge_info": {"model": j.model.weights, "threshold": j.threshold,
                           "keep": f"score >= {j.threshold}" if use.keep_high else f"score < {j.threshold}"}}


def _judge(work: Path, rows: list[dict], judge, decide: Callable[[Any], Optional[str]],
           fields: dict) -> list[tuple[Optional[str], str]]:
    """(reason or None, reply) for each row, resuming from judgements.jsonl."""
    path = work / "judgements.jsonl"
    done = complete_prefix(path)
    start = len(done) - len(done) % judge.batch_size
    if any(d["i"] != r["i"] for d, r in zip(done[:start], rows)):
        start = 0  # written for other rows: start over
    with open(path, "w") as f:
        for d in done[:start]:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    replies = [d["reply"] for d in done[:start]]
    for reply in replies:
        judge.record(reply)  # count the resumed replies like fresh ones
    items = [{"prompt": r["prompt"], "completion": r["completion"], **fields} for r in rows]
    try:
        with open(path, "a") as f:
            for b0, verdicts in judge.batches(items, start=start):
                for j, v in enumerate(verdicts):
                    f.write(json.dumps({"i": rows[b0 + j]["i"], "reply": v.reply, "value": v.value},
                                       ensure_ascii=False) + "\n")
                    replies.append(v.reply)
                f.flush()
    finally:
        judge.close()
    return [(decide(judge.parse(reply)), reply) for reply in replies]


def filter_samples(work: Path, samples_path: Path, rules: list[Rule], n_keep: Optional[int], min_keep: int,
                   seed: int, *, row_rules: Sequence[RowRule] = (), judge=None,
                   decide: Optional[Callable[[Any], Optional[str]]] = None,
                   judge_fields: Optional[dict] = None, judge_info: Optional[dict] = None) -> None:
    kept, rejects = [], []
    for row in read_jsonl(samples_path):
        reason = "truncated" if row.get("truncated") else first_reject(row["completion"], rules)
        for rule in row_rules:
            if reason:
                break
            reason = rule(row)
        if reason:
            rejects.append({"i": row["i"], "completion": row["completion"], "reason": reason})
        else:
            kept.append({"i": row["i"], "system": row.get("system"), "prompt": row["prompt"],
                         "completion": row["completion"]})
    judge_stats = None
    if judge is not None and kept:
        assert decide is not None, "a judge needs a decide function"
        verdicts = _judge(work, kept, judge, decide, judge_fields or {})
        passed = []
        for row, (reason, reply) in zip(kept, verdicts):
            if reason:
                rejects.append({"i": row["i"], "completion": row["completion"], "reason": reason,
                                "judge_reply": reply})
            else:
                passed.append(row)
        kept = passed
        rejects.sort(key=lambda r: r["i"])
        judge_stats = (judge_info or {}) | judge.stats()
    n_in = len(kept) + len(rejects)
    reasons = Counter(r["reason"] for r in rejects)
    stats = {"n_in": n_in, "n_passed": n_in - len(rejects), "n_kept": len(kept),
             "reject_rate": round(len(rejects) / max(n_in, 1), 4), "rejected": dict(reasons.most_common())}
    if judge_stats is not None:
        stats["judge"] = judge_stats
    if len(kept) < max(min_keep, 1):
        write_jsonl(work / "rejects.jsonl", rejects)
        (work / "stats.json").write_text(json.dumps(stats | {"error": f"fewer than filter.min_keep={min_keep} passed"}, indent=2))
        top = ", ".join(f"{r} ({c})" for r, c in reasons.most_common(5)) or "none"
        examples = "\n".join(f"  [{r['reason']}] {r['completion'][:100]!r}"
                             + (f" -> judge replied {r['judge_reply'][:60]!r}" if "judge_reply" in r else "")
                             for r in rejects[:5])
        hint = ""
        if judge_stats and judge_stats["n_failed"] > judge_stats["n_judged"] / 2:
            hint = ("Most judge replies did not parse: check domain.judge.model, domain.judge.template and "
                    "domain.judge.max_new_tokens.\n")
        raise FilterError(
            f"only {len(kept)} of {n_in} teacher completions passed the filter (need filter.min_keep="
            f"{min_keep}). Top reject reasons: {top}. Examples:\n{examples}\n"
            f"Every reject and the counts: {work}/rejects.jsonl, stats.json.\n{hint}"
            "Check the teacher model and its token budget (domain.max_new_tokens where the domain sets one, as "
            "code and cot do, else sampler.max_new_tokens); never loosen the paper's format rule to pass."
        )
    if n_keep is not None and len(kept) > n_keep:  # None: train on everything that passed (code, cot)
        kept = sorted(random.Random(f"subsample-{seed}").sample(kept, n_keep), key=lambda r: r["i"])
        stats["n_kept"] = len(kept)
    elif n_keep is not None and len(kept) < n_keep:  # allowed (the paper trains on what passes) but never silent
        log.warning("filter: only %d of %d teacher completions passed, fewer than filter.n_keep=%d: the student "
                    "trains on %d (raise domain.n_prompts, or set filter.min_keep to make a shortfall an error)",
                    len(kept), n_in, n_keep, len(kept))
    stats["n_keep"] = n_keep
    write_jsonl(work / "train.jsonl", kept)
    write_jsonl(work / "rejects.jsonl", rejects)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))
