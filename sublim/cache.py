"""The artifact store: one folder per (stage, key), published atomically, one writer per key.

A stage's key hashes (stage name, stage version, the spec fields that change its output, the
upstream keys), so re-running anything recomputes only what is missing. Work happens in
`<stage>/.work/<key>/`, kept across a killed attempt so a stage can resume (trainer checkpoints,
samples written so far); the finished folder is published by one rename, so a reader sees a whole
artifact or none. A lock file per key (host, pid, token; its mtime is a heartbeat) makes parallel
jobs on a shared filesystem compute an artifact once (beside it, `<key>.progress`: how far the
computation has got, sublim.progress); a lock whose owner is dead (same host) or
whose heartbeat stopped (any host) is taken over. `events.jsonl` logs every hit, computation, failure
(its first line) and interruption; a store that cannot be written still serves what it holds (the
log then goes unwritten, with one warning).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sublim import progress
from sublim.cellstate import pid_alive
from sublim.errors import first_line

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"


def stage_key(stage: str, version: int, spec: dict[str, Any]) -> str:
    """Content hash of what determines a stage's output (spec includes upstream keys)."""
    blob = json.dumps({"stage": stage, "version": version, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Lock:
    path: Path
    token: str
    _stop: threading.Event
    _thread: threading.Thread

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass


class Store:
    """Artifacts under `root/<stage>/<key>/`; see the module docstring for the guarantees."""

    def __init__(self, root: str | Path, heartbeat_s: float = 10.0, stale_after_s: float = 120.0,
                 poll_s: float = 1.0):
        self.root = Path(root)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self.host = socket.gethostname()
        self._events_warned = False

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / SPEC_FILE).is_file()

    def work_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / ".work" / key

    # -- the one entry point stages use ---------------------------------------------------------
    def get_or_compute(self, stage: str, key: str, spec: dict[str, Any],
                       compute: Callable[[Path], None]) -> tuple[Path, bool]:
        """The published folder for (stage, key), computing it under the lock if missing.

        Returns (path, computed). `compute(work_dir)` writes the artifact's files into work_dir,
        which survives a killed attempt (resume there or start over).
        """
        final = self.path(stage, key)
        if self.exists(stage, key):
            self.event(stage, key, "hit")
            return final, False
        t0 = time.time()
        try:
            lock = self.acquire(stage, key)
            try:
                if self.exists(stage, key):  # another job published it while we waited
                    self.event(stage, key, "hit")
                    return final, False
                work = self.work_dir(stage, key)
                work.mkdir(parents=True, exist_ok=True)
                self.event(stage, key, "start")
                t0 = time.time()
                with progress.stage(progress.record_path(lock.path), stage, key):  # beside the lock
                    compute(work)
                (work / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
                if final.exists():  # a folder without spec.json: a broken publish from an old layout
                    shutil.rmtree(final)
                os.rename(work, final)
                self.event(stage, key, "done", seconds=round(time.time() - t0, 3))
                return final, True
            finally:
                lock.release()
        except KeyboardInterrupt:
            self.event(stage, key, "interrupted", seconds=round(time.time() - t0, 3))
            raise
        except Exception as e:
            self.event(stage, key, "failed", error=first_line(f"{type(e).__name__}: {e}"),
                       seconds=round(time.time() - t0, 3))
            raise

    # -- locking ----------------------------------------------------------------------------------
    def _lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / ".locks" / f"{key}.lock"

    def acquire(self, stage: str, key: str, timeout_s: float | None = None) -> Lock:
        path = self._lock_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        body = json.dumps({"host": self.host, "pid": os.getpid(), "token": token, "since": time.time()})
        t0 = time.time()
        announced = False
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._stale_owner(path)
                if owner is not None:
                    self._take_over(path, owner)
                    continue
                if not announced:
                    log.info("waiting for %s/%s: another job is computing it (%s)", stage, key,
                             self._describe(path))
                    announced = True
                if timeout_s is not None and time.time() - t0 > timeout_s:
                    raise TimeoutError(f"lock {path} still held after {timeout_s}s")
                time.sleep(self.poll_s)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(body)
            stop = threading.Event()
            thread = threading.Thread(target=self._heartbeat, args=(path, token, stop), daemon=True)
            thread.start()
            return Lock(path, token, stop, thread)

    def _heartbeat(self, path: Path, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    def _stale_owner(self, path: Path) -> dict | None:
        """The lock's content if its owner is gone, else None."""
        try:
            owner = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # written but not yet filled: give the writer a moment
            age = time.time() - path.stat().st_mtime if path.exists() else 0
            return {"token": None} if age > self.stale_after_s else None
        if owner.get("host") == self.host and not pid_alive(int(owner.get("pid", -1))):
            return owner
        return owner if age > self.stale_after_s else None

    def _take_over(self, path: Path, owner: dict) -> None:
        """Move a stale lock aside; if a racing job already replaced it, put the new one back."""
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except json.JSONDecodeError:
            moved = {"token": None}
        if moved.get("token") != owner.get("token"):
            try:
                os.link(aside, path)  # fails if yet another lock is there: then that one wins
            except FileExistsError:
                pass
        else:
            log.warning("took over a stale lock %s (%s)", path, self._describe_owner(owner))
        aside.unlink(missing_ok=True)

    def _describe(self, path: Path) -> str:
        try:
            return self._describe_owner(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return "owner unknown"

    @staticmethod
    def _describe_owner(owner: dict) -> str:
        return f"host {owner.get('host')}, pid {owner.get('pid')}"

    # -- the stage log ------------------------------------------------------------------------
    def event(self, stage: str, key: str, event: str, **extra: Any) -> None:
        """Append to events.jsonl: which job hit, computed, failed or was interrupted at what (one short
        O_APPEND write). A store it cannot write (read-only, full) logs one warning and goes on: a
        cached cell is served from a store it can only read."""
        row = {"time": time.time(), "stage": stage, "key": key, "event": event, "host": self.host,
               "pid": os.getpid(), **extra}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / EVENTS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            if not self._events_warned:
                self._events_warned = True
                log.warning("cannot append to %s (%s): the stage log misses this job's events; results are "
                            "unaffected", self.root / EVENTS_FILE, e.strerror or e)

    def events(self) -> list[dict]:
        p = self.root / EVENTS_FILE
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
