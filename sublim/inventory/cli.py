"""The `sublim-store` command: argument parsing, and `main` wiring the scan, usage, refs, removal
and listing modules to stdout/stderr and exit codes (0 ok, 1 a removal failed, 2 a bad store or
job path). The console script (sublim.inventory:main) lands here.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict
from typing import Optional

from sublim.inventory.contents import StoreError, scan
from sublim.inventory.listing import artifact_row, format_du, format_experiments, format_ls, format_unused
from sublim.inventory.refs import DEFAULT_KEEP_RECENT_S, find_unused, job_refs
from sublim.inventory.removal import prune
from sublim.inventory.units import human
from sublim.terminal import ago
from sublim.inventory.usage import disk_usage, experiment_usage


def duration(text: str) -> float:
    """'0', '90', '30m', '1h', '2d' as seconds (argparse type)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 0, 90s, 30m, 1h, 2d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


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

    du = sub.add_parser("du", help="size and count per stage; with --jobs, per experiment too")
    common(du)
    du.add_argument("--jobs", nargs="+", metavar="DIR",
                    help="job folders (outputs/, multirun/): also the size each experiment's jobs use")
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
            ex = None
            if args.jobs:
                refs = job_refs(args.jobs, inv)
                for line in refs.problems:
                    print(f"sublim-store: {line}", file=sys.stderr)
                ex = experiment_usage(inv, refs)
            if args.json:
                say(json.dumps(du | ({"by_experiment": ex} if ex else {}), indent=1))
            else:
                say(format_du(du) + (f"\n{format_experiments(ex)}" if ex else ""))
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
