"""The artifact store: atomic publish, one computation per key across processes, stale locks."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublim.cache import Store, stage_key


def test_key_depends_on_spec_and_version_only():
    assert stage_key("s", 1, {"a": 1, "b": 2}) == stage_key("s", 1, {"b": 2, "a": 1})
    assert stage_key("s", 1, {"a": 1}) != stage_key("s", 2, {"a": 1})
    assert stage_key("s", 1, {"a": 1}) != stage_key("t", 1, {"a": 1})


def test_compute_once_then_hit(tmp_path):
    store = Store(tmp_path)
    calls = []

    def compute(work: Path):
        calls.append(1)
        (work / "out.txt").write_text("x")

    p1, c1 = store.get_or_compute("st", "k1", {"a": 1}, compute)
    p2, c2 = store.get_or_compute("st", "k1", {"a": 1}, compute)
    assert (c1, c2) == (True, False) and len(calls) == 1 and p1 == p2
    assert (p1 / "out.txt").read_text() == "x"
    assert json.loads((p1 / "spec.json").read_text()) == {"a": 1}
    assert [e["event"] for e in store.events()] == ["start", "done", "hit"]
    assert not store._lock_path("st", "k1").exists()


def test_failure_publishes_nothing_and_releases_the_lock(tmp_path):
    store = Store(tmp_path)

    def boom(work: Path):
        (work / "half.txt").write_text("partial")
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError):
        store.get_or_compute("st", "k", {}, boom)
    assert not store.path("st", "k").exists()
    assert not store._lock_path("st", "k").exists()
    # the retry sees the work folder (to resume from) and publishes
    seen = []
    store.get_or_compute("st", "k", {}, lambda w: seen.append((w / "half.txt").exists()))
    assert seen == [True] and store.exists("st", "k")


def _worker(root: str, out: str) -> None:
    store = Store(root, poll_s=0.05)

    def compute(work: Path):
        with open(out, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (work / "v.txt").write_text("done")

    store.get_or_compute("shared", "key", {"x": 1}, compute)
    assert (store.path("shared", "key") / "v.txt").read_text() == "done"


def test_two_processes_compute_a_missing_artifact_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(tmp_path / "calls.txt"))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len((tmp_path / "calls.txt").read_text().split()) == 1
    events = Store(tmp_path).events()
    assert sum(e["event"] == "done" for e in events) == 1
    assert sum(e["event"] == "hit" for e in events) == 2


def _write_lock(store: Store, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = store._lock_path("st", "k")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "old", "since": 0}))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_lock_of_a_dead_local_process_is_taken_over(tmp_path):
    store = Store(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(store, store.host, dead.pid)
    lock = store.acquire("st", "k", timeout_s=5)
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_another_host_is_taken_over_only_when_its_heartbeat_stops(tmp_path):
    store = Store(tmp_path, stale_after_s=30, poll_s=0.05)
    _write_lock(store, "other-node", 12345, age_s=1)
    with pytest.raises(TimeoutError):
        store.acquire("st", "k", timeout_s=0.3)
    _write_lock(store, "other-node", 12345, age_s=120)
    lock = store.acquire("st", "k", timeout_s=5)
    assert json.loads(lock.path.read_text())["host"] == store.host
    lock.release()


def test_heartbeat_keeps_a_live_lock_fresh(tmp_path):
    store = Store(tmp_path, heartbeat_s=0.05)
    lock = store.acquire("st", "k")
    os.utime(lock.path, (0, 0))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.release()


KILLED_JOB = """
import sys, time
from pathlib import Path
from sublim.cache import Store
def compute(work: Path):
    (work / "a.txt").write_text("first half")
    print("started", flush=True)
    time.sleep(60)
Store(sys.argv[1]).get_or_compute("st", "k", {}, compute)
"""


def test_a_killed_job_leaves_no_artifact_and_a_rerun_completes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_JOB, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(tmp_path)
    assert not store.path("st", "k").exists()
    assert store._lock_path("st", "k").exists()  # left behind by the dead owner
    path, computed = store.get_or_compute("st", "k", {}, lambda w: (w / "b.txt").write_text("ok"))
    assert computed and (path / "b.txt").exists() and (path / "a.txt").exists()
