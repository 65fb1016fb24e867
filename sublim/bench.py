"""`make bench`: CPU figures on the tiny model, measured through the real entrypoint.

Prints each stage's wall time (from the artifact store's events), the transformers sampler's
generated tokens/s batched and one prompt at a time, the wall time of a fully cached re-run, and
MNIST training time for 10 seeds batched versus one after another.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _sublim(args: list[str]) -> float:
    exe = Path(sys.executable).with_name("sublim")
    t0 = time.time()
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def tiny_model(root: Path) -> Path:
    from sublim.tiny.model import TinyModelSpec, build_tiny_model

    out = root / "tiny-model"
    if not out.exists():
        build_tiny_model(out, TinyModelSpec())
    return out


def bench_pipeline(model: Path, work: Path) -> dict:
    args = ["experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={work / 'artifacts'}",
            "logger=none", f"hydra.run.dir={work / 'run'}"]
    first = _sublim(args)
    events = [json.loads(x) for x in (work / "artifacts" / "events.jsonl").read_text().splitlines()]
    stages = {e["stage"]: e["seconds"] for e in events if e["event"] == "done"}
    cached = _sublim(args)
    return {"first_run_s": round(first, 2), "stage_s": stages, "cached_rerun_s": round(cached, 2)}


def bench_sampler(model: Path, n_prompts: int = 512, max_new_tokens: int = 48) -> dict:
    from sublim.backends.base import Chat, SamplingParams
    from sublim.backends.hf import HFSampler
    from sublim.domains.numbers import make_prompts

    sampler = HFSampler(str(model), device="cpu")
    chats = [Chat(p) for p in make_prompts(n_prompts, seed=99)]
    params = SamplingParams(max_new_tokens=max_new_tokens)
    out = {}
    for label, bs, chunk in (("batched_64", 64, chats), ("batched_256", 256, chats), ("one_at_a_time", 1, chats[:32])):
        t0, tokens = time.time(), 0
        for b in sampler.generate(chunk, params, seed=0, batch_size=bs, desc=label):
            tokens += b.n_tokens
        dt = time.time() - t0
        out[label] = {"prompts": len(chunk), "tokens": tokens, "seconds": round(dt, 2),
                      "tokens_per_s": round(tokens / dt, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        t0 = time.time()
        model = tiny_model(work)
        build_s = time.time() - t0
        from sublim.mnist.bench import bench as mnist_bench

        result = {"threads": torch.get_num_threads(), "tiny_model_build_s": round(build_s, 2),
                  "pipeline": bench_pipeline(model, work), "sampler": bench_sampler(model),
                  "mnist_10_seeds": mnist_bench(n_seeds=10)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
