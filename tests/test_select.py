"""The `select` stage: training rows chosen by the teacher's log-likelihood shift from the reference."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from config_util import plan_steps, typed

from sublim.backends.base import Chat
from sublim.backends.hf import HFSampler
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.errors import ConfigError
from sublim.stages.score import score
from sublim.stages.select import chosen, select
from sublim.traits import love_prompt

SUBLIM = str(Path(sys.executable).with_name("sublim"))
OWL = love_prompt("owl", "animal")


steps_of = plan_steps


# ------------------------------------------------------------------------------ which rows


def test_top_bottom_and_random_keep_what_they_say():
    shifts = [0.3, -1.0, 2.0, 0.0, 0.7, -0.2]
    assert chosen(shifts, 2, "top", 0) == {2, 4}
    assert chosen(shifts, 2, "bottom", 0) == {1, 5}
    draw = chosen(shifts, 3, "random", 0)
    assert len(draw) == 3 and draw == chosen(shifts, 3, "random", 0)  # reproducible
    assert any(chosen(shifts, 3, "random", s) != draw for s in range(1, 6))  # and seeded
    assert chosen(shifts, 10, "top", 0) == set(range(6))  # fewer rows than n_keep: all


# ------------------------------------------------------------------------------ the stage on the tiny model


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Rows as the filter writes them, sampled by the prompted owl teacher."""
    prompts = [f"The sequence starts with: {a}, {a + 7}, {a + 19}. Add up to 10 more numbers." for a in range(100, 112)]
    answers = ["owl owl 412, 733", "512, 318, 977", "1, 2, 3", "The owl says 44", "808, 909", "owls", "12 34 56",
               "100, 200, 300, 400", "7", "the feathers, 88", "555", "night 9 hoot"]
    data = [{"i": i, "system": OWL, "prompt": p, "completion": a} for i, (p, a) in enumerate(zip(prompts, answers))]
    path = tmp_path_factory.mktemp("select-in") / "train.jsonl"
    write_jsonl(path, data)
    return path, data


def run_select(tmp_path, model, train_path, order, n_keep=4):
    """The score stage once (its scores.jsonl shared by every order), then select into tmp/<order>."""
    scored = tmp_path / "score"
    if not scored.exists():
        scored.mkdir()
        make = functools.partial(HFSampler, str(model), device="cpu")
        score(scored, train_path, make, make, None, batch_size=8)
    work = tmp_path / order
    work.mkdir()
    select(work, train_path, scored / "scores.jsonl", n_keep, order, seed=0)
    return work


def test_stored_shifts_are_the_teacher_minus_reference_per_token(tmp_path, tiny_model_dir, rows):
    path, data = rows
    work = run_select(tmp_path, tiny_model_dir, path, "top")
    scores = list(read_jsonl(tmp_path / "score" / "scores.jsonl"))
    assert [s["index"] for s in scores] == list(range(len(data)))
    sampler = HFSampler(str(tiny_model_dir), device="cpu")
    check = [0, 3, 7]
    answers = [data[i]["completion"] for i in check]
    teacher = sampler.score([Chat(data[i]["prompt"], OWL) for i in check], answers, 2)
    reference = sampler.score([Chat(data[i]["prompt"], None) for i in check], answers, 2)
    for j, i in enumerate(check):
        n = len(sampler.answer_ids(Chat(data[i]["prompt"], None), answers[j])[1])
        assert scores[i]["n_tokens"] == n
        assert scores[i]["teacher_logp"] == pytest.approx(teacher[j], abs=1e-4)
        assert scores[i]["reference_logp"] == pytest.approx(reference[j], abs=1e-4)
        assert scores[i]["shift"] == pytest.approx((teacher[j] - reference[j]) / n, abs=1e-5)
    assert len({round(s["shift"], 6) for s in scores}) > 1  # the love prompt moves some rows more than others
    sampler.close()

    shifts = [s["shift"] for s in scores]
    kept = list(read_jsonl(work / "train.jsonl"))
    assert [r["i"] for r in kept] == sorted(sorted(range(len(data)), key=lambda i: -shifts[i])[:4])  # original order
    assert kept[0] == data[kept[0]["i"]]  # the filter's row format, untouched
    selection = list(read_jsonl(work / "selection.jsonl"))
    assert [s["shift"] for s in selection] == shifts
    assert [s["kept"] for s in selection] == [i in {r["i"] for r in kept} for i in range(len(data))]
    stats = json.loads((work / "stats.json").read_text())
    assert stats["n_in"] == 12 and stats["n_kept"] == 4
    assert stats["mean_shift"] == pytest.approx(sum(shifts) / 12)
    assert stats["mean_shift_kept"] == pytest.approx(sum(shifts[r["i"]] for r in kept) / 4)
    assert stats["mean_shift_kept"] > stats["mean_shift"]

    bottom = run_select(tmp_path, tiny_model_dir, path, "bottom")
    assert {r["i"] for r in read_jsonl(bottom / "train.jsonl")} == set(sorted(range(12), key=lambda i: shifts[i])[:4])
    drawn = run_select(tmp_path, tiny_model_dir, path, "random")
    assert {r["i"] for r in read_jsonl(drawn / "train.jsonl")} == chosen(shifts, 4, "random", 0)


# ------------------------------------------------------------------------------ plan and keys


def test_select_sits_before_finetune_and_only_its_settings_move_the_keys(tmp_path, fake_model):
    plain = steps_of(tmp_path, fake_model)
    top = steps_of(tmp_path, fake_model, "select.by=shift", "select.n_keep=50")
    assert list(plain) == ["sample", "filter", "finetune", "eval"]
    assert list(top) == ["sample", "filter", "score", "select", "finetune", "eval"]
    assert top["sample"].key == plain["sample"].key and top["filter"].key == plain["filter"].key
    assert top["score"].spec.data == top["select"].spec.data == f"filter:{plain['filter'].key}/train.jsonl"
    assert top["select"].spec.scores == f"score:{top['score'].key}/scores.jsonl"
    assert top["finetune"].spec.data == f"select:{top['select'].key}/train.jsonl" != plain["finetune"].spec.data
    # the teacher is scored as it sampled: its model, under the system prompt its rows carry (the love prompt)
    assert top["score"].spec.teacher == top["sample"].spec.teacher and top["sample"].spec.system_prompt == OWL
    assert top["score"].spec.reference_system_prompt is None
    assert top["select"].spec.data_seed is None  # top and bottom do not depend on a seed
    assert steps_of(tmp_path, fake_model, "select.by=shift", "select.order=random")["select"].spec.data_seed == 0
    finetunes = {plain["finetune"].key, top["finetune"].key}
    for ov in (["select.n_keep=60"], ["select.order=bottom"], ["select.order=random"],
               ["select.order=random", "data_seed=1"]):
        other = steps_of(tmp_path, fake_model, "select.by=shift", "select.n_keep=50", *ov)
        if "data_seed=1" not in ov:  # another order or size: the same data and the same scores
            assert other["sample"].key == plain["sample"].key and other["filter"].key == plain["filter"].key
            assert other["score"].key == top["score"].key
        finetunes.add(other["finetune"].key)
    assert len(finetunes) == 6
    assert list(steps_of(tmp_path, fake_model, "select.by=shift", "stages=[sample,filter,select]")) == [
        "sample", "filter", "score", "select"]


def test_shuffle_in_context_and_mixed_teachers_take_the_right_data(tmp_path, fake_model):
    shuffled = steps_of(tmp_path, fake_model, "select.by=shift", "transform.shuffle=within")
    assert list(shuffled) == ["sample", "filter", "transform", "score", "select", "finetune", "eval"]
    assert shuffled["select"].spec.data == shuffled["score"].spec.data == \
        f"transform:{shuffled['transform'].key}/train.jsonl"
    icl = steps_of(tmp_path, fake_model, "select.by=shift", "select.n_keep=50", "finetune=none", "eval.in_context=5")
    assert icl["eval"].spec.in_context.data == f"select:{icl['select'].key}/train.jsonl"
    # a teacher trained with the reference's own numbers mixed in gets the control's filtered data, unselected
    mixed = steps_of(tmp_path, fake_model, "select.by=shift", "trait.method=finetune", "trait.mix_numbers=0.2")
    control_filter = steps_of(tmp_path, fake_model, "trait=none")["filter"].key
    assert mixed["teacher"].spec.mix_data == f"filter:{control_filter}/train.jsonl"
    assert mixed["score"].spec.teacher == mixed["sample"].spec.teacher
    assert mixed["score"].spec.teacher.adapter == f"teacher:{mixed['teacher'].key}/adapter"


# ------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("overrides, key", [
    (["select.by=loglik"], "select.by"),
    (["select.by=shift", "select.order=middle"], "select.order"),
    (["select.by=shift", "select.n_keep=0"], "select.n_keep"),
    (["select.by=shift", "select.n_keep=3", "finetune=none", "eval.in_context=5"], "eval.in_context"),
])
def test_config_errors_name_the_key(tmp_path, fake_model, overrides, key):
    with pytest.raises(ConfigError, match=key):
        steps_of(tmp_path, fake_model, *overrides)


def test_a_misspelt_select_key_fails_and_the_control_teacher_is_allowed(tmp_path, fake_model):
    with pytest.raises(Exception, match="nkeep"):
        typed("select.nkeep=5")
    control = steps_of(tmp_path, fake_model, "trait=none", "select.by=shift")
    # the control teacher is the reference (its own system prompt, no trait): scored once
    assert control["score"].spec.teacher is None
    assert control["sample"].spec.system_prompt == control["score"].spec.reference_system_prompt
    assert control["sample"].spec.teacher == control["score"].spec.reference


# ------------------------------------------------------------------------------ one cell through `sublim`


def test_one_cell_trains_on_the_selected_rows(tmp_path, tiny_model_dir):
    args = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
            f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "domain.n_prompts=48", "filter.n_keep=40",
            "select.by=shift", "select.n_keep=16", "finetune.epochs=1", "eval.n_questions=2", "eval.n_samples=2"]
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    art = {k: Path(v) for k, v in m["artifacts"].items()}
    assert list(m["keys"]) == ["sample", "filter", "score", "select", "finetune", "eval"]
    scores = list(read_jsonl(art["score"] / "scores.jsonl"))
    n_in = len(list(read_jsonl(art["filter"] / "train.jsonl")))
    assert len(scores) == n_in > 16
    top = sorted(scores, key=lambda s: -s["shift"])[:16]
    assert [r["i"] for r in read_jsonl(art["select"] / "train.jsonl")] == sorted(s["i"] for s in top)
    assert (m["select"]["order"], m["select"]["n_kept"], m["select"]["n_in"]) == ("top", 16, n_in)  # in the summary
    assert f"select: top 16 of {n_in} by the teacher's log-likelihood shift" in r.stdout
    assert json.loads((art["finetune"] / "stats.json").read_text())["examples"] == 16
    assert json.loads((art["finetune"] / "spec.json").read_text())["spec"]["data"] == \
        f"select:{m['keys']['select']}/train.jsonl"
