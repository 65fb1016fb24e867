"""sublim-report on whatever job folders hold: malformed fields and non-finite values are named
(file and field) while every other cell is reported, nothing is written without a cell, the
interval level follows --confidence everywhere, the cross-model heatmap never averages settings,
labels are never boxes, an ASCII terminal never crashes it, and running or dead cells say so."""
import io
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from test_report import write_sweep

from sublim.cellstate import HEARTBEAT
from sublim.report import cli, fonts
from sublim.report import figures as figs
from sublim.report.collect import collect
from sublim.report.markdown import render
from sublim.report.summarise import gaps, misalignment, specificity, summary, targets_of

SWEEP = Path("multirun") / "2026-01-01" / "00-00-00"


def by_name(root: Path) -> dict[str, Path]:
    return {json.loads((d / "metrics.json").read_text())["cell"]["name"]: d
            for d in (root / SWEEP).iterdir() if (d / "metrics.json").exists()}


def edit(job: Path, change) -> Path:
    m = json.loads((job / "metrics.json").read_text())
    change(m)
    (job / "metrics.json").write_text(json.dumps(m))  # NaN and Infinity as Python's json writes them
    return job / "metrics.json"


def one(problems, kind: str):
    hits = [p for p in problems if p.kind == kind]
    assert len(hits) == 1, [p.line() for p in problems]
    return hits[0]


def t90(values, confidence=0.95):
    v = np.asarray(values, float)
    lo, hi = stats.t.interval(confidence, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return v.mean(), max(lo, 0.0), min(hi, 1.0)


def everything(col, confidence=0.95) -> str:
    """Every table and the Markdown, as the CLI computes them (no figures)."""
    summ = summary(col, targets_of(col), confidence)
    specs, mis = specificity(col, confidence), misalignment(col, confidence)
    return render(col, summ, specs, mis, gaps(col, summ), {}, Path("."), confidence)


VICTIM = "owl.numbers.qwen.qwen.lora.seed1"
MALFORMED = [  # (what, change, field named, cell set aside)
    ("rates as numbers", lambda m: m.update(rates={c: r["mean"] for c, r in m["rates"].items()}),
     "rates.owl: expected an object", False),
    ("keys as a list", lambda m: m.update(keys=["ev"]), "keys: expected an object", False),
    ("eval key a list", lambda m: m["keys"].update(eval=[1]), "keys.eval: expected a string", False),
    ("no cell name", lambda m: m["cell"].pop("name"), "cell.name: expected a non-empty string, got null", True),
    ("cell a list", lambda m: m.update(cell=[1]), "cell: expected an object, got a list", True),
    ("trait a list", lambda m: m["cell"].update(trait=["owl"]), "cell.trait: expected a string", True),
    ("seed a word", lambda m: m["cell"].update(seed="one"), "cell.seed: expected an integer", True),
    ("seed 1e300", lambda m: m["cell"].update(seed=1e300), "cell.seed: expected an integer", True),
    ("seed 2**63", lambda m: m["cell"].update(seed=2**63), "cell.seed: expected an integer", True),
    ("target a number", lambda m: m.update(target=3), "target: expected a string or null", True),
    ("target_rate a string", lambda m: m.update(target_rate="high"), "target_rate: expected an object", False),
    ("mean a string", lambda m: m["rates"]["owl"].update(mean="high"), "rates.owl.mean: expected a number", False),
    ("mean out of range", lambda m: m["rates"]["owl"].update(mean=3.5), "rates.owl.mean: expected a rate", False),
    ("mean missing", lambda m: m["rates"]["cat"].pop("mean"), "rates.cat: no 'mean'", False),
    ("per_question an object", lambda m: m.update(per_question={"owl": 1}), "per_question: expected a list", False),
    ("per_question entries", lambda m: m["per_question"].__setitem__(0, "x"), "per_question[0]: expected an object",
     False),
    ("per_question value", lambda m: m["per_question"][2].update(owl=[0.5]), "per_question[2].owl: expected a number",
     False),
    ("unmatched_top a list", lambda m: m.update(unmatched_top=[1]), "unmatched_top: expected an object", False),
    ("n_questions a word", lambda m: m.update(n_questions="five"), "n_questions: expected a non-negative", False),
    ("confidence 7", lambda m: m.update(confidence=7), "confidence: expected a number between 0 and 1", False),
    ("filter a list", lambda m: m.update(filter=[]), "filter: expected an object", False),
    ("filter count", lambda m: m.update(filter={"n_kept": "x"}), "filter.n_kept: expected an integer", False),
    ("misaligned_rate a list", lambda m: m.update(misaligned_rate=[0.1]), "misaligned_rate: expected an object",
     False),
    ("no rates at all", lambda m: (m.pop("rates"), m.pop("misaligned_rate", None)),
     "neither a 'rates' object nor a 'misaligned_rate'", True),
]


@pytest.mark.parametrize("what,change,field,set_aside", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_field_is_named_and_the_other_cells_are_reported(tmp_path, what, change, field, set_aside):
    write_sweep(tmp_path, seeds=(0, 1), base_seeds=(0,), misaligned=True)
    mfile = edit(by_name(tmp_path)[VICTIM], change)
    col = collect([tmp_path])
    p = one(col.problems, "invalid")
    assert p.path == str(mfile) and field in p.detail, p.line()
    assert p.line().startswith(f"invalid: {mfile}") and "seed=1" in p.line()
    assert len(col.problems) == 1
    assert len(col.cells) == 7 - set_aside and (VICTIM in set(col.cells["name"])) != set_aside
    assert ("cell set aside" in p.detail) == set_aside
    md = everything(col)
    assert f"- invalid: {mfile}" in md
    owl_t = summary(col, ["owl"]).query("condition == 'treatment'").iloc[0]
    assert 1 <= owl_t["n_seeds"] <= 2 and owl_t["n_nonfinite"] == 0


def test_odd_folder_content_never_stops_the_report(tmp_path):
    """Files that are folders, bytes that are not UTF-8, JSON too deep to parse, every kind of
    malformed field at once: each is a problem line, the rest is reported and drawn."""
    write_sweep(tmp_path, models=[("qwen", "qwen"), ("qwen", "llama")], base_seeds=(0,), misaligned=True)
    sweep = tmp_path / SWEEP
    good = by_name(tmp_path)
    for job, (_, change, _, _) in zip(list(good.values())[1::2], MALFORMED):
        edit(job, change)

    def folder(name: str) -> Path:
        d = sweep / name
        (d / ".hydra").mkdir(parents=True)
        return d

    (folder("dir") / "metrics.json").mkdir()  # a folder where the file should be
    (folder("bytes") / "metrics.json").write_bytes(b'{"cell": "\xff\xfe"}')  # not UTF-8
    (folder("deep") / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json
    for i, v in enumerate(["null", "[]", '"x"', '{"cell": null}', "NaN", '{"cell": {"condition": "t", "name": "n"}}']):
        (folder(f"v{i}") / "metrics.json").write_text(v)
    (folder("outcome") / "outcome.json").write_text("[1, 2]")
    (folder("status") / "outcome.json").write_text('{"status": 5, "error": {"a": 1}}')
    shutil.rmtree(folder("ovdir") / ".hydra")
    (sweep / "ovdir" / ".hydra" / "overrides.yaml").mkdir(parents=True)
    (folder("logdir") / "cli.log").mkdir()
    (folder("celljson") / "cell.json").write_text("{")
    (folder("jobjson") / HEARTBEAT).write_text('{"host": 1, "pid": "x"}')
    (good["owl.numbers.qwen.qwen.lora.seed0"] / ".hydra" / "config.yaml").write_bytes(b"\xff\x00garbage: [")
    (good["cat.numbers.qwen.qwen.lora.seed0"] / ".hydra" / "config.yaml").write_text(
        "when: 2024-01-01\nlist: [{1: a, b: c}]\nfinetune: {lora_r: 8}\n")
    (sweep / "sweep_plan.json").write_text(json.dumps([{"job": 0, "overrides": [], "folder": 5}]))
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 0
    problems = pd.read_csv(out / "problems.csv")
    assert problems["kind"].value_counts().to_dict() == {"invalid": 13 + 6, "dead": 4, "unreadable": 3, "failed": 2,
                                                         "no eval": 1}
    assert len(pd.read_csv(out / "cells.csv")) == 26 - sum(c[3] for c in MALFORMED[:13])  # 13 malformed cells
    md = (out / "summary.md").read_text()
    assert "unreadable: " + str(sweep / "sweep_plan.json") in md and "RecursionError" in md
    assert {"bars_by_target.png", "specificity.png", "misalignment.png"} <= {p.name for p in out.glob("*.png")}


def test_names_that_are_not_text(tmp_path, capsys):
    """A folder name whose bytes are not UTF-8 and a lone surrogate escaped in the JSON: escapes in
    every table and line, never an encoding error."""
    write_sweep(tmp_path, seeds=(0, 1), base_seeds=(0,))
    sweep = tmp_path / SWEEP
    os.rename(by_name(tmp_path)[VICTIM], os.fsencode(sweep) + b"/\xff")
    os.makedirs(os.fsencode(sweep) + b"/\xfe/.hydra")
    mfile = by_name(tmp_path)["cat.numbers.qwen.qwen.lora.seed0"] / "metrics.json"
    mfile.write_text(mfile.read_text().replace('"name": "cat.', '"name": "\\ud800cat.'))
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb"]) == 0
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 7 and cells["path"].str.endswith("/\\xff").any()
    assert cells["name"].str.startswith("\\ud800cat.").any()
    problems = pd.read_csv(out / "problems.csv")
    assert problems.set_index("kind").at["dead", "path"].endswith("/\\xfe")
    assert "\\xfe" in capsys.readouterr().out


# -- non-finite values ---------------------------------------------------------------------------------
def test_a_nan_seed_is_named_and_left_out_of_the_mean(tmp_path):
    truth = write_sweep(tmp_path)
    jobs = by_name(tmp_path)
    mfile = edit(jobs[VICTIM], lambda m: (m["rates"]["owl"].update(mean=math.nan),
                                          m["target_rate"].update(mean=math.nan)))
    inf = edit(jobs["none.numbers.qwen.qwen.lora.seed2"], lambda m: m["rates"]["cat"].update(ci_high=math.inf))
    col = collect([tmp_path])
    lines = sorted(p.line() for p in col.problems)
    assert len(lines) == 2 and all(p.kind == "non-finite" for p in col.problems)
    assert lines[0].startswith(f"non-finite: {inf}") and "rates.cat.ci_high = inf" in lines[0]
    assert lines[1].startswith(f"non-finite: {mfile}") and "rates.owl.mean = nan" in lines[1]
    assert "target_rate.mean = nan" in lines[1] and "left out of every mean" in lines[1]
    assert len(col.cells) == 15  # still a cell: its other rates count (cat, as a treatment's off-diagonal)
    row = summary(col, ["owl"]).query("condition == 'treatment'").iloc[0]
    assert row["n_seeds"] == 3 and row["n_nonfinite"] == 1 and row["seeds"] == "0,2,3"
    expect = t90([truth[("treatment", "owl", "qwen", "qwen", s)]["owl"] for s in (0, 2, 3)])
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(expect, abs=1e-9)
    assert np.isfinite(row["rise"]) and row["rise_by"] == "welch"  # the control has seed 1, the treatment not
    assert "| 3 (0,2,3) + 1 non-finite |" in everything(col)
    assert math.isnan(col.rates.merge(col.cells[["job", "name"]]).query(
        "name == 'none.numbers.qwen.qwen.lora.seed2' and candidate == 'cat'")["ci_high"].iloc[0])


def test_one_nan_of_two_seeds_says_so_rather_than_one_seed(tmp_path):
    write_sweep(tmp_path, seeds=(0, 1), base_seeds=(0,), misaligned=True)
    jobs = by_name(tmp_path)
    edit(jobs[VICTIM], lambda m: m["rates"]["owl"].update(mean=math.nan))
    edit(jobs["cat.numbers.qwen.qwen.lora.seed1"], lambda m: m["misaligned_rate"].update(mean=math.inf))
    col = collect([tmp_path])
    md = everything(col)
    assert "one seed: no CI (1 non-finite left out)" in md and "| 1 (0) + 1 non-finite |" in md
    mis = misalignment(col).query("condition == 'treatment' and trait == 'cat'").iloc[0]
    assert mis["n_seeds"] == 1 and mis["n_nonfinite"] == 1 and np.isfinite(mis["mean"])


def test_nan_per_question_values_are_named_and_skipped(tmp_path):
    write_sweep(tmp_path)
    mfile = edit(by_name(tmp_path)[VICTIM], lambda m: m["per_question"][0].update(owl=-math.inf))
    col = collect([tmp_path])
    p = one(col.problems, "non-finite")
    assert p.path == str(mfile) and "per_question[0].owl = -inf" in p.detail
    job = col.cells.set_index("name").at[VICTIM, "job"]
    assert len(col.questions.query(f"job == {job} and candidate == 'owl'")) == 4


def test_a_one_question_eval_has_no_interval_and_that_is_no_problem(tmp_path):
    write_sweep(tmp_path)

    def one_question(m):
        m["n_questions"] = 1
        for r in m["rates"].values():
            r["ci_low"] = r["ci_high"] = math.nan

    edit(by_name(tmp_path)[VICTIM], one_question)
    assert not collect([tmp_path]).problems


# -- nothing to report --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_no_cell_writes_nothing_and_exits_non_zero(tmp_path, capsys, kind):
    path = tmp_path / "sweep"
    if kind == "empty":
        path.mkdir()
    assert cli.main([str(path), "--no-wandb"]) == 1
    out, err = capsys.readouterr()
    assert not out and err.splitlines()[-1].startswith("sublim-report: no cells found under") \
        and err.splitlines()[-1].endswith("nothing written")
    assert len(err.splitlines()) == (1 if kind == "empty" else 2)  # the missing path is named above it
    assert list(tmp_path.rglob("*")) == ([path] if kind == "empty" else [])


# -- the interval level ------------------------------------------------------------------------------
def _capture(monkeypatch) -> list:
    """The figures as saved: their Figure objects (closed but intact)."""
    seen = []
    save = figs._save

    def keep(fig, path):
        out = save(fig, path)
        seen.append((path.name, fig))
        return out

    monkeypatch.setattr(figs, "_save", keep)
    return seen


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(match=Text) if t.get_text()]


def test_confidence_sets_every_interval_header_title_and_note(tmp_path, monkeypatch):
    truth = write_sweep(tmp_path, models=[("qwen", "qwen"), ("qwen", "llama")], base_seeds=(0,), misaligned=True)
    seen = _capture(monkeypatch)
    out = tmp_path / "report"
    assert cli.main([str(tmp_path), "--out", str(out), "--no-wandb", "--confidence", "0.9"]) == 0
    md = (out / "summary.md").read_text()
    assert "95 %" not in md and "90 % CI across seeds" in md and "90 % t-interval" in md
    assert sorted(name for name, _ in seen) == ["bars_by_target.png", "cross_model.png", "misalignment.png",
                                               "specificity.png"]
    for name, fig in seen:
        text = " ".join(_texts(fig))
        assert "90 %" in text and "95 %" not in text, (name, text)
    row = pd.read_csv(out / "summary.csv").query("target == 'owl' and condition == 'treatment' and "
                                                 "teacher == 'qwen' and student == 'qwen'").iloc[0]
    expect = t90([truth[("treatment", "owl", "qwen", "qwen", s)]["owl"] for s in range(4)], 0.9)
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(expect, abs=1e-9)


def test_confidence_outside_0_1_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([str(tmp_path), "--confidence", "95"])
    assert e.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


# -- cross-model heatmaps, one per setting -------------------------------------------------------------
def rank_grid(root: Path) -> dict:
    """Two teachers x two students x LoRA ranks 2 and 8, control and owl treatment, seeds 0 and 1;
    the owl rate differs by rank, so an average over ranks would show."""
    owl = {}
    grid = itertools.product(("qwen", "llama"), ("qwen", "llama"), (2, 8), ("none", "owl"), (0, 1))
    for job, (t, s, rank, trait, seed) in enumerate(grid):
        v = 0.05 + 0.01 * seed + ((0.3 if t == s else 0.0) + (0.1 if rank == 8 else 0.0) if trait == "owl" else 0.0)
        owl[(t, s, rank, trait, seed)] = v
        group = f"{trait}.numbers.{t}.{s}.lora"
        rates = {"owl": v, "cat": 0.1, "none": 0.2}
        m = {"cell": {"condition": "treatment" if trait == "owl" else "control", "group": group,
                      "name": f"{group}.seed{seed}", "trait": trait, "domain": "numbers", "teacher": t, "student": s,
                      "finetune": "lora", "seed": seed},
             "keys": {"eval": f"ev{job}"}, "target": "owl" if trait == "owl" else None,
             "rates": {c: {"mean": r, "ci_low": r, "ci_high": r} for c, r in rates.items()},
             "per_question": [rates], "n_questions": 1}
        d = root / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
        (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"seed": seed, "trait": {"name": trait}, "teacher": {"name": t}, "student": {"name": s},
             "finetune": {"method": "lora", "lora_r": rank}}))
    return owl


def test_cross_model_draws_one_heatmap_per_setting(tmp_path, monkeypatch):
    owl = rank_grid(tmp_path)
    summ = summary(collect([tmp_path]), ["owl"])
    seen = _capture(monkeypatch)
    assert figs.cross_model(summ, tmp_path / "cross.png")
    (_, fig), = seen
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    for rank in (2, 8):
        (ax,) = [ax for ax in panels if f"finetune.lora_r={rank}" in ax.get_title()]
        teachers = [t.get_text() for t in ax.get_yticklabels()]
        students = [t.get_text() for t in ax.get_xticklabels()]
        img = np.asarray(ax.images[0].get_array())
        for i, t in enumerate(teachers):
            for j, s in enumerate(students):
                rise = np.mean([owl[(t, s, rank, "owl", sd)] - owl[(t, s, rank, "none", sd)] for sd in (0, 1)])
                assert img[i, j] == pytest.approx(rise, abs=1e-12), (rank, t, s)


# -- labels no font can draw ------------------------------------------------------------------------------
def _renamed(root: Path, old: str, new: str) -> None:
    for mfile in root.rglob("metrics.json"):
        text = mfile.read_text().replace(f'"{old}"', f'"{new}"').replace(f"{old}.numbers", f"{new}.numbers")
        mfile.write_text(text, encoding="utf-8")


def test_a_name_no_font_has_is_escaped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "_fallbacks", lambda: ())  # as on a machine without a CJK font
    write_sweep(tmp_path)
    _renamed(tmp_path, "owl", "鸟")
    seen = _capture(monkeypatch)
    summ = summary(collect([tmp_path]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figs.bars(summ, tmp_path / "bars.png")
    messages = [str(w.message) for w in caught]
    assert any(issubclass(w.category, fonts.MissingGlyphWarning) and "\\u9e1f" in str(w.message) for w in caught)
    assert not any("missing from font" in m for m in messages), messages  # matplotlib's boxes
    (_, fig), = seen
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert "\\u9e1f" in ticks and "鸟" not in " ".join(_texts(fig))


def test_a_name_an_installed_font_has_is_drawn_with_it(tmp_path, monkeypatch):
    name = "owl⌚"  # U+231A: not in DejaVu Sans, in STIX (bundled with matplotlib)
    families, uncovered = fonts.plan([name])
    if uncovered or len(families) < 2:
        pytest.skip("no installed font covers U+231A")
    write_sweep(tmp_path)
    _renamed(tmp_path, "owl", name)
    seen = _capture(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figs.bars(summary(collect([tmp_path])), tmp_path / "bars.png")
    assert not [str(w.message) for w in caught if "font" in str(w.message).lower()]
    (_, fig), = seen
    (tick,) = [t for ax in fig.axes for t in ax.get_xticklabels() if t.get_text() == name]
    assert tick.get_fontfamily() == families


def test_a_dollar_in_a_name_is_text_not_mathtext(tmp_path):
    write_sweep(tmp_path)
    _renamed(tmp_path, "owl", "$\\\\frac{$")  # unparsable as mathtext
    assert figs.bars(summary(collect([tmp_path])), tmp_path / "bars.png").stat().st_size > 5_000


# -- an ASCII terminal ---------------------------------------------------------------------------------
class AsciiOnly(io.StringIO):
    """A terminal that can show ASCII only and says so (no reconfigure: the report must cope)."""

    encoding = "ascii"

    def write(self, s):
        s.encode("ascii")  # raises UnicodeEncodeError as a real ascii stream would
        return super().write(s)


def test_printing_on_an_ascii_terminal(tmp_path, monkeypatch):
    write_sweep(tmp_path)
    _renamed(tmp_path, "owl", "鸟")
    (tmp_path / "failed" / ".hydra").mkdir(parents=True)  # a problem line: "dead: ... — ..."
    out, err = AsciiOnly(), AsciiOnly()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(fonts, "_fallbacks", lambda: ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fonts.MissingGlyphWarning)
        assert cli.main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-wandb"]) == 0
    text = out.getvalue()
    assert "\\u9e1f" in text and "dead: " in text and " -- " in text and "| 4 (0,1,2,3) |" in text
    assert "鸟" in (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")  # the file keeps UTF-8


def test_pythonioencoding_ascii_end_to_end(tmp_path):
    write_sweep(tmp_path, seeds=(0, 1), base_seeds=(0,))
    _renamed(tmp_path, "cat", "قطة")  # Arabic
    env = os.environ | {"PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-m", "sublim.report.cli", str(tmp_path), "--no-wandb"], capture_output=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    r.stdout.decode("ascii")
    assert b"\\u0642" in r.stdout and b"Traceback" not in r.stderr


# -- running and dead cells -----------------------------------------------------------------------------
def test_running_and_dead_cells_are_reported_as_such(tmp_path):
    write_sweep(tmp_path, seeds=(0,), base_seeds=())
    sweep = tmp_path / SWEEP
    now = time.time()
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                         text=True).stdout.strip()
    for name, hb_pid in (("running", os.getpid()), ("dead", int(pid))):
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / HEARTBEAT).write_text(json.dumps({"host": socket.gethostname(), "pid": hb_pid,
                                                          "started": now - 30, "updated": now}))
    again = by_name(tmp_path)["owl.numbers.qwen.qwen.lora.seed0"]  # re-run into its folder, running now
    (again / HEARTBEAT).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": now}))
    col = collect([tmp_path])
    kinds = {Path(p.path).name: (p.kind, p.detail) for p in col.problems}
    assert kinds["running"][0] == "running" and f"pid {os.getpid()}" in kinds["running"][1]
    assert kinds["dead"][0] == "dead" and f"pid {pid} is gone" in kinds["dead"][1]
    assert kinds[again.name][0] == "running" and "earlier metrics.json is reported" in kinds[again.name][1]
    assert len(col.cells) == 3
    md = everything(col)
    assert "problems: 3 (1 dead, 2 running)" in md and f"- running: {sweep / 'running'}" in md


# -- any JSON anywhere in metrics.json -------------------------------------------------------------------
TEXT = st.text(st.characters() | st.sampled_from(["\ud800", "\udcff"]), max_size=6)  # lone surrogates too
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                    max_leaves=6)
DROP = object()
PATHS = ["", "cell", "cell.condition", "cell.name", "cell.seed", "cell.trait", "cell.student", "cell.group",
         "keys", "keys.eval", "target", "target_rate", "target_rate.mean", "rates", "rates.owl", "rates.owl.mean",
         "rates.owl.ci_low", "rates.none", "rates.new", "per_question", "per_question.0", "per_question.0.owl",
         "n_questions", "n_answers", "confidence", "unmatched_top", "filter", "filter.n_kept", "filter.reject_rate",
         "misaligned_rate", "misaligned_rate.mean", "misaligned_rate_coherent", "misaligned_rate_coherent.mean"]


def _put(m, path: str, value):
    if not path:
        return {} if value is DROP else value
    *head, last = path.split(".")
    node = m
    for k in head:
        node = node[int(k)] if isinstance(node, list) and k.isdigit() and int(k) < len(node) else \
            node.get(k) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None) if value is DROP else node.__setitem__(last, value)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node) and value is not DROP:
        node[int(last)] = value
    return m


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("hyp")
    write_sweep(root, seeds=(0, 1), base_seeds=(0,), misaligned=True)
    return root


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), JSON | st.just(DROP)), min_size=1, max_size=4))
def test_any_json_in_any_metrics_field_never_crashes_the_report(small_sweep, changes):
    victim = by_name(small_sweep)[VICTIM]
    mfile = victim / "metrics.json"
    original = mfile.read_text()
    try:
        m = json.loads(original)
        for path, value in changes:
            m = _put(m, path, value)
        mfile.write_text(json.dumps(m))
        col = collect([small_sweep])
        assert len(col.cells) >= 6  # every other cell is reported
        assert all(str(victim) in p.line() for p in col.problems), [p.line() for p in col.problems]
        everything(col)
    finally:
        mfile.write_text(original)
