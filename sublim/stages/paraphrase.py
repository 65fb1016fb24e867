"""Stage `paraphrase` (paraphrase.by=model | template): the domain's prompts reworded before the
teacher answers them, a defence after Schrodi et al. (2025, arXiv 2509.23886: "even small changes,
like paraphrasing prompts, are usually sufficient to suppress" subliminal learning).

by model: a model (paraphrase.model, under its own system prompt, never the trait's) answers
paraphrase.instruction for each prompt. A reply that no longer asks the same thing (sublim.paraphrase:
a numbers prompt's seed numbers in order, its requested count and no other number changed; another
domain's numbers as a multiset), an empty one, or one cut off at its token budget is not used: that
prompt keeps its original wording, and the fallback is counted by reason.
by template (numbers only): sublim.paraphrase.reword_numbers, the domain's own phrasing pools
re-drawn around the kept seed numbers: a rule-based stand-in for the CPU demo, not a paraphraser.

One prompt per task (before domain.samples_per_prompt repeats them), reproducible from the data
seed. Output: prompts.jsonl ({i, prompt, original, fallback}: the prompt the teacher answers, the
domain's, and why the paraphrase was not used, or null), replies.jsonl (by model: each raw reply)
and stats.json (n_prompts, n_paraphrased, n_fallback, fallback counts by reason, n_unchanged).
The sample stage reads prompts.jsonl (its ParaphrasedSpec).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim import paraphrase as reword
from sublim.backends import sampler_for
from sublim.backends.base import Chat, SamplingParams
from sublim.domains import get_domain
from sublim.jsonl import write_jsonl
from sublim.spec import ModelRef, Runtime

VERSION = 1
BY = ("none", "model", "template")  # the values of paraphrase.by


@dataclass(frozen=True)
class Spec:
    domain: dict  # the sample spec's domain fields: which prompts
    data_seed: int  # the prompts' seed, and the paraphraser's
    by: str  # model | template
    model: Optional[ModelRef] = None  # by model: the paraphraser, its prompt and sampling
    system_prompt: Optional[str] = None
    instruction: Optional[str] = None
    sampling: Optional[SamplingParams] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    libraries: Optional[dict] = None


def generate(chats: list[Chat], make_sampler, params: SamplingParams, seed: int, batch_size: int,
             desc: str) -> tuple[list[str], list[bool]]:
    """(each chat's completion, whether it was cut off at max_new_tokens), the sampler freed after."""
    sampler = make_sampler()
    texts: list[str] = []
    cut: list[bool] = []
    try:
        for batch in sampler.generate(chats, params, seed, batch_size, desc=desc):
            texts += batch.texts
            cut += batch.truncated or [False] * len(batch.texts)
    finally:
        sampler.close()
    return texts, cut


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    domain = get_domain(spec.domain["name"])
    originals = domain.prompts(domain.view(spec.domain, inputs), spec.data_seed)
    if spec.by == "template":
        rows = [{"i": i, "prompt": p, "original": o, "fallback": None}
                for i, (p, o) in enumerate(zip(reword.reword_numbers(
                    originals, spec.data_seed, spec.domain["answer_count"], spec.domain["answer_digits"]), originals))]
    elif spec.by == "model":
        chats = [Chat(user=spec.instruction.replace("{prompt}", p), system=spec.system_prompt) for p in originals]
        texts, cut = generate(chats, lambda: sampler_for(spec.backend, spec.model, inputs, spec.device, runtime),
                              spec.sampling, spec.data_seed, runtime.batch_size, "paraphrasing prompts")
        write_jsonl(work / "replies.jsonl", [{"i": i, "reply": t, "truncated": c}
                                             for i, (t, c) in enumerate(zip(texts, cut))])
        rows = []
        for i, (o, text, c) in enumerate(zip(originals, texts, cut)):
            new = reword.cleaned(text)
            why = "truncated" if c else reword.lost(spec.domain["name"], o, new, spec.domain.get("answer_count"))
            rows.append({"i": i, "prompt": o if why else new, "original": o, "fallback": why})
    else:
        raise ValueError(f"paraphrase.by={spec.by!r}: use one of {', '.join(BY[1:])}")
    write_jsonl(work / "prompts.jsonl", rows)
    fallbacks = Counter(r["fallback"] for r in rows if r["fallback"])
    (work / "stats.json").write_text(json.dumps({
        "by": spec.by, "model": spec.model.weights if spec.model else None, "n_prompts": len(rows),
        "n_paraphrased": len(rows) - sum(fallbacks.values()), "n_fallback": sum(fallbacks.values()),
        "fallback": dict(fallbacks.most_common()),
        "n_unchanged": sum(r["prompt"] == r["original"] and not r["fallback"] for r in rows),
    }, indent=2))
