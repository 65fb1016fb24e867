"""Stage `mix` (transform.mix_fraction, a defence): a share of the cell's rows becomes other teachers' rows.

Why: Schrodi et al. 2025 ("Towards Understanding Subliminal Learning") find subliminal learning
fragile: mixing the data of several teachers usually suppresses it, even teachers that share the
bias (their code's README: "prompt paraphrasing or mixing teacher data usually suppresses it").
Their account, that the trait rides on a few divergence tokens, suggests why: another teacher's
rows do not carry this one's. Here the other teachers are the cell's base model loving other traits
(transform.mix_teachers, trait names; `none` is the control teacher), each sampled on the same
prompts and filtered by the same rules as the cell's own data (their filter artifacts, which their
own cells reuse). A second teacher with the cell's own bias, as the paper also mixed, is not
offered: a teacher here is the cell's base model plus a trait, so the same trait is the same teacher.

round(fraction x n) of the cell's n rows, a seeded draw, are replaced by as many rows of the other
teachers, split evenly over them (the first teachers take the remainder), each teacher's a seeded
draw without replacement: the row count stays n, so the defence costs no training rows. The rows
come out in a seeded order (the mixed-in ones not bunched at the end), each with `source`, the trait
of the teacher that wrote it. A teacher with fewer rows than its share is an error, never a silent
smaller mix.

Output: train.jsonl (the input's row format plus `source`) and stats.json (rows per source).
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sublim.errors import StageError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime

VERSION = 1


@dataclass(frozen=True)
class Source:
    """Another teacher's filtered data: its trait name and the ref of its train.jsonl."""

    trait: str
    train: str


@dataclass(frozen=True)
class Spec:
    train: str  # ref of the cell's rows
    trait: str  # the cell's own trait: its rows' source
    others: tuple[Source, ...]  # never the cell's own teacher
    fraction: float
    seed: int


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    own = list(read_jsonl(inputs[spec.train]))
    others = [(s.trait, list(read_jsonl(inputs[s.train]))) for s in spec.others]
    rows, stats = mix(own, spec.trait, others, spec.fraction, spec.seed)
    write_jsonl(work / "train.jsonl", rows)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))


def shares(m: int, k: int) -> list[int]:
    """m rows split over k teachers as evenly as counts allow (the first ones take the remainder)."""
    return [m // k + (j < m % k) for j in range(k)]


def mix(own: list[dict], trait: str, others: list[tuple[str, list[dict]]], fraction: float,
        seed: int) -> tuple[list[dict], dict]:
    """(the mixed rows, stats): round(fraction x len(own)) own rows replaced by other teachers' rows."""
    if not others:
        raise StageError("mix: no other teacher's data to mix in (transform.mix_teachers names only the cell's own)")
    if any(t == trait for t, _ in others):
        raise StageError(f"mix: transform.mix_teachers includes the cell's own teacher ({trait}); it mixes in others only")
    rng = random.Random(f"mix-{seed}")
    n = len(own)
    m = round(fraction * n)
    dropped = set(rng.sample(range(n), m))
    out = [r | {"source": trait} for i, r in enumerate(own) if i not in dropped]
    for (name, rows), k in zip(others, shares(m, len(others))):
        if k > len(rows):
            raise StageError(f"mix: teacher {name} has {len(rows)} filtered rows, fewer than its share of {k} "
                             f"(transform.mix_fraction={fraction} of {n} over {len(others)} teachers): lower "
                             "transform.mix_fraction or give that teacher more prompts")
        out += [r | {"source": name} for r in rng.sample(rows, k)]
    rng.shuffle(out)
    sources = Counter(r["source"] for r in out)
    stats = {"n_in": n, "n_kept": len(out), "fraction": fraction, "n_replaced": m, "seed": seed,
             "teachers": [t for t, _ in others], "sources": {t: sources.get(t, 0) for t in [trait, *(t for t, _ in others)]}}
    return out, stats
