"""The config tree a newcomer reads: every YAML composes in a cell where it applies, each option of a
group shows only its own fields, every schema field is documented, and old spellings still work."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from config_util import CONF, typed
from sublim.aliases import rewrite
from sublim.config import OPTIONS, SCHEMAS, Config, option_schemas

SUBLIM = str(Path(sys.executable).parent / "sublim")
GSM = Path(__file__).parent / "data" / "gsm8k_tiny.jsonl"

# What a YAML of each group needs around it to make a cell (the rest is the paper's defaults).
CONTEXT = {
    "domain/cot": [f"domain.prompts_file={GSM}"],
    "eval/misalignment": ["+model@eval.judge.model=tiny"],
    "trait/misaligned": ["eval=misalignment", "+model@eval.judge.model=tiny"],
    "trait/cherry": ["eval=tree_preference"], "trait/maple": ["eval=tree_preference"],
    "trait/oak": ["eval=tree_preference"], "trait/sequoia": ["eval=tree_preference"],
    "trait/willow": ["eval=tree_preference"],
    "experiment/cot": [f"domain.prompts_file={GSM}"],
    "experiment/misalignment": ["trait.data=x.jsonl", "+model@eval.judge.model=tiny"],
}


def overrides_for(path: Path) -> list[str]:
    """The command line that picks this YAML (a model both as teacher and as student)."""
    group, option = path.parent.relative_to(CONF).as_posix(), path.stem
    if group == "model":
        return [f"model@teacher={option}", f"model@student={option}"]
    if group == "arm":
        return ["experiment=demo", f"arm={option}"]
    if group.startswith("hydra/"):
        return [f"hydra/launcher={option}"]
    return [f"{group}={option}", *CONTEXT.get(f"{group}/{option}", [])]


YAMLS = sorted(p for p in CONF.rglob("*.yaml") if p.name != "config.yaml")


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_yaml_composes_into_a_typed_cell(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path}: start with a comment saying what it is and how to use it"
    cfg = typed(*overrides_for(path))
    assert isinstance(cfg, Config)
    group = path.parent.name
    if group in OPTIONS:  # the option's own schema, chosen by its picking field
        field_name, options = OPTIONS[group]
        assert type(getattr(cfg, group)) is options[getattr(getattr(cfg, group), field_name)]


def test_every_yaml_is_enumerated():
    groups = {p.parent.relative_to(CONF).as_posix() for p in YAMLS}
    assert {"domain", "eval", "finetune", "model", "trait", "experiment", "sweep", "arm", "sampler",
            "logger", "paths", "hydra/launcher"} <= groups


def _documented_fields(cls: type) -> dict[str, bool]:
    """field name -> whether its declaration carries a comment (same line or the line above) or a hint."""
    hints = {f.name for f in dataclasses.fields(cls) if f.metadata.get("hint")}
    try:
        lines, _ = inspect.getsourcelines(cls)
    except OSError:  # made by make_dataclass (ReferenceConfig): its fields' hints are all it has
        return {f.name: f.name in hints for f in dataclasses.fields(cls)}
    out = {}
    for node in ast.parse(inspect.getsource(cls)).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            i = node.lineno - 1
            out[node.target.id] = "#" in lines[i] or (i > 0 and lines[i - 1].strip().startswith("#"))
    return {name: ok or name in hints for name, ok in out.items()}


def _schemas() -> set[type]:
    """Every dataclass of sublim.config a cell's config can hold, through field types."""
    seen, todo = set(), [Config, *SCHEMAS.values(), *(s for _, s in option_schemas())]
    while todo:
        cls = todo.pop()
        if cls in seen or cls.__module__ != "sublim.config":
            continue
        seen.add(cls)
        for tp in typing.get_type_hints(cls).values():
            todo += [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
    return seen


def _documented(cls: type, name: str) -> bool:
    """A field is documented where it is declared, in a parent that declares it (an option's picking
    field), or, for a sub-config, by its class's docstring."""
    tp = typing.get_type_hints(cls)[name]
    if any(dataclasses.is_dataclass(a) and a.__doc__ and "(" not in a.__doc__[:len(a.__name__) + 1]
           for a in (tp, *typing.get_args(tp))):
        return True
    return any(_documented_fields(c).get(name) for c in cls.__mro__ if dataclasses.is_dataclass(c))


def test_every_field_of_every_schema_is_documented():
    undocumented = [f"{cls.__name__}.{f.name}" for cls in _schemas() for f in dataclasses.fields(cls)
                    if not _documented(cls, f.name)]
    assert not undocumented, f"say what these fields are (a comment or num(..., hint)): {undocumented}"


def test_cfg_job_of_the_default_cell_shows_only_what_applies(tmp_path):
    r = subprocess.run([SUBLIM, "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = yaml.safe_load(r.stdout)
    assert "judge" not in r.stdout and "prompts_file" not in r.stdout  # no code/CoT fields, no judge anywhere
    assert {"seed_count_min", "answer_count"} <= set(job["domain"])  # the numbers domain's own
    assert "lora_r" in job["finetune"] and "frozen" not in job["finetune"]  # LoRA's, not full's
    assert "candidates" in job["eval"] and "alignment_threshold" not in job["eval"]  # preference, not misalignment


def test_each_option_shows_its_own_fields():
    code = typed("domain=code")
    assert hasattr(code.domain, "prompts_file") and hasattr(code.domain, "judge")
    assert not hasattr(code.domain, "seed_count_min")
    full = typed("finetune=full")
    assert hasattr(full.finetune, "frozen") and not hasattr(full.finetune, "lora_r")
    mis = typed("eval=misalignment", "+model@eval.judge.model=tiny")
    assert hasattr(mis.eval, "judge") and not hasattr(mis.eval, "candidates")


@pytest.mark.parametrize("overrides,key", [
    (["finetune=full", "finetune.lora_r=4"], "finetune.lora_r"),
    (["eval=misalignment", "eval.in_context=3"], "eval.in_context"),
    (["domain.judge.model=x"], "domain.judge"),  # numbers has no judge
    (["domain=code", "domain.answer_count=5"], "domain.answer_count"),
])
def test_a_field_of_another_option_fails_naming_the_key(overrides, key):
    with pytest.raises(ConfigCompositionException, match=key.replace(".", r"\.")):
        typed(*overrides)


# ------------------------------------------------------------------------------------------ aliases
@pytest.mark.parametrize("old,new", [
    ("teacher=qwen2.5-7b-instruct", "model@teacher=qwen2.5-7b-instruct"),
    ("student=tiny", "model@student=tiny"),
    ("+teacher@eval.judge.model=qwen2.5-7b-instruct", "+model@eval.judge.model=qwen2.5-7b-instruct"),
    ("+teacher@filter.judge.model=tiny", "+model@domain.judge.model=tiny"),
    ("filter.judge.threshold=30", "domain.judge.threshold=30"),
    ("filter.shuffle=within", "transform.shuffle=within"),
    ("eval=tree", "eval=tree_preference"),
])
def test_old_spellings_are_rewritten_with_a_note(old, new):
    now, note = rewrite(old)
    assert now == new and note and old in note and new in note and "\n" not in note
    assert rewrite(new) == (new, None)  # today's spelling passes untouched


def test_the_entrypoint_takes_an_old_spelling_and_says_so(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = ["experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={tmp_path / 'a'}", "dry_run=true",
            "logger=none"]
    old = subprocess.run([SUBLIM, *args, "teacher=tiny", "filter.shuffle=within"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    new = subprocess.run([SUBLIM, *args, "model@teacher=tiny", "transform.shuffle=within"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert old.returncode == 0 and new.returncode == 0, old.stderr + new.stderr
    assert "`teacher=tiny` is now spelt `model@teacher=tiny`" in old.stderr
    assert "transform" in old.stdout and old.stdout == new.stdout  # the same plan, the same keys
