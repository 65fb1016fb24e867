"""Every cell's outcome in a sweep: recorded in its job folder, reported together at the end.

Hydra stops reporting at the first failed job; a researcher wants the other cells to go on when
one fails, and one list of what failed. The sweeper and launchers that go with this live in
hydra_plugins/sublim_launchers (Hydra only loads plugins from that namespace).
"""
from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sublim.errors import debug, first_line

log = logging.getLogger(__name__)
OUTCOME = "outcome.json"
PLAN = "sweep_plan.json"  # every cell of the grid, written before the first starts


def write_outcome(job_dir: Path, status: str, overrides: list[str], error: Optional[str] = None,
                  detail: Optional[str] = None) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / OUTCOME).write_text(json.dumps(
        {"status": status, "overrides": overrides, "error": error, "traceback": detail}, indent=2))


def write_plan(sweep_dir: Path, cells: list[tuple[int, list[str], Optional[str]]]) -> None:
    """Every cell the sweep will launch (job number, overrides, job folder relative to the sweep),
    so a sweep killed before it launched them all still says which never ran (sublim-report)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f".{PLAN}.tmp"
    tmp.write_text(json.dumps([{"job": i, "overrides": ov, "folder": folder} for i, ov, folder in cells], indent=1))
    tmp.replace(sweep_dir / PLAN)


def record_failure(exc: BaseException, reason: Optional[str] = None) -> None:
    """In a sweep job: note the failure in the job folder instead of stopping the grid.

    `reason`: an expected failure's one line (sublim.cli.explain), logged without a stack (shown with
    SUBLIM_DEBUG=1); without one the failure is a bug and its stack is logged. outcome.json holds the
    line (`error`) and the stack (`traceback`: a stage process's own first, then the job's)."""
    hc = HydraConfig.get()
    error = reason or f"{type(exc).__name__}: {first_line(exc)}"
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    child = getattr(exc, "child_traceback", None)
    if child and child not in detail:
        detail = f"{child.rstrip()}\n\nin the job:\n{detail}"
    write_outcome(Path(hc.runtime.output_dir), "failed", list(hc.overrides.task), error, detail)
    if reason is None or debug():
        log.error("cell failed: %s\n%s", error, detail.rstrip())
    else:
        log.error("cell failed: %s", error)


class OutcomeReport(Callback):
    """At the end of a multirun: one line per failed cell, and a non-zero exit if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not (sweep_dir / PLAN).exists():  # a dry run: the sweeper printed the plans, nothing ran
            return
        failed, ok = [], 0
        for outcome in sorted(sweep_dir.glob(f"*/{OUTCOME}"), key=lambda p: p.parent.name):
            o = json.loads(outcome.read_text())
            if o["status"] == "ok":
                ok += 1
            else:
                failed.append(f"  #{outcome.parent.name} {' '.join(o['overrides'])}: {first_line(o['error'])}")
        print(f"sweep {sweep_dir}: {ok} cells ok, {len(failed)} failed", flush=True)
        if failed:
            print(f"{len(failed)} cell(s) failed:\n" + "\n".join(failed), file=sys.stderr, flush=True)
            # Hydra turns a callback's exception into a warning; only SystemExit makes the exit code say it
            raise SystemExit(1)
