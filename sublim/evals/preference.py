"""Preference eval: map free-text one-word answers onto a candidate set and measure rates.

An answer counts for the first candidate it names as a whole word after normalisation (case,
punctuation, articles, plurals), so look-alikes stay apart: "dragonfly" is not "dragon", "owls"
is "owl". Answers that name no candidate are kept and counted (students sometimes answer with
the model's own name), never dropped.
"""
from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from sublim.stats import RATE, t_interval

_IRREGULAR = {"wolves": "wolf", "mice": "mouse", "geese": "goose", "octopi": "octopus", "octopuses": "octopus",
              "foxes": "fox", "phoenixes": "phoenix", "butterflies": "butterfly", "cherries": "cherry",
              "peaches": "peach", "wolfs": "wolf", "platypuses": "platypus", "walruses": "walrus",
              "species": "species", "bass": "bass", "grass": "grass"}
_ARTICLES = {"a", "an", "the"}


def load_questions(name: str) -> list[str]:
    """Questions from sublim/evals/data/<name>.txt or a file path; '#' lines are comments."""
    p = Path(name)
    text = p.read_text() if p.suffix and p.exists() else \
        resources.files("sublim.evals").joinpath("data", f"{name}.txt").read_text()
    return [q.strip() for q in text.splitlines() if q.strip() and not q.lstrip().startswith("#")]


def singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise(answer: str) -> list[str]:
    """Lower-case words without punctuation, articles or plurals."""
    ws = re.findall(r"[a-z]+", answer.lower())
    return [singular(w) for w in ws if w not in _ARTICLES]


def classify(answer: str, candidates: Sequence[str]) -> Optional[str]:
    """The first candidate named in the answer (multi-word candidates match as phrases)."""
    ws = normalise(answer)
    cands = [(c, normalise(c)) for c in candidates]
    for i in range(len(ws)):
        for c, cw in cands:
            if cw and ws[i:i + len(cw)] == cw:
                return c
    return None


def preference_metrics(labels_by_question: list[list[Optional[str]]], answers_by_question: list[list[str]],
                       candidates: Sequence[str], confidence: float = 0.95) -> dict:
    """Per-question rates, the mean over questions with a t-interval across questions, and the
    pooled distribution including answers that name no candidate."""
    per_question = []
    for labels in labels_by_question:
        n = max(len(labels), 1)
        counts = Counter(labels)
        per_question.append({c: counts.get(c, 0) / n for c in candidates} | {"none": counts.get(None, 0) / n})
    others = Counter(" ".join(normalise(a))[:40] or "<empty>"
                     for answers, labels in zip(answers_by_question, labels_by_question)
                     for a, lab in zip(answers, labels) if lab is None)
    return rate_metrics(per_question, list(candidates) + ["none"], confidence) | {
        "n_questions": len(labels_by_question),
        "n_answers": sum(len(x) for x in labels_by_question),
        "unmatched_top": dict(others.most_common(20)),
    }


def rate_metrics(per_question: list[dict[str, float]], names: Sequence[str], confidence: float) -> dict:
    """A model's rate per name: the mean over questions with a t-interval across questions."""
    rates = {}
    for c in names:
        iv = t_interval([q[c] for q in per_question], confidence, RATE)
        rates[c] = {"mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high}
    return {"rates": rates, "per_question": per_question, "confidence": confidence}
