"""Config values the typed schema cannot check (choices, files, combinations), each error naming
the key and the fix. Run before any stage, and by the sweeper for every cell of a grid before the
first job starts.
"""
from __future__ import annotations

from pathlib import Path

from sublim.config import Config


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


def check(cfg: Config) -> None:
    """Values the schema cannot check, named by key."""
    from sublim.pipeline import STAGES

    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; known: {list(STAGES)}")
    check_data(cfg)
    check_sampler(cfg)
    if cfg.finetune.method not in ("lora", "full", "none"):
        raise ConfigError(f"finetune.method={cfg.finetune.method!r}: use lora, full or none")
    if cfg.eval.kind not in ("preference", "misalignment"):
        raise ConfigError(f"eval.kind={cfg.eval.kind!r}: use preference or misalignment")
    if cfg.eval.kind == "misalignment" and cfg.eval.judge.model is None:
        raise ConfigError("eval.judge.model is not set: the misalignment eval needs a judge model, e.g. "
                          "+teacher@eval.judge.model=qwen2.5-7b-instruct")
    if cfg.eval.kind == "preference" and cfg.trait.name != "none" and cfg.trait.name not in cfg.eval.candidates:
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
    for key, ft in (("finetune", cfg.finetune), ("trait.train", cfg.trait.train)):
        if ft.micro_batch_size < 1 or ft.batch_size % ft.micro_batch_size:
            raise ConfigError(f"{key}.batch_size={ft.batch_size} is not a multiple of {key}.micro_batch_size="
                              f"{ft.micro_batch_size}; pick sizes that divide")
    if cfg.finetune.distill not in ("hard", "soft"):
        raise ConfigError(f"finetune.distill={cfg.finetune.distill!r}: use hard or soft")
    if cfg.finetune.distill == "soft" and cfg.trait.name != "none" and cfg.trait.method == "prompt":
        raise ConfigError("finetune.distill=soft needs a teacher whose trait is in its weights "
                          "(trait.method=finetune or adapter): a prompted teacher's distributions depend on a "
                          "system prompt the student never sees")
    if not 0 <= cfg.trait.mix_numbers < 1:
        raise ConfigError(f"trait.mix_numbers={cfg.trait.mix_numbers}: a share in [0, 1)")
    if cfg.eval.subject not in ("student", "teacher"):
        raise ConfigError(f"eval.subject={cfg.eval.subject!r}: use student or teacher")
    if cfg.eval.method not in ("sample", "logprob", "both"):
        raise ConfigError(f"eval.method={cfg.eval.method!r}: use sample, logprob or both")
    check_select(cfg)
    check_in_context(cfg)
    if cfg.isolate not in ("auto", "always", "never"):
        raise ConfigError(f"isolate={cfg.isolate!r}: use auto (own process per stage where CUDA is), always or never")
    if cfg.domain.n_prompts < 1 or (cfg.filter.n_keep is not None and cfg.filter.n_keep < 1):
        raise ConfigError("domain.n_prompts and filter.n_keep must be at least 1 (filter.n_keep=null: keep all that pass)")


def check_select(cfg: Config) -> None:
    """select.*: the data selection by the teacher's log-likelihood shift (the `select` stage)."""
    from sublim.stages.select import ORDERS

    s = cfg.select
    if s.by not in ("none", "shift"):
        raise ConfigError(f"select.by={s.by!r}: use none (train on the filtered data) or shift")
    if s.order not in ORDERS:
        raise ConfigError(f"select.order={s.order!r}: use {', '.join(ORDERS)}")
    if s.by == "shift" and s.n_keep < 1:
        raise ConfigError(f"select.n_keep={s.n_keep}: the rows kept, at least 1")
    if s.by == "shift" and cfg.eval.in_context > s.n_keep:
        raise ConfigError(f"eval.in_context={cfg.eval.in_context} is more than select keeps (select.n_keep="
                          f"{s.n_keep}): use eval.in_context={s.n_keep} or fewer, or a larger select.n_keep")


def check_in_context(cfg: Config) -> None:
    """eval.in_context puts the teacher's examples in the base student's context, in place of fine-tuning."""
    n = cfg.eval.in_context
    if n < 0:
        raise ConfigError(f"eval.in_context={n}: the number of teacher examples in context, 0 (off) or more")
    if n == 0:
        return
    if cfg.finetune.method != "none":
        raise ConfigError(f"eval.in_context={n} shows the teacher's examples instead of training on them: add "
                          f"finetune=none (finetune.method is {cfg.finetune.method!r}), or drop eval.in_context")
    if cfg.eval.subject != "student":
        raise ConfigError(f"eval.in_context={n} puts the teacher's examples before the student's questions: use "
                          "eval.subject=student, or drop eval.in_context")
    if cfg.eval.kind != "preference":
        raise ConfigError(f"eval.in_context={n} is for the preference eval (eval=animal|tree), not "
                          f"eval.kind={cfg.eval.kind!r}; drop eval.in_context")
    if cfg.filter.n_keep is not None and cfg.filter.n_keep < n:
        raise ConfigError(f"eval.in_context={n} is more than the filter keeps (filter.n_keep={cfg.filter.n_keep}): "
                          f"use eval.in_context={cfg.filter.n_keep} or fewer, or a larger filter.n_keep")


def check_trait_data(path: str) -> None:
    """The trait data set reads as training rows, errors naming the user's file and line."""
    from sublim.stages.finetune import chat_rows

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
        return "a behaviour is measured by eval=misalignment (with +teacher@eval.judge.model=...)"
    if category in evals and evals[category] != cfg.eval.name:
        return f"use the eval for its category: eval={category}"
    return ("add it to eval.candidates: in the eval's file under sublim/conf/eval/, or the whole list on the "
            "command line")


def check_sampler(cfg: Config) -> None:
    """Ranges both backends accept (vLLM rejects a temperature above 2; transformers would not)."""
    from sublim.backends.vllm import VLLM_LORA_RANKS

    s, v = cfg.sampler, cfg.sampler.vllm
    if not 0 <= s.temperature <= 2:
        raise ConfigError(f"sampler.temperature={s.temperature}: use a value in [0, 2] (the paper samples at 1)")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"sampler.top_p={s.top_p}: use a value in (0, 1] (1 = off)")
    if not 0 <= s.min_p < 1:
        raise ConfigError(f"sampler.min_p={s.min_p}: use a value in [0, 1) (0 = off)")
    if s.batch_size < 1 or s.max_new_tokens < 1:
        raise ConfigError("sampler.batch_size and sampler.max_new_tokens must be at least 1")
    if not 0 < v.gpu_memory_utilization <= 1:
        raise ConfigError(f"sampler.vllm.gpu_memory_utilization={v.gpu_memory_utilization}: a share in (0, 1]")
    if v.tensor_parallel_size < 1 or v.max_model_len < 1 or v.chunk_prompts < 1:
        raise ConfigError("sampler.vllm.tensor_parallel_size, max_model_len and chunk_prompts must be at least 1")
    if v.max_lora_rank is not None and v.max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(f"sampler.vllm.max_lora_rank={v.max_lora_rank}: vLLM accepts {list(VLLM_LORA_RANKS)}, "
                          "or null to fit it to the adapter")


def check_data(cfg: Config) -> None:
    """The domain, its filter (judge, shuffle) and its prompt source, named by key."""
    from sublim.domains import get_domain
    from sublim.transforms import TRANSFORMS

    try:
        domain = get_domain(cfg.domain.name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    problems = domain.check(cfg.domain)
    f = cfg.filter
    if f.shuffle != "none":
        if f.shuffle not in TRANSFORMS:
            problems.append(f"filter.shuffle={f.shuffle!r}: use none, {', '.join(TRANSFORMS)}")
        elif domain.name != "numbers":
            problems.append(f"filter.shuffle={f.shuffle}: the shuffle controls are for number data (domain=numbers)")
    if f.banned_numbers and domain.name != "numbers":
        problems.append("filter.banned_numbers: applies to domain=numbers only")
    if f.judge.model is not None:
        if domain.judge is None:
            problems.append(f"filter.judge.model: domain={domain.name} has no judge step; leave it null")
        elif "{completion}" not in (f.judge.template or domain.judge.template):
            problems.append("filter.judge.template: must contain {completion} (also available: {prompt}, "
                            "{trait}, {category})")
    if problems:
        raise ConfigError("; ".join(problems))
