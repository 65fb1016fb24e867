"""Stage `replace` (transform.divergent=replace): the teacher's divergent tokens become the reference's.

At each divergent position of a completion (sublim.stages.divergence) the token written is replaced
by the reference model's most likely token there (the teacher's base model under its own system
prompt, no trait), then the domain's filter rules run again, since a replacement can break the
format (a digit becomes a word, a separator goes missing). The rules are the filter stage's own
(Domain.rules and row_rules with the filter's settings); the filter's LLM judge is not asked again.
Rows a rule rejects are dropped and counted; nothing is drawn to replace them.

Replacements are teacher-forced: every reference token is the one it prefers after the ORIGINAL
prefix, so two divergent positions in one row are replaced independently (one forward pass per
row, as detection makes; regenerating after each replacement would be a new sample). Only tokens
before the end of turn are replaced (a divergent end of turn stays: the row keeps its length).

It runs on the filter's data, before transform.shuffle: divergence is defined on the sequence the
teacher wrote, which a shuffle no longer is; a shuffle then reorders the replaced numbers.

Output: train.jsonl (the filter's row format, the replaced completion, the original kept as
`original`), rejects.jsonl and stats.json (rows and tokens replaced, rows dropped per reason).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.errors import StageError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.stages.filter import rejecter
from sublim.spec import ModelRef, Runtime, load_args

VERSION = 1


@dataclass(frozen=True)
class Spec:
    train: str  # ref of the filter's train.jsonl
    divergence: str  # ref of the divergence stage's divergence.jsonl for those rows
    tokenizer: ModelRef  # the teacher's: decodes the replaced ids (only its tokenizer is read)
    domain: dict  # the filter spec's domain, rules, trait word and seed: its rules, run again
    rules: dict
    trait_word: Optional[str]
    data_seed: int


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    from sublim.models import load_tokenizer

    args = load_args(spec.tokenizer, inputs)
    tok = load_tokenizer(args["path"], args["revision"], args["trust_remote_code"])
    reject = rejecter(spec.domain, spec.rules, spec.trait_word, spec.data_seed, inputs)  # the filter's rules again

    replace(work, list(read_jsonl(inputs[spec.train])), list(read_jsonl(inputs[spec.divergence])),
            lambda ids: tok.decode(ids, skip_special_tokens=True), reject)


def replaced_ids(d: dict) -> tuple[list[int], int]:
    """(the content ids with each divergent one replaced by the reference's, how many were)."""
    new, n = [], 0
    for j in range(d["content"]):
        swap = d["divergent"][j] and d["reference"][j] != d["ids"][j]
        new.append(d["reference"][j] if swap else d["ids"][j])
        n += bool(swap)
    return new, n


def replace(work: Path, rows: list[dict], divergence: list[dict], decode, reject) -> None:
    if len(rows) != len(divergence) or any(r.get("i") != d["i"] for r, d in zip(rows, divergence)):
        raise StageError("replace: divergence.jsonl does not describe these rows (another data set); re-plan the cell")
    kept, rejects, changed, tokens = [], [], 0, 0
    divergent = sum(sum(d["divergent"][: d["content"]]) for d in divergence)
    for r, d in zip(rows, divergence):
        new, n = replaced_ids(d)
        row = r | {"completion": decode(new) if n else r["completion"], "original": r["completion"]}
        changed += n > 0
        tokens += n
        reason = reject(row) if n else None  # an untouched row passed the filter already
        if reason:
            rejects.append({"i": r.get("i"), "completion": row["completion"], "original": r["completion"],
                            "reason": reason})
        else:
            kept.append(row)
    if not kept:
        raise StageError(f"replace: every one of {len(rows)} rows broke the filter's rules after replacement; see "
                         f"{work}/rejects.jsonl (use transform.divergent=keep)")
    write_jsonl(work / "train.jsonl", kept)
    write_jsonl(work / "rejects.jsonl", rejects)
    (work / "stats.json").write_text(json.dumps({
        # divergent content tokens; a replacement only where the reference's choice is another token
        "n_in": len(rows), "n_divergent": divergent, "n_rows_changed": changed, "n_tokens_replaced": tokens,
        "n_kept": len(kept),
        "n_dropped": len(rejects), "rejected": dict(Counter(x["reason"] for x in rejects).most_common()),
    }, indent=2))
