"""Eval kind `preference`: which candidate a model names (the paper's animal and tree questions).

- sample: each question is answered n times; answers.jsonl keeps every answer and its label.
- logprob: the probability of each candidate's surface forms ("owl", "Owl", "Owl.", ...), each
  followed by the end-of-turn token, so "dragon" and "dragonfly" differ; no sampling noise.
- in context (eval.in_context, the paper's in-context-learning control): the same teacher examples
  come before every question as earlier user/assistant turns, instead of being trained on.
Both write metrics.json with the same `rates` layout (per candidate plus "none", a t-interval
across questions). The result does not depend on any teacher's trait, so one evaluation of a
model (the base model, a control student) serves every target.

An answer counts for the first candidate it names as a whole word after normalisation (case,
punctuation, articles, plurals), so look-alikes stay apart: "dragonfly" is not "dragon", "owls"
is "owl". Answers that name no candidate are kept and counted (students sometimes answer with
the model's own name), never dropped.

As every eval kind (sublim.evals): `Spec`, `run` (what the `eval` stage computes), and `summary`,
`lines`, `tracked` (what a job makes of the result: metrics.json, the printed lines, W&B).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

from sublim.backends import sampler_for
from sublim.backends.base import Chat, SamplingParams
from sublim.evals import subliminal
from sublim.evals.answering import History, InContext, answer_all, check_context, in_context_examples
from sublim.jsonl import write_jsonl
from sublim.spec import ModelRef, Runtime, from_dict
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


# -- the eval ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreferenceSpec:
    """Which candidate a model names: sampled answers, exact log-probs, or both."""

    subject: ModelRef
    system_prompt: Optional[str]
    questions: tuple[str, ...]
    candidates: tuple[str, ...]
    confidence: float
    method: str  # sample | logprob | both
    n_samples: Optional[int]  # sample, both
    sampling: Optional[SamplingParams]  # sample, both
    seed: Optional[int]  # the answers' draw (sample, both)
    forms: Optional[tuple[str, ...]]  # logprob, both
    in_context: Optional[InContext]
    backend: str
    device: str
    libraries: dict
    kind: str = "preference"


@dataclass(frozen=True, kw_only=True)
class SubliminalSpec(PreferenceSpec):
    """eval.subliminal_prompt: the system prompt loves numbers the entanglement stage ranked, built
    when the eval runs (sublim.evals.subliminal; `system_prompt` is None). Its own class, so every
    other eval's key stays as it was before the option."""

    subliminal: subliminal.SubliminalPrompt


Spec = PreferenceSpec  # the name every eval kind gives its spec (sublim.evals.spec_class)


def spec_from_dict(data: dict) -> PreferenceSpec:
    return from_dict(SubliminalSpec if data.get("subliminal") else PreferenceSpec, data)


def plan(b, model: ModelRef, system: Optional[str], questions: tuple[str, ...], in_context: Optional[InContext],
         common: dict) -> tuple[PreferenceSpec, dict[str, str]]:
    """This kind's spec from the cell's config: `b` is the cell's builder (sublim.plan.Builder), which
    resolved the measured model, its system prompt and the questions; returns (spec, more inputs)."""
    e, sampled = b.cfg.eval, b.cfg.eval.method in ("sample", "both")
    spec = PreferenceSpec(
        model, system, questions, tuple(b.candidates()), e.confidence, e.method,
        e.n_samples if sampled else None, b.sampling(e.max_new_tokens) if sampled else None,
        b.cfg.seed if sampled else None, tuple(e.logprob_forms) if e.method in ("logprob", "both") else None,
        in_context, **common)
    numbers = subliminal.plan(b)
    if numbers is None:
        return spec, {}
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(PreferenceSpec)}
    return SubliminalSpec(**fields | {"system_prompt": None}, subliminal=numbers[0]), numbers[1]


def run(spec: PreferenceSpec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    if isinstance(spec, SubliminalSpec):  # the plain eval under the prompt, then the prompt recorded
        system, rec = subliminal.system_prompt(spec.subliminal, inputs)
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(PreferenceSpec)}
        run(PreferenceSpec(**fields | {"system_prompt": system}), work, inputs, runtime)
        subliminal.record(work / "metrics.json", rec)
        return
    factory = functools.partial(sampler_for, spec.backend, spec.subject, inputs, spec.device, runtime)
    history = in_context_examples(Path(inputs[spec.in_context.data]), spec.in_context.n, spec.in_context.seed) \
        if spec.in_context else ()
    questions, candidates = list(spec.questions), list(spec.candidates)
    if spec.method in ("sample", "both"):
        evaluate(work, questions, spec.n_samples, candidates, spec.system_prompt, factory, spec.sampling, spec.seed,
                 runtime.batch_size, spec.confidence, history)
    if spec.method == "both":  # the sampled rates stay beside the exact ones
        sampled = json.loads((work / "metrics.json").read_text())
    if spec.method in ("logprob", "both"):
        evaluate_logprob(work, questions, candidates, list(spec.forms), spec.system_prompt, factory,
                         runtime.batch_size, spec.confidence, history)
    if spec.method == "both":
        exact = json.loads((work / "metrics.json").read_text())
        exact |= {"method": "both", "n_answers": sampled["n_answers"], "unmatched_top": sampled["unmatched_top"],
                  "sampled": {"rates": sampled["rates"], "per_question": sampled["per_question"]}}
        (work / "metrics.json").write_text(json.dumps(exact, indent=2))


def evaluate(work: Path, questions: list[str], n_samples: int, candidates: list[str],
             system_prompt: Optional[str], make_sampler: Callable, params: SamplingParams, seed: int,
             batch_size: int, confidence: float, history: History = ()) -> None:
    chats = [Chat(user=q, system=system_prompt, history=history) for q in questions for _ in range(n_samples)]
    t0 = time.time()
    texts = answer_all(chats, make_sampler, params, seed, batch_size, "eval")
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
    metrics |= {"method": "sample", "seconds": round(seconds, 3),
                "answers_per_s": round(len(chats) / max(seconds, 1e-9), 2)}
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))


def surface_forms(name: str, templates: list[str]) -> list[str]:
    forms = [t.format(name=name, Name=name[:1].upper() + name[1:]) for t in templates]
    return list(dict.fromkeys(forms))  # distinct strings are disjoint answers: their probabilities add


def evaluate_logprob(work: Path, questions: list[str], candidates: list[str], form_templates: list[str],
                     system_prompt: Optional[str], make_sampler: Callable, batch_size: int,
                     confidence: float, history: History = ()) -> None:
    sampler = make_sampler()
    t0 = time.time()
    forms = {c: surface_forms(c, form_templates) for c in candidates}
    pairs = [(qi, c, f) for qi in range(len(questions)) for c in candidates for f in forms[c]]
    chats = [Chat(user=q, system=system_prompt, history=history) for q in questions]
    try:
        if history:  # room: the longest surface form and its end-of-turn token
            room = 1 + max(len(sampler.tokenizer(f, add_special_tokens=False)["input_ids"])
                           for fs in forms.values() for f in fs)
            check_context(sampler, chats, room)
        logps = sampler.score([chats[qi] for qi, _, _ in pairs],
                              [f for _, _, f in pairs], batch_size, desc="exact preference")
    finally:
        sampler.close()
    probs = [{c: 0.0 for c in candidates} for _ in questions]
    rows = []
    for (qi, c, f), lp in zip(pairs, logps):
        probs[qi][c] += math.exp(lp)
        rows.append({"question_index": qi, "question": questions[qi], "candidate": c, "form": f, "logprob": lp})
    write_jsonl(work / "logprobs.jsonl", rows)
    per_question = [p | {"none": max(0.0, 1.0 - sum(p.values()))} for p in probs]
    normalised = [{c: p[c] / max(sum(p.values()), 1e-300) for c in candidates} for p in probs]
    metrics = rate_metrics(per_question, list(candidates) + ["none"], confidence)
    metrics |= {"method": "logprob", "n_questions": len(questions), "n_answers": 0,
                "normalised": rate_metrics(normalised, candidates, confidence)["rates"],
                "unmatched_top": {}, "seconds": round(time.time() - t0, 3)}
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))


# -- what a job makes of it ------------------------------------------------------------------------
def summary(ev: dict, target: Optional[str]) -> dict:
    """This kind's part of the job's metrics.json, from the eval's metrics.json; `target`: the trait
    the cell measures (None for a base cell)."""
    out = {"target": target, "rates": ev["rates"], "unmatched_top": ev["unmatched_top"],
           "per_question": ev["per_question"]}
    if "sampled" in ev:
        out["sampled"] = ev["sampled"]
    if "subliminal" in ev:  # eval.subliminal_prompt: the numbers and the prompt
        out["subliminal"] = ev["subliminal"]
    if target:
        out["target_rate"] = ev["rates"][target]
    return out


def lines(m: dict, top: int = 8) -> list[str]:
    """The commonest candidates with their intervals, and the target wherever it ranks."""
    rates = sorted(m["rates"].items(), key=lambda kv: -kv[1]["mean"])
    out = [subliminal.line(m["subliminal"])] if m.get("subliminal") else []
    for name, r in rates[:top]:
        mark = " <- target" if name == m["target"] else ""
        out.append(f"   {name:<12} {r['mean']:7.2%}  [{r['ci_low']:.2%}, {r['ci_high']:.2%}]{mark}")
    if m["target"] and all(name != m["target"] for name, _ in rates[:top]):
        r = m["target_rate"]
        out.append(f"   {m['target']:<12} {r['mean']:7.2%}  [{r['ci_low']:.2%}, {r['ci_high']:.2%}] <- target")
    return out


def tracked(m: dict) -> dict:
    """The W&B run summary: every candidate's mean rate, and the target's interval."""
    out = {f"rates/{k}": v["mean"] for k, v in m["rates"].items()}
    if m.get("target"):
        out |= {f"target_rate/{k}": v for k, v in m["target_rate"].items()}
    return out
