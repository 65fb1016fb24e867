"""One answer to "what is this cell doing?": ok, failed, running, dead or not started.

A job folder alone cannot tell a running job from a killed one: both have no outcome yet. So the
job keeps a heartbeat, and every reader (sublim-report, sublim-status) asks `cell_state`:

- `outcome.json` (sublim.sweep): a sweep job's own record at its end: ok, or failed with its error.
- `job.json`, the heartbeat the job itself writes (`heartbeat(job_dir)` around the job's work):
  {host, pid, pid_start, started, updated, interval_s, artifacts, ended, exit, error}. `updated` (and
  the file's mtime) is refreshed every few seconds; at its end the job fills in `ended`, `exit`
  ("ok" or "failed") and `error`, so a single run (which writes no outcome.json) is answered too.
  Without an outcome, a heartbeat whose process is alive means running: on the same host its pid is
  alive and is still the process that wrote it (Linux: same start time, not a zombie); on another
  host the heartbeat is fresher than STALE_AFTER_S (or three of its beats, if slower). Anything else
  is dead: killed (SIGKILL, the OOM killer, a lost node) before it could say how it ended. A folder
  with neither outcome nor heartbeat is dead too (or, with metrics.json, ok: a single run of a
  sublim that wrote no heartbeat).
- the artifact store's locks (sublim.cache: `<artifacts>/<stage>/.locks/<key>.lock`, JSON {host,
  pid, token, since}, mtime a heartbeat): a running job holding one (itself or a stage process it
  started) is computing that stage; a dead one that left one has left a lock the next job that
  needs the artifact takes over.
- the sweep plan (`sweep_plan.json`): a planned cell without a job folder has not started.

Stdlib only (no pandas, matplotlib or hydra): sublim-report and sublim-status both build on it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from sublim.terminal import ago

log = logging.getLogger(__name__)

OUTCOME = "outcome.json"  # = sublim.sweep.OUTCOME (not imported: sublim.sweep pulls in hydra)
PLAN = "sweep_plan.json"  # = sublim.sweep.PLAN
HEARTBEAT = "job.json"
HEARTBEAT_S = 5.0  # how often a job refreshes its heartbeat
STALE_AFTER_S = 120.0  # a heartbeat (or store lock) older than this, on another host: its job is gone
STATES = ("ok", "failed", "running", "dead", "not started")
SKIP_DIRS = {"wandb", ".hydra", "__pycache__", ".git", ".venv", ".locks", ".work"}


@dataclass(frozen=True)
class CellState:
    state: str  # one of STATES
    reason: str  # one line: why this state
    job_dir: Optional[Path] = None
    heartbeat: Optional[dict] = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state

    def __str__(self) -> str:
        return self.line()


# -- writing the heartbeat (the job's side) ------------------------------------------------------
def _proc_stat(pid: int) -> Optional[list[str]]:
    """/proc/<pid>/stat's fields after the command name (field 3, the state, first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def _pid_start(pid: int) -> Optional[int]:
    """The process's start time (clock ticks since boot, Linux); tells a reused pid apart."""
    f = _proc_stat(pid)
    try:
        return int(f[19]) if f else None  # field 22
    except (IndexError, ValueError):
        return None


def _write_json(path: Path, record: dict) -> None:
    """Atomically: a reader sees the old record or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def write_heartbeat(job_dir: str | Path, record: Optional[dict] = None, **fields: Any) -> dict:
    """Write (or refresh) `job_dir/job.json` once and return the record written. A new record
    names this process; `record` (a previous return value) is refreshed: `updated` is now."""
    now = time.time()
    if record is None:
        pid = os.getpid()
        record = {"host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid), "started": now,
                  "updated": now, "interval_s": HEARTBEAT_S, "artifacts": None, "ended": None, "exit": None,
                  "error": None}
    record = record | fields | {"updated": now}
    job = Path(job_dir)
    job.mkdir(parents=True, exist_ok=True)
    _write_json(job / HEARTBEAT, record)
    return record


class Heartbeat:
    """The job's heartbeat: `job.json` written at start, refreshed every `interval_s` by a daemon
    thread, and at the end given how the job ended. Use as a context manager around the job's work:

        with heartbeat(job_dir, artifacts=...):
            run_cell(...)

    An exception leaving the block is recorded (exit "failed", its first line) and re-raised. A
    failure to write the file (disk full, folder gone) is logged once and never stops the job."""

    def __init__(self, job_dir: str | Path, interval_s: float = HEARTBEAT_S, artifacts: Optional[str | Path] = None):
        self.job_dir = Path(job_dir)
        self.interval_s = float(interval_s)
        self.artifacts = _abspath(artifacts)
        self.record: Optional[dict] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._warned = False

    def _write(self, **fields: Any) -> None:
        with self._lock:
            try:
                self.record = write_heartbeat(self.job_dir, self.record, **fields)
            except OSError as e:
                if not self._warned:
                    log.warning("cannot write the heartbeat %s (%s); sublim-status may call this job dead",
                                self.job_dir / HEARTBEAT, e)
                    self._warned = True

    def start(self) -> "Heartbeat":
        self._write(interval_s=self.interval_s, artifacts=self.artifacts)
        self._thread = threading.Thread(target=self._run, name="sublim-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def stop(self, error: Optional[str] = None) -> None:
        """Stop beating and record the end: exit "ok", or "failed" with `error`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
        self._write(ended=time.time(), exit="failed" if error else "ok", error=error)

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or (exc_type is SystemExit and exc.code in (0, None)):
            self.stop()
        elif exc_type is KeyboardInterrupt:
            self.stop("KeyboardInterrupt: interrupted")
        else:
            self.stop(_first_line(f"{exc_type.__name__}: {exc}"))


def heartbeat(job_dir: str | Path, interval_s: float = HEARTBEAT_S,
              artifacts: Optional[str | Path] = None) -> Heartbeat:
    """A Heartbeat for `job_dir` (a context manager; or call .start() and .stop() yourself)."""
    return Heartbeat(job_dir, interval_s, artifacts)


# -- reading (any process, any host) ---------------------------------------------------------------
def _abspath(p: Any) -> Optional[str]:
    try:
        return os.path.abspath(os.fspath(p)) if p is not None else None
    except (TypeError, ValueError):
        return None


def _first_line(text: Any, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else ""


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # a JSON escape of a lone surrogate: no valid text


def text_safe(s: str) -> str:
    """`s` encodable as UTF-8: a file name's undecodable bytes as \\xff, a lone surrogate as \\ud800."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_json(v: Any) -> Any:
    if isinstance(v, str):
        return text_safe(v)
    if isinstance(v, list):
        return [_safe_json(x) for x in v]
    if isinstance(v, dict):
        return {text_safe(k): _safe_json(x) for k, x in v.items()}
    return v


def load_json(raw: bytes) -> Any:
    """json.loads, but every string of the result is valid text (see text_safe)."""
    v = json.loads(raw)
    return _safe_json(v) if _SURROGATE.search(raw) else v


def _read_json(path: Path) -> tuple[Any, Optional[str]]:
    """(value, None), or (None, why it could not be read); never raises."""
    try:
        return load_json(path.read_bytes()), None  # JSON is UTF-8 whatever the locale says
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        return None, f"{type(e).__name__}: {_first_line(e, 120)}"


def _num(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x in (float("inf"), float("-inf")):
        return None
    return float(x)


def _int(x: Any) -> Optional[int]:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def read_heartbeat(job_dir: str | Path) -> tuple[Optional[dict], Optional[str]]:
    """(the job's heartbeat record, normalised, with `mtime`), or (None, why not: "missing" or the
    problem with the file)."""
    path = Path(job_dir) / HEARTBEAT
    raw, err = _read_json(path)
    if err:
        return None, err
    if not isinstance(raw, dict):
        return None, f"{HEARTBEAT} is not an object"
    host, pid = raw.get("host"), _int(raw.get("pid"))
    if not isinstance(host, str) or pid is None or pid <= 0:
        return None, f"{HEARTBEAT} lacks a host and a positive pid"
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = None
    updated = max(x for x in (_num(raw.get("updated")), _num(raw.get("started")), mtime, 0.0) if x is not None)
    exit_ = raw.get("exit") if raw.get("exit") in ("ok", "failed") else None
    return {"host": host, "pid": pid, "pid_start": _int(raw.get("pid_start")), "started": _num(raw.get("started")),
            "updated": updated, "interval_s": _num(raw.get("interval_s")),
            "artifacts": raw.get("artifacts") if isinstance(raw.get("artifacts"), str) else None,
            "ended": _num(raw.get("ended")), "exit": exit_,
            "error": _first_line(raw["error"]) if raw.get("error") is not None else None, "mtime": mtime}, None


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid lives on this host (the store's locks and the jobs' heartbeats).
    0 and negative pids address process groups: never a job."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _alive_here(pid: int, pid_start: Optional[int]) -> tuple[bool, str]:
    """Is process `pid` of this host alive (and the same process as when it wrote pid_start)?"""
    if not pid_alive(pid):
        return False, f"pid {pid} is gone"
    f = _proc_stat(pid)
    if f:
        if f[0] in ("Z", "X"):
            return False, f"pid {pid} has exited (zombie)"
        if pid_start is not None and _pid_start(pid) not in (None, pid_start):
            return False, f"pid {pid} is gone (the number now belongs to another process)"
    return True, f"pid {pid} alive"


def _stale_after(hb: dict) -> float:
    """How long a heartbeat may be silent: STALE_AFTER_S, longer for a job that beats slowly."""
    return max(STALE_AFTER_S, 3 * (hb["interval_s"] or 0.0))


def _alive(hb: dict, now: float, host: str) -> tuple[bool, str]:
    if hb["host"] == host:
        return _alive_here(hb["pid"], hb["pid_start"])
    age = now - hb["updated"]
    if age <= _stale_after(hb):
        return True, f"heartbeat from host {hb['host']} {ago(age)} ago"
    return False, f"no heartbeat from host {hb['host']} (pid {hb['pid']}) for {ago(age)}"


@dataclass(frozen=True)
class StoreLock:
    stage: str
    key: str
    host: Optional[str]
    pid: Optional[int]
    since: Optional[float]
    age_s: float  # since the lock's last heartbeat (its mtime)
    live: bool  # the store's rule: owner alive (same host) and heartbeat within STALE_AFTER_S


def store_locks(artifacts_root: str | Path, now: Optional[float] = None) -> list[StoreLock]:
    """Every lock file of the artifact store, with whether the store would still honour it."""
    now = time.time() if now is None else now
    root, host, out = Path(artifacts_root), socket.gethostname(), []
    try:
        paths = sorted(root.glob("*/.locks/*.lock"))
    except OSError:
        return []
    for p in paths:
        raw, _ = _read_json(p)
        raw = raw if isinstance(raw, dict) else {}
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        h, pid = raw.get("host") if isinstance(raw.get("host"), str) else None, _int(raw.get("pid"))
        dead_here = h == host and (pid is None or not _alive_here(pid, None)[0])
        out.append(StoreLock(p.parent.parent.name, p.name[:-len(".lock")], h, pid, _num(raw.get("since")), age,
                             not dead_here and age <= STALE_AFTER_S))
    return out


def _ancestors(pid: int, limit: int = 64) -> list[int]:
    """pid, its parent, ... (this host, Linux /proc); just [pid] where /proc is missing."""
    chain = [pid]
    while len(chain) < limit:
        f = _proc_stat(chain[-1])
        try:
            ppid = int(f[1]) if f else 0
        except (IndexError, ValueError):
            ppid = 0
        if ppid <= 1 or ppid in chain:
            break
        chain.append(ppid)
    return chain


def _lock_note(hb: dict, locks: list[StoreLock], running: bool, host: str, now: float) -> str:
    """What the job is doing in the store (running) or left behind there (dead), or ""."""
    if running:
        mine = [lk for lk in locks if lk.live and lk.host == hb["host"] and lk.pid is not None
                and (lk.pid == hb["pid"] or (hb["host"] == host and hb["pid"] in _ancestors(lk.pid)))]
        if mine:
            return "; computing " + ", ".join(
                f"{lk.stage}/{lk.key}" + (f" for {ago(now - lk.since)}" if lk.since else "") for lk in mine)
        return ""
    left = [lk for lk in locks if lk.host == hb["host"] and lk.pid == hb["pid"]]
    if left:
        return "; left the lock of " + ", ".join(f"{lk.stage}/{lk.key}" for lk in left) + \
            " (stale: the next job that needs it takes it over)"
    return ""


def _outcome(job: Path) -> tuple[Optional[CellState], Optional[float]]:
    """The state outcome.json records, and its mtime; (None, None) without one."""
    path = job / OUTCOME
    raw, err = _read_json(path)
    if err == "missing":
        return None, None
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = None
    if err or not isinstance(raw, dict):
        return CellState("failed", f"{OUTCOME} unreadable ({err or 'not an object'})", job), mtime
    status = raw.get("status")
    if status == "ok":
        return CellState("ok", "finished", job), mtime
    if status == "failed":
        return CellState("failed", _first_line(raw.get("error")) or "failed (no error recorded)", job), mtime
    return CellState("failed", f"{OUTCOME} has status {_first_line(json.dumps(status), 60)}", job), mtime


def _has_results(job: Path) -> Optional[str]:
    return next((f for f in ("metrics.json", "cell.json") if (job / f).is_file()), None)


def _job_like(job: Path) -> bool:
    """A folder a job started in: Hydra's record, a heartbeat, an outcome, results or a log."""
    try:
        return any((job / f).exists() for f in (".hydra", HEARTBEAT, OUTCOME, "metrics.json", "cell.json")) \
            or any(job.glob("*.log"))
    except OSError:
        return False


def cell_state(job_dir: str | Path, artifacts_root: Optional[str | Path] = None, now: Optional[float] = None,
               _locks: Optional[list[StoreLock]] = None) -> CellState:
    """The state of the cell whose job folder is `job_dir`: see the module docstring. Never raises.

    `artifacts_root`: the store whose locks say which stage a running job computes (default: the
    one the job named in its heartbeat). `now`: the time to judge heartbeats by (default: now)."""
    job = Path(job_dir)
    now = time.time() if now is None else float(now)
    try:
        if not job.is_dir():
            return CellState("not started", "no job folder", job)
        if not _job_like(job):
            return CellState("not started", "empty job folder", job)
        outcome, outcome_mtime = _outcome(job)
        hb, hb_err = read_heartbeat(job)
        # a heartbeat that started after the outcome was written: the cell is being run again
        rerun = outcome is not None and hb is not None and hb["started"] is not None \
            and outcome_mtime is not None and hb["started"] > outcome_mtime
        if outcome is not None and not rerun:
            return CellState(outcome.state, outcome.reason, job, hb)
        results = _has_results(job)
        again = " again" if rerun else ""
        if hb is not None:
            if hb["exit"] == "ok" and hb["ended"] is not None:
                return CellState("ok", f"finished{again} (heartbeat; no {OUTCOME}: a single run)", job, hb)
            if hb["exit"] == "failed" and hb["ended"] is not None:
                return CellState("failed", hb["error"] or "failed (no error recorded)", job, hb)
            host = socket.gethostname()
            alive, why = _alive(hb, now, host)
            root = artifacts_root if artifacts_root is not None else hb["artifacts"]
            locks = _locks if _locks is not None else (store_locks(root, now) if root else [])
            note = _lock_note(hb, locks, alive, host, now)
            where = f"host {hb['host']}, pid {hb['pid']}"
            if alive:
                since = f" for {ago(now - hb['started'])}" if hb["started"] else ""
                beat = now - hb["updated"]
                quiet = f"; heartbeat silent for {ago(beat)} (stopped or hung?)" \
                    if hb["host"] == host and beat > _stale_after(hb) else f"; last heartbeat {ago(beat)} ago"
                return CellState("running", f"running{again} on {where}{since}{quiet}{note}", job, hb)
            kept = f"; its {results} is kept" if results else ""
            return CellState("dead", f"stopped{again} without an outcome: {why}, last heartbeat "
                             f"{ago(now - hb['updated'])} ago{note}{kept}", job, hb)
        if results:
            return CellState("ok", f"{results} written (no {OUTCOME}, no heartbeat)", job)
        bad = "" if hb_err == "missing" else f"; {HEARTBEAT} unreadable ({hb_err})"
        return CellState("dead", f"no {OUTCOME} and no heartbeat{bad}: stopped before it finished (or started "
                         "by a sublim that wrote no heartbeat)", job)
    except Exception as e:  # noqa: BLE001 - a state reader must answer for any folder content
        return CellState("dead", f"state unreadable: {type(e).__name__}: {_first_line(e, 120)}", job)


# -- sweeps ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedCell:
    job: int
    overrides: list[str]
    folder: Optional[str]  # relative to the sweep; None when only the job knew it


def read_plan(sweep_dir: str | Path) -> Optional[list[PlannedCell]]:
    """The sweep's planned cells; None without a plan. Raises ValueError naming what is wrong
    with a malformed one."""
    path = Path(sweep_dir) / PLAN
    raw, err = _read_json(path)
    if err == "missing":
        return None
    if err:
        raise ValueError(f"{path}: {err}")
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of cells, got {type(raw).__name__}")
    cells = []
    for i, c in enumerate(raw):
        job = _int(c.get("job")) if isinstance(c, dict) else None
        ov = c.get("overrides") if isinstance(c, dict) else None
        folder = c.get("folder") if isinstance(c, dict) else None
        if job is None or not isinstance(ov, list) or not all(isinstance(o, str) for o in ov) \
                or not (folder is None or (isinstance(folder, str) and folder and "\x00" not in folder)):
            raise ValueError(f"{path}: entry {i} is not {{job: int, overrides: [str], folder: str|null}}")
        cells.append(PlannedCell(job, list(ov), folder))
    return cells


def job_overrides(job_dir: str | Path) -> list[str]:
    """The overrides a job ran with: its outcome.json's, else Hydra's .hydra/overrides.yaml."""
    job = Path(job_dir)
    raw, _ = _read_json(job / OUTCOME)
    ov = raw.get("overrides") if isinstance(raw, dict) else None
    if isinstance(ov, list) and all(isinstance(o, str) for o in ov):
        return list(ov)
    try:
        text = (job / ".hydra" / "overrides.yaml").read_text(errors="replace")
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        s = ln.strip()
        if s.startswith("- "):
            s = s[2:].strip()
            if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
                s = s[1:-1]
            out.append(s)
    return out


def _job_dirs(sweep: Path, depth: int = 4) -> list[Path]:
    """Job folders under a sweep (not inside one another), at most `depth` levels down."""
    out = []
    for root, dirs, _ in os.walk(sweep):
        here = Path(root)
        job = here != sweep and _job_like(here)
        if job:
            out.append(here)
        deep = len(here.relative_to(sweep).parts) >= depth
        dirs[:] = [] if job or deep else sorted(d for d in dirs if d not in SKIP_DIRS)
    return out


def planned_folder(sweep_dir: str | Path, cell: PlannedCell, candidates: Optional[list[Path]] = None) -> Optional[Path]:
    """The job folder of a planned cell: the plan's folder, else the one that ran its overrides."""
    sweep = Path(sweep_dir)
    if cell.folder is not None:
        return sweep / cell.folder
    for d in candidates if candidates is not None else _job_dirs(sweep):
        if job_overrides(d) == cell.overrides:
            return d
    return None


def sweep_states(sweep_dir: str | Path, artifacts_root: Optional[str | Path] = None,
                 now: Optional[float] = None) -> list[tuple[int | str, list[str], CellState]]:
    """(job, overrides, state) for every cell of a sweep: the planned ones in plan order (a cell
    without a folder: not started), then job folders the plan does not name (by folder name). A
    sweep without a readable plan: its job folders."""
    sweep = Path(sweep_dir)
    now = time.time() if now is None else float(now)
    try:
        plan = read_plan(sweep) or []
    except ValueError as e:
        log.warning("%s; listing the sweep's job folders instead", e)
        plan = []
    dirs = _job_dirs(sweep)
    locks = store_locks(artifacts_root, now) if artifacts_root is not None else None
    out, seen = [], set()
    for cell in plan:
        folder = planned_folder(sweep, cell, dirs)
        if folder is None:
            st = CellState("not started", "no job folder ran its overrides (the plan could not name its folder)")
        else:
            seen.add(os.path.abspath(folder))
            st = cell_state(folder, artifacts_root, now, locks)
        out.append((cell.job, cell.overrides, st))
    for d in dirs:
        if os.path.abspath(d) not in seen:
            name = d.relative_to(sweep).as_posix()
            job_id: int | str = int(name) if name.isdigit() else name
            out.append((job_id, job_overrides(d), cell_state(d, artifacts_root, now, locks)))
    return out
