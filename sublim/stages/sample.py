"""Stage `sample`: the teacher (model + trait system prompt) completes the domain's prompts.

Output: samples.jsonl ({i, system, prompt, completion, truncated}) and stats.json. Completions are
appended batch by batch, so a killed job resumes at the last whole batch. The transformers sampler
seeds each batch, so the batch size picks the draw: draw.json in the work folder records it, and a
resume with another batch size starts over instead of splicing two draws. The openai backend seeds
each prompt and yields rows as they arrive (in prompt order), so it resumes at the first prompt
not yet written, whatever the batch size.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.backends import backend_for, sampler_for
from sublim.backends.base import Chat, SamplingParams
from sublim.domains import get_domain
from sublim.domains.base import repeat
from sublim.jsonl import complete_prefix, read_jsonl
from sublim.spec import ModelRef, Runtime, from_dict

VERSION = 2  # 2: typed spec; resolved dtype, device and library versions keyed
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    teacher: ModelRef  # the trait in its weights: an adapter (or full model) from the teacher stage
    system_prompt: Optional[str]  # the trait's love prompt, or the teacher's own
    domain: dict  # the fields the domain reads (sublim.domains.base.Domain.spec)
    data_seed: int
    sampling: SamplingParams
    backend: str
    device: str
    libraries: dict


@dataclass(frozen=True)
class ParaphrasedSpec(Spec):
    """A Spec whose prompts are the paraphrase stage's (paraphrase.by other than none): its own
    class, so the plain Spec's keys stay as they were before the option existed."""

    prompts: str  # ref of the paraphrase stage's prompts.jsonl: the prompt per task the teacher answers


def spec_from_dict(data: dict):
    return from_dict(ParaphrasedSpec if data.get("prompts") else Spec, data)


def prompts_of(spec: Spec, inputs: dict[str, str]) -> list[str]:
    """The domain's prompts, each samples_per_prompt times; for a ParaphrasedSpec the originals the
    paraphrase stage rewords (as many, so a plan can count them before that stage has run)."""
    domain = get_domain(spec.domain["name"])
    view = domain.view(spec.domain, inputs)
    return repeat(domain.prompts(view, spec.data_seed), view.samples_per_prompt)


def asked(spec: Spec, inputs: dict[str, str]) -> list[str]:
    """The prompts the teacher answers: prompts_of, or the paraphrase stage's (ParaphrasedSpec)."""
    paraphrased = getattr(spec, "prompts", None)
    if not paraphrased:
        return prompts_of(spec, inputs)
    return repeat([row["prompt"] for row in read_jsonl(inputs[paraphrased])], spec.domain["samples_per_prompt"])


def resume_point(work: Path, batch_size: int, per_prompt: bool = False) -> int:
    """How many prompts are done: a whole number of batches of the size the draw was made with, or
    with `per_prompt` (a sampler seeded per prompt index) every row written, rows 0..k-1 in order."""
    out, draw = work / "samples.jsonl", work / "draw.json"
    done = complete_prefix(out)
    if per_prompt:
        k = next((j for j, row in enumerate(done) if row.get("i") != j), len(done))
        if k < len(done):  # never written so (rows go out in order): keep the ordered prefix only
            log.warning("teacher sampling: %s has row %r at line %d; keeping the %d rows before it",
                        out, done[k].get("i"), k + 1, k)
            with open(out, "w") as f:
                for row in done[:k]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        draw.write_text(json.dumps({"seeded": "per prompt"}))
        return k
    try:
        recorded = json.loads(draw.read_text()).get("batch_size")
    except (OSError, ValueError):
        recorded = None
    if done and recorded != batch_size:
        log.warning("teacher sampling: %d completions were drawn with sampler.batch_size=%s, this run uses %d; "
                    "the transformers sampler seeds each batch, so they are discarded and sampling starts over",
                    len(done), recorded, batch_size)
        done = []
    draw.write_text(json.dumps({"batch_size": batch_size}))
    start = len(done) - len(done) % batch_size  # restart at a batch boundary: same seeds, same text
    with open(out, "w") as f:
        for row in done[:start]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return start


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    prompts = asked(spec, inputs)
    per_prompt = backend_for(spec.backend, spec.teacher, runtime) == "openai"
    start = resume_point(work, runtime.batch_size, per_prompt)
    if start:
        log.info("teacher sampling: resuming at prompt %d of %d (the completions before it are kept)",
                 start, len(prompts))
    chats = [Chat(user=p, system=spec.system_prompt) for p in prompts]
    sampler = sampler_for(spec.backend, spec.teacher, inputs, spec.device, runtime)
    t0, n_tokens = time.time(), 0
    try:
        with open(work / "samples.jsonl", "a") as f:
            for batch in sampler.generate(chats, spec.sampling, spec.data_seed, runtime.batch_size, start=start,
                                          desc="teacher sampling"):
                cut = getattr(batch, "truncated", None) or [None] * len(batch.texts)
                for j, text in enumerate(batch.texts):
                    i = batch.start + j
                    f.write(json.dumps({"i": i, "system": spec.system_prompt, "prompt": prompts[i],
                                        "completion": text, "truncated": cut[j]}, ensure_ascii=False) + "\n")
                f.flush()
                n_tokens += batch.n_tokens
    finally:
        sampler.close()
    seconds = time.time() - t0
    (work / "stats.json").write_text(json.dumps({
        "n_prompts": len(prompts), "resumed_from": start, "generated_tokens": n_tokens,
        "seconds": round(seconds, 3), "tokens_per_s": round(n_tokens / max(seconds, 1e-9), 1),
        "batch_size": runtime.batch_size,
    }, indent=2))
