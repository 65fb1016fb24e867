"""The planner's half of the two rewording defences (sublim.plan calls these; stages never do):
`paraphrase` (the prompts reworded before the teacher answers) and `rewrite` (the kept completions
rewritten by a model, then filtered again). Apart from plan.py so the feature reads in one place;
both leave every key of a cell without them as it was (no stage, the plain sample Spec).

The paraphraser and the rewriter run under their own system prompt (a null one resolved to what
their chat template inserts, as for teacher and student: sublim.chat_template), never the trait's.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from sublim.backends.base import SamplingParams
from sublim.chat_template import template_system_prompt
from sublim.errors import ConfigError
from sublim.served import check_sampling
from sublim.spec import MODEL_LIBRARIES, SERVED
from sublim.stages import paraphrase as paraphrase_stage
from sublim.stages import rewrite as rewrite_stage
from sublim.stages import sample as sample_stage

SET_MODEL = {"paraphrase": "+model@paraphrase.model=smollm2-135m-instruct",
             "rewrite": "+model@rewrite.model=smollm2-135m-instruct"}


def check(cfg) -> None:
    """paraphrase.* and rewrite.*: their choices, and a setting that would change nothing is refused."""
    p, r = cfg.paraphrase, cfg.rewrite
    if p.by not in paraphrase_stage.BY:
        raise ConfigError(f"paraphrase.by={p.by!r}: use one of {', '.join(paraphrase_stage.BY)}")
    if p.by == "model" and p.model is None:
        raise ConfigError(f"paraphrase.by=model needs paraphrase.model: set it like any model, {SET_MODEL['paraphrase']}")
    if p.by != "model" and p.model is not None:
        raise ConfigError(f"paraphrase.model is set but paraphrase.by={p.by}: use paraphrase.by=model, or drop "
                          "paraphrase.model")
    if p.by == "template" and cfg.domain.name != "numbers":
        raise ConfigError(f"paraphrase.by=template rewords with the numbers domain's phrasing pools, not "
                          f"domain={cfg.domain.name}'s: use paraphrase.by=model, or domain=numbers")
    if p.by == "model" and cfg.domain.name == "cot":
        raise ConfigError("paraphrase.by=model with domain=cot: cot's answer check matches each sample to its "
                          "problem by the problem's own wording; use paraphrase.by=none")
    for key, m in (("paraphrase.model", p.model), ("rewrite.model", r.model)):
        if m is not None and m.reference is not None and m.path:  # a preset over defence=rewrite's reference
            raise ConfigError(f"{key} has both reference settings and path={m.path}: the reference would be used; "
                              f"set {key}.reference=null to use {m.path}")
    _unused(p, "paraphrase", p.by == "model", ("instruction", "temperature", "max_new_tokens"),
            "paraphrase.by=model")
    _unused(r, "rewrite", r.model is not None, ("instruction", "temperature", "max_new_tokens"),
            f"a rewriter ({SET_MODEL['rewrite']})")


def _unused(section, name: str, used: bool, fields: tuple[str, ...], needs: str) -> None:
    default = type(section)()
    for f in fields:
        if not used and getattr(section, f) != getattr(default, f):
            raise ConfigError(f"{name}.{f}={getattr(section, f)!r} changes nothing without {needs}: set that too, "
                              f"or drop {name}.{f}")


def own_system_prompt(b, m, key: str):
    """`m` with a null system prompt resolved to its chat template's default (keyed)."""
    if m.system_prompt is not None or m.reference is not None or m.served.base_url:
        return m
    try:
        default = template_system_prompt(m.path, m.revision, b.cfg.paths.artifacts)
    except ValueError as e:
        raise ConfigError(f"{key}.system_prompt=null: {e}; set {key}.system_prompt to what the model should see") \
            from None
    return m if default is None else dataclasses.replace(m, system_prompt=default)


def _runner(b, m, key: str, sampling: SamplingParams) -> tuple[Any, Optional[str], tuple, dict[str, str]]:
    """(ModelRef, system prompt, (backend, device, libraries), inputs) of the model at config `key`."""
    m = own_system_prompt(b, m, key)
    model, inputs = b.model(m, key)
    if model.weights.startswith(SERVED):
        check_sampling(sampling, b.runtime.served[model.weights]["server"], key)
    return model, m.system_prompt, b.where(model, *MODEL_LIBRARIES), inputs


def paraphrased(b, spec, files: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """The sample spec reading the paraphrase stage's prompts, and that stage's inputs; `spec` as
    it is when paraphrase.by=none."""
    p = b.cfg.paraphrase
    if p.by == "none":
        return spec, {}
    if p.by == "template":
        step = paraphrase_stage.Spec(spec.domain, spec.data_seed, "template")
        inputs = dict(files)
    else:
        sampling = SamplingParams(temperature=p.temperature, max_new_tokens=p.max_new_tokens)
        model, system, where, inputs = _runner(b, p.model, "paraphrase.model", sampling)
        step = paraphrase_stage.Spec(spec.domain, spec.data_seed, "model", model, system, p.instruction, sampling,
                                     *where)
        inputs = inputs | files
    key = b.add("paraphrase", step, inputs)
    ref, more = b.artifact("paraphrase", key, "prompts.jsonl")
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return sample_stage.ParaphrasedSpec(**fields, prompts=ref), more


def rewritten(b, data: tuple[str, str], f, files: dict[str, str]) -> tuple[str, str]:
    """rewrite.model set: the `rewrite` step on `data`'s rows (filter spec `f`: its rules run again)."""
    cfg, r = b.cfg, b.cfg.rewrite
    budget = r.max_new_tokens or cfg.domain.max_new_tokens or cfg.sampler.max_new_tokens
    sampling = SamplingParams(temperature=r.temperature, max_new_tokens=budget)
    model, system, where, inputs = _runner(b, r.model, "rewrite.model", sampling)
    rows, more = b.artifact(*data, "train.jsonl")
    key = b.add("rewrite", rewrite_stage.Spec(rows, model, system, r.instruction, sampling, f.domain, f.rules,
                                              f.trait_word, cfg.filter.min_keep, f.data_seed, *where),
                inputs | more | files)
    return "rewrite", key


def label(cfg) -> str:
    """What the cell's name says of these defences ("" when off): the paraphraser and the rewriter
    by name, since a rewriter sharing the teacher's bias can transmit it."""
    parts = []
    p, r = getattr(cfg, "paraphrase", None), getattr(cfg, "rewrite", None)
    if p is not None and p.by != "none":
        parts.append("paraphrase-" + ("template" if p.by == "template" else p.model.name))
    if r is not None and r.model is not None:
        parts.append(f"rewrite-{r.model.name}")
    return "+".join(parts)
