"""End-to-end checks against a real SLURM cluster (the dev one: `make slurm-up`).

Skipped, with a visible reason, when `sinfo` is missing or no cluster answers. They check what
sublim's Hydra + submitit launching relies on: a submitit job returns its value, a job array runs
its tasks in parallel, a cancelled job makes `job.result()` raise instead of hanging (this needs
accounting: submitit reads job states with `sacct`), and `sacct` answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")

# Functions defined here run inside SLURM jobs, where this test module cannot be imported:
# pickle them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

from slurm_util import SKIP_REASON, cluster_answers as _cluster_answers  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> None:
    if not _cluster_answers():
        pytest.skip(SKIP_REASON)


@pytest.fixture
def executor(cluster, tmp_path: Path):
    """A submitit SLURM executor writing under tmp_path; cancels leftover jobs at the end."""
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    # no partition given: the cluster's default one (`debug` on the dev cluster)
    ex.update_parameters(timeout_min=10, cpus_per_task=1, mem_gb=4, name="sublim-test")
    ex.submitted = []  # type: ignore[attr-defined]
    orig_submit, orig_map = ex.submit, ex.map_array

    def submit(*a, **k):
        job = orig_submit(*a, **k)
        ex.submitted.append(job.job_id)
        return job

    def map_array(*a, **k):
        jobs = orig_map(*a, **k)
        ex.submitted.extend(j.job_id for j in jobs)
        return jobs

    ex.submit, ex.map_array = submit, map_array
    yield ex
    ids = {str(j).split("_")[0] for j in ex.submitted}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=20)


def _result_within(job, timeout_s: float):
    """job.result() in a daemon thread: ('ok', value) or ('error', exc); fails on timeout."""
    box: dict = {}

    def target():
        try:
            box["ok"] = job.result()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        pytest.fail(f"job {job.job_id}: result() still waiting after {timeout_s:.0f} s")
    return ("ok", box["ok"]) if "ok" in box else ("error", box["error"])


def _job_state(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, timeout=20
    ).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def _wait_state(job_id: str, states: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = _job_state(job_id)
        if state in states:
            return state
        time.sleep(0.2)
    pytest.fail(f"job {job_id} not in {sorted(states)} after {timeout_s:.0f} s (state: {state!r})")


# ---- functions that run on the cluster


def _affine(x: int, a: int = 3, b: int = 1) -> dict:
    return {"value": a * x + b, "job_id": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname()}


def _timed_sleep(i: int, seconds: float = 4.0) -> tuple[int, float, float]:
    start = time.time()
    time.sleep(seconds)
    return i, start, time.time()


# ---- tests


def test_submitit_job_returns_value(executor):
    job = executor.submit(_affine, 12, b=5)
    kind, out = _result_within(job, 60)
    assert kind == "ok", out
    assert out["value"] == 41
    assert out["job_id"] == str(job.job_id)


def test_job_array_runs_in_parallel(executor):
    executor.update_parameters(slurm_array_parallelism=4)
    jobs = executor.map_array(_timed_sleep, range(4))
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, "expected one array job"
    results = []
    for job in jobs:
        kind, out = _result_within(job, 60)
        assert kind == "ok", out
        results.append(out)
    assert sorted(r[0] for r in results) == [0, 1, 2, 3]
    last_start = max(r[1] for r in results)
    first_end = min(r[2] for r in results)
    assert last_start < first_end, f"tasks did not overlap: {results}"


@pytest.mark.slow  # ~16 s; what users see of it is test_sweeps' cancelled-job test, in the default suite
def test_cancelled_job_raises_instead_of_hanging(executor):
    job = executor.submit(time.sleep, 300)
    _wait_state(job.job_id, {"RUNNING"}, 30)
    subprocess.run(["scancel", str(job.job_id)], check=True, timeout=20)
    t0 = time.monotonic()
    kind, err = _result_within(job, 60)
    assert kind == "error", f"a cancelled job returned {err!r}"
    assert isinstance(err, submitit.core.utils.UncompletedJobError), repr(err)
    assert "CANCELLED" in str(err), str(err)
    assert time.monotonic() - t0 < 60


def test_sacct_answers(cluster, tmp_path):
    out = subprocess.run(["sacct", "-n", "-X", "-P"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-J", "sublim-sacct", "-o", str(tmp_path / "out.txt"), "--wrap", "true"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 30
    state = ""
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"],
            capture_output=True, text=True, timeout=20,
        )
        assert res.returncode == 0, res.stderr
        rows = [line.split("|") for line in res.stdout.splitlines() if line]
        state = rows[0][1] if rows else ""
        if state == "COMPLETED":
            break
        time.sleep(0.3)
    assert state == "COMPLETED", f"sacct state of job {job_id}: {state!r}"
