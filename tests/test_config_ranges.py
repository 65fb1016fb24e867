"""Every number in the config has a range (or says "any"), declared with its field in sublim.config
and checked before any stage runs, the error naming the key, the value and the range."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config_util import CONF, plan_cell, typed
from sublim.checks import check_ranges
from sublim.config import Config, option_schemas
from sublim.ranges import num, parse_range, range_problem
from sublim.errors import ConfigError
from sublim.mnist.spec import MnistSpec

NUMBER = (int, float)


def _inner(tp):
    """The type under Optional[...] (or the type itself)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def numeric_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """(dotted key, field, type) of every int/float field (Optional or a list of them included) of a
    schema dataclass and of every dataclass reachable from it through its field types."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _inner(hints[f.name])
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, key + ".")
        elif tp in NUMBER or (typing.get_origin(tp) is list and typing.get_args(tp)[0] in NUMBER):
            out.append((key, f, tp))
    return out


def all_numeric_fields() -> list[tuple[str, dataclasses.Field, type]]:
    """numeric_fields of the root schema and of every option's schema (eval=misalignment's judge, ...)."""
    out = numeric_fields(Config)
    for group, schema in option_schemas():
        out += [f for f in numeric_fields(schema, group + ".") if f[0] not in {k for k, _, _ in out}]
    return out


def unranged(cls: type) -> list[str]:
    return [key for key, f, _ in numeric_fields(cls) if "range" not in f.metadata]


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_every_numeric_field_of_the_schema_declares_a_range_or_any():
    keys = [key for key, _, _ in all_numeric_fields()]
    # the walk reaches the sub-configs, the Optional ones (domain.judge.model.reference) included
    for key in ("finetune.epochs", "trait.train.lr", "sampler.vllm.max_lora_rank", "teacher.reference.lr",
                "domain.judge.threshold", "domain.judge.model.reference.steps", "eval.judge.temperature",
                "mnist.noise_pool", "seed", "filter.banned_numbers"):
        assert key in keys
    assert [key for key, f, _ in all_numeric_fields() if "range" not in f.metadata] == [], ("declare a range for these numeric fields: num(default, '>= 0', hint), "
                                    "or num(default, 'any', hint) (sublim.config's docstring)")


@dataclass
class _Sub:
    ok: int = num(1, ">= 1")
    new: typing.Optional[float] = None  # a new number without a range


@dataclass
class _Root:
    sub: typing.Optional[_Sub] = None
    flag: bool = True
    names: list[str] = field(default_factory=list)
    count: int = 3  # another
    anything: float = num(0.0, "any")


def test_a_new_numeric_field_without_a_range_is_caught():
    assert unranged(_Root) == ["sub.new", "count"]


@pytest.mark.parametrize("key,f,tp", all_numeric_fields(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_range_parses_and_accepts_the_fields_default(key, f, tp):
    parse_range(f.metadata["range"])
    default = default_of(f)
    if default is not None:
        assert range_problem(key, default, f.metadata) is None


def test_the_composed_presets_are_within_their_ranges():
    check_ranges(typed())  # the paper defaults
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        check_ranges(typed(f"experiment={path.stem}"))
    for option in ("domain=code", "domain=cot", "eval=tree_preference", "eval=misalignment", "finetune=lora_r2",
                   "model@teacher=reference"):
        check_ranges(typed(option))


@pytest.mark.parametrize("spec,inside,outside", [
    ("> 0", [1e-9, 3], [0, -1, math.inf, math.nan]),
    (">= 1", [1, 10**9], [0, 0.5]),
    (">= -1", [-1, 0, 7], [-2]),
    ("(0, 1)", [0.5], [0, 1, 1.5]),
    ("[0, 1)", [0, 0.99], [1, -0.1]),
    ("(0, 1]", [1], [0]),
    ("[0, 100]", [0, 100], [100.5]),
    ("[0, 2**32)", [0, 2**32 - 1], [2**32, -1]),
    ("any", [-1e9, 0, math.inf], []),
])
def test_range_specs(spec, inside, outside):
    r = parse_range(spec)
    assert all(x in r for x in inside) and not any(x in r for x in outside)


@pytest.mark.parametrize("spec", ["0..1", "> x", "[1, 0]", "(0 1)", ""])
def test_a_malformed_range_fails_where_it_is_declared(spec):
    with pytest.raises(ValueError, match="range spec"):
        num(0, spec)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model folder: planning fingerprints it, nothing loads it."""
    d = tmp_path_factory.mktemp("model")
    (d / "config.json").write_text("{}")
    return d


def smoke(model: Path, root: Path, *overrides: str) -> list[str]:
    return ["experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={root / 'artifacts'}", *overrides]


@pytest.mark.parametrize("override,message", [
    ("finetune.epochs=0", "finetune.epochs=0: must be > 0 (epochs, fractions allowed)"),
    ("eval.n_samples=0", "eval.n_samples=0: must be >= 1"),
    ("eval.confidence=1.5", "eval.confidence=1.5: must be in (0, 1)"),
    ("seed=-1", "seed=-1: must be in [0, 2**32)"),
    ("finetune.lr=-1", "finetune.lr=-1: must be > 0"),
    ("finetune.batch_size=0", "finetune.batch_size=0: must be >= 1"),
    ("finetune.lora_r=0", "finetune.lora_r=0: must be >= 1"),
    ("eval.n_questions=-3", "eval.n_questions=-3: must be >= 1 (the first N questions; null: all)"),
])
def test_a_number_out_of_range_fails_planning_naming_key_value_and_range(model, tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        plan_cell(typed(*smoke(model, tmp_path, override)))
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("overrides,message", [
    (["seed=4294967296"], "seed=4294967296: must be in [0, 2**32)"),
    (["data_seed=-2"], "data_seed=-2: must be in"),
    (["finetune.lr=inf"], "finetune.lr=inf: must be finite and > 0"),
    (["sampler.temperature=nan"], "sampler.temperature=nan: must be finite and in [0, 2]"),
    (["trait.train.micro_batch_size=0"], "trait.train.micro_batch_size=0: must be >= 1"),
    (["model@teacher=reference", "teacher.reference.lr=0"], "teacher.reference.lr=0: must be > 0"),
    (["domain=code", "+model@domain.judge.model=reference", "domain.judge.model.reference.steps=0"],
     "domain.judge.model.reference.steps=0: must be >= 1"),
    (["domain=code", "+model@domain.judge.model=tiny", "domain.judge.threshold=101"],
     "domain.judge.threshold=101: must be in [0, 100]"),
    (["eval=misalignment", "+model@eval.judge.model=tiny", "eval.judge.temperature=2.5"],
     "eval.judge.temperature=2.5: must be in [0, 2]"),
    (["eval=misalignment", "+model@eval.judge.model=tiny", "eval.alignment_threshold=-1"],
     "eval.alignment_threshold=-1: must be in [0, 100]"),
    (["filter.banned_numbers=[3,-1]"], "filter.banned_numbers=[3, -1]: each must be >= 0"),
    (["sampler.top_k=-1"], "sampler.top_k=-1: must be >= 0"),
    (["finetune.lora_dropout=1"], "finetune.lora_dropout=1: must be in [0, 1)"),
    (["experiment=mnist", "mnist.test_fraction=1"], "mnist.test_fraction=1: must be in (0, 1)"),
    (["experiment=mnist", "mnist.noise_pool=-2"], "mnist.noise_pool=-2: must be >= -1"),
])
def test_set_sub_configs_and_other_numbers_are_walked(model, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        plan_cell(typed(*smoke(model, tmp_path, *overrides)))
    assert str(e.value).startswith(message)


def test_null_is_allowed_where_the_type_is_optional(model, tmp_path):
    cfg = typed(*smoke(model, tmp_path, "eval.n_questions=null", "filter.n_keep=null", "domain.max_new_tokens=null"))
    check_ranges(cfg)


def test_mnist_spec_validates_its_own_ranges():
    with pytest.raises(ValueError, match=r"MnistSpec.n_seeds=0: must be >= 1"):
        dataclasses.replace(MnistSpec(), n_seeds=0).validate()
    with pytest.raises(ValueError, match=r"MnistSpec.student_lr=0: must be > 0"):
        dataclasses.replace(MnistSpec(), student_lr=0.0).validate()
    MnistSpec().validate()


def test_the_entrypoint_prints_one_line_naming_the_key(model, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "sublim.cli", *smoke(model, tmp_path, "dry_run=true", "finetune.epochs=0"),
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == "config error: finetune.epochs=0: must be > 0 (epochs, fractions allowed)"
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "artifacts").exists()  # no stage ran
