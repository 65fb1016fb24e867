"""Batched vs one-seed-at-a-time: wall time of teacher + same-init student for n seeds.

Both paths do identical arithmetic (same per-seed generators), so the ratio is the cost of
per-seed kernel launches and Python overhead against one batched kernel. On a small CPU the
matmuls are compute-bound and the gain is modest (PROTOCOL: ~1.2x for 10 seeds on 2 cores); on
a GPU batching is what makes 100 seeds cheap.
    python -m sublim.mnist.bench [--seeds 10] [--steps 1000] [--repeats 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from .data import load
from .model import cpu_threads
from .spec import MnistSpec
from .train import resolve_device, train_seeds, train_sequential


def bench(n_seeds: int = 10, steps: int = 1000, device: str = "auto", teacher_epochs: int = 30,
          threads: int = 1, repeats: int = 2, progress: bool = False) -> dict:
    """Time both paths on the digits defaults with `steps` distillation steps (no curve points).

    The paths alternate `repeats` times and the best time of each is kept; CPU seconds of this
    process are reported too, since wall time on a shared machine moves with other jobs.
    """
    spec = replace(MnistSpec(), n_seeds=n_seeds, student_steps=steps, teacher_epochs=teacher_epochs,
                   arms=["same_init"], eval_every=0, device=device, threads=threads)
    spec.validate()
    dev = resolve_device(device)
    data = load(None, spec.test_fraction, spec.split_seed)
    seeds = list(range(spec.seed, spec.seed + n_seeds))
    out = {"n_seeds": n_seeds, "student_steps": steps, "teacher_epochs": teacher_epochs,
           "device": str(dev), "torch_threads": threads if dev.type == "cpu" else None, "repeats": repeats}
    with cpu_threads(threads, dev):
        for _ in range(repeats):
            for name, fn in (("batched", train_seeds), ("sequential", train_sequential)):
                t0, c0 = time.perf_counter(), time.process_time()
                res = fn(spec, data, seeds, dev, progress)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if wall < out.get(f"{name}_s", float("inf")):
                    out[f"{name}_s"] = wall
                    out[f"{name}_teacher_s"] = res.times["teacher_s"]
                    out[f"{name}_students_s"] = res.times["students_s"]
                out[f"{name}_cpu_s"] = min(cpu, out.get(f"{name}_cpu_s", float("inf")))
                out[f"{name}_same_init_mean"] = float(res.arm_acc["same_init"].mean())
    out["speedup"] = out["sequential_s"] / out["batched_s"]
    out["speedup_cpu"] = out["sequential_cpu_s"] / out["batched_cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(bench(a.seeds, a.steps, a.device, a.teacher_epochs, a.threads, a.repeats, progress=True),
                     indent=2))


if __name__ == "__main__":
    main()
