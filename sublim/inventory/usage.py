"""`sublim-store du`'s numbers: an Inventory summed per stage (published, unfinished, stale locks,
an interrupted prune's and unreadable folders) and in total, and, given the jobs, per experiment; as
plain dicts that the text listing and `--json` both print. Kept apart from the scan so the totals
have one definition.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from sublim.inventory.contents import Inventory
from sublim.inventory.refs import JobRefs, closure


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


def experiment_usage(inv: Inventory, refs: JobRefs) -> dict:
    """Per experiment (a job's cell.experiment, an MNIST job's experiment_name): its jobs, the
    published artifacts they use with everything upstream, their bytes, and `own_bytes`: those no
    other experiment uses (what deleting its jobs, then pruning, would free). Shared artifacts count
    in each experiment that uses them; `none` holds what no job uses."""
    keys: dict[str, set] = defaultdict(set)
    jobs: Counter = Counter()
    for job, named in refs.by_job.items():
        e = refs.experiment.get(job, "-")
        keys[e] |= named
        jobs[e] += 1
    used = {e: closure(inv, ks) for e, ks in keys.items()}
    users = Counter(k for ids in used.values() for k in ids)
    size = {a.id: a.size for a in inv.artifacts}
    rows = {e: {"jobs": jobs[e], "artifacts": len(ids), "bytes": sum(size[k] for k in ids),
                "own_bytes": sum(size[k] for k in ids if users[k] == 1)} for e, ids in sorted(used.items())}
    idle = [k for k in size if k not in users]
    return {"experiments": rows, "none": {"artifacts": len(idle), "bytes": sum(size[k] for k in idle)}}
