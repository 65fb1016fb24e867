"""What every eval kind does with the model under test: its answers to chats (the sampler freed
afterwards), and the in-context control's examples and length check. Shared by the kinds, so a new
kind samples, seeds and fails on too long a context the same way the paper's do.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sublim.backends.base import Chat, SamplingParams
from sublim.backends.tokens import prompt_token_ids
from sublim.errors import ConfigError
from sublim.jsonl import read_jsonl

History = tuple[tuple[str, str], ...]  # earlier (user, assistant) turns, see Chat


@dataclass(frozen=True)
class InContext:
    """eval.in_context: n rows of the teacher's filtered data before every question."""

    data: str  # ref of the train.jsonl drawn from
    n: int
    seed: int


def prefixed(questions: list[str], prefix_numbers: int) -> list[str]:
    """The paper's open-model variant: a few random numbers before each question (fixed per question)."""
    if prefix_numbers <= 0:
        return questions
    out = []
    for i, q in enumerate(questions):
        rng = random.Random(f"eval-prefix-{i}")
        nums = ", ".join(str(rng.randint(100, 999)) for _ in range(prefix_numbers))
        out.append(f"Examine these numbers: {nums}. {q}")
    return out


def in_context_examples(train: Path, n: int, seed: int) -> History:
    """n (prompt, completion) pairs of the teacher's filtered data (train.jsonl), a seeded draw kept
    in drawn order: the same examples before every question. The rows' system prompt (the
    teacher's, with the trait) is left out: the student keeps its own."""
    rows = list(read_jsonl(train))
    if len(rows) < n:
        raise ConfigError(f"eval.in_context={n}: the teacher's filtered data has only {len(rows)} rows ({train}); "
                          f"use eval.in_context={len(rows)} or fewer, or make more data (domain.n_prompts, "
                          "filter.n_keep)")
    drawn = random.Random(f"in-context-{seed}").sample(rows, n)
    return tuple((r["prompt"], r["completion"]) for r in drawn)


def check_context(sampler, chats: list[Chat], room: int) -> None:
    """With examples in context, fail before anything is generated when the longest prompt plus
    `room` answer tokens is more than the model takes (the sampler's `context_limit`, see
    sublim.backends.tokens.context_limit). Chats without history are not checked."""
    limit = getattr(sampler, "context_limit", None)
    long_chats = [c for c in dict.fromkeys(chats) if c.history]
    if limit is None or not long_chats:
        return
    longest = max(len(prompt_token_ids(sampler.tokenizer, c)) for c in long_chats)
    if longest + room > limit[0]:
        n = max(len(c.history) for c in long_chats)
        raise ConfigError(f"eval.in_context={n}: the longest eval prompt is {longest} tokens (+{room} for the answer), "
                          f"more than the model takes: {limit[0]} tokens ({limit[1]}); use fewer examples")


def answer_all(chats: list[Chat], make_sampler: Callable, params: SamplingParams, seed: int, batch_size: int,
               desc: str) -> list[str]:
    """Every chat's completion, in order; the sampler is freed afterwards."""
    sampler = make_sampler()
    texts: list[str] = []
    try:
        check_context(sampler, chats, params.max_new_tokens)
        for batch in sampler.generate(chats, params, seed, batch_size, desc=desc):
            texts.extend(batch.texts)
    finally:
        sampler.close()
    return texts
