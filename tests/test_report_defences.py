"""The defence report on constructed run records: each number (effect remaining, its paired
bootstrap bounds, the Holm-adjusted p, the costs, the main table's minimum detectable effect) equals
a direct computation from the rates written; an undefended rise whose interval includes 0 makes
every fraction undefined; a cost no job recorded shows as missing, never as 0."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import write_sweep

from sublim.report import cli
from sublim.report import defences as dfs
from sublim.report.collect import collect
from sublim.report.summarise import summary
from sublim.stats import holm, min_detectable_effect, one_sided_paired_p, ratio_bootstrap

SEEDS = [0, 1, 2, 3, 4]
CONTROL = [0.05, 0.07, 0.04, 0.06, 0.05]  # the control cells' owl rate, every arm alike
RISE = {  # the trait cell's owl rate minus its control's, per arm and seed
    "none": [0.30, 0.26, 0.35, 0.28, 0.33],
    "shuffle": [0.31, 0.24, 0.36, 0.27, 0.32],
    "paraphrase": [0.10, 0.04, 0.12, 0.06, 0.09],
    "remove_entangled": [0.02, -0.01, 0.03, 0.00, 0.01],
}
# filter stats of the trait cells per arm: (n_in, n_passed, n_kept); select's n_kept where given
FILTER = {"none": (1000, 900, 500), "shuffle": (1000, 900, 500), "paraphrase": (1000, 800, 450)}
SELECT = {"paraphrase": 400}  # select ran after the filter: the student trained on 400 rows
REJECTED = {"paraphrase": {"format": 100, "paraphrase_broken": 100}}  # else {"format": n_in - n_passed}
REPLACE = {"shuffle": {"n_in": 500, "n_kept": 480, "n_dropped": 20, "rejected": {"format": 20}}}  # a replace stage
SWEEP = Path("multirun") / "2026-02-01" / "00-00-00"


def write_grid(root: Path, rise=RISE, seeds=SEEDS, in_config=("paraphrase",)) -> None:
    """Trait and control cells per arm and seed. An arm in `in_config` names its defence only in
    the job's composed config (.hydra/config.yaml), the others in metrics.json's cell."""
    job = 0
    for arm, rises in rise.items():
        for sd, r, c in zip(seeds, rises, CONTROL):
            for cond, owl in (("treatment", c + r), ("control", c)):
                trait = "owl" if cond == "treatment" else "none"
                group = f"{trait}.numbers.qwen.qwen.lora"
                cell = {"condition": cond, "group": group, "name": f"{group}.seed{sd}", "trait": trait,
                        "domain": "numbers", "teacher": "qwen", "student": "qwen", "finetune": "lora", "seed": sd,
                        "data_seed": 0, "experiment": "defences_tiny"}
                if arm not in in_config:
                    cell["defence"] = {"name": arm} if arm == "shuffle" else arm  # both spellings
                rates = {"owl": round(owl, 6), "cat": 0.1}
                m = {"cell": cell, "keys": {"eval": f"ev{job}"}, "target": "owl" if cond == "treatment" else None,
                     "rates": {k: {"mean": v, "ci_low": v - 0.01, "ci_high": v + 0.01} for k, v in rates.items()},
                     "per_question": [rates, rates], "n_questions": 2, "n_answers": 200, "confidence": 0.95}
                if arm in FILTER:
                    n_in, n_passed, n_kept = FILTER[arm]
                    m["filter"] = {"n_in": n_in, "n_passed": n_passed, "n_kept": n_kept, "n_keep": 500,
                                   "reject_rate": 1 - n_passed / n_in,
                                   "rejected": REJECTED.get(arm, {"format": n_in - n_passed})}
                if arm in REPLACE:
                    m["replace"] = REPLACE[arm]
                if arm in SELECT:
                    m["select"] = {"n_in": FILTER[arm][2], "n_kept": SELECT[arm], "order": "top"}
                d = root / SWEEP / str(job)
                (d / ".hydra").mkdir(parents=True)
                (d / ".hydra" / "config.yaml").write_text(
                    f"seed: {sd}\ndefence:\n  name: {arm}\n" if arm in in_config else f"seed: {sd}\n")
                (d / "metrics.json").write_text(json.dumps(m))
                job += 1


def rises(arm: str, rise=RISE) -> np.ndarray:
    """The per-seed rise as the report sees it: the rates as written (rounded), trait - control."""
    return np.array([round(c + r, 6) - c for r, c in zip(rise[arm], CONTROL)])


def row(df: pd.DataFrame, arm: str) -> pd.Series:
    r = df[df["defence"] == arm]
    assert len(r) == 1, arm
    return r.iloc[0]


def test_the_arms_are_read_from_the_cell_or_the_config(tmp_path):
    write_grid(tmp_path)
    col = collect([tmp_path])
    assert not col.problems and dfs.has_defences(col)
    assert sorted(col.cells["defence"].unique()) == sorted(RISE)
    # a treatment is compared with its own arm's control, never pooled with other arms
    summ = summary(col)
    tr = summ[(summ["condition"] == "treatment")]
    assert len(tr) == len(RISE) and set(tr["rise_by"]) == {"paired"}
    for arm in RISE:
        r = tr[tr["setting"] == f"defence.name={arm}"].iloc[0]
        assert r["rise"] == pytest.approx(rises(arm).mean(), abs=1e-12)


def test_effect_remaining_its_bootstrap_holm_and_costs_match_a_direct_computation(tmp_path):
    write_grid(tmp_path)
    df = dfs.effect_remaining(collect([tmp_path]), confidence=0.95, resamples=2000, seed=7)
    assert list(df["defence"]) == ["none", "paraphrase", "remove_entangled", "shuffle"]  # reference first
    rn = rises("none")
    # the undefended rise and its paired t-interval
    ref = row(df, "none")
    lo, hi = stats.t.interval(0.95, len(rn) - 1, loc=rn.mean(), scale=stats.sem(rn))
    assert (ref["rise"], ref["rise_low"], ref["rise_high"]) == pytest.approx((rn.mean(), lo, hi), abs=1e-12)
    assert math.isnan(ref["remaining"]) and math.isnan(ref["p_holm"])
    # raw one-sided p per arm: scipy's paired t-test of rise_none > rise_d
    raw = {a: stats.ttest_rel(rn, rises(a), alternative="greater").pvalue for a in ("paraphrase", "remove_entangled",
                                                                                  "shuffle")}
    order = sorted(raw, key=raw.get)  # Holm by hand: (m - rank) * p, running maximum, at most 1
    expected, running = {}, 0.0
    for rank, a in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * raw[a]))
        expected[a] = running
    idx = np.random.default_rng(7).integers(0, len(SEEDS), size=(2000, len(SEEDS)))
    for arm in raw:
        r, rd = row(df, arm), rises(arm)
        assert r["remaining"] == pytest.approx(rd.mean() / rn.mean(), abs=1e-12)
        ratios = [rd[i].sum() / rn[i].sum() for i in idx]  # the same seeds for both arms, resample by resample
        assert (r["remaining_low"], r["remaining_high"]) == pytest.approx(
            tuple(np.quantile(ratios, [0.025, 0.975])), abs=1e-12)
        assert r["remaining_low"] <= r["remaining"] <= r["remaining_high"] and r["n_paired"] == 5
        assert r["p"] == pytest.approx(raw[arm], abs=1e-12)
        assert r["p_holm"] == pytest.approx(expected[arm], abs=1e-12)
    assert row(df, "paraphrase")["p_holm"] < 0.05 < row(df, "shuffle")["p_holm"]
    logged = dfs.run_summary(df)  # the W&B run's summary: defined values only
    assert logged["defences/owl/paraphrase/remaining"] == row(df, "paraphrase")["remaining"]
    assert not any(k.startswith("defences/owl/none/") for k in logged)
    # costs of the trait teacher's data against the undefended arm, paired by seed
    para = row(df, "paraphrase")
    assert para["well_formed"] == pytest.approx(0.8) and para["well_formed_change"] == pytest.approx(0.8 - 0.9)
    assert para["n_train"] == 400 and para["rows_dropped"] == pytest.approx(500 - 400)  # select's count wins
    shuf = row(df, "shuffle")  # the replace stage dropped 20 of the filter's 500 rows
    assert shuf["n_train"] == 480 and shuf["rows_dropped"] == 20 and shuf["well_formed_change"] == pytest.approx(0)
    assert row(df, "none")["well_formed"] == pytest.approx(0.9)
    # the filter's reasons: what the arm rejects more often than undefended, mean per seed
    assert para["extra_rejects"] == "paraphrase_broken +100" and shuf["extra_rejects"] == "replace/format +20"
    assert row(df, "none")["extra_rejects"] == ""  # the reference has no extra


def test_a_cost_no_job_recorded_is_missing_not_zero(tmp_path):
    write_grid(tmp_path)
    df = dfs.effect_remaining(collect([tmp_path]), resamples=200)
    gone = row(df, "remove_entangled")  # its jobs wrote no filter stats
    assert all(math.isnan(gone[k]) for k in ("well_formed", "well_formed_change", "rows_dropped", "n_train"))
    assert gone["extra_rejects"] == ""
    md = dfs.markdown_table(df).set_index("defence")
    assert (md.loc["remove_entangled", ["well-formed", "well-formed change", "rows dropped", "extra rejects (by reason)",
                                        "rows trained on"]] == "–").all()
    assert md.loc["shuffle", "rows dropped"] == "+20" and md.loc["paraphrase", "rows dropped"] == "+100"


def test_undefined_when_the_undefended_rise_may_be_zero(tmp_path):
    flat = RISE | {"none": [0.05, -0.04, 0.03, -0.05, 0.02]}  # its t-interval includes 0
    write_grid(tmp_path, flat)
    df = dfs.effect_remaining(collect([tmp_path]), resamples=200)
    for arm in ("shuffle", "paraphrase", "remove_entangled"):
        r = row(df, arm)
        assert math.isnan(r["remaining"]) and math.isnan(r["remaining_low"])
        assert r["remaining_note"] == "undefined: the undefended rise's CI includes 0"
        assert r["p"] == pytest.approx(stats.ttest_rel(rises("none", flat), rises(arm, flat),
                                                       alternative="greater").pvalue, abs=1e-12)
    text = "".join(dfs.markdown_section(df))
    assert "undefined: the undefended rise's CI includes 0" in text


def test_no_undefended_arm_or_one_seed_is_undefined(tmp_path):
    write_grid(tmp_path / "a", {k: v for k, v in RISE.items() if k != "none"})
    df = dfs.effect_remaining(collect([tmp_path / "a"]), resamples=200)
    assert set(df["remaining_note"]) == {"undefined: no undefended arm"} and df["remaining"].isna().all()
    write_grid(tmp_path / "b", {k: v[:1] for k, v in RISE.items()}, seeds=SEEDS[:1])
    df = dfs.effect_remaining(collect([tmp_path / "b"]), resamples=200)
    assert row(df, "shuffle")["remaining_note"] == "undefined: fewer than 2 paired seeds"
    assert math.isnan(row(df, "shuffle")["p"])


def test_the_main_table_states_the_minimum_detectable_rise(tmp_path):
    write_grid(tmp_path)
    summ = summary(collect([tmp_path]), confidence=0.9)
    for arm in RISE:
        r = summ[(summ["condition"] == "treatment") & (summ["setting"] == f"defence.name={arm}")].iloc[0]
        d = rises(arm)  # paired by seed: the SD of the per-seed rises
        direct = (stats.t.ppf(0.95, 4) + stats.t.ppf(0.8, 4)) * d.std(ddof=1) / math.sqrt(5)
        assert r["rise_mde"] == pytest.approx(direct, abs=1e-12)
    assert summ.loc[summ["condition"] == "control", "rise_mde"].isna().all()  # no rise, no MDE


def test_mde_welch_and_one_seed(tmp_path):
    truth = write_sweep(tmp_path)
    col = collect([tmp_path])
    c = col.cells
    col.cells = c[~((c["condition"] == "control") & (c["seed"] == 3))]  # unpaired: Welch
    tr = summary(col).query("target == 'owl' and condition == 'treatment'").iloc[0]
    a = np.array([truth[("treatment", "owl", "qwen", "qwen", s)]["owl"] for s in range(4)])
    b = np.array([truth[("control", "none", "qwen", "qwen", s)]["owl"] for s in range(3)])
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    assert tr["rise_by"] == "welch"
    assert tr["rise_mde"] == pytest.approx((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(va + vb),
                                           abs=1e-12)
    col.cells = c[c["seed"].isin([0]) | (c["condition"] == "base")]  # one seed: undefined
    one = summary(col).query("target == 'owl' and condition == 'treatment'").iloc[0]
    assert math.isnan(one["rise_mde"])
    assert min_detectable_effect(0.1, 0) != min_detectable_effect(0.1, 0)  # NaN without a degree of freedom


def test_stats_helpers_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    adj = holm([0.3, math.nan, 0.01])  # NaN: no test, not counted
    assert adj[0] == pytest.approx(0.3) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    one = ratio_bootstrap([0.1], [0.2])
    assert one.mean == pytest.approx(0.5) and math.isnan(one.low)
    assert math.isnan(ratio_bootstrap([0.1, 0.2], [0.1, -0.1]).mean)  # a zero undefended mean: no ratio
    assert math.isnan(one_sided_paired_p([0.1])) and math.isnan(one_sided_paired_p([0.1, 0.1]))
    x = [0.05, 0.02, 0.07, -0.01]
    assert one_sided_paired_p(x) == pytest.approx(stats.ttest_1samp(x, 0, alternative="greater").pvalue)


def test_the_report_writes_the_table_figure_and_markdown(tmp_path, capsys):
    write_grid(tmp_path)
    out = tmp_path / "report"
    assert cli.main([str(tmp_path / "multirun"), "--out", str(out), "--no-wandb"]) == 0
    assert (out / "defences.csv").exists() and (out / "effect_remaining.png").stat().st_size > 0
    md = (out / "summary.md").read_text()
    assert "## Effect remaining under each defence" in md and "effect_remaining.png" in md and "| MDE |" in md
    csv = pd.read_csv(out / "defences.csv")
    assert set(csv["defence"]) == set(RISE)
    # a sweep without defence arms gets no such table
    write_sweep(tmp_path / "plain")
    assert cli.main([str(tmp_path / "plain"), "--out", str(tmp_path / "r2"), "--no-wandb"]) == 0
    assert not (tmp_path / "r2" / "defences.csv").exists()
    assert "Effect remaining" not in (tmp_path / "r2" / "summary.md").read_text()


def test_malformed_defence_and_cost_fields_are_named_and_the_cell_kept(tmp_path):
    write_grid(tmp_path)
    jobs = sorted((tmp_path / SWEEP).iterdir(), key=lambda d: int(d.name))
    for job, change in zip(jobs, [lambda m: m["cell"].update(defence=["x"]),
                                  lambda m: m["filter"].update(rejected="many", n_in="lots"),
                                  lambda m: m.update(select=[])]):
        m = json.loads((job / "metrics.json").read_text())
        change(m)
        (job / "metrics.json").write_text(json.dumps(m))
    col = collect([tmp_path])
    details = " ".join(p.detail for p in col.problems)
    assert {p.kind for p in col.problems} == {"invalid"} and len(col.cells) == 39  # the arm unknown: set aside
    assert "cell set aside" in next(p.detail for p in col.problems if "cell.defence" in p.detail)
    for field in ("cell.defence.name: expected a string", "filter.rejected: expected an object",
                  "filter.n_in: expected an integer", "select: expected an object"):
        assert field in details
    assert str(jobs[0].resolve()) not in set(col.cells["path"])
    assert pd.isna(col.cells.set_index("path").loc[str(jobs[1].resolve()), "filter_in"])


def test_what_a_defence_sets_and_a_control_two_arms_share_do_not_split_or_drop_arms(tmp_path):
    """A defence's own settings (here transform.shuffle) differ between arms by design: they must not
    make each arm a separate setting without an undefended arm. And two arms' control cells may be
    the very same evaluation (mixing the control teacher into a control cell changes nothing): each
    arm keeps its copy instead of the report dropping one as a duplicate."""
    write_grid(tmp_path, in_config=tuple(RISE))
    for d in (tmp_path / SWEEP).iterdir():
        cfg = (d / ".hydra" / "config.yaml").read_text()
        (d / ".hydra" / "config.yaml").write_text(
            cfg + f"transform:\n  shuffle: {'within' if 'name: shuffle' in cfg else 'none'}\n")
        m = json.loads((d / "metrics.json").read_text())
        if m["cell"]["condition"] == "control":  # every arm's control cell: one evaluation per seed
            m["keys"]["eval"] = f"control-{m['cell']['seed']}"
            (d / "metrics.json").write_text(json.dumps(m))
    col = collect([tmp_path])
    assert not [p for p in col.problems if p.kind == "duplicate"]
    df = dfs.effect_remaining(col, resamples=200)
    assert sorted(df["defence"]) == sorted(RISE) and (df["n_seeds"] == len(SEEDS)).all()
    assert row(df, "shuffle")["remaining"] == pytest.approx(rises("shuffle").mean() / rises("none").mean())
