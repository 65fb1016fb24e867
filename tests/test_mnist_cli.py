"""`sublim experiment=mnist` through the real entrypoint: cached, logged, files in the job folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

SUBLIM = str(Path(sys.executable).with_name("sublim"))


def test_mnist_through_the_entrypoint_is_cached(tmp_path):
    args = [SUBLIM, "experiment=mnist", "mnist.n_seeds=2", "mnist.student_steps=200", "mnist.teacher_epochs=3",
            "mnist.eval_every=100", f"paths.artifacts={tmp_path / 'a'}"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    r1 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r1'}"], capture_output=True, text=True, env=env)
    assert r1.returncode == 0, r1.stderr[-2000:]
    m = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert set(m["arms"]) == {"same_init", "different_init"} and len(m["arms"]["same_init"]["per_seed"]) == 2
    assert (tmp_path / "r1" / "mnist.png").stat().st_size > 5000
    assert list((tmp_path / "r1" / "wandb").glob("offline-run-*"))
    r2 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r2'}", "logger=none"], capture_output=True, text=True,
                        env=env)
    assert r2.returncode == 0 and "  hit" in r2.stdout
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text()) == m
