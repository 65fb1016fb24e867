"""sublim-store on a store built by hand: du numbers, the closure `unused` keeps, prune's dry run,
what prune --yes removes and keeps (live locks, a lock taken meanwhile), errors in one line."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublim import inventory as inv_mod
from sublim.inventory import (StoreError, closure, disk_usage, experiment_usage, find_unused, job_refs, prune,
                              scan)

BIN = Path(sys.executable).parent
OLD = time.time() - 3 * 86400  # three days ago
KEYS = {name: f"{i:02x}" * 10 for i, name in enumerate(
    ["R", "C", "T", "S1", "F1", "FT1", "E1", "S2", "F2", "S3", "FTlive", "M1", "M2", "Ebad", "Wdead", "Wlive",
     "Lalone", "S4"], start=1)}
K = KEYS.__getitem__


def _publish(root: Path, stage: str, key: str, spec: dict, payload: int, old: bool = True,
             files: dict | None = None) -> int:
    """An artifact as sublim.pipeline.record writes it; returns its size in bytes."""
    d = root / stage / key
    d.mkdir(parents=True)
    record = {"stage": stage, "version": 2, "key": key, "spec": spec,
              "provenance": {"libraries": {"torch": "2.13.0+cpu", "transformers": "5.19.0"}, "sublim": "abc123+dirty",
                             "runtime": {"artifacts": str(root), "batch_size": 64},
                             "inputs": {r: str(root / r.split(":")[0]) for r in _refs(spec)}}}
    (d / "spec.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    (d / "payload.bin").write_bytes(b"x" * payload)
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    if old:
        for p in d.iterdir():
            os.utime(p, (OLD, OLD))
    return sum(p.stat().st_size for p in d.iterdir())


def _refs(spec) -> list[str]:
    if isinstance(spec, dict):
        return [r for v in spec.values() for r in _refs(v)]
    return [spec] if isinstance(spec, str) and ":" in spec and not spec.startswith(("sha256:", "hub:")) \
        and "/" in spec else []


def _lock(root: Path, stage: str, key: str, live: bool) -> Path:
    p = root / stage / ".locks" / f"{key}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "t", "since": time.time()}))
    if not live:  # this pid is alive, but the heartbeat stopped an hour ago: stale
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    return p


MNIST_1 = {"teacher": {"mean": 0.9}, "reference": {"mean": 0.1}, "arms": {"aux": {"mean": 0.5}}, "n_seeds": 3}
MNIST_2 = MNIST_1 | {"n_seeds": 5}


@pytest.fixture
def store(tmp_path):
    """A store, two sweeps' job folders, live and stale locks, leftovers; returns (root, jobs, sizes)."""
    root = tmp_path / "artifacts"
    sz = {}
    sz["R"] = _publish(root, "reference", K("R"), {"model": {"seed": 0}}, 500)
    sz["C"] = _publish(root, "convert", K("C"), {"content": "sha256:feed"}, 700)
    sz["T"] = _publish(root, "teacher", K("T"), {"base": {"weights": f"reference:{K('R')}/model"}}, 300)
    sz["S1"] = _publish(root, "sample", K("S1"), {
        "teacher": {"weights": f"reference:{K('R')}/model", "adapter": f"teacher:{K('T')}/adapter"},
        "system_prompt": "You love owls: they are great", "note": "not:a-key"}, 1000)
    sz["F1"] = _publish(root, "filter", K("F1"), {"data": f"sample:{K('S1')}/samples.jsonl"}, 200)
    sz["FT1"] = _publish(root, "finetune", K("FT1"), {"data": f"filter:{K('F1')}/train.jsonl",
                                                       "student": {"weights": f"convert:{K('C')}/model"}}, 4000)
    sz["E1"] = _publish(root, "eval", K("E1"), {"model": {"weights": f"convert:{K('C')}/model",
                                                           "adapter": f"finetune:{K('FT1')}/adapter"}}, 100)
    # unused: another teacher's sample (published just now) and its filter
    sz["S2"] = _publish(root, "sample", K("S2"), {"teacher": {"weights": "hub:org/m@abc"}}, 2000, old=False)
    sz["F2"] = _publish(root, "filter", K("F2"), {"data": f"sample:{K('S2')}/samples.jsonl"}, 150)
    sz["S3"] = _publish(root, "sample", K("S3"), {"teacher": {"weights": "hub:org/m@def"}}, 50)
    sz["S4"] = _publish(root, "sample", K("S4"), {"teacher": {"weights": "hub:org/m@123"}}, 60)
    sz["FTlive"] = _publish(root, "finetune", K("FTlive"), {"data": f"filter:{K('F2')}/train.jsonl"}, 80)
    _lock(root, "finetune", K("FTlive"), live=True)
    sz["M1"] = _publish(root, "mnist", K("M1"), {"settings": {"seed": 0}},
                        10, files={"metrics.json": json.dumps(MNIST_1)})
    sz["M2"] = _publish(root, "mnist", K("M2"), {"settings": {"seed": 1}},
                        10, files={"metrics.json": json.dumps(MNIST_2)})
    bad = root / "eval" / K("Ebad")
    bad.mkdir()
    (bad / "spec.json").write_text("{not json")
    sz["Ebad"] = len("{not json")
    # a killed job's .work (stale lock), a running job's .work (live lock), a lone stale lock
    wd = root / "filter" / ".work" / K("Wdead")
    wd.mkdir(parents=True)
    (wd / "part.jsonl").write_bytes(b"y" * 333)
    os.utime(wd / "part.jsonl", (OLD, OLD))
    _lock(root, "filter", K("Wdead"), live=False)
    wl = root / "finetune" / ".work" / K("Wlive")
    wl.mkdir(parents=True)
    (wl / "checkpoint.bin").write_bytes(b"z" * 444)
    _lock(root, "finetune", K("Wlive"), live=True)
    _lock(root, "sample", K("Lalone"), live=False)
    # not a stage: the tiny model, built by sublim-tiny-model into the store's folder
    (root / "tiny-model").mkdir()
    (root / "tiny-model" / "spec.json").write_text("{}")
    (root / "tiny-model" / "config.json").write_text("{}")
    t = time.time()
    events = [{"time": t - 10, "stage": "sample", "key": K("S1"), "event": "hit"}] * 3 + [
        {"time": OLD, "stage": "sample", "key": K("S1"), "event": "done", "seconds": 5.5}]
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"time": 1, "sta\n')
    # jobs: one names only its eval (the closure keeps the rest), one a sample (cell.json), one MNIST
    jobs = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    for n, (name, body) in enumerate([("metrics.json", {"cell": {"name": "owl", "experiment": "animals"},
                                                         "keys": {"eval": K("E1")}}),
                                      ("cell.json", {"cell": {"name": "x", "experiment": "phase1"},
                                                     "keys": {"sample": K("S3")}}),
                                      ("metrics.json", MNIST_1 | {"provenance": {"sublim": "abc"}})]):
        (jobs / str(n) / ".hydra").mkdir(parents=True)
        (jobs / str(n) / name).write_text(json.dumps(body))
    (jobs / "2" / ".hydra" / "config.yaml").write_text(
        f"task: mnist\nexperiment_name: mnist\npaths:\n  artifacts: {root}\n")
    return root, tmp_path / "multirun", sz


def test_du_counts_and_sizes_per_stage(store):
    root, _, sz = store
    inv = scan(root)
    du = disk_usage(inv)
    st = du["stages"]
    assert set(st) == {"reference", "convert", "teacher", "sample", "filter", "finetune", "eval", "mnist"}
    assert st["sample"]["published"] == {"count": 4, "bytes": sz["S1"] + sz["S2"] + sz["S3"] + sz["S4"]}
    assert st["filter"]["published"] == {"count": 2, "bytes": sz["F1"] + sz["F2"]}
    assert st["filter"]["unfinished"] == {"count": 1, "bytes": 333, "running": 0}
    assert st["finetune"]["unfinished"] == {"count": 1, "bytes": 444, "running": 1}
    assert (st["filter"]["stale_locks"], st["sample"]["stale_locks"], st["finetune"]["stale_locks"]) == (1, 1, 0)
    # the malformed spec.json is reported, not counted, not fatal
    assert st["eval"]["published"] == {"count": 1, "bytes": sz["E1"]}
    assert st["eval"]["unreadable"] == {"count": 1, "bytes": sz["Ebad"]}
    assert [p for p in inv.problems if "spec.json: unreadable" in p and K("Ebad") in p]
    assert [p for p in inv.problems if "events.jsonl: 1 malformed line" in p]
    published = sum(v for k, v in sz.items() if k != "Ebad")
    assert du["total"]["published"] == {"count": 14, "bytes": published}
    assert du["other"]["tiny-model"] == 4 and "events.jsonl" in du["other"]
    assert du["total"]["bytes"] == published + 333 + 444 + sz["Ebad"] + sum(du["other"].values())
    s1 = inv.artifact("sample", K("S1"))
    assert s1.hits == 3 and s1.computed_s == 5.5 and s1.sublim == "abc123+dirty"
    assert s1.upstream == [f"reference:{K('R')}/model", f"teacher:{K('T')}/adapter"]  # "not:a-key", prose: no refs
    assert "538.0 MB" == inv_mod.human(538_000_000) and inv_mod.human(999) == "999 B"


def test_unused_keeps_the_closure_of_what_jobs_name(store):
    root, jobs, _ = store
    inv = scan(root)
    refs = job_refs([jobs], inv)
    assert refs.jobs == 3 and refs.mnist_matched == 1 and not refs.problems
    assert refs.keys == {("eval", K("E1")), ("sample", K("S3")), ("mnist", K("M1"))}
    kept = {("eval", K("E1")), ("finetune", K("FT1")), ("filter", K("F1")), ("sample", K("S1")),
            ("teacher", K("T")), ("reference", K("R")), ("convert", K("C")), ("sample", K("S3")), ("mnist", K("M1"))}
    assert closure(inv, refs.keys) == kept
    u = find_unused(inv, [jobs], keep_recent_s=0)
    assert {i.label for i in u.items} == {
        f"sample/{K('S2')}", f"sample/{K('S4')}", f"filter/{K('F2')}", f"mnist/{K('M2')}",
        f"filter/.work/{K('Wdead')}", f"sample/.locks/{K('Lalone')}.lock"}
    assert {label for label, _ in u.kept_live} == {f"finetune/{K('FTlive')}", f"finetune/.work/{K('Wlive')}"}
    # by default what was used within the hour stays: S2 was published just now
    recent = find_unused(inv, [jobs])
    assert f"sample/{K('S2')}" in {i.label for i in recent.kept_recent}
    assert f"sample/{K('S2')}" not in {i.label for i in recent.items}


def test_prune_dry_run_removes_nothing(store):
    root, jobs, sz = store
    before = sorted(str(p) for p in root.rglob("*"))
    inv = scan(root)
    lines: list[str] = []
    res = prune(inv, find_unused(inv, [jobs], keep_recent_s=0), yes=False, say=lines.append)
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert res.dry_run and res.freed == sz["S2"] + sz["S4"] + sz["F2"] + sz["M2"] + 333
    assert len(lines) == 6 and all(line.startswith("would remove ") for line in lines)


def test_prune_yes_removes_exactly_the_unused(store, monkeypatch):
    root, jobs, sz = store
    inv = scan(root)
    u = find_unused(inv, [jobs], keep_recent_s=0)
    _lock(root, "sample", K("S4"), live=True)  # a job starts computing S4 between `unused` and the removal
    real_rename = os.rename

    def rename(src, dst):  # F2's folder cannot be moved: one error line, the rest goes on
        if Path(src).name == K("F2"):
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)  # the one removal.py calls
    lines: list[str] = []
    res = prune(inv, u, yes=True, say=lines.append)
    gone = {f"sample/{K('S2')}", f"mnist/{K('M2')}", f"filter/.work/{K('Wdead')}", f"sample/.locks/{K('Lalone')}.lock"}
    assert {i.label for i in res.removed} == gone
    assert res.freed == sz["S2"] + sz["M2"] + 333
    assert [i.label for i, _ in res.kept] == [f"sample/{K('S4')}"]
    assert len(res.errors) == 1 and f"filter/{K('F2')}" in res.errors[0] and "Permission denied" in res.errors[0]
    assert len(lines) == 6 and "\n" not in "".join(lines)
    for p in [root / "sample" / K("S2"), root / "mnist" / K("M2"), root / "filter" / ".work" / K("Wdead"),
              root / "filter" / ".locks" / f"{K('Wdead')}.lock", root / "sample" / ".locks" / f"{K('Lalone')}.lock"]:
        assert not p.exists(), p
    for key in ("E1", "FT1", "F1", "S1", "T", "R", "C", "S3", "M1", "FTlive", "Ebad", "F2", "S4"):
        stage = {"E": "eval", "F": "filter", "S": "sample", "T": "teacher", "R": "reference", "C": "convert",
                 "M": "mnist"}[key[0]] if not key.startswith("FT") else "finetune"
        assert (root / stage / K(key) / "spec.json").exists(), key
    assert (root / "finetune" / ".work" / K("Wlive") / "checkpoint.bin").exists()
    assert (root / "finetune" / ".locks" / f"{K('FTlive')}.lock").exists()  # the live locks are untouched
    assert (root / "sample" / ".locks" / f"{K('S4')}.lock").exists()
    assert not (root / "sample" / ".pruning").exists() and (root / "tiny-model" / "config.json").exists()


def test_cli_prune_then_unused_lists_nothing_more(store):
    root, jobs, _ = store
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    args = [str(BIN / "sublim-store"), "prune", "--artifacts", str(root), "--jobs", str(jobs), "--keep-recent", "0"]
    r = subprocess.run(args + ["--yes"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert sum(line.startswith("removed ") for line in out) == 6 and out[-1].startswith("freed ")
    assert f"{K('Ebad')}/spec.json: unreadable" in r.stderr and len(r.stderr.splitlines()) == 2  # + events.jsonl
    after = find_unused(scan(root), [jobs], keep_recent_s=0)
    assert after.items == []


def test_errors_are_one_line_naming_the_path_and_the_fix(tmp_path, capsys, store):
    assert inv_mod.main(["du", "--artifacts", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err and "--artifacts" in err
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "readme.txt").write_text("hi")
    assert inv_mod.main(["du", "--artifacts", str(tmp_path / "notastore")]) == 2
    assert "not a sublim artifact store" in capsys.readouterr().err
    root, _, _ = store
    empty = tmp_path / "empty_jobs"
    empty.mkdir()
    with pytest.raises(StoreError, match="no job folder"):  # never "everything is unused" by a typo
        find_unused(scan(root), [empty])
    assert inv_mod.main(["unused", "--artifacts", str(root), "--jobs", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert inv_mod.main(["ls", "sample", "--artifacts", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"  {K('S1')}" in out and "3 hits" in out and f"teacher:{K('T')}/adapter" in out and "abc123+dirty" in out


def test_du_per_experiment_counts_shared_artifacts_in_each(store, capsys):
    root, jobs, sz = store
    # another experiment's job trains on the same filtered data (F1 and all above it are shared)
    other = jobs / "2025-01-02" / "0"
    other.mkdir(parents=True)
    (other / "cell.json").write_text(json.dumps({"cell": {"name": "y", "experiment": "controls"},
                                                 "keys": {"filter": K("F1")}}))
    inv = scan(root)
    ex = experiment_usage(inv, job_refs([jobs], inv))
    rows = ex["experiments"]
    assert set(rows) == {"animals", "phase1", "mnist", "controls"}
    animals = ["E1", "FT1", "F1", "S1", "T", "R", "C"]
    assert rows["animals"] == {"jobs": 1, "artifacts": 7, "bytes": sum(sz[k] for k in animals),
                               "own_bytes": sz["E1"] + sz["FT1"] + sz["C"]}
    assert rows["controls"] == {"jobs": 1, "artifacts": 4, "bytes": sum(sz[k] for k in ("F1", "S1", "T", "R")),
                                "own_bytes": 0}
    assert rows["phase1"]["bytes"] == rows["phase1"]["own_bytes"] == sz["S3"]
    assert rows["mnist"] == {"jobs": 1, "artifacts": 1, "bytes": sz["M1"], "own_bytes": sz["M1"]}
    idle = ("S2", "S4", "F2", "FTlive", "M2")
    assert ex["none"] == {"artifacts": len(idle), "bytes": sum(sz[k] for k in idle)}
    assert inv_mod.main(["du", "--artifacts", str(root), "--jobs", str(jobs)]) == 0
    out = capsys.readouterr().out
    assert "experiment" in out and any(line.startswith("controls ") and line.rstrip().endswith("0 B")
                                       for line in out.splitlines())
    assert inv_mod.main(["du", "--artifacts", str(root), "--jobs", str(jobs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_experiment"] == ex


def test_a_sweep_plan_keeps_what_its_unfinished_cells_will_reuse(tmp_path, fake_model):
    """A grid killed part way: cell 0 finished, cell 1 computed its teacher data and was killed
    before it wrote anything, cell 2's config no longer composes. Cell 1's data stays (the re-run
    reuses it); what no cell plans goes; cell 2 is one line."""
    from config_util import plan_cell, typed

    root = tmp_path / "artifacts"
    base = ["experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={root}"]
    cells = [base + ["data_seed=0"], base + ["data_seed=1"], base + ["eval.kind=no_such_kind"]]
    done = {s.stage: s.key for s in plan_cell(typed(*cells[0])).steps}
    todo = {s.stage: s.key for s in plan_cell(typed(*cells[1])).steps}
    for stage, key in done.items():
        _publish(root, stage, key, {}, 10)
    for stage in ("sample", "filter"):  # what cell 1 computed before it was killed
        _publish(root, stage, todo[stage], {}, 20)
    _publish(root, "sample", K("S3"), {}, 30)  # no cell plans it
    sweep = tmp_path / "multirun" / "grid"
    sweep.mkdir(parents=True)
    (sweep / "sweep_plan.json").write_text(json.dumps(
        [{"job": i, "overrides": ov, "folder": str(i)} for i, ov in enumerate(cells)]))
    (sweep / "0").mkdir()
    (sweep / "0" / "outcome.json").write_text(json.dumps({"status": "ok", "overrides": cells[0]}))
    (sweep / "0" / "metrics.json").write_text(json.dumps({"cell": {"experiment": "smoke"}, "keys": done}))
    inv = scan(root)
    refs = job_refs([tmp_path / "multirun"], inv)
    assert refs.jobs == 1 and refs.planned == 1
    assert refs.by_job[f"{sweep}#1"] == set(todo.items())
    assert refs.experiment[f"{sweep}#1"] == typed(*cells[1]).experiment_name
    assert len(refs.problems) == 1 and "cell #2" in refs.problems[0] and "no_such_kind" in refs.problems[0]
    u = find_unused(inv, [tmp_path / "multirun"], keep_recent_s=0)
    assert {i.label for i in u.items} == {f"sample/{K('S3')}"}
    assert {("sample", todo["sample"]), ("filter", todo["filter"])} <= u.used
