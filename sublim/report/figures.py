"""Paper-style figures from the summary tables (matplotlib, Agg: no display needed).

Why these four: (a) grouped bars are the paper's main figure (base / control / treatment per
target, t-interval across seeds at the report's --confidence); (b) the cross-model heatmaps (one
per setting) show that only a student sharing the teacher's base model picks the trait up; (c)
the specificity matrix shows that each teacher transmits its own trait, not a general rise; (d)
misalignment bars for the misalignment experiment. A figure is drawn only when the data supports it; each function returns the path it
wrote or None. Every text goes through sublim.report.fonts before saving: a name whose
characters the default font lacks is drawn with an installed font that has them, or as escapes
with a warning, never as boxes.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

from sublim.report.fonts import fit_text  # noqa: E402
from sublim.report.markdown import level  # noqa: E402
from sublim.report.summarise import GROUP_KEYS, Specificity, condition_rank, trait_variant  # noqa: E402

COLORS = {"base": "#9e9e9e", "control": "#4c72b0", "treatment": "#dd8452", "teacher": "#55a868"}
LABELS = {"base": "base student (no fine-tuning)", "control": "control (teacher without trait)",
          "treatment": "treatment (teacher with the trait)", "teacher": "the teacher itself"}


def ci_note(confidence: float, single: bool) -> str:
    return f"error bars: {level(confidence)} t-interval across seeds" + ("; † one seed: no interval" if single else "")

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.dpi": 150,
         "axes.spines.top": False, "axes.spines.right": False}


def _panel_title(keys: dict) -> str:
    setting = f" · {keys['setting']}" if keys.get("setting") else ""
    return f"teacher {keys['teacher']} → student {keys['student']} · {keys['domain']} · {keys['finetune']}{setting}"


def _n_label(ns: list[int]) -> str:
    ns = sorted(set(int(n) for n in ns))
    return f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"


def _save(fig, path: Path) -> Path:
    fit_text(fig, path.name)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _errorbars(ax, xs, mean, low, high) -> None:
    """CI error bars only where an interval exists (none for a single seed)."""
    mean, low, high = (np.asarray(a, float) for a in (mean, low, high))
    ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(mean)
    if ok.any():
        ax.errorbar(np.asarray(xs)[ok], mean[ok], yerr=[mean[ok] - low[ok], high[ok] - mean[ok]], fmt="none",
                    ecolor="black", elinewidth=1, capsize=3)


def bars(summ: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path | None:
    """(a) Per target: base, control and treatment rate with CI error bars; one panel per
    teacher/student/domain/finetune (/way the teacher got its trait) combination. A teacher
    evaluated itself, when the sweep has one, is an extra bar in its panels."""
    summ = summ.assign(variant=summ["trait"].map(trait_variant))
    pkeys = [*GROUP_KEYS, "variant"]
    ft = summ[~summ["condition"].isin(["base", "teacher"])]
    ft = ft if len(ft) else summ[summ["condition"] != "base"]
    if ft.empty:
        return None
    panels = ft[pkeys].drop_duplicates().sort_values(pkeys).to_dict("records")
    n_t = max(ft.groupby(pkeys)["target"].nunique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.5, 1.25 * n_t + 2.5) + 3.2, 3.8 * len(panels) + 0.8),
                                 squeeze=False, layout="constrained")
        single = False
        for ax, keys in zip(axes[:, 0], panels):
            rows = ft[np.logical_and.reduce([ft[k] == v for k, v in keys.items()])]
            if not rows["condition"].eq("control").any():  # the summary's fallback: a control made another way
                same = ft[np.logical_and.reduce([ft[k] == keys[k] for k in GROUP_KEYS])]
                rows = pd.concat([same[same["condition"] == "control"], rows])
            base = summ[(summ["condition"] == "base") & (summ["student"] == keys["student"])]
            if (base["domain"] == keys["domain"]).any():
                base = base[base["domain"] == keys["domain"]]
            teach = summ[(summ["condition"] == "teacher") & (summ["teacher"] == keys["teacher"])
                         & (summ["domain"] == keys["domain"]) & (summ["variant"] == keys["variant"])]
            if rows["condition"].eq("teacher").all():
                teach = teach.iloc[0:0]
            targets = sorted(rows["target"].unique())
            data = pd.concat([base[base["target"].isin(targets)], rows, teach[teach["target"].isin(targets)]])
            conds = sorted(data["condition"].unique(), key=lambda c: (condition_rank(c), c))
            width = 0.8 / len(conds)
            x = np.arange(len(targets))
            top = 0.0
            for j, cond in enumerate(conds):
                d = data[data["condition"] == cond].groupby("target").agg(
                    mean=("mean", "mean"), low=("ci_low", "min"), high=("ci_high", "max"), n=("n_seeds", "min"))
                d = d.reindex(targets)
                xs = x - 0.4 + width * (j + 0.5)
                ax.bar(xs, d["mean"], width * 0.92, color=COLORS.get(cond, f"C{j + 3}"),
                       label=f"{LABELS.get(cond, cond)} ({_n_label(d['n'].dropna())})")
                _errorbars(ax, xs, d["mean"], d["low"], d["high"])
                for xi, (_, r) in zip(xs, d.iterrows()):
                    if math.isnan(r["mean"]):
                        continue
                    hi = r["high"] if not math.isnan(r["high"]) else r["mean"]
                    top = max(top, hi)
                    mark = "†" if r["n"] < 2 else ""
                    ax.annotate(f"{r['mean']:.0%}{mark}", (xi, hi), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7.5)
                    single |= r["n"] < 2
            ax.set_xticks(x, targets)
            ax.set_ylim(0, min(1.05, top * 1.15 + 0.02) if top > 0 else 0.1)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_ylabel("answers naming the target")
            ax.set_xlabel("target (the teacher's trait)")
            ax.set_title(_panel_title(keys) + (f" · trait via {keys['variant']}" if keys["variant"] else ""))
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.suptitle("Favourite-animal rate by condition (mean over seeds)", fontweight="bold")
        fig.text(0.5, -0.01, ci_note(confidence, single), ha="center", va="top", fontsize=8, style="italic")
        return _save(fig, path)


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


PANEL_KEYS = ["trait", "domain", "finetune", "setting"]


def cross_model(summ: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path | None:
    """(b) Teacher model x student model: the treatment's rise over the student's own baseline,
    one heatmap per target x domain x finetune x setting (a LoRA rank, an eval option: see
    sublim.report.settings), never an average over settings. Drawn when more than one teacher or
    student."""
    tr = summ[(summ["condition"] == "treatment") & summ["rise"].notna()]
    if "setting" not in tr:
        tr = tr.assign(setting="")
    if tr.empty or (tr["teacher"].nunique() < 2 and tr["student"].nunique() < 2):
        return None
    panels = tr[PANEL_KEYS].drop_duplicates().sort_values(PANEL_KEYS)
    teachers, students = sorted(tr["teacher"].unique()), sorted(tr["student"].unique())
    vmax = max(float(tr["rise"].abs().max()), 0.01)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    cmap = plt.get_cmap("RdBu_r")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                 figsize=(ncols * (1.7 * len(students) + 1.4) + 1.6, nrows * (1.2 * len(teachers) + 1.2) + 1.0))
        im = None
        for k, (ax, (_, p)) in enumerate(zip(axes.flat, panels.iterrows())):
            d = tr[np.logical_and.reduce([tr[key] == p[key] for key in PANEL_KEYS])].drop_duplicates(
                ["teacher", "student"])  # one summary row per pair and setting: nothing is averaged
            m = d.pivot(index="teacher", columns="student", values="rise").reindex(index=teachers, columns=students)
            im = ax.imshow(m.to_numpy(float), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
            for i, t in enumerate(teachers):
                for j, s in enumerate(students):
                    r = d[(d["teacher"] == t) & (d["student"] == s)]
                    if r.empty:
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="#eeeeee"))
                        ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="#777777")
                        continue
                    r = r.iloc[0]
                    ci = "one seed" if math.isnan(r["rise_low"]) else \
                        f"[{100 * r['rise_low']:+.1f}, {100 * r['rise_high']:+.1f}]"
                    vs = "" if r["baseline"].startswith("control") else "\nvs base"
                    ax.text(j, i, f"{100 * r['rise']:+.1f} pp\n{ci}\nn={r['n_seeds']}{vs}", ha="center",
                            va="center", fontsize=8, color=_text_color(cmap((r["rise"] + vmax) / (2 * vmax))))
            ax.set_xticks(range(len(students)), students)
            ax.set_yticks(range(len(teachers)), teachers)
            ax.set_xlabel("student model")
            if k % ncols == 0:
                ax.set_ylabel("teacher model")
            ax.set_title(f"target {p['trait']} · {p['domain']} · {p['finetune']}"
                         + (f"\n{p['setting']}" if p["setting"] else ""))
            for sp in ax.spines.values():
                sp.set_visible(False)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9)
        cb.set_label("rise of the target rate over the student's baseline")
        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:+.0f} pp"))
        fig.suptitle("Cross-model transmission: treatment minus the student's own baseline\n"
                     "(control of the same teacher → student, else the base student; "
                     f"[{level(confidence)} interval across seeds])",
                     fontweight="bold", fontsize=10.5)
        return _save(fig, path)


def specificity(specs: list[Specificity], path: Path, confidence: float = 0.95) -> Path | None:
    """(c) Teacher trait x measured candidate rate, diagonal outlined, with the diagonal-minus-
    off-diagonal statistic and its interval in the title."""
    if not specs:
        return None
    cmap = plt.get_cmap("viridis")
    vmax = max([float(np.nanmax(s.matrix.to_numpy(float))) for s in specs if s.matrix.notna().any().any()] + [0.01])
    ncols = min(2, len(specs))
    nrows = math.ceil(len(specs) / ncols)
    n_c = max(len(s.matrix.columns) for s in specs)
    n_r = max(len(s.matrix.index) for s in specs)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                 figsize=(ncols * (0.75 * n_c + 3.0) + 1.2, nrows * (0.5 * n_r + 1.9) + 0.9))
        im = None
        for k, (ax, s) in enumerate(zip(axes.flat, specs)):
            m = s.matrix.to_numpy(float)
            im = ax.imshow(m, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
            for i, row in enumerate(s.matrix.index):
                for j, colname in enumerate(s.matrix.columns):
                    v = m[i, j]
                    txt = "—" if math.isnan(v) else f"{v:.0%}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                            color="black" if math.isnan(v) else _text_color(cmap(v / vmax)))
                    if row == colname:
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.6))
            rot = 30 if n_c > 4 else 0
            ax.set_xticks(range(len(s.matrix.columns)), s.matrix.columns, rotation=rot, ha="right" if rot else "center")
            ax.set_yticks(range(len(s.matrix.index)),
                          [f"{r} (n={int(n)})" if not math.isnan(n) else r for r, n in zip(s.matrix.index, s.n)])
            ax.set_xlabel("measured: rate of answering this name")
            if k % ncols == 0:
                ax.set_ylabel("teacher's trait")
            iv = s.interval
            stat = "n/a" if math.isnan(iv.mean) else f"{100 * iv.mean:+.1f} pp" + (
                " (one seed, no interval)" if math.isnan(iv.low) else
                f" [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]") + f", n={iv.n}"
            k = s.keys
            via = f" · trait via {k['trait_via']}" if k.get("trait_via") else ""
            via += f" · {k['setting']}" if k.get("setting") else ""
            ax.set_title(f"teacher {k['teacher']} → student {k['student']} · {k['domain']} · {k['finetune']}{via}\n"
                         f"diag − off-diag: {stat}", fontsize=9.5)
            for sp in ax.spines.values():
                sp.set_visible(False)
        for ax in list(axes.flat)[len(specs):]:
            ax.axis("off")
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        cb.set_label("rate (mean over seeds)")
        cb.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        fig.suptitle("Specificity: does each teacher transmit its own trait?\n"
                     f"(red: diagonal; statistic per seed, {level(confidence)} t-interval across seeds)",
                     fontweight="bold",
                     fontsize=10.5)
        return _save(fig, path)


def misalignment(mis: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path | None:
    """(d) Misaligned-answer rate per condition group with CI error bars; skipped without data."""
    if mis.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.5, 0.85 * len(mis) + 2), 4.4), layout="constrained")
        x = np.arange(len(mis))
        colors = [COLORS.get(c, "#8172b2") for c in mis["condition"]]
        ax.bar(x, mis["mean"], 0.7, color=colors)
        _errorbars(ax, x, mis["mean"], mis["ci_low"], mis["ci_high"])
        single = False
        for xi, (_, r) in zip(x, mis.iterrows()):
            if math.isnan(r["mean"]):  # every seed's value was non-finite (named in the problems)
                continue
            hi = r["ci_high"] if not math.isnan(r["ci_high"]) else r["mean"]
            mark = "†" if r["n_seeds"] < 2 else ""
            single |= r["n_seeds"] < 2
            ax.annotate(f"{r['mean']:.1%}{mark}\nn={r['n_seeds']}", (xi, hi), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7.5)
        settings = mis["setting"] if "setting" in mis and mis["setting"].nunique() > 1 else pd.Series("", mis.index)
        labels = [(f"{r['trait']}\n{r['teacher']} → {r['student']}" if r["condition"] != "base"
                   else f"base\n{r['student']}") + (f"\n{st}" if st else "")
                  for (_, r), st in zip(mis.iterrows(), settings)]
        ax.set_xticks(x, labels, fontsize=8)
        vals = mis[["mean", "ci_high"]].to_numpy(float)
        top = float(np.nanmax(vals)) if np.isfinite(vals).any() else 0.0
        ax.set_ylim(0, min(1.0, top * 1.25 + 0.02))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylabel("misaligned answers")
        ax.set_xlabel("teacher's trait / teacher → student")
        handles = [Rectangle((0, 0), 1, 1, color=COLORS.get(c, "#8172b2")) for c in dict.fromkeys(mis["condition"])]
        ax.legend(handles, [LABELS.get(c, c) for c in dict.fromkeys(mis["condition"])], fontsize=8, frameon=False)
        ax.set_title("Misalignment rate by condition (mean over seeds)", fontweight="bold")
        fig.text(0.5, -0.01, ci_note(confidence, single), ha="center", va="top", fontsize=8, style="italic")
        return _save(fig, path)


def draw_all(summ: pd.DataFrame, specs: list[Specificity], mis: pd.DataFrame, out: Path,
             confidence: float = 0.95) -> dict[str, Path]:
    """Every figure the data supports: name -> PNG path."""
    out.mkdir(parents=True, exist_ok=True)
    made = {"bars_by_target": bars(summ, out / "bars_by_target.png", confidence),
            "cross_model": cross_model(summ, out / "cross_model.png", confidence),
            "specificity": specificity(specs, out / "specificity.png", confidence),
            "misalignment": misalignment(mis, out / "misalignment.png", confidence)}
    return {k: v for k, v in made.items() if v is not None}
