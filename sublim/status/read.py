"""What a sweep's files say about each cell: the plan and job folders (through
`sublim.cellstate.sweep_states`, the cell-state function sublim-report uses), each job's
metrics.json / cell.json, Hydra's saved config (the store, the log), the store locks its process
holds and the progress records beside them (sublim.progress). All the file reading of sublim-status is here, so the estimate and the rendering work on
Cells and never touch the disk themselves (bar the store's events.jsonl, which the estimate reads).
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sublim import cellstate, progress
from sublim.cellstate import OUTCOME, PLAN, CellState, StoreLock, store_locks, sweep_states, text_safe


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


def axes(overrides: list[list[str]]) -> set[str]:
    """The override keys whose values differ between cells (all of them for a single cell)."""
    values: dict[str, set] = {}
    for ov in overrides:
        for o in ov:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    return {k for k, v in values.items() if len(v) > 1} if len(overrides) > 1 else set(values)


def _rates(m: dict) -> dict[str, dict]:
    """Every candidate's {mean, ci_low, ci_high} in metrics.json (malformed ones left out)."""
    rates = m.get("rates")
    if not isinstance(rates, dict):
        return {}
    fields = ("mean", "ci_low", "ci_high")
    return {k: {f: float(r[f]) for f in fields} for k, r in rates.items() if isinstance(r, dict) and all(
        isinstance(r.get(f), (int, float)) and not isinstance(r.get(f), bool) for f in fields)}


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
    rates: dict = field(default_factory=dict)  # a finished cell's rate of every candidate
    trait: Optional[str] = None  # the trait its config names (a base cell's too: the grid's animal)
    duration_s: Optional[float] = None  # a finished cell's, for the estimate
    remaining_s: Optional[float] = None  # an unfinished cell's share of the estimate


def is_sweep(sweep: Path) -> bool:
    return (sweep / PLAN).is_file() or bool(cellstate._job_dirs(sweep))


def _mine(lk: StoreLock, hb: dict, host: str) -> bool:
    """Is this live lock held by the job of heartbeat `hb` or by a stage process under it?"""
    if not lk.live or lk.pid is None or lk.host != hb["host"]:
        return False
    return lk.pid == hb["pid"] or (hb["host"] == host and hb["pid"] in cellstate._ancestors(lk.pid))


def read_cells(sweep: Path, artifacts: Optional[str | Path], now: float) -> list[Cell]:
    """Every cell of the sweep with its state, name, result or current stage, from its files."""
    host = socket.gethostname()
    forced = os.path.abspath(artifacts) if artifacts is not None else None
    locks_of: dict[str, list[StoreLock]] = {}
    cells = []
    states = sweep_states(sweep, forced, now)
    varied = axes([ov for _, ov, _ in states])
    for job, overrides, st in states:
        d = st.job_dir
        hb = st.heartbeat
        m = _read_json(d / "metrics.json") if d is not None and st.state != "not started" else None
        m = m if isinstance(m, dict) else None
        if m is None and d is not None and st.state != "not started":
            cj = _read_json(d / "cell.json")
            m = cj if isinstance(cj, dict) else None
        meta = m.get("cell") if m and isinstance(m.get("cell"), dict) else {}
        by_axes = " ".join(o for o in overrides if o.partition("=")[0] in varied)  # what the grid varies
        name = meta.get("name") if isinstance(meta.get("name"), str) else (by_axes or " ".join(overrides)
                                                                            or "(no overrides)")
        root = forced or (hb or {}).get("artifacts") or (hydra_artifacts(d) if d is not None and d.is_dir() else None)
        cell = Cell(job, overrides, st, text_safe(name), root, started=(hb or {}).get("started"))
        if isinstance(meta.get("condition"), str):
            cell.condition = text_safe(meta["condition"])
        if m:
            keys = m.get("keys")
            cell.keys = {k: v for k, v in keys.items() if isinstance(v, str)} if isinstance(keys, dict) else {}
            if st.state == "ok":
                cell.target, cell.rate = _rate(m)
                cell.rates = _rates(m)
                cell.trait = yaml_value(_read_text(d / ".hydra" / "config.yaml"), ("trait", "name"))
        if d is not None and st.state in ("failed", "dead", "running"):
            lg = job_log(d)
            cell.log = text_safe(str(lg)) if lg else None
        if st.state == "running" and hb is not None and root:
            if root not in locks_of:
                locks_of[root] = store_locks(root, now)
            cell.computing = [{"stage": lk.stage, "key": lk.key, "since": lk.since,
                               "seconds": (now - lk.since) if lk.since is not None else None,
                               "progress": _progress(Path(root), lk)}
                              for lk in locks_of[root] if _mine(lk, hb, host)]
        if st.state == "ok":
            cell.duration_s = _wall(d, hb)
        cells.append(cell)
    return cells


def _progress(root: Path, lk: StoreLock) -> Optional[dict]:
    """The stage's progress record beside its lock (sublim.progress), when it has written one."""
    row = progress.read(progress.record_path(root / lk.stage / ".locks" / f"{lk.key}.lock"))
    return row if row is not None and row.get("key") == lk.key else None


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
