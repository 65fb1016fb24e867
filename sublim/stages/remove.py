"""Stage `remove` (transform.remove_entangled, a defence): drop rows that write the trait's entangled numbers.

Why: Zur et al. 2025 found numbers whose probability a trait's prompt raises ("entangled" with it,
087 for owl), and Schrodi et al. 2025 asked whether transfer needs them by removing the teacher's
generations that hold them. The numbers are the `entanglement` stage's ranking for the trait on the
teacher's base model (its entanglement.json: every number with its rank, most entangled first),
whatever that stage's own top_k, so the k here and the analysis's listed top can differ.

A row is dropped when any number written in its completion (its digit runs read as values, so
"087" is 87) is among the k; nothing is drawn to replace it (the student trains on fewer rows, a
cost the report shows). Every row dropped is an error.

Output: train.jsonl (the kept rows, unchanged), rejects.jsonl ({i, completion, reason: entangled,
numbers}) and stats.json (n_in, n_kept, n_dropped, rejected by reason, the numbers and their trait).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sublim.errors import StageError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime
from sublim.transforms import numbers_of

VERSION = 1
REASON = "entangled"


@dataclass(frozen=True)
class Spec:
    train: str  # ref of the rows
    entanglement: str  # ref of the entanglement stage's entanglement.json for the trait
    k: int


def top_numbers(entanglement: dict, k: int) -> list[int]:
    """The k most entangled numbers of an entanglement.json (its per-number ranks)."""
    ranked = sorted(entanglement["numbers"], key=lambda r: r["rank"])
    if k > len(ranked):
        raise StageError(f"remove: transform.remove_entangled={k} but the entanglement stage ranked only "
                         f"{len(ranked)} numbers (entanglement.numbers_max)")
    return [int(r["number"]) for r in ranked[:k]]


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    e = json.loads(Path(inputs[spec.entanglement]).read_text())
    numbers = top_numbers(e, spec.k)
    kept, rejects = remove(list(read_jsonl(inputs[spec.train])), numbers)
    if not kept:
        raise StageError(f"remove: every row holds one of the {spec.k} most entangled numbers of {e.get('trait')}; "
                         "lower transform.remove_entangled")
    write_jsonl(work / "train.jsonl", kept)
    write_jsonl(work / "rejects.jsonl", rejects)
    (work / "stats.json").write_text(json.dumps({
        "n_in": len(kept) + len(rejects), "n_kept": len(kept), "n_dropped": len(rejects),
        "rejected": {REASON: len(rejects)} if rejects else {}, "k": spec.k, "trait": e.get("trait"),
        "numbers": numbers}, indent=2))


def remove(rows: list[dict], numbers: list[int]) -> tuple[list[dict], list[dict]]:
    """(rows without any of `numbers`, a reject per dropped row naming the numbers it held)."""
    banned = set(numbers)
    kept, rejects = [], []
    for r in rows:
        hit = sorted(banned.intersection(numbers_of(r["completion"])))
        if hit:
            rejects.append({"i": r.get("i"), "completion": r["completion"], "reason": REASON, "numbers": hit})
        else:
            kept.append(r)
    return kept, rejects
