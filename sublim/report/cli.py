"""`sublim-report PATH [PATH ...]`: one command from sweep folders to tables, figures and a W&B run.

Only wiring: collect -> summarise (and, when the runs have more than one defence.name, the
defences' effect-remaining table: sublim.report.defences) -> write (CSV, Markdown, PNG) -> W&B.
The files are written before W&B is touched, so a W&B failure loses nothing. Exit code 0 when at
least one cell was reported; 1 when none was found: then the holes are printed, one line says so,
and nothing is written (no report folder). Printing never fails on a terminal that cannot show a character
(PYTHONIOENCODING=ascii, a C locale): common typography becomes ASCII, anything else an escape.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import pandas as pd

from sublim.report import defences as dfs
from sublim.report import figures as figs
from sublim.report.collect import collect
from sublim.report.markdown import render
from sublim.report.summarise import gaps, misalignment, specificity, summary, targets_of
from sublim.report.wandb_log import log_report
from sublim.terminal import console, safe_streams


def _level(x: str) -> float:
    try:
        v = float(x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{x!r} is not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"{x} is not between 0 and 1 (e.g. 0.9 for 90 % intervals)")
    return v


def say(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    print(console(text, stream), file=stream)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sublim-report",
        description="Compare conditions and seeds of sublim sweeps: cells.csv, summary.csv/.md, figures, W&B run.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="sweep folders (outputs/..., multirun/...) or metrics.json files; searched recursively")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: <first PATH>/report)")
    p.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True,
                   help="log tables and figures to a W&B run (offline unless WANDB_MODE says otherwise)")
    p.add_argument("--project", default="sublim", help="W&B project (default: sublim)")
    p.add_argument("--entity", default=None, help="W&B entity")
    p.add_argument("--confidence", type=_level, default=0.95,
                   help="interval level, in every table, figure and text (default: 0.95)")
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help="also summarise this candidate (repeatable); default: every treatment's trait")
    return p.parse_args(argv)


def default_out(paths: list[str]) -> Path:
    first = Path(paths[0])
    return (first if first.is_dir() else first.parent) / "report"


def _run_summary(summ: pd.DataFrame, specs) -> dict:
    """Flat W&B summary keys: <target>/<condition>/<teacher>-><student>/{mean,ci_low,ci_high,rise}."""
    out = {}
    for _, r in summ.iterrows():
        k = f"{r['target']}/{r['condition']}/{r['trait']}/{r['teacher']}->{r['student']}/{r['domain']}/{r['finetune']}"
        for f in ("mean", "ci_low", "ci_high", "n_seeds", "rise"):
            v = r[f]
            if not (isinstance(v, float) and math.isnan(v)):
                out[f"{k}/{f}"] = v
    for s in specs:
        if not math.isnan(s.interval.mean):
            out["specificity/" + "/".join(str(v) for v in s.keys.values()) + "/diag_minus_off"] = s.interval.mean
    return out


def main(argv: list[str] | None = None) -> int:
    safe_streams()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    out = args.out or default_out(args.paths)

    col = collect(args.paths)
    if not len(col.cells):
        for p in col.problems:
            say(f"- {p.line()}", err=True)
        listed = f"; {len(col.problems)} problem(s) listed above" if col.problems else ""
        say(f"sublim-report: no cells found under {', '.join(args.paths)} (no metrics.json with a 'cell'{listed}); "
            "nothing written", err=True)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    csv = {"index": False, "errors": "backslashreplace"}  # a file name that is not UTF-8 must not stop the report
    summ = summary(col, targets_of(col, args.target), args.confidence)
    specs = specificity(col, args.confidence)
    mis = misalignment(col, args.confidence)
    notes = gaps(col, summ)

    col.cells.drop(columns=["settings", "setting_kv"]).to_csv(out / "cells.csv", **csv)  # setting: the label
    col.rates.merge(col.cells[["job", "name", "condition"]], on="job").to_csv(out / "rates.csv", **csv)
    summ.to_csv(out / "summary.csv", **csv)
    pd.DataFrame([vars(p) | {"overrides": " ".join(p.overrides)} for p in col.problems],
                 columns=["path", "kind", "detail", "overrides"]).to_csv(out / "problems.csv", **csv)
    spec_rows = pd.concat([s.matrix.rename_axis("teacher_trait").reset_index().assign(**s.keys, diag_minus_off=s.interval.mean,
                                                                               diag_minus_off_low=s.interval.low,
                                                                               diag_minus_off_high=s.interval.high,
                                                                               n_seeds=s.interval.n)
                           for s in specs]) if specs else pd.DataFrame()
    if specs:
        spec_rows.to_csv(out / "specificity.csv", **csv)
    if not mis.empty:
        mis.to_csv(out / "misalignment.csv", **csv)
    made = figs.draw_all(summ, specs, mis, out, args.confidence)
    rem = dfs.effect_remaining(col, targets_of(col, args.target), args.confidence) if dfs.has_defences(col) else None
    if rem is not None:  # more than one defence.name: the effect-remaining table and figure
        rem.to_csv(out / "defences.csv", **csv)
        if (fig := dfs.figure(rem, out / "effect_remaining.png", args.confidence)) is not None:
            made["effect_remaining"] = fig
    md = render(col, summ, specs, mis, notes, made, out, args.confidence,
                dfs.markdown_section(rem, args.confidence) if rem is not None else [])
    (out / "summary.md").write_text(md, encoding="utf-8", errors="backslashreplace")

    say(md)
    say(f"written to {out}: cells.csv, rates.csv, summary.csv, summary.md, problems.csv"
        + (", specificity.csv" if specs else "") + (", misalignment.csv" if not mis.empty else "")
        + (", defences.csv" if rem is not None else ""))
    say("figures: " + (", ".join(p.name for p in made.values()) or "none (the data supports none)"))

    if args.wandb:
        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir = log_report(out, {"summary": summ, "cells": col.cells, "specificity": spec_rows, "misalignment": mis,
                                   "defences": rem},
                             made, _run_summary(summ, specs) | dfs.run_summary(rem),
                             {"paths": col.paths, "n_cells": len(col.cells), "n_problems": len(col.problems),
                              "confidence": args.confidence},
                             project=args.project, entity=args.entity)
        say(f"W&B run: {run_dir}" if run_dir else "W&B: logging failed (see warning); files are complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
