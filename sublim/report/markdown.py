"""Render the report as Markdown (summary.md, also printed): people read this, machines read the CSVs.

Why its own module: number formatting (percent, percentage points, intervals) and the list of
holes in the sweep are presentation, kept apart from the statistics. No `tabulate` dependency.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd

from sublim.report.collect import Collection
from sublim.report.summarise import GROUP_KEYS, Specificity, varying


def _missing(x) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def level(confidence: float) -> str:
    """The interval level as people write it: 0.95 -> "95 %", 0.975 -> "97.5 %"."""
    return f"{100 * confidence:.4g} %"


def pct(x: float, d: int = 1) -> str:
    return "–" if _missing(x) else f"{100 * x:.{d}f} %"


def pp(x: float) -> str:
    return "–" if _missing(x) else f"{100 * x:+.1f} pp"


def ci(lo: float, hi: float, signed: bool = False, n: int | None = None, n_bad: int = 0) -> str:
    """The interval, or why there is none: `n` finite seeds, `n_bad` non-finite ones left out."""
    if not _missing(lo) and not _missing(hi):
        f = "{:+.1f}" if signed else "{:.1f}"
        return f"[{f.format(100 * lo)}, {f.format(100 * hi)}]"
    bad = f" ({n_bad} non-finite left out)" if n_bad else ""
    if n == 0:
        return "no finite value" + bad if n_bad else "–"
    if n is None or n == 1:
        return "one seed: no CI" + bad
    return "no CI" + bad


def seeds(n: int, listed: str, n_bad: int = 0) -> str:
    return f"{n} ({listed})" + (f" + {n_bad} non-finite" if n_bad else "")


def _n_bad(df: pd.DataFrame) -> list[int]:
    return [int(x) for x in df["n_nonfinite"]] if "n_nonfinite" in df else [0] * len(df)


def table(df: pd.DataFrame) -> str:
    """A Markdown table of already-formatted values."""
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    esc = lambda v: " ".join(str(v).replace("|", "\\|").splitlines())  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


RISE_BY = {"paired": " (paired by seed)", "fixed": " (1 seed, fixed)"}  # "welch": the default, unsaid


def summary_table(summ: pd.DataFrame, keys: list[str], confidence: float = 0.95) -> pd.DataFrame:
    tr = summ[summ["condition"] == "treatment"]
    trait = {"trait": summ["trait"]} if (tr["trait"] != tr["target"]).any() else {}
    bad = _n_bad(summ)
    return pd.DataFrame({
        "target": summ["target"], "condition": summ["condition"], **trait, **{k: summ[k] for k in keys},
        "seeds": [seeds(n, s, b) for n, s, b in zip(summ["n_seeds"], summ["seeds"], bad)],
        "mean": summ["mean"].map(pct),
        f"{level(confidence)} CI across seeds": [ci(a, b, n=n, n_bad=k) for a, b, n, k in
                                                 zip(summ["ci_low"], summ["ci_high"], summ["n_seeds"], bad)],
        "per-question SD": summ["q_sd"].map(pct),
        "per-question range": [f"{pct(a, 0)} – {pct(b, 0)}" for a, b in zip(summ["q_min"], summ["q_max"])],
        "rise": summ["rise"].map(pp),
        "rise CI": ["" if isinstance(b, str) and not b else "–" if _missing(r) else ci(lo, hi, True)
                    for r, lo, hi, b in zip(summ["rise"], summ["rise_low"], summ["rise_high"], summ["baseline"])],
        "MDE": ["" if isinstance(b, str) and not b else "–" if _missing(m) else f"{100 * m:.1f} pp"
                for m, b in zip(summ["rise_mde"] if "rise_mde" in summ else [math.nan] * len(summ), summ["baseline"])],
        "vs": [b + RISE_BY.get(h, "") for b, h in zip(summ["baseline"], summ["rise_by"])]})


def _kinds(col: Collection) -> str:
    kinds = Counter(p.kind for p in col.problems)
    return f" ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})" if kinds else ""


def render(col: Collection, summ: pd.DataFrame, specs: list[Specificity], mis: pd.DataFrame,
           notes: list[str], figures: dict[str, Path], out: Path, confidence: float,
           sections: list[str] = ()) -> str:
    """The whole summary.md. `sections`: further Markdown sections (e.g. sublim.report.defences),
    placed after the comparison tables and before the holes."""
    c = col.cells
    keys = varying(c) if len(c) else []
    fixed = {k: c[c["condition"] != "base"][k].iloc[0] for k in GROUP_KEYS
             if k not in keys and (c["condition"] != "base").any()}
    fixed = {k: v for k, v in fixed.items() if v != ""}  # no setting differs: nothing to say
    counts = ", ".join(f"{n} {k}" for k, n in c["condition"].value_counts().sort_index().items())
    s = ["# sublim report", "",
         f"Inputs: {', '.join(col.paths)}  ", f"Cells: {len(c)}" + (f" ({counts})" if counts else "")
         + f"; problems: {len(col.problems)}" + _kinds(col)
         + (f"; {col.n_ignored} metrics.json without a cell ignored (artifact store?)" if col.n_ignored else ""), ""]
    if fixed:
        s += ["All fine-tuned cells share: " + ", ".join(f"{k}={v}" for k, v in fixed.items()), ""]
    s += [f"## Target rate by condition (mean over seeds, {level(confidence)} t-interval across seeds)", "",
          "Base and control cells carry no target: for target X their value is their rate of X. "
          "`rise` is treatment minus the student's own baseline (`vs`): paired by seed when both have the "
          "same seeds, the treated seeds' t-interval when the baseline has one seed, else Welch's interval. "
          "Per-question SD: mean over seeds of the SD across questions; range: min–max over questions of the "
          "seed-averaged rate. `MDE`: the smallest rise these seeds could detect (two-sided test at "
          f"alpha = {1 - confidence:.3g}, 80 % power, the observed seed-to-seed SD: "
          "(t(1 - alpha/2, df) + t(0.8, df)) x SE of the rise as paired/fixed/Welch above; – with fewer than 2 "
          "seeds): a rise whose CI includes 0 is a null of at most that size, not a zero.", "",
          table(summary_table(summ, keys, confidence))]
    if specs:
        s += ["## Specificity (teacher trait x measured name)", "",
              f"Per seed: mean diagonal minus mean off-diagonal over the treatment rows; {level(confidence)} "
              "t-interval across seeds.", ""]
        for sp in specs:
            iv = sp.interval
            s += [f"**{sp.title()}**: diagonal − off-diagonal = {pp(iv.mean)} {ci(iv.low, iv.high, True, iv.n)} "
                  f"({iv.n} seeds)", "",
                  table(sp.matrix.map(pct).rename_axis("teacher trait").reset_index())]
    if not mis.empty:
        bad = _n_bad(mis)
        s += ["## Misalignment", "", f"Mean over seeds, {level(confidence)} t-interval across seeds.", "",
              table(pd.DataFrame({
            "condition": mis["condition"], "trait": mis["trait"], **{k: mis[k] for k in keys},
            "seeds": [seeds(n, x, b) for n, x, b in zip(mis["n_seeds"], mis["seeds"], bad)],
            "mean": mis["mean"].map(pct),
            f"{level(confidence)} CI across seeds": [ci(a, b, n=n, n_bad=k) for a, b, n, k in
                                                     zip(mis["ci_low"], mis["ci_high"], mis["n_seeds"], bad)],
            "of coherent answers": [f"{pct(m)} {ci(a, b)}" if m == m else "–" for m, a, b in
                                    zip(mis["coherent_mean"], mis["coherent_ci_low"], mis["coherent_ci_high"])]}))]
    if c["none_rate"].notna().any():
        high = c[c["none_rate"] > 0.2]
        if len(high):
            s += ["## Answers naming no candidate", "",
                  f"{len(high)} cell(s) answer outside the candidate list more than 20 % of the time (often the "
                  "model's own name):", ""]
            s += [f"- {r['name']}: {pct(r['none_rate'])} (top: {r['top_unmatched'] or '?'})" for _, r in high.iterrows()]
            s += [""]
    s += list(sections)
    s += ["## Missing, failed or unfinished cells, and values set aside", ""]
    s += [f"- {p.line()}" for p in col.problems] or ["_(none)_"]
    s += [""]
    if notes:
        s += ["## Gaps in the design", ""] + [f"- {n}" for n in notes] + [""]
    s += ["## Figures", ""]
    s += [f"![{k}]({p.relative_to(out) if p.is_relative_to(out) else p})" for k, p in figures.items()] or \
         ["_(none: the data supports no figure)_"]
    return "\n".join(s) + "\n"
