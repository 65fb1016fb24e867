"""Stage `select`: training rows kept by the teacher's log-likelihood shift (select.by=shift).

The shifts come from the `score` stage (sublim.stages.score). A replication found that rows the
teacher "likes" most transmit the trait in a dose-response; `random` is the same-size control,
`bottom` the opposite. Output: train.jsonl (the kept rows in their original order, the filter's
row format), selection.jsonl (every row's shift and whether it was kept) and stats.json.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime
from sublim.stages.score import mean

VERSION = 2  # 2: typed spec
log = logging.getLogger(__name__)
ORDERS = ("top", "bottom", "random")


@dataclass(frozen=True)
class Spec:
    data: str  # ref of the train.jsonl selected from
    scores: str  # ref of the score stage's scores.jsonl for that data
    n_keep: int
    order: str  # top | bottom | random
    data_seed: Optional[int]  # the random draw's seed (None for top and bottom, which use none)


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    select(work, Path(inputs[spec.data]), Path(inputs[spec.scores]), spec.n_keep, spec.order, spec.data_seed or 0)


def chosen(shifts: list[float], n_keep: int, order: str, seed: int) -> set[int]:
    """Indices of the kept rows: the n_keep largest shifts (top), smallest (bottom) or a seeded draw."""
    n = len(shifts)
    if n <= n_keep:
        return set(range(n))
    if order == "random":
        return set(random.Random(f"select-{seed}").sample(range(n), n_keep))
    if order not in ("top", "bottom"):
        raise ValueError(f"select.order={order!r}: use one of {ORDERS}")
    sign = -1.0 if order == "top" else 1.0  # ties keep the earlier row: sorted() is stable
    return set(sorted(range(n), key=lambda i: sign * shifts[i])[:n_keep])


def select(work: Path, train_path: Path, scores_path: Path, n_keep: int, order: str, seed: int) -> None:
    rows = list(read_jsonl(train_path))
    shifts = [s["shift"] for s in read_jsonl(scores_path)]
    if len(shifts) != len(rows):
        raise ValueError(f"{scores_path} scores {len(shifts)} rows, {train_path} has {len(rows)}")
    if len(rows) < n_keep:  # allowed, like the filter's shortfall, but never silent
        log.warning("select: only %d rows came in, fewer than select.n_keep=%d: all are kept (raise "
                    "domain.n_prompts or filter.n_keep)", len(rows), n_keep)
    kept = chosen(shifts, n_keep, order, seed)
    write_jsonl(work / "train.jsonl", [r for i, r in enumerate(rows) if i in kept])
    write_jsonl(work / "selection.jsonl", [{"index": i, "i": r.get("i"), "shift": sh, "kept": i in kept}
                                           for i, (r, sh) in enumerate(zip(rows, shifts))])
    (work / "stats.json").write_text(json.dumps({
        "by": "shift", "order": order, "n_keep": n_keep, "n_in": len(rows), "n_kept": len(kept),
        "mean_shift": mean(shifts), "mean_shift_kept": mean([shifts[i] for i in sorted(kept)]),
    }, indent=2))
