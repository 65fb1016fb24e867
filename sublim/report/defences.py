"""How much of the subliminal effect each defence leaves, and what the defence costs.

Why its own table: a defence grid (`sweep=defences_tiny`) runs one arm per `defence.name` (the
cells' `defence` column, see sublim.report.collect; any names, "none" is the undefended arm). Each
arm has trait cells (the trait teacher's data under that defence) and control cells (the trait-free
teacher's data under the same defence), so each arm's rise is measured over its own control: a
defence that damages the data for both teachers alike does not pass for one that removes the trait.

Definitions, per target x trait x domain x teacher x student x finetune x other setting:
- rise_d(s) = trait rate of the trait cell - trait rate of the control cell, arm d, seed s (the
  same seed = the same student seed; several cells of one seed are averaged).
- remaining_d = mean_s rise_d(s) / mean_s rise_none(s), over the seeds S both arms have (paired).
  1 = the defence removes nothing, 0 = it removes the whole rise, < 0 = it reverses it.
- its interval: paired percentile bootstrap (sublim.stats.ratio_bootstrap): each resample draws |S|
  seeds with replacement and takes the ratio of the two means over the same seeds; `resamples`
  draws from numpy's default_rng(`seed`), the same for every arm, so the report is reproducible.
- undefined (NaN, with the reason in `remaining_note`) when the undefended rise's own t-interval
  over S (paired by seed, at --confidence) includes 0 or does not exist (fewer than 2 seeds): a
  fraction of a rise that may be 0 means nothing. No undefended arm: undefined too.
- p: one-sided paired t-test over S of rise_none(s) - rise_d(s) > 0 ("the defence reduces the
  rise"; sublim.stats.one_sided_paired_p), then Holm's adjustment over the defence arms of the
  group (sublim.stats.holm): `p_holm` controls the chance that any arm is wrongly called effective.
- costs, on the trait cells (the data the defence acts on), from the data stages' stats.json as
  metrics.json records them: `well_formed` = filter n_passed / n_in (mean over the arm's seeds),
  `well_formed_change` = mean over paired seeds of well_formed_d - well_formed_none; `rows_dropped`
  = mean over paired seeds of n_train_none - n_train_d (rows the student no longer trains on;
  n_train: the n_kept of the last data stage recorded, see collect.DATA_STAGES); `extra_rejects`:
  the data stages' reject reasons (the filter's, "replace/..." for the replace stage) whose mean
  count per seed is higher than the undefended arm's, with the excess ("entangled +120"): a
  defence that rejects rows in the filter while the filter still keeps its n_keep rows costs
  sampled rows, not training rows, and shows here and in well_formed. A cost a cell did not record
  is NaN (or "") and shows as missing, never as 0.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from sublim.report.collect import Collection  # noqa: E402
from sublim.report.figures import STYLE, _save  # noqa: E402
from sublim.report.markdown import ci, level, pct, pp, table  # noqa: E402
from sublim.report.summarise import targets_of, values_at  # noqa: E402
from sublim.stats import holm, one_sided_paired_p, ratio_bootstrap, t_interval  # noqa: E402

REFERENCE = "none"  # the undefended arm
GROUP = ["target", "trait", "domain", "teacher", "student", "finetune", "setting"]
COLUMNS = [*GROUP, "defence", "n_seeds", "seeds", "rise", "rise_low", "rise_high", "n_paired", "remaining",
           "remaining_low", "remaining_high", "remaining_note", "p", "p_holm", "well_formed", "well_formed_change",
           "rows_dropped", "n_train", "extra_rejects"]


def has_defences(col: Collection) -> bool:
    """The runs have more than one defence.name: the table and figure are worth drawing."""
    return "defence" in col.cells and col.cells["defence"].nunique() > 1


def _implied(defences: pd.Series, kvs: pd.Series) -> set[str]:
    """Setting keys an arm's defence decides (finetune.train_on, sampler.min_p, ...): one value within
    every arm, different between arms. They tell the arms apart, so they are not a setting to group by."""
    values: dict[str, dict[str, set[str]]] = {}
    for d, kv in zip(defences, kvs):
        for k, x in (kv or ()):
            values.setdefault(str(k), {}).setdefault(str(d), set()).add(str(x))
    return {k for k, by in values.items()
            if all(len(s) == 1 for s in by.values()) and len({next(iter(s)) for s in by.values()}) > 1}


def _other(kv, implied: set[str] = frozenset()) -> str:
    """The cell's setting label without the defence's own keys (they tell the arms apart)."""
    return ", ".join(f"{k}={v}" for k, v in (kv or ()) if not str(k).startswith("defence.") and str(k) not in implied)


def _per_seed(df: pd.DataFrame, col: str) -> pd.Series:
    x = df.assign(_x=pd.to_numeric(df[col], errors="coerce").astype(float))
    x = x[np.isfinite(x["_x"]) & x["seed"].notna()]
    return x.groupby("seed")["_x"].mean()


def _paired_mean(a: pd.Series, b: pd.Series) -> float:
    d = (a - b).dropna()
    return float(d.mean()) if len(d) else math.nan


def _reasons(df: pd.DataFrame) -> pd.Series | None:
    """Mean reject count per reason over the cells that recorded their data stages' reasons (None: none did)."""
    got = [json.loads(x) for x in df["rejected"] if isinstance(x, str)] if "rejected" in df else []
    return pd.DataFrame(got).fillna(0).mean() if got else None


def _extra(arm: pd.Series | None, ref: pd.Series | None) -> str:
    if arm is None or ref is None:
        return ""
    more = arm.sub(ref, fill_value=0)
    more = more[more > 0].sort_values(ascending=False)
    return ", ".join(f"{k} +{v:.0f}" for k, v in more.head(3).items()) or "none"


def _cells(col: Collection, target: str) -> pd.DataFrame:
    v = values_at(col, target)
    v = v[v["condition"].isin(["treatment", "control"])]
    kv = v["setting_kv"] if "setting_kv" in v else pd.Series([()] * len(v), index=v.index)
    implied = _implied(v["defence"], kv) if "defence" in v else set()
    fin, fpass = (pd.to_numeric(v[c], errors="coerce").astype(float) for c in ("filter_in", "filter_passed"))
    return v.assign(setting=kv.map(lambda x: _other(x, implied)), well_formed=(fpass / fin.where(fin > 0)))


def _arm_rows(keys: dict, tr: pd.DataFrame, ctrl: pd.DataFrame, confidence: float, resamples: int,
              seed: int) -> list[dict]:
    arms = sorted(set(tr["defence"]) | set(ctrl["defence"]), key=lambda d: (d != REFERENCE, d))
    rises = {d: (_per_seed(tr[tr["defence"] == d], "value") - _per_seed(ctrl[ctrl["defence"] == d], "value")).dropna()
             for d in arms}
    ref = rises.get(REFERENCE)
    wf = {d: _per_seed(tr[tr["defence"] == d], "well_formed") for d in arms}
    n_train = {d: _per_seed(tr[tr["defence"] == d], "n_train") for d in arms}
    why = {d: _reasons(tr[tr["defence"] == d]) for d in arms}
    rows = []
    for d in arms:
        r = rises[d]
        iv = t_interval(r.to_numpy(float), confidence)
        row = {**keys, "defence": d, "n_seeds": iv.n, "seeds": ",".join(str(int(s)) for s in r.index),
               "rise": iv.mean, "rise_low": iv.low, "rise_high": iv.high, "n_paired": 0, "remaining": math.nan,
               "remaining_low": math.nan, "remaining_high": math.nan, "remaining_note": "", "p": math.nan,
               "well_formed": float(wf[d].mean()) if len(wf[d]) else math.nan, "well_formed_change": math.nan,
               "rows_dropped": math.nan, "n_train": float(n_train[d].mean()) if len(n_train[d]) else math.nan,
               "extra_rejects": ""}
        if d == REFERENCE:
            row["remaining_note"] = "reference (undefended)"
        elif ref is None:
            row["remaining_note"] = "undefined: no undefended arm"
        else:
            shared = r.index.intersection(ref.index)
            rd, rn = r[shared].to_numpy(float), ref[shared].to_numpy(float)
            row |= {"n_paired": len(shared), "p": one_sided_paired_p(rn - rd),
                    "well_formed_change": _paired_mean(wf[d], wf[REFERENCE]),
                    "rows_dropped": _paired_mean(n_train[REFERENCE], n_train[d]),
                    "extra_rejects": _extra(why[d], why[REFERENCE])}
            base = t_interval(rn, confidence)
            if math.isnan(base.low):
                row["remaining_note"] = "undefined: fewer than 2 paired seeds"
            elif base.low <= 0 <= base.high:
                row["remaining_note"] = "undefined: the undefended rise's CI includes 0"
            else:
                rem = ratio_bootstrap(rd, rn, confidence, resamples, seed)
                row |= {"remaining": rem.mean, "remaining_low": rem.low, "remaining_high": rem.high}
        rows.append(row)
    adjusted = holm([x["p"] if x["defence"] != REFERENCE else math.nan for x in rows])
    return [x | {"p_holm": p} for x, p in zip(rows, adjusted)]


def effect_remaining(col: Collection, targets: list[str] | None = None, confidence: float = 0.95,
                     resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per group (see GROUP) x defence arm; columns: COLUMNS, definitions in the module doc.
    A treatment group's controls: the control cells of the same domain, teacher, student, finetune
    and other setting (each arm takes its own defence's)."""
    if "defence" not in col.cells:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for t in targets if targets is not None else targets_of(col):
        v = _cells(col, t)
        tr, cs = v[v["condition"] == "treatment"], v[v["condition"] == "control"]
        for keys, g in tr.groupby(GROUP[1:], sort=True):
            kd = {"target": t, **dict(zip(GROUP[1:], keys))}
            ctrl = cs[np.logical_and.reduce([cs[k] == kd[k] for k in ("domain", "teacher", "student", "finetune",
                                                                      "setting")])]
            rows += _arm_rows(kd, g, ctrl, confidence, resamples, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def run_summary(df: pd.DataFrame | None) -> dict:
    """W&B summary keys: defences/<target>/<defence>/{remaining,remaining_low,remaining_high,p_holm}
    (first group of each target and arm; defined values only)."""
    out: dict = {}
    for _, r in (df if df is not None else pd.DataFrame(columns=COLUMNS)).iterrows():
        for f in ("remaining", "remaining_low", "remaining_high", "p_holm"):
            k = f"defences/{r['target']}/{r['defence']}/{f}"
            if k not in out and isinstance(r[f], float) and math.isfinite(r[f]):
                out[k] = r[f]
    return out


def _fraction(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"


def _p(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def _remaining_text(r: pd.Series) -> str:
    if r["defence"] == REFERENCE:
        return "100 % (reference)"
    if not math.isfinite(r["remaining"]):
        return r["remaining_note"] or "–"
    bounds = "" if not math.isfinite(r["remaining_low"]) else \
        f" [{_fraction(r['remaining_low'])}, {_fraction(r['remaining_high'])}]"
    return _fraction(r["remaining"]) + bounds


def _rows_text(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.0f}" if x != 0 else "0"


def markdown_table(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The effect-remaining table as formatted values (group columns shown only where they vary)."""
    keys = [k for k in GROUP if df[k].nunique() > 1 or k == "target"]
    ref = df["defence"] == REFERENCE
    return pd.DataFrame({
        **{k: df[k] for k in keys}, "defence": df["defence"],
        "seeds": [f"{n} ({s})" if n else "–" for n, s in zip(df["n_seeds"], df["seeds"])],
        "rise over own control": [f"{pp(r)} {ci(lo, hi, True, n)}" for r, lo, hi, n in
                                  zip(df["rise"], df["rise_low"], df["rise_high"], df["n_seeds"])],
        f"effect remaining [{level(confidence)} paired bootstrap]": [_remaining_text(r) for _, r in df.iterrows()],
        "p (one-sided)": ["" if x else _p(p) for p, x in zip(df["p"], ref)],
        "p (Holm)": ["" if x else _p(p) for p, x in zip(df["p_holm"], ref)],
        "well-formed": df["well_formed"].map(pct),
        "well-formed change": ["" if x else pp(c) for c, x in zip(df["well_formed_change"], ref)],
        "rows dropped": ["" if x else _rows_text(c) for c, x in zip(df["rows_dropped"], ref)],
        "extra rejects (by reason)": ["" if x else (e or "–") for e, x in zip(df["extra_rejects"], ref)],
        "rows trained on": df["n_train"].map(lambda x: "–" if not math.isfinite(x) else f"{x:.0f}")})


def markdown_section(df: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """The report's section: what the columns mean, then the table."""
    return ["## Effect remaining under each defence", "",
            "Per seed, each arm's rise is its trait cell minus its own control cell (the trait-free teacher's data "
            "under the same defence). Effect remaining = mean rise of the arm / mean rise undefended, over the seeds "
            f"both have; {level(confidence)} paired percentile bootstrap over seeds. Undefined when the undefended "
            "rise's own interval includes 0. p: one-sided paired t-test that the defence lowers the rise; Holm: "
            "adjusted for the number of defence arms. Costs on the trait teacher's data: well-formed = passed the "
            "filter / sampled; its change and rows dropped (rows the student no longer trains on) against the "
            "undefended arm, paired by seed; extra rejects: reject reasons of the data stages counted more often than "
            "undefended (mean per seed); – = not recorded.", "",
            table(markdown_table(df, confidence))]


def figure(df: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path | None:
    """Effect remaining per defence arm (point, paired bootstrap interval), one panel per group;
    undefined arms are named at 0 with the reason. None when there is no defence arm."""
    arms = df[df["defence"] != REFERENCE]
    if arms.empty:
        return None
    groups = arms[GROUP].drop_duplicates().to_dict("records")
    n_arms = arms.groupby(GROUP)["defence"].nunique().max()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(groups), 1, squeeze=False, layout="constrained",
                                 figsize=(8.5, (0.45 * n_arms + 1.4) * len(groups) + 0.8))
        for ax, keys in zip(axes[:, 0], groups):
            g = arms[np.logical_and.reduce([arms[k] == v for k, v in keys.items()])].reset_index(drop=True)
            y = np.arange(len(g))[::-1]
            ok = np.isfinite(g["remaining"].to_numpy(float))
            ax.axvline(1.0, color="#999999", lw=1, ls="--")
            ax.axvline(0.0, color="#999999", lw=1)
            rem, lo, hi = (g[c].to_numpy(float) for c in ("remaining", "remaining_low", "remaining_high"))
            ax.plot(rem[ok], y[ok], "o", color="#dd8452")
            has = ok & np.isfinite(lo) & np.isfinite(hi)
            if has.any():
                ax.errorbar(rem[has], y[has], xerr=[rem[has] - lo[has], hi[has] - rem[has]], fmt="none",
                            ecolor="black", elinewidth=1, capsize=3)
            for yi, (_, r) in zip(y, g.iterrows()):
                if not math.isfinite(r["remaining"]):
                    ax.annotate(r["remaining_note"] or "undefined", (0, yi), xytext=(4, 0), textcoords="offset points",
                                va="center", fontsize=7.5, style="italic", color="#555555")
            ax.set_yticks(y, [f"{r['defence']}\n(p Holm {_p(r['p_holm'])}, "
                              f"Δ well-formed {pp(r['well_formed_change'])}, "
                              f"rows dropped {_rows_text(r['rows_dropped'])})" for _, r in g.iterrows()], fontsize=8)
            ax.set_ylim(-0.6, len(g) - 0.4)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_xlabel("share of the undefended rise that remains (arm's rise over its own control)")
            setting = f" · {keys['setting']}" if keys["setting"] else ""
            ax.set_title(f"target {keys['target']} · teacher {keys['teacher']} → student {keys['student']} · "
                         f"{keys['domain']} · {keys['finetune']}{setting}", fontsize=9.5)
        fig.suptitle("Effect remaining under each defence\n"
                     f"({level(confidence)} paired bootstrap over seeds; 100 %: no effect, 0 %: rise removed)",
                     fontweight="bold", fontsize=10.5)
        return _save(fig, path)
