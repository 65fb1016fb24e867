"""Stage `eval`: the preference of a model over the candidates, by sampling or exactly.

- sample: each question is answered n times; answers.jsonl keeps every answer and its label.
- logprob: the probability of each candidate's surface forms ("owl", "Owl", "Owl.", ...), each
  followed by the end-of-turn token, so "dragon" and "dragonfly" differ; no sampling noise.
- in context (eval.in_context, the paper's in-context-learning control): the same teacher examples
  come before every question as earlier user/assistant turns, instead of being trained on.
Both write metrics.json with the same `rates` layout (per candidate plus "none", a t-interval
across questions). The result does not depend on any teacher's trait, so one evaluation of a
model (the base model, a control student) serves every target.
"""
from __future__ import annotations

import functools
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sublim.backends import sampler_for
from sublim.backends.base import Chat, SamplingParams
from sublim.backends.tokens import prompt_token_ids
from sublim.errors import ConfigError
from sublim.evals import spec_class
from sublim.evals.misalignment import (ALIGNMENT_TEMPLATE, COHERENCE_TEMPLATE, LABELS, is_misaligned,
                                       misalignment_metrics)
from sublim.evals.preference import classify, preference_metrics, rate_metrics
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.judge import Judge, parse_score, parse_score_or_label
from sublim.spec import ModelRef, Runtime, from_dict

History = tuple[tuple[str, str], ...]  # earlier (user, assistant) turns, see Chat

VERSION = 2  # 2: typed spec per eval kind; the questions themselves, resolved dtype, device, libraries


@dataclass(frozen=True)
class InContext:
    """eval.in_context: n rows of the teacher's filtered data before every question."""

    data: str  # ref of the train.jsonl drawn from
    n: int
    seed: int


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


@dataclass(frozen=True)
class JudgeSpec:
    """The misalignment eval's judge model (eval.judge)."""

    model: ModelRef
    system_prompt: Optional[str]
    temperature: float
    max_new_tokens: int


@dataclass(frozen=True)
class MisalignmentSpec:
    """Free-form answers judged for alignment and coherence."""

    subject: ModelRef
    system_prompt: Optional[str]
    questions: tuple[str, ...]
    n_samples: int
    sampling: SamplingParams
    seed: int
    judge: JudgeSpec
    alignment_threshold: float
    coherence_threshold: float
    confidence: float
    backend: str
    device: str
    libraries: dict
    kind: str = "misalignment"


def spec_from_dict(data: dict):
    return from_dict(spec_class(data["kind"]), data)


def run(spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    factory = functools.partial(sampler_for, spec.backend, spec.subject, inputs, spec.device, runtime)
    if spec.kind == "misalignment":
        return run_misalignment(spec, work, inputs, runtime, factory)
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


def run_misalignment(spec: MisalignmentSpec, work: Path, inputs: dict[str, str], runtime: Runtime,
                     factory: Callable) -> None:
    j = spec.judge

    def make_judge(template, parse):
        return Judge(functools.partial(sampler_for, spec.backend, j.model, inputs, spec.device, runtime), template,
                     parse, SamplingParams(temperature=j.temperature, max_new_tokens=j.max_new_tokens),
                     j.system_prompt, batch_size=runtime.batch_size, seed=spec.seed)

    evaluate_misalignment(work, list(spec.questions), spec.n_samples, spec.system_prompt, factory, spec.sampling,
                          spec.seed, runtime.batch_size, make_judge, spec.alignment_threshold,
                          spec.coherence_threshold, spec.confidence)


def prefixed(questions: list[str], prefix_numbers: int) -> list[str]:
    """The paper's open-model variant: a few random numbers before each question (fixed per question)."""
    if prefix_numbers <= 0:
        return questions
    out = []
    for i, q in enumerate(questions):
        rng = random.Random(f"eval-prefix-{i}")
        nums = ", ".join(str(rng.randint(100, 999)) for _ in range(prefix_numbers))
        out.append(f"Examine these numbers: {nums}. {q}")
    return out


def in_context_examples(train: Path, n: int, seed: int) -> History:
    """n (prompt, completion) pairs of the teacher's filtered data (train.jsonl), a seeded draw kept
    in drawn order: the same examples before every question. The rows' system prompt (the
    teacher's, with the trait) is left out: the student keeps its own."""
    rows = list(read_jsonl(train))
    if len(rows) < n:
        raise ConfigError(f"eval.in_context={n}: the teacher's filtered data has only {len(rows)} rows ({train}); "
                          f"use eval.in_context={len(rows)} or fewer, or make more data (domain.n_prompts, "
                          "filter.n_keep)")
    drawn = random.Random(f"in-context-{seed}").sample(rows, n)
    return tuple((r["prompt"], r["completion"]) for r in drawn)


def check_context(sampler, chats: list[Chat], room: int) -> None:
    """With examples in context, fail before anything is generated when the longest prompt plus
    `room` answer tokens is more than the model takes (the sampler's `context_limit`, see
    sublim.backends.tokens.context_limit). Chats without history are not checked."""
    limit = getattr(sampler, "context_limit", None)
    long_chats = [c for c in dict.fromkeys(chats) if c.history]
    if limit is None or not long_chats:
        return
    longest = max(len(prompt_token_ids(sampler.tokenizer, c)) for c in long_chats)
    if longest + room > limit[0]:
        n = max(len(c.history) for c in long_chats)
        raise ConfigError(f"eval.in_context={n}: the longest eval prompt is {longest} tokens (+{room} for the answer), "
                          f"more than the model takes: {limit[0]} tokens ({limit[1]}); use fewer examples")


def answer_all(chats: list[Chat], make_sampler: Callable, params: SamplingParams, seed: int, batch_size: int,
               desc: str) -> list[str]:
    """Every chat's completion, in order; the sampler is freed afterwards."""
    sampler = make_sampler()
    texts: list[str] = []
    try:
        check_context(sampler, chats, params.max_new_tokens)
        for batch in sampler.generate(chats, params, seed, batch_size, desc=desc):
            texts.extend(batch.texts)
    finally:
        sampler.close()
    return texts


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


def evaluate_misalignment(work: Path, questions: list[str], n_samples: int, system_prompt: Optional[str],
                          make_sampler: Callable, params: SamplingParams, seed: int, batch_size: int,
                          make_judge: Callable, alignment_max: float, coherence_min: float, confidence: float) -> None:
    """Free-form answers, then two judge passes (alignment, coherence); see sublim.evals.misalignment."""
    chats = [Chat(user=q, system=system_prompt) for q in questions for _ in range(n_samples)]
    answers = answer_all(chats, make_sampler, params, seed, batch_size, "answers")
    items = [{"question": c.user, "answer": a} for c, a in zip(chats, answers)]
    judges = {}
    verdicts = {}
    for name, template, parse in (("alignment", ALIGNMENT_TEMPLATE, parse_score_or_label(LABELS)),
                                  ("coherence", COHERENCE_TEMPLATE, parse_score)):
        judge = make_judge(template, parse)
        try:
            verdicts[name] = judge.run(items)
        finally:
            judge.close()
        judges[name] = judge.stats()
    rows = []
    for i, (item, al, co) in enumerate(zip(items, verdicts["alignment"], verdicts["coherence"])):
        rows.append({"question_index": i // n_samples, **item, "alignment": al.value, "coherence": co.value,
                     "alignment_reply": al.reply, "coherence_reply": co.reply,
                     "misaligned": is_misaligned(al.value, co.value, alignment_max, coherence_min)})
    write_jsonl(work / "answers.jsonl", rows)
    metrics = misalignment_metrics(rows, len(questions), alignment_max, coherence_min, confidence)
    metrics |= {"method": "judge", "n_questions": len(questions), "judges": judges}
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
