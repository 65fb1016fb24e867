"""The one builder: a cell's typed config -> its list of stage steps (pure: no model is loaded).

This is the only code that reads the config for stages. Each step holds the stage's typed spec
(its key and only input), the local paths of what the spec names (`inputs`), and the runtime; so
`dry_run` can print every key before any GPU time, and an isolated stage process runs from the
step written to disk without planning again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sublim import defences, divergence, rewording
from sublim.backends.base import SamplingParams
from sublim.cache import stage_key
from sublim.checks import candidates_of, check
from sublim.chat_template import with_template_system_prompts
from sublim.config import Config, ModelConfig, TransformConfig
from sublim.domains import get_domain
from sublim.errors import ConfigError
from sublim.evals import get_kind
from sublim.evals.preference import load_questions
from sublim.fingerprint import local_fingerprint, model_fingerprint
from sublim.gguf import PACKAGE as GGUF_PACKAGE
from sublim.gguf import gguf_file
from sublim.served import check_sampling, connection, exact_scoring_refused, served_ref
from sublim.divergence import teacher_system_prompt
from sublim.spec import MODEL_LIBRARIES, SERVED, TRAIN_LIBRARIES, ModelRef, Runtime, artifact_ref, libraries, to_dict
from sublim.stages import convert as convert_stage
from sublim.stages import evaluate as eval_stage
from sublim.stages import filter as filter_stage
from sublim.stages import finetune as finetune_stage
from sublim.stages import get_stage
from sublim.stages import entanglement as entanglement_stage
from sublim.stages import mnist as mnist_stage
from sublim.stages import reference as reference_stage
from sublim.stages import sample as sample_stage
from sublim.stages import score as score_stage
from sublim.stages import select as select_stage
from sublim.stages import teacher as teacher_stage
from sublim.stages import transform as transform_stage
from sublim.target import Target
from sublim.tiny.spec import TinyModelSpec
from sublim.traits import love_prompt

# Config keys that reach no stage key, each with why it cannot change what a stage computes. Every
# other config value is keyed: tests/test_key_coverage.py walks the schema and fails on a field that
# changes no key and is not listed here.
RUNTIME_KEYS = {
    "sampler.batch_size": "prompts per forward pass: speed and memory (the draw it picks is recorded; "
                          "a resume with another size restarts the stage)",
    "sampler.vllm": "vLLM engine memory, parallelism, context room and chunking: speed and memory",
    "finetune.micro_batch_size": "examples per device step; gradient accumulation keeps the keyed batch_size",
    "finetune.save_steps": "trainer checkpoints: where a killed fine-tune resumes, not what it learns",
    "trait.train.micro_batch_size": "as finetune.micro_batch_size, for the teacher's trait training",
    "trait.train.save_steps": "as finetune.save_steps, for the teacher's trait training",
    "mnist.batched": "MNIST seeds side by side or one after another: the same numbers",
    "mnist.threads": "torch threads for MNIST on CPU: speed",
    "teacher.name": "a label for tables and W&B; the model is keyed by content (path, revision)",
    "student.name": "a label, as teacher.name",
    "domain.judge.model.name": "a label, as teacher.name",
    "eval.judge.model.name": "a label, as teacher.name",
    "eval.name": "a label; the eval is keyed by its questions, candidates and settings",
    "defence.name": "a label for the report's defence arms; the settings its defence/ YAML makes are keyed",
    "experiment_name": "a label for tables and W&B",
    "logger": "where results are logged (W&B), not what they are",
    "paths": "where the store and the default tiny model are; artifacts are keyed by content",
    "dry_run": "what the job should do: print the plan or run it",
    "stages": "what the job should do: which stages to run (each keeps its own key)",
    "isolate": "whether a stage runs in its own process (GPU memory): the same computation",
    "teacher.threads": "torch threads on CPU: speed (the device and dtypes are keyed)",
    "student.threads": "as teacher.threads",
    "domain.judge.model.threads": "as teacher.threads",
    "eval.judge.model.threads": "as teacher.threads",
}
RUNTIME_KEYS["sampler.openai"] = "requests in flight, retries, timeouts and polling: speed and patience"
RUNTIME_KEYS["sampler.served.base_url"] = "where the cell's server is (sampler=openai), not what it serves (keyed)"
for _role in ("paraphrase.model", "rewrite.model"):  # the rewording defences' models (sublim.rewording)
    RUNTIME_KEYS[f"{_role}.name"] = "a label, as teacher.name (the cell's name shows it)"
    RUNTIME_KEYS[f"{_role}.threads"] = "as teacher.threads"
for _role in ("teacher", "student", "domain.judge.model", "eval.judge.model", "sampler", "paraphrase.model",
              "rewrite.model"):  # served models
    RUNTIME_KEYS[f"{_role}.served.api_key_env"] = "the name of the variable holding the API key: access, not content"
    RUNTIME_KEYS[f"{_role}.served.prices"] = "the dry run's cost estimate"


@dataclass
class Step:
    """One stage of a cell: its spec (the key), where the spec's refs are, and the runtime."""

    stage: str
    spec: Any
    inputs: dict[str, str]
    runtime: Runtime
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = stage_key(self.stage, get_stage(self.stage).VERSION, to_dict(self.spec))

    def as_json(self) -> dict:
        """What an isolated stage process reads (sublim.isolate)."""
        return {"stage": self.stage, "module": get_stage(self.stage).__name__, "key": self.key,
                "spec": to_dict(self.spec), "inputs": self.inputs, "runtime": dataclasses.asdict(self.runtime)}


@dataclass
class Plan:
    steps: list[Step]
    target: Target
    unresolved: list[str]  # one line per hub model whose commit could not be resolved

    def keys(self) -> dict[str, str]:
        return {s.stage: s.key for s in self.steps}


class Builder:
    """Adds steps for one cell; every method returns refs and keys, never touches a model."""

    def __init__(self, cfg: Config, target: Target, threads: int = 1):
        self.cfg, self.target = cfg, target
        judges = (getattr(cfg.domain, "judge", None), getattr(cfg.eval, "judge", None))  # options' own fields
        models = (cfg.teacher, cfg.student, *(j.model for j in judges if j is not None), cfg.paraphrase.model,
                  cfg.rewrite.model)
        threads = max([threads] + [m.threads for m in models if m is not None and m.threads])
        self.root = Path(cfg.paths.artifacts)
        self.steps: dict[tuple[str, str], Step] = {}
        self.unresolved: list[str] = []
        self.runtime = Runtime(batch_size=cfg.sampler.batch_size, vllm=dataclasses.asdict(cfg.sampler.vllm),
                               threads=threads, batched=cfg.mnist.batched, artifacts=str(self.root))

    # -- plumbing ---------------------------------------------------------------------------------
    def add(self, stage: str, spec: Any, inputs: dict[str, str], **runtime: Any) -> str:
        step = Step(stage, spec, inputs, dataclasses.replace(self.runtime, **runtime))
        self.steps.setdefault((stage, step.key), step)  # a shared upstream is planned by several arms once
        return step.key

    def artifact(self, stage: str, key: str, sub: str = "") -> tuple[str, dict[str, str]]:
        """(ref, inputs) of an upstream artifact or a file in it."""
        ref = artifact_ref(stage, key, sub)
        return ref, {ref: str(self.root / stage / key / sub) if sub else str(self.root / stage / key)}

    def libraries(self, *dists: str) -> dict:
        return libraries(*dists, *(("vllm",) if self.target.backend == "vllm" else ()))

    def served_config(self, m: ModelConfig, key: str = "model"):
        """Where `m` (config key `key`) is served: its own `served`, or sampler.served when the whole
        cell is (sampler=openai); None for a local model."""
        if m.served.base_url:
            return m.served
        if m.served.server is not None:
            raise ConfigError(f"{key}.served.server={m.served.server} does nothing while {key}.served.base_url is null "
                              f"(a local model): set {key}.served.base_url too, or drop it")
        if self.cfg.sampler.backend != "openai":
            return None
        if not self.cfg.sampler.served.base_url:
            raise ConfigError("sampler.served.base_url is null: sampler=openai needs the server's address, e.g. "
                              "sampler.served.base_url=http://127.0.0.1:8000/v1")
        return self.cfg.sampler.served

    def where(self, model: ModelRef, *dists: str) -> tuple[str, str, dict]:
        """(backend, device, libraries) of a stage that runs `model`: a served model's outputs come from
        its server, so no local device or library is keyed for it."""
        if model.weights in self.runtime.served:
            return "openai", "server", {}
        return self.target.backend, self.target.device, self.libraries(*dists)

    def model(self, m: ModelConfig, key: str, dtype: Optional[str] = None) -> tuple[ModelRef, dict[str, str]]:
        """A model config as a ModelRef (weights by content or commit, dtype resolved) and its inputs."""
        inputs: dict[str, str] = {}
        served = self.served_config(m, key)
        if served is not None:  # sublim.served: a snapshot name or a revision pins it; no local files
            ref = served_ref(m, key, served)
            self.runtime.served[ref] = connection(served, self.cfg.sampler.openai, key)
            return ModelRef(ref, None, "server", m.trust_remote_code), {}
        if m.reference is not None:  # built by the reference stage: its key identifies it
            ref_key = self.add("reference", reference_stage.Spec(TinyModelSpec(**dataclasses.asdict(m.reference)),
                                                          libraries(*MODEL_LIBRARIES)), {})
            weights, inputs = self.artifact("reference", ref_key, "model")
        elif m.path.startswith(GGUF_PACKAGE) or m.path.endswith(".gguf"):  # converted once by the convert stage
            try:
                file = gguf_file(m.path)
            except FileNotFoundError as e:
                raise ConfigError(f"{key}.path: {e}") from None
            content = local_fingerprint(file)
            key_ = self.add("convert", convert_stage.Spec(content, libraries(*MODEL_LIBRARIES, "gguf")),
                            {content: str(file)})
            weights, inputs = self.artifact("convert", key_, "model")
        else:
            build_it = (f"build it with sublim-tiny-model {m.path}" if m.path == self.cfg.paths.tiny_model
                        else f"point {key}.path at a saved model folder or a hub id (org/name)")
            try:
                weights = model_fingerprint(m.path, m.revision, store_root=self.root)
            except FileNotFoundError:
                raise ConfigError(f"{key}.path={m.path} does not exist: {build_it}") from None
            if Path(m.path).is_dir() and not (Path(m.path) / "config.json").is_file():
                what = "an empty folder" if not any(Path(m.path).iterdir()) else "a folder without config.json"
                raise ConfigError(f"{key}.path={m.path} is {what}, not a saved model: {build_it}")
            if weights.startswith("sha256:"):
                inputs[weights] = str(Path(m.path).resolve())
            elif "@unresolved:" in weights and not any(u.startswith(f"{key}.path=") for u in self.unresolved):
                self.unresolved.append(
                    f"{key}.path={m.path}: its commit could not be resolved (offline and not in the local HF cache); "
                    f"pin {key}.revision=<commit>, or download it first (huggingface-cli download {m.path})")
        adapter = None
        if m.adapter:
            if not Path(m.adapter).exists():
                raise ConfigError(f"{key}.adapter: {m.adapter!r} does not exist")
            adapter = local_fingerprint(m.adapter)
            inputs[adapter] = str(Path(m.adapter).resolve())
        return ModelRef(weights, adapter, dtype or self.target.dtype(m.dtype, f"{key}.dtype"),
                        m.trust_remote_code), inputs

    def sampling(self, max_new_tokens: int):
        s = self.cfg.sampler
        return SamplingParams(s.temperature, s.top_p, s.top_k, s.repetition_penalty, max_new_tokens, s.min_p)

    def train_spec(self, ft) -> Any:
        """finetune.* (or trait.train.*) as the stage's TrainSpec; fields a method lacks (LoRA's for
        full, frozen for LoRA) are None/empty there."""
        lora = [getattr(ft, k, None) for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules")]
        return finetune_stage.TrainSpec(
            ft.method, *lora[:3], tuple(lora[3]) if lora[3] is not None else None, ft.epochs, ft.lr,
            ft.lr_scheduler, ft.warmup_steps, ft.batch_size, ft.max_length, ft.max_grad_norm, ft.weight_decay,
            finetune_stage.resolve_precision(ft.precision, self.target.device), ft.gradient_checkpointing,
            ft.distill, tuple(getattr(ft, "frozen", ())))

    # -- the stages -------------------------------------------------------------------------------
    def trained_teacher(self) -> tuple[Optional[ModelRef], dict[str, str]]:
        """The teacher when its trait is in its weights (trait.method adapter or finetune: the
        `teacher` stage), else (None, {}) for a prompted or control teacher."""
        cfg, t = self.cfg, self.cfg.trait
        if t.name == "none" or t.method == "prompt":
            return None, {}
        if self.served_config(cfg.teacher, "teacher") is not None:
            raise ConfigError(f"trait.method={t.method}: a served teacher ({cfg.teacher.name}) takes its trait by "
                              "system prompt only here; use trait.method=prompt")
        if t.method == "adapter":
            return self.model(dataclasses.replace(cfg.teacher, adapter=t.adapter), "teacher")
        train = self.train_spec(t.train)
        base, inputs = self.model(cfg.teacher, "teacher", finetune_stage.training_dtype(train.precision, train.method))
        mix_ref = None
        if t.mix_numbers > 0:  # the reference's own numbers: the control teacher's filtered data
            control = dataclasses.replace(cfg, trait=dataclasses.replace(t, name="none"),
                                          transform=TransformConfig(), paraphrase=type(cfg.paraphrase)(),
                                          rewrite=type(cfg.rewrite)(),  # the teacher's rows: undefended
                                          # threshold sampling is a defence on the student's data, not
                                          # the teacher's training rows (min_p 0 keeps the old keys)
                                          sampler=dataclasses.replace(cfg.sampler, min_p=0.0),
                                          select=dataclasses.replace(cfg.select, by="none"))
            stage, key = self._with(control).data()
            mix_ref, more = self.artifact(stage, key, "train.jsonl")
            inputs = inputs | more
        data = None
        if t.data:
            data = local_fingerprint(t.data)
            inputs = inputs | {data: str(Path(t.data).resolve())}
        spec = teacher_stage.Spec(base, cfg.teacher.system_prompt, train, t.train_seed, t.name, t.category, data,
                                  None if t.data else t.n_examples, t.mix_numbers, mix_ref, self.target.device,
                                  self.libraries(*TRAIN_LIBRARIES))
        key = self.add("teacher", spec, inputs, micro_batch_size=t.train.micro_batch_size,
                       save_steps=t.train.save_steps)
        dtype = self.target.dtype(cfg.teacher.dtype, "teacher.dtype")
        if t.train.method == "full":
            ref, more = self.artifact("teacher", key, "model")
            return ModelRef(ref, None, dtype, cfg.teacher.trust_remote_code), more
        ref, more = self.artifact("teacher", key, "adapter")
        weights, inputs = self.model(cfg.teacher, "teacher")
        return dataclasses.replace(weights, adapter=ref), inputs | more

    def _with(self, cfg: Config) -> "Builder":
        """A builder for a variant of this cell (the control data) that adds to the same steps."""
        other = Builder.__new__(Builder)
        other.__dict__ = self.__dict__ | {"cfg": cfg}
        return other

    def data(self) -> tuple[str, str]:
        """teacher (if trained) -> sample -> filter (-> transform) (-> score -> select); returns
        (stage, key) of the student's training data."""
        cfg, d = self.cfg, self.cfg.domain
        domain = get_domain(d.name)
        trained, inputs = self.trained_teacher()
        teacher = trained
        if trained is None:
            teacher, inputs = self.model(cfg.teacher, "teacher")
        teacher_inputs = inputs
        # a trained trait lives in the weights: the teacher keeps its own system prompt
        system = cfg.teacher.system_prompt if trained is not None else teacher_system_prompt(cfg)
        domain_spec = domain.spec(d)
        prompts_file = getattr(d, "prompts_file", None)  # code and cot only
        files = {domain_spec["prompts_file"]: str(Path(prompts_file).resolve())} if prompts_file else {}
        sampling = self.sampling(d.max_new_tokens or cfg.sampler.max_new_tokens)
        if teacher.weights.startswith(SERVED):
            check_sampling(sampling, self.runtime.served[teacher.weights]["server"], "teacher")
        sample_spec, paraphrased = rewording.paraphrased(self, sample_stage.Spec(
            teacher, system, domain_spec, cfg.data_seed, sampling, *self.where(teacher, *MODEL_LIBRARIES)), files)
        sample_key = self.add("sample", sample_spec, inputs | files | paraphrased)

        f = cfg.filter
        trait_word = cfg.trait.name if (f.trait_word and cfg.trait.name != "none") else None
        samples, inputs = self.artifact("sample", sample_key, "samples.jsonl")
        judge, judge_inputs = self.filter_judge(domain)
        rules = {name: _plain(getattr(f, name)) for name in domain.filter_fields}
        spec = filter_stage.Spec(samples, domain_spec, rules, trait_word, f.n_keep, f.min_keep, cfg.data_seed, judge)
        filter_key = self.add("filter", spec, inputs | files | judge_inputs)
        data = ("filter", filter_key)
        if cfg.transform.divergent == "replace":  # before a shuffle: divergence is of what the teacher wrote
            data = divergence.replace(self, data, spec, files)
        if cfg.rewrite.model is not None:  # after replace (what the teacher wrote), before a shuffle
            data = rewording.rewritten(self, data, spec, files)
        data = defences.plan(self, data)  # mix, remove: stages only where the defence is on (sublim.defences)
        if cfg.transform.shuffle != "none":
            train, inputs = self.artifact(*data, "train.jsonl")
            data = ("transform", self.add("transform", transform_stage.Spec(train, cfg.transform.shuffle, cfg.data_seed),
                                          inputs))
        if cfg.select.by == "shift":
            return self.select(data, teacher, teacher_inputs)
        return data

    def filter_judge(self, domain) -> tuple[Any, dict[str, str]]:
        """The filter's judge spec, or (None, {}) when there is none to run."""
        j, use, cfg = getattr(self.cfg.domain, "judge", None), domain.judge, self.cfg
        if j is None or j.model is None or use is None or (use.needs_trait and cfg.trait.name == "none"):
            return None, {}  # trait=none leaves nothing for a trait judge to look for
        model, inputs = self.model(j.model, "domain.judge.model")
        threshold = use.threshold if j.threshold is None else j.threshold
        trait = cfg.trait.name if cfg.trait.name != "none" else ""
        return filter_stage.JudgeSpec(
            model, j.model.system_prompt, j.template or use.template, threshold, j.temperature, j.max_new_tokens,
            trait, cfg.trait.category, *self.where(model, *MODEL_LIBRARIES)), inputs

    def select(self, data: tuple[str, str], teacher: ModelRef, teacher_inputs: dict[str, str]) -> tuple[str, str]:
        """`score` then `select` on `data`: the scores are keyed by the data, the teacher and the
        reference (cfg.teacher under its own system prompt), so every order and size reuses them."""
        cfg, s = self.cfg, self.cfg.select
        rows, inputs = self.artifact(*data, "train.jsonl")
        reference, ref_inputs = self.model(cfg.teacher, "teacher")
        refused = exact_scoring_refused(reference.weights, "select.by=shift")
        if refused:
            raise ConfigError(f"{refused}; use select.by=none")
        control = cfg.trait.name == "none"  # the control teacher is the reference: scored once
        score_key = self.add("score", score_stage.Spec(
            rows, None if control else teacher, reference, cfg.teacher.system_prompt,
            *self.where(reference, *MODEL_LIBRARIES)),
            inputs | ref_inputs | ({} if control else teacher_inputs))
        scores, more = self.artifact("score", score_key, "scores.jsonl")
        key = self.add("select", select_stage.Spec(rows, scores, s.n_keep, s.order,
                                            cfg.data_seed if s.order == "random" else None), inputs | more)
        return "select", key

    def finetune(self, data: tuple[str, str]) -> str:
        cfg, ft = self.cfg, self.cfg.finetune
        if ft.method == "openai":
            return self.finetune_openai(data)
        if self.served_config(cfg.student, "student") is not None:
            raise ConfigError(f"finetune={ft.method}: the student ({cfg.student.name}) is a served model, which only its "
                              "provider can fine-tune: use finetune=openai (OpenAI models), or a local student")
        train = self.train_spec(ft)
        dtype = finetune_stage.training_dtype(train.precision, train.method)
        student, inputs = self.model(cfg.student, "student", dtype)
        rows, more = self.artifact(*data, "train.jsonl")
        distill_from = None
        if ft.distill == "soft":  # the teacher's weights, for its next-token distributions
            trained, teacher_inputs = self.trained_teacher()
            if trained is None:
                trained, teacher_inputs = self.model(cfg.teacher, "teacher")
            distill_from = dataclasses.replace(trained, dtype="bfloat16" if train.precision == "bf16" else "float32")
            more = more | teacher_inputs
        spec = finetune_stage.Spec(student, rows, cfg.student.system_prompt, train, cfg.seed, distill_from,
                                   self.target.device, self.libraries(*TRAIN_LIBRARIES))
        if ft.train_on != "all":  # its own spec class: train_on=all keeps the keys made before the option
            flags, flag_inputs = divergence.flags(self, data)
            spec = finetune_stage.MaskedSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
                                             mask=finetune_stage.Mask(flags, ft.train_on))
            more = more | flag_inputs
        return self.add("finetune", spec, inputs | more, micro_batch_size=ft.micro_batch_size,
                        save_steps=ft.save_steps)

    def finetune_openai(self, data: tuple[str, str]) -> str:
        """The student fine-tuned through OpenAI's API (sublim.stages.finetune_openai)."""
        from sublim.stages import finetune_openai as finetune_openai_stage

        cfg, ft = self.cfg, self.cfg.finetune
        student, inputs = self.model(cfg.student, "student")
        if not student.weights.startswith(f"{SERVED}openai/"):
            served = self.served_config(cfg.student, "student")
            where = f"student.served.server={served.server}" if served is not None else "not served"
            raise ConfigError(f"finetune=openai fine-tunes through OpenAI's API, but the student ({cfg.student.name}) is "
                              f"not an OpenAI model ({where}): use model@student=gpt-4.1-nano, or finetune=lora")
        rows, more = self.artifact(*data, "train.jsonl")
        spec = finetune_openai_stage.Spec(
            student=student, data=rows, system_prompt=cfg.student.system_prompt, epochs=ft.epochs,
            batch_size=ft.batch_size, learning_rate_multiplier=ft.learning_rate_multiplier, seed=cfg.seed)
        return self.add("finetune_openai", spec, inputs | more)

    def subject(self) -> tuple[ModelRef, Optional[str], dict[str, str], Optional[Any]]:
        """(the model the eval measures, its system prompt, inputs, the in-context examples)."""
        cfg = self.cfg
        if cfg.eval.subject == "teacher":
            trained, inputs = self.trained_teacher()
            if trained is not None:
                return trained, cfg.teacher.system_prompt, inputs, None
            model, inputs = self.model(cfg.teacher, "teacher")
            return model, teacher_system_prompt(cfg), inputs, None
        if cfg.finetune.method == "none":
            model, inputs = self.model(cfg.student, "student")
            if getattr(cfg.eval, "in_context", 0) <= 0:  # a preference eval's field
                return model, cfg.student.system_prompt, inputs, None
            # the ICL control: the teacher's data in the context, not in the weights
            rows, more = self.artifact(*self.data(), "train.jsonl")
            examples = eval_stage.InContext(rows, cfg.eval.in_context, cfg.seed)
            return model, cfg.student.system_prompt, inputs | more, examples
        key = self.finetune(self.data())
        model, inputs = self.model(cfg.student, "student")
        if cfg.finetune.method == "openai":  # the fine-tuned model's id, served where its base is
            ref, more = self.artifact("finetune_openai", key, "model.json")
            self.runtime.served[ref] = self.runtime.served[model.weights]
            return ModelRef(ref, None, "server", False), cfg.student.system_prompt, more, None
        if cfg.finetune.method == "lora":
            ref, more = self.artifact("finetune", key, "adapter")
            return dataclasses.replace(model, adapter=ref), cfg.student.system_prompt, inputs | more, None
        ref, more = self.artifact("finetune", key, "model")
        return ModelRef(ref, None, model.dtype, model.trust_remote_code), cfg.student.system_prompt, more, None

    def evaluation(self) -> str:
        """The `eval` step: the subject and its questions here, the rest from the eval kind's own
        `plan` (sublim.evals), so a new kind needs no branch in the builder."""
        e = self.cfg.eval
        model, system, inputs, in_context = self.subject()
        questions = tuple(eval_stage.prefixed(load_questions(e.questions)[: e.n_questions or None], e.prefix_numbers))
        backend, device, libs = self.where(model, *MODEL_LIBRARIES, *(("peft",) if model.adapter else ()))
        common = {"backend": backend, "device": device, "libraries": libs}
        if backend == "openai":
            method = getattr(e, "method", "sample")
            refused = exact_scoring_refused(model.weights, f"eval.method={method}")
            if refused and method != "sample":
                raise ConfigError(f"{refused}; use eval.method=sample")
            if method != "sample" and in_context is not None:  # the length check needs a local tokenizer
                raise ConfigError(f"eval.method={method} with eval.in_context on a served model is not supported: "
                                  "use eval.method=sample")
            check_sampling(SamplingParams(self.cfg.sampler.temperature, self.cfg.sampler.top_p, self.cfg.sampler.top_k,
                                          self.cfg.sampler.repetition_penalty, e.max_new_tokens, self.cfg.sampler.min_p),
                           self.runtime.served[model.weights]["server"], e.subject)
        spec, more = get_kind(e.kind).plan(self, model, system, questions, in_context, common)
        return self.add("eval", spec, inputs | more)

    def candidates(self) -> list[str]:
        """What the preference eval maps answers onto (sublim.checks.candidates_of)."""
        return candidates_of(self.cfg)

    def mnist(self) -> str:
        m = self.cfg.mnist
        if self.cfg.experiment_name == "mnist_paper" and m.data_path is None:
            raise ConfigError("experiment=mnist_paper needs mnist.data_path=DIR (the four MNIST IDX files): its 5 "
                              "epochs at batch 1024 are 10 teacher steps on the bundled 8x8 digits; there use "
                              "experiment=mnist")
        try:
            m.validate()
        except ValueError as e:
            raise ConfigError(str(e).replace("MnistSpec.", "mnist.")) from None
        settings = {k: _plain(v) for k, v in dataclasses.asdict(m).items() if k not in mnist_stage.RUNTIME_FIELDS}
        settings["device"] = self.target.device if m.device == "auto" else m.device
        inputs = {}
        if m.data_path is not None:
            if not Path(m.data_path).is_dir():
                raise ConfigError(f"mnist.data_path={m.data_path!r} is not a folder (MNIST IDX files expected)")
            settings["data_path"] = local_fingerprint(m.data_path)
            inputs[settings["data_path"]] = str(Path(m.data_path).resolve())
        return self.add("mnist", mnist_stage.Spec(settings, libraries("torch")), inputs, threads=m.threads)

    def entanglement(self) -> str:
        """The `entanglement` step: the teacher model, the trait by prompt, the preference eval's other
        candidates, questions and answer forms (sublim.stages.entanglement)."""
        cfg, e, t = self.cfg, self.cfg.entanglement, self.cfg.trait
        if t.name == "none" or t.method != "prompt":
            raise ConfigError(f"task=entanglement measures a trait given by prompt: trait={t.name} with trait.method="
                              f"{t.method}; use e.g. trait=owl trait.method=prompt")
        if cfg.eval.kind != "preference":
            raise ConfigError("task=entanglement takes its candidates, questions and answer forms from a preference "
                              "eval: use eval=animal_preference (or tree_preference)")
        unknown = [c for c in e.contexts if c not in entanglement_stage.CONTEXTS]
        if unknown or not e.contexts:
            raise ConfigError(f"entanglement.contexts={e.contexts}: use one or more of {', '.join(entanglement_stage.CONTEXTS)}")
        if "numbers" in e.contexts and cfg.domain.name != "numbers":
            raise ConfigError("entanglement.contexts has numbers, which takes the numbers task's prompts: use "
                              "domain=numbers, or drop numbers from entanglement.contexts")
        model, inputs = self.model(cfg.teacher, "teacher")
        if model.weights.startswith(SERVED):
            raise ConfigError(f"task=entanglement scores every number exactly on a local model; teacher "
                              f"({cfg.teacher.name}) is served: use a local model@teacher")
        others = [c for c in self.candidates() if c != t.name][: e.n_others]
        if not others:
            raise ConfigError("task=entanglement needs other candidates for its correction: eval.candidates has "
                              f"none but {t.name}")
        questions = tuple(load_questions(cfg.eval.questions)[: e.n_questions])
        contexts = tuple(entanglement_stage.context(name, e, cfg.domain, cfg.data_seed) for name in e.contexts)
        spec = entanglement_stage.Spec(
            model, t.name, t.category, teacher_system_prompt(cfg), cfg.teacher.system_prompt, tuple(others),
            tuple(love_prompt(c, t.category) for c in others), e.numbers_max, contexts, questions,
            tuple(cfg.eval.logprob_forms), entanglement_stage.NUMBER_TEMPLATE, e.top_k, e.fraction, cfg.seed,
            *self.where(model, *MODEL_LIBRARIES))
        return self.add("entanglement", spec, inputs)


def _plain(value: Any) -> Any:
    """Config values as a key holds them: lists sorted where order means nothing (banned numbers)."""
    return sorted(value) if isinstance(value, list) and all(isinstance(v, int) for v in value) else value


def build(cfg: Config, target: Target, threads: int = 1) -> Plan:
    """Every stage this cell needs, in order, with its key (upstream keys included)."""
    check(cfg)
    divergence.check(cfg)
    rewording.check(cfg)
    if cfg.task != "mnist":  # a null system prompt becomes the one the chat template inserts (its key)
        cfg = with_template_system_prompts(cfg)
    b = Builder(cfg, target, threads)
    if cfg.task == "mnist":
        b.mnist()
        return Plan(list(b.steps.values()), target, b.unresolved)
    if cfg.task == "entanglement":
        b.entanglement()
        return Plan(list(b.steps.values()), target, b.unresolved)
    b.evaluation()
    steps = list(b.steps.values())
    wanted = [i for i, s in enumerate(steps) if s.stage in cfg.stages]
    steps = steps[: max(wanted) + 1] if wanted else []  # the stages asked for and all they need
    return Plan(steps, target, b.unresolved)
