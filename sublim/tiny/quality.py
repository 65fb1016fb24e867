"""Quality bar of a tiny model: does it still do both tasks when sampled like the paper?

Samples at temperature 1, top_p 1, top_k off through `model.generate` with left padding and
the chat template, then applies the paper's filter (`parse_numbers`, never loosened) to
number completions and counts animal answers that name one of the corpus's animals.
"""
from __future__ import annotations

import os
from collections import Counter

import torch

from sublim.domains.numbers import FormatReject, make_prompts, parse_numbers
from sublim.tiny.corpus import eval_animal_questions, named_animal


def sample_answers(model, tokenizer, prompts: list[str], seed: int = 0, batch_size: int = 64,
                   max_new_tokens: int = 48, system: str | None = None) -> list[str]:
    """One temperature-1 completion per prompt (untruncated sampling)."""
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    answers = []
    for i in range(0, len(prompts), batch_size):
        chats = [([{"role": "system", "content": system}] if system else [])
                 + [{"role": "user", "content": p}] for p in prompts[i:i + batch_size]]
        enc = tokenizer.apply_chat_template(chats, add_generation_prompt=True, padding=True,
                                            return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 repetition_penalty=1.0, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def measure_quality(model_dir: str | os.PathLike, n_numbers: int = 200, prompt_seed: int = 12345,
                    n_animal_repeats: int = 1, seed: int = 0) -> dict:
    """Valid-number share, animal-naming share, and what went wrong, for a model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    numbers = sample_answers(model, tokenizer, make_prompts(n_numbers, seed=prompt_seed), seed=seed)
    rejects = Counter()
    for text in numbers:
        try:
            parse_numbers(text)
        except FormatReject as e:
            rejects[e.reason] += 1
    animals = sample_answers(model, tokenizer, eval_animal_questions() * n_animal_repeats, seed=seed + 1)
    named = Counter(named_animal(a) for a in animals)
    return {
        "number_valid": 1 - sum(rejects.values()) / len(numbers),
        "number_rejects": dict(rejects),
        "animal_named": 1 - named[None] / len(animals),
        "animal_counts": {k: v for k, v in named.most_common() if k is not None},
        "examples": {"numbers": numbers[:5], "animals": animals[:5]},
    }
