"""`sweep=defences_tiny` cut down to 2 seeds, 3 arms and small sizes (the default suite's version of
`make defences`): every arm's owl and control cells run through the real sweep, and sublim-report
prints the effect-remaining table with each arm paired against its own control. At these sizes only
the plumbing and the arithmetic are checked; the full grid's figures are in the README."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BIN = Path(sys.executable).parent
ARMS = ["none", "shuffle_within", "train_non_divergent"]
SMALL = ["seed=0,1", "teacher.reference.steps=120", "student.reference.steps=120",
         "teacher.reference.corpus_size=3000", "student.reference.corpus_size=3000", "trait.n_examples=200",
         "domain.n_prompts=300", "filter.n_keep=300", "finetune.epochs=1", "eval.n_samples=2"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    work = tmp_path_factory.mktemp("defences")
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "SUBLIM_LIVE": "0"}
    r = subprocess.run([str(BIN / "sublim"), "--multirun", "sweep=defences_tiny", f"defence={','.join(ARMS)}",
                        "logger=none", f"paths.artifacts={work / 'artifacts'}", f"hydra.sweep.dir={work / 'grid'}",
                        *SMALL], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                       timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:]
    return work


def test_each_arm_runs_its_owl_and_control_cells(grid):
    jobs = list((grid / "grid").glob("*/metrics.json"))
    assert len(jobs) == len(ARMS) * 2 * 2


def test_the_report_prints_the_effect_remaining_of_each_arm_over_its_own_control(grid):
    r = subprocess.run([str(BIN / "sublim-report"), str(grid / "grid"), "--no-wandb", "--out", str(grid / "report")],
                       capture_output=True, text=True, cwd=grid, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "## Effect remaining under each defence" in r.stdout
    table = pd.read_csv(grid / "report" / "defences.csv")
    assert sorted(table["defence"]) == sorted(ARMS)
    assert (table["n_seeds"] == 2).all()  # each arm paired with its own control over both seeds
    none = table.set_index("defence").loc["none"]
    for arm in ARMS[1:]:
        row = table.set_index("defence").loc[arm]
        # a defined fraction is the arm's mean rise over the undefended one; else it is reported undefined
        if pd.notna(row["remaining"]):
            assert row["remaining"] == pytest.approx(row["rise"] / none["rise"])
