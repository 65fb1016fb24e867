"""Divergence tokens in a cell's plan (issue #21): the `divergence` stage on the filter's rows, and
its two uses, the `replace` transform (transform.divergent=replace) and the fine-tune's loss masks
(finetune.train_on). Kept out of sublim.plan as sublim.defences and sublim.rewording are: the
functions take the cell's builder (`b`: sublim.plan.Builder) and add their steps to it.

The counterfactual teachers are the same base model loving something else (divergence.
counterfactuals, else the first divergence.k eval candidates other than the trait); a cell's own
trait is skipped, so one grid setting, [none, owl], gives the owl cell the trait-free teacher and
the control cell the owl teacher.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from sublim.checks import candidates_of
from sublim.config import Config
from sublim.errors import ConfigError
from sublim.spec import MODEL_LIBRARIES, SERVED, ModelRef, libraries
from sublim.stages import divergence as divergence_stage
from sublim.stages import finetune as finetune_stage
from sublim.stages import replace as replace_stage
from sublim.traits import love_prompt


def teacher_system_prompt(cfg: Config) -> Optional[str]:
    """A trait's love prompt replaces the teacher's own; trait=none keeps the model's."""
    if cfg.trait.name == "none":
        return cfg.teacher.system_prompt
    return cfg.trait.system_prompt or love_prompt(cfg.trait.name, cfg.trait.category)


def trait_teacher(b: Any) -> tuple[ModelRef, Optional[str], dict[str, str]]:
    """The teacher as it sampled the data: (model, system prompt, inputs)."""
    trained, inputs = b.trained_teacher()
    if trained is not None:  # the trait is in the weights: the teacher keeps its own system prompt
        return trained, b.cfg.teacher.system_prompt, inputs
    model, inputs = b.model(b.cfg.teacher, "teacher")
    return model, teacher_system_prompt(b.cfg), inputs


def counterfactual_names(cfg: Config) -> list[str]:
    """divergence.counterfactuals without the cell's own trait, or the first divergence.k eval
    candidates other than the trait."""
    d = cfg.divergence
    if d.counterfactuals:
        names = [n for n in dict.fromkeys(d.counterfactuals) if n != cfg.trait.name]
        if not names:
            raise ConfigError(f"divergence.counterfactuals={list(d.counterfactuals)} holds only the trait itself "
                              f"({cfg.trait.name}): name other traits")
        return names
    others = [c for c in candidates_of(cfg) if c != cfg.trait.name]
    if len(others) < d.k:
        raise ConfigError(f"divergence.k={d.k}: the eval's candidates give {len(others)} names other than the "
                          "trait; lower divergence.k or name them in divergence.counterfactuals=[...]")
    return others[: d.k]


def flags(b: Any, data: tuple[str, str]) -> tuple[str, dict[str, str]]:
    """The `divergence` stage on `data`'s rows: (ref of its divergence.jsonl, inputs)."""
    cfg, t = b.cfg, b.cfg.trait
    if t.name != "none" and (t.method == "adapter" or t.data):
        raise ConfigError(f"trait.method={t.method}{' with trait.data' if t.data else ''}: divergence tokens need "
                          "counterfactual teachers loving other traits, which only a prompted teacher or one "
                          "fine-tuned on generated preference answers has; use finetune.train_on=all and "
                          "transform.divergent=keep")
    rows, inputs = b.artifact(*data, "train.jsonl")
    model, system, more = trait_teacher(b)
    reference, ref_inputs = b.model(cfg.teacher, "teacher")
    if reference.weights.startswith(SERVED):
        raise ConfigError(f"finetune.train_on / transform.divergent: the teacher ({cfg.teacher.name}) is served, "
                          "and divergence tokens need its logits at every position; use a local teacher")
    Teacher = divergence_stage.Teacher
    counterfactuals = []
    for name in counterfactual_names(cfg):
        if name == "none":
            counterfactuals.append(Teacher("none", reference, cfg.teacher.system_prompt))
            continue
        other = dataclasses.replace(cfg, trait=dataclasses.replace(t, name=name, system_prompt=None))
        m, s, i = trait_teacher(b._with(other))
        counterfactuals.append(Teacher(name, m, s))
        more = more | i
    adapters = model.adapter or any(c.model.adapter for c in counterfactuals)
    key = b.add("divergence", divergence_stage.Spec(
        rows, Teacher(t.name, model, system), tuple(counterfactuals),
        Teacher("reference", reference, cfg.teacher.system_prompt), "hf", b.target.device,
        libraries(*MODEL_LIBRARIES, *(("peft",) if adapters else ()))), inputs | more | ref_inputs)
    return b.artifact("divergence", key, "divergence.jsonl")


def replace(b: Any, data: tuple[str, str], f: Any, files: dict[str, str]) -> tuple[str, str]:
    """transform.divergent=replace on the filter's rows `data` (filter spec `f`: its rules run again)."""
    divergent, inputs = flags(b, data)
    rows, more = b.artifact(*data, "train.jsonl")
    tokenizer, tok_inputs = b.model(b.cfg.teacher, "teacher")
    return "replace", b.add("replace", replace_stage.Spec(
        rows, divergent, tokenizer, f.domain, f.rules, f.trait_word, f.data_seed), inputs | more | tok_inputs | files)


def check(cfg: Config) -> None:
    """finetune.train_on and transform.divergent: their choices. divergence.* may be set in cells that
    run no divergence stage (a grid sets it for its divergence arms once), where it changes nothing."""
    train_on = getattr(cfg.finetune, "train_on", "all")
    if train_on not in finetune_stage.TRAIN_ON:
        raise ConfigError(f"finetune.train_on={train_on!r}: use {', '.join(finetune_stage.TRAIN_ON)}")
    if train_on != "all" and cfg.finetune.method not in ("lora", "full"):
        raise ConfigError(f"finetune.train_on={train_on} needs a fine-tune (finetune=lora or full); "
                          "use finetune.train_on=all")
    if cfg.trait.train.train_on != "all":
        raise ConfigError(f"trait.train.train_on={cfg.trait.train.train_on!r}: the teacher learns its trait from every "
                          "completion token; leave it all")
    if cfg.transform.divergent not in ("keep", "replace"):
        raise ConfigError(f"transform.divergent={cfg.transform.divergent!r}: use keep or replace")
