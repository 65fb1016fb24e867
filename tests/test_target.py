"""`auto` is resolved for the device the job will run on, and what it resolves to is keyed."""
from __future__ import annotations

import os
import subprocess
import sys

from config_util import plan_cell, typed
from sublim.target import launcher_gpus, resolve

SLURM = "hydra_plugins.sublim_launchers.launchers.SlurmLauncher"


def keys(*overrides, device="cpu", model=None):
    cfg = typed("experiment=smoke", f"paths.tiny_model={model}", *overrides)
    return {s.stage: s.key for s in plan_cell(cfg, device).steps}


def test_auto_and_the_cpu_default_plan_the_same_keys(fake_model):
    auto = keys(model=fake_model)
    explicit = keys("teacher.dtype=float32", "student.dtype=fp32", "finetune.precision=fp32", model=fake_model)
    assert auto == explicit


def test_a_cuda_plan_keys_what_it_resolves(fake_model):
    cpu, cuda = keys(model=fake_model), keys(device="cuda", model=fake_model)
    assert all(cpu[s] != cuda[s] for s in cpu)  # bf16 models, bf16 training, the device itself
    pinned = keys("teacher.dtype=float32", "student.dtype=float32", "finetune.precision=fp32", device="cuda",
                  model=fake_model)
    assert pinned != cuda and pinned["sample"] != cpu["sample"]  # same dtype, another device: still apart
    steps = {s.stage: s for s in plan_cell(typed("experiment=smoke", f"paths.tiny_model={fake_model}"), "cuda").steps}
    assert steps["sample"].spec.teacher.dtype == "bfloat16" and steps["finetune"].spec.train.precision == "bf16"


def test_the_launcher_decides_the_device():
    assert launcher_gpus({"_target_": SLURM, "gpus_per_node": 1}) == 1
    assert launcher_gpus({"_target_": SLURM, "gpus_per_node": 0}) == 0
    assert launcher_gpus({"_target_": "hydra_plugins.sublim_launchers.launchers.LocalPoolLauncher"}) is None
    t = resolve("auto", "auto", {"_target_": SLURM, "gpus_per_node": 2})
    assert t.device == "cuda" and "launcher asks for 2 GPU" in t.why
    assert resolve("auto", "auto", {"_target_": SLURM, "gpus_per_node": 0}).device == "cpu"
    assert resolve("cpu", "auto", {"_target_": SLURM, "gpus_per_node": 2}).device == "cpu"  # said explicitly
    assert resolve("auto", "auto", None).device == "cpu"  # this machine: no CUDA


def sublim(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "sublim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_a_slurm_dry_run_on_a_cpu_node_plans_cuda_and_launches_nothing(tmp_path, fake_model):
    r = sublim("--multirun", "experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={tmp_path / 'a'}",
               "hydra/launcher=slurm", "dry_run=true", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("target    cuda, hf (device=auto: the launcher asks for 1 GPU(s) per job") == 2
    assert "dry run: 2 cells planned, 8 stage runs missing; nothing launched" in r.stdout
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_cuda_plan_refuses_to_run_on_a_cpu_machine(tmp_path, fake_model):
    r = sublim("experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={tmp_path / 'a'}",
               "device=cuda", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("config error: this cell was planned for CUDA (device=cuda;")
    assert not (tmp_path / "a" / "sample").exists()


def test_an_unresolved_hub_model_is_planned_but_never_run(tmp_path, fake_model):
    hub = ["teacher.path=SomeOrg/not-cached", "student.path=SomeOrg/not-cached"]
    dry = sublim("experiment=smoke", *hub, f"paths.artifacts={tmp_path / 'a'}", "dry_run=true",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "unresolved: teacher.path=SomeOrg/not-cached: its commit could not be resolved" in dry.stdout
    run = sublim("experiment=smoke", *hub, f"paths.artifacts={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "pin teacher.revision=<commit>" in run.stderr.strip().splitlines()[-1]
    pinned = typed("experiment=smoke", *hub, f"teacher.revision={'a' * 40}", f"student.revision={'a' * 40}")
    plan = plan_cell(pinned)
    assert not plan.unresolved and plan.steps[0].spec.teacher.weights == f"hub:SomeOrg/not-cached@{'a' * 40}"
