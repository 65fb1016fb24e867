"""Compare conditions across seeds: the paper's statistics, as pandas tables.

Why this shape: the paper's unit is a condition's mean over student seeds with a t-interval across
seeds (95 % in the paper; the `confidence` argument here); a single eval's CI across questions is
not that (it ignores seed-to-seed variation of fine-tuning). Every interval comes from `sublim.stats`.

- summary: per target x condition (x domain/teacher/student/finetune): mean over seeds, t-interval
  across seeds, the per-question spread, and for treatment rows the rise over the student's own
  baseline (control of the same teacher/student if present, else the untouched base student);
  `rise_by` says how its interval was taken (see rise_interval); `rise_mde` is the smallest rise
  those seeds could detect (see rise_mde), so a rise whose interval includes 0 reads as "smaller
  than rise_mde", not as "none".
  Base and control cells carry no target: for target X their value is their rate of X.
- specificity: rows = teacher traits (incl. none), columns = the traits' names; per seed the mean
  diagonal minus the mean off-diagonal, t-interval over seeds. Large only if each teacher
  transmits its own trait rather than raising every animal.
- misalignment: misaligned-answer rate per condition group, when cells carry `misaligned_rate`.

A value that was not finite (NaN, inf: named in the collection's problems) is left out of every
mean and interval; `n_nonfinite` counts the seeds left out, so one bad seed never passes for a
condition that simply has fewer seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sublim.report.collect import Collection
from sublim.report.settings import matches
from sublim.stats import (RATE, Interval, difference_interval, min_detectable_effect, paired_se, t_interval,
                          welch_se)

GROUP_KEYS = ["domain", "teacher", "student", "finetune", "setting"]  # setting: see sublim.report.settings
CONDITION_ORDER = ["base", "control", "treatment", "teacher"]  # teacher: the teacher model itself evaluated


def trait_variant(trait: str) -> str:
    """How the teacher got its trait: "" for the default (prompt), else the suffix of "owl+finetune"."""
    return trait.split("+", 1)[1] if isinstance(trait, str) and "+" in trait else ""


def condition_rank(c: str) -> int:
    return CONDITION_ORDER.index(c) if c in CONDITION_ORDER else len(CONDITION_ORDER)


def varying(df: pd.DataFrame, keys: list[str] = GROUP_KEYS) -> list[str]:
    """The keys that take more than one value among control/treatment cells (base and teacher
    cells read teacher '-' or finetune 'none'/'-', which is not a variation worth a column)."""
    ft = df[df["condition"].isin(["control", "treatment"])] if "condition" in df else df
    ft = ft if len(ft) else df
    return [k for k in keys if k in df and (ft[k].nunique() > 1 or (k == "student" and df[k].nunique() > 1))]


def targets_of(col: Collection, extra: list[str] | None = None) -> list[str]:
    """The traits some cell targets, plus any asked for."""
    c = col.cells[col.cells["job"].isin(col.rates["job"])]  # misalignment-only cells have no rates
    ts = set(c["target"].dropna().astype(str)) | set(extra or [])
    return sorted(ts)


def values_at(col: Collection, target: str) -> pd.DataFrame:
    """Per-cell value at `target`: treatment cells of that target and every cell without a target
    (base, control), each read at its rate of `target`."""
    c = col.cells
    cells = c[c["target"].isna() | (c["target"] == target)]
    r = col.rates[col.rates["candidate"] == target]
    v = cells.merge(r[["job", "rate", "q_sd", "q_min", "q_max", "q_n"]], on="job", how="inner")
    return v.rename(columns={"rate": "value"})


def _question_spread(col: Collection, jobs: list[int], target: str) -> tuple[float, float]:
    """Min and max over questions of the rate averaged over seeds (over all seeds' questions if
    the seeds asked different numbers of questions)."""
    q = col.questions[(col.questions["job"].isin(jobs)) & (col.questions["candidate"] == target)]
    if q.empty:
        return math.nan, math.nan
    if q.groupby("job")["question"].nunique().nunique() == 1:
        per_q = q.groupby("question")["rate"].mean()
        return float(per_q.min()), float(per_q.max())
    return float(q["rate"].min()), float(q["rate"].max())


def _finite(df: pd.DataFrame, col: str = "value") -> pd.DataFrame:
    return df[np.isfinite(df[col].to_numpy(float))]


def rise_interval(treated: pd.DataFrame, baseline: pd.DataFrame, confidence: float) -> tuple[Interval, str]:
    """treated - baseline across seeds, and how it was taken ("paired", "fixed" or "welch").

    Cells of one `seed` share the student's initialisation, data order and eval sampling, so when
    treatment and baseline have exactly the same seeds, one cell each, the difference is paired by
    seed (as the demo's summary takes it). A one-seed baseline (the base
    model is often evaluated once) is taken as fixed: the treated seeds' t-interval, shifted.
    Otherwise Welch's interval. Non-finite values are left out first; none left on a side: NaN, ""."""
    treated, baseline = _finite(treated), _finite(baseline)
    if treated.empty or baseline.empty:
        return Interval(math.nan, math.nan, math.nan, 0), ""
    a, b = treated.dropna(subset=["seed"]), baseline.dropna(subset=["seed"])
    if len(baseline) == 1:
        return t_interval(treated["value"].to_numpy(float) - float(baseline["value"].iloc[0]), confidence), "fixed"
    if (len(a) == len(treated) >= 2 and len(b) == len(baseline) and a["seed"].is_unique and b["seed"].is_unique
            and set(a["seed"]) == set(b["seed"])):
        x, y = a.set_index("seed")["value"], b.set_index("seed")["value"]
        paired = difference_interval(x.to_numpy(float), y.reindex(x.index).to_numpy(float), confidence, paired=True)
        return paired, "paired"
    return difference_interval(treated["value"].to_numpy(float), baseline["value"].to_numpy(float), confidence,
                               paired=False), "welch"


def rise_mde(treated: pd.DataFrame, baseline: pd.DataFrame, how: str, confidence: float,
             power: float = 0.8) -> float:
    """Minimum detectable rise: MDE = (t_{1-alpha/2, df} + t_{power, df}) * SE with alpha = 1 -
    confidence (two-sided) and the SE and df of the test the rise's interval stands for (`how`, from
    rise_interval): paired: SD of the per-seed differences / sqrt(n), df n - 1; fixed: the treated
    seeds' SD / sqrt(n), df n - 1; welch: Welch's SE and df. The SDs are the observed seed-to-seed
    spread (which includes the eval's sampling noise). NaN with fewer than 2 seeds."""
    a, b = _finite(treated), _finite(baseline)
    if how == "fixed":
        se, df = paired_se(a["value"].to_numpy(float))
    elif how == "paired":
        x, y = a.set_index("seed")["value"], b.set_index("seed")["value"]
        se, df = paired_se(x.to_numpy(float) - y.reindex(x.index).to_numpy(float))
    elif how == "welch":
        se, df = welch_se(a["value"].to_numpy(float), b["value"].to_numpy(float))
    else:
        return math.nan
    return min_detectable_effect(se, df, confidence, power)


def _baseline(v: pd.DataFrame, row: pd.Series, kv: tuple = ()) -> tuple[str, pd.DataFrame]:
    """The student's own baseline for a treatment group: control (same teacher) > control (other
    teacher, same student) > base (same student); controls whose teacher got "no trait" the same
    way (prompt, finetune) first. A teacher evaluated itself is compared with its untouched model.
    `kv`: the group's setting (e.g. finetune.lora_r=2), which a control must share (a base model,
    never fine-tuned, the settings outside finetune.*); none that does: no baseline."""
    if row["condition"] == "teacher":
        base = v[(v["condition"] == "base") & (v["student"] == row["teacher"])]
        return ("base (teacher's model)" if len(base) else ""), base
    if kv and "settings" in v:
        untrained = v["condition"] == "base"
        v = v[(untrained & matches(v["settings"], tuple((k, x) for k, x in kv if not k.startswith("finetune."))))
              | (~untrained & matches(v["settings"], kv))]
    same = (v["student"] == row["student"])
    ctrl = v[(v["condition"] == "control") & same & (v["domain"] == row["domain"]) & (v["finetune"] == row["finetune"])]
    same_way = ctrl["trait"].map(trait_variant) == trait_variant(row["trait"])
    if same_way.any():
        ctrl = ctrl[same_way]
    if len(ctrl[ctrl["teacher"] == row["teacher"]]):
        return "control", ctrl[ctrl["teacher"] == row["teacher"]]
    if len(ctrl):
        return "control (other teacher)", ctrl
    base = v[(v["condition"] == "base") & same]
    if len(base[base["domain"] == row["domain"]]):
        base = base[base["domain"] == row["domain"]]
    if len(base):
        return "base", base
    return "", base


SUMMARY_COLUMNS = ["target", "condition", "trait", *GROUP_KEYS, "n_seeds", "seeds", "n_nonfinite", "mean", "ci_low",
                   "ci_high", "seed_sd", "q_sd", "q_min", "q_max", "baseline", "rise", "rise_low", "rise_high",
                   "rise_by", "rise_mde"]


def summary(col: Collection, targets: list[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """One row per target x condition x trait x (domain, teacher, student, finetune); see module doc.
    (trait splits "owl" from "owl+finetune": the same target, a teacher made another way.)"""
    rows = []
    for t in targets if targets is not None else targets_of(col):
        v = values_at(col, t)
        for keys, g_all in v.groupby(["condition", "trait", *GROUP_KEYS], sort=False):
            g = _finite(g_all)
            iv = t_interval(g["value"].to_numpy(float), confidence, RATE)
            lo, hi = _question_spread(col, g["job"].tolist(), t)
            row = {"target": t, **dict(zip(["condition", "trait", *GROUP_KEYS], keys)), "n_seeds": iv.n,
                   "seeds": ",".join(str(s) for s in sorted(g["seed"].dropna().tolist())),
                   "n_nonfinite": len(g_all) - len(g), "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high,
                   "seed_sd": float(g["value"].std(ddof=1)) if len(g) > 1 else math.nan,
                   "q_sd": float(g["q_sd"].mean()) if len(g) else math.nan, "q_min": lo, "q_max": hi,
                   "baseline": "", "rise": math.nan, "rise_low": math.nan, "rise_high": math.nan, "rise_by": "",
                   "rise_mde": math.nan}
            if row["condition"] not in ("base", "control"):
                label, b = _baseline(v, pd.Series(row), g_all["setting_kv"].iloc[0] if "setting_kv" in g_all else ())
                if len(b):
                    d, how = rise_interval(g[["seed", "value"]], b[["seed", "value"]], confidence)
                    row |= {"baseline": label, "rise": d.mean, "rise_low": d.low, "rise_high": d.high, "rise_by": how,
                            "rise_mde": rise_mde(g[["seed", "value"]], b[["seed", "value"]], how, confidence)}
            rows.append(row)
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if len(df):
        df = df.assign(_c=df["condition"].map(condition_rank)).sort_values(
            ["target", "student", "_c", "teacher", "domain", "finetune"]).drop(columns="_c").reset_index(drop=True)
    return df


def diag_minus_offdiag(matrix: pd.DataFrame) -> float:
    """Mean of M[X, X] minus mean of M[X, Y], Y != X, over rows X that are also columns (the
    control row 'none' has no diagonal and is left out). NaN entries are skipped."""
    rows = [r for r in matrix.index if r in matrix.columns]
    if not rows or len(matrix.columns) < 2:
        return math.nan
    diag = [matrix.at[r, r] for r in rows]
    off = [matrix.at[r, c] for r in rows for c in matrix.columns if c != r]
    diag, off = np.array(diag, float), np.array(off, float)
    if np.isnan(diag).all() or np.isnan(off).all():
        return math.nan
    return float(np.nanmean(diag) - np.nanmean(off))


@dataclass
class Specificity:
    keys: dict  # domain, teacher, student, finetune (+ trait_via when the teacher got its trait another way)
    matrix: pd.DataFrame  # rows: teacher traits (+ "none"), columns: candidate traits; mean over seeds
    n: pd.Series  # seeds per row
    per_seed: pd.Series  # diag - offdiag per seed
    interval: Interval

    def title(self) -> str:
        return " · ".join(f"{k}={v}" for k, v in self.keys.items())


def specificity(col: Collection, confidence: float = 0.95) -> list[Specificity]:
    """One matrix per (domain, teacher, student, finetune, trait variant) with at least two
    treatment targets. Rows are named by target (the control row "none")."""
    c = col.cells.assign(variant=col.cells["trait"].map(trait_variant),
                         row=col.cells["target"].where(col.cells["target"].notna(), "none"))
    out = []
    treat = c[(c["condition"] == "treatment") & c["target"].notna()]
    for keys, g in treat.groupby([*GROUP_KEYS, "variant"], sort=True):
        kd = dict(zip(GROUP_KEYS, keys))
        cands = set(col.rates.loc[col.rates["job"].isin(g["job"]), "candidate"])
        traits = sorted(t for t in g["target"].unique() if t in cands)
        if len(traits) < 2:
            continue
        sel = g[g["target"].isin(traits)]
        ctrl = c[(c["condition"] == "control") & np.logical_and.reduce([c[k] == v for k, v in kd.items()])]
        if (ctrl["variant"] == keys[-1]).any():
            ctrl = ctrl[ctrl["variant"] == keys[-1]]
        if keys[-1]:
            kd["trait_via"] = keys[-1]
        jobs = pd.concat([sel, ctrl])
        r = col.rates[col.rates["job"].isin(jobs["job"]) & col.rates["candidate"].isin(traits)]
        long = r.merge(jobs[["job", "row", "seed"]].rename(columns={"row": "trait"}), on="job")
        matrix = long.pivot_table(index="trait", columns="candidate", values="rate", aggfunc="mean")
        matrix = matrix.reindex(index=traits + (["none"] if len(ctrl) else []), columns=traits)
        n = jobs.groupby("row")["job"].nunique().reindex(matrix.index)
        per_seed = {}
        for seed, gs in long[long["trait"].isin(traits)].groupby("seed"):
            m = gs.pivot_table(index="trait", columns="candidate", values="rate", aggfunc="mean")
            per_seed[seed] = diag_minus_offdiag(m.reindex(columns=traits))
        ps = pd.Series(per_seed, dtype=float).dropna()
        out.append(Specificity(kd, matrix, n, ps, t_interval(ps.to_numpy(), confidence)))
    return out


MISALIGN_COLUMNS = ["condition", "trait", *GROUP_KEYS, "n_seeds", "seeds", "n_nonfinite", "mean", "ci_low", "ci_high",
                    "coherent_mean", "coherent_ci_low", "coherent_ci_high"]


def misalignment(col: Collection, confidence: float = 0.95) -> pd.DataFrame:
    """Misaligned-answer rate per condition group, mean over seeds with a t-interval; `coherent_*`:
    the same over coherent answers only (see sublim.evals.misalignment; NaN for cells evaluated
    before that rate was recorded)."""
    def bad(g: pd.DataFrame, fld: str) -> pd.Series:  # the value was there but not finite
        return g["nonfinite"].str.split(", ").map(lambda fs: fld in fs) if "nonfinite" in g else g["job"] != g["job"]

    cells = col.cells
    c = cells[cells["misaligned_rate"].notna() | bad(cells, "misaligned_rate.mean")]
    rows = []
    for keys, g_all in c.groupby(["condition", "trait", *GROUP_KEYS], sort=False):
        g = _finite(g_all, "misaligned_rate")
        iv = t_interval(g["misaligned_rate"].to_numpy(float), confidence, RATE)
        coh = g["misaligned_coherent_rate"]
        recorded = coh.notna() | bad(g, "misaligned_rate_coherent.mean")  # cells from before it existed lack it
        ivc = (t_interval(coh.dropna().to_numpy(float), confidence, RATE) if recorded.all()
               else Interval(math.nan, math.nan, math.nan, 0))
        rows.append({**dict(zip(["condition", "trait", *GROUP_KEYS], keys)), "n_seeds": iv.n,
                     "seeds": ",".join(str(s) for s in sorted(g["seed"].dropna().tolist())),
                     "n_nonfinite": len(g_all) - len(g), "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high,
                     "coherent_mean": ivc.mean, "coherent_ci_low": ivc.low, "coherent_ci_high": ivc.high})
    df = pd.DataFrame(rows, columns=MISALIGN_COLUMNS)
    if len(df):
        df = df.assign(_c=df["condition"].map(condition_rank)).sort_values(
            ["student", "_c", "trait", "teacher"]).drop(columns="_c").reset_index(drop=True)
    return df


def gaps(col: Collection, summ: pd.DataFrame) -> list[str]:
    """Holes in the design that the job folders cannot show: seeds one group lacks, targets
    without a baseline, references that do not measure a target."""
    notes = []
    c = col.cells
    ft = c[c["condition"].isin(["control", "treatment"])]
    all_seeds = set(ft["seed"].dropna())
    for (group, setting), g in ft.groupby(["group", "setting"]):
        miss = sorted(all_seeds - set(g["seed"].dropna()))
        if miss:
            where = f"{group} [{setting}]" if setting else group
            notes.append(f"{where}: no seed {', '.join(map(str, miss))} (other groups have it)")
    for _, r in summ[(summ["condition"] == "treatment") & (summ["baseline"] == "")].iterrows():
        setting = f", {r['setting']}" if r.get("setting") else ""
        notes.append(f"{r['target']} ({r['teacher']} -> {r['student']}, {r['finetune']}{setting}): no control or "
                     "base cell of its setting, no rise")
    for t in sorted(set(summ["target"])):
        refs = c[c["target"].isna()]
        measured = set(col.rates.loc[col.rates["candidate"] == t, "job"])
        blind = refs[~refs["job"].isin(measured)]
        if len(blind):
            notes.append(f"{len(blind)} base/control cell(s) do not measure '{t}' (not a candidate of their eval)")
    return notes
