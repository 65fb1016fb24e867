"""Stage `eval`: a model answers the preference questions n times each; the full answer
distribution goes to answers.jsonl and metrics.json (rates per candidate with CIs).

The result does not depend on which trait a teacher had, so one evaluation of a model (the base
model, a control student) serves every target animal.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

from sublim.backends.base import Chat, SamplingParams
from sublim.evals.preference import classify, preference_metrics
from sublim.jsonl import write_jsonl

VERSION = 1


def evaluate(work: Path, questions: list[str], n_samples: int, candidates: list[str],
             system_prompt: Optional[str], make_sampler: Callable, params: SamplingParams, seed: int,
             batch_size: int, confidence: float) -> None:
    chats = [Chat(user=q, system=system_prompt) for q in questions for _ in range(n_samples)]
    sampler = make_sampler()
    t0 = time.time()
    texts: list[str] = []
    try:
        for batch in sampler.generate(chats, params, seed, batch_size, desc="eval"):
            texts.extend(batch.texts)
    finally:
        sampler.close()
    seconds = time.time() - t0
    rows, labels_by_q, answers_by_q = [], [], []
    for qi, q in enumerate(questions):
        answers = texts[qi * n_samples:(qi + 1) * n_samples]
        labels = [classify(a, candidates) for a in answers]
        labels_by_q.append(labels)
        answers_by_q.append(answers)
        rows += [{"question_index": qi, "question": q, "answer": a, "label": lab} for a, lab in zip(answers, labels)]
    write_jsonl(work / "answers.jsonl", rows)
    metrics = preference_metrics(labels_by_q, answers_by_q, candidates, confidence)
    metrics["seconds"] = round(seconds, 3)
    metrics["answers_per_s"] = round(len(chats) / max(seconds, 1e-9), 2)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
