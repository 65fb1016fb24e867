"""A stage that is one module registered from outside sublim runs through the engine like the
built-in ones: planned (hit/miss), executed, cached, resumed after a kill, and isolated in its own
process from the step on disk."""
from __future__ import annotations

import importlib
import os
import sys

import pytest

from sublim.cache import Store
from sublim.pipeline import describe, execute
from sublim.plan import Plan, Step
from sublim.spec import Runtime
from sublim.stages import register
from sublim.target import Target

STAGE = '''
import os
from dataclasses import dataclass

VERSION = 1


@dataclass(frozen=True)
class Spec:
    n: int
    source: str  # a content ref


def run(spec, work, inputs, runtime):
    values = [int(x) for x in open(inputs[spec.source]).read().split()]
    out = work / "squares.txt"
    done = out.read_text().split() if out.exists() else []
    with open(out, "a") as f:
        for i in range(len(done), spec.n):
            if os.environ.get("SQUARE_DIE_AT") == str(i):
                raise KeyboardInterrupt  # killed mid-way
            f.write(f"{values[i] ** 2}\\n")
            f.flush()
    (work / "pid").write_text(str(os.getpid()))
'''


@pytest.fixture
def square(tmp_path, monkeypatch):
    (tmp_path / "square_stage.py").write_text(STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    module = importlib.import_module("square_stage")
    register("square", module)
    (tmp_path / "numbers.txt").write_text("1 2 3 4 5 6")
    yield module
    sys.modules.pop("square_stage", None)


def plan_of(module, n, tmp_path):
    source = {"sha256:numbers": str(tmp_path / "numbers.txt")}
    step = Step("square", module.Spec(n, "sha256:numbers"), source, Runtime(artifacts=str(tmp_path / "a")))
    return Plan([step], Target("cpu", "hf", "test"), [])


def test_plan_execute_cache_and_resume(square, tmp_path, monkeypatch):
    store = Store(tmp_path / "a")
    plan = plan_of(square, 5, tmp_path)
    assert "square" in describe(plan, store) and "MISS" in describe(plan, store)
    monkeypatch.setenv("SQUARE_DIE_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        execute(plan, store)
    assert not store.exists("square", plan.steps[0].key)
    assert (store.work_dir("square", plan.steps[0].key) / "squares.txt").read_text().split() == ["1", "4", "9"]
    monkeypatch.delenv("SQUARE_DIE_AT")
    out = execute(plan, store)["square"]
    assert out.joinpath("squares.txt").read_text().split() == ["1", "4", "9", "16", "25"]  # resumed, no repeats
    assert "hit" in describe(plan, store)
    assert [e["event"] for e in store.events()] == ["start", "interrupted", "start", "done"]
    execute(plan, store)
    assert store.events()[-1]["event"] == "hit"
    assert plan_of(square, 4, tmp_path).steps[0].key != plan.steps[0].key


def test_an_isolated_stage_runs_from_its_step_on_disk(square, tmp_path):
    store = Store(tmp_path / "a")
    plan = plan_of(square, 6, tmp_path)
    out = execute(plan, store, isolate=True)["square"]
    assert out.joinpath("squares.txt").read_text().split() == ["1", "4", "9", "16", "25", "36"]
    assert int(out.joinpath("pid").read_text()) != os.getpid()
