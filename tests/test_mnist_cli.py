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
    assert set(m["keys"]) == {"mnist"} and m["wandb_dir"] and m["wandb"]["mode"] == "offline"
    r2 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r2'}", "logger=none"], capture_output=True, text=True,
                        env=env)
    assert r2.returncode == 0 and "  hit" in r2.stdout
    assert "== MNIST auxiliary-logit distillation, 2 seeds" in r2.stdout and "   same_init " in r2.stdout
    logged = ("wandb", "wandb_dir")
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text()) == {k: v for k, v in m.items() if k not in logged}
    # the same folder again: the result is cached and already logged there, so no second W&B run
    r3 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r1'}"], capture_output=True, text=True, env=env)
    assert r3.returncode == 0 and "  hit" in r3.stdout
    assert len(list((tmp_path / "r1" / "wandb").glob("offline-run-*"))) == 1


def test_mnist_data_is_keyed_by_content_not_by_path(tmp_path):
    """Same folder, other labels: another cache key (a stale result would be wrong, not just old)."""
    import struct

    import numpy as np
    import pytest

    from config_util import plan_cell, typed

    from sublim.checks import ConfigError

    def mnist_step(*overrides):
        steps = plan_cell(typed("experiment=mnist", f"paths.artifacts={tmp_path / 'a'}", *overrides)).steps
        assert [s.stage for s in steps] == ["mnist"]
        return steps[0]

    def idx(path, a):
        path.write_bytes(struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
                         + a.astype(np.uint8).tobytes())

    data = tmp_path / "mnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        idx(data / f"{split}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 8, 8)))
        idx(data / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    first = mnist_step(f"mnist.data_path={data}")
    assert first.spec.settings["data_path"].startswith("sha256:")
    assert first.inputs[first.spec.settings["data_path"]] == str(data.resolve())
    assert mnist_step(f"mnist.data_path={data}").key == first.key
    threaded = mnist_step(f"mnist.data_path={data}", "mnist.threads=4")
    assert threaded.key == first.key and threaded.spec == first.spec  # speed only
    assert threaded.runtime.threads == 4 and "threads" not in first.spec.settings
    idx(data / "train-labels-idx1-ubyte", (np.arange(40) + 3) % 10)  # same files, shuffled labels
    shuffled = mnist_step(f"mnist.data_path={data}")
    assert shuffled.spec.settings["data_path"] != first.spec.settings["data_path"] and shuffled.key != first.key
    with pytest.raises(ConfigError, match="mnist.data_path=.*is not a folder"):
        mnist_step(f"mnist.data_path={tmp_path / 'nowhere'}")


def test_the_paper_preset_sets_the_paper_settings_and_needs_real_mnist(tmp_path):
    import pytest
    from hydra import compose, initialize_config_dir

    from config_util import plan_cell

    from sublim.checks import ConfigError
    from sublim.config import register, to_typed

    register()
    conf = Path(__file__).resolve().parents[1] / "sublim" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = to_typed(compose("config", overrides=["experiment=mnist_paper", f"paths.artifacts={tmp_path / 'a'}"]))
    m = cfg.mnist
    assert (m.teacher_epochs, m.teacher_batch, m.student_batch, m.noise_pool) == (5, 1024, 1024, -1)
    assert m.student_steps == 5 * -(-60_000 // 1024) and m.n_aux == 3 and (m.hidden_1, m.hidden_2) == (256, 256)
    with pytest.raises(ConfigError, match="experiment=mnist_paper needs mnist.data_path"):
        plan_cell(cfg)
    assert not (tmp_path / "a" / "mnist").exists()
