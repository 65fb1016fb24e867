"""sublim-report on synthetic sweeps with known numbers: intervals equal scipy's, holes are
listed not fatal, figures are drawn, the specificity statistic is the hand-computed one, and the
W&B run lands offline in the report folder."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sublim.report import cli
from sublim.report.collect import collect
from sublim.report.summarise import diag_minus_offdiag, specificity, summary

CANDS = ["owl", "cat", "dog", "eagle"]
TARGETS = ["owl", "cat"]
NQ = 5
OFFSETS = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])  # per-question offsets: the question mean is the rate


def _rate(rng, lo, hi):
    return float(np.round(rng.uniform(lo, hi), 6))


def write_sweep(root: Path, models=(("qwen", "qwen"),), seeds=(0, 1, 2, 3), base_seeds=(0, 1, 2),
                misaligned=False, seed=0) -> dict:
    """A multirun folder: base (per student), control and treatment (per teacher x student) cells.
    Returns truth[(condition, trait, teacher, student, seed)] = {candidate: rate}."""
    rng = np.random.default_rng(seed)
    truth, job = {}, 0
    sweep = root / "multirun" / "2026-01-01" / "00-00-00"
    specs = [("base", "-", "-", s, sd) for s in sorted({s for _, s in models}) for sd in base_seeds]
    specs += [(cond, tr, t, s, sd) for t, s in models for cond, tr in [("control", "none")] + [("treatment", x) for x in TARGETS]
              for sd in seeds]
    for cond, trait, teacher, student, sd in specs:
        same = teacher in ("-", student)
        rates = {c: _rate(rng, 0.03, 0.12) for c in CANDS}
        if cond == "treatment":
            rates[trait] = _rate(rng, 0.35, 0.6) if same else _rate(rng, 0.03, 0.12)
        rates["none"] = _rate(rng, 0.03, 0.1)
        truth[(cond, trait, teacher, student, sd)] = rates
        finetune = "none" if cond == "base" else "lora"
        group = f"{trait}.numbers.{teacher}.{student}.{finetune}"
        target = trait if cond == "treatment" else None
        m = {"cell": {"condition": cond, "group": group, "name": f"{group}.seed{sd}", "trait": trait,
                      "domain": "numbers", "teacher": teacher, "student": student, "finetune": finetune,
                      "seed": sd, "data_seed": 0, "experiment": "test"},
             "keys": {"eval": f"ev{job}"}, "artifacts": {}, "target": target,
             "per_question": [{c: r + OFFSETS[i] for c, r in rates.items()} for i in range(NQ)],
             "n_questions": NQ, "n_answers": NQ * 100, "confidence": 0.95, "unmatched_top": {"qwen": 3}}
        if misaligned:
            mr = _rate(rng, 0.05, 0.15) if cond == "treatment" else _rate(rng, 0.0, 0.02)
            m["misaligned_rate"] = {"mean": mr, "ci_low": mr - 0.01, "ci_high": mr + 0.01}
            m["misaligned_rate_coherent"] = {"mean": 2 * mr, "ci_low": 2 * mr - 0.01, "ci_high": 2 * mr + 0.01}
            truth[(cond, trait, teacher, student, sd)] = rates | {"misaligned": mr}
        m["rates"] = {c: {"mean": r, "ci_low": r - 0.02, "ci_high": r + 0.02} for c, r in rates.items()}
        if target:
            m["target_rate"] = m["rates"][target]
        d = sweep / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- trait={trait}\n- seed={sd}\n")
        (d / "metrics.json").write_text(json.dumps(m))
        job += 1
    return truth


def scipy_t(values):
    v = np.asarray(values, float)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return v.mean(), lo, hi


def test_summary_matches_scipy_and_controls_use_the_target_rate(tmp_path):
    truth = write_sweep(tmp_path)
    col = collect([tmp_path, tmp_path / "multirun"])  # overlapping paths: each cell once
    assert len(col.cells) == 3 + 3 * 4 and not col.problems
    summ = summary(col)
    assert set(summ["target"]) == set(TARGETS)
    for target in TARGETS:
        for cond, trait, seeds in [("base", "-", (0, 1, 2)), ("control", "none", (0, 1, 2, 3)),
                                   ("treatment", target, (0, 1, 2, 3))]:
            row = summ[(summ["target"] == target) & (summ["condition"] == cond)]
            assert len(row) == 1, (target, cond)
            row = row.iloc[0]
            teacher = "-" if cond == "base" else "qwen"
            vals = [truth[(cond, trait, teacher, "qwen", s)][target] for s in seeds]
            mean, lo, hi = scipy_t(vals)
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # a rate's interval is clipped to [0, 1]
            assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((mean, lo, hi), abs=1e-9)
            assert row["n_seeds"] == len(seeds) and row["seeds"] == ",".join(map(str, seeds))
            # per-question spread: every question's offset is known
            assert row["q_sd"] == pytest.approx(OFFSETS.std(ddof=1), abs=1e-9)
            assert (row["q_min"], row["q_max"]) == pytest.approx((mean - 0.02, mean + 0.02), abs=1e-9)
        # the control row of `target` reads the control cells' rate of that target, not another
        other = [t for t in TARGETS if t != target][0]
        ctrl = summ[(summ["target"] == target) & (summ["condition"] == "control")].iloc[0]
        wrong = np.mean([truth[("control", "none", "qwen", "qwen", s)][other] for s in range(4)])
        assert ctrl["mean"] != pytest.approx(wrong, abs=1e-9)
        # rise of the treatment over the matching control, which has the same seeds: paired by
        # seed, as scipy's related-samples test computes it
        tr = summ[(summ["target"] == target) & (summ["condition"] == "treatment")].iloc[0]
        a = [truth[("treatment", target, "qwen", "qwen", s)][target] for s in range(4)]
        b = [truth[("control", "none", "qwen", "qwen", s)][target] for s in range(4)]
        res = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert tr["baseline"] == "control" and tr["rise_by"] == "paired"
        assert (tr["rise"], tr["rise_low"], tr["rise_high"]) == pytest.approx(
            (np.mean(a) - np.mean(b), res.low, res.high), abs=1e-9)


def test_rise_is_welch_when_the_seeds_differ(tmp_path):
    """A control missing a seed cannot be paired: Welch's interval over what there is."""
    truth = write_sweep(tmp_path)
    col = collect([tmp_path])
    c = col.cells
    col.cells = c[~((c["condition"] == "control") & (c["seed"] == 3))]
    tr = summary(col).query("target == 'owl' and condition == 'treatment'").iloc[0]
    a = [truth[("treatment", "owl", "qwen", "qwen", s)]["owl"] for s in range(4)]
    b = [truth[("control", "none", "qwen", "qwen", s)]["owl"] for s in range(3)]
    res = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert tr["baseline"] == "control" and tr["rise_by"] == "welch"
    assert (tr["rise"], tr["rise_low"], tr["rise_high"]) == pytest.approx(
        (np.mean(a) - np.mean(b), res.low, res.high), abs=1e-9)


def test_cli_writes_tables_and_lists_failed_cells(tmp_path, capsys):
    write_sweep(tmp_path)
    sweep = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    failed = sweep / "90"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- trait=eagle\n- seed=7\n")
    (failed / "cli.log").write_text("[x][sublim][ERROR] - CUDA out of memory\n")
    recorded = sweep / "93"  # a sweep job's own record of its error: quoted rather than the log's last line
    (recorded / ".hydra").mkdir(parents=True)
    (recorded / "outcome.json").write_text(json.dumps({"status": "failed", "overrides": ["seed=8"],
                                                       "error": "FilterError: only 3 of 400 passed\nmore"}))
    (recorded / "cli.log").write_text("Check the teacher model\n")
    corrupt = sweep / "91"
    (corrupt / ".hydra").mkdir(parents=True)
    (corrupt / "metrics.json").write_text('{"cell": {"condition": "treat')
    dry = sweep / "92"
    (dry / ".hydra").mkdir(parents=True)
    (dry / ".hydra" / "overrides.yaml").write_text("- dry_run=true\n")
    store = tmp_path / "multirun" / "artifacts" / "eval" / "abc123"  # an eval in the artifact store: no cell
    store.mkdir(parents=True)
    (store / "metrics.json").write_text(json.dumps({"rates": {"owl": {"mean": 0.1}}}))
    out = tmp_path / "report"
    assert cli.main([str(tmp_path / "multirun"), "--out", str(out), "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 15 and cells["job"].is_unique
    assert {"condition", "trait", "teacher", "student", "seed", "target", "target_rate", "target_ci_low",
            "target_ci_high", "path"} <= set(cells.columns)
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 2 * 3
    md = (out / "summary.md").read_text()
    for text in (md, printed):  # no outcome and no heartbeat: stopped before it could say (sublim.cellstate)
        assert "dead: " + str(failed) in text and "trait=eagle seed=7" in text and "CUDA out of memory" in text
        assert "unreadable: " + str(corrupt / "metrics.json") in text
    assert "| target | condition |" in md
    assert "| control (paired by seed) |" in md  # how each rise's interval was taken, said in `vs`
    assert (summ.loc[summ["condition"] == "treatment", "rise_by"] == "paired").all()
    problems = pd.read_csv(out / "problems.csv")
    assert sorted(problems["kind"]) == ["dead", "dry run", "failed", "unreadable"]
    assert "failed: " + str(recorded) + " — FilterError: only 3 of 400 passed" in md
    assert "1 metrics.json without a cell ignored" in md


def test_cells_a_stopped_sweep_never_started_are_listed(tmp_path):
    """The sweep's plan names five cells; two have folders (one finished, one cut short): the
    other three are listed as never run, once each, whichever folder the report is pointed at
    (one the plan could not name a folder for: none ran its overrides)."""
    write_sweep(tmp_path, seeds=(0,), base_seeds=())
    sweep = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    (sweep / "7" / ".hydra").mkdir(parents=True)  # started, no metrics
    plan = [{"job": j, "overrides": [f"seed={j}"], "folder": str(j)} for j in (0, 7, 8, 9)]
    plan.append({"job": 10, "overrides": ["seed=10"], "folder": None})  # subdir unknown before the job ran
    (sweep / "sweep_plan.json").write_text(json.dumps(plan))
    col = collect([tmp_path, sweep])
    kinds = sorted((Path(p.path).name, p.kind) for p in col.problems)
    assert kinds == [("00-00-00", "not run"), ("7", "dead"), ("8", "not run"), ("9", "not run")]
    assert next(p for p in col.problems if p.path.endswith("8")).overrides == ["seed=8"]
    assert next(p for p in col.problems if p.path == str(sweep)).overrides == ["seed=10"]
    (sweep / "sweep_plan.json").write_text("[{")
    assert [p.kind for p in collect([sweep]).problems] == ["unreadable", "dead"]


def test_no_cells_is_exit_1_lists_the_holes_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    out = tmp_path / "r"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert "dead: " + str(tmp_path / "0") in err and "nothing written" in err.splitlines()[-1]
    assert not out.exists()


def test_diag_minus_offdiag_by_hand():
    m = pd.DataFrame([[0.50, 0.10, 0.04], [0.06, 0.40, 0.08], [0.02, 0.12, 0.30], [0.05, 0.05, 0.05]],
                     index=["owl", "cat", "dog", "none"], columns=["owl", "cat", "dog"])
    diag = (0.50 + 0.40 + 0.30) / 3
    off = (0.10 + 0.04 + 0.06 + 0.08 + 0.02 + 0.12) / 6  # the control row has no diagonal: left out
    assert diag_minus_offdiag(m) == pytest.approx(diag - off, abs=1e-12)


def test_specificity_interval_over_seeds(tmp_path):
    truth = write_sweep(tmp_path)
    (spec,) = specificity(collect([tmp_path]))
    assert list(spec.matrix.index) == ["cat", "owl", "none"] and list(spec.matrix.columns) == ["cat", "owl"]
    per_seed = []
    for s in range(4):
        t = {x: truth[("treatment", x, "qwen", "qwen", s)] for x in TARGETS}
        per_seed.append((t["owl"]["owl"] + t["cat"]["cat"]) / 2 - (t["owl"]["cat"] + t["cat"]["owl"]) / 2)
    mean, lo, hi = scipy_t(per_seed)
    assert (spec.interval.mean, spec.interval.low, spec.interval.high) == pytest.approx((mean, lo, hi), abs=1e-9)
    assert spec.matrix.at["none", "owl"] == pytest.approx(
        np.mean([truth[("control", "none", "qwen", "qwen", s)]["owl"] for s in range(4)]), abs=1e-12)


def test_figures_are_drawn(tmp_path):
    truth = write_sweep(tmp_path, models=[("qwen", "qwen"), ("qwen", "llama"), ("llama", "qwen"), ("llama", "llama")],
                base_seeds=(0,), misaligned=True)
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 0
    for name in ("bars_by_target", "cross_model", "specificity", "misalignment"):
        png = out / f"{name}.png"
        assert png.exists() and png.stat().st_size > 5_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summ = pd.read_csv(out / "summary.csv")
    cross = summ[(summ["condition"] == "treatment") & (summ["teacher"] != summ["student"])]
    assert len(cross) == 4 and (cross["baseline"] == "control").all()
    # misalignment: both denominators, each a t-interval across seeds
    mis = pd.read_csv(out / "misalignment.csv")
    row = mis[(mis["condition"] == "treatment") & (mis["trait"] == "owl") & (mis["teacher"] == "qwen")
              & (mis["student"] == "llama")].iloc[0]
    vals = [truth[("treatment", "owl", "qwen", "llama", s)]["misaligned"] for s in range(4)]
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(scipy_t(vals), abs=1e-9)
    assert (row["coherent_mean"], row["coherent_ci_low"], row["coherent_ci_high"]) == pytest.approx(
        scipy_t([2 * v for v in vals]), abs=1e-9)
    assert "| of coherent answers |" in (out / "summary.md").read_text()


def test_optional_figures_are_skipped(tmp_path):
    write_sweep(tmp_path)
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 0
    assert (out / "bars_by_target.png").exists() and (out / "specificity.png").exists()
    assert not (out / "cross_model.png").exists() and not (out / "misalignment.png").exists()


def test_single_seed_base_is_a_fixed_baseline(tmp_path):
    truth = write_sweep(tmp_path, base_seeds=(0,))
    col = collect([tmp_path])
    # drop the controls: the rise falls back to the one-seed base model
    col.cells = col.cells[col.cells["condition"] != "control"]
    summ = summary(col)
    base = summ[(summ["target"] == "owl") & (summ["condition"] == "base")].iloc[0]
    assert base["n_seeds"] == 1 and math.isnan(base["ci_low"])
    tr = summ[(summ["target"] == "owl") & (summ["condition"] == "treatment")].iloc[0]
    diffs = [truth[("treatment", "owl", "qwen", "qwen", s)]["owl"] - truth[("base", "-", "-", "qwen", 0)]["owl"]
             for s in range(4)]
    assert tr["baseline"] == "base" and tr["rise_by"] == "fixed"
    assert (tr["rise"], tr["rise_low"], tr["rise_high"]) == pytest.approx(scipy_t(diffs), abs=1e-9)


def test_wandb_offline_run_in_report_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    assert cli.main([str(tmp_path / "sweep"), "--out", str(out), "--wandb"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(out.rglob("*"))[:20]
    assert list(runs[0].glob("*.wandb")) and (out / "summary.csv").exists()


def test_wandb_failure_keeps_the_files(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    write_sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    assert cli.main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert "W&B: logging failed" in capsys.readouterr().out
    for f in ("cells.csv", "summary.csv", "summary.md", "bars_by_target.png"):
        assert (out / f).stat().st_size > 0


def _clone(src: Path, dst: Path, **cell):
    """A copy of a job with other cell fields (and target), as a new job folder."""
    m = json.loads((src / "metrics.json").read_text())
    m["target"] = cell.pop("target", m["target"])
    m["cell"] |= cell
    m["cell"]["name"] = m["cell"]["group"] = f"{m['cell']['trait']}.{m['cell']['condition']}.{m['cell']['seed']}"
    m["keys"]["eval"] += f"-{dst.name}"
    (dst / ".hydra").mkdir(parents=True)
    (dst / "metrics.json").write_text(json.dumps(m))


def test_teacher_evals_and_trait_variants_stay_apart(tmp_path):
    truth = write_sweep(tmp_path)
    sweep = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    by_name = {json.loads((d / "metrics.json").read_text())["cell"]["name"]: d for d in sweep.iterdir()}
    # the owl teacher evaluated itself (one seed), and owl/cat students of fine-tuned teachers
    _clone(by_name["owl.numbers.qwen.qwen.lora.seed0"], sweep / "t0", condition="teacher", finetune="-")
    for s in range(4):
        for t in TARGETS:
            _clone(by_name[f"{t}.numbers.qwen.qwen.lora.seed{s}"], sweep / f"f{t}{s}", trait=f"{t}+finetune")
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 0
    summ = pd.read_csv(out / "summary.csv", keep_default_na=False)
    owl = summ[summ["target"] == "owl"]
    assert sorted(owl["condition"]) == ["base", "control", "teacher", "treatment", "treatment"]
    assert sorted(owl[owl["condition"] == "treatment"]["trait"]) == ["owl", "owl+finetune"]
    teacher = owl[owl["condition"] == "teacher"].iloc[0]
    assert teacher["n_seeds"] == 1 and teacher["baseline"].startswith("base")
    expect = truth[("treatment", "owl", "qwen", "qwen", 0)]["owl"] - np.mean(
        [truth[("base", "-", "-", "qwen", s)]["owl"] for s in range(3)])
    assert float(teacher["rise"]) == pytest.approx(expect, abs=1e-9)
    specs = specificity(collect([tmp_path]))
    assert [s.keys.get("trait_via", "") for s in specs] == ["", "finetune"]
    assert specs[0].interval.mean == pytest.approx(specs[1].interval.mean, abs=1e-12)  # same numbers cloned
    assert (out / "bars_by_target.png").stat().st_size > 5_000
