"""`sublim-store du`'s numbers: an Inventory summed per stage (published, unfinished, stale locks,
an interrupted prune's and unreadable folders) and in total, as a plain dict that the text listing
and `--json` both print. Kept apart from the scan so the totals have one definition.
"""
from __future__ import annotations

from sublim.inventory.contents import Inventory


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
