"""The time a sweep has left, kept simple and saying what it rests on: finished cells' durations
(heartbeat start to end, else their stages' seconds in the store's events.jsonl), the mean stage
durations of this sweep's jobs (a stage not yet timed here: the rest of its progress count at its
rate), shared out over the cells running at once. A module of its own so
the arithmetic can be read and tested apart from reading the files and from printing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sublim.cache import EVENTS_FILE as EVENTS
from sublim.status.read import Cell
from sublim.terminal import ago


@dataclass
class Estimate:
    seconds: Optional[float]
    text: str
    finished_cells: int = 0
    cell_s: Optional[float] = None
    parallel: int = 1
    stage_s: dict = field(default_factory=dict)


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


def _counted_left(row: Optional[dict]) -> Optional[float]:
    """The rest of the count a stage's progress record shows, at its rate (a stage not yet timed in
    this sweep), or None."""
    if not row:
        return None
    done, total, rate = (_seconds(row.get(k)) for k in ("done", "total", "rate"))
    if done is None or not total or not rate:
        return None
    return max(0.0, total - done) / rate


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
        counted = _counted_left(stage.get("progress")) if stage else None
        if stage and stage["stage"] in order and (stage["stage"] in stage_s or counted is not None):
            left = counted if stage["stage"] not in stage_s else max(0.0, stage_s[stage["stage"]] - (stage["seconds"] or 0.0))
            after = order[order.index(stage["stage"]) + 1:]
            c.remaining_s = left + sum(stage_s.get(s, 0.0) for s in after)
        else:
            ran = now - c.started if c.started is not None else 0.0
            c.remaining_s = max(0.0, cell_s - ran)
    running = sum(c.state.state == "running" for c in cells)
    parallel = max(1, running)
    total = max(max(c.remaining_s for c in unfinished), sum(c.remaining_s for c in unfinished) / parallel)
    n = len(durations)
    left = "under 1 min left" if total < 60 else f"~{ago(total)} left"
    text = (f"{left}, from {n} finished cell{'s' if n != 1 else ''} ({ago(cell_s)} a cell, "
            f"{parallel} running at a time)")
    return Estimate(total, text, n, cell_s, parallel, stage_s)
