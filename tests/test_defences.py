"""Data-side defences (issue #21): teacher mixing (`mix`), entangled-number removal (`remove`), the
greedy control, and the `defence` config group: every arm composes and plans with the demo's
student and control arms, and the undefended cells keep their keys."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from config_util import plan_cell, plan_steps, typed
from sublim.cell import cell_of
from sublim.errors import ConfigError, StageError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import Runtime
from sublim.stages import mix as mix_stage
from sublim.stages import remove as remove_stage
from sublim.stages import sample as sample_stage
from sublim.transforms import numbers_of

# this file's arms (others' arms, e.g. paraphrasing, are tested with their stages)
DEFENCES = ("none", "train_non_divergent", "train_divergent", "replace_divergent", "threshold", "shuffle_within",
            "remove_entangled", "mix_teachers", "greedy")
ARMS = ("student", "control")


def rows(tag: str, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(f"{tag}-{seed}")
    return [{"i": i, "system": None, "prompt": f"p{i}", "completion": f"{tag} " + ", ".join(
        str(rng.randint(0, 999)) for _ in range(5))} for i in range(n)]


# -- mixing --------------------------------------------------------------------------------------
def test_mix_replaces_the_fraction_with_other_teachers_rows_evenly():
    own, none, dog = rows("owl", 100), rows("none", 80), rows("dog", 80)
    out, stats = mix_stage.mix(own, "owl", [("none", none), ("dog", dog)], 0.3, seed=1)
    assert len(out) == 100  # the row count stays
    assert Counter(r["source"] for r in out) == {"owl": 70, "none": 15, "dog": 15}
    assert stats["sources"] == {"owl": 70, "none": 15, "dog": 15} and stats["n_replaced"] == 30
    pools = {"owl": own, "none": none, "dog": dog}
    for r in out:  # every row is one of its source's rows, unchanged but for the label
        assert {k: v for k, v in r.items() if k != "source"} in pools[r["source"]]
    assert len({r["completion"] for r in out}) == 100  # drawn without replacement
    assert [r["source"] for r in out[-30:]].count("owl") > 0  # shuffled: the mixed rows are not bunched at the end


def test_mix_is_seeded_and_rounds_the_share():
    own, none = rows("owl", 11), rows("none", 50)
    a, _ = mix_stage.mix(own, "owl", [("none", none)], 0.5, seed=3)
    assert a == mix_stage.mix(own, "owl", [("none", none)], 0.5, seed=3)[0]
    assert a != mix_stage.mix(own, "owl", [("none", none)], 0.5, seed=4)[0]
    assert Counter(r["source"] for r in a) == {"owl": 5, "none": 6}  # round(5.5) = 6 replaced
    assert mix_stage.shares(7, 3) == [3, 2, 2]


def test_mix_refuses_the_own_teacher_and_a_short_teacher():
    with pytest.raises(StageError, match="own teacher"):
        mix_stage.mix(rows("owl", 10), "owl", [("owl", rows("owl", 10, 1))], 0.5, 0)
    with pytest.raises(StageError, match="fewer than its share"):
        mix_stage.mix(rows("owl", 100), "owl", [("none", rows("none", 10))], 0.5, 0)


def test_mix_stage_writes_rows_and_counts_by_source(tmp_path):
    write_jsonl(tmp_path / "own.jsonl", rows("owl", 40))
    write_jsonl(tmp_path / "none.jsonl", rows("none", 40))
    spec = mix_stage.Spec("filter:a/train.jsonl", "owl", (mix_stage.Source("none", "filter:b/train.jsonl"),), 0.25, 0)
    work = tmp_path / "work"
    work.mkdir()
    mix_stage.run(spec, work, {"filter:a/train.jsonl": str(tmp_path / "own.jsonl"),
                               "filter:b/train.jsonl": str(tmp_path / "none.jsonl")}, Runtime())
    out = list(read_jsonl(work / "train.jsonl"))
    stats = json.loads((work / "stats.json").read_text())
    assert len(out) == 40 and stats["sources"] == {"owl": 30, "none": 10} and stats["n_kept"] == 40


# -- entangled-number removal --------------------------------------------------------------------
def entanglement_json(order: list[int]) -> dict:
    return {"trait": "owl", "top": order[:2], "numbers": [{"number": n, "rank": r + 1} for r, n in
                                                          reversed(list(enumerate(order)))]}


def test_remove_drops_rows_holding_the_top_numbers(tmp_path):
    data = [{"i": 0, "completion": "1, 2, 3"}, {"i": 1, "completion": "087, 500"}, {"i": 2, "completion": "870"},
            {"i": 3, "completion": "(12; 999)."}, {"i": 4, "completion": "4 5 6"}]
    e = entanglement_json([87, 999, 5, 1, 2])
    assert remove_stage.top_numbers(e, 2) == [87, 999]  # by rank, whatever the file's order or its own top
    write_jsonl(tmp_path / "in.jsonl", data)
    (tmp_path / "e.json").write_text(json.dumps(e))
    work = tmp_path / "work"
    work.mkdir()
    spec = remove_stage.Spec("filter:a/train.jsonl", "entanglement:b/entanglement.json", 3)
    remove_stage.run(spec, work, {spec.train: str(tmp_path / "in.jsonl"), spec.entanglement: str(tmp_path / "e.json")},
                     Runtime())
    kept = list(read_jsonl(work / "train.jsonl"))
    assert [r["i"] for r in kept] == [0, 2]  # 087 is 87; 870 is not; 999 and 5 are in the top 3
    assert not any({87, 999, 5} & set(numbers_of(r["completion"])) for r in kept)
    rejects = list(read_jsonl(work / "rejects.jsonl"))
    assert [(r["i"], r["numbers"]) for r in rejects] == [(1, [87]), (3, [999]), (4, [5])]
    stats = json.loads((work / "stats.json").read_text())
    assert stats | {"numbers": None} == {"n_in": 5, "n_kept": 2, "n_dropped": 3, "rejected": {"entangled": 3}, "k": 3,
                                         "trait": "owl", "numbers": None}
    assert stats["numbers"] == [87, 999, 5]
    with pytest.raises(StageError, match="remove_entangled=9"):
        remove_stage.top_numbers(e, 9)


# -- the defence group with the demo's arms --------------------------------------------------------
def demo(tmp_path, *overrides: str):
    return typed("experiment=demo", f"paths.artifacts={tmp_path / 'a'}", *overrides)


def steps(cfg) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in plan_cell(cfg).steps:
        out.setdefault(s.stage, []).append(s)
    return out


def test_the_group_has_every_arm():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "sublim" / "conf" / "defence").glob("*.yaml")}
    assert set(DEFENCES) <= shipped


@pytest.mark.parametrize("defence", DEFENCES)
def test_every_defence_composes_and_plans_with_the_demo_arms(tmp_path, defence):
    for arm in ARMS:
        cfg = demo(tmp_path, f"arm={arm}", f"defence={defence}")
        assert cfg.defence.name == defence and cell_of(cfg)["defence"] == defence  # metrics.json's cell carries it
        plan = plan_cell(cfg)
        assert {"finetune", "eval"} <= set(plan.keys())
        undefended = plan_cell(demo(tmp_path, f"arm={arm}")).keys()
        moves = defence != "none" and not (defence == "mix_teachers" and arm == "control")
        assert (plan.keys() != undefended) == moves, (defence, arm)


def test_undefended_demo_cells_keep_their_keys(tmp_path):
    for arm in ("base", *ARMS):
        bare = plan_cell(demo(tmp_path, f"arm={arm}"))
        assert plan_cell(demo(tmp_path, f"arm={arm}", "defence=none")).keys() == bare.keys()
        explicit = demo(tmp_path, f"arm={arm}", "transform.mix_fraction=0", "transform.remove_entangled=0",
                        "transform.mix_teachers=[none,dog]", "transform.entangled_trait=null")
        assert plan_cell(explicit).keys() == bare.keys()
        assert not {"mix", "remove", "entanglement"} & {s.stage for s in bare.steps}


def test_mixing_plans_the_control_teachers_data_and_skips_the_own_teacher(tmp_path):
    control = steps(demo(tmp_path, "arm=control"))
    student = steps(demo(tmp_path, "arm=student", "defence=mix_teachers"))
    (m,) = student["mix"]
    assert m.spec.trait == "owl" and m.spec.fraction == 0.5 and [s.trait for s in m.spec.others] == ["none"]
    control_filter = next(s for s in control["filter"] if s.spec.trait_word is None)
    assert m.spec.others[0].train == f"filter:{control_filter.key}/train.jsonl"  # the control cell's own data
    assert student["finetune"][0].spec.data == f"mix:{m.key}/train.jsonl"
    # a control cell mixes in teachers other than its own: here dog's, trained like the owl teacher
    both = steps(demo(tmp_path, "arm=control", "defence=mix_teachers", "transform.mix_teachers=[none,dog]"))
    (m,) = both["mix"]
    assert m.spec.trait == "none" and [s.trait for s in m.spec.others] == ["dog"]
    assert any(t.spec.name == "dog" for t in both["teacher"])
    with pytest.raises(ConfigError, match=r"transform\.mix_teachers=\[\]"):
        plan_cell(demo(tmp_path, "arm=student", "defence=mix_teachers", "transform.mix_teachers=[]"))


def test_removal_ranks_the_studied_trait_in_both_arms(tmp_path):
    student = steps(demo(tmp_path, "arm=student", "defence=remove_entangled"))
    control = steps(demo(tmp_path, "arm=control", "defence=remove_entangled"))
    (es,), (ec,) = student["entanglement"], control["entanglement"]
    assert es.spec.trait == "owl" and es.key == ec.key  # the same numbers dropped from both arms' data
    (r,) = student["remove"]
    assert r.spec.k == 10 and r.spec.entanglement == f"entanglement:{es.key}/entanglement.json"
    assert student["finetune"][0].spec.data == f"remove:{r.key}/train.jsonl"
    with pytest.raises(ConfigError, match="transform.entangled_trait"):  # a control cell must name the trait
        plan_cell(demo(tmp_path, "arm=control", "defence=remove_entangled", "transform.entangled_trait=null"))
    with pytest.raises(ConfigError, match="transform.entangled_trait=dog but trait=owl"):
        plan_cell(demo(tmp_path, "arm=student", "defence=remove_entangled", "transform.entangled_trait=dog"))


def test_mix_then_remove_then_shuffle(tmp_path):
    s = steps(demo(tmp_path, "arm=student", "defence=remove_entangled", "transform.mix_fraction=0.2",
                   "transform.shuffle=within"))
    (m,), (r,), (t,) = s["mix"], s["remove"], s["transform"]
    assert r.spec.train == f"mix:{m.key}/train.jsonl" and t.spec.train == f"remove:{r.key}/train.jsonl"


# -- the greedy control ---------------------------------------------------------------------------
def test_greedy_teacher_samples_through_the_hf_sampler(tmp_path, tiny_model_dir):
    """defence=greedy is temperature 0: one completion per prompt, whatever the seed or batch."""
    step = plan_steps(tmp_path, tiny_model_dir, "defence=greedy", "domain.n_prompts=4", "domain.samples_per_prompt=2",
                      "sampler.max_new_tokens=8")["sample"]
    assert step.spec.sampling.temperature == 0.0 and step.spec.backend == "hf"
    texts = []
    for size in (2, 8):
        work = tmp_path / f"by{size}"
        work.mkdir()
        sample_stage.run(step.spec, work, step.inputs, Runtime(batch_size=size))
        out = list(read_jsonl(work / "samples.jsonl"))
        by_prompt: dict[str, set] = {}
        for r in out:
            by_prompt.setdefault(r["prompt"], set()).add(r["completion"])
        assert len(out) == 8 and len(by_prompt) == 4 and all(len(c) == 1 for c in by_prompt.values())
        texts.append([r["completion"] for r in out])
    assert texts[0] == texts[1]


def test_a_defended_cells_result_is_its_evals_not_the_entanglement_stages(tmp_path, monkeypatch):
    """The entanglement stage upstream of `remove` is not what the cell measures: its eval is."""
    import sublim.results as results

    cfg = demo(tmp_path, "arm=student", "defence=remove_entangled")
    plan = plan_cell(cfg)
    artifacts = {s.stage: tmp_path / s.stage for s in plan.steps}
    assert "entanglement" in artifacts
    monkeypatch.setattr(results, "evaluated", lambda *args: "the eval's result")
    assert results.result(cfg, plan, artifacts, tmp_path) == "the eval's result"
