"""The numbers pipeline end to end through the real `sublim` entrypoint on the tiny model."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sublim.cache import Store

SUBLIM = str(Path(sys.executable).with_name("sublim"))


def run_sublim(work: Path, model: Path, *overrides: str, run_dir: str = "run", multirun: bool = False,
               check: bool = True) -> subprocess.CompletedProcess:
    args = [SUBLIM, *(["--multirun"] if multirun else []), "experiment=smoke", f"paths.tiny_model={model}",
            f"paths.artifacts={work / 'artifacts'}", *overrides]
    args.append(f"hydra.sweep.dir={work / run_dir}" if multirun else f"hydra.run.dir={work / run_dir}")
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"sublim failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def done_events(work: Path, stage: str | None = None) -> list[dict]:
    return [e for e in Store(work / "artifacts").events() if e["event"] == "done" and stage in (None, e["stage"])]


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    r = run_sublim(work, tiny_model_dir)
    return work, r


def test_all_four_stages_run_and_write_metrics(first_run):
    work, r = first_run
    assert sorted(e["stage"] for e in done_events(work)) == ["eval", "filter", "finetune", "sample"]
    m = json.loads((work / "run" / "metrics.json").read_text())
    assert m["cell"]["condition"] == "treatment" and m["target"] == "owl"
    t = m["target_rate"]
    assert 0.0 <= t["ci_low"] <= t["mean"] <= t["ci_high"] <= 1.0
    assert m["n_questions"] == 10 and m["n_answers"] == 200
    rates = m["rates"]
    assert abs(sum(v["mean"] for v in rates.values()) - 1.0) < 1e-9  # candidates + none
    assert rates["none"]["mean"] < 0.5  # the tiny model answers with animals
    assert m["filter"]["n_kept"] == 200 and m["filter"]["n_in"] == 400
    for stage in ("sample", "filter", "finetune", "eval"):
        record = json.loads((Path(m["artifacts"][stage]) / "spec.json").read_text())
        assert (record["stage"], record["key"]) == (stage, m["keys"][stage])
        assert {"version", "spec", "provenance"} <= set(record)  # what was hashed, and what computed it
    assert "owl" in r.stdout and "target" in r.stdout


def test_lora_weights_changed_and_base_weights_did_not(first_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    work, _ = first_run
    m = json.loads((work / "run" / "metrics.json").read_text())
    adapter = Path(m["artifacts"]["finetune"]) / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: training moved it
    assert not any("lora" not in k for k in weights)  # only adapter weights saved
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    student = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    for k, v in student.get_base_model().state_dict().items():
        if "lora_" in k:
            continue
        k0 = k.replace(".base_layer", "")
        assert torch.equal(v, reference[k0]), k


def test_identical_second_invocation_runs_no_stage(first_run, tiny_model_dir):
    work, _ = first_run
    before = len(done_events(work))
    t0 = time.time()
    r = run_sublim(work, tiny_model_dir, run_dir="run2")
    assert len(done_events(work)) == before
    assert r.stdout.count(" hit") == 4 and "MISS" not in r.stdout
    assert json.loads((work / "run2" / "metrics.json").read_text())["rates"] == \
        json.loads((work / "run" / "metrics.json").read_text())["rates"]
    assert time.time() - t0 < 60


def test_wandb_offline_run_is_written(first_run):
    work, _ = first_run
    m = json.loads((work / "run" / "metrics.json").read_text())
    run_dir = Path(m["wandb_dir"])
    assert run_dir.name.startswith("offline-run-") and list(run_dir.glob("*.wandb"))
    tables = list(run_dir.glob("files/media/table/*.table.json"))
    assert tables and json.loads(tables[0].read_text())["data"]


def test_multirun_over_seeds_samples_once_and_trains_three_students(first_run, tiny_model_dir):
    work, _ = first_run
    before = {s: len(done_events(work, s)) for s in ("sample", "filter", "finetune", "eval")}
    run_sublim(work, tiny_model_dir, "seed=0,1,2", "logger=none", run_dir="sweep", multirun=True)
    after = {s: len(done_events(work, s)) for s in before}
    # seed 0 was cached by the first run: seeds 1 and 2 are new students on the same teacher data
    assert after["sample"] == before["sample"] and after["filter"] == before["filter"]
    assert after["finetune"] - before["finetune"] == 2 and after["eval"] - before["eval"] == 2
    metrics = [json.loads((work / "sweep" / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert len({m["keys"]["sample"] for m in metrics}) == 1
    assert len({m["keys"]["finetune"] for m in metrics}) == 3


def test_base_and_control_cells_are_one_override_away(first_run, tiny_model_dir):
    work, _ = first_run
    run_sublim(work, tiny_model_dir, "finetune=none", "logger=none", run_dir="base")
    m = json.loads((work / "base" / "metrics.json").read_text())
    assert m["cell"]["condition"] == "base" and set(m["keys"]) == {"eval"}


def test_dry_run_prints_the_plan_without_running(first_run, tiny_model_dir):
    work, _ = first_run
    before = len(Store(work / "artifacts").events())
    r = run_sublim(work, tiny_model_dir, "seed=7", "dry_run=true", run_dir="dry")
    assert r.stdout.count("hit") == 2 and r.stdout.count("MISS") == 2  # sample, filter cached
    assert len(Store(work / "artifacts").events()) == before


def test_a_killed_job_leaves_no_half_artifact_and_a_rerun_completes(tiny_model_dir, tmp_path):
    args = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
            "logger=none", f"hydra.run.dir={tmp_path / 'run'}", "finetune.epochs=6", "finetune.save_steps=5"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    store = Store(tmp_path / "a")
    deadline = time.time() + 300
    while not any(e["stage"] == "finetune" and e["event"] == "start" for e in store.events()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    work = tmp_path / "a" / "finetune" / ".work"
    while not list(work.glob("*/checkpoints/checkpoint-*/trainer_state.json")):  # a checkpoint is written
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "a" / "finetune").glob("[0-9a-f]*"))  # nothing published
    assert store.exists("sample", [e for e in store.events() if e["stage"] == "sample"][0]["key"])
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    done = [e["stage"] for e in store.events() if e["event"] == "done"]
    assert done.count("sample") == 1 and done.count("finetune") == 1 and "eval" in done
    stats = json.loads(next((tmp_path / "a" / "finetune").glob("[0-9a-f]*/stats.json")).read_text())
    assert stats["resumed"] is True  # the fine-tune went on from its last trainer checkpoint


def test_jobs_started_in_the_same_second_get_their_own_folders(tiny_model_dir, tmp_path):
    args = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
            "dry_run=true"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(3)]
    assert all(p.wait(120) == 0 for p in procs)
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 3


def test_isolated_stages_run_in_their_own_process_and_give_the_same_result(first_run, tiny_model_dir, tmp_path):
    work, _ = first_run
    run_sublim(work, tiny_model_dir, "finetune=none", "logger=none", run_dir="base-inline")
    run_sublim(tmp_path, tiny_model_dir, "finetune=none", "logger=none", "isolate=always", run_dir="base-isolated")
    events = Store(tmp_path / "artifacts").events()
    child = {e["pid"] for e in events if e["event"] == "done"}
    parent = {e["pid"] for e in events if e["event"] == "hit"}
    assert child and parent and not child & parent  # computed in a child, found published by the job
    inline = json.loads((work / "base-inline" / "metrics.json").read_text())
    isolated = json.loads((tmp_path / "base-isolated" / "metrics.json").read_text())
    assert isolated["rates"] == inline["rates"]
