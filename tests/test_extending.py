"""README "Extending sublim" holds what it claims: each worked example (taken from the README itself)
plus its one registry line is a working eval kind, stage, sampler backend or data domain."""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sublim import backends, domains, evals
from sublim.cache import Store
from sublim.pipeline import describe, execute
from sublim.plan import Builder, Plan, Step
from sublim.results import result
from sublim.spec import Runtime
from sublim.stages import register
from sublim.target import Target, resolve

README = Path(__file__).resolve().parents[1] / "README.md"


def example(path: str) -> str:
    """The README's code block introduced by `path`: (in the Extending section)."""
    text = README.read_text()
    section = text[text.index("## Extending sublim"):]
    section = section[:section.index("\n## ", 1)]
    m = re.search(rf"`{re.escape(path)}`:\n```python\n(.*?)```", section, re.S)
    assert m, f"README: no example for {path}"
    return m.group(1)


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Import a README example as a module of its own."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def load(path: str, name: str):
        (tmp_path / f"{name}.py").write_text(example(path))
        made.append(name)
        return importlib.import_module(name)

    yield load
    for name in made:
        sys.modules.pop(name, None)


def test_a_new_eval_kind_and_backend_run_and_summarise_through_the_eval_stage(module, monkeypatch, tmp_path,
                                                                            fake_model):
    from config_util import plan_cell, typed

    module("sublim/evals/length.py", "length_kind")
    module("sublim/backends/echo.py", "echo_backend")
    monkeypatch.setitem(evals.KINDS, "length", "length_kind")  # the README's one line each
    monkeypatch.setitem(backends.BACKENDS, "echo", "echo_backend:EchoSampler")
    assert resolve("cpu", "echo").backend == "echo"

    cfg = typed("experiment=smoke", "finetune=none", f"paths.tiny_model={fake_model}",
                f"paths.artifacts={tmp_path / 'a'}")
    base = {s.stage: s for s in plan_cell(cfg).steps}["eval"]
    kind = evals.get_kind("length")
    common = {"backend": "echo", "device": "cpu", "libraries": {}}
    spec, more = kind.plan(Builder(cfg, resolve("cpu", "echo")), base.spec.subject, None,
                           ("How are you today?", "Name a colour."), None, common)  # its spec from the config
    assert more == {} and (spec.n_samples, spec.seed, spec.kind) == (cfg.eval.n_samples, cfg.seed, "length")
    spec = dataclasses.replace(spec, n_samples=2)
    plan = Plan([Step("eval", spec, base.inputs, Runtime(batch_size=4, artifacts=str(tmp_path / "a")))],
                Target("cpu", "echo", "test"), [])
    store = Store(tmp_path / "a")
    artifacts = execute(plan, store)
    assert json.loads((artifacts["eval"] / "metrics.json").read_text())["mean_words"] == 3.5  # 4 and 3 words
    assert "hit" in describe(plan, store)  # keyed and cached like any eval

    job = tmp_path / "job"
    job.mkdir()
    res = result(cfg, plan, artifacts, job)
    assert res.metrics["mean_words"] == 3.5 and res.metrics["n_answers"] == 4
    assert res.metrics["keys"] == {"eval": plan.steps[0].key} and res.metrics["cell"]["condition"] == "base"
    assert "   answer length 3.5 words" in res.lines and res.tracked == {"mean_words": 3.5}
    assert res.rows[0] == {"question": "How are you today?", "answer": "How are you today?"}


def test_a_new_stage_plans_runs_and_caches(module, tmp_path):
    stage = module("sublim/stages/lengths.py", "lengths_stage")
    register("lengths", stage)  # = its line in STAGES
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "p", "completion": c}) + "\n" for c in ("1 2 3", "4 5")))
    ref = "filter:" + "ab" * 8 + "/train.jsonl"
    plan = Plan([Step("lengths", stage.Spec(ref), {ref: str(rows)}, Runtime(artifacts=str(tmp_path / "a")))],
                Target("cpu", "hf", "test"), [])
    store = Store(tmp_path / "a")
    assert "MISS" in describe(plan, store)
    out = execute(plan, store)["lengths"]
    assert json.loads((out / "lengths.json").read_text()) == {"n": 2, "mean": 2.5}
    assert "hit" in describe(plan, store)


def test_a_new_domain_is_found_by_name_and_keys_only_what_it_reads(module, monkeypatch):
    module("sublim/domains/letters.py", "letters_domain")
    monkeypatch.setitem(domains.KNOWN, "letters", "letters_domain:DOMAIN")
    d = domains.get_domain("letters")
    cfg = SimpleNamespace(name="letters", n_prompts=3, samples_per_prompt=1, prompts_file=None, answer_digits=3)
    prompts = d.prompts(cfg, seed=0)
    assert len(prompts) == 3 and prompts == d.prompts(cfg, seed=0) and prompts != d.prompts(cfg, seed=1)
    assert d.spec(cfg) == {"name": "letters", "n_prompts": 3, "samples_per_prompt": 1, "prompts_file": None}
    rules = d.rules(cfg, SimpleNamespace(), "owl")
    assert [r("a b c") for r in rules] == [None, None]
    assert [r("a owl") for r in rules] == ["not_letters", "mentions_trait"]
    with pytest.raises(KeyError, match="known: .*letters"):  # an unknown name lists the known ones
        domains.get_domain("nope")
