"""The `sublim-status` command: its arguments (`--watch [SECONDS]`, `--artifacts`, `--json`), the
streams and warnings set up so nothing it prints can fail or repeat, and `main`, which checks the
folder is a sweep and hands over to the snapshot and display modules. The console script
(sublim.status:main) lands here.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from sublim import cellstate
from sublim.cellstate import PLAN, cell_state, text_safe
from sublim.status.display import as_json, render, say, watch
from sublim.status.read import is_sweep
from sublim.status.snapshots import snapshot
from sublim.terminal import safe_streams


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


def main(argv: Optional[list[str]] = None) -> int:
    safe_streams()
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
