"""Which artifacts the jobs still need: the (stage, key) pairs job folders name (metrics.json /
cell.json "keys" and "artifacts", an MNIST job matched by its results) and a sweep plan's cells that
have not finished would ask for (sublim.inventory.planned), their upstream closure
through the specs' refs, and from that what is unused (with the leftovers, minus what a live lock
or recent use keeps). This is the safety-critical decision prune acts on, so it lives on its own,
apart from the removal itself and from the printing.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from sublim.cellstate import PLAN, SKIP_DIRS
from sublim.inventory.contents import Inventory, StoreError, _first_line
from sublim.terminal import ago

DEFAULT_KEEP_RECENT_S = 3600.0
JOB_FILES = ("metrics.json", "cell.json")
_NOT_RESULTS = ("provenance", "wandb", "wandb_dir")  # what a job adds to the mnist stage's metrics.json


@dataclass
class JobRefs:
    keys: set[tuple[str, str]]  # (stage, key) named by a job (directly)
    jobs: int  # job folders read
    problems: list[str]
    mnist_matched: int = 0
    by_job: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # job folder -> the keys it names
    experiment: dict[str, str] = field(default_factory=dict)  # job folder -> its experiment (du per experiment)
    planned: int = 0  # cells of sweep plans not finished yet, whose keys were planned (sublim.inventory.planned)


def _canonical(metrics: dict) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k not in _NOT_RESULTS}, sort_keys=True, default=str)


def _is_mnist(m: dict) -> bool:
    return all(k in m for k in ("arms", "teacher", "reference", "n_seeds"))


def _experiment(job: Path, m: dict) -> str:
    """A job's experiment: its cell's `experiment`, else its .hydra/config.yaml `experiment_name`
    (an MNIST job), else "-"."""
    cell = m.get("cell")
    if isinstance(cell, dict) and isinstance(cell.get("experiment"), str):
        return cell["experiment"]
    try:
        import yaml

        name = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()).get("experiment_name")
    except Exception:  # noqa: BLE001 - no yaml, no file, not a mapping: the experiment is unknown
        return "-"
    return name if isinstance(name, str) and name else "-"


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
    by_job: dict[str, set[tuple[str, str]]] = {}
    experiment: dict[str, str] = {}
    sweeps: list[Path] = []
    jobs = 0
    for top in job_dirs:
        top = Path(top)
        if not top.is_dir():
            raise StoreError(f"--jobs {top}: no such folder: pass the folders your jobs wrote (outputs/, multirun/)")
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS and not n.startswith(".")
                                 and (here / n).resolve() != root)
            if PLAN in filenames:
                sweeps.append(here)
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
                mine = by_job.setdefault(str(here), set())
                experiment.setdefault(str(here), _experiment(here, m))
                named = m.get("keys")
                if isinstance(named, dict):
                    mine |= {(str(s), str(k)) for s, k in named.items() if isinstance(k, str)}
                arts = m.get("artifacts")
                if isinstance(arts, dict):
                    for p in arts.values():
                        if isinstance(p, str):
                            p = Path(p).resolve()
                            if p.parent.parent == root:
                                mine.add((p.parent.name, p.name))
                keys |= mine
                if name == "metrics.json" and not isinstance(named, dict) and _is_mnist(m):
                    mnist_jobs.append((here, m))
    out = JobRefs(keys, jobs, problems, by_job=by_job, experiment=experiment)
    for sweep in sweeps:
        _add_planned(out, sweep)
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
                out.by_job[str(job)].update(found)
                out.mnist_matched += 1
                continue
            store = _job_store(job)
            if store is None or store == root:
                problems.append(f"{job}: an MNIST job whose metrics.json matches no mnist artifact in {inv.root} "
                                f"(recomputed since, or another store): nothing is kept for it")
    return out


def _add_planned(out: JobRefs, sweep: Path) -> None:
    """The keys of the sweep's planned cells that have no result yet (sublim.inventory.planned)."""
    from sublim.inventory.planned import planned_keys, unfinished

    cells = unfinished(sweep)
    if not cells:
        return
    planned, problems = planned_keys(sweep, cells)
    out.problems += problems
    for label, (keys, experiment) in planned.items():
        out.keys |= keys
        out.by_job[label] = set(keys)
        out.experiment[label] = experiment
    out.planned += len(planned)


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
    if refs.jobs == 0 and refs.planned == 0:
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
