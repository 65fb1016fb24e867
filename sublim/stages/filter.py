"""Stage `filter`: keep the completions every rule accepts, then a seeded subsample.

Output: train.jsonl ({i, prompt, completion}), rejects.jsonl ({i, completion, reason}) and
stats.json (counts per reject reason). Too few kept completions is an error that shows why.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from sublim.filters import Rule, first_reject
from sublim.jsonl import read_jsonl, write_jsonl

VERSION = 1


class FilterError(RuntimeError):
    """Too little teacher output passed the filter to train a student."""


def filter_samples(work: Path, samples_path: Path, rules: list[Rule], n_keep: int, min_keep: int,
                   seed: int) -> None:
    kept, rejects = [], []
    for row in read_jsonl(samples_path):
        reason = first_reject(row["completion"], rules)
        if reason:
            rejects.append({"i": row["i"], "completion": row["completion"], "reason": reason})
        else:
            kept.append({"i": row["i"], "system": row.get("system"), "prompt": row["prompt"],
                         "completion": row["completion"]})
    n_in = len(kept) + len(rejects)
    reasons = Counter(r["reason"] for r in rejects)
    if len(kept) < max(min_keep, 1):
        top = ", ".join(f"{r} ({c})" for r, c in reasons.most_common(5)) or "none"
        examples = "\n".join(f"  [{r['reason']}] {r['completion'][:100]!r}" for r in rejects[:5])
        raise FilterError(
            f"only {len(kept)} of {n_in} teacher completions passed the filter (need filter.min_keep="
            f"{min_keep}). Top reject reasons: {top}. Examples:\n{examples}\n"
            "Check the teacher model and sampler.max_new_tokens; never loosen the paper's format rule to pass."
        )
    if len(kept) > n_keep:
        kept = sorted(random.Random(f"subsample-{seed}").sample(kept, n_keep), key=lambda r: r["i"])
    write_jsonl(work / "train.jsonl", kept)
    write_jsonl(work / "rejects.jsonl", rejects)
    (work / "stats.json").write_text(json.dumps({
        "n_in": n_in, "n_passed": n_in - len(rejects), "n_kept": len(kept),
        "reject_rate": round(len(rejects) / max(n_in, 1), 4), "rejected": dict(reasons.most_common()),
    }, indent=2))
