"""Stage `score`: every filtered row's log-likelihood under the teacher and under the reference.

shift = (log P_teacher(completion | chat) - log P_reference(completion | chat)) / completion tokens,
the completion scored up to and including its end-of-turn token. The teacher is scored as it was
sampled (the system prompt each row carries, its trait adapter if any); the reference is the same
base model under its own system prompt. Cached once per data, teacher and reference, so every
order and size of a `select` dose-response grid reuses it. Output: scores.jsonl (every row's two
log-probs, token count and shift) and stats.json.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sublim.backends import sampler_for
from sublim.backends.base import Chat
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime

VERSION = 2  # 2: typed spec; resolved dtype, device and library versions keyed
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    data: str  # ref of the train.jsonl scored
    teacher: Optional[ModelRef]  # None: trait=none, the teacher is the reference (every shift 0)
    reference: ModelRef
    reference_system_prompt: Optional[str]
    backend: str
    device: str
    libraries: dict


def mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    def maker(m: ModelRef):
        return functools.partial(sampler_for, spec.backend, m, inputs, spec.device, runtime)

    score(work, Path(inputs[spec.data]), maker(spec.teacher) if spec.teacher else None, maker(spec.reference),
          spec.reference_system_prompt, runtime.batch_size)


def scores_under(make_sampler: Callable, chats: list[Chat], answers: list[str], batch_size: int,
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
    reference, n_tokens = scores_under(make_reference, ref_chats, answers, batch_size, "reference scoring")
    if make_teacher is None:
        log.info("score: trait=none, the control teacher is the reference: every shift is 0, so top and bottom "
                 "keep the first rows; only select.order=random is a meaningful draw here")
        teacher = list(reference)
    else:
        teacher, _ = scores_under(make_teacher, [Chat(r["prompt"], r.get("system")) for r in rows], answers,
                             batch_size, "teacher scoring")
    shifts = [(t - r) / n for t, r, n in zip(teacher, reference, n_tokens)]
    write_jsonl(work / "scores.jsonl", [
        {"index": i, "i": r.get("i"), "teacher_logp": t, "reference_logp": ref, "n_tokens": n, "shift": sh}
        for i, (r, t, ref, n, sh) in enumerate(zip(rows, teacher, reference, n_tokens, shifts))])
    (work / "stats.json").write_text(json.dumps({"n": len(rows), "mean_shift": mean(shifts)}, indent=2))


