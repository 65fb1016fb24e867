"""One cell of a grid as a plan of cached stages: sample -> filter -> finetune -> eval.

`plan` computes every stage's key from the config alone (no model is loaded), so `dry_run`
can say what is cached before any GPU time is spent. `execute` runs the missing stages through
the Store, which makes a re-run free and a killed run resumable.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sublim import backends
from sublim.backends.base import SamplingParams
from sublim.cache import Store, stage_key
from sublim.checks import ConfigError, check  # noqa: F401  (ConfigError is part of this module's API)
from sublim.config import Config, ModelConfig
from sublim.evals.preference import load_questions
from sublim.fingerprint import local_fingerprint, model_fingerprint
from sublim.stages import evaluate as eval_stage
from sublim.stages import filter as filter_stage
from sublim.stages import finetune as finetune_stage
from sublim.stages import reference as reference_stage
from sublim.stages import sample as sample_stage
from sublim.stages import teacher as teacher_stage
from sublim.traits import love_prompt

log = logging.getLogger(__name__)
STAGES = ("reference", "teacher", "sample", "filter", "transform", "score", "select", "finetune", "eval")


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
    if m.reference is not None:  # built by the reference stage: its key identifies it
        return {"reference": reference_key(m), "adapter": None, "dtype": m.dtype}
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


def reference_key(m: ModelConfig) -> str:
    return stage_key("reference", reference_stage.VERSION, dataclasses.asdict(m.reference))


def materialise(m: ModelConfig, store: Store, steps: list[Step]) -> ModelConfig:
    """A model the reference stage builds: add that stage (once) and point `path` at its output."""
    if m.reference is None:
        return m
    key = reference_key(m)
    if not any(s.stage == "reference" and s.key == key for s in steps):
        ref = m.reference
        steps.append(Step("reference", key, dataclasses.asdict(ref),
                          lambda work: reference_stage.pretrain(work, ref)))
    return dataclasses.replace(m, path=str(store.path("reference", key) / "model"))


def teacher_trait(cfg: Config, store: Store, steps: list[Step],
                  backend: str) -> tuple[Optional[ModelConfig], Optional[str]]:
    """(the teacher model, its trait's cache identity) when the trait is in the teacher's weights
    (an adapter, or a fully fine-tuned model), else (None, None) for a prompted or control teacher.

    trait.method=finetune adds the `teacher` stage to `steps`."""
    t = cfg.trait
    if t.name == "none" or t.method == "prompt":
        return None, None
    if t.method == "adapter":
        return dataclasses.replace(cfg.teacher, adapter=t.adapter), local_fingerprint(t.adapter)
    train = {k: v for k, v in dataclasses.asdict(t.train).items() if k not in ("micro_batch_size", "save_steps")}
    mix_key = None
    if t.mix_numbers > 0:  # the reference's own numbers: the control teacher's filtered data
        control = dataclasses.replace(cfg, trait=dataclasses.replace(t, name="none"),
                                      filter=dataclasses.replace(cfg.filter, shuffle="none"),
                                      select=dataclasses.replace(cfg.select, by="none"))
        _, mix_key = add_data_steps(control, store, steps, backend)
    spec = {"reference": model_spec(cfg.teacher, "teacher"), "system_prompt": cfg.teacher.system_prompt,
            "train": train, "seed": t.train_seed, "name": t.name, "category": t.category,
            "data": local_fingerprint(t.data) if t.data else {"generated": t.n_examples},
            "mix_numbers": t.mix_numbers, "mix_data": mix_key}
    key = stage_key("teacher", teacher_stage.VERSION, spec)
    mix_path = store.path("filter", mix_key) / "train.jsonl" if mix_key else None
    steps.append(Step("teacher", key, spec, lambda work: teacher_stage.train_teacher(
        work, cfg.teacher, t.train, t.train_seed, t.name, t.category, t.n_examples, t.data, mix_path,
        t.mix_numbers)))
    out = store.path("teacher", key)
    if t.train.method == "full":
        return dataclasses.replace(cfg.teacher, path=str(out / "model"), adapter=None), f"teacher:{key}"
    return dataclasses.replace(cfg.teacher, adapter=str(out / "adapter")), f"teacher:{key}"


def sampling_params(cfg: Config, max_new_tokens: int) -> SamplingParams:
    s = cfg.sampler
    return SamplingParams(s.temperature, s.top_p, s.top_k, s.repetition_penalty, max_new_tokens, s.min_p)


def sampling_spec(params: SamplingParams) -> dict:
    """The sampling settings as a cache key holds them. min_p came later: keyed only when set, so
    every result computed before it keeps its key (min_p 0 samples exactly as before)."""
    spec = dataclasses.asdict(params)
    if spec["min_p"] == 0:
        del spec["min_p"]
    return spec


def _sampler_factory(cfg: Config, backend: str, m: ModelConfig, path: Optional[str] = None,
                     adapter: Optional[str] = None):
    return functools.partial(backends.make_sampler, backend, path or m.path, m.revision,
                             adapter if adapter is not None else m.adapter, m.dtype, m.trust_remote_code,
                             dataclasses.asdict(cfg.sampler.vllm))


@dataclass
class Subject:
    """The model an eval measures: a config, where its weights are, and what identifies them."""

    model: ModelConfig
    identity: dict
    system_prompt: Optional[str]
    path: Optional[str] = None  # None: model.path
    adapter: Optional[str] = None
    examples: Optional[Path] = None  # eval.in_context: the train.jsonl its in-context examples are drawn from


def plan(cfg: Config, store: Store) -> list[Step]:
    """Every stage this cell needs, in order, with its key (upstream keys included)."""
    check(cfg)
    backend, why = backends.resolve_backend(cfg.sampler.backend)
    log.info("sampler: %s (%s)", backend, why)
    steps: list[Step] = []
    cfg = dataclasses.replace(cfg, teacher=materialise(cfg.teacher, store, steps),
                              student=materialise(cfg.student, store, steps))
    if cfg.eval.subject == "teacher":
        trained, trait_id = teacher_trait(cfg, store, steps, backend)
        system = cfg.teacher.system_prompt if trained else teacher_system_prompt(cfg)
        subject = Subject(trained or cfg.teacher, {"model": model_spec(cfg.teacher, "teacher"), "trait": trait_id},
                          system)
    elif cfg.finetune.method == "none":
        identity = {"model": model_spec(cfg.student, "student"), "finetune": None}
        examples = None
        if cfg.eval.in_context > 0:  # the ICL control: the teacher's data in the context, not in the weights
            data = add_data_steps(cfg, store, steps, backend)
            identity["in_context"] = {"data": data[1], "n": cfg.eval.in_context, "seed": cfg.seed}
            examples = store.path(*data) / "train.jsonl"
        subject = Subject(cfg.student, identity, cfg.student.system_prompt, examples=examples)
    else:
        data = add_data_steps(cfg, store, steps, backend)
        distill_from = None
        if cfg.finetune.distill == "soft":  # the teacher's weights, for its next-token distributions
            trained, _ = teacher_trait(cfg, store, steps, backend)
            distill_from = trained or cfg.teacher
        finetune_key = add_finetune_step(cfg, store, steps, data, distill_from)
        out = store.path("finetune", finetune_key)
        lora = cfg.finetune.method == "lora"
        subject = Subject(cfg.student, {"model": model_spec(cfg.student, "student"), "finetune": finetune_key},
                          cfg.student.system_prompt, path=None if lora else str(out / "model"),
                          adapter=str(out / "adapter") if lora else None)
    add_eval_step(cfg, steps, backend, subject)
    unique: dict[tuple[str, str], Step] = {}
    for s in steps:  # a shared upstream (the control data, a reference) is planned by several arms
        unique.setdefault((s.stage, s.key), s)
    steps = list(unique.values())
    wanted = [i for i, s in enumerate(steps) if s.stage in cfg.stages]
    return steps[: max(wanted) + 1] if wanted else []  # the stages asked for and all they need


def judge_step(cfg: Config, domain, backend: str) -> tuple[Optional[dict], Optional[Callable[[], dict]]]:
    """(spec for the filter key, a maker of filter_samples' judge kwargs) of the filter's judge, or
    (None, None). The judge (with its counts) is made when the filter runs; its model loads on first use."""
    j, use = cfg.filter.judge, domain.judge
    if j.model is None or use is None:
        return None, None
    trait = cfg.trait.name if cfg.trait.name != "none" else None
    if use.needs_trait and trait is None:
        log.info("filter.judge: skipped, trait=none leaves nothing for the %s judge to look for", domain.name)
        return None, None
    from sublim.judge import Judge, parse_score, parse_score_or_label

    template = j.template or use.template
    threshold = use.threshold if j.threshold is None else j.threshold
    parse = parse_score_or_label(use.labels) if use.labels else parse_score
    spec = {"model": model_spec(j.model, "filter.judge.model"), "system_prompt": j.model.system_prompt,
            "template": template, "threshold": threshold, "keep_high": use.keep_high, "labels": list(use.labels),
            "temperature": j.temperature, "max_new_tokens": j.max_new_tokens, "backend": backend}
    def kwargs() -> dict:
        return {
            "judge": Judge.from_model(backend, j.model, template, parse, j.temperature, j.max_new_tokens,
                                      dataclasses.asdict(cfg.sampler.vllm), batch_size=cfg.sampler.batch_size,
                                      seed=cfg.data_seed),
            "decide": functools.partial(use.decide, threshold=threshold),
            "judge_fields": {"trait": trait or "", "category": cfg.trait.category},
            "judge_info": {"model": j.model.name, "threshold": threshold,
                           "keep": f"score >= {threshold}" if use.keep_high else f"score < {threshold}"},
        }

    return spec, kwargs


def add_data_steps(cfg: Config, store: Store, steps: list[Step], backend: str) -> tuple[str, str]:
    """teacher (if its trait is trained) -> sample -> filter (-> transform) (-> select); returns
    (stage, key) of the student's training data (the filter's, with filter.shuffle the transform's,
    with select.by=shift the select stage's).

    The domain (sublim.domains) supplies the prompts, the rules and the judge; the numbers domain's
    sample and filter keys are the same as before the registry existed."""
    from sublim.domains import get_domain
    from sublim.domains.base import repeat

    d = cfg.domain
    domain = get_domain(d.name)
    trained, trait_id = teacher_trait(cfg, store, steps, backend)
    # a trained trait lives in the adapter: the teacher keeps its own system prompt
    system = cfg.teacher.system_prompt if trained else teacher_system_prompt(cfg)
    params = sampling_params(cfg, d.max_new_tokens or cfg.sampler.max_new_tokens)
    spec = {"teacher": model_spec(cfg.teacher, "teacher"), "trait": trait_id, "system_prompt": system,
            "domain": domain.key(d), "data_seed": cfg.data_seed,
            "sampling": sampling_spec(params), "backend": backend}
    sample_key = stage_key("sample", sample_stage.VERSION, spec)
    steps.append(Step("sample", sample_key, spec, lambda work: sample_stage.sample(
        work, repeat(domain.prompts(d, cfg.data_seed), d.samples_per_prompt), system,
        _sampler_factory(cfg, backend, trained or cfg.teacher), params, cfg.data_seed,
        cfg.sampler.batch_size)))

    f = cfg.filter
    trait_word = cfg.trait.name if (f.trait_word and cfg.trait.name != "none") else None
    judge_spec, judge_kwargs = judge_step(cfg, domain, backend)
    spec = {"samples": sample_key, "trait_word": trait_word, **domain.filter_spec(d, f),
            "n_keep": f.n_keep, "min_keep": f.min_keep, "data_seed": cfg.data_seed}
    if judge_spec is not None:
        spec["judge"] = judge_spec
    filter_key = stage_key("filter", filter_stage.VERSION, spec)
    rules = domain.rules(d, f, trait_word)
    steps.append(Step("filter", filter_key, spec, lambda work: filter_stage.filter_samples(
        work, store.path("sample", sample_key) / "samples.jsonl", rules, f.n_keep, f.min_keep, cfg.data_seed,
        row_rules=domain.row_rules(d, cfg.data_seed), **(judge_kwargs() if judge_kwargs else {}))))
    data = transform_step(cfg, store, steps, filter_key) if f.shuffle != "none" else ("filter", filter_key)
    if cfg.select.by == "shift":
        return add_select_step(cfg, store, steps, backend, data, trained, trait_id, system)
    return data


def add_select_step(cfg: Config, store: Store, steps: list[Step], backend: str, data: tuple[str, str],
                    trained: Optional[ModelConfig], trait_id: Optional[str], system: Optional[str]) -> tuple[str, str]:
    """`score` then `select` on `data` (stage, key): the rows with the largest (top), smallest
    (bottom) teacher log-likelihood shift from the reference, or a same-size seeded draw (random).

    The scores are keyed by the data, the teacher as the sample stage keys it and the reference
    (cfg.teacher under its own system prompt), so every order and size reuses them; the selection
    by the scores and by/n_keep/order (data_seed only for random). Returns ("select", key)."""
    from sublim.stages import select as select_stage

    s, model = cfg.select, model_spec(cfg.teacher, "teacher")
    spec = {"train": data[1], "teacher": {"model": model, "trait": trait_id, "system_prompt": system},
            "reference": {"model": model, "system_prompt": cfg.teacher.system_prompt}, "backend": backend}
    score_key = stage_key("score", select_stage.VERSION, spec)
    same = spec["teacher"] == {**spec["reference"], "trait": None}  # trait=none: the teacher is the reference
    teacher = None if same else _sampler_factory(cfg, backend, trained or cfg.teacher)
    steps.append(Step("score", score_key, spec, lambda work: select_stage.score(
        work, store.path(*data) / "train.jsonl", teacher, _sampler_factory(cfg, backend, cfg.teacher),
        cfg.teacher.system_prompt, cfg.sampler.batch_size)))
    spec = {"train": data[1], "scores": score_key, "by": s.by, "n_keep": s.n_keep, "order": s.order}
    if s.order == "random":
        spec["data_seed"] = cfg.data_seed
    key = stage_key("select", select_stage.VERSION, spec)
    steps.append(Step("select", key, spec, lambda work: select_stage.select(
        work, store.path(*data) / "train.jsonl", store.path("score", score_key) / "scores.jsonl", s.n_keep,
        s.order, cfg.data_seed)))
    return "select", key


def transform_step(cfg: Config, store: Store, steps: list[Step], filter_key: str) -> str:
    """The `transform` stage (filter.shuffle) after the filter, keyed by the filter key, the transform
    and the data seed.

    Returns ("transform", key): where the student's training data is."""
    from sublim.stages import transform as transform_stage

    name, seed = cfg.filter.shuffle, cfg.data_seed
    spec = {"train": filter_key, "transform": name, "seed": seed}
    key = stage_key("transform", transform_stage.VERSION, spec)
    steps.append(Step("transform", key, spec, lambda work: transform_stage.transform(
        work, store.path("filter", filter_key) / "train.jsonl", name, seed)))
    return "transform", key


def add_finetune_step(cfg: Config, store: Store, steps: list[Step], data: tuple[str, str],
                      distill_from: Optional[ModelConfig] = None) -> str:
    """The student's fine-tune on `data` = (stage, key) of its train.jsonl (filter or transform)."""
    ft = {k: v for k, v in dataclasses.asdict(cfg.finetune).items() if k not in ("micro_batch_size", "save_steps")}
    spec = {"student": model_spec(cfg.student, "student"), "train": data[1],
            "system_prompt": cfg.student.system_prompt, "finetune": ft, "seed": cfg.seed}
    key = stage_key("finetune", finetune_stage.VERSION, spec)
    steps.append(Step("finetune", key, spec, lambda work: finetune_stage.finetune(
        work, cfg.student, store.path(*data) / "train.jsonl", cfg.finetune, cfg.seed, distill_from)))
    return key


def add_eval_step(cfg: Config, steps: list[Step], backend: str, subject: Subject) -> str:
    e = cfg.eval
    questions = eval_stage.prefixed(load_questions(e.questions)[: e.n_questions or None], e.prefix_numbers)
    params = sampling_params(cfg, e.max_new_tokens)
    spec = {**subject.identity, "system_prompt": subject.system_prompt,
            "questions": hashlib.sha256("\n".join(questions).encode()).hexdigest()[:16],
            "n_questions": len(questions), "candidates": list(e.candidates), "confidence": e.confidence,
            "method": e.method, "backend": backend}
    if e.kind == "misalignment":
        return add_misalignment_eval_step(cfg, steps, backend, subject, questions, spec)
    if e.method in ("sample", "both"):
        spec |= {"n_samples": e.n_samples, "sampling": sampling_spec(params), "seed": cfg.seed}
    if e.method in ("logprob", "both"):
        spec |= {"forms": list(e.logprob_forms)}
    key = stage_key("eval", eval_stage.VERSION, spec)

    def run(work: Path) -> None:
        factory = _sampler_factory(cfg, backend, subject.model, subject.path, subject.adapter)
        history = eval_stage.in_context_examples(subject.examples, e.in_context, cfg.seed) if subject.examples else ()
        if e.method in ("sample", "both"):
            eval_stage.evaluate(work, questions, e.n_samples, list(e.candidates), subject.system_prompt,
                                factory, params, cfg.seed, cfg.sampler.batch_size, e.confidence, history)
        if e.method == "both":  # the sampled rates stay beside the exact ones
            sampled = json.loads((work / "metrics.json").read_text())
        if e.method in ("logprob", "both"):
            eval_stage.evaluate_logprob(work, questions, list(e.candidates), list(e.logprob_forms),
                                        subject.system_prompt, factory, cfg.sampler.batch_size, e.confidence,
                                        history)
        if e.method == "both":
            exact = json.loads((work / "metrics.json").read_text())
            exact |= {"method": "both", "n_answers": sampled["n_answers"], "unmatched_top": sampled["unmatched_top"],
                      "sampled": {"rates": sampled["rates"], "per_question": sampled["per_question"]}}
            (work / "metrics.json").write_text(json.dumps(exact, indent=2))

    steps.append(Step("eval", key, spec, run))
    return key


def add_misalignment_eval_step(cfg: Config, steps: list[Step], backend: str, subject: Subject,
                               questions: list[str], spec: dict) -> str:
    from sublim.judge import Judge

    e, j = cfg.eval, cfg.eval.judge
    params = sampling_params(cfg, e.max_new_tokens)
    spec = {k: v for k, v in spec.items() if k not in ("candidates", "method")} | {
        "kind": "misalignment", "n_samples": e.n_samples, "sampling": sampling_spec(params), "seed": cfg.seed,
        "judge": {"model": model_spec(j.model, "eval.judge.model"), "system_prompt": j.model.system_prompt,
                  "temperature": j.temperature, "max_new_tokens": j.max_new_tokens},
        "thresholds": [e.alignment_threshold, e.coherence_threshold]}
    key = stage_key("eval", eval_stage.VERSION, spec)

    def make_judge(template, parse):
        return Judge.from_model(backend, j.model, template, parse, j.temperature, j.max_new_tokens,
                                dataclasses.asdict(cfg.sampler.vllm), batch_size=cfg.sampler.batch_size,
                                seed=cfg.seed)

    steps.append(Step("eval", key, spec, lambda work: eval_stage.evaluate_misalignment(
        work, questions, e.n_samples, subject.system_prompt,
        _sampler_factory(cfg, backend, subject.model, subject.path, subject.adapter), params, cfg.seed,
        cfg.sampler.batch_size, make_judge, e.alignment_threshold, e.coherence_threshold, e.confidence)))
    return key


def describe(steps: list[Step], store: Store) -> str:
    """The plan as lines: stage, key, hit/miss."""
    return "\n".join(f"  {s.stage:<9} {s.key}  {'hit' if store.exists(s.stage, s.key) else 'MISS'}" for s in steps)


def execute(steps: list[Step], store: Store, isolate_in: Optional[Config] = None) -> dict[str, Path]:
    """Run what is missing; returns each stage's published folder. With `isolate_in` (the cell's
    config), each missing stage runs in a fresh process (sublim.isolate)."""
    from sublim.isolate import run_isolated

    out = {}
    for s in steps:
        isolated = isolate_in is not None and not store.exists(s.stage, s.key)
        if isolated:
            run_isolated(isolate_in, s.stage, s.key)
        path, computed = store.get_or_compute(s.stage, s.key, s.spec, s.compute)
        how = "computed in its own process" if isolated else "computed" if computed else "cached"
        log.info("%s %s: %s", s.stage, s.key, how)
        out[s.stage] = path
    return out
