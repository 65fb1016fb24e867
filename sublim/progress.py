"""How far the stage this process computes has got, for people and for files.

A stage's loops count through `bar` (a drop-in for the tqdm calls they made before: the samplers,
the scorers, the tiny model's pretraining) or `report` (code that counts itself: the fine-tune's
trainer callback). Each count goes to three places:

- a terminal: the usual tqdm bar, but only when stderr is a terminal (a single run in a shell);
- anywhere else (a grid cell's log, CI, a SLURM output file): a plain log line every LOG_EVERY_S
  and one when the loop ends, never a carriage return;
- the artifact store: while `stage(...)` is active (the store wraps every computation in it), a small
  JSON record next to the stage's lock, `<artifacts>/<stage>/.locks/<key>.progress`
  {stage, key, desc, done, total, unit, rate, started, updated, host, pid}, rewritten at most every
  EVERY_S. Files, not pipes: the same record serves a local worker and a SLURM job on another node,
  and sublim-status and a grid's live display read it without talking to the job.

Stdlib and tqdm only: the status command reads records with `read` without importing torch.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

log = logging.getLogger(__name__)

SUFFIX = ".progress"
EVERY_S = 2.0  # how often the record in the store is rewritten
LOG_EVERY_S = 30.0  # off a terminal: a plain progress line this often


class _Stage:
    def __init__(self, path: Path, stage: str, key: str) -> None:
        self.path, self.stage, self.key = path, stage, key
        self.written = 0.0


_current: Optional[_Stage] = None
_lock = threading.Lock()


def record_path(lock_path: Path) -> Path:
    """The progress record beside a store lock (`<key>.lock` -> `<key>.progress`)."""
    return lock_path.with_suffix(SUFFIX)


@contextlib.contextmanager
def stage(path: Path, stage_name: str, key: str) -> Iterator[None]:
    """While the block runs, counts in this process are recorded in `path` (removed at the end)."""
    global _current
    before, _current = _current, _Stage(Path(path), stage_name, key)
    opened = set(_counters)
    try:
        yield
    finally:
        _current = before
        for desc in set(_counters) - opened:  # a count the stage left open (a job that ended early)
            _counters.pop(desc).close()
        with contextlib.suppress(OSError):
            Path(path).unlink()


def _write(st: _Stage, row: dict) -> None:
    tmp = st.path.with_name(f".{st.path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(row))
        os.replace(tmp, st.path)
    except OSError:  # a store this job cannot write: progress is a nicety, never a failure
        with contextlib.suppress(OSError):
            tmp.unlink()


def read(path: Path) -> Optional[dict]:
    """A progress record, or None when there is none (or it cannot be read)."""
    try:
        row = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) else None


def describe(row: dict) -> str:
    """'finetune 120/300 step, 4.1 step/s' from a record ('' when it holds no count)."""
    done, total, unit = row.get("done"), row.get("total"), row.get("unit") or "it"
    if not isinstance(done, (int, float)):
        return ""
    what = row.get("desc") or row.get("stage") or ""
    count = f"{done:g}/{total:g}" if isinstance(total, (int, float)) and total else f"{done:g}"
    rate = row.get("rate")
    speed = f", {rate:.3g} {unit}/s" if isinstance(rate, (int, float)) and rate > 0 else ""
    return f"{what} {count} {unit}{speed}".strip()


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Counter:
    """One loop's count: a terminal bar where there is a terminal, plain log lines elsewhere, and the
    store's record while a stage is active. `disable` hides the bar and the lines, not the record."""

    def __init__(self, total: Optional[float] = None, desc: str = "", unit: str = "it", initial: float = 0,
                 disable: bool = False, draw: Optional[bool] = None, **tqdm_kwargs: Any) -> None:
        self.total, self.desc, self.unit, self.n = total, desc or "", unit, initial
        self.disable = disable
        self._n0, self._t0 = initial, time.time()
        self._logged = self._t0
        self._closed = False
        self._bar = None
        if not disable and (draw if draw is not None else _terminal()):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, **tqdm_kwargs)

    def update(self, k: float = 1) -> None:
        self.n += k
        if self._bar is not None:
            self._bar.update(k)
        now = time.time()
        self._record(now)
        if self._bar is None and not self.disable and now - self._logged >= LOG_EVERY_S:
            self._logged = now
            log.info("%s", self._line(now))

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(*args, **kwargs)

    def rate(self, now: float) -> Optional[float]:
        dt = now - self._t0
        return (self.n - self._n0) / dt if dt > 0 and self.n > self._n0 else None

    def _line(self, now: float) -> str:
        total = f"/{self.total:g}" if self.total else ""
        r = self.rate(now)
        speed = f" ({r:.3g} {self.unit}/s)" if r else ""
        return f"{self.desc or 'progress'}: {self.n:g}{total} {self.unit} in {now - self._t0:.1f} s{speed}"

    def _record(self, now: float, force: bool = False) -> None:
        st = _current
        if st is None:
            return
        with _lock:
            if not force and now - st.written < EVERY_S:
                return
            st.written = now
        _write(st, {"stage": st.stage, "key": st.key, "desc": self.desc, "done": self.n, "total": self.total,
                    "unit": self.unit, "rate": self.rate(now), "started": self._t0, "updated": now,
                    "host": socket.gethostname(), "pid": os.getpid()})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.time()
        self._record(now, force=True)
        if self._bar is not None:
            self._bar.close()
        elif not self.disable:
            log.info("%s", self._line(now))

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Iterating(Counter):
    def __init__(self, iterable: Iterable, **kwargs: Any) -> None:
        if kwargs.get("total") is None:
            try:
                kwargs["total"] = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                pass
        super().__init__(**kwargs)
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()


def bar(iterable: Optional[Iterable] = None, **kwargs: Any):
    """tqdm's call, as the stages used it: `bar(total=..., desc=..., unit=...)` with `.update(k)`
    and `.close()`, or `for x in bar(iterable, desc=...)`. See the module docstring for where the
    count goes."""
    return _Iterating(iterable, **kwargs) if iterable is not None else Counter(**kwargs)


_counters: dict[str, Counter] = {}


def report(done: float, total: Optional[float] = None, unit: str = "it", desc: str = "") -> None:
    """For code that keeps its own count (a trainer callback): where it is now. The first call of a
    `desc` starts its clock; reaching `total` ends it (its closing line, its last record)."""
    c = _counters.get(desc)
    if c is None or c._closed:
        # on a terminal the caller draws its own bar (the trainer's): no lines in between
        c = _counters[desc] = Counter(total=total, desc=desc, unit=unit, initial=done, disable=_terminal(), draw=False)
        return
    c.total = total if total is not None else c.total
    c.update(done - c.n)
    if c.total is not None and done >= c.total:
        c.close()
        _counters.pop(desc, None)
