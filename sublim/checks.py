"""Config values the typed schema cannot check (ranges, choices, files, combinations), each error
naming the key and the fix. Run before any stage, and by the sweeper for every cell of a grid before
the first job starts. Ranges come first: every number's range is declared with its field in
sublim.config (`num(default, "> 0", hint)`), and `check_ranges` walks the typed config for them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from sublim.backends import KNOWN as BACKENDS
from sublim.backends.vllm import VLLM_LORA_RANKS
from sublim.config import Config
from sublim.domains import get_domain
from sublim.domains.numbers import FORMAT_RULES
from sublim.errors import ConfigError
from sublim.evals import KINDS
from sublim.ranges import range_problem
from sublim.stages import STAGES
from sublim.stages.finetune import chat_rows
from sublim.stages.select import ORDERS
from sublim.transforms import TRANSFORMS

__all__ = ["ConfigError", "candidates_of", "check", "check_ranges"]


def check(cfg: Config) -> None:
    """Values the schema cannot check, named by key."""
    check_ranges(cfg)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; known: {list(STAGES)}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r}: use auto (CUDA where the launcher or this machine has it), cpu or cuda")
    if cfg.sampler.backend not in BACKENDS:
        raise ConfigError(f"sampler.backend={cfg.sampler.backend!r} is unknown; known: {', '.join(BACKENDS)}")
    check_data(cfg)
    check_sampler(cfg)
    if cfg.eval.kind not in KINDS:
        raise ConfigError(f"eval.kind={cfg.eval.kind!r}: use {' or '.join(KINDS)}")
    # finetune.method, eval.kind and domain.name pick their schema (sublim.config.OPTIONS): a field of
    # another option (eval.judge in a preference eval, finetune.lora_r with finetune=full) fails there
    if cfg.eval.kind == "misalignment" and (cfg.eval.judge.template is not None or cfg.eval.judge.threshold is not None):
        raise ConfigError("eval.judge.template and eval.judge.threshold are the filter judge's settings: the misalignment "
                          "eval asks its own alignment and coherence questions, with eval.alignment_threshold and "
                          "eval.coherence_threshold; leave them null")
    if cfg.eval.kind == "misalignment" and cfg.eval.judge.model is None:
        raise ConfigError("eval.kind=misalignment needs a judge: eval.judge.model is not set, e.g. "
                          "+model@eval.judge.model=qwen2.5-7b-instruct")
    if cfg.eval.kind == "preference" and cfg.trait.name != "none" and cfg.trait.name not in candidates_of(cfg):
        raise ConfigError(f"trait.name={cfg.trait.name!r} is not among eval.candidates ({cfg.eval.name}); "
                          + preference_eval_hint(cfg))
    if cfg.trait.method not in ("prompt", "finetune", "adapter"):
        raise ConfigError(f"trait.method={cfg.trait.method!r}: use prompt, finetune or adapter")
    if cfg.trait.method == "adapter" and not (cfg.trait.adapter and Path(cfg.trait.adapter).exists()):
        raise ConfigError(f"trait.adapter={cfg.trait.adapter!r} does not exist (trait.method=adapter needs one)")
    if cfg.trait.method == "adapter" and not (Path(cfg.trait.adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"trait.adapter={cfg.trait.adapter!r} has no adapter_config.json: give the folder a "
                          "PEFT adapter was saved to (save_pretrained)")
    if cfg.trait.data:
        check_trait_data(cfg.trait.data)
    trained = [("finetune", cfg.finetune)] if cfg.finetune.method in ("lora", "full") else []
    for key, ft in (*trained, ("trait.train", cfg.trait.train)):
        if ft.batch_size % ft.micro_batch_size:  # both >= 1 (check_ranges)
            raise ConfigError(f"{key}.batch_size={ft.batch_size} is not a multiple of {key}.micro_batch_size="
                              f"{ft.micro_batch_size}; pick sizes that divide")
    distill = getattr(cfg.finetune, "distill", "hard")
    if distill not in ("hard", "soft"):
        raise ConfigError(f"finetune.distill={distill!r}: use hard or soft")
    if distill == "soft" and cfg.trait.name != "none" and cfg.trait.method == "prompt":
        raise ConfigError("finetune.distill=soft needs a teacher whose trait is in its weights "
                          "(trait.method=finetune or adapter): a prompted teacher's distributions depend on a "
                          "system prompt the student never sees")
    if cfg.eval.subject not in ("student", "teacher"):
        raise ConfigError(f"eval.subject={cfg.eval.subject!r}: use student or teacher")
    if cfg.eval.kind == "preference" and cfg.eval.method not in ("sample", "logprob", "both"):
        raise ConfigError(f"eval.method={cfg.eval.method!r}: use sample, logprob or both")
    check_select(cfg)
    check_in_context(cfg)
    if cfg.isolate not in ("auto", "always", "never"):
        raise ConfigError(f"isolate={cfg.isolate!r}: use auto (own process per stage where CUDA is), always or never")


def check_ranges(cfg: Any) -> None:
    """Every number of the typed config within the range its field declares (sublim.config): the
    first one outside fails as `finetune.epochs=0: must be > 0 (epochs, fractions allowed)`. Walks
    every dataclass node, an Optional sub-config where it is set (teacher.reference,
    domain.judge.model, ...); an unset one (null) has nothing to check."""
    for key, value, metadata in leaves(cfg):
        problem = range_problem(key, value, metadata)
        if problem:
            raise ConfigError(problem)


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, field metadata) of every field of a dataclass instance, through set sub-configs."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata


def candidates_of(cfg: Config) -> list[str]:
    """The names the preference eval maps answers onto: eval.candidates, then eval.extra_candidates,
    then the trait's own name when its category is what the eval asks about (eval.questions names
    the category's question file: trait.category=animal with eval=animal_preference), each once, in that order.

    So `trait.name=hedgehog` needs no retyped list; but a control cell (trait=none) adds no name, so
    in a grid pass eval.extra_candidates=[hedgehog] to every cell to keep their candidates equal."""
    if cfg.eval.kind != "preference":
        return []
    names = [*cfg.eval.candidates, *cfg.eval.extra_candidates]
    t = cfg.trait
    if t.name != "none" and t.category == cfg.eval.questions:
        names.append(t.name)
    return list(dict.fromkeys(names))


def check_select(cfg: Config) -> None:
    """select.*: the data selection by the teacher's log-likelihood shift (the `select` stage)."""
    s = cfg.select
    if s.by not in ("none", "shift"):
        raise ConfigError(f"select.by={s.by!r}: use none (train on the filtered data) or shift")
    if s.order not in ORDERS:
        raise ConfigError(f"select.order={s.order!r}: use {', '.join(ORDERS)}")
    if s.by == "shift" and getattr(cfg.eval, "in_context", 0) > s.n_keep:
        raise ConfigError(f"eval.in_context={cfg.eval.in_context} is more than select keeps (select.n_keep="
                          f"{s.n_keep}): use eval.in_context={s.n_keep} or fewer, or a larger select.n_keep")


def check_in_context(cfg: Config) -> None:
    """eval.in_context puts the teacher's examples in the base student's context, in place of fine-tuning."""
    n = getattr(cfg.eval, "in_context", 0)  # a preference eval's field, >= 0 (check_ranges)
    if n == 0:
        return
    if cfg.finetune.method != "none":
        raise ConfigError(f"eval.in_context={n} shows the teacher's examples instead of training on them: add "
                          f"finetune=none (finetune.method is {cfg.finetune.method!r}), or drop eval.in_context")
    if cfg.eval.subject != "student":
        raise ConfigError(f"eval.in_context={n} puts the teacher's examples before the student's questions: use "
                          "eval.subject=student, or drop eval.in_context")
    if cfg.filter.n_keep is not None and cfg.filter.n_keep < n:
        raise ConfigError(f"eval.in_context={n} is more than the filter keeps (filter.n_keep={cfg.filter.n_keep}): "
                          f"use eval.in_context={cfg.filter.n_keep} or fewer, or a larger filter.n_keep")


def check_trait_data(path: str) -> None:
    """The trait data set reads as training rows, errors naming the user's file and line."""
    if not Path(path).is_file():
        raise ConfigError(f"trait.data={path!r} is not a file")
    try:
        chat_rows(Path(path), None)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ConfigError(f"trait.data: {e}") from None


def preference_eval_hint(cfg: Config) -> str:
    """The fix for a trait the chosen preference eval does not ask about."""
    evals = {"animal": "animal_preference", "tree": "tree_preference"}
    category = cfg.trait.category
    if category == "behaviour":
        return "a behaviour is measured by eval=misalignment (with +model@eval.judge.model=...)"
    if category in evals and evals[category] != cfg.eval.name:
        return f"use the eval for its category: eval={evals[category]}"
    return (f"add it: eval.extra_candidates=[{cfg.trait.name}] (in a grid, for every cell, the control included), "
            f"or set trait.category to what the eval asks about ({cfg.eval.questions})")


def check_sampler(cfg: Config) -> None:
    """Settings both backends accept beyond the declared ranges (those, e.g. a temperature in [0, 2]
    that vLLM requires and transformers would not, are in sublim.config)."""
    v = cfg.sampler.vllm
    if v.max_lora_rank is not None and v.max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(f"sampler.vllm.max_lora_rank={v.max_lora_rank}: vLLM accepts {list(VLLM_LORA_RANKS)}, "
                          "or null to fit it to the adapter")


def check_data(cfg: Config) -> None:
    """The domain, its filter (judge, shuffle) and its prompt source, named by key."""
    try:
        domain = get_domain(cfg.domain.name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    problems = domain.check(cfg.domain)
    d = cfg.domain
    if domain.name == "numbers":
        for low, high in (("seed_count_min", "seed_count_max"), ("seed_value_min", "seed_value_max")):
            if getattr(d, low) > getattr(d, high):
                problems.append(f"domain.{low}={getattr(d, low)} is above domain.{high}={getattr(d, high)}")
    f, shuffle = cfg.filter, cfg.transform.shuffle
    if shuffle != "none":
        if shuffle not in TRANSFORMS:
            problems.append(f"transform.shuffle={shuffle!r}: use none, {', '.join(TRANSFORMS)}")
        elif domain.name != "numbers":
            problems.append(f"transform.shuffle={shuffle}: the shuffle controls are for number data (domain=numbers)")
    if f.format not in FORMAT_RULES:
        problems.append(f"filter.format={f.format!r}: use one of {', '.join(FORMAT_RULES)}")
    if f.banned_numbers and domain.name != "numbers":
        problems.append("filter.banned_numbers: applies to domain=numbers only")
    judge = getattr(cfg.domain, "judge", None)  # code and cot have one (sublim.config.OPTIONS)
    if judge is not None and judge.model is not None and domain.judge is not None \
            and "{completion}" not in (judge.template or domain.judge.template):
        problems.append("domain.judge.template: must contain {completion} (also available: {prompt}, "
                        "{trait}, {category})")
    if problems:
        raise ConfigError("; ".join(problems))
