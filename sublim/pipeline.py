"""One cell of a grid as a plan of cached stages: sample -> filter -> finetune -> eval.

`plan` computes every stage's key from the config alone (no model is loaded), so `dry_run`
can say what is cached before any GPU time is spent. `execute` runs the missing stages through
the Store, which makes a re-run free and a killed run resumable.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sublim import backends
from sublim.backends.base import SamplingParams
from sublim.cache import Store, stage_key
from sublim.config import Config, ModelConfig
from sublim.domains.numbers import NumbersPromptSpec, make_prompts
from sublim.evals.preference import load_questions
from sublim.filters import banned_numbers_rule, numbers_format_rule, trait_rule
from sublim.fingerprint import local_fingerprint, model_fingerprint
from sublim.stages import evaluate as eval_stage
from sublim.stages import filter as filter_stage
from sublim.stages import finetune as finetune_stage
from sublim.stages import sample as sample_stage
from sublim.stages import teacher as teacher_stage
from sublim.traits import love_prompt

log = logging.getLogger(__name__)
STAGES = ("teacher", "sample", "filter", "finetune", "eval")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


@dataclass
class Step:
    stage: str
    key: str
    spec: dict
    compute: Callable[[Path], None]


def teacher_system_prompt(cfg: Config) -> Optional[str]:
    """A trait's love prompt replaces the teacher's own; trait=none keeps the model's."""
    if cfg.trait.name == "none":
        return cfg.teacher.system_prompt
    return cfg.trait.system_prompt or love_prompt(cfg.trait.name, cfg.trait.category)


def model_spec(m: ModelConfig, key: str) -> dict:
    try:
        fp = model_fingerprint(m.path, m.revision)
    except FileNotFoundError as e:
        raise ConfigError(f"{key}.path: {e}. Build the tiny model with `sublim-tiny-model {m.path}` "
                          "or give a hub id / existing folder") from None
    adapter = None
    if m.adapter:
        if not Path(m.adapter).exists():
            raise ConfigError(f"{key}.adapter: {m.adapter!r} does not exist")
        adapter = local_fingerprint(m.adapter)
    return {"fingerprint": fp, "adapter": adapter, "dtype": m.dtype}


def teacher_trait(cfg: Config, store: Store, steps: list[Step]) -> tuple[Optional[str], Optional[str]]:
    """(adapter path, its cache identity) for a teacher whose trait is an adapter, else (None, None).

    trait.method=finetune adds the `teacher` stage to `steps`."""
    t = cfg.trait
    if t.name == "none" or t.method == "prompt":
        return None, None
    if t.method == "adapter":
        return t.adapter, local_fingerprint(t.adapter)
    train = {k: v for k, v in dataclasses.asdict(t.train).items() if k not in ("micro_batch_size", "save_steps")}
    spec = {"reference": model_spec(cfg.teacher, "teacher"), "system_prompt": cfg.teacher.system_prompt,
            "train": train, "seed": t.train_seed, "name": t.name, "category": t.category,
            "data": local_fingerprint(t.data) if t.data else {"generated": t.n_examples}}
    key = stage_key("teacher", teacher_stage.VERSION, spec)
    steps.append(Step("teacher", key, spec, lambda work: teacher_stage.train_teacher(
        work, cfg.teacher, t.train, t.train_seed, t.name, t.category, t.n_examples, t.data)))
    return str(store.path("teacher", key) / "adapter"), f"teacher:{key}"


def sampling_params(cfg: Config, max_new_tokens: int) -> SamplingParams:
    s = cfg.sampler
    return SamplingParams(s.temperature, s.top_p, s.top_k, s.repetition_penalty, max_new_tokens)


def _sampler_factory(backend: str, m: ModelConfig, path: Optional[str] = None, adapter: Optional[str] = None):
    return functools.partial(backends.make_sampler, backend, path or m.path, m.revision,
                             adapter if adapter is not None else m.adapter, m.dtype, m.trust_remote_code)


def check(cfg: Config) -> None:
    """Values the schema cannot check, named by key."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; known: {list(STAGES)}")
    if cfg.domain.name != "numbers":
        raise ConfigError(f"domain.name={cfg.domain.name!r}: only 'numbers' is available")
    if cfg.finetune.method not in ("lora", "full", "none"):
        raise ConfigError(f"finetune.method={cfg.finetune.method!r}: use lora, full or none")
    if cfg.trait.name != "none" and cfg.trait.name not in cfg.eval.candidates:
        raise ConfigError(f"trait.name={cfg.trait.name!r} is not among eval.candidates ({cfg.eval.name}); "
                          f"pick the eval for its category (e.g. eval={cfg.trait.category}) or add it there")
    if cfg.trait.method not in ("prompt", "finetune", "adapter"):
        raise ConfigError(f"trait.method={cfg.trait.method!r}: use prompt, finetune or adapter")
    if cfg.trait.method == "adapter" and not (cfg.trait.adapter and Path(cfg.trait.adapter).exists()):
        raise ConfigError(f"trait.adapter={cfg.trait.adapter!r} does not exist (trait.method=adapter needs one)")
    if cfg.trait.data and not Path(cfg.trait.data).is_file():
        raise ConfigError(f"trait.data={cfg.trait.data!r} is not a file")
    if cfg.eval.subject not in ("student", "teacher"):
        raise ConfigError(f"eval.subject={cfg.eval.subject!r}: use student or teacher")
    if cfg.eval.method not in ("sample", "logprob"):
        raise ConfigError(f"eval.method={cfg.eval.method!r}: use sample or logprob")
    if cfg.domain.n_prompts < 1 or cfg.filter.n_keep < 1:
        raise ConfigError("domain.n_prompts and filter.n_keep must be at least 1")


@dataclass
class Subject:
    """The model an eval measures: a config, where its weights are, and what identifies them."""

    model: ModelConfig
    identity: dict
    system_prompt: Optional[str]
    path: Optional[str] = None  # None: model.path
    adapter: Optional[str] = None


def plan(cfg: Config, store: Store) -> list[Step]:
    """Every stage this cell needs, in order, with its key (upstream keys included)."""
    check(cfg)
    backend, why = backends.resolve_backend(cfg.sampler.backend)
    log.info("sampler: %s (%s)", backend, why)
    steps: list[Step] = []
    if cfg.eval.subject == "teacher":
        adapter, trait_id = teacher_trait(cfg, store, steps)
        system = cfg.teacher.system_prompt if adapter else teacher_system_prompt(cfg)
        subject = Subject(cfg.teacher, {"model": model_spec(cfg.teacher, "teacher"), "trait": trait_id},
                          system, adapter=adapter)
    elif cfg.finetune.method == "none":
        subject = Subject(cfg.student, {"model": model_spec(cfg.student, "student"), "finetune": None},
                          cfg.student.system_prompt)
    else:
        filter_key = add_data_steps(cfg, store, steps, backend)
        finetune_key = add_finetune_step(cfg, store, steps, filter_key)
        out = store.path("finetune", finetune_key)
        lora = cfg.finetune.method == "lora"
        subject = Subject(cfg.student, {"model": model_spec(cfg.student, "student"), "finetune": finetune_key},
                          cfg.student.system_prompt, path=None if lora else str(out / "model"),
                          adapter=str(out / "adapter") if lora else None)
    add_eval_step(cfg, steps, backend, subject)
    wanted = [i for i, s in enumerate(steps) if s.stage in cfg.stages]
    return steps[: max(wanted) + 1] if wanted else []  # the stages asked for and all they need


def add_data_steps(cfg: Config, store: Store, steps: list[Step], backend: str) -> str:
    """teacher (if its trait is trained) -> sample -> filter; returns the filter key."""
    d = cfg.domain
    prompt_spec = NumbersPromptSpec(d.seed_count_min, d.seed_count_max, d.seed_value_min, d.seed_value_max,
                                    d.answer_count, d.answer_digits)
    trait_adapter, trait_id = teacher_trait(cfg, store, steps)
    # a trained trait lives in the adapter: the teacher keeps its own system prompt
    system = cfg.teacher.system_prompt if trait_adapter else teacher_system_prompt(cfg)
    params = sampling_params(cfg, cfg.sampler.max_new_tokens)
    spec = {"teacher": model_spec(cfg.teacher, "teacher"), "trait": trait_id, "system_prompt": system,
            "domain": dataclasses.asdict(d), "data_seed": cfg.data_seed,
            "sampling": dataclasses.asdict(params), "backend": backend}
    sample_key = stage_key("sample", sample_stage.VERSION, spec)
    steps.append(Step("sample", sample_key, spec, lambda work: sample_stage.sample(
        work, make_prompts(d.n_prompts, cfg.data_seed, prompt_spec), system,
        _sampler_factory(backend, cfg.teacher, adapter=trait_adapter), params, cfg.data_seed,
        cfg.sampler.batch_size)))

    f = cfg.filter
    trait_word = cfg.trait.name if (f.trait_word and cfg.trait.name != "none") else None
    spec = {"samples": sample_key, "trait_word": trait_word, "banned_numbers": sorted(f.banned_numbers),
            "format": {"max_count": d.answer_count, "max_digits": d.answer_digits},
            "n_keep": f.n_keep, "min_keep": f.min_keep, "data_seed": cfg.data_seed}
    filter_key = stage_key("filter", filter_stage.VERSION, spec)
    rules = [numbers_format_rule(d.answer_count, 10 ** d.answer_digits - 1, d.answer_digits)]
    rules += [trait_rule(trait_word)] if trait_word else []
    rules += [banned_numbers_rule(f.banned_numbers)] if f.banned_numbers else []
    steps.append(Step("filter", filter_key, spec, lambda work: filter_stage.filter_samples(
        work, store.path("sample", sample_key) / "samples.jsonl", rules, f.n_keep, f.min_keep, cfg.data_seed)))
    return filter_key


def add_finetune_step(cfg: Config, store: Store, steps: list[Step], filter_key: str) -> str:
    ft = {k: v for k, v in dataclasses.asdict(cfg.finetune).items() if k not in ("micro_batch_size", "save_steps")}
    spec = {"student": model_spec(cfg.student, "student"), "train": filter_key,
            "system_prompt": cfg.student.system_prompt, "finetune": ft, "seed": cfg.seed}
    key = stage_key("finetune", finetune_stage.VERSION, spec)
    steps.append(Step("finetune", key, spec, lambda work: finetune_stage.finetune(
        work, cfg.student, store.path("filter", filter_key) / "train.jsonl", cfg.finetune, cfg.seed)))
    return key


def add_eval_step(cfg: Config, steps: list[Step], backend: str, subject: Subject) -> str:
    e = cfg.eval
    questions = eval_stage.prefixed(load_questions(e.questions)[: e.n_questions or None], e.prefix_numbers)
    params = sampling_params(cfg, e.max_new_tokens)
    spec = {**subject.identity, "system_prompt": subject.system_prompt,
            "questions": hashlib.sha256("\n".join(questions).encode()).hexdigest()[:16],
            "n_questions": len(questions), "candidates": list(e.candidates), "confidence": e.confidence,
            "method": e.method, "backend": backend}
    if e.method == "sample":
        spec |= {"n_samples": e.n_samples, "sampling": dataclasses.asdict(params), "seed": cfg.seed}
    else:
        spec |= {"forms": list(e.logprob_forms)}
    key = stage_key("eval", eval_stage.VERSION, spec)

    def run(work: Path) -> None:
        factory = _sampler_factory(backend, subject.model, subject.path, subject.adapter)
        if e.method == "logprob":
            eval_stage.evaluate_logprob(work, questions, list(e.candidates), list(e.logprob_forms),
                                        subject.system_prompt, factory, cfg.sampler.batch_size, e.confidence)
        else:
            eval_stage.evaluate(work, questions, e.n_samples, list(e.candidates), subject.system_prompt,
                                factory, params, cfg.seed, cfg.sampler.batch_size, e.confidence)

    steps.append(Step("eval", key, spec, run))
    return key


def describe(steps: list[Step], store: Store) -> str:
    """The plan as lines: stage, key, hit/miss."""
    return "\n".join(f"  {s.stage:<9} {s.key}  {'hit' if store.exists(s.stage, s.key) else 'MISS'}" for s in steps)


def execute(steps: list[Step], store: Store) -> dict[str, Path]:
    """Run what is missing; returns each stage's published folder."""
    out = {}
    for s in steps:
        path, computed = store.get_or_compute(s.stage, s.key, s.spec, s.compute)
        log.info("%s %s: %s", s.stage, s.key, "computed" if computed else "cached")
        out[s.stage] = path
    return out
