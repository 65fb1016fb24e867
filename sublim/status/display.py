"""How sublim-status shows a snapshot: the header and one line per cell, the --json object, the
plain event lines and the --watch loop (a redraw on a terminal, event lines elsewhere), all printed
so that any terminal can encode them (typography in ASCII, anything else escaped). Formatting only:
the states, rates and estimate come from the snapshot.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sublim import cellstate, progress
from sublim.cellstate import text_safe
from sublim.status.read import Cell
from sublim.status.snapshots import Snapshot, snapshot
from sublim.terminal import ago, console

COUNT_ORDER = (("ok", "done"), ("running", "running"), ("failed", "failed"), ("dead", "dead"),
               ("not started", "not started"))
CLEAR = "\x1b[H\x1b[J"
def say(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(console(text, stream) + "\n")
    stream.flush()


def rate_text(label: Optional[str], r: Optional[dict]) -> str:
    if r is None:
        return ""
    return f"{label} {r['mean']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}]"


def _label(job: int | str) -> str:
    return f"#{job}"


def header(snap: Snapshot) -> str:
    n = snap.counts()
    counts = ", ".join(f"{n[s]} {word}" for s, word in COUNT_ORDER)
    return f"sweep {text_safe(str(snap.sweep))}: {counts} of {len(snap.cells)} cells; {snap.estimate.text}"


def result(c: Cell, targets: list[str] = ()) -> str:
    """A finished cell's rate: its target's; a cell without one (a base or control cell) is shown at
    the trait its config names or at the grid's targets, so every finished cell has a number; ''
    when it has none of them."""
    text = rate_text(c.target, c.rate)
    if text:
        return text
    for name in ([c.trait] if c.trait not in (None, "none", "-") else []) + list(targets):  # a control's: none
        if name in c.rates:
            return rate_text(name, c.rates[name])
    return ""


def targets_of(cells: list[Cell]) -> list[str]:
    return list(dict.fromkeys(c.target for c in cells if c.target))


def detail(c: Cell, now: float, targets: list[str] = ()) -> str:
    """What to say after the cell's name: its result, its stage, or why it stopped."""
    st = c.state.state
    if st == "ok":
        none = f" ({c.condition}: no target rate)" if c.condition else ""
        return result(c, targets) or c.state.reason + none
    if st == "running":
        hb = c.state.heartbeat or {}
        where = f"pid {hb.get('pid')} on {hb.get('host')}"
        ran = f", running for {ago(now - c.started)}" if c.started is not None else ""
        quiet = ""
        if hb.get("updated") is not None and hb.get("host") == socket.gethostname() \
                and now - hb["updated"] > cellstate._stale_after(hb):
            quiet = f"; heartbeat silent for {ago(now - hb['updated'])} (stopped or hung?)"
        if c.computing:
            what = ", ".join(f"{x['stage']} ({x['key'][:8]})" + (f" for {ago(x['seconds'])}"
                                                                 if x["seconds"] is not None else "")
                             + (f" [{progress.describe(x['progress'])}]" if x.get("progress") else "")
                             for x in c.computing)
            return f"computing {what} ({where}{ran}){quiet}"
        if not c.artifacts:
            return f"running ({where}{ran}; store unknown: pass --artifacts to see its stage){quiet}"
        return f"running ({where}{ran}); holds no store lock: between stages or waiting for another job's{quiet}"
    if st in ("failed", "dead"):
        return c.state.reason + (f" (log: {c.log})" if c.log else "")
    return ""


def cell_line(c: Cell, now: float, width: int = 0, targets: list[str] = ()) -> str:
    d = detail(c, now, targets)
    return f"{_label(c.job):>{width}}  {c.state.state:<11}  {c.name}" + (f"  {d}" if d else "")


def render(snap: Snapshot) -> list[str]:
    width = max((len(_label(c.job)) for c in snap.cells), default=0)
    targets = targets_of(snap.cells)
    return [header(snap)] + [cell_line(c, snap.now, width, targets) for c in snap.cells]


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
