"""A grid cell's whole output in its own job folder, not on the grid's terminal.

In a grid, every job's plan, stage log lines, library warnings and progress would otherwise reach
the terminal (or CI log, or SLURM output) that launched it, interleaved across workers. While a
grid job runs, `capture(job_dir, log_name)` points the process's file descriptors 1 and 2 at
`<job_dir>/<log_name>` (Hydra's job log, cli.log, so the one file people already know holds it
all): prints, logging, Python warnings, C-level output and the stage processes the job starts
(they inherit the descriptors) all land there. Hydra's own file handler for that log is set aside
meanwhile, so no line is written twice. tqdm is told to stay quiet (TQDM_DISABLE=1): sublim's own
counters write plain lines off a terminal (sublim.progress), so the log holds no carriage return.

A single run (`sublim trait=owl`) is never captured: its progress bars stay on the terminal.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional


class Capture:
    """fd 1 and 2 pointed at a log file until `release()`; the previous targets come back then."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = Path(log_path)
        self._saved: list[int] = []
        self._handlers: list[logging.Handler] = []
        self._env: Optional[str] = None
        self._line_buffering: Optional[bool] = None

    def start(self) -> "Capture":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _flush()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._saved = [os.dup(1), os.dup(2)]
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)
        root = logging.getLogger()
        target = os.path.abspath(self.log_path)
        self._handlers = [h for h in root.handlers if isinstance(h, logging.FileHandler)
                          and os.path.abspath(h.baseFilename) == target]
        for h in self._handlers:  # the console handler now writes to the same file
            root.removeHandler(h)
        self._env = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        with contextlib.suppress(AttributeError, ValueError):
            self._line_buffering = sys.stdout.line_buffering
            sys.stdout.reconfigure(line_buffering=True)  # prints and log lines keep their order in the file
        return self

    def release(self) -> None:
        if not self._saved:
            return
        _flush()
        for target, saved in zip((1, 2), self._saved):
            os.dup2(saved, target)
            os.close(saved)
        self._saved = []
        root = logging.getLogger()
        for h in self._handlers:
            root.addHandler(h)
        self._handlers = []
        if self._env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = self._env
        if self._line_buffering is not None:
            with contextlib.suppress(AttributeError, ValueError):
                sys.stdout.reconfigure(line_buffering=self._line_buffering)

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.release()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()


def capture(job_dir: str | Path, log_name: str = "cli.log") -> Capture:
    """A Capture of this process's output into `job_dir/log_name` (a context manager, or start/release)."""
    return Capture(Path(job_dir) / log_name)
