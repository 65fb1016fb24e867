"""The report's summary table as a few plain lines, printed when a grid ends.

The same numbers as `sublim-report`'s summary (conditions, target rates with their interval across
seeds, rises over the student's own baseline with theirs), from the same collect and summary
functions, in aligned columns instead of Markdown: the last thing a grid prints should answer
"did it work?" without a second command. `sublim-report SWEEP_DIR` writes the full report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sublim.report.collect import collect
from sublim.report.markdown import RISE_BY, ci, level, pct, pp
from sublim.report.summarise import summary, varying


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def table_lines(summ: pd.DataFrame, keys: list[str], confidence: float = 0.95) -> list[str]:
    """One line per target x condition (x the settings that vary): mean, CI, rise and its CI."""
    head = ["target", "condition", *keys, "seeds", "mean", f"{level(confidence)} CI", "rise", "rise CI", "vs"]
    rows = [head]
    for _, r in summ.iterrows():
        has_rise = r["condition"] not in ("base", "control") and isinstance(r["baseline"], str) and r["baseline"]
        rows.append([str(r["target"]), str(r["condition"]), *(str(r[k]) for k in keys), str(r["n_seeds"]),
                     pct(r["mean"]), ci(r["ci_low"], r["ci_high"], n=r["n_seeds"]),
                     pp(r["rise"]) if has_rise else "", ci(r["rise_low"], r["rise_high"], True) if has_rise else "",
                     (r["baseline"] + RISE_BY.get(r["rise_by"], "")) if has_rise else ""])
    return _aligned(rows)


def grid_summary(sweep_dir: str | Path, confidence: float = 0.95) -> list[str]:
    """The lines printed at the end of a grid: the summary table, or one line saying why there is none."""
    col = collect([sweep_dir])
    if not len(col.cells):
        return [f"no results to summarise in {sweep_dir}"]
    summ = summary(col, confidence=confidence)
    if summ.empty:
        return [f"{len(col.cells)} cells, no target rate to summarise (sublim-report {sweep_dir} for the rest)"]
    keys = varying(col.cells)
    return ([f"summary (target rate by condition, mean over seeds, {level(confidence)} t-interval across seeds; "
             f"rise over the student's own baseline):"] + table_lines(summ, keys, confidence)
            + [f"full report: sublim-report {sweep_dir}"])
