"""`python -m sublim.bench_gpu`: GPU throughput at the paper's model size, without downloading it.

Builds a model of Qwen2.5-7B-Instruct's shape (hidden 3584, intermediate 18944, 28 layers, 28
heads, 4 KV heads, vocab 152064, rope theta 1e6, untied embeddings) with RANDOM weights directly
on the GPU in bf16, and the tiny model's small tokenizer (its ids are all < the vocab size).
Random weights almost never emit end-of-sequence, so every completion runs to its length limit
(and the fine-tuning batch has a fixed length); the figures are throughput, not quality.

Measured:
(a) teacher sampling: generated tokens/s on the numbers prompts at temperature 1, top_p 1, top_k
    off, 40 new tokens, through HFSampler.generate (the pipeline's own code) at several batch
    sizes; and through vLLM when it imports (load_format="dummy": random weights, no checkpoint).
(b) LoRA fine-tuning: a plain PEFT loop (no TRL: the lent GPU machine has no trl/datasets) with
    the paper's setup: r=8, alpha=8 on all seven projections, micro batch 22, grad-accumulation 3,
    AdamW lr 2e-4, bf16 autocast like the Trainer's bf16=True, gradient checkpointing off (the
    stage's default), sequences of 100 tokens (60 prompt, 40 completion, loss on the completion).
    Model FLOP utilisation with N = parameters in matrix multiplies (all but the input embedding
    table, a lookup):
      mfu_6N = 6 N tokens / s / peak: the standard convention (forward 2N, backward 4N),
      mfu_4N = 4 N tokens / s / peak: the work actually done with a frozen base (forward 2N plus
               the activation-gradient half of the backward, 2N; the LoRA weight gradients add
               ~0.1%). Attention-score FLOPs (~0.3% at 100 tokens) are left out of both.
(c) eval: answers/s for 50 questions x 100 samples x 8 new tokens through HFSampler.generate.

Prints one JSON object (also written to --out) with the figures, the GPU, and the H200 ceilings:
dense bf16 989 TFLOP/s (datasheet), ~790 TFLOP/s measured on the lent machine, 4.8 TB/s HBM.
Exits with a message and status 0 on a machine without CUDA. About 2-4 minutes on an H200.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

H200 = {"bf16_dense_tflops_datasheet": 989.0, "bf16_dense_tflops_measured": 790.0, "hbm_tb_per_s": 4.8}
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, rope_theta=1_000_000.0, tie_word_embeddings=False,
                 max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def qwen_config(tokenizer, **shape):
    """Qwen2.5-7B's shape (or `shape` overrides, for a small smoke test), special ids from `tokenizer`."""
    from transformers import Qwen2Config

    kw = QWEN25_7B | shape
    if len(tokenizer) > kw["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the model's vocabulary")
    # architectures: vLLM picks its model class from config.json's list (from_config leaves it empty)
    return Qwen2Config(**kw, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, architectures=["Qwen2ForCausalLM"])


def build_model(config, device: str = "cuda"):
    """Random weights, created on the device in bf16 (no CPU copy, no checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    return model


def param_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    return {"total": total, "input_embedding": embed, "matmul": total - embed}


def hf_sampler(model, tokenizer, device: str = "cuda"):
    """An HFSampler around an in-memory model (the pipeline's generate code, no loading from disk)."""
    from sublim.backends.hf import HFSampler

    return HFSampler.from_loaded(model, tokenizer, device)


def bench_sampling(sampler, batch_sizes: list[int], new_tokens: int, n_matmul: int, n_total: int) -> dict:
    from sublim.backends.base import Chat, SamplingParams
    from sublim.domains.numbers import make_prompts

    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    out = {}
    for bs in batch_sizes:
        n_batches = 2
        chats = [Chat(p) for p in make_prompts(bs * n_batches, seed=99)]
        list(sampler.generate(chats[:bs], SamplingParams(max_new_tokens=4), seed=0, batch_size=bs, desc="warm-up"))
        _sync(sampler.device)
        t0, tokens = time.time(), 0
        for b in sampler.generate(chats, params, seed=0, batch_size=bs, desc=f"sampling bs={bs}"):
            tokens += b.n_tokens
        _sync(sampler.device)
        dt = time.time() - t0
        steps_per_s = n_batches * new_tokens / dt  # decode steps: one per new token per batch
        out[f"batch_{bs}"] = {
            "prompts": len(chats), "generated_tokens": tokens, "seconds": round(dt, 2),
            "tokens_per_s": round(tokens / dt, 1),
            "achieved_tflops": round(2 * n_matmul * tokens / dt / 1e12, 1),
            # a decode step reads every weight once: batch x HBM bandwidth / weight bytes
            "weight_read_ceiling_tokens_per_s": round(bs * H200["hbm_tb_per_s"] * 1e12 / (2 * n_total), 0),
            "decode_steps_per_s": round(steps_per_s, 1),
        }
    return out


def bench_finetune(model, tokenizer, micro_batch: int, grad_accum: int, seq_len: int, prompt_len: int,
                   steps: int, warmup: int, n_matmul: int, device: str = "cuda") -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                             bias="none", task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(0)
    special = len(tokenizer.all_special_ids)
    ids = torch.randint(special, len(tokenizer), (micro_batch, seq_len), device=device, generator=gen)
    labels = ids.clone()
    labels[:, :prompt_len] = -100  # loss on the completion only
    mask = torch.ones_like(ids)
    model.train()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        total = 0.0
        for _ in range(grad_accum):
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / grad_accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.time()
    losses = [step() for _ in range(steps)]
    _sync(device)
    dt = time.time() - t0
    tokens = steps * grad_accum * micro_batch * seq_len
    tps = tokens / dt
    peak = H200["bf16_dense_tflops_datasheet"] * 1e12
    measured = H200["bf16_dense_tflops_measured"] * 1e12
    result = {
        "loop": "plain PEFT + torch.optim.AdamW, bf16 autocast, no gradient checkpointing (not TRL)",
        "lora": {"r": 8, "alpha": 8, "targets": LORA_TARGETS,
                 "trainable_params": sum(p.numel() for p in trainable)},
        "micro_batch": micro_batch, "grad_accum": grad_accum, "seq_len": seq_len, "completion_tokens": seq_len - prompt_len,
        "optimizer_steps": steps, "seconds": round(dt, 2), "tokens_per_s": round(tps, 1),
        "seconds_per_optimizer_step": round(dt / steps, 3), "last_loss": round(losses[-1], 4),
        "tflops_6N": round(6 * n_matmul * tps / 1e12, 1), "tflops_4N": round(4 * n_matmul * tps / 1e12, 1),
        "mfu_6N": round(6 * n_matmul * tps / peak, 3), "mfu_4N": round(4 * n_matmul * tps / peak, 3),
        "mfu_6N_vs_measured_peak": round(6 * n_matmul * tps / measured, 3),
        "mfu_4N_vs_measured_peak": round(4 * n_matmul * tps / measured, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
        # the paper's 10k examples x 3 epochs at this sequence length
        "paper_run_minutes_estimate": round(10_000 * 3 * seq_len / tps / 60, 1),
    }
    return result


def bench_eval(sampler, n_questions: int, n_samples: int, new_tokens: int, batch_size: int) -> dict:
    from sublim.backends.base import Chat, SamplingParams
    from sublim.tiny.corpus import eval_animal_questions

    questions = eval_animal_questions()[:n_questions]
    chats = [Chat(q) for q in questions for _ in range(n_samples)]
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    list(sampler.generate(chats[:batch_size], SamplingParams(max_new_tokens=2), seed=0, batch_size=batch_size,
                          desc="warm-up"))
    _sync(sampler.device)
    t0, tokens = time.time(), 0
    for b in sampler.generate(chats, params, seed=0, batch_size=batch_size, desc="eval"):
        tokens += b.n_tokens
    _sync(sampler.device)
    dt = time.time() - t0
    return {"questions": len(questions), "samples_per_question": n_samples, "new_tokens": new_tokens,
            "batch_size": batch_size, "answers": len(chats), "seconds": round(dt, 2),
            "answers_per_s": round(len(chats) / dt, 1), "tokens_per_s": round(tokens / dt, 1)}


def bench_vllm(tokenizer, config, n_prompts: int, new_tokens: int, n_questions: int, n_samples: int,
               eval_tokens: int) -> dict:
    """vLLM on the same shape with dummy (random) weights; prompts as token ids, no detokenizing."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return {"skipped": "vllm is not installed"}
    from sublim.backends.base import Chat
    from sublim.backends.vllm import prompt_token_ids, request_seed
    from sublim.domains.numbers import make_prompts
    from sublim.tiny.corpus import eval_animal_questions

    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)  # config only: load_format="dummy" makes random weights
        llm = LLM(model=tmp, load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", max_model_len=512,
                  gpu_memory_utilization=0.8, generation_config="vllm", seed=0)
        out = {}
        numbers = [Chat(p) for p in make_prompts(n_prompts, seed=99)]
        # sublim seeds every request (a prompt's text does not depend on its batch); vLLM may sample
        # seeded requests one by one, so the same prompts unseeded show what that costs
        for label, prompts, tokens, seeded in (
                ("sampling", numbers, new_tokens, True),
                ("sampling_unseeded", numbers, new_tokens, False),
                ("eval", [Chat(q) for q in eval_animal_questions()[:n_questions] for _ in range(n_samples)],
                 eval_tokens, True)):
            ids = [{"prompt_token_ids": prompt_token_ids(tokenizer, c)} for c in prompts]
            sps = [SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_tokens=tokens, min_tokens=tokens,
                                  ignore_eos=True, detokenize=False, seed=request_seed(0, i) if seeded else None)
                   for i in range(len(ids))]
            llm.generate(ids[:64], sps[:64], use_tqdm=False)  # warm-up
            t0 = time.time()
            res = llm.generate(ids, sps, use_tqdm=False)
            dt = time.time() - t0
            n = sum(len(r.outputs[0].token_ids) for r in res)
            out[label] = {"prompts": len(ids), "generated_tokens": n, "seconds": round(dt, 2),
                          "tokens_per_s": round(n / dt, 1), "answers_per_s": round(len(ids) / dt, 1)}
        del llm
        gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU throughput at Qwen2.5-7B's shape with random weights")
    ap.add_argument("--batch-sizes", default="64,256", help="teacher-sampling batch sizes (comma-separated)")
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--ft-steps", type=int, default=8, help="timed optimizer steps (after 2 warm-up steps)")
    ap.add_argument("--micro-batch", type=int, default=22)
    ap.add_argument("--grad-accum", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--eval-questions", type=int, default=50)
    ap.add_argument("--eval-samples", type=int, default=100)
    ap.add_argument("--eval-tokens", type=int, default=8)
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM figures even if vLLM imports")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("sublim.bench_gpu: no CUDA device on this machine; nothing measured. Run it on a GPU node "
              "(`make bench` gives the CPU figures on the tiny model).", file=sys.stderr)
        return 0
    import transformers

    from sublim.tiny.tokenizer import build_tokenizer

    t_start = time.time()
    tokenizer = build_tokenizer()
    config = qwen_config(tokenizer)
    t0 = time.time()
    model = build_model(config)
    _sync("cuda")
    build_s = time.time() - t0
    counts = param_counts(model)
    result: dict = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
        "model": {"shape": "Qwen2.5-7B (random weights, bf16)", "params": counts, "build_s": round(build_s, 1),
                  "tokenizer_size": len(tokenizer)},
        "ceilings": {**H200, "note": "H200 figures; compare with care on another GPU"},
    }
    sampler = hf_sampler(model, tokenizer)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    result["sampling_hf"] = bench_sampling(sampler, batch_sizes, args.new_tokens, counts["matmul"], counts["total"])
    result["eval_hf"] = bench_eval(sampler, args.eval_questions, args.eval_samples, args.eval_tokens,
                                   args.eval_batch_size)
    result["finetune_lora"] = bench_finetune(model, tokenizer, args.micro_batch, args.grad_accum, args.seq_len,
                                             prompt_len=args.seq_len - 40 if args.seq_len > 40 else 0,
                                             steps=args.ft_steps, warmup=2, n_matmul=counts["matmul"])
    result["flops_formula"] = ("N = parameters in matrix multiplies (all but the input embedding); "
                               "mfu_6N = 6*N*tokens/s / peak (standard), mfu_4N = 4*N*tokens/s / peak "
                               "(frozen base: no weight gradients); attention-score FLOPs excluded")
    del sampler, model
    gc.collect()
    torch.cuda.empty_cache()
    if not args.no_vllm:
        result["vllm"] = bench_vllm(tokenizer, config, n_prompts=1024, new_tokens=args.new_tokens,
                                    n_questions=args.eval_questions, n_samples=args.eval_samples,
                                    eval_tokens=args.eval_tokens)
    result["total_s"] = round(time.time() - t_start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
