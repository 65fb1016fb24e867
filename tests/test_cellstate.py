"""sublim.cellstate: one answer to "what is this cell doing?" from outcome.json, the job's own
heartbeat (job.json), the artifact store's locks and the sweep plan; a running job is running, a
killed one dead, whatever the folder holds."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sublim import cellstate
from sublim.cache import Store
from sublim.cellstate import HEARTBEAT, CellState, cell_state, heartbeat, store_locks, sweep_states, write_heartbeat

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def job(root: Path, name: str = "0", **files) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- seed={name}\n")
    for fname, content in files.items():
        (d / fname.replace("_", ".")).write_text(content if isinstance(content, str) else json.dumps(content))
    return d


def beat(d: Path, **fields) -> dict:
    """A heartbeat as a job writes it, with fields overridden."""
    now = time.time()
    rec = {"host": HOST, "pid": os.getpid(), "pid_start": cellstate._pid_start(os.getpid()), "started": now - 60,
           "updated": now, "interval_s": 5.0, "artifacts": None, "ended": None, "exit": None, "error": None} | fields
    (d / HEARTBEAT).write_text(json.dumps(rec))
    return rec


def test_the_constants_are_those_of_the_sweep_and_the_store():
    from sublim import sweep

    assert (cellstate.OUTCOME, cellstate.PLAN) == (sweep.OUTCOME, sweep.PLAN)
    assert Store("/nonexistent").stale_after_s == cellstate.STALE_AFTER_S


def test_it_is_a_leaf_module():
    """sublim-status must start fast: no pandas, matplotlib, hydra or torch behind it."""
    code = ("import sys, sublim.cellstate; heavy = {'pandas', 'matplotlib', 'hydra', 'torch', 'numpy', 'omegaconf'}; "
            "print(sorted(heavy & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_heartbeat_is_written_refreshed_and_closed(tmp_path):
    d = tmp_path / "job"
    with heartbeat(d, interval_s=0.05, artifacts=tmp_path / "a") as hb:
        first = json.loads((d / HEARTBEAT).read_text())
        assert first["host"] == HOST and first["pid"] == os.getpid() and first["ended"] is None
        assert first["artifacts"] == str(tmp_path / "a")
        time.sleep(0.3)
        assert json.loads((d / HEARTBEAT).read_text())["updated"] > first["updated"]
        assert cell_state(d).state == "running"
    end = json.loads((d / HEARTBEAT).read_text())
    assert end["exit"] == "ok" and end["ended"] >= end["started"] and not hb._thread.is_alive()
    assert cell_state(d) == CellState("ok", "finished (heartbeat; no outcome.json: a single run)", d)
    assert not list(d.glob(".*.tmp"))


def test_an_exception_is_recorded_and_raised(tmp_path):
    d = tmp_path / "job"
    with pytest.raises(ValueError):
        with heartbeat(d, interval_s=10):
            raise ValueError("bad trait\nsecond line")
    st = cell_state(d)
    assert st.state == "failed" and st.reason == "ValueError: bad trait"


def test_a_heartbeat_that_cannot_be_written_never_stops_the_job(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with heartbeat(blocker / "job", interval_s=0.02):  # a folder under a file: every write fails
        time.sleep(0.1)
    assert "cannot write the heartbeat" in caplog.text


def test_outcome_decides(tmp_path):
    ok = job(tmp_path, "0", outcome_json={"status": "ok", "overrides": [], "error": None})
    failed = job(tmp_path, "1", outcome_json={"status": "failed", "overrides": [],
                                               "error": "FilterError: only 3 passed\ntraceback..."})
    odd = job(tmp_path, "2", outcome_json=["not", "an", "object"])
    broken = job(tmp_path, "3", outcome_json='{"status": "o')
    assert cell_state(ok).state == "ok"
    assert cell_state(failed) == CellState("failed", "FilterError: only 3 passed", failed)
    assert cell_state(odd).state == "failed" and "not an object" in cell_state(odd).reason
    assert cell_state(broken).state == "failed" and "unreadable" in cell_state(broken).reason


def test_no_folder_or_an_empty_one_is_not_started(tmp_path):
    assert cell_state(tmp_path / "nope").state == "not started"
    (tmp_path / "empty").mkdir()
    assert cell_state(tmp_path / "empty").state == "not started"


def test_alive_on_this_host_is_running_gone_is_dead(tmp_path):
    running = job(tmp_path, "0")
    # a heartbeat silent for 10 min, but the process lives: still running
    rec = beat(running, started=time.time() - 900, updated=time.time() - 600)
    os.utime(running / HEARTBEAT, (rec["updated"], rec["updated"]))
    st = cell_state(running)
    assert st.state == "running" and f"pid {os.getpid()}" in st.reason and "silent" in st.reason
    dead = job(tmp_path, "1")
    pid = dead_pid()
    beat(dead, pid=pid, pid_start=None)
    st = cell_state(dead)
    assert st.state == "dead" and f"pid {pid} is gone" in st.reason
    reused = job(tmp_path, "2")  # our pid, but written by a process that started at another time
    beat(reused, pid_start=(cellstate._pid_start(os.getpid()) or 0) + 1)
    if cellstate._pid_start(os.getpid()) is not None:  # Linux /proc
        assert cell_state(reused).state == "dead" and "another process" in cell_state(reused).reason


def test_another_host_is_judged_by_the_age_of_its_heartbeat(tmp_path):
    d = job(tmp_path)
    rec = beat(d, host="node-17", pid=4242)
    os.utime(d / HEARTBEAT, (rec["updated"], rec["updated"]))
    assert cell_state(d, now=rec["updated"] + 30).state == "running"
    st = cell_state(d, now=rec["updated"] + cellstate.STALE_AFTER_S + 60)
    assert st.state == "dead" and "node-17" in st.reason and "3 min" in st.reason


def test_without_outcome_or_heartbeat(tmp_path):
    assert cell_state(job(tmp_path, "0", metrics_json={"cell": {}})).state == "ok"  # a single run's results
    st = cell_state(job(tmp_path, "1"))
    assert st.state == "dead" and "no heartbeat" in st.reason
    for i, bad in enumerate([[], {"host": "h"}, {"host": HOST, "pid": -1}, {"host": HOST, "pid": 0},
                             {"host": HOST, "pid": True}, "{"]):
        d = job(tmp_path, f"b{i}", job_json=bad)
        st = cell_state(d)
        assert st.state == "dead" and "job.json" in st.reason, (bad, st)


def test_a_rerun_into_a_finished_folder_is_running(tmp_path):
    d = job(tmp_path, outcome_json={"status": "failed", "overrides": [], "error": "OOM"})
    old = time.time() - 3600
    os.utime(d / "outcome.json", (old, old))
    beat(d, started=time.time() - 10)
    st = cell_state(d)
    assert st.state == "running" and "running again" in st.reason
    beat(d, started=old - 100)  # the heartbeat of the run that wrote the outcome: the outcome stands
    assert cell_state(d) == CellState("failed", "OOM", d)


def test_the_store_lock_says_which_stage_a_job_computes(tmp_path):
    store = Store(tmp_path / "artifacts")
    d = job(tmp_path)
    beat(d, artifacts=str(store.root))
    lock = store.acquire("finetune", "abc123")
    try:
        (lk,) = store_locks(store.root)
        assert (lk.stage, lk.key, lk.pid, lk.live) == ("finetune", "abc123", os.getpid(), True)
        st = cell_state(d)
        assert st.state == "running" and "computing finetune/abc123" in st.reason
    finally:
        lock.release()
    # a stage process the job started (isolate=always) holds the lock: its parent's job computes it
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        locks = store.root / "sample" / ".locks"
        locks.mkdir(parents=True)
        (locks / "k9.lock").write_text(json.dumps({"host": HOST, "pid": child.pid, "token": "t", "since": time.time()}))
        assert "computing sample/k9" in cell_state(d).reason
    finally:
        child.kill()
        child.wait()
    assert not [lk for lk in store_locks(store.root) if lk.live]  # its owner is gone: the store takes it over


def test_a_dead_job_names_the_lock_it_left(tmp_path):
    store_root = tmp_path / "artifacts"
    pid = dead_pid()
    (store_root / "eval" / ".locks").mkdir(parents=True)
    (store_root / "eval" / ".locks" / "k1.lock").write_text(json.dumps({"host": HOST, "pid": pid, "token": "t"}))
    d = job(tmp_path)
    beat(d, pid=pid, pid_start=None)
    st = cell_state(d, artifacts_root=store_root)
    assert st.state == "dead" and "left the lock of eval/k1" in st.reason


def test_a_killed_job_is_dead(tmp_path):
    """A real job process: running while it beats, dead once SIGKILLed (no chance to say so)."""
    d = tmp_path / "job"
    code = f"import time; from sublim.cellstate import heartbeat\nwith heartbeat({str(d)!r}, interval_s=0.05):\n" \
           "    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 30
        while not (d / HEARTBEAT).exists():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
        assert cell_state(d).state == "running"
    finally:
        proc.kill()
        proc.wait()
    st = cell_state(d)
    assert st.state == "dead" and f"pid {proc.pid}" in st.reason


def test_sweep_states_covers_the_plan_and_unplanned_folders(tmp_path):
    sweep = tmp_path / "sweep"
    job(sweep, "0", outcome_json={"status": "ok", "overrides": ["seed=0"], "error": None})
    beat(job(sweep, "1"))
    d = job(sweep, "x7")  # the plan could not name its folder: found by its overrides
    (d / ".hydra" / "overrides.yaml").write_text("- seed=7\n- 'trait=owl,cat'\n")
    job(sweep, "extra")
    plan = [{"job": 0, "overrides": ["seed=0"], "folder": "0"}, {"job": 1, "overrides": ["seed=1"], "folder": "1"},
            {"job": 2, "overrides": ["seed=2"], "folder": "2"},
            {"job": 7, "overrides": ["seed=7", "trait=owl,cat"], "folder": None},
            {"job": 8, "overrides": ["seed=8"], "folder": None}]
    (sweep / "sweep_plan.json").write_text(json.dumps(plan))
    states = [(j, ov, s.state) for j, ov, s in sweep_states(sweep)]
    assert states == [(0, ["seed=0"], "ok"), (1, ["seed=1"], "running"), (2, ["seed=2"], "not started"),
                      (7, ["seed=7", "trait=owl,cat"], "dead"), (8, ["seed=8"], "not started"),
                      ("extra", ["seed=extra"], "dead")]
    (sweep / "sweep_plan.json").write_text("[{")  # unreadable: the folders it has
    assert [j for j, _, _ in sweep_states(sweep)] == [0, 1, "extra", "x7"]


TEXT = st.text(st.characters() | st.sampled_from(["\ud800", "\udcff"]), max_size=8)  # lone surrogates too
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                    max_leaves=8)
FIELDS = st.sampled_from(["host", "pid", "pid_start", "started", "updated", "ended", "exit", "error", "artifacts",
                          "status", "overrides", "job", "folder"])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(hb=JSON | st.dictionaries(FIELDS, JSON), outcome=st.none() | JSON | st.dictionaries(FIELDS, JSON),
       plan=st.none() | JSON | st.lists(st.dictionaries(FIELDS, JSON), max_size=3))
def test_any_json_in_the_state_files_never_raises(hb, outcome, plan):
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp)
        d = sweep / "0"
        d.mkdir()
        (d / HEARTBEAT).write_text(json.dumps(hb))
        if outcome is not None:
            (d / "outcome.json").write_text(json.dumps(outcome))
        if plan is not None:
            (sweep / "sweep_plan.json").write_text(json.dumps(plan))
        st_ = cell_state(d, artifacts_root=sweep)
        assert st_.state in cellstate.STATES and "\n" not in st_.reason
        st_.reason.encode("utf-8")  # printable, storable
        for _, ov, s in sweep_states(sweep):
            assert s.state in cellstate.STATES and all(isinstance(o, str) for o in ov)


def test_write_heartbeat_once(tmp_path):
    rec = write_heartbeat(tmp_path / "j")
    again = write_heartbeat(tmp_path / "j", rec, artifacts="/x")
    assert again["started"] == rec["started"] and again["updated"] >= rec["updated"] and again["artifacts"] == "/x"
    assert json.loads((tmp_path / "j" / HEARTBEAT).read_text()) == again
