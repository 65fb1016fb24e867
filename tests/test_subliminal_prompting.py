"""Subliminal prompting as an eval arm (eval.subliminal_prompt, issue #21 item 2): the eval's system
prompt loves exactly the entanglement stage's top k (random: its control draw), ordinary evals keep
their keys, bad settings fail naming the key, and the demo's two arms run on the tiny reference
model through the real entrypoint, the report pairing top (treatment) with random (control)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config_util import plan_cell, typed
from sublim import entanglement as E
from sublim.errors import ConfigError
from sublim.evals import preference, subliminal
from sublim.spec import ModelRef, Runtime, to_dict
from sublim.stages import spec_from_dict

SUBLIM = str(Path(sys.executable).with_name("sublim"))
# the fields a preference eval's spec had before the option: their set is its key's shape
PREFERENCE_FIELDS = {"subject", "system_prompt", "questions", "candidates", "confidence", "method", "n_samples",
                     "sampling", "seed", "forms", "in_context", "backend", "device", "libraries", "kind"}


def steps(tmp_path, *overrides):
    return {s.stage: s for s in plan_cell(typed("experiment=demo", f"paths.artifacts={tmp_path}", *overrides)).steps}


def test_both_arms_plan_the_entanglement_stage_on_the_student_and_refer_to_it(tmp_path):
    top = steps(tmp_path, "arm=subliminal_top")
    random = steps(tmp_path, "arm=subliminal_random")
    assert list(top) == ["reference", "entanglement", "eval"]
    ent = top["entanglement"]
    assert ent.key == random["entanglement"].key  # one analysis serves both arms
    assert ent.spec.trait == "owl" and ent.spec.model == top["eval"].spec.subject  # the student's own model
    for s, which in ((top["eval"].spec, "top"), (random["eval"].spec, "random")):
        assert isinstance(s, preference.SubliminalSpec) and s.system_prompt is None
        assert s.subliminal == subliminal.SubliminalPrompt(f"entanglement:{ent.key}/entanglement.json", which, 10, 0)
        assert spec_from_dict("eval", to_dict(s)) == s  # an isolated stage process reads it back
    assert top["eval"].key != random["eval"].key
    # the arms size the stage as experiment=entanglement, whose seed-0 model is the demo's: one analysis for both
    analysis = plan_cell(typed("experiment=entanglement", f"paths.artifacts={tmp_path}")).steps[-1]
    assert ent.key == analysis.key


def test_ordinary_evals_keep_their_spec_and_key(tmp_path):
    base = steps(tmp_path, "arm=base")["eval"]
    assert type(base.spec) is preference.PreferenceSpec and set(to_dict(base.spec)) == PREFERENCE_FIELDS
    assert spec_from_dict("eval", to_dict(base.spec)) == base.spec
    # the option's fields at their defaults change nothing: the same key as before they existed
    assert steps(tmp_path, "arm=base", "eval.subliminal_prompt=none")["eval"].key == base.key


@pytest.mark.parametrize("overrides, key", [
    (["arm=subliminal_top", "trait=none"], "eval.subliminal_trait"),
    (["arm=subliminal_top", "eval.subliminal_trait=dog"], "eval.subliminal_trait"),
    (["arm=subliminal_top", "finetune=lora"], "finetune"),
    (["arm=subliminal_top", "eval.subject=teacher"], "eval.subject"),
    (["arm=subliminal_top", "eval.subliminal_prompt=bottom"], "eval.subliminal_prompt"),
    (["arm=subliminal_top", "eval.subliminal_k=600"], "eval.subliminal_k"),
    (["arm=base", "eval.subliminal_k=5"], "eval.subliminal_k"),
    (["arm=base", "eval.subliminal_trait=owl"], "eval.subliminal_trait"),
])
def test_bad_settings_fail_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        steps(tmp_path, *overrides)


def test_a_control_cell_names_whose_numbers(tmp_path):
    s = steps(tmp_path, "arm=subliminal_random", "trait=none", "eval.subliminal_trait=owl")
    assert s["entanglement"].key == steps(tmp_path, "arm=subliminal_random")["entanglement"].key


# -- the prompt the eval runs under ----------------------------------------------------------------
def entanglement_json(path: Path, numbers_max: int = 49, top_k: int = 4, seed: int = 3) -> dict:
    """An entanglement.json as the stage writes it: rows by rank, `top` and the seeded `control`."""
    ranked = [7, 31, 2, 44, 18, 0, 9]
    order = ranked + [n for n in range(numbers_max + 1) if n not in ranked]
    rows = [{"number": n, "rank": i + 1} for i, n in enumerate(order)][::-1]  # the file's order is not the rank's
    top = order[:top_k]
    m = {"trait": "owl", "numbers_max": numbers_max, "top": top,
         "control": E.random_numbers(top_k, seed, numbers_max, exclude=top), "numbers": rows}
    path.write_text(json.dumps(m))
    return m


class Recorder:
    """A sampler that records the chats it scores (the exact eval)."""

    def __init__(self):
        self.chats = []

    def score(self, chats, answers, batch_size, desc=""):
        self.chats += chats
        return [-2.0] * len(chats)

    def close(self):
        pass


@pytest.mark.parametrize("which", ["top", "random"])
def test_the_eval_runs_under_a_prompt_loving_exactly_those_numbers(tmp_path, monkeypatch, which):
    m = entanglement_json(tmp_path / "entanglement.json")
    ref = "entanglement:k/entanglement.json"
    rec = Recorder()
    monkeypatch.setattr(preference, "sampler_for", lambda *a, **k: rec)
    spec = preference.SubliminalSpec(
        ModelRef("sha256:m"), None, ("Favourite animal?", "One animal?"), ("owl", "dog"), 0.95, "logprob", None, None,
        None, ("{name}",), None, "hf", "cpu", {}, subliminal=subliminal.SubliminalPrompt(ref, which, 4, 3))
    work = tmp_path / "work"
    work.mkdir()
    preference.run(spec, work, {ref: str(tmp_path / "entanglement.json")}, Runtime())
    loved = m["top"] if which == "top" else m["control"]  # k = the stage's top_k: its own control draw
    assert loved == ([7, 31, 2, 44] if which == "top" else m["control"]) and not set(m["control"]) & set(m["top"])
    assert {c.system for c in rec.chats} == {E.subliminal_prompt(loved)}
    out = json.loads((work / "metrics.json").read_text())
    assert out["subliminal"]["loved"] == loved and out["subliminal"]["prompt"] == E.subliminal_prompt(loved)
    assert out["subliminal"]["top"] == m["top"] and out["subliminal"]["trait"] == "owl"
    assert out["rates"]["owl"]["mean"] > 0  # the eval itself ran as ever
    # another k reads the ranking, not the stage's top_k
    two = subliminal.numbers(dataclasses.replace(spec.subliminal, k=2), m)
    assert two[1] == [7, 31] and (two[0] == [7, 31] if which == "top" else two[0] == E.random_numbers(2, 3, 49, [7, 31]))


# -- the demo's arms through the entrypoint --------------------------------------------------------
SMALL = ["seed=0,1", "student.reference.steps=120", "student.reference.corpus_size=3000", "eval.n_samples=2",
         "eval.n_questions=3", "entanglement.numbers_max=99", "entanglement.n_task_prompts=1",
         "entanglement.n_questions=1", "entanglement.n_others=2", "entanglement.top_k=5", "eval.subliminal_k=5",
         "logger=none"]


def test_the_arm_grid_runs_on_the_tiny_reference_model_and_the_report_pairs_top_with_random(tmp_path):
    from sublim.report.collect import collect
    from sublim.report.summarise import summary

    args = [SUBLIM, "--multirun", "experiment=demo", "arm=subliminal_top,subliminal_random",
            f"paths.artifacts={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 'grid'}", *SMALL]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "grid").rglob("metrics.json") if ".hydra" not in str(p))
    assert len(jobs) == 4
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        s, cell = m["subliminal"], m["cell"]
        ent = json.loads((tmp_path / "a" / "entanglement" / m["keys"]["entanglement"] / "entanglement.json").read_text())
        loved = ent["top"] if s["numbers"] == "top" else ent["control"]  # k = entanglement.top_k
        assert s["loved"] == loved and s["prompt"] == E.subliminal_prompt(loved) and len(loved) == 5
        assert cell["finetune"] == "subliminal_owl5" and cell["teacher"] == "-"
        assert (cell["condition"], cell["trait"], m["target"]) == (
            ("treatment", "owl", "owl") if s["numbers"] == "top" else ("control", "none", None))
        assert "subliminal prompt: loves" in (job / "cli.log").read_text()  # what the job printed
    col = collect([tmp_path / "grid"])
    assert not [p for p in col.problems if p.kind != "dry run"], [p.line() for p in col.problems]
    row = summary(col, ["owl"]).query("condition == 'treatment'")
    assert len(row) == 1 and row["baseline"].iloc[0] == "control" and row["rise_by"].iloc[0] == "paired"
    assert row["n_seeds"].iloc[0] == 2 and row["finetune"].iloc[0] == "subliminal_owl5"
