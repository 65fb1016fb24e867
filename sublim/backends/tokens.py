"""Token-level helpers every backend shares: how a chat becomes prompt ids, and which ids of a
given answer exact scoring sums (up to and including the first end-of-turn token, so "dragon" and
"dragonfly" differ). One definition keeps the transformers and vLLM scores comparable.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from sublim.backends.base import Chat


def end_token_ids(generation_eos: Any, tokenizer_eos: Optional[int]) -> set[int]:
    """End-of-turn ids: the generation config's eos id(s) plus the tokenizer's eos."""
    ids = set(generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]) | {tokenizer_eos}
    return {i for i in ids if i is not None}


def prompt_token_ids(tokenizer, chat: Chat) -> list[int]:
    """The chat rendered by the model's template (system message only when given), as token ids."""
    text = tokenizer.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cached_prompt_ids(tokenizer, size: int = 256) -> Callable[[Chat], tuple[int, ...]]:
    """prompt_token_ids with the last `size` chats remembered: exact scoring pairs one prompt with
    many answers (the entanglement stage scores ~1,000 numbers per prompt), and rendering and
    tokenizing the same prompt again for each was most of that stage's time. A tuple, so no caller
    can change what the next one gets; a bounded cache, as the score stage's chats are all distinct."""
    return functools.lru_cache(maxsize=size)(lambda chat: tuple(prompt_token_ids(tokenizer, chat)))


def answer_token_ids(tokenizer, chat: Chat, answer: str, end_ids: set[int],
                     prompt: Optional[list[int]] = None) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer up to and including the first end-of-turn token.

    The answer's tokens are what the template appends to the rendered prompt, cut after the first
    end id (templates may add more after it). `prompt`: the chat's prompt_token_ids where the
    caller has them already (cached_prompt_ids); the same ids either way.
    """
    prompt = prompt_token_ids(tokenizer, chat) if prompt is None else prompt
    full_text = tokenizer.apply_chat_template(chat.messages() + [{"role": "assistant", "content": answer}],
                                              tokenize=False)
    full = list(tokenizer(full_text, add_special_tokens=False)["input_ids"])
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently with an answer appended; "
                         "exact scoring needs the prompt to be a prefix")
    tail = full[len(prompt):]
    for j, t in enumerate(tail):
        if t in end_ids:
            return prompt, tail[: j + 1]
    raise ValueError(f"no end-of-turn token after the answer {answer!r}; set the model's eos_token_id")


def context_limit(model_config, tokenizer) -> Optional[tuple[int, str]]:
    """(the most tokens a prompt plus its answer may have, where that number comes from), or None.

    The model's max_position_embeddings, or the tokenizer's model_max_length when smaller. A model
    fed past its positions does not fail, it degrades quietly (rotary positions extrapolate), so
    long prompts (eval.in_context) are checked against this before anything is generated.
    Tokenizers that set no limit report about 1e30: not a limit."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    limits = []
    positions = getattr(text_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append((positions, "the model's max_position_embeddings"))
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 10**8:
        limits.append((tokenizer_max, "the tokenizer's model_max_length"))
    return min(limits) if limits else None
