"""Every cell's outcome in a sweep: recorded in its job folder, reported together at the end.

Hydra stops reporting at the first failed job; a researcher wants the other cells to go on when
one fails, and one list of what failed. The sweeper and launchers that go with this live in
hydra_plugins/sublim_launchers (Hydra only loads plugins from that namespace).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

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


def live() -> bool:
    """Whether grids show one live status and send each cell's output to its log (the default);
    SUBLIM_LIVE=0 turns both off (every job prints to the terminal, as Hydra's launchers do)."""
    return os.environ.get("SUBLIM_LIVE", "1").strip().lower() not in ("0", "false", "no", "off")


_job: dict[str, Any] = {}  # the grid job this process runs now (on_job_start .. on_job_end)


def current_job() -> dict[str, Any]:
    """The grid job this process is running: {grid, sweep_dir, job, overrides, swept}; {} outside a grid.
    sublim.tracking tags the cell's W&B run with it."""
    return dict(_job)


def _value(text: str) -> Any:
    """An override's value as W&B should compare it: 3 -> 3, 0.5 -> 0.5, true -> True, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pairs(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq:
            out[key.lstrip("+~")] = value
    return out


def swept(overrides: list[str], sweep_dir: Path) -> dict[str, Any]:
    """This cell's values of the keys that differ between the grid's cells (its plan), e.g.
    {"trait": "owl", "seed": 3}; every override when the plan cannot be read."""
    mine = _pairs(overrides)
    try:
        cells = [_pairs(c["overrides"]) for c in json.loads((sweep_dir / PLAN).read_text())]
    except (OSError, ValueError, TypeError, KeyError):
        cells = []
    keys = [k for k in mine if len({c.get(k) for c in cells}) > 1] if len(cells) > 1 else list(mine)
    return {k: _value(mine[k]) for k in keys}


def grid_name(config: DictConfig) -> str:
    """The grid's name: its `sweep=` preset, else its sweep folder (relative to where it was started)."""
    choice = OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None)
    if choice:
        return str(choice)
    folder = Path(str(config.hydra.sweep.dir))
    try:
        folder = folder.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        pass
    return str(folder)[-64:]  # W&B tags are at most 64 characters


class OutcomeReport(Callback):
    """Each grid job: its output into its own log while it runs (sublim.joblog) and its grid noted
    for W&B. At the end of a multirun: one line per failed cell, a non-zero exit if any failed, and
    the report's summary table."""

    _capture = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = list(config.hydra.overrides.task)
        _job.clear()
        _job.update(grid=grid_name(config), sweep_dir=str(sweep_dir.resolve()), job=int(config.hydra.job.num),
                    overrides=overrides, swept=swept(overrides, sweep_dir))
        if live():
            from sublim.joblog import capture

            self._capture = capture(config.hydra.runtime.output_dir, f"{config.hydra.job.name}.log").start()

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        _job.clear()

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
                logs = sorted(outcome.parent.glob("*.log"))
                if logs:
                    failed.append(f"      log: {logs[0]}")
        n_failed = sum(line.startswith("  #") for line in failed)
        print(f"sweep {sweep_dir}: {ok} cells ok, {n_failed} failed", flush=True)
        if failed:
            print(f"{n_failed} cell(s) failed:\n" + "\n".join(failed), file=sys.stderr, flush=True)
        if ok:
            print("\n".join(_summary_lines(sweep_dir)), flush=True)
        if failed:
            # Hydra turns a callback's exception into a warning; only SystemExit makes the exit code say it
            raise SystemExit(1)


def _summary_lines(sweep_dir: Path) -> list[str]:
    """The report's summary table (sublim.report.brief); a problem with it is one line, never a failure
    of the grid, whose results are all in place."""
    try:
        from sublim.report.brief import grid_summary

        return [""] + grid_summary(sweep_dir)
    except Exception as e:  # noqa: BLE001 - the summary is a courtesy at the end
        return [f"(no summary table: {type(e).__name__}: {first_line(e)}; run sublim-report {sweep_dir})"]
