"""What the artifact store holds: one pass over `<store>/<stage>/` gives the published artifacts
(size, provenance, the upstream refs in their spec.json, hits from events.jsonl), the leftovers
(unfinished `.work`, stale locks, an interrupted prune's folders, broken publishes) and the store
locks. Everything else in sublim-store (du, the job closure, prune, the listings) reads this
Inventory instead of the disk, so the store is walked once per command.
"""
from __future__ import annotations

import functools
import json
import os
import re
import stat
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sublim.cache import EVENTS_FILE, SPEC_FILE
from sublim.cellstate import StoreLock, store_locks
from sublim.spec import parse_artifact_ref

WORK, LOCKS, PRUNING = ".work", ".locks", ".pruning"
_STAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")


class StoreError(Exception):
    """One line: what is wrong with the store or a path given, and the fix."""


@dataclass
class Artifact:
    stage: str
    key: str
    path: Path
    size: int  # bytes of its files
    files: int
    published: float  # spec.json's mtime: when it was published
    version: Optional[int] = None
    sublim: Optional[str] = None  # the commit that computed it (provenance)
    libraries: dict = field(default_factory=dict)  # full versions (provenance)
    upstream: list[str] = field(default_factory=list)  # artifact refs in its spec, sorted
    hits: int = 0
    computed_s: Optional[float] = None  # the last "done" event's seconds
    last_event: Optional[float] = None

    @property
    def id(self) -> tuple[str, str]:
        return self.stage, self.key

    @property
    def last_used(self) -> float:
        return max(self.published, self.last_event or 0.0)

    def upstream_ids(self) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in map(parse_artifact_ref, self.upstream) if r}


@dataclass
class Leftover:
    """Something under a stage that is not a published artifact.

    kind: "work" (`.work/<key>`, unfinished), "lock" (a lock file with no .work), "pruning" (what an
    interrupted prune left in `.pruning/`), "incomplete" (`<key>/` without spec.json: a broken
    publish of an old layout, which the store replaces when it computes that key), "unreadable"
    (`<key>/` whose spec.json cannot be read: reported, never pruned)."""

    kind: str
    stage: str
    key: str
    path: Path
    size: int
    last_used: float  # the newest mtime in it (and its lock's)
    live: bool = False  # its lock is live: a job is computing it
    owner: Optional[str] = None  # the live lock's host and pid

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.key}" if self.kind in ("incomplete", "unreadable") \
            else f"{self.stage}/{self.path.parent.name}/{self.path.name}"


@dataclass
class Inventory:
    root: Path
    stages: list[str]
    artifacts: list[Artifact]
    leftovers: list[Leftover]
    locks: dict[tuple[str, str], StoreLock]
    other: dict[str, int]  # store-root entries that are not stages (tiny-model/, events.jsonl): bytes
    problems: list[str]  # one line each: unreadable spec.json, an unreadable folder

    def artifact(self, stage: str, key: str) -> Optional[Artifact]:
        return self.by_id.get((stage, key))

    @functools.cached_property
    def by_id(self) -> dict[tuple[str, str], Artifact]:
        return {a.id: a for a in self.artifacts}

    def live(self, stage: str, key: str) -> Optional[StoreLock]:
        lk = self.locks.get((stage, key))
        return lk if lk is not None and lk.live else None


def _tree(path: Path) -> tuple[int, int, float]:
    """(bytes, files, newest mtime) of the regular files under path (symlinks not followed)."""
    size = files = 0
    newest = 0.0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            st = d.lstat()
            newest = max(newest, st.st_mtime)
            if not stat.S_ISDIR(st.st_mode):
                return (st.st_size, 1, st.st_mtime) if stat.S_ISREG(st.st_mode) else (0, 0, st.st_mtime)
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(e.path))
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
                files += 1
    return size, files, newest


def is_artifact_ref(s: str) -> bool:
    r = parse_artifact_ref(s)
    return r is not None and bool(_STAGE_RE.match(r[0])) and bool(_KEY_RE.match(r[1]))


def spec_refs(value: Any) -> list[str]:
    """Every string in a spec (nested dicts, lists) that is an upstream artifact ref, sorted, unique."""
    out: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if is_artifact_ref(v):
                out.add(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return sorted(out)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def read_events(root: Path, problems: Optional[list[str]] = None) -> dict[tuple[str, str], dict]:
    """Per (stage, key): hits, the last "done" seconds, the last event's time (events.jsonl)."""
    out: dict[tuple[str, str], dict] = defaultdict(lambda: {"hits": 0, "computed_s": None, "last": None})
    p = root / EVENTS_FILE
    bad = 0
    try:
        f = open(p, errors="replace")
    except FileNotFoundError:
        return out
    except OSError as e:
        if problems is not None:
            problems.append(f"{p}: unreadable ({_first_line(e)}): hit counts unknown; fix its permissions")
        return out
    with f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ident = (str(row["stage"]), str(row["key"]))
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            rec = out[ident]
            if row.get("event") == "hit":
                rec["hits"] += 1
            if row.get("event") == "done" and isinstance(row.get("seconds"), (int, float)):
                rec["computed_s"] = float(row["seconds"])
            t = row.get("time")
            if isinstance(t, (int, float)):
                rec["last"] = max(rec["last"] or 0.0, float(t))
    if bad and problems is not None:
        problems.append(f"{p}: {bad} malformed line(s) skipped (a write cut short); the rest is counted")
    return out


def _is_stage_dir(d: Path) -> bool:
    """A stage folder holds <key>/spec.json folders, .work or .locks; a model folder (tiny-model/)
    holds its own spec.json or config.json at the top."""
    if (d / SPEC_FILE).exists() or (d / "config.json").exists():
        return False
    if (d / WORK).is_dir() or (d / LOCKS).is_dir():
        return True
    try:
        return any(c.is_dir() and (c / SPEC_FILE).is_file() for c in d.iterdir())
    except OSError:
        return False


def check_store(root: str | Path) -> Path:
    """The store's path, or StoreError naming what is wrong and the fix."""
    root = Path(root)
    fix = "pass --artifacts DIR (the folder the jobs' paths.artifacts names; default ./artifacts)"
    if not root.exists():
        raise StoreError(f"no artifact store at {root}: {fix}")
    if not root.is_dir():
        raise StoreError(f"{root} is a file, not an artifact store: {fix}")
    try:
        entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    except OSError as e:
        raise StoreError(f"{root}: cannot list it ({_first_line(e)}): fix its permissions or {fix}") from None
    if entries and not (root / EVENTS_FILE).exists() and not any(e.is_dir() and _is_stage_dir(e) for e in entries):
        raise StoreError(f"{root} is not a sublim artifact store (no <stage>/<key>/spec.json, no {EVENTS_FILE}): {fix}")
    return root.absolute()


def scan(root: str | Path, now: Optional[float] = None) -> Inventory:
    """Everything in the store: published artifacts, unfinished work, locks, what is not a stage."""
    root = check_store(root)
    now = time.time() if now is None else now
    problems: list[str] = []
    events = read_events(root, problems)
    locks = {(lk.stage, lk.key): lk for lk in store_locks(root, now)}
    stages, artifacts, leftovers, other = [], [], [], {}
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            continue
        try:
            if not d.is_dir() or not _is_stage_dir(d):
                other[d.name] = _tree(d)[0]
                continue
            stages.append(d.name)
            children = sorted(d.iterdir())
        except OSError as e:
            problems.append(f"{d}: cannot read it ({_first_line(e)}): skipped; fix its permissions")
            continue
        for c in children:
            try:
                if c.name.startswith(".") or not c.is_dir():
                    continue
                if not (c / SPEC_FILE).is_file():
                    if _KEY_RE.match(c.name):
                        size, _, newest = _tree(c)
                        leftovers.append(Leftover("incomplete", d.name, c.name, c, size, newest))
                    continue
            except OSError as e:
                problems.append(f"{c}: cannot read it ({_first_line(e)}): skipped; fix its permissions")
                continue
            a = _artifact(d.name, c, events, problems)
            if a is not None:
                artifacts.append(a)
            else:  # counted by du, listed by ls, never pruned
                size, _, newest = _tree(c)
                leftovers.append(Leftover("unreadable", d.name, c.name, c, size, newest))
        for w in _children(d / WORK):
            lk = locks.get((d.name, w.name))
            size, _, newest = _tree(w)
            live = lk is not None and lk.live
            leftovers.append(Leftover("work", d.name, w.name, w, size, max(newest, now - lk.age_s if lk else 0.0),
                                      live, f"host {lk.host}, pid {lk.pid}" if live else None))
        for p in _children(d / PRUNING):
            leftovers.append(Leftover("pruning", d.name, p.name.split(".")[0], p, _tree(p)[0], 0.0))
    work = {(lo.stage, lo.key) for lo in leftovers if lo.kind == "work"}
    for ident, lk in sorted(locks.items()):
        if not lk.live and ident not in work:
            p = root / lk.stage / LOCKS / f"{lk.key}.lock"
            leftovers.append(Leftover("lock", lk.stage, lk.key, p, 0, now - lk.age_s))
    return Inventory(root, stages, artifacts, leftovers, locks, other, problems)


def _children(d: Path) -> list[Path]:
    try:
        return sorted(c for c in d.iterdir() if c.is_dir())
    except OSError:
        return []


def _artifact(stage: str, path: Path, events: dict, problems: list[str]) -> Optional[Artifact]:
    spec_file = path / SPEC_FILE
    try:
        record = json.loads(spec_file.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        published = spec_file.stat().st_mtime
    except (OSError, ValueError) as e:
        problems.append(f"{spec_file}: unreadable ({_first_line(e)}): skipped (never pruned); "
                        f"fix it or delete {path}")
        return None
    size, files, _ = _tree(path)
    if "spec" in record and "stage" in record:  # sublim.pipeline.record
        spec, prov = record.get("spec"), record.get("provenance")
    else:  # a spec.json of another layout (an old store, a test's Store): all of it is the spec
        spec, prov = record, None
    prov = prov if isinstance(prov, dict) else {}
    inputs = prov.get("inputs") if isinstance(prov.get("inputs"), dict) else {}
    libs = prov.get("libraries") if isinstance(prov.get("libraries"), dict) else {}
    ev = events.get((stage, path.name), {})
    version = record.get("version")
    return Artifact(stage, path.name, path, size, files, published,
                    version if isinstance(version, int) else None,
                    prov.get("sublim") if isinstance(prov.get("sublim"), str) else None,
                    {str(k): str(v) for k, v in libs.items()},
                    sorted(set(spec_refs(spec)) | set(spec_refs(list(inputs)))),
                    ev.get("hits", 0), ev.get("computed_s"), ev.get("last"))
