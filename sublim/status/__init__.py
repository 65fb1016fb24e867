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

The package, one job a module: read (what the sweep's files say, as Cells), timeleft (the
estimate), snapshots (the two at one moment), display (lines, JSON, ASCII-safe printing, the watch
loop), cli (`main`, which the console script runs), live (a grid's own status while it runs, drawn
by the sweeper from the same snapshots). This module re-exports their public names (not live's:
it is for the sweeper).
"""
from __future__ import annotations

from sublim.status.cli import main, parse
from sublim.status.display import (CLEAR, as_json, cell_line, changes, console, detail, header, rate_text, render,
                                   say, watch)
from sublim.status.read import Cell, hydra_artifacts, is_sweep, job_log, read_cells, yaml_value
from sublim.status.snapshots import FINAL, Snapshot, snapshot
from sublim.status.timeleft import Estimate, estimate

__all__ = ["CLEAR", "Cell", "Estimate", "FINAL", "Snapshot", "as_json", "cell_line", "changes", "console", "detail",
           "estimate", "header", "hydra_artifacts", "is_sweep", "job_log", "main", "parse", "rate_text",
           "read_cells", "render", "say", "snapshot", "watch", "yaml_value"]
