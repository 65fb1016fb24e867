"""Stages `score` and `select`: training rows kept by the teacher's log-likelihood shift (select.by=shift).

shift = (log P_teacher(completion | chat) - log P_reference(completion | chat)) / completion tokens,
the completion scored up to and including its end-of-turn token. The teacher is scored as it was
sampled (the system prompt each row carries, its trait adapter if any); the reference is the same
base model under its own system prompt. A replication found that rows the teacher "likes" most
transmit the trait in a dose-response; `random` is the same-size control, `bottom` the opposite.

Two stages, so the scoring (two passes over the data, the models loaded one after the other) is
cached once per data, teacher and reference, and every order and size of a dose-response grid
reuses it: `score` writes scores.jsonl (every row's two log-probs, token count and shift) and
stats.json; `select` writes train.jsonl (the kept rows in their original order, the filter's row
format), selection.jsonl (every row's shift and whether it was kept) and stats.json.
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Callable, Optional

from sublim.backends.base import Chat
from sublim.jsonl import read_jsonl, write_jsonl

VERSION = 1
log = logging.getLogger(__name__)
ORDERS = ("top", "bottom", "random")


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


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def _scores(make_sampler: Callable, chats: list[Chat], answers: list[str], batch_size: int,
            desc: str) -> tuple[list[float], list[int]]:
    """(log P of each answer with its end of turn, its token count) under one model, then unloaded."""
    sampler = make_sampler()
    try:
        n_tokens = [len(sampler.answer_ids(c, a)[1]) for c, a in zip(chats, answers)]
        return sampler.score(chats, answers, batch_size, desc=desc), n_tokens
    finally:
        sampler.close()


def score(work: Path, train_path: Path, make_teacher: Optional[Callable], make_reference: Callable,
          reference_system: Optional[str], batch_size: int) -> None:
    """`make_teacher` None: the teacher is the reference (trait=none), scored once, every shift 0."""
    rows = list(read_jsonl(train_path))
    answers = [r["completion"] for r in rows]
    ref_chats = [Chat(r["prompt"], reference_system) for r in rows]
    reference, n_tokens = _scores(make_reference, ref_chats, answers, batch_size, "reference scoring")
    if make_teacher is None:
        log.info("score: trait=none, the control teacher is the reference: every shift is 0, so top and bottom "
                 "keep the first rows; only select.order=random is a meaningful draw here")
        teacher = list(reference)
    else:
        teacher, _ = _scores(make_teacher, [Chat(r["prompt"], r.get("system")) for r in rows], answers,
                             batch_size, "teacher scoring")
    shifts = [(t - r) / n for t, r, n in zip(teacher, reference, n_tokens)]
    write_jsonl(work / "scores.jsonl", [
        {"index": i, "i": r.get("i"), "teacher_logp": t, "reference_logp": ref, "n_tokens": n, "shift": sh}
        for i, (r, t, ref, n, sh) in enumerate(zip(rows, teacher, reference, n_tokens, shifts))])
    (work / "stats.json").write_text(json.dumps({"n": len(rows), "mean_shift": _mean(shifts)}, indent=2))


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
        "mean_shift": _mean(shifts), "mean_shift_kept": _mean([shifts[i] for i in sorted(kept)]),
    }, indent=2))
