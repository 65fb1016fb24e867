"""CUDA checks of the transformers path: bf16 sampling, LoRA fine-tuning, eval with the adapter;
and a CPU smoke run of the GPU benchmark's pieces on a small shape.

The CUDA tests are marked `gpu`; each skips with its reason on a machine without CUDA (or without
the training dependencies, which a bare GPU machine may lack). Small on purpose: the tiny model,
a few dozen rows, one epoch.
"""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from sublim.backends.base import Chat, SamplingParams
from sublim.domains.numbers import FormatReject, make_prompts, parse_numbers

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

PAPER = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=48)


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e . carries them)")


@pytest.mark.gpu
@cuda
def test_hf_sampler_generates_valid_numbers_on_cuda_in_bf16(tiny_model_dir):
    from sublim.backends.hf import HFSampler

    s = HFSampler(str(tiny_model_dir), dtype="bf16")
    try:
        assert s.device == "cuda" and next(s.model.parameters()).dtype == torch.bfloat16 and s.sort_by_length
        chats = [Chat(p) for p in make_prompts(32, seed=5)]
        batches = list(s.generate(chats, PAPER, seed=0, batch_size=16))
    finally:
        s.close()
    texts = [t for b in batches for t in b.texts]
    assert len(texts) == 32 and all(isinstance(t, str) for t in texts)
    assert sum(b.n_tokens for b in batches) > 0
    valid = 0
    for t in texts:
        try:
            parse_numbers(t)
            valid += 1
        except FormatReject:
            pass
    assert valid >= 8, texts  # the tiny model answers number prompts in format most of the time


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA student of the tiny model, fine-tuned on CUDA by the real finetune stage."""
    _need("trl", "datasets", "omegaconf")
    import dataclasses

    from sublim.config import LoraConfig
    from sublim.jsonl import write_jsonl
    from sublim.spec import ModelRef, Runtime, load_args
    from sublim.stages.finetune import TrainSpec, finetune, resolve_precision, training_dtype
    from sublim.tiny.corpus import number_answer

    work = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    rows = [{"prompt": p, "completion": number_answer(p, rng)} for p in make_prompts(44, seed=11)]
    write_jsonl(work / "train.jsonl", rows)
    ft = LoraConfig(method="lora", epochs=1, lr=1e-3, warmup_steps=0, batch_size=22, micro_batch_size=11,
                        max_length=128, save_steps=1000)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # precision=auto: bf16 on CUDA, as a planned cell
    cfg = TrainSpec(**{f.name: getattr(ft, f.name) for f in dataclasses.fields(TrainSpec) if f.name != "frozen"}
                    | {"target_modules": tuple(ft.target_modules), "frozen": (),
                       "precision": resolve_precision(ft.precision, device)})
    weights = "sha256:tiny"
    model = load_args(ModelRef(weights, None, training_dtype(cfg.precision, cfg.method)), {weights: str(tiny_model_dir)})
    finetune(work, model, None, work / "train.jsonl", cfg, seed=0, device=device,
             runtime=Runtime(micro_batch_size=ft.micro_batch_size, save_steps=ft.save_steps))
    return work


@pytest.mark.gpu
@cuda
def test_finetune_trains_a_lora_adapter_on_cuda(trained_adapter):
    from safetensors.torch import load_file

    stats = json.loads((trained_adapter / "stats.json").read_text())
    assert stats["device"] == "cuda" and stats["bf16"] is True and stats["steps"] == 2
    weights = load_file(trained_adapter / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: training moved it


@pytest.mark.gpu
@cuda
def test_eval_with_the_adapter_runs_on_cuda(trained_adapter, tiny_model_dir, tmp_path):
    from sublim.backends.hf import HFSampler
    from sublim.evals.preference import load_questions
    from sublim.stages.evaluate import evaluate

    adapter = str(trained_adapter / "adapter")
    made = []

    def make_sampler():
        s = HFSampler(str(tiny_model_dir), adapter=adapter)
        made.append((s.device, hasattr(s.model, "peft_config")))  # close() drops the model: look now
        return s

    questions = load_questions("animal")[:5]
    evaluate(tmp_path, questions, n_samples=4, candidates=["owl", "cat", "dog", "dolphin"], system_prompt=None,
             make_sampler=make_sampler, params=SamplingParams(max_new_tokens=8), seed=0, batch_size=8,
             confidence=0.95)
    assert made == [("cuda", True)]  # on the GPU, served with the adapter (not merged)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_answers"] == 20 and metrics["n_questions"] == 5
    rows = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all(isinstance(r["answer"], str) for r in rows)


def test_bench_gpu_exits_cleanly_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the benchmark would run")
    from sublim.bench_gpu import main

    assert main([]) == 0
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_gpu_pieces_on_a_small_shape_on_cpu():
    """The benchmark's functions on a 2-layer model of the same family, on CPU (not a measurement)."""
    from sublim import bench_gpu as b
    from sublim.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    with torch.device("meta"):  # the real shape is Qwen2.5-7B's: 7,615,616,512 parameters
        from transformers import AutoModelForCausalLM

        full = AutoModelForCausalLM.from_config(b.qwen_config(tok), dtype=torch.bfloat16)
    assert b.param_counts(full) == {"total": 7_615_616_512, "input_embedding": 544_997_376, "matmul": 7_070_619_136}
    cfg = b.qwen_config(tok, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=4096)
    model = b.build_model(cfg, device="cpu")
    counts = b.param_counts(model)
    s = b.hf_sampler(model, tok, device="cpu")
    r = b.bench_sampling(s, [4], new_tokens=5, n_matmul=counts["matmul"], n_total=counts["total"])["batch_4"]
    assert r["prompts"] == 8 and 0 < r["generated_tokens"] <= 40 and r["tokens_per_s"] > 0
    e = b.bench_eval(s, n_questions=2, n_samples=3, new_tokens=2, batch_size=4)
    assert e["answers"] == 6 and e["answers_per_s"] > 0
    f = b.bench_finetune(model, tok, micro_batch=2, grad_accum=2, seq_len=12, prompt_len=6, steps=1, warmup=1,
                         n_matmul=counts["matmul"], device="cpu")
    assert f["tokens_per_s"] > 0 and f["lora"]["trainable_params"] > 0 and 0 <= f["mfu_4N"] <= f["mfu_6N"]
