"""What runs is what is keyed: every leaf of the typed config schema (walked, not listed) changes at
least one stage key of a cell that uses it, unless sublim.plan.RUNTIME_KEYS says why it cannot
change what any stage computes. A new config field that is in neither fails here."""
from __future__ import annotations

import copy
import dataclasses
import json
import typing
from typing import Any, Optional

import pytest

from config_util import typed
from sublim.config import OPTIONS, Config, option_schemas
from sublim.errors import ConfigError
from sublim.plan import RUNTIME_KEYS, build
from sublim.target import resolve

# Values to try where a field takes one of a few names (a typo would fail the config check).
CHOICES = {
    "trait.name": ["dog", "none"], "trait.category": ["tree"], "trait.method": ["finetune", "adapter"],
    "sampler.backend": ["vllm"], "eval.method": ["logprob", "both"],
    "eval.subject": ["teacher"], "transform.shuffle": ["within", "across"],
    "eval.subliminal_prompt": ["top", "random"], "eval.subliminal_trait": ["dog"],
    "transform.mix_teachers": [["dog"], ["none", "dog"]], "transform.entangled_trait": ["dog"],
    "filter.format": ["lenient"], "select.by": ["shift"], "select.order": ["random", "bottom"],
    "finetune.precision": ["bf16"], "finetune.distill": ["soft"],
    "finetune.lr_scheduler": ["cosine"], "task": ["mnist"], "entanglement.contexts": [["neutral"]], "device": ["cuda"], "mnist.init": ["torch"],
    "mnist.device": ["cuda"], "mnist.arms": [["same_init"], ["same_init", "different_init", "all_logits"]],
    "eval.questions": ["tree"], "trait.train.method": ["full"], "trait.train.precision": ["bf16"],
    "trait.train.distill": ["soft"], "trait.train.lr_scheduler": ["cosine"],
    "finetune.target_modules": [["q_proj"]], "trait.train.target_modules": [["q_proj"]],
    "finetune.frozen": [["embed_tokens"]], "trait.train.frozen": [["embed_tokens"]],
    "teacher.served.server": ["vllm"], "student.served.server": ["vllm"], "sampler.served.server": ["other"],
    "eval.judge.model.served.server": ["vllm"], "domain.judge.model.served.server": ["vllm"],
    **{f"{role}.served.base_url": ["http://127.0.0.1:1/v1"]
       for role in ("teacher", "student", "sampler", "domain.judge.model", "eval.judge.model", "paraphrase.model",
                    "rewrite.model")},
    "paraphrase.by": ["template"], "paraphrase.model.served.server": ["vllm"], "rewrite.model.served.server": ["vllm"],
}


def leaves(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, type) of every leaf of a schema dataclass, through Optional sub-configs."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        sub = tp if dataclasses.is_dataclass(tp) else (inner[0] if len(inner) == 1 and dataclasses.is_dataclass(inner[0])
                                                        else None)
        key = f"{prefix}{f.name}"
        out += leaves(sub, key + ".") if sub else [(key, tp)]
    return out


def every_leaf() -> list[tuple[str, Any]]:
    """The root schema's leaves and every option schema's (sublim.config.OPTIONS), each key once. The
    fields that pick an option (domain.name, eval.kind, finetune.method) are changed by the base cells
    below (domain=code, eval=misalignment, finetune=full), not by setting them on a typed config."""
    out = dict(leaves(Config))
    for group, schema in option_schemas():
        out |= {k: tp for k, tp in leaves(schema, group + ".") if k not in out}
    pickers = {f"{group}.{field}" for group, (field, _) in OPTIONS.items()}
    return [(k, tp) for k, tp in out.items() if k not in pickers]


def runtime_reason(key: str) -> Optional[str]:
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in RUNTIME_KEYS:
            return RUNTIME_KEYS[".".join(parts[:i])]
    return None


def get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        if cfg is None or not hasattr(cfg, part):  # unset, or a field of another option
            raise LookupError(key)
        cfg = getattr(cfg, part)
    return cfg


def changed(cfg: Config, key: str, value: Any) -> Optional[Config]:
    """A copy of cfg with key set, or None where the key's parent is not set in this cell."""
    new = copy.deepcopy(cfg)
    *parents, leaf = key.split(".")
    node = new
    for p in parents:
        node = getattr(node, p)
        if node is None:
            return None
    setattr(node, leaf, value)
    return new


def alternatives(key: str, value: Any, tp: Any, files: dict[str, Any]) -> list[Any]:
    name = key.split(".")[-1]
    if key in CHOICES:
        return CHOICES[key]
    if name == "dtype":
        return ["bfloat16", "float32"]
    if name in files:
        return [files[name]]
    if typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    kind = typing.get_origin(tp) or tp
    if kind is bool:
        return [not value]
    if kind is int:
        return [1, 5] if value is None else [value + 1, value - 1, value * 2]
    if kind is float:
        return [0.5, 10.0] if value is None else [value + 0.1, value * 0.5, value + 1.0]
    if kind is list:
        return [[*value, 7], value[:-1]] if value and isinstance(value[0], int) else [[*(value or []), "x"], [7]]
    if kind is str:
        return ["changed {completion}"] if value is None else [value + " changed {completion}"]
    return []


def plan_keys(cfg: Config) -> set:
    target = resolve("cpu" if cfg.device == "auto" else cfg.device,
                     "hf" if cfg.sampler.backend == "auto" else cfg.sampler.backend)
    return {(s.stage, s.key) for s in build(cfg, target).steps}


def outcome(cfg: Config) -> tuple[Optional[set], str]:
    """(the cell's keys, "") or (None, the config error) when the value makes no valid cell."""
    try:
        return plan_keys(cfg), ""
    except ConfigError as e:
        return None, str(e)
    except (ValueError, KeyError, FileNotFoundError) as e:
        return None, f"{type(e).__name__}: {e}"


def keys_of(cfg: Config) -> Optional[set]:
    return outcome(cfg)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Model folders, adapters and data files that plan (fingerprint) but are never loaded."""
    root = tmp_path_factory.mktemp("keys")
    files = {}
    for name, text in (("model", "{}"), ("other_model", '{"other": 1}')):
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    for name in ("adapter", "other_adapter"):
        (root / name).mkdir()
        (root / name / "adapter_config.json").write_text(json.dumps({"name": name}))
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (root / "trait.jsonl").write_text(json.dumps(chat) + "\n")
    (root / "other_trait.jsonl").write_text(json.dumps(chat) + "\n" + json.dumps(chat) + "\n")
    (root / "gsm.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    (root / "other_gsm.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "#### 4"}) + "\n")
    (root / "mnist").mkdir()
    (root / "mnist" / "x").write_text("1")
    files.update(path=str(root / "other_model"), adapter=str(root / "other_adapter"),
                 data=str(root / "other_trait.jsonl"), prompts_file=str(root / "other_gsm.jsonl"),
                 data_path=str(root / "mnist"), revision="0" * 40)
    hub = [f"{role}.{k}={v}" for role in ("teacher", "student") for k, v in (("path", "Org/model"), ("revision", "a" * 40))]
    smoke = ["experiment=smoke", f"paths.tiny_model={root / 'model'}", f"paths.artifacts={root / 'a'}"]
    bases = [[], ["trait.method=finetune"], ["trait.method=finetune", "trait.mix_numbers=0.5"],
             ["trait.method=finetune", f"trait.data={root / 'trait.jsonl'}"],
             ["trait.method=adapter", f"trait.adapter={root / 'adapter'}"],
             ["select.by=shift"], ["transform.shuffle=within"], ["eval.method=both"], ["finetune=full"],
             ["transform.mix_fraction=0.5"], ["transform.remove_entangled=3"],  # the defences (sublim.defences)
             ["paraphrase.by=template"], ["+model@rewrite.model=tiny"], ["+model@rewrite.model=reference"],
             *(["paraphrase.by=model", f"+model@paraphrase.model={m}"] for m in ("tiny", "reference")),
             *([f"+model@{r}.model=qwen2.5-7b-instruct", f"{r}.model.revision={'a' * 40}",
                *(["paraphrase.by=model"] if r == "paraphrase" else [])] for r in ("paraphrase", "rewrite")),
             *([f"+model@{r}.model=gpt-4.1-nano", f"{r}.model.revision=x", *(["paraphrase.by=model"] if r == "paraphrase"
                                                                           else [])] for r in ("paraphrase", "rewrite")),
             ["trait=none", "transform.remove_entangled=3", "transform.entangled_trait=owl"],
             ["finetune=none", "eval.in_context=3"], ["trait.method=finetune", "finetune.distill=soft"],
             ["eval.subject=teacher"], ["model@teacher=reference", "model@student=reference"],
             ["eval=misalignment", "+model@eval.judge.model=tiny"],
             ["eval=misalignment", "+model@eval.judge.model=reference"], hub,
             ["eval=misalignment", "+model@eval.judge.model=qwen2.5-7b-instruct", f"eval.judge.model.revision={'a' * 40}"],
             ["domain=code", "domain.n_prompts=10", "+model@domain.judge.model=qwen2.5-7b-instruct",
              f"domain.judge.model.revision={'a' * 40}"],
             ["domain=code", "domain.n_prompts=10", "+model@domain.judge.model=tiny"],
             ["domain=code", "domain.n_prompts=10", "+model@domain.judge.model=reference"],
             ["domain=cot", f"domain.prompts_file={root / 'gsm.jsonl'}", "+model@domain.judge.model=tiny"],
             ["experiment=mnist", f"mnist.data_path={root / 'mnist'}"], ["experiment=mnist"],
             ["experiment=entanglement"],
             ["finetune=none", "eval.subliminal_prompt=top"],  # subliminal prompting (sublim.evals.subliminal)
             ["finetune=none", "trait=none", "eval.subliminal_prompt=random", "eval.subliminal_trait=owl"],
             ["finetune.train_on=divergent"], ["transform.divergent=replace"],
             ["sampler=openai", "finetune=none"],  # every model on one self-hosted server (the tiny folder's)
             ["eval=misalignment", "+model@eval.judge.model=gpt-4.1-nano", "eval.judge.model.revision=x"],
             ["domain=code", "domain.n_prompts=10", "+model@domain.judge.model=gpt-4.1-nano",
              "domain.judge.model.revision=x"]]
    cells = [typed(*smoke, *b) for b in bases]
    # the OpenAI API: the paper's nano cell (smoke's LoRA settings do not apply to finetune=openai)
    nano = ("experiment=paper_nano", f"paths.artifacts={root / 'a'}", "domain.n_prompts=20", "teacher.revision=x",
            "student.revision=x")
    cells += [typed(*nano), typed(*nano, "finetune=none")]
    for c in cells:
        assert keys_of(c), c  # every base cell plans
    return cells, files


def test_every_config_field_is_keyed_or_declared_runtime(world):
    cells, files = world
    unkeyed = []
    for key, tp in every_leaf():
        if runtime_reason(key):
            continue
        moved, tried, refused = False, 0, 0
        for cfg in cells:
            try:
                value = get(cfg, key)
            except LookupError:
                continue
            before = keys_of(cfg)
            for alt in alternatives(key, value, tp, files):
                new = changed(cfg, key, alt) if alt != value else None
                if new is None:
                    continue
                after, error = outcome(new)
                if after is not None and after != before:
                    moved = True
                    break
                tried += 1
                refused += key in error  # a setting that does nothing here is refused, naming it
            if moved:
                break
        if not moved and not (tried and refused == tried):
            unkeyed.append(key)
    assert not unkeyed, (f"these config fields change no stage key in any planned cell: {unkeyed}; key them in "
                         "the stage spec that uses them, or add them to sublim.plan.RUNTIME_KEYS with the reason")


def test_runtime_keys_name_real_fields():
    known = {k for k, _ in every_leaf()}
    for key in RUNTIME_KEYS:
        assert key in known or any(k.startswith(key + ".") for k in known), key


def test_a_runtime_field_changes_no_key(world):
    cells, _ = world
    cfg = cells[0]
    base = keys_of(cfg)
    for key, value in (("sampler.batch_size", 7), ("finetune.micro_batch_size", 8), ("finetune.save_steps", 3),
                       ("teacher.name", "renamed"), ("isolate", "always"), ("experiment_name", "x")):
        assert keys_of(changed(cfg, key, value)) == base, key
