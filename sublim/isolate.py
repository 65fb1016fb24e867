"""Run one stage in a fresh Python process, so GPU memory is given back between stages.

vLLM does not release GPU memory inside a process, so a job that samples, fine-tunes and evaluates
back to back would run out of memory. With `isolate` on, the job hands each missing stage to a
child process (`python -m sublim.isolate SPEC`) that re-plans the same config, computes that one
stage through the store (same lock, same atomic publish), and exits; the parent then finds it
published.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path


def wants_isolation(mode: str) -> bool:
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"isolate={mode!r}: use auto, always or never")
    if mode != "auto":
        return mode == "always"
    import torch

    return torch.cuda.is_available()


def run_isolated(cfg, stage: str, key: str) -> None:
    """Compute (stage, key) of `cfg`'s plan in a child process; raises if the child fails."""
    from omegaconf import OmegaConf

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"config": OmegaConf.to_container(OmegaConf.structured(cfg)), "stage": stage, "key": key}, f)
    try:
        # its own session: Ctrl-C reaches the job alone, which ends this process (run kills it) and
        # says so once; a child still importing would print a KeyboardInterrupt stack of its own
        r = subprocess.run([sys.executable, "-m", "sublim.isolate", f.name], start_new_session=True)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(f"stage {stage} ({key}) failed in its own process (exit {r.returncode}); "
                           "its error is printed above")


def main(spec_path: str) -> None:
    import os

    import torch

    from sublim.cache import Store
    from sublim.config import register, to_typed
    from sublim.lifeline import exit_with_parent
    from sublim.pipeline import plan

    exit_with_parent()  # the job that started this stage was killed: no orphan holding the GPU
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    # the stage's own lines (resume points, filter shortfalls) on stderr, as the job's are
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    register()
    spec = json.loads(Path(spec_path).read_text())
    cfg = to_typed(spec["config"])
    store = Store(cfg.paths.artifacts)
    step = next((s for s in plan(cfg, store) if (s.stage, s.key) == (spec["stage"], spec["key"])), None)
    if step is None:
        sys.exit(f"stage {spec['stage']} {spec['key']} is not in this config's plan (the config changed?)")
    store.get_or_compute(step.stage, step.key, step.spec, step.compute)


if __name__ == "__main__":
    main(sys.argv[1])
