"""The transformers sampler renders and tokenizes each chat's prompt once for all its answers
(sublim.backends.tokens.cached_prompt_ids): the same ids and the same scores, bit for bit, as
rendering it again for every answer, on the tiny model."""
from __future__ import annotations

import pytest

from sublim.backends import tokens
from sublim.backends.base import Chat
from sublim.traits import love_prompt

SYSTEMS = (None, love_prompt("owl", "animal"), "You love 87.")
PROMPTS = ("Pick a number between 0 and 999. Reply with the number only.", "Look at these numbers: 7, 8. Add more.")
ANSWERS = [str(n) for n in range(60)] + ["owl", "Owl.", "dragonfly", "1000", ""]


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    from sublim.backends.hf import HFSampler

    return HFSampler(str(tiny_model_dir), device="cpu")


def workload():
    chats = [Chat(p, s) for s in SYSTEMS for p in PROMPTS for _ in ANSWERS]
    return chats, ANSWERS * (len(SYSTEMS) * len(PROMPTS))


def test_scores_and_ids_are_those_of_rendering_every_prompt_again(sampler, monkeypatch):
    chats, answers = workload()
    cached = (sampler.score(chats, answers, 16), sampler.score(chats[::7], answers[::7], 8),  # grouped, whole
              [sampler.answer_ids(c, a) for c, a in zip(chats, answers)])
    monkeypatch.setattr(sampler, "_prompt_ids", lambda chat: tuple(tokens.prompt_token_ids(sampler.tokenizer, chat)))
    again = (sampler.score(chats, answers, 16), sampler.score(chats[::7], answers[::7], 8),
             [tokens.answer_token_ids(sampler.tokenizer, c, a, sampler.end_ids) for c, a in zip(chats, answers)])
    assert cached == again  # floats compared exactly


def test_each_chat_is_rendered_once(sampler, monkeypatch):
    from sublim.backends.hf import HFSampler

    calls = []
    real = tokens.prompt_token_ids
    monkeypatch.setattr(tokens, "prompt_token_ids", lambda tok, chat: calls.append(chat) or real(tok, chat))
    fresh = HFSampler.from_loaded(sampler.model, sampler.tokenizer, "cpu")
    chats, answers = workload()
    fresh.score(chats, answers, 16)
    assert sorted(calls, key=repr) == sorted(set(chats), key=repr)
    prompt, _ = fresh.answer_ids(chats[0], "7")
    prompt.append(-1)  # a caller changing its list does not change the next caller's
    assert fresh.answer_ids(chats[0], "7")[0] == real(sampler.tokenizer, chats[0])
