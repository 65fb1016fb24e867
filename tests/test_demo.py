"""The CPU demo (`make demo`), cut down to 2 seeds and small sizes: every arm runs through the real
sweep, the summary agrees with sublim-report, cells are in W&B, and a re-run computes nothing.

Whether the effect shows at full size is what `make demo` itself prints (README: measured figures);
at these sizes only the plumbing and the arithmetic are checked.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sublim.cache import Store
from sublim.demo import ARMS, collect, summarise
from sublim.report.collect import collect as collect_jobs
from sublim.report.summarise import summary
from sublim.stats import RATE, t_interval

BIN = Path(sys.executable).parent
SMALL = ["seed=0,1", "teacher.reference.steps=120", "student.reference.steps=120",
         "teacher.reference.corpus_size=3000", "student.reference.corpus_size=3000", "trait.n_examples=200",
         "domain.n_prompts=300", "filter.n_keep=300", "finetune.epochs=1", "eval.n_samples=2"]


def demo_sweep(work: Path) -> subprocess.CompletedProcess:
    args = [str(BIN / "sublim"), "--multirun", "sweep=demo", f"paths.artifacts={work / 'artifacts'}",
            f"hydra.sweep.dir={work / 'demo'}", *SMALL]
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    for k in ("SUBLIM_LIVE", "SUBLIM_VERBOSE"):
        env.pop(k, None)
    # stdout and stderr into one pipe, as `make demo > demo.log 2>&1` writes them
    return subprocess.run(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=1200)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    r = demo_sweep(work)
    assert r.returncode == 0, r.stdout[-3000:]
    (work / "demo.log").write_text(r.stdout)
    return work


def test_the_grid_prints_one_line_per_cell_event_and_the_summary_each_cell_logs_in_its_folder(demo):
    out = (demo / "demo.log").read_text()
    lines = out.splitlines()
    cells = 2 * len(ARMS)
    assert "\r" not in out and len(lines) < 200 * cells / 30  # make demo's 30 cells: under 200 lines
    finished = [ln for ln in lines if " finished: arm=" in ln]
    assert len(finished) == cells and all(re.search(r" owl \d+\.\d% \[", ln) for ln in finished), out
    assert "plan for" not in out and "MISS" not in out  # the jobs' own output is in their logs
    assert lines[-1] == f"full report: sublim-report {demo / 'demo'}" and re.match(r"owl +base +reference ", lines[-7])
    for job in range(cells):
        assert (demo / "demo" / str(job) / "cli.log").read_text().count("plan for ") == 1


def test_every_arm_and_seed_has_metrics_and_a_wandb_run_grouped_by_arm(demo):
    cells = [json.loads(p.read_text()) for p in (demo / "demo").glob("*/metrics.json")]
    assert len(cells) == 2 * len(ARMS)
    groups: dict[str, set] = {}
    for m in cells:
        assert Path(m["wandb_dir"]).name.startswith("offline-run-")
        groups.setdefault(m["cell"]["group"], set()).add(m["cell"]["seed"])
        assert "owl" in m["rates"] and "owl" in m["sampled"]["rates"]  # exact log-prob and sampled preference
    assert len(groups) == len(ARMS) and all(seeds == {0, 1} for seeds in groups.values())


def test_summary_table_and_sublim_report_give_the_same_numbers(demo, tmp_path):
    exact, _, _ = collect(demo / "demo", "owl")
    rep = summary(collect_jobs([demo / "demo"]), ["owl"])
    arm_rows = {("base", "reference"): "base", ("teacher", "reference"): "teacher",
                ("treatment", "reference"): "student", ("control", "reference"): "control",
                ("treatment", "reference-other-init"): "cross", ("base", "reference-other-init"): "cross_base"}
    assert len(rep) == len(ARMS)
    for row in rep.itertuples():
        arm = arm_rows[(row.condition, row.student)]
        iv = t_interval(list(exact[arm].values()), bounds=RATE)
        assert (row.mean, row.ci_low, row.ci_high) == pytest.approx((iv.mean, iv.low, iv.high), rel=1e-12)
    text = summarise(demo / "demo", "owl", shift=False)
    table_mean = float(next(ln for ln in text.splitlines() if ln.startswith("control student")).split()[2])
    control = rep[rep["condition"] == "control"].iloc[0]
    assert table_mean == pytest.approx(100 * control["mean"], abs=0.006)  # printed with 2 decimals
    r = subprocess.run([str(BIN / "sublim-report"), str(demo / "demo"), "--out", str(tmp_path / "report")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def test_demo_summary_prints_teacher_quality_and_writes_a_figure(demo):
    r = subprocess.run([str(BIN / "sublim-demo-summary"), str(demo / "demo")], capture_output=True, text=True,
                       timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "well-formed, teacher" in r.stdout and "well-formed, reference" in r.stdout
    shift = next(ln for ln in r.stdout.splitlines() if "log-prob shift" in ln)
    assert math.isfinite(float(shift.split(":")[1].split()[0]))
    assert (demo / "demo" / "demo.png").stat().st_size > 10_000 and (demo / "demo" / "demo.md").exists()


def test_a_rerun_is_all_cache_hits_and_logs_no_duplicate_wandb_runs(demo):
    before = len(Store(demo / "artifacts").events())
    runs = sorted(demo.glob("demo/*/wandb/offline-run-*"))
    r = demo_sweep(demo)
    assert r.returncode == 0, r.stdout[-3000:]
    new = Store(demo / "artifacts").events()[before:]
    assert new and {e["event"] for e in new} == {"hit"}
    assert sorted(demo.glob("demo/*/wandb/offline-run-*")) == runs and len(runs) == 2 * len(ARMS)
