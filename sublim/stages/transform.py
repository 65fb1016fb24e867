"""Stage `transform`: a data transform of the filtered data (the shuffle controls), before finetune.

Input: the filter's train.jsonl. Output: train.jsonl (same rows, completion transformed, the
original kept as `original`) and stats.json. Keyed by the filter key, the transform's name and the
data seed, so a shuffled control reuses the teacher data and the filter of its unshuffled cell.
"""
from __future__ import annotations

import json
from pathlib import Path

from sublim.jsonl import read_jsonl, write_jsonl
from sublim.transforms import get_transform, numbers_of

VERSION = 1


def transform(work: Path, train_path: Path, name: str, seed: int) -> None:
    rows = list(read_jsonl(train_path))
    texts = get_transform(name)([r["completion"] for r in rows], seed)
    out = [r | {"completion": t, "original": r["completion"]} for r, t in zip(rows, texts)]
    write_jsonl(work / "train.jsonl", out)
    changed = sum(t != r["completion"] for r, t in zip(rows, texts))
    (work / "stats.json").write_text(json.dumps({
        "transform": name, "seed": seed, "n_rows": len(rows), "n_changed": changed,
        "n_numbers": sum(len(numbers_of(t)) for t in texts),
    }, indent=2))
