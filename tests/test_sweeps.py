"""Grids: every cell checked before launch, failures named, teacher data shared, SLURM launching.

The `slurm` tests need the dev cluster (`make slurm-up`) and skip, saying so, without it.
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from proc_util import alive
from slurm_util import SKIP_REASON, cluster_answers

from sublim.cache import Store
from sublim.report.collect import collect

SUBLIM = str(Path(sys.executable).with_name("sublim"))


def sweep(work: Path, model: Path, *overrides: str, name: str = "sweep", timeout: int = 900,
          artifacts: str = "artifacts", experiment: str | None = "smoke") -> subprocess.CompletedProcess:
    args = [SUBLIM, "--multirun", *([f"experiment={experiment}"] if experiment else []),
            f"paths.tiny_model={model}", "logger=none",
            f"paths.artifacts={work / artifacts}", f"hydra.sweep.dir={work / name}", *overrides]
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(args, cwd=work, capture_output=True, text=True, env=env, timeout=timeout)


def metrics(sweep_dir: Path) -> dict[str, dict]:
    out = {}
    for p in sweep_dir.glob("*/metrics.json"):
        m = json.loads(p.read_text())
        out[m["cell"]["name"]] = m
    return out


def test_a_typo_in_one_cell_fails_the_grid_before_any_job_runs(tmp_path, tiny_model_dir):
    r = sweep(tmp_path, tiny_model_dir, "trait=owl,owll", "seed=0,1")
    assert r.returncode != 0 and "owll" in r.stderr
    assert not (tmp_path / "artifacts").exists()


def test_the_paper_grid_plans_thirty_cells_without_running(tmp_path):
    """dry_run=true over a grid: the sweeper plans every cell itself and launches no job."""
    r = sweep(tmp_path, tmp_path, "sweep=animals", "dry_run=true", experiment=None)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("plan for cell ") == 30 and r.stdout.count("MISS") == 120
    assert "dry run: 30 cells planned, 120 stage runs missing; nothing launched" in r.stdout
    assert not Store(tmp_path / "artifacts").events()
    cells = [line.split(" (artifacts: ")[0][len("plan for cell "):].split()
             for line in r.stdout.splitlines() if line.startswith("plan for cell ")]
    assert len({" ".join(c) for c in cells}) == 30 and all("dry_run=True" in c for c in cells)  # every cell once
    sweep_dir = tmp_path / "sweep"  # no job ran: no job folders, no sweep_plan.json of cells to run
    assert not (sweep_dir / "sweep_plan.json").exists()
    assert not sweep_dir.exists() or not [p for p in sweep_dir.iterdir() if p.is_dir()]


def test_a_failed_cell_does_not_stop_the_others_and_is_named(tmp_path, tiny_model_dir):
    r = sweep(tmp_path, tiny_model_dir, "filter.min_keep=100000,1")
    assert r.returncode != 0
    assert "1 cell(s) failed" in r.stderr and "filter.min_keep=100000" in r.stderr
    assert "FilterError" in r.stderr
    assert len(metrics(tmp_path / "sweep")) == 1  # the good cell finished after the bad one


def test_parallel_launcher_reuses_its_workers_records_failures_and_matches_a_local_run(tmp_path, tiny_model_dir):
    """Three cells (one bad) on two workers: a worker runs more than one job, the bad cell is
    named, and the good cells' metrics are bit-equal to the same cells run one by one in-process."""
    grid = ("seed=0,1", "filter.min_keep=1,100000")
    r = sweep(tmp_path, tiny_model_dir, "hydra/launcher=parallel", "hydra.launcher.max_parallel=2", *grid,
              name="pool", artifacts="pool-artifacts")
    assert r.returncode != 0 and "2 cell(s) failed" in r.stderr and "filter.min_keep=100000" in r.stderr
    pool = metrics(tmp_path / "pool")
    assert len(pool) == 2
    pids = {e["pid"] for e in Store(tmp_path / "pool-artifacts").events()}
    assert len(pids) <= 2  # 4 jobs, 2 worker processes
    r = sweep(tmp_path, tiny_model_dir, "seed=0,1", name="local", artifacts="local-artifacts")
    assert r.returncode == 0, r.stderr[-2000:]
    local = metrics(tmp_path / "local")
    assert pool.keys() == local.keys()
    for name in pool:
        assert pool[name]["rates"] == local[name]["rates"]


def test_a_killed_pool_worker_fails_the_unfinished_cells_and_a_rerun_completes_them(tmp_path, tiny_model_dir):
    args = [SUBLIM, "--multirun", "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "logger=none",
            f"paths.artifacts={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=parallel",
            "hydra.launcher.max_parallel=1", "seed=0,1", "finetune.epochs=6"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    store = Store(tmp_path / "a")
    deadline = time.time() + 300
    while not (starts := [e for e in store.events() if e["stage"] == "finetune" and e["event"] == "start"]):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.kill(starts[0]["pid"], 9)  # the worker, in the middle of the first cell's fine-tune
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "2 cell(s) failed" in err and "worker died" in err, err[-2000:]
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2
    assert [e["stage"] for e in store.events() if e["event"] == "done"].count("sample") == 1


def test_killing_the_sweep_ends_its_pool_workers(tmp_path, tiny_model_dir):
    """The sweep's own process SIGKILLed while its worker samples: the worker exits too (no orphan
    holding memory), and the report names the cell that never started as well as the one cut short."""
    args = [SUBLIM, "--multirun", "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "logger=none",
            f"paths.artifacts={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=parallel",
            "hydra.launcher.max_parallel=1", "seed=0,1", "domain.n_prompts=4000"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    store = Store(tmp_path / "a")
    deadline = time.time() + 300
    while not (starts := [e for e in store.events() if e["stage"] == "sample" and e["event"] == "start"]):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    worker = starts[0]["pid"]
    assert worker != proc.pid
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while alive(worker):
        assert time.time() < deadline, "the pool worker outlived the killed sweep"
        time.sleep(0.2)
    problems = {Path(p.path).name: p for p in collect([tmp_path / "sweep"]).problems}
    # killed before it could write an outcome: its heartbeat's process is gone (sublim.cellstate)
    assert problems["0"].kind == "dead" and "stopped without an outcome" in problems["0"].detail, problems["0"]
    assert problems["1"].kind == "not run" and "seed=1" in problems["1"].overrides


@pytest.fixture(scope="module")
def cluster():
    if not cluster_answers():
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="module")
def slurm_grid(cluster, tiny_model_dir, tmp_path_factory):
    """2 teachers x 3 seeds on SLURM: the shared run for the checks below."""
    work = tmp_path_factory.mktemp("slurm")
    r = sweep(work, tiny_model_dir, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20",
              "trait=owl,none", "seed=0,1,2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work


@pytest.mark.slurm
def test_slurm_grid_samples_each_teacher_once_and_trains_six_students_in_parallel(slurm_grid):
    done = [e for e in Store(slurm_grid / "artifacts").events() if e["event"] == "done"]
    counts = {s: sum(e["stage"] == s for e in done) for s in ("sample", "filter", "finetune", "eval")}
    assert counts == {"sample": 2, "filter": 2, "finetune": 6, "eval": 6}
    assert len(metrics(slurm_grid / "sweep")) == 6
    # several jobs were alive at once: some stage started in one job while another job's was running
    spans = [(e["time"] - e["seconds"], e["time"], e["pid"]) for e in done]
    assert any(a0 < b1 and b0 < a1 and pa != pb for a0, a1, pa in spans for b0, b1, pb in spans)


@pytest.mark.slurm
def test_slurm_cells_give_the_same_metrics_as_a_local_run(slurm_grid, tiny_model_dir, tmp_path):
    r = sweep(tmp_path, tiny_model_dir, "trait=owl,none", "seed=0")
    assert r.returncode == 0, r.stderr[-3000:]
    local, remote = metrics(tmp_path / "sweep"), metrics(slurm_grid / "sweep")
    assert len(local) == 2
    for name, m in local.items():
        for cand, rate in m["rates"].items():  # one thread everywhere: the same samples, bit for bit
            assert remote[name]["rates"][cand]["mean"] == pytest.approx(rate["mean"], abs=1e-9)


@pytest.mark.slurm
def test_a_failing_slurm_cell_makes_the_sweep_fail_naming_it(slurm_grid, tiny_model_dir):
    r = sweep(slurm_grid, tiny_model_dir, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "trait=owl",
              "filter.min_keep=1,100000", name="failing")
    assert r.returncode != 0
    assert "1 cell(s) failed" in r.stderr and "filter.min_keep=100000" in r.stderr


@pytest.mark.slurm
def test_a_cancelled_slurm_job_does_not_hang_the_sweep(cluster, tiny_model_dir, tmp_path):
    def cancel_when_running():
        deadline = time.time() + 120
        while time.time() < deadline:
            ids = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %j"], capture_output=True,
                                 text=True).stdout.split("\n")
            mine = [line.split()[0] for line in ids if "sublim" in line]
            if mine:
                time.sleep(2)
                subprocess.run(["scancel", *mine])
                return
            time.sleep(0.5)

    threading.Thread(target=cancel_when_running, daemon=True).start()
    t0 = time.time()
    r = sweep(tmp_path, tiny_model_dir, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.name=sublim-cancel",
              "domain.n_prompts=20000", timeout=300)
    assert r.returncode != 0 and time.time() - t0 < 300
    assert "died" in r.stderr and "1 cell(s) failed" in r.stderr


@pytest.mark.slurm
@pytest.mark.slow  # SLURM holds a requeued job for about two minutes (BeginTime): make test-slow
def test_a_requeued_slurm_job_resumes_from_the_cache(cluster, tiny_model_dir, tmp_path):
    """Pre-emption as SLURM does it (scontrol requeue): the job runs again and the cell resumes from the
    cache, the fine-tune from its last trainer checkpoint."""
    store = Store(tmp_path / "artifacts")
    requeued = []

    def requeue_after_a_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            if list((tmp_path / "artifacts" / "finetune" / ".work").glob("*/checkpoints/checkpoint-*/trainer_state.json")):
                ids = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %j"], capture_output=True,
                                     text=True).stdout.split("\n")
                mine = [line.split()[0] for line in ids if "sublim-requeue" in line]
                if mine:
                    subprocess.run(["scontrol", "requeue", *mine])
                    requeued.extend(mine)
                    return
            time.sleep(0.3)

    threading.Thread(target=requeue_after_a_checkpoint, daemon=True).start()
    r = sweep(tmp_path, tiny_model_dir, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.name=sublim-requeue",
              "finetune.epochs=80", "finetune.save_steps=5", timeout=600)  # long enough to be cut
    assert requeued, "the job was never seen running"
    assert r.returncode == 0, r.stderr[-3000:]
    done = [e["stage"] for e in store.events() if e["event"] == "done"]
    starts = [e["stage"] for e in store.events() if e["event"] == "start"]
    assert starts.count("finetune") == 2 and done.count("finetune") == 1  # started twice, published once
    assert done.count("sample") == 1  # the teacher data was not redone
    stats = json.loads(next((tmp_path / "artifacts" / "finetune").glob("[0-9a-f]*/stats.json")).read_text())
    assert stats["resumed"] is True  # the second attempt went on from the last trainer checkpoint


def test_a_cells_swept_values_are_the_keys_its_grid_varies(tmp_path):
    """What a grid job adds to its W&B run config (sublim.sweep.swept): typed values of the keys whose
    values differ between the plan's cells; every override when there is no plan to compare with."""
    from sublim.sweep import swept, write_plan

    cells = [["experiment=demo", "arm=student", "seed=0"], ["experiment=demo", "arm=control", "seed=1"]]
    write_plan(tmp_path, [(i, ov, str(i)) for i, ov in enumerate(cells)])
    assert swept(cells[1], tmp_path) == {"arm": "control", "seed": 1}
    assert swept(["+finetune.lr=0.5", "flag=true"], tmp_path / "nowhere") == {"finetune.lr": 0.5, "flag": True}
