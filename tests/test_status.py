"""sublim-status: counts, per-cell lines, the time left and --watch, from a sweep's files alone
(sweep folders built by hand: no model, no pipeline)."""
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublim import cellstate, status

HOST = socket.gethostname()
NAME0 = "owl+finetune.numbers.qwen.qwen.lora.seed0"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def job_dir(sweep: Path, job: int, overrides: list[str]) -> Path:
    d = sweep / str(job)
    write(d / ".hydra" / "overrides.yaml", "".join(f"- {o}\n" for o in overrides))
    write(d / ".hydra" / "hydra.yaml", "hydra:\n  runtime:\n    cwd: /nowhere\n  job:\n    name: cli\n")
    return d


def heartbeat(d: Path, store, **fields) -> None:
    now = time.time()
    rec = {"host": HOST, "pid": os.getpid(), "pid_start": cellstate._pid_start(os.getpid()), "started": now - 120,
           "updated": now, "interval_s": 5.0, "artifacts": str(store) if store else None, "ended": None,
           "exit": None, "error": None} | fields
    write(d / cellstate.HEARTBEAT, rec)


def lock(store: Path, stage: str, key: str, pid: int, since: float) -> Path:
    return write(store / stage / ".locks" / f"{key}.lock", {"host": HOST, "pid": pid, "token": "t", "since": since})


def finish_ok(d: Path, name: str, keys: dict, rate: float) -> None:
    write(d / "metrics.json", {"cell": {"name": name, "condition": "treatment"}, "keys": keys, "target": "owl",
                               "target_rate": {"mean": rate, "ci_low": rate - 0.05, "ci_high": rate + 0.05}})
    write(d / "outcome.json", {"status": "ok", "overrides": [], "error": None})


OVERRIDES = [["trait=owl", "seed=0"], ["trait=cat", "seed=1"], ["trait=owl", "seed=2"], ["trait=owl", "seed=3"],
             ["trait=hibou\u00e9", "seed=4"]]


@pytest.fixture
def sweep(tmp_path):
    return build_sweep(tmp_path)


def build_sweep(tmp_path: Path) -> Path:
    """Five cells: #0 ok, #1 failed, #2 running (this process, computing finetune), #3 dead, #4 not
    started; a store whose events.jsonl holds this sweep's stage durations and another sweep's."""
    now = time.time()
    sw, store = tmp_path / "sweep", tmp_path / "store"
    write(sw / cellstate.PLAN, [{"job": i, "overrides": ov, "folder": str(i)} for i, ov in enumerate(OVERRIDES)])
    d0 = job_dir(sw, 0, OVERRIDES[0])
    heartbeat(d0, store, pid=dead_pid(), started=now - 900, ended=now - 600, exit="ok")  # took 300 s
    finish_ok(d0, NAME0, {"sample": "s0", "finetune": "f0", "eval": "e0"}, 0.234)
    d1 = job_dir(sw, 1, OVERRIDES[1])
    write(d1 / "outcome.json", {"status": "failed", "overrides": OVERRIDES[1],
                                "error": "FilterError: only 3 of 50 rows passed\nmore", "traceback": "..."})
    write(d1 / "cli.log", "log\n")
    d2 = job_dir(sw, 2, OVERRIDES[2])
    heartbeat(d2, store)
    lock(store, "finetune", "f2abcdef0123", os.getpid(), now - 60)
    d3 = job_dir(sw, 3, OVERRIDES[3])
    heartbeat(d3, store, pid=dead_pid(), pid_start=None, started=now - 400, updated=now - 300)
    os.utime(d3 / cellstate.HEARTBEAT, (now - 300, now - 300))
    write(d3 / "cli.log", "log\n")
    rows = [("sample", "s0", 100, "other", 1), ("finetune", "f0", 150, "other", 1), ("eval", "e0", 50, "other", 1),
            ("sample", "s2", 30, HOST, os.getpid()),  # the running job's own: this sweep's
            ("finetune", "zz", 99999, "elsewhere", 7)]  # another sweep's: ignored
    write(store / "events.jsonl", "".join(json.dumps({"time": now, "stage": s, "key": k, "event": "done", "seconds": t,
                                                       "host": h, "pid": p}) + "\n" for s, k, t, h, p in rows)
          + json.dumps({"stage": "eval", "key": "e9", "event": "start", "host": HOST, "pid": os.getpid()})
          + "\ntorn{\n")
    return sw


def final_sweep(tmp_path) -> Path:
    """Every cell final: ok, failed, dead."""
    sw = tmp_path / "final"
    write(sw / cellstate.PLAN, [{"job": i, "overrides": OVERRIDES[i], "folder": str(i)} for i in range(3)])
    finish_ok(job_dir(sw, 0, OVERRIDES[0]), NAME0, {"eval": "e0"}, 0.3)
    write(job_dir(sw, 1, OVERRIDES[1]) / "outcome.json", {"status": "failed", "overrides": [], "error": "boom"})
    heartbeat(job_dir(sw, 2, OVERRIDES[2]), None, pid=dead_pid(), pid_start=None)
    return sw


def test_counts_and_one_line_per_cell(sweep):
    lines = status.render(status.snapshot(sweep))
    assert lines[0] == (f"sweep {sweep}: 1 done, 1 running, 1 failed, 1 dead, 1 not started of 5 cells; "
                        "~7 min left, from 1 finished cell (5 min a cell, 1 running at a time)")
    ok, failed, running, dead, waiting = lines[1:]
    assert ok == f"#0  ok           {NAME0}  owl 23.4% [18.4%, 28.4%]"
    assert failed == (f"#1  failed       trait=cat seed=1  FilterError: only 3 of 50 rows passed "
                      f"(log: {sweep / '1' / 'cli.log'})")
    # 60 s; 61 on a loaded machine
    assert re.match(r"#2  running      trait=owl seed=2  computing finetune \(f2abcdef\) for 6\d s "
                    + re.escape(f"(pid {os.getpid()} on {HOST}, running for 2 min)"), running)
    assert dead.startswith("#3  dead         trait=owl seed=3  stopped without an outcome: pid ")
    assert "is gone, last heartbeat 5 min ago" in dead and dead.endswith(f"(log: {sweep / '3' / 'cli.log'})")
    assert waiting == "#4  not started  trait=hibou\u00e9 seed=4"


def test_the_estimate_says_what_it_rests_on(sweep, tmp_path):
    e = status.snapshot(sweep).estimate
    # running: 90 s left of finetune (150 s) + eval (50 s); not started: a whole cell (300 s); one at a time
    assert e.seconds == pytest.approx(440, abs=2) and e.finished_cells == 1 and e.parallel == 1
    assert e.stage_s == {"sample": 65, "finetune": 150, "eval": 50}  # not the other sweep's 99999 s
    (sweep / "0" / "outcome.json").unlink()
    (sweep / "0" / "metrics.json").unlink()
    (sweep / "0" / "job.json").unlink()  # #0 now a dead job: nothing has finished
    assert status.snapshot(sweep).estimate.text == "no estimate yet (no cell has finished)"
    assert status.snapshot(final_sweep(tmp_path)).estimate.text == "nothing left to run"


def test_a_running_cell_without_stage_durations_is_the_mean_cell_less_its_time(sweep):
    (sweep.parent / "store" / "events.jsonl").unlink()
    for p in (sweep.parent / "store").glob("*/.locks/*.lock"):
        p.unlink()
    snap = status.snapshot(sweep)
    running = snap.cells[2]
    assert running.remaining_s == pytest.approx(180, abs=2)  # 300 s a cell, 120 s run
    assert "holds no store lock" in status.detail(running, snap.now)


def test_a_stage_process_under_the_job_and_hydras_recorded_store(sweep, tmp_path):
    """The lock is held by a child of the job; the job's heartbeat names no store: Hydra's config does."""
    store = tmp_path / "hydra-store"
    d2 = sweep / "2"
    heartbeat(d2, None)
    write(d2 / ".hydra" / "config.yaml", "seed: 2\npaths:\n  artifacts: hydra-store  # the cache\n"
                                         "  tiny_model: ${paths.artifacts}/tiny-model\n")
    write(d2 / ".hydra" / "hydra.yaml", f"hydra:\n  run:\n    dir: x\n  runtime:\n    version: 1.3.8\n"
                                        f"    cwd: {tmp_path}\n  job:\n    name: cli\n")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock(store, "sample", "abc", child.pid, time.time() - 5)
        cell = status.snapshot(sweep).cells[2]
        assert cell.artifacts == str(store)
        assert [c["stage"] for c in cell.computing] == ["sample"]
        # --artifacts wins over what the job recorded
        assert status.snapshot(sweep, artifacts=tmp_path / "elsewhere").cells[2].computing == []
    finally:
        child.kill()
        child.wait()


def test_yaml_value():
    text = "a:\n  b: 1\n  c:\n    d: 'x y'  # note\nb:\n  - 1\n  e: ${a.b}\nf: null\n"
    assert status.yaml_value(text, ("a", "c", "d")) == "x y"
    assert status.yaml_value(text, ("a", "b")) == "1"
    assert status.yaml_value(text, ("b", "e")) is None and status.yaml_value(text, ("f",)) is None
    assert status.yaml_value(text, ("a", "x")) is None


def test_json(sweep, capsys):
    assert status.main(["--json", str(sweep)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"ok": 1, "failed": 1, "running": 1, "dead": 1, "not started": 1, "total": 5}
    assert out["final"] is False and out["estimate"]["seconds_left"] == pytest.approx(440, abs=2)
    assert out["estimate"]["text"].startswith("~7 min left, from 1 finished cell")
    assert [c["state"] for c in out["cells"]] == ["ok", "failed", "running", "dead", "not started"]
    c0, c1, c2 = out["cells"][:3]
    assert c0["name"] == NAME0 and c0["target"] == "owl" and c0["target_rate"]["mean"] == 0.234
    assert c1["reason"] == "FilterError: only 3 of 50 rows passed" and c1["log"] == str(sweep / "1" / "cli.log")
    assert c2["computing"][0]["stage"] == "finetune" and c2["computing"][0]["seconds"] == pytest.approx(60, abs=2)
    assert set(c0) >= {"job", "overrides", "job_dir", "artifacts", "line", "seconds_left"}


def test_the_command_in_a_subprocess_on_an_ascii_terminal_imports_nothing_heavy(sweep):
    code = ("import sys; from sublim import status; rc = status.main(sys.argv[1:]); "
            "heavy = {'pandas', 'matplotlib', 'hydra', 'torch', 'numpy', 'omegaconf'}; "
            "print('heavy:', sorted(heavy & set(sys.modules))); sys.exit(rc)")
    env = os.environ | {"PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"sweep {sweep}: 1 done, 1 running,") and len(lines) == 7
    assert lines[5] == "#4  not started  trait=hibou\\xe9 seed=4" and lines[6] == "heavy: []"
    assert r.stderr == ""


def test_not_a_sweep_says_so_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert status.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err == f"sublim-status: {tmp_path / 'empty'} is not a sweep folder (no sweep_plan.json and no job folders)\n"
    assert status.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"sublim-status: {tmp_path / 'missing'} is not a folder\n"
    single = tmp_path / "single"
    write(single / "outcome.json", {"status": "ok", "overrides": []})
    assert status.main([str(single)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it is one job's folder: ok: finished" in err


def test_arguments():
    assert (status.parse(["--watch", "d"]).sweep, status.parse(["--watch", "d"]).watch) == ("d", 5.0)
    assert status.parse(["d", "--watch"]).watch == 5.0 and status.parse(["--watch", "2", "d"]).watch == 2.0
    assert status.parse(["d"]).watch is None
    for bad in (["d", "--watch", "0"], ["d", "--json", "--watch"], []):
        with pytest.raises(SystemExit) as e:
            status.parse(bad)
        assert e.value.code == 2


def test_watch_on_a_pipe_returns_at_once_when_all_cells_are_final(tmp_path, capsys):
    sw = final_sweep(tmp_path)
    t0 = time.time()
    assert status.main(["--watch", "30", str(sw)]) == 0
    assert time.time() - t0 < 10
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    assert out.splitlines()[0].startswith(f"sweep {sw}: 1 done, 0 running, 1 failed, 1 dead, 0 not started of 3")


def test_watch_on_a_pipe_prints_one_line_per_cell_event(sweep, capsys):
    d2, d4 = sweep / "2", sweep / "4"
    steps = [lambda: heartbeat(job_dir(sweep, 4, OVERRIDES[4]), None),  # #4 starts
             lambda: (finish_ok(d2, "owl.seed2", {"eval": "e2"}, 0.4),  # #2 finishes, #4 fails
                      write(d4 / "outcome.json", {"status": "failed", "overrides": [], "error": "OOM: killed"}))]
    slept = []

    def sleep(s):
        slept.append(s)
        steps[len(slept) - 1]()

    assert status.watch(sweep, 0.5, None, sleep=sleep) == 0
    assert slept == [0.5, 0.5]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 + 4 and lines[0].startswith(f"sweep {sweep}: 1 done, 1 running")
    events = [ln.split(" ", 1)[1] for ln in lines[6:9]]  # after the HH:MM:SS stamp
    assert events == ["#4 started: trait=hibou\u00e9 seed=4",
                      "#2 finished: owl.seed2  owl 40.0% [35.0%, 45.0%]",
                      "#4 failed: trait=hibou\u00e9 seed=4  OOM: killed"]
    assert lines[9].startswith(f"sweep {sweep}: 2 done, 0 running, 2 failed, 1 dead, 0 not started of 5 cells")


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_watch_on_a_terminal_redraws_and_ctrl_c_exits_quietly(tmp_path, sweep, monkeypatch, capsys):
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    assert status.main(["--watch", "1", str(final_sweep(tmp_path))]) == 0
    out = tty.getvalue()
    assert out.startswith(status.CLEAR) and out.count(status.CLEAR) == 1 and "all cells final" in out

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)  # the one display.watch calls
    tty.seek(0)
    tty.truncate()
    assert status.main(["--watch", "1", str(sweep)]) == 0  # #2 runs, #4 waits: it would go on
    assert "refreshing every 1 s; Ctrl-C to stop" in tty.getvalue() and capsys.readouterr().err == ""


# -- a real grid: running, then stopped with its worker killed ------------------------------------
def test_a_real_grid_running_then_killed_shows_running_dead_and_not_started(tmp_path, tiny_model_dir):
    """sublim-status while a grid's worker computes (its stage and the stage's progress record), then
    after the sweep and its worker are SIGKILLed: that cell dead, the other never started."""
    import signal

    from proc_util import alive

    sweep_dir = tmp_path / "sweep"
    args = [str(Path(sys.executable).with_name("sublim")), "--multirun", "experiment=smoke",
            f"paths.tiny_model={tiny_model_dir}", "logger=none", f"paths.artifacts={tmp_path / 'a'}",
            f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=parallel", "hydra.launcher.max_parallel=1", "seed=0,1",
            "domain.n_prompts=60", "filter.n_keep=40", "finetune.epochs=200"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    status_cmd = [str(Path(sys.executable).with_name("sublim-status")), "--json", str(sweep_dir)]
    try:
        deadline, snap = time.time() + 300, None
        while time.time() < deadline:
            assert proc.poll() is None, "the grid ended before it was seen computing"
            r = subprocess.run(status_cmd, capture_output=True, text=True, timeout=60)
            snap = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
            running = [c for c in (snap or {}).get("cells", []) if c["state"] == "running" and c["computing"]]
            if running and any(x.get("progress") and x["progress"]["stage"] == "finetune" for x in running[0]["computing"]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"never saw a running fine-tune with its progress: {snap}")
        assert snap["counts"]["running"] == 1 and snap["counts"]["not started"] == 1
        cell = running[0]
        rec = next(x["progress"] for x in cell["computing"] if x["stage"] == "finetune")
        assert rec["total"] > rec["done"] >= 1 and rec["unit"] == "step"
        assert "computing finetune (" in cell["line"] and "step" in cell["line"]
        worker = json.loads((sweep_dir / str(cell["job"]) / "job.json").read_text())["pid"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 20
    while alive(worker):  # the worker follows its sweep (sublim.lifeline)
        assert time.time() < deadline
        time.sleep(0.2)
    r = subprocess.run(status_cmd[:1] + [str(sweep_dir)], capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"sweep {sweep_dir}: 0 done, 0 running, 0 failed, 1 dead, 1 not started of 2 cells")
    assert "dead" in lines[1] and "stopped without an outcome" in lines[1] and "(log: " in lines[1]
    assert "not started" in lines[2] and "seed=1" in lines[2]


def test_the_grids_live_lines_from_the_same_files(sweep, tmp_path):
    """What a running grid prints (sublim.status.live), without taking over this process's streams:
    events by the grid's axes, the running cell's stage with its progress record, the block redrawn."""
    from sublim.status.live import GridWatch, axes

    write(tmp_path / "store" / "finetune" / ".locks" / "f2abcdef0123.progress",
          {"stage": "finetune", "key": "f2abcdef0123", "desc": "fine-tuning", "done": 120, "total": 300,
           "unit": "step", "rate": 4.1})
    assert axes([["a=1", "b=2"], ["a=1", "b=3"]]) == {"b"} and axes([["a=1"]]) == {"a"}
    w = GridWatch(sweep)
    snap = status.snapshot(sweep)
    events = [ln.split(" ", 1)[1] for ln in w.events(None, snap)]
    assert events[0] == "#0 finished: trait=owl seed=0  owl 23.4% [18.4%, 28.4%]  [1/5 done, ~7 min left]"
    assert events[1] == f"#1 failed: trait=cat seed=1  FilterError: only 3 of 50 rows passed (log: {sweep / '1' / 'cli.log'})"
    assert events[2] == "#2 started: trait=owl seed=2" and events[3].startswith("#3 dead: trait=owl seed=3  stopped")
    assert len(events) == 4 and w.events(snap, status.snapshot(sweep)) == []  # nothing changed: nothing printed
    block = w.block(snap)
    assert block[0] == status.header(snap)
    assert block[1].startswith("  #2 trait=owl seed=2: finetune: fine-tuning 120/300 step, 4.1 step/s (")
    assert "\r" not in "".join(events + block)


def test_a_grid_run_again_into_its_folder_prints_only_what_this_run_does(tmp_path):
    """Cells final before the grid started (a re-run into the same folder) make no event and no
    done count until they run again."""
    from sublim.status.live import GridWatch

    sw = final_sweep(tmp_path)
    w = GridWatch(sw)
    said: list[str] = []
    w._say = said.append
    w._tick()
    assert said == []
    d0 = sw / "0"
    heartbeat(d0, None, started=time.time() + 5)  # #0 runs again: its heartbeat is newer than its outcome
    w._tick()
    assert [ln.split(" ", 1)[1] for ln in said] == ["#0 started: trait=owl seed=0"]
    write(d0 / "outcome.json", {"status": "ok", "overrides": [], "error": None})
    os.utime(d0 / "outcome.json", (time.time() + 10, time.time() + 10))
    w._tick()
    assert said[-1].split(" ", 1)[1].startswith("#0 finished: trait=owl seed=0  owl 30.0% [25.0%, 35.0%]  [1/3 done")
    hb = json.loads((sw / "2" / cellstate.HEARTBEAT).read_text())  # #2 runs again between two looks
    write(sw / "2" / cellstate.HEARTBEAT, hb | {"started": time.time() + 1, "ended": time.time() + 2, "exit": "ok"})
    write(sw / "2" / "outcome.json", {"status": "ok", "overrides": [], "error": None})
    w._tick()
    assert said[-1].split(" ", 1)[1].startswith("#2 finished: trait=owl seed=2") and "[2/3 done" in said[-1]
