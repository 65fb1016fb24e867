"""The text sublim-store prints for du, ls and unused (and ls's JSON rows): formatting only, from
an Inventory, usage.disk_usage's dict or refs.find_unused's result, so the numbers and decisions
stay in the modules that compute them.
"""
from __future__ import annotations

from sublim.inventory.contents import Artifact, Inventory
from sublim.inventory.refs import Unused
from sublim.inventory.units import human
from sublim.terminal import ago
from sublim.spec import parse_artifact_ref


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


def format_experiments(ex: dict) -> str:
    """usage.experiment_usage as a table: shared artifacts count in every experiment using them."""
    lines = [f"{'experiment':<24} {'jobs':>5} {'artifacts':>9} {'size':>10} {'only its own':>12}"]
    for e, r in ex["experiments"].items():
        lines.append(f"{e:<24} {r['jobs']:>5} {r['artifacts']:>9} {human(r['bytes']):>10} {human(r['own_bytes']):>12}")
    n = ex["none"]
    lines.append(f"{'(no job)':<24} {'':>5} {n['artifacts']:>9} {human(n['bytes']):>10}")
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
