"""Stage `rewrite` (rewrite.model set): each kept completion rewritten by a rewriter model, then the
filter's rules run again, a defence that keeps the content of the teacher's data and drops its
wording.

The rewriter (rewrite.model, under its own system prompt, never the trait's) answers
rewrite.instruction ("in your own words, same content and format") for each row of the upstream
data (the filter's, or the replace stage's). A rewrite can break the format (words around the
numbers, another separator) or be cut off at its token budget, so the domain's rules run again with
the filter's settings (Domain.rules and row_rules, as the replace stage runs them; the filter's LLM
judge is not asked again), and rows they reject are dropped and counted: nothing is drawn to
replace them. A rewriter that shares the teacher's bias can carry it itself, which is why the
rewriter is part of the key and of the cell's label.

Output: train.jsonl (the row format of the data it reads, the rewritten completion, the teacher's
kept as `original`), rejects.jsonl ({i, completion, original, reason}) and stats.json (n_in, n_kept,
n_dropped, rejected by reason, n_unchanged: rewrites identical to the teacher's text, the rewriter).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.backends import sampler_for
from sublim.backends.base import Chat, SamplingParams
from sublim.errors import StageError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.stages.filter import rejecter
from sublim.spec import ModelRef, Runtime
from sublim.stages.paraphrase import generate

VERSION = 1


@dataclass(frozen=True)
class Spec:
    train: str  # ref of the upstream train.jsonl
    model: ModelRef  # the rewriter
    system_prompt: Optional[str]
    instruction: str  # {prompt}, {completion}
    sampling: SamplingParams
    domain: dict  # the filter spec's domain, rules and trait word: its rules, run again
    rules: dict
    trait_word: Optional[str]
    min_keep: int  # filter.min_keep: fewer rewritten rows pass and the stage fails
    data_seed: int
    backend: str
    device: str
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    reject = rejecter(spec.domain, spec.rules, spec.trait_word, spec.data_seed, inputs)  # the filter's rules again

    rows = list(read_jsonl(inputs[spec.train]))
    chats = [Chat(user=spec.instruction.replace("{prompt}", r["prompt"]).replace("{completion}", r["completion"]),
                  system=spec.system_prompt) for r in rows]
    texts, cut = generate(chats, lambda: sampler_for(spec.backend, spec.model, inputs, spec.device, runtime),
                          spec.sampling, spec.data_seed, runtime.batch_size, "rewriting completions")
    refilter(work, rows, texts, cut, reject, spec.min_keep, spec.model.weights)


def refilter(work: Path, rows: list[dict], texts: list[str], cut: list[bool], reject, min_keep: int,
             rewriter: str) -> None:
    """Each row with its rewritten completion, kept where `reject` passes it and it was not cut off."""
    kept, rejects = [], []
    for r, text, c in zip(rows, texts, cut):
        row = r | {"completion": text, "original": r.get("original", r["completion"])}
        reason = "truncated" if c else reject(row)
        if reason:
            rejects.append({"i": r.get("i"), "completion": text, "original": r["completion"], "reason": reason})
        else:
            kept.append(row)
    stats = {"rewriter": rewriter, "n_in": len(rows), "n_kept": len(kept), "n_dropped": len(rejects),
             "rejected": dict(Counter(x["reason"] for x in rejects).most_common()),
             "n_unchanged": sum(t == r["completion"] for r, t in zip(rows, texts))}
    write_jsonl(work / "rejects.jsonl", rejects)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))
    if len(kept) < max(min_keep, 1):
        top = ", ".join(f"{k} ({v})" for k, v in Counter(x["reason"] for x in rejects).most_common(3)) or "none"
        examples = "\n".join(f"  [{x['reason']}] {x['completion'][:80]!r}" for x in rejects[:3])
        raise StageError(f"rewrite: only {len(kept)} of {len(rows)} rewritten rows passed the filter's rules again "
                         f"(need filter.min_keep={min_keep}); top reasons: {top}. Examples:\n{examples}\n"
                         f"See {work}/rejects.jsonl; the rewriter ({rewriter}) does not keep the format: check "
                         "rewrite.model and rewrite.instruction")
    write_jsonl(work / "train.jsonl", kept)
