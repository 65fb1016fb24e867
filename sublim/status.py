"""`sublim-status SWEEP_DIR [--watch [SECONDS]] [--artifacts DIR] [--json]`: where a sweep stands.

For any sweep, local or SLURM, running or finished, from its files alone: the plan
(`sweep_plan.json`), each job folder (`outcome.json`, the `job.json` heartbeat, `metrics.json`), the
artifact store's lock files and its `events.jsonl`. Every cell's state comes from
`sublim.cellstate.sweep_states`, the function sublim-report uses, so a job whose process died shows
as dead, never as running.

Output: one header line (cells done / running / failed / dead / not started, and the time left),
then one line per cell: ok cells with their target rate and interval, running ones with the stage
they compute (the store locks held by the job's process or a stage process under it) and for how
long, failed and dead ones with their one-line reason and the job's log.

The estimate is kept simple and says what it rests on: a finished cell's duration is its
heartbeat's start to end (else the seconds its stages took in `events.jsonl`); a cell not started
yet costs the mean of those; a running cell the rest of the stage it is computing plus the mean
durations of the stages after it (stage durations: `events.jsonl` "done" rows whose keys belong to
this sweep's finished cells or whose host and pid are one of its jobs'), else the mean cell less
the time it has run. The sum is shared out over the cells running at once.

`--watch`: on a terminal the whole status is redrawn every few seconds; otherwise (a log file, a
pipe) the status is printed once and then one plain line per cell event (started, finished, failed,
dead). Either way it stops when every cell is ok, failed or dead; Ctrl-C stops it quietly.

Stdlib only (no pandas, hydra or torch): it starts in a fraction of a second on a login node.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from sublim import cellstate
from sublim.cache import EVENTS_FILE as EVENTS
from sublim.cellstate import (OUTCOME, PLAN, CellState, StoreLock, cell_state, store_locks,
                              sweep_states, text_safe)

FINAL = ("ok", "failed", "dead")
COUNT_ORDER = (("ok", "done"), ("running", "running"), ("failed", "failed"), ("dead", "dead"),
               ("not started", "not started"))
CLEAR = "\x1b[H\x1b[J"
ASCII = str.maketrans({"—": "--", "–": "-", "−": "-", "→": "->", "·": "|", "×": "x", "…": "...",
                       "≥": ">=", "≤": "<=", "±": "+/-", "\u00a0": " "})


# -- printing on any terminal ----------------------------------------------------------------------
def console(text: str, stream=None) -> str:
    """`text` as `stream` (default stdout) can encode it: typography in ASCII, anything else escaped.
    (sublim.report.cli has the same helper, but importing it pulls in pandas and matplotlib.)"""
    enc = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    try:
        return text.translate(ASCII).encode(enc, "backslashreplace").decode(enc)
    except LookupError:
        return text.translate(ASCII).encode("ascii", "backslashreplace").decode("ascii")


def say(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(console(text, stream) + "\n")
    stream.flush()


class _Once(logging.Filter):
    """A warning (a malformed plan, say) once, not at every refresh of --watch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


# -- what a job folder says --------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return cellstate.load_json(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


_YAML_KEY = re.compile(r"^( *)([A-Za-z_][\w.-]*):(?: +(.*))?$")


def yaml_value(text: str, keys: tuple[str, ...]) -> Optional[str]:
    """The plain scalar at `keys` in a block-style YAML mapping (Hydra's saved config), or None: a
    few lines instead of a YAML library, so this command stays light. Interpolations (${...}) and
    nulls are None: they cannot be resolved here."""
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _YAML_KEY.match(line)
        if not m:
            continue
        indent, key, value = len(m.group(1)), m.group(2), (m.group(3) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if tuple(k for _, k in stack) == keys:
            value = re.sub(r"\s+#.*$", "", value)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if not value or value in ("null", "~") or "${" in value:
                return None
            return value
    return None


def hydra_artifacts(job_dir: Path) -> Optional[str]:
    """The job's artifact store from Hydra's record: .hydra/config.yaml paths.artifacts, a relative
    one resolved against the folder the sweep was started from (.hydra/hydra.yaml runtime.cwd)."""
    raw = yaml_value(_read_text(job_dir / ".hydra" / "config.yaml"), ("paths", "artifacts"))
    if raw is None:
        return None
    p = Path(raw).expanduser()
    if not p.is_absolute():
        cwd = yaml_value(_read_text(job_dir / ".hydra" / "hydra.yaml"), ("hydra", "runtime", "cwd"))
        p = Path(cwd or os.getcwd()) / p
    return os.path.abspath(p)


def job_log(job_dir: Path) -> Optional[Path]:
    """The job's log: Hydra's `<job_dir>/<job name>.log` (cli.log), else any *.log there; None if none."""
    name = yaml_value(_read_text(job_dir / ".hydra" / "hydra.yaml"), ("hydra", "job", "name"))
    if name and (job_dir / f"{name}.log").is_file():
        return job_dir / f"{name}.log"
    try:
        logs = sorted(p for p in job_dir.glob("*.log") if p.is_file())
    except OSError:
        return None
    return logs[0] if logs else None


def _rate(m: dict) -> tuple[Optional[str], Optional[dict]]:
    """(what the cell measures, its rate {mean, ci_low, ci_high}) from metrics.json, or (None, None)."""
    fields = ("mean", "ci_low", "ci_high")
    for label, r in ((m.get("target"), m.get("target_rate")), ("misaligned", m.get("misaligned_rate"))):
        if isinstance(label, str) and isinstance(r, dict) and all(
                isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for k in fields):
            return label, {k: float(r[k]) for k in fields}
    return None, None


def rate_text(label: Optional[str], r: Optional[dict]) -> str:
    if r is None:
        return ""
    return f"{label} {r['mean']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}]"


# -- one snapshot of a sweep ---------------------------------------------------------------------------
@dataclass
class Cell:
    job: int | str
    overrides: list[str]
    state: CellState
    name: str
    artifacts: Optional[str] = None
    condition: Optional[str] = None
    log: Optional[str] = None
    target: Optional[str] = None
    rate: Optional[dict] = None
    keys: dict = field(default_factory=dict)
    computing: list[dict] = field(default_factory=list)  # {stage, key, since, seconds}
    started: Optional[float] = None
    duration_s: Optional[float] = None  # a finished cell's, for the estimate
    remaining_s: Optional[float] = None  # an unfinished cell's share of the estimate


@dataclass
class Estimate:
    seconds: Optional[float]
    text: str
    finished_cells: int = 0
    cell_s: Optional[float] = None
    parallel: int = 1
    stage_s: dict = field(default_factory=dict)


@dataclass
class Snapshot:
    sweep: Path
    cells: list[Cell]
    estimate: Estimate
    now: float

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in cellstate.STATES}
        for c in self.cells:
            out[c.state.state] = out.get(c.state.state, 0) + 1
        return out

    def final(self) -> bool:
        return all(c.state.state in FINAL for c in self.cells)


def is_sweep(sweep: Path) -> bool:
    return (sweep / PLAN).is_file() or bool(cellstate._job_dirs(sweep))


def _label(job: int | str) -> str:
    return f"#{job}"


def _mine(lk: StoreLock, hb: dict, host: str) -> bool:
    """Is this live lock held by the job of heartbeat `hb` or by a stage process under it?"""
    if not lk.live or lk.pid is None or lk.host != hb["host"]:
        return False
    return lk.pid == hb["pid"] or (hb["host"] == host and hb["pid"] in cellstate._ancestors(lk.pid))


def _events(root: str) -> list[dict]:
    """The store's events.jsonl rows (a torn or foreign line skipped)."""
    try:
        text = (Path(root) / EVENTS).read_text(errors="replace")
    except OSError:
        return []
    rows = []
    for ln in text.splitlines():
        try:
            row = json.loads(ln)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _seconds(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x >= 0 else None


def snapshot(sweep_dir: str | Path, artifacts: Optional[str | Path] = None, now: Optional[float] = None) -> Snapshot:
    """Every cell of the sweep with its state, name, result or current stage, and the time left."""
    sweep = Path(sweep_dir)
    now = time.time() if now is None else float(now)
    host = socket.gethostname()
    forced = os.path.abspath(artifacts) if artifacts is not None else None
    locks_of: dict[str, list[StoreLock]] = {}
    cells = []
    for job, overrides, st in sweep_states(sweep, forced, now):
        d = st.job_dir
        hb = st.heartbeat
        m = _read_json(d / "metrics.json") if d is not None and st.state != "not started" else None
        m = m if isinstance(m, dict) else None
        if m is None and d is not None and st.state != "not started":
            cj = _read_json(d / "cell.json")
            m = cj if isinstance(cj, dict) else None
        meta = m.get("cell") if m and isinstance(m.get("cell"), dict) else {}
        name = meta.get("name") if isinstance(meta.get("name"), str) else (" ".join(overrides) or "(no overrides)")
        root = forced or (hb or {}).get("artifacts") or (hydra_artifacts(d) if d is not None and d.is_dir() else None)
        cell = Cell(job, overrides, st, text_safe(name), root, started=(hb or {}).get("started"))
        if isinstance(meta.get("condition"), str):
            cell.condition = text_safe(meta["condition"])
        if m:
            keys = m.get("keys")
            cell.keys = {k: v for k, v in keys.items() if isinstance(v, str)} if isinstance(keys, dict) else {}
            if st.state == "ok":
                cell.target, cell.rate = _rate(m)
        if d is not None and st.state in ("failed", "dead", "running"):
            lg = job_log(d)
            cell.log = text_safe(str(lg)) if lg else None
        if st.state == "running" and hb is not None and root:
            if root not in locks_of:
                locks_of[root] = store_locks(root, now)
            cell.computing = [{"stage": lk.stage, "key": lk.key, "since": lk.since,
                               "seconds": (now - lk.since) if lk.since is not None else None}
                              for lk in locks_of[root] if _mine(lk, hb, host)]
        if st.state == "ok":
            cell.duration_s = _wall(d, hb)
        cells.append(cell)
    return Snapshot(sweep, cells, estimate(cells, now), now)


def _wall(job_dir: Optional[Path], hb: Optional[dict]) -> Optional[float]:
    """A finished cell's wall time: its heartbeat's start to its end (or to its outcome.json)."""
    if not hb or hb.get("started") is None:
        return None
    end = hb.get("ended")
    if end is None and job_dir is not None:
        try:
            end = (job_dir / OUTCOME).stat().st_mtime
        except OSError:
            end = None
    return max(0.0, end - hb["started"]) if end is not None else None


def estimate(cells: list[Cell], now: float) -> Estimate:
    unfinished = [c for c in cells if c.state.state in ("running", "not started")]
    if not unfinished:
        return Estimate(0.0, "nothing left to run")
    # stage durations of this sweep: done rows of its finished cells' keys, or of its jobs' processes
    finished_keys = {(s, k) for c in cells if c.state.state == "ok" for s, k in c.keys.items()}
    procs = {(c.state.heartbeat["host"], c.state.heartbeat["pid"]) for c in cells if c.state.heartbeat}
    done: dict[tuple[str, str], float] = {}
    for root in sorted({c.artifacts for c in cells if c.artifacts}):
        for row in _events(root):
            s, k, secs = row.get("stage"), row.get("key"), _seconds(row.get("seconds"))
            if row.get("event") != "done" or not isinstance(s, str) or not isinstance(k, str) or secs is None:
                continue
            if (s, k) in finished_keys or (row.get("host"), row.get("pid")) in procs:
                done[(s, k)] = secs  # the latest computation of a key counts
    per_stage: dict[str, list[float]] = {}
    for (s, _), secs in done.items():
        per_stage.setdefault(s, []).append(secs)
    stage_s = {s: sum(v) / len(v) for s, v in per_stage.items()}
    order: list[str] = []  # the pipeline's stage order, as finished cells recorded their keys
    for c in cells:
        for s in c.keys:
            if s not in order:
                order.append(s)
    durations = []
    for c in cells:
        if c.state.state != "ok":
            continue
        d = c.duration_s
        if d is None:
            parts = [done[(s, k)] for s, k in c.keys.items() if (s, k) in done]
            d = sum(parts) if parts else None
        if d is not None:
            durations.append(d)
    if not durations:
        return Estimate(None, "no estimate yet (no cell has finished)", stage_s=stage_s)
    cell_s = sum(durations) / len(durations)
    for c in unfinished:
        if c.state.state == "not started":
            c.remaining_s = cell_s
            continue
        stage = c.computing[-1] if c.computing else None
        if stage and stage["stage"] in stage_s and stage["stage"] in order:
            left = max(0.0, stage_s[stage["stage"]] - (stage["seconds"] or 0.0))
            after = order[order.index(stage["stage"]) + 1:]
            c.remaining_s = left + sum(stage_s.get(s, 0.0) for s in after)
        else:
            ran = now - c.started if c.started is not None else 0.0
            c.remaining_s = max(0.0, cell_s - ran)
    running = sum(c.state.state == "running" for c in cells)
    parallel = max(1, running)
    total = max(max(c.remaining_s for c in unfinished), sum(c.remaining_s for c in unfinished) / parallel)
    n = len(durations)
    left = "under 1 min left" if total < 60 else f"~{cellstate._ago(total)} left"
    text = (f"{left}, from {n} finished cell{'s' if n != 1 else ''} ({cellstate._ago(cell_s)} a cell, "
            f"{parallel} running at a time)")
    return Estimate(total, text, n, cell_s, parallel, stage_s)


# -- rendering ---------------------------------------------------------------------------------------
def header(snap: Snapshot) -> str:
    n = snap.counts()
    counts = ", ".join(f"{n[s]} {word}" for s, word in COUNT_ORDER)
    return f"sweep {text_safe(str(snap.sweep))}: {counts} of {len(snap.cells)} cells; {snap.estimate.text}"


def detail(c: Cell, now: float) -> str:
    """What to say after the cell's name: its result, its stage, or why it stopped."""
    st = c.state.state
    if st == "ok":
        none = f" ({c.condition}: no target rate)" if c.condition else ""
        return rate_text(c.target, c.rate) or c.state.reason + none
    if st == "running":
        hb = c.state.heartbeat or {}
        where = f"pid {hb.get('pid')} on {hb.get('host')}"
        ran = f", running for {cellstate._ago(now - c.started)}" if c.started is not None else ""
        quiet = ""
        if hb.get("updated") is not None and hb.get("host") == socket.gethostname() \
                and now - hb["updated"] > cellstate._stale_after(hb):
            quiet = f"; heartbeat silent for {cellstate._ago(now - hb['updated'])} (stopped or hung?)"
        if c.computing:
            what = ", ".join(f"{x['stage']} ({x['key'][:8]})" + (f" for {cellstate._ago(x['seconds'])}"
                                                                 if x["seconds"] is not None else "")
                             for x in c.computing)
            return f"computing {what} ({where}{ran}){quiet}"
        if not c.artifacts:
            return f"running ({where}{ran}; store unknown: pass --artifacts to see its stage){quiet}"
        return f"running ({where}{ran}); holds no store lock: between stages or waiting for another job's{quiet}"
    if st in ("failed", "dead"):
        return c.state.reason + (f" (log: {c.log})" if c.log else "")
    return ""


def cell_line(c: Cell, now: float, width: int = 0) -> str:
    d = detail(c, now)
    return f"{_label(c.job):>{width}}  {c.state.state:<11}  {c.name}" + (f"  {d}" if d else "")


def render(snap: Snapshot) -> list[str]:
    width = max((len(_label(c.job)) for c in snap.cells), default=0)
    return [header(snap)] + [cell_line(c, snap.now, width) for c in snap.cells]


def as_json(snap: Snapshot) -> dict:
    e = snap.estimate
    return {
        "sweep": text_safe(str(snap.sweep)),
        "time": snap.now,
        "counts": snap.counts() | {"total": len(snap.cells)},
        "final": snap.final(),
        "estimate": {"seconds_left": e.seconds, "text": e.text, "finished_cells": e.finished_cells,
                     "cell_seconds": e.cell_s, "running_at_once": e.parallel, "stage_seconds": e.stage_s},
        "cells": [{"job": c.job, "state": c.state.state, "reason": c.state.reason, "name": c.name,
                   "overrides": c.overrides, "job_dir": text_safe(str(c.state.job_dir)) if c.state.job_dir else None,
                   "log": c.log, "artifacts": text_safe(c.artifacts) if c.artifacts else None,
                   "target": c.target, "target_rate": c.rate, "computing": c.computing, "started": c.started,
                   "seconds_left": c.remaining_s, "line": cell_line(c, snap.now)} for c in snap.cells],
    }


def changes(before: Optional[Snapshot], after: Snapshot) -> list[str]:
    """One plain line per cell whose state changed: started, finished (its rate), failed, dead."""
    old = {c.job: c.state.state for c in before.cells} if before else {}
    out = []
    stamp = time.strftime("%H:%M:%S", time.localtime(after.now))
    for c in after.cells:
        was, st = old.get(c.job, "not started"), c.state.state
        if st == was:
            continue
        if st == "running":
            what = "started" if was == "not started" else f"running again (was {was})"
            d = f"  computing {c.computing[0]['stage']}" if c.computing else ""
            out.append(f"{stamp} {_label(c.job)} {what}: {c.name}{d}")
        elif st == "ok":
            r = rate_text(c.target, c.rate) or (f"({c.condition}: no target rate)" if c.condition else "")
            out.append(f"{stamp} {_label(c.job)} finished: {c.name}" + (f"  {r}" if r else ""))
        elif st in ("failed", "dead"):
            out.append(f"{stamp} {_label(c.job)} {st}: {c.name}  {detail(c, after.now)}")
        else:
            out.append(f"{stamp} {_label(c.job)} {st}: {c.name}")
    return out


def watch(sweep: Path, every: float, artifacts: Optional[str], sleep: Optional[Callable[[float], Any]] = None) -> int:
    """Redraw (a terminal) or print each cell event (anything else) until every cell is final."""
    tty = sys.stdout.isatty()
    before: Optional[Snapshot] = None
    while True:
        snap = snapshot(sweep, artifacts)
        if tty:
            foot = "all cells final" if snap.final() else f"refreshing every {every:g} s; Ctrl-C to stop"
            sys.stdout.write(CLEAR)
            say("\n".join(render(snap) + ["", f"{time.strftime('%H:%M:%S')}  {foot}"]))
        elif before is None:
            say("\n".join(render(snap)))
        else:
            for line in changes(before, snap):
                say(line)
            if snap.final():
                say(header(snap))
        if snap.final():
            return 0
        before = snap
        (sleep or time.sleep)(every)


# -- command line --------------------------------------------------------------------------------------
def _seconds_arg(x: str) -> Optional[float]:
    try:
        v = float(x)
    except ValueError:
        return None
    return v if v > 0 and v == v and v != float("inf") else None


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sublim-status",
        description="Where a sweep stands: cells done, running, failed, dead, not started; the stage each "
                    "running cell computes; the time left. From the sweep's files: any sweep, local or SLURM.")
    p.add_argument("sweep", nargs="?", metavar="SWEEP_DIR", help="the sweep folder (multirun/DATE/TIME, outputs/...)")
    p.add_argument("--watch", nargs="?", const="5", default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until every cell is ok, failed or dead")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="the artifact store (default: the one each job recorded)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    args = p.parse_args(argv)
    if args.sweep is None and args.watch is not None and _seconds_arg(args.watch) is None:
        args.sweep, args.watch = args.watch, "5"  # `--watch DIR`: the folder, not a number of seconds
    if args.sweep is None:
        p.error("SWEEP_DIR is required")
    if args.watch is not None:
        every = _seconds_arg(args.watch)
        if every is None:
            p.error(f"--watch {args.watch!r}: expected a number of seconds above 0")
        args.watch = every
    if args.json and args.watch is not None:
        p.error("--json and --watch do not go together: run --json again to refresh")
    return args


def _safe_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def main(argv: Optional[list[str]] = None) -> int:
    _safe_streams()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("sublim-status: warning: %(message)s"))
    handler.addFilter(_Once())
    logger = logging.getLogger("sublim")
    logger.addHandler(handler)
    try:
        return _main(parse(argv))
    finally:
        logger.removeHandler(handler)


def _main(args: argparse.Namespace) -> int:
    sweep = Path(args.sweep)
    if not sweep.is_dir():
        say(f"sublim-status: {text_safe(str(sweep))} is not a folder", err=True)
        return 2
    if not is_sweep(sweep):
        one = ""
        if cellstate._job_like(sweep):
            one = f"; it is one job's folder: {cell_state(sweep, args.artifacts).line()}"
        say(f"sublim-status: {text_safe(str(sweep))} is not a sweep folder (no {PLAN} and no job folders){one}",
            err=True)
        return 2
    try:
        if args.watch is not None:
            return watch(sweep, args.watch, args.artifacts)
        snap = snapshot(sweep, args.artifacts)
        if args.json:
            say(json.dumps(as_json(snap), indent=1))
        else:
            say("\n".join(render(snap)))
        return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `sublim-status DIR | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
