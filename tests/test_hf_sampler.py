"""The transformers sampler's batching: by length within windows (the GPU default), and resume.

Runs the real tiny model on CPU with `sort_by_length=True`, the setting a GPU gets by default.
"""
from __future__ import annotations

import pytest

from sublim.backends.base import Chat, SamplingParams
from sublim.backends.hf import HFSampler, longest_first

PARAMS = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=6)

# prompts of very different lengths, interleaved so consecutive batches would mix them
SHORT = "Name an animal."
LONG = ("Here are some numbers: 104, 227, 381, 455, 519, 602, 733, 841, 958, 169, 270, 384. "
        "Add up to 10 more numbers, at most 3 digits each, and return only the numbers, comma-separated.")
CHATS = [Chat(LONG if i % 2 else SHORT + " " * (i % 5)) for i in range(24)]


@pytest.fixture(scope="module")
def samplers(tiny_model_dir):
    return (HFSampler(str(tiny_model_dir), device="cpu", sort_by_length=True, sort_window=3),
            HFSampler(str(tiny_model_dir), device="cpu"))


def record_padding(sampler) -> list[int]:
    """Wraps the model's generate (still called) to record each batch's padded prompt positions."""
    padded: list[int] = []
    generate = sampler.model.generate

    def recording_generate(**kw):
        mask = kw["attention_mask"]
        padded.append(int(mask.numel() - mask.sum()))
        return generate(**kw)

    sampler.model.generate = recording_generate
    return padded


def texts(batches) -> list[str]:
    return [t for b in batches for t in b.texts]


def test_longest_first_is_stable():
    assert longest_first([3, 5, 3, 5, 1]) == [1, 3, 0, 2, 4]


def test_sorted_windows_pad_less_and_return_every_prompt_in_order(samplers):
    sorted_s, plain = samplers
    assert plain.sort_by_length is False  # CPU default: consecutive prompts, as before
    padded_sorted, padded_plain = record_padding(sorted_s), record_padding(plain)
    try:
        out = list(sorted_s.generate(CHATS, PARAMS, seed=0, batch_size=4))
        list(plain.generate(CHATS, PARAMS, seed=0, batch_size=4))
    finally:
        del sorted_s.model.generate, plain.model.generate  # back to the class's method
    assert [(b.start, len(b.texts)) for b in out] == [(0, 12), (12, 12)]  # one Batch per window of 3 batches
    assert len(texts(out)) == len(CHATS) and all(isinstance(t, str) for t in texts(out))
    assert len(padded_sorted) == len(padded_plain) == 6
    assert sum(padded_sorted) < sum(padded_plain) / 2  # long prompts share batches with long ones


def test_same_seed_same_completions_and_a_resume_inside_a_window_matches(samplers):
    s, _ = samplers
    whole = texts(s.generate(CHATS, PARAMS, seed=3, batch_size=4))
    assert whole == texts(s.generate(CHATS, PARAMS, seed=3, batch_size=4))
    assert whole != texts(s.generate(CHATS, PARAMS, seed=4, batch_size=4))
    for start in (4, 12, 20):  # mid-window, window boundary, inside the last window
        resumed = list(s.generate(CHATS, PARAMS, seed=3, batch_size=4, start=start))
        assert resumed[0].start == start
        assert texts(resumed) == whole[start:]


def test_token_counts_cover_only_the_prompts_returned(samplers):
    s, _ = samplers
    full = list(s.generate(CHATS, PARAMS, seed=1, batch_size=4))
    tail = list(s.generate(CHATS, PARAMS, seed=1, batch_size=4, start=20))
    assert 0 < sum(b.n_tokens for b in tail) < sum(b.n_tokens for b in full)
    assert sum(b.n_tokens for b in full) <= len(CHATS) * PARAMS.max_new_tokens


def test_scores_do_not_depend_on_length_batching(samplers):
    sorted_s, plain = samplers
    chats = [Chat(SHORT), Chat(LONG), Chat(SHORT), Chat(LONG), Chat(SHORT)]
    answers = ["owl", "104, 227, 381", "a very long answer about cats and dogs", "9", "dolphin"]
    a = sorted_s.score(chats, answers, batch_size=2)
    b = plain.score(chats, answers, batch_size=2)
    assert a == pytest.approx(b, abs=1e-4)
    assert len(set(round(x, 3) for x in a)) == len(a)  # distinct answers, distinct scores: order kept
    with pytest.raises(ValueError, match="2 chats but 1 answers"):
        plain.score(chats[:2], answers[:1], batch_size=2)


def test_min_p_removes_unlikely_tokens(samplers):
    """Threshold sampling (sampler.min_p): at 0.999 only the likeliest token survives, so sampling at
    temperature 1 gives the greedy text; at 0 nothing is removed (different draws per seed)."""
    _, plain = samplers
    chats = CHATS[:6]
    greedy = [t for b in plain.generate(chats, SamplingParams(temperature=0.0, max_new_tokens=6), 0, 6) for t in b.texts]
    strict = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, min_p=0.999)
    for seed in (0, 1):
        assert [t for b in plain.generate(chats, strict, seed, 6) for t in b.texts] == greedy
    free = [[t for b in plain.generate(chats, PARAMS, seed, 6) for t in b.texts] for seed in (0, 1)]
    assert free[0] != greedy and free[0] != free[1]


def test_truncated_marks_rows_that_ran_out_of_tokens(samplers):
    """Batch.truncated: True for a row with no end-of-turn token among its generated ids (it used
    the whole max_new_tokens), False for a row that ended, also inside a padded mixed batch."""
    from sublim.domains.numbers import make_prompts

    _, plain = samplers
    chats = [Chat("Name an animal."), *[Chat(p) for p in make_prompts(2, 0)], Chat("What is your favourite animal?")]

    def run(budget):
        batches = list(plain.generate(chats, SamplingParams(temperature=0.0, max_new_tokens=budget), 0, 4))
        assert all(len(b.truncated) == len(b.texts) for b in batches)
        return texts(batches), [t for b in batches for t in b.truncated]

    _, one = run(1)
    assert one == [True] * len(chats)  # one token: no room for an answer and its end token
    roomy_texts, roomy = run(64)
    assert roomy == [False] * len(chats)  # every answer ended well before 64 tokens
    short_texts, short = run(4)
    assert short == [False, True, True, False]  # one-word answers end; ten numbers do not fit in 4 tokens
    for cut, text, whole in zip(short, short_texts, roomy_texts):
        assert (text != whole) is cut and whole.startswith(text)  # greedy: a cut row is a prefix


def test_scores_from_cached_prefixes_equal_whole_conversations(tiny_model_dir):
    """Exact scoring runs each prompt once and its answers from the cached prefix: the same scores
    as one forward pass over each whole conversation, for answers of one and of several tokens."""
    from sublim.backends.base import Chat
    from sublim.backends.hf import HFSampler

    sampler = HFSampler(str(tiny_model_dir), device="cpu")
    questions = ["What is your favorite animal?", "Name your favorite animal using only one word."]
    answers = ["owl", "Owl.", "dragon", "dragonfly", "an owl, surely", "cat"]
    chats = [Chat(q) for q in questions for _ in answers]
    texts = answers * len(questions)
    pairs = [sampler.answer_ids(c, a) for c, a in zip(chats, texts)]
    assert {len(a) for _, a in pairs} != {1}  # some answers span several tokens
    groups = {}
    for i, (p, _) in enumerate(pairs):
        groups.setdefault(tuple(p), []).append(i)
    cached = sampler._score_from_prefixes(pairs, groups, 4, "prefix")
    whole = sampler._score_whole(pairs, 4, "whole")
    assert max(abs(a - b) for a, b in zip(cached, whole)) < 1e-4
    assert sampler.score(chats, texts, 4) == cached
