"""Removing what refs.find_unused lists, safely beside running jobs: each item under its store lock
(a live lock means a job is computing it: kept), renamed into `<stage>/.pruning/` before it is
deleted so no reader sees half a folder under a real key, one error line per failure while the
rest goes on. The only module of sublim-store that deletes anything.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sublim.cache import Store
from sublim.inventory.contents import PRUNING, Inventory, _first_line
from sublim.inventory.refs import Item, Unused
from sublim.inventory.units import human


@dataclass
class PruneResult:
    removed: list[Item]
    kept: list[tuple[Item, str]]  # a job took its lock meanwhile
    errors: list[str]  # one line each
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(i.size for i in self.removed)


def prune(inv: Inventory, unused: Unused, yes: bool = False, say: Callable[[str], None] = print) -> PruneResult:
    """Remove unused.items (with yes; else only say what would go). Each under its store lock
    (a live lock: kept), renamed into <stage>/.pruning/ and then deleted; an error is one line and
    the rest goes on."""
    res = PruneResult([], [], [], dry_run=not yes)
    if not yes:
        for i in unused.items:
            say(f"would remove {i.label}  {human(i.size)}  ({i.why(time.time())})")
            res.removed.append(i)
        return res
    store = Store(inv.root, poll_s=0.01)
    for i in unused.items:
        try:
            note = _remove(store, i)
        except TimeoutError:
            owner = store._describe(store._lock_path(i.stage, i.key))
            res.kept.append((i, owner))
            say(f"kept {i.label}: a job took its lock meanwhile ({owner})")
            continue
        except OSError as e:
            line = f"error: {i.label}: {e.strerror or _first_line(e)} ({e.filename or i.path}): " \
                   f"fix the permissions (e.g. chmod -R u+w {i.path.parent}) and run prune again"
            res.errors.append(line)
            say(line)
            continue
        res.removed.append(i)
        say(f"removed {i.label}  {human(i.size)}" + (f"  ({note})" if note else ""))
    for s in {i.stage for i in unused.items}:
        try:
            (inv.root / s / PRUNING).rmdir()  # only when empty
        except OSError:
            pass
    return res


def _remove(store: Store, i: Item) -> str:
    """Remove one item; returns a note or '' (OSError on failure, TimeoutError when a job holds its lock)."""
    if i.kind == "pruning":
        _rmtree(i.path)
        return ""
    lock = store.acquire(i.stage, i.key, timeout_s=0)  # takes over a stale lock; TimeoutError if live
    try:
        if i.kind == "lock":
            return ""  # releasing the lock we took over removes it
        if not i.path.exists():
            return "already gone"
        aside = store.root / i.stage / PRUNING / f"{i.key}.{uuid.uuid4().hex[:8]}"
        aside.parent.mkdir(exist_ok=True)
        os.rename(i.path, aside)  # a reader sees the whole folder under its key, or nothing
        _rmtree(aside)
        return ""
    finally:
        lock.release()


def _rmtree(path: Path) -> None:
    errors: list[OSError] = []

    def onerror(_fn, _p, exc_info) -> None:
        e = exc_info[1]
        if not isinstance(e, FileNotFoundError):
            errors.append(e)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda fn, p, e: onerror(fn, p, (type(e), e, None)))
    else:
        shutil.rmtree(path, onerror=onerror)
    if errors:
        raise errors[0]
