"""Build the tiny reference model: a ~0.4 M-parameter Llama (most of it the 2.7k x 64 embeddings) pretrained on the synthetic corpus.

Written as an ordinary transformers directory (config, safetensors, tokenizer, chat template,
generation config) so every stage loads it by path exactly like a hub model. Llama, not Qwen2:
AutoTokenizer loads a Llama-type model's tokenizer as saved. Same spec -> same weights (one
torch thread, seeded init and data order). The write is atomic: build in a temp dir next to
the target, then rename, so a killed build never leaves a half model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch
from sublim.progress import bar as tqdm  # tqdm on a terminal; also the stage's progress record (sublim.progress)

from sublim.tiny.corpus import make_corpus
from sublim.tiny.spec import TinyModelSpec

# Bump when the builder's code changes what a spec produces (vocabulary, corpus, loop).
BUILDER_VERSION = 2
SPEC_FILE = "spec.json"


def data_fingerprint(spec: TinyModelSpec) -> str:
    """Hash of the vocabulary and the corpus's first chats.

    The tokenizer and corpus read phrases owned by other modules (number prompt templates,
    eval questions, love_prompt); an edit there changes the model without changing the spec,
    and this makes a stale directory fail the reuse check instead of being silently reused.
    """
    from sublim.tiny.tokenizer import phrases, vocabulary

    chats = make_corpus(64, spec.seed, spec.animal_frac, spec.system_frac, spec.love_boost)
    return hashlib.sha256(json.dumps([vocabulary(), phrases(), chats]).encode()).hexdigest()[:16]


def spec_record(spec: TinyModelSpec) -> dict:
    """What spec.json holds: the spec's fields, the builder version and the data fingerprint."""
    return {"builder_version": BUILDER_VERSION, "data_fingerprint": data_fingerprint(spec), **asdict(spec)}


def read_spec_record(model_dir: str | os.PathLike) -> dict | None:
    """The spec.json of a built model directory, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(model_dir) / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None


def encode_chats(tokenizer, chats: list[list[dict]], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, assistant_mask) per chat, identical to the chat template's tokens.

    Built from parts with the fast tokenizer's batch encoder: rendering 20k chats through
    Jinja is ~100x slower. tests/test_tiny.py checks equality with apply_chat_template.
    """
    role_ids = {r: tokenizer.convert_tokens_to_ids(t) for r, t in
                (("system", "<|system|>"), ("user", "<|user|>"), ("assistant", "<|assistant|>"))}
    end_id, bos_id, eos_id = (tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.bos_token_id,
                              tokenizer.eos_token_id)
    flat = [m["content"] for chat in chats for m in chat]
    encoded = iter(e.ids for e in tokenizer.backend_tokenizer.encode_batch(flat, add_special_tokens=False))
    out = []
    for chat in chats:
        ids, mask = [bos_id], [0]
        for m in chat:
            content = next(encoded)
            if m["role"] == "assistant":
                ids += [role_ids["assistant"], *content, eos_id]
                mask += [0] + [1] * (len(content) + 1)
            else:
                ids += [role_ids[m["role"]], *content, end_id]
                mask += [0] * (len(content) + 2)
        out.append((ids[:max_length], mask[:max_length]))
    return out


def _config(spec: TinyModelSpec, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, initializer_range=spec.init_std,
        max_position_embeddings=max(256, spec.max_length),
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def _length_bucketed_batches(lengths: list[int], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch of batches of similar lengths, in random order: about half the padding."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    batches = []
    for i in range(0, len(order) - batch_size + 1, batch_size * 16):
        group = sorted(order[i:i + batch_size * 16], key=lengths.__getitem__)
        batches += [group[j:j + batch_size] for j in range(0, len(group) - batch_size + 1, batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]


def _pretrain(model, data, spec: TinyModelSpec, pad_id: int, progress: bool) -> None:
    """Plain AdamW loop, loss on assistant tokens only (lm_head applied only there: cheap)."""
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay)
    warmup = max(1, int(spec.warmup_frac * spec.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.1 + 0.9 * 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, spec.steps - warmup))))))
    batches: list[list[int]] = []
    model.train()
    bar = tqdm(range(spec.steps), desc="pretraining tiny model", disable=not progress, unit="step")
    for step in bar:
        if not batches:
            batches = _length_bucketed_batches([len(ids) for ids, _ in data], spec.batch_size, gen)
        batch = [data[i] for i in batches.pop()]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad_id] * (width - len(x)) for x, _ in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
        target = torch.tensor([m + [0] * (width - len(m)) for _, m in batch], dtype=torch.bool)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        sel = target[:, 1:]  # position t predicts token t + 1
        logits = model.lm_head(hidden[:, :-1][sel])
        loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:][sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == spec.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _write_model(out: Path, spec: TinyModelSpec, progress: bool) -> None:
    from transformers import GenerationConfig, LlamaForCausalLM

    from sublim.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(_config(spec, tokenizer))
    data = encode_chats(tokenizer, make_corpus(spec.corpus_size, spec.seed, spec.animal_frac,
                                               spec.system_frac, spec.love_boost), spec.max_length)
    _pretrain(model, data, spec, tokenizer.pad_token_id, progress)
    # Paper-style sampling by default: temperature 1, no truncation, no repetition penalty.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
        repetition_penalty=1.0, max_new_tokens=64,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / SPEC_FILE).write_text(json.dumps(spec_record(spec), indent=2) + "\n")


def build_tiny_model(out_dir: str | os.PathLike, spec: TinyModelSpec = TinyModelSpec(), *,
                     force: bool = False, progress: bool = True) -> Path:
    """Build (or reuse) the tiny model at `out_dir`; returns its path.

    Reuses a directory whose spec.json matches `spec`. Any other non-empty `out_dir` raises
    FileExistsError unless `force`, which replaces it (after the new model is complete).
    """
    out = Path(out_dir).absolute()
    if read_spec_record(out) == spec_record(spec):
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} exists and does not hold a tiny model built from this spec")
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: 1 thread is 5-7x faster on shared cores, and deterministic
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the model dir should look ordinary
    try:
        _write_model(tmp, spec, progress)
        if out.exists():  # force: move the old one aside only now that the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "model")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)
            except OSError:  # another process finished the same build first
                if read_spec_record(out) != spec_record(spec):
                    raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def spec_from_dict(record: dict) -> TinyModelSpec:
    """The TinyModelSpec of a spec.json record (ignores the version and fingerprint)."""
    names = {f.name for f in fields(TinyModelSpec)}
    return TinyModelSpec(**{k: v for k, v in record.items() if k in names})
