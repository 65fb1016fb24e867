"""Stage `transform`: a data transform of the filtered data (the shuffle controls), before finetune.

Input: the filter's train.jsonl. Output: train.jsonl (same rows, completion transformed, the
original kept as `original`) and stats.json. Keyed by the filter's data, the transform's name and
the data seed, so a shuffled control reuses the teacher data and the filter of its unshuffled cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime
from sublim.transforms import get_transform, numbers_of

VERSION = 2  # 2: typed spec


@dataclass(frozen=True)
class Spec:
    train: str  # ref of the train.jsonl it transforms
    transform: str  # a name in sublim.transforms.TRANSFORMS
    seed: int


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    rows = list(read_jsonl(inputs[spec.train]))
    texts = get_transform(spec.transform)([r["completion"] for r in rows], spec.seed)
    out = [r | {"completion": t, "original": r["completion"]} for r, t in zip(rows, texts)]
    write_jsonl(work / "train.jsonl", out)
    changed = sum(t != r["completion"] for r, t in zip(rows, texts))
    (work / "stats.json").write_text(json.dumps({
        "transform": spec.transform, "seed": spec.seed, "n_rows": len(rows), "n_changed": changed,
        "n_numbers": sum(len(numbers_of(t)) for t in texts),
    }, indent=2))
