"""A whole cell from the command line with its teacher served by a real OpenAI-compatible server
(`transformers serve` on loopback, the tiny model) and a local student: every stage runs, and the
API key's marker value is in none of the files the run wrote (artifacts, the job folder, the
offline W&B run, the server's log) nor in its output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from served import Served

pytestmark = pytest.mark.openai
SUBLIM = str(Path(sys.executable).with_name("sublim"))
KEY_ENV = "SUBLIM_TEST_SERVED_KEY"
KEY = "sk-cell-MARKER-5e2b7d90"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    s = Served(tiny_model_dir, log_path=tmp_path_factory.mktemp("serve") / "serve.log").start()
    yield s
    s.stop()


def test_a_served_teacher_cell_runs_and_writes_the_key_nowhere(server, tiny_model_dir, tmp_path):
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "OMP_NUM_THREADS": "1",
                        "HF_HUB_OFFLINE": "1", KEY_ENV: KEY}
    (tmp_path / "wandb").mkdir()
    argv = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
            f"hydra.run.dir={tmp_path / 'run'}", "logger=wandb", "domain.n_prompts=24", "filter.n_keep=8",
            "filter.min_keep=1", "filter.format=lenient", "sampler.max_new_tokens=24",
            f"teacher.served.base_url={server.base_url}", "teacher.served.server=other",
            f"teacher.served.api_key_env={KEY_ENV}", "sampler.openai.max_in_flight=4"]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    spec = json.loads(next((tmp_path / "a" / "sample").glob("*/spec.json")).read_text())
    assert spec["spec"]["backend"] == "openai" and spec["spec"]["teacher"]["weights"].startswith("served:other/")
    rows = [json.loads(x) for x in next((tmp_path / "a" / "sample").glob("*/samples.jsonl")).read_text().splitlines()]
    assert sorted(r_["i"] for r_ in rows) == list(range(24))
    assert list((tmp_path / "a" / "eval").glob("*/metrics.json"))
    written = [p for p in tmp_path.rglob("*") if p.is_file()] + [server.log_path]
    assert len(written) > 20
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in r.stdout + r.stderr
