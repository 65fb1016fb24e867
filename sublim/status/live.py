"""A grid's own status while it runs, in the terminal (or log, or pipe) that launched it.

The sweeper starts a GridWatch once the grid's plan is written and stops it when the last job has
returned. From then on the grid's stdout and stderr belong to it: the parent process's own chatter
(Hydra's launch lines, a local job's output) goes to `<sweep>/sweep.log`, each job's to its own
log (sublim.joblog), so nothing else can interleave with it. What it shows comes from the same
files sublim-status reads (snapshots.snapshot: the plan, heartbeats, outcomes, store locks and
progress records), so it works the same for local workers and SLURM jobs.

- On a terminal: one block redrawn in place every second (counts, time left, each running cell
  with its stage and progress), with finished and failed cells printed above it as they happen
  (a start is not: the block shows it).
- Anywhere else (CI, a file, SLURM output): one plain line per cell event: started; finished with
  its rate and the grid's count and time left; failed or dead with its one-line reason and log.
  SUBLIM_VERBOSE=1 adds a line when a cell starts a stage. No carriage return, no escape code.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

from sublim.joblog import Capture
from sublim.status.display import detail, header, result
from sublim.cellstate import CellState
from sublim.status.read import Cell, axes
from sublim.status.snapshots import FINAL, Snapshot, snapshot
from sublim.status.timeleft import estimate
from sublim.terminal import console

PARENT_LOG = "sweep.log"
UP_CLEAR = "\x1b[{n}F\x1b[J"  # to the start of the line n lines up, then clear to the end of the screen
MAX_RUNNING_ROWS = 12


def verbose() -> bool:
    """SUBLIM_VERBOSE=1: stage-level lines too (an environment variable: it changes no cache key)."""
    return os.environ.get("SUBLIM_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd) and os.environ.get("TERM", "") != "dumb"
    except OSError:
        return False


def _stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _stage_of(c: Cell) -> str:
    """'finetune 120/300 step, 4.1 step/s (45 s)' for a running cell, or ''."""
    if not c.computing:
        return "between stages" if c.state.state == "running" else ""
    x = c.computing[-1]
    from sublim.progress import describe

    shown = describe(x["progress"]) if x.get("progress") else ""
    what = x["stage"] + (f": {shown}" if shown and not shown.startswith(x["stage"]) else f" {shown}" if shown else "")
    return what + (f" ({x['seconds']:.0f} s)" if x.get("seconds") is not None else "")


class GridWatch:
    """See the module docstring. `start()` takes over the streams; `stop()` gives them back after
    the last events and the final count."""

    def __init__(self, sweep_dir: str | Path, every: Optional[float] = None, stages: Optional[bool] = None,
                 artifacts: Optional[str] = None) -> None:
        self.sweep = Path(sweep_dir)
        self.artifacts = artifacts
        self.stages = verbose() if stages is None else stages
        self.every = every
        self.out: Optional[TextIO] = None
        self.tty = False
        self.footer = 0  # lines of the redrawn block now on the terminal
        self.before: Optional[Snapshot] = None
        self.targets: list[str] = []
        self._seen_stage: dict = {}
        self._axes: Optional[set[str]] = None
        self._stale: set = set()
        self.t0 = time.time()
        self._capture: Optional[Capture] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- the streams ----------------------------------------------------------------------------
    def start(self) -> "GridWatch":
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        self.tty = _is_terminal(1)
        enc = getattr(sys.stdout, "encoding", None) or "utf-8"
        self.out = os.fdopen(os.dup(1), "w", encoding=enc, errors="backslashreplace", buffering=1)
        self._capture = Capture(self.sweep / PARENT_LOG).start()
        if self.every is None:
            self.every = 1.0 if self.tty else 2.0
        if not self.tty:
            self._say(f"sweep {self.sweep}: one line per cell event"
                      + ("" if self.stages else " (SUBLIM_VERBOSE=1 adds stages)")
                      + f"; each cell's log: <job folder>/cli.log; this process's: {self.sweep / PARENT_LOG}")
        self._thread = threading.Thread(target=self._run, name="sublim-grid-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """The last events and the final count, then the streams back to the terminal."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self._tick(final=True)
        finally:
            if self._capture is not None:
                self._capture.release()
                self._capture = None
            if self.out is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.out.close()
                self.out = None

    def _say(self, text: str) -> None:
        if self.out is not None:
            with contextlib.suppress(OSError, ValueError):
                self.out.write(console(text, self.out) + "\n")
                self.out.flush()

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        self._tick()
        while not self._stop.wait(self.every):
            self._tick()

    def _tick(self, final: bool = False) -> None:
        try:
            snap = snapshot(self.sweep, self.artifacts)
        except Exception as e:  # noqa: BLE001 - a status that cannot be read must not stop the grid
            self._say(f"(status unreadable: {type(e).__name__}: {e})")
            return
        for c in snap.cells:
            if c.target and c.target not in self.targets:
                self.targets.append(c.target)
        if self.before is None:  # what the folder held before this grid ran (a re-run into it)
            self._stale = {c.job for c in snap.cells if c.state.state in FINAL and not self._ran_here(c)}
        self._stale -= {c.job for c in snap.cells if c.state.state not in FINAL or self._ran_here(c)}
        snap = self.this_run(snap)
        events = self.events(self.before, snap)
        self.before = snap
        if self.tty:
            self._draw(events, [] if final else self.block(snap), final, snap)
        else:
            for line in events:
                self._say(line)
            if final:
                self._say(header(snap))

    def name(self, c: Cell) -> str:
        """A cell by the grid's axes, as its user wrote them ("arm=student seed=3"): the overrides
        whose values differ between the grid's cells; its own name where none differ."""
        mine = [o for o in c.overrides if o.partition("=")[0] in (self._axes or ())]
        return " ".join(mine) or c.name

    def _ran_here(self, c: Cell) -> bool:
        """Whether this grid ran the cell: its heartbeat started after the watch did (a cached cell
        can start and finish between two looks; 5 s for clocks of other hosts a little behind)."""
        return c.started is not None and c.started >= self.t0 - 5

    def this_run(self, snap: Snapshot) -> Snapshot:
        """The snapshot as this run sees it: a cell that was final before the grid started (a re-run
        into the same folder) is not started until it runs again, in the counts and the estimate."""
        if not self._stale:
            return snap
        cells = [dataclasses.replace(c, state=CellState("not started", "not run yet by this grid", c.state.job_dir),
                                     duration_s=None) if c.job in self._stale else c for c in snap.cells]
        return Snapshot(snap.sweep, cells, estimate(cells, snap.now), snap.now)

    def events(self, before: Optional[Snapshot], snap: Snapshot) -> list[str]:
        """One line per cell whose state changed since `before` (and, with stages on, per stage a
        cell starts)."""
        old = {c.job: c.state.state for c in before.cells} if before else {}
        if self._axes is None:
            self._axes = axes([c.overrides for c in snap.cells])
        n_ok = snap.counts()["ok"]
        total = len(snap.cells)
        out = []
        stamp = _stamp(snap.now)
        for c in snap.cells:
            was, st = old.get(c.job, "not started"), c.state.state
            if st != was:
                if st == "running" and self.tty and was == "not started":
                    pass  # on a terminal the redrawn block shows it; only results and failures scroll up
                elif st == "running":
                    out.append(f"{stamp} #{c.job} started: {self.name(c)}")
                elif st == "ok":
                    left = "" if snap.final() else f", {snap.estimate.text.split(',')[0]}"
                    shown = result(c, self.targets) or (f"({c.condition}: no target rate)" if c.condition else "")
                    out.append(f"{stamp} #{c.job} finished: {self.name(c)}  {shown}  "
                               f"[{n_ok}/{total} done{left}]".replace("   [", "  ["))
                elif st in ("failed", "dead"):
                    out.append(f"{stamp} #{c.job} {st}: {self.name(c)}  {detail(c, snap.now)}")
            if self.stages and st == "running":
                for x in c.computing:
                    if self._seen_stage.get((c.job, x["stage"])) != x["key"]:
                        self._seen_stage[(c.job, x["stage"])] = x["key"]
                        out.append(f"{stamp} #{c.job} stage {x['stage']} ({x['key'][:8]}): {self.name(c)}")
        return out

    def block(self, snap: Snapshot) -> list[str]:
        """The redrawn part: the counts and time left, then each running cell's stage and progress."""
        lines = [header(snap)]
        running = [c for c in snap.cells if c.state.state == "running"]
        for c in running[:MAX_RUNNING_ROWS]:
            lines.append(f"  #{c.job} {self.name(c)}: {_stage_of(c)}")
        if len(running) > MAX_RUNNING_ROWS:
            lines.append(f"  ... and {len(running) - MAX_RUNNING_ROWS} more running")
        return lines

    def _draw(self, events: list[str], block: list[str], final: bool, snap: Snapshot) -> None:
        width = shutil.get_terminal_size((120, 24)).columns
        if self.out is not None:
            with contextlib.suppress(OSError):
                width = os.get_terminal_size(self.out.fileno()).columns
        fit = [ln if len(ln) < width else ln[: max(10, width - 2)] + "~" for ln in block]
        text = UP_CLEAR.format(n=self.footer) if self.footer else ""
        text += "".join(console(ln, self.out) + "\n" for ln in events)  # kept: they scroll up
        if final:
            text += console(header(snap), self.out) + "\n"
            self.footer = 0
        else:
            text += "".join(console(ln, self.out) + "\n" for ln in fit)
            self.footer = len(fit)
        if self.out is not None:
            with contextlib.suppress(OSError, ValueError):
                self.out.write(text)
                self.out.flush()


def watch_grid(sweep_dir: str | Path, artifacts: Optional[str] = None) -> Optional[GridWatch]:
    """Start showing a grid's status (see GridWatch); call `.stop()` when its jobs have returned.
    None when the streams cannot be taken over (closed, not files): the grid then prints as Hydra does."""
    watch = GridWatch(sweep_dir, artifacts=artifacts)
    try:
        return watch.start()
    except (OSError, ValueError) as e:
        watch.stop()
        logging.getLogger(__name__).warning("no live status for this grid (%s); its jobs print as they run", e)
        return None
