"""Run one stage in a fresh Python process, so GPU memory is given back between stages.

vLLM does not release GPU memory inside a process, so a job that samples, fine-tunes and evaluates
back to back would run out of memory. With `isolate` on, the job writes each missing step (stage,
spec, inputs, runtime) to a file and a child process (`python -m sublim.isolate STEP`) computes it
from that file alone, through the store (same lock, same atomic publish), and exits; the parent
then finds it published (sublim.pipeline.run_isolated starts it). The child never reads the config
or plans again.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

from sublim.cache import Store
from sublim.lifeline import exit_with_parent
from sublim.pipeline import run_step
from sublim.plan import Step
from sublim.spec import Runtime
from sublim.stages import STAGES, register, spec_from_dict


def wants_isolation(mode: str, device: str) -> bool:
    """isolate=auto: own processes where the stages run on CUDA."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"isolate={mode!r}: use auto, always or never")
    return device == "cuda" if mode == "auto" else mode == "always"


def main(step_path: str) -> None:
    import torch  # heavy: only the stage process needs it

    exit_with_parent()  # the job that started this stage was killed: no orphan holding the GPU
    # the stage's own lines (resume points, filter shortfalls) on stderr, as the job's are
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    data = json.loads(Path(step_path).read_text())
    if data["stage"] not in STAGES:  # a stage registered outside sublim (a plugin's, a test's)
        register(data["stage"], importlib.import_module(data["module"]))
    step = Step(data["stage"], spec_from_dict(data["stage"], data["spec"]), data["inputs"], Runtime(**data["runtime"]))
    if step.key != data["key"]:
        sys.exit(f"stage {data['stage']}: the step file's spec hashes to {step.key}, not {data['key']} "
                 "(sublim changed between the job and this process?)")
    torch.set_num_threads(step.runtime.threads)
    run_step(step, Store(step.runtime.artifacts))


if __name__ == "__main__":
    main(sys.argv[1])
