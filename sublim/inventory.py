"""`sublim-store`: what the artifact store holds, which of it no job refers to, and pruning that.

    sublim-store du [--artifacts DIR] [--json]          size and count per stage
    sublim-store ls [STAGE] [--artifacts DIR] [--json]  each artifact: key, size, age, provenance, upstream, hits
    sublim-store unused --jobs DIR [DIR ...]            what no job under DIR refers to (with its upstream)
    sublim-store prune --jobs DIR [DIR ...] [--yes]     remove that (a dry run without --yes)

The store (sublim.cache) holds `<stage>/<key>/` with `spec.json` = {stage, version, key, spec,
provenance} (sublim.pipeline.record); a spec names its upstream artifacts as `<stage>:<key>[/<sub>]`
refs (sublim.spec.parse_artifact_ref). A job folder (`outputs/...`, `multirun/<date>/<time>/<n>/`)
names the keys of its cell in `metrics.json` (or `cell.json`) under "keys"; an MNIST job's
metrics.json names none and is matched to the mnist artifact whose metrics.json it copies. An
artifact is *used* when a job refers to it or to anything downstream of it (a fine-tune a job names
keeps its filter, sample, teacher, reference, convert...).

Pruning is safe against jobs running beside it: each removal takes the artifact's store lock first
(a live lock means a job is computing it: it is kept), then renames the folder to
`<stage>/.pruning/<key>.<token>` and deletes that, so no reader ever sees half a folder under a
real key. Artifacts used (hit or published) within `--keep-recent` (default 1 h) are kept too: a
running job names its keys only when it ends, and may still read an upstream it computed earlier.
`.work/<key>` folders whose lock is not live are leftovers of killed jobs (resumable, so only
removed when idle longer than --keep-recent too). Sizes are apparent sizes (bytes of the files), in
decimal units (1 MB = 10^6 bytes).

Stdlib only (besides PyYAML, when present, to read a job's `.hydra/config.yaml`).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sublim.cache import EVENTS_FILE, SPEC_FILE, Store
from sublim.cellstate import SKIP_DIRS, StoreLock, store_locks
from sublim.spec import parse_artifact_ref

WORK, LOCKS, PRUNING = ".work", ".locks", ".pruning"
_STAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")
DEFAULT_KEEP_RECENT_S = 3600.0
JOB_FILES = ("metrics.json", "cell.json")
_NOT_RESULTS = ("provenance", "wandb", "wandb_dir")  # what a job adds to the mnist stage's metrics.json


class StoreError(Exception):
    """One line: what is wrong with the store or a path given, and the fix."""


# -- what the store holds ----------------------------------------------------------------------------
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


# -- du ----------------------------------------------------------------------------------------------
def disk_usage(inv: Inventory) -> dict:
    """Per stage: published (count, bytes), unfinished .work (count, bytes, running), stale locks;
    the total; what else is in the store root."""
    rows: dict[str, dict] = {s: {"published": {"count": 0, "bytes": 0},
                                 "unfinished": {"count": 0, "bytes": 0, "running": 0},
                                 "stale_locks": 0, "pruning": {"count": 0, "bytes": 0},
                                 "unreadable": {"count": 0, "bytes": 0}} for s in inv.stages}
    for a in inv.artifacts:
        rows[a.stage]["published"]["count"] += 1
        rows[a.stage]["published"]["bytes"] += a.size
    for lo in inv.leftovers:
        r = rows.get(lo.stage)
        if r is None:
            continue
        if lo.kind in ("work", "incomplete"):
            r["unfinished"]["count"] += 1
            r["unfinished"]["bytes"] += lo.size
            r["unfinished"]["running"] += lo.live
        elif lo.kind in ("pruning", "unreadable"):
            r[lo.kind]["count"] += 1
            r[lo.kind]["bytes"] += lo.size
    for lk in inv.locks.values():
        if not lk.live and lk.stage in rows:
            rows[lk.stage]["stale_locks"] += 1
    total = {"published": {"count": sum(r["published"]["count"] for r in rows.values()),
                           "bytes": sum(r["published"]["bytes"] for r in rows.values())},
             "unfinished": {k: sum(r["unfinished"][k] for r in rows.values()) for k in ("count", "bytes", "running")},
             "stale_locks": sum(r["stale_locks"] for r in rows.values()),
             **{kind: {k: sum(r[kind][k] for r in rows.values()) for k in ("count", "bytes")}
                for kind in ("pruning", "unreadable")}}
    total["bytes"] = sum(total[k]["bytes"] for k in ("published", "unfinished", "pruning", "unreadable")) \
        + sum(inv.other.values())
    return {"root": str(inv.root), "stages": rows, "other": dict(inv.other), "total": total,
            "problems": list(inv.problems)}


# -- which artifacts jobs refer to -------------------------------------------------------------------
@dataclass
class JobRefs:
    keys: set[tuple[str, str]]  # (stage, key) named by a job (directly)
    jobs: int  # job folders read
    problems: list[str]
    mnist_matched: int = 0


def _canonical(metrics: dict) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k not in _NOT_RESULTS}, sort_keys=True, default=str)


def _is_mnist(m: dict) -> bool:
    return all(k in m for k in ("arms", "teacher", "reference", "n_seeds"))


def _job_store(job: Path) -> Optional[Path]:
    """The store an MNIST job used (.hydra/config.yaml paths.artifacts, relative to the job's start
    folder in .hydra/hydra.yaml), None where it cannot be told."""
    try:
        import yaml
    except ImportError:
        return None
    try:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        art = cfg["paths"]["artifacts"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    if not isinstance(art, str) or "${" in art:
        return None
    p = Path(art).expanduser()
    if not p.is_absolute():
        try:
            cwd = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["cwd"]
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            return None
        p = Path(cwd) / p
    return p.resolve()


def job_refs(job_dirs: Iterable[str | Path], inv: Inventory) -> JobRefs:
    """The (stage, key) pairs the job folders under job_dirs name (metrics.json / cell.json "keys",
    metrics.json "artifacts" paths into this store; an MNIST job by its mnist artifact's metrics).
    StoreError for a job folder that does not exist."""
    root = inv.root.resolve()
    keys: set[tuple[str, str]] = set()
    problems: list[str] = []
    mnist_jobs: list[tuple[Path, dict]] = []
    jobs = 0
    for top in job_dirs:
        top = Path(top)
        if not top.is_dir():
            raise StoreError(f"--jobs {top}: no such folder: pass the folders your jobs wrote (outputs/, multirun/)")
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS and not n.startswith(".")
                                 and (here / n).resolve() != root)
            names = [f for f in JOB_FILES if f in filenames]
            if not names:
                continue
            jobs += 1
            for name in names:
                try:
                    m = json.loads((here / name).read_text())
                except (OSError, ValueError) as e:
                    problems.append(f"{here / name}: unreadable ({_first_line(e)}): the artifacts of this job are "
                                    f"not kept by it; fix or delete the file")
                    continue
                if not isinstance(m, dict):
                    continue
                named = m.get("keys")
                if isinstance(named, dict):
                    keys |= {(str(s), str(k)) for s, k in named.items() if isinstance(k, str)}
                arts = m.get("artifacts")
                if isinstance(arts, dict):
                    for p in arts.values():
                        if isinstance(p, str):
                            p = Path(p).resolve()
                            if p.parent.parent == root:
                                keys.add((p.parent.name, p.name))
                if name == "metrics.json" and not isinstance(named, dict) and _is_mnist(m):
                    mnist_jobs.append((here, m))
    out = JobRefs(keys, jobs, problems)
    if mnist_jobs:
        by_content: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for a in inv.artifacts:
            if a.stage == "mnist":
                try:
                    by_content[_canonical(json.loads((a.path / "metrics.json").read_text()))].append(a.id)
                except (OSError, ValueError, AttributeError):
                    continue
        for job, m in mnist_jobs:
            found = by_content.get(_canonical(m))
            if found:
                out.keys.update(found)
                out.mnist_matched += 1
                continue
            store = _job_store(job)
            if store is None or store == root:
                problems.append(f"{job}: an MNIST job whose metrics.json matches no mnist artifact in {inv.root} "
                                f"(recomputed since, or another store): nothing is kept for it")
    return out


def closure(inv: Inventory, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The artifacts in `keys` and everything upstream of them (through their specs' refs)."""
    by_id = inv.by_id
    seen: set[tuple[str, str]] = set()
    stack = [k for k in keys if k in by_id]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        stack.extend(u for u in by_id[k].upstream_ids() if u in by_id and u not in seen)
    return seen


# -- unused ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One thing prune removes: a published artifact or a leftover (Leftover.kind)."""

    kind: str  # "artifact" | "work" | "lock" | "pruning" | "incomplete"
    stage: str
    key: str
    path: Path
    size: int
    last_used: float

    @property
    def label(self) -> str:
        if self.kind == "artifact" or self.kind == "incomplete":
            return f"{self.stage}/{self.key}"
        return f"{self.stage}/{self.path.parent.name}/{self.path.name}"

    def why(self, now: float) -> str:
        what = {"artifact": "no job refers to it", "work": "unfinished, no live lock: left by a killed job",
                "lock": "stale lock", "pruning": "left by an interrupted prune",
                "incomplete": "a folder without spec.json (broken publish)"}[self.kind]
        return what + (f", last used {ago(now - self.last_used)} ago" if self.last_used else "")


@dataclass
class Unused:
    items: list[Item]  # what prune removes
    used: set[tuple[str, str]]  # the closure of what jobs refer to
    kept_live: list[tuple[str, str]]  # (label, owner): unused, but a job holds its lock now
    kept_recent: list[Item]  # unused but used within keep_recent_s
    refs: JobRefs
    keep_recent_s: float

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)


def find_unused(inv: Inventory, job_dirs: Iterable[str | Path], keep_recent_s: float = DEFAULT_KEEP_RECENT_S,
                now: Optional[float] = None, refs: Optional[JobRefs] = None) -> Unused:
    """What no job under job_dirs refers to, directly or through upstream refs, and the leftovers
    (.work without a live lock, stale locks, an interrupted prune's folders). Kept: what a live lock
    holds, and what was used within keep_recent_s. StoreError when no job folder is found there
    (everything would look unused)."""
    now = time.time() if now is None else now
    dirs = [Path(d) for d in job_dirs]
    refs = refs if refs is not None else job_refs(dirs, inv)
    if refs.jobs == 0:
        raise StoreError(f"no job folder (metrics.json or cell.json) under {', '.join(map(str, dirs))}: pass the "
                         f"folders your jobs wrote (outputs/, multirun/); without them everything looks unused")
    used = closure(inv, refs.keys)
    items, kept_live, kept_recent = [], [], []
    for a in inv.artifacts:
        if a.id in used:
            continue
        lk = inv.live(a.stage, a.key)
        if lk is not None:
            kept_live.append((f"{a.stage}/{a.key}", f"host {lk.host}, pid {lk.pid}"))
            continue
        item = Item("artifact", a.stage, a.key, a.path, a.size, a.last_used)
        (kept_recent if now - a.last_used < keep_recent_s else items).append(item)
    for lo in inv.leftovers:
        if lo.kind == "unreadable" or (lo.kind == "incomplete" and (lo.stage, lo.key) in used):
            continue
        if lo.live:
            kept_live.append((lo.label, lo.owner or ""))
            continue
        item = Item(lo.kind, lo.stage, lo.key, lo.path, lo.size, lo.last_used)
        recent = lo.kind != "pruning" and now - lo.last_used < keep_recent_s
        (kept_recent if recent else items).append(item)
    order = {"artifact": 0, "incomplete": 1, "work": 2, "pruning": 3, "lock": 4}
    items.sort(key=lambda i: (order[i.kind], i.stage, -i.size, i.key))
    return Unused(items, used, kept_live, kept_recent, refs, keep_recent_s)


# -- prune -------------------------------------------------------------------------------------------
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


# -- formatting --------------------------------------------------------------------------------------
def human(n: float) -> str:
    """Bytes in decimal units: 538.0 MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def duration(text: str) -> float:
    """'0', '90', '30m', '1h', '2d' as seconds (argparse type)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 0, 90s, 30m, 1h, 2d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _libs(libs: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in libs.items()) or "no library versions recorded"


def format_du(du: dict) -> str:
    head = f"{'stage':<12} {'published':>9} {'size':>10}   {'unfinished':>10} {'size':>10}   {'stale locks':>11}"
    lines = [f"artifact store {du['root']}", head]
    for s, r in du["stages"].items():
        run = f" ({r['unfinished']['running']} running)" if r["unfinished"]["running"] else ""
        pr = f"   interrupted prune: {human(r['pruning']['bytes'])}" if r["pruning"]["count"] else ""
        if r["unreadable"]["count"]:
            pr += f"   unreadable spec.json: {r['unreadable']['count']} ({human(r['unreadable']['bytes'])})"
        lines.append(f"{s:<12} {r['published']['count']:>9} {human(r['published']['bytes']):>10}   "
                     f"{r['unfinished']['count']:>10} {human(r['unfinished']['bytes']):>10}   "
                     f"{r['stale_locks']:>11}{run}{pr}")
    t = du["total"]
    lines.append(f"{'total':<12} {t['published']['count']:>9} {human(t['published']['bytes']):>10}   "
                 f"{t['unfinished']['count']:>10} {human(t['unfinished']['bytes']):>10}   {t['stale_locks']:>11}")
    if du["other"]:
        lines.append("not stages: " + ", ".join(f"{n} {human(b)}" for n, b in du["other"].items()))
    lines.append(f"on disk: {human(t['bytes'])}")
    return "\n".join(lines)


def artifact_row(a: Artifact, now: float) -> dict:
    return {"stage": a.stage, "key": a.key, "path": str(a.path), "bytes": a.size, "files": a.files,
            "published": a.published, "age_s": round(now - a.published, 1), "version": a.version,
            "sublim": a.sublim, "libraries": a.libraries, "upstream": a.upstream, "hits": a.hits,
            "computed_s": a.computed_s, "last_event": a.last_event}


def format_ls(inv: Inventory, stages: list[str], now: float) -> str:
    lines = []
    for s in stages:
        arts = sorted((a for a in inv.artifacts if a.stage == s), key=lambda a: (-a.size, a.key))
        lines.append(f"{s}: {len(arts)} artifact{'' if len(arts) == 1 else 's'}, {human(sum(a.size for a in arts))}")
        for a in arts:
            hits = f"{a.hits} hit{'' if a.hits == 1 else 's'}"
            if a.last_event and a.hits:
                hits += f" (last use {ago(now - a.last_event)} ago)"
            took = f", computed in {a.computed_s:.1f} s" if a.computed_s is not None else ""
            lines.append(f"  {a.key}  {human(a.size):>9}  {ago(now - a.published)} old  {hits}{took}")
            by = f"sublim {a.sublim}" if a.sublim else "sublim commit not recorded"
            lines.append(f"      by {by}; {_libs(a.libraries)}")
            missing = {u for u in a.upstream_ids() if inv.artifact(*u) is None}
            ups = [r + (" (not in store)" if parse_artifact_ref(r)[:2] in missing else "") for r in a.upstream]
            lines.append(f"      upstream: {', '.join(ups) if ups else 'none'}")
        for lo in inv.leftovers:
            if lo.stage == s and lo.kind != "lock":
                state = f"running ({lo.owner})" if lo.live else {
                    "work": "unfinished, no live lock (a killed job's)", "pruning": "left by an interrupted prune",
                    "incomplete": "no spec.json (a broken publish)",
                    "unreadable": "spec.json unreadable: skipped"}[lo.kind]
                lines.append(f"  {lo.label}  {human(lo.size):>9}  {state}")
    return "\n".join(lines)


def format_unused(inv: Inventory, u: Unused, now: float, job_dirs: list[str]) -> str:
    r = u.refs
    lines = [f"artifact store {inv.root}: {len(inv.artifacts)} artifacts; {r.jobs} job folder"
             f"{'' if r.jobs == 1 else 's'} under {', '.join(job_dirs)} name {len(r.keys)} key"
             f"{'' if len(r.keys) == 1 else 's'}, keeping {len(u.used)} artifact{'' if len(u.used) == 1 else 's'} "
             f"with their upstream"]
    for i in u.items:
        lines.append(f"  {i.label}  {human(i.size)}  ({i.why(now)})")
    for label, owner in u.kept_live:
        lines.append(f"  kept {label}: a job is computing it ({owner})")
    if u.kept_recent:
        lines.append(f"  kept {len(u.kept_recent)} more used within the last {ago(u.keep_recent_s)} "
                     f"({human(sum(i.size for i in u.kept_recent))}; --keep-recent 0 lists them too): "
                     + ", ".join(i.label for i in u.kept_recent[:5]) + (", ..." if len(u.kept_recent) > 5 else ""))
    lines.append(f"unused: {len(u.items)} item{'' if len(u.items) == 1 else 's'}, {human(u.bytes)}")
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sublim-store", description="Size, contents and pruning of the artifact store.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--artifacts", default="artifacts", help="the store (default: ./artifacts)")
        sp.add_argument("--json", action="store_true", help="JSON for machines")

    def jobs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--jobs", nargs="+", required=True, metavar="DIR",
                        help="job folders, searched recursively (outputs/, multirun/)")
        sp.add_argument("--keep-recent", type=duration, default=DEFAULT_KEEP_RECENT_S, metavar="AGE",
                        help="keep what was used (hit, published) within AGE: a running job names its keys only "
                             "when it ends (default 1h; 0, 30m, 2d)")

    common(sub.add_parser("du", help="size and count per stage"))
    ls = sub.add_parser("ls", help="each artifact of a stage: key, size, age, provenance, upstream, hits")
    ls.add_argument("stage", nargs="?", help="a stage (default: all)")
    common(ls)
    un = sub.add_parser("unused", help="artifacts no job refers to (directly or upstream), and leftovers")
    common(un)
    jobs(un)
    pr = sub.add_parser("prune", help="remove what `unused` lists (a dry run without --yes)")
    common(pr)
    jobs(pr)
    pr.add_argument("--yes", action="store_true", help="remove (default: only say what would be removed)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("sublim.cache").setLevel(logging.ERROR)  # "took over a stale lock": prune says it itself
    now = time.time()
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        inv = scan(args.artifacts, now)
        for line in inv.problems:
            print(f"sublim-store: {line}", file=sys.stderr)
        if args.cmd == "du":
            du = disk_usage(inv)
            say(json.dumps(du, indent=1) if args.json else format_du(du))
            return 0
        if args.cmd == "ls":
            if args.stage is not None and args.stage not in inv.stages:
                raise StoreError(f"no stage {args.stage!r} in {inv.root}; stages there: "
                                 f"{', '.join(inv.stages) or 'none'}")
            stages = [args.stage] if args.stage else inv.stages
            if args.json:
                say(json.dumps([artifact_row(a, now) for a in inv.artifacts if a.stage in stages], indent=1))
            else:
                say(format_ls(inv, stages, now))
            return 0
        u = find_unused(inv, args.jobs, args.keep_recent, now)
        for line in u.refs.problems:
            print(f"sublim-store: {line}", file=sys.stderr)
        if args.cmd == "unused":
            if args.json:
                say(json.dumps({"root": str(inv.root), "jobs": u.refs.jobs,
                                "used": sorted(f"{st}/{k}" for st, k in u.used),
                                "unused": [asdict(i) | {"path": str(i.path), "label": i.label} for i in u.items],
                                "bytes": u.bytes, "kept_live": {label: owner for label, owner in u.kept_live},
                                "kept_recent": [i.label for i in u.kept_recent]}, indent=1))
            else:
                say(format_unused(inv, u, now, args.jobs))
            return 0
        live = [lk for lk in inv.locks.values() if lk.live]
        if args.yes and live:
            say(f"note: {len(live)} job(s) computing now ({', '.join(f'{lk.stage}/{lk.key}' for lk in live[:3])}); "
                "what they compute is kept" + (f", and what was used within {ago(args.keep_recent)} (--keep-recent)"
                                                if args.keep_recent else "; --keep-recent 0 keeps nothing they read"))
        res = prune(inv, u, yes=args.yes, say=(lambda _l: None) if args.json else say)
        if args.json:
            say(json.dumps({"dry_run": res.dry_run, "removed": [i.label for i in res.removed],
                            "bytes": res.freed, "kept": [i.label for i, _ in res.kept], "errors": res.errors},
                           indent=1))
        elif res.dry_run:
            say(f"dry run: would free {human(res.freed)} in {len(res.removed)} item"
                f"{'' if len(res.removed) == 1 else 's'}; pass --yes to remove them")
        else:
            say(f"freed {human(res.freed)} in {len(res.removed)} item{'' if len(res.removed) == 1 else 's'}"
                + (f"; {len(res.errors)} error(s) above" if res.errors else ""))
        return 1 if res.errors else 0
    except StoreError as e:
        print(f"sublim-store: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sublim-store ls | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
