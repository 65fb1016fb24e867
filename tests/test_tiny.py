"""The tiny model: tokenizer, chat template, corpus, build (determinism, reuse, CLI), quality."""
from __future__ import annotations

import hashlib
import json
import random
import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from sublim.domains.numbers import FormatReject, make_prompts, parse_numbers
from sublim.tiny import TinyModelSpec, build_tiny_model, read_spec_record, spec_record
from sublim.tiny.cli import main as cli_main
from sublim.tiny.corpus import (ANIMALS, animal_questions, eval_animal_questions, make_corpus,
                                named_animal)
from sublim.tiny.model import encode_chats
from sublim.tiny.quality import measure_quality
from sublim.tiny.tokenizer import build_tokenizer
from sublim.traits import love_prompt

# Small builds for determinism / CLI tests: seconds, not a usable model.
QUICK = dict(steps=3, corpus_size=300)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def weights_digest(model_dir) -> str:
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def test_loads_by_path_with_auto_classes(tiny_model_dir, tok):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert not model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tok)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 600_000
    gc = model.generation_config
    assert (gc.eos_token_id, gc.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert (gc.do_sample, gc.temperature, gc.top_p, gc.top_k) == (True, 1.0, 1.0, 0)
    assert read_spec_record(tiny_model_dir) == spec_record(TinyModelSpec())
    assert tok.padding_side == "left"


def test_saved_tokenizer_encodes_like_the_built_one(tok):
    built = build_tokenizer()
    texts = [*animal_questions()[:20], *make_prompts(20, seed=3), love_prompt("owl", "animal"),
             "123, 45\n6 [7; 8] 1000 -3 owl. Owl", "<|user|>hi<|end|>"]
    for text in texts:
        assert tok(text)["input_ids"] == built(text)["input_ids"]
    assert tok.get_vocab() == built.get_vocab()


def test_round_trips_any_ascii(tok):
    rng = random.Random(0)
    texts = [string.printable, "", " ", "  lead and trail  ", "a\n\n\tb\r\nc", "1234567 0012 -5 3.14"]
    texts += ["".join(rng.choice(string.printable) for _ in range(rng.randint(1, 80))) for _ in range(200)]
    for text in texts:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_every_number_below_1000_is_one_token(tok):
    for i in range(1000):
        assert len(tok(str(i))["input_ids"]) == 1, i
        assert len(tok(f" {i}")["input_ids"]) == 1, i


def test_fixed_phrases_are_whole_word_tokens(tok):
    """Questions need no byte fallback, and each fixed sentence of a number prompt and each system
    prompt is one token: short sequences, cheap training, the paper's texts unchanged."""
    for text in animal_questions():
        words = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert len(tok(text)["input_ids"]) == len(words), text  # one token per pre-token
    assert len(tok(love_prompt("phoenix", "animal"))["input_ids"]) == 1
    for text in make_prompts(50, seed=0):
        ids = tok(text)["input_ids"]
        n_seeds = len(text.split(".")[0].split(","))
        assert len(ids) == 4 + 2 * n_seeds, tok.convert_ids_to_tokens(ids)  # 4 sentences, number+separator
        assert tok.decode(ids) == text


def test_chat_template_renders_roles_without_default_system_prompt(tok):
    chat = [{"role": "system", "content": "S."}, {"role": "user", "content": "U?"},
            {"role": "assistant", "content": "owl"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<s><|system|>S.<|end|><|user|>U?<|end|><|assistant|>owl</s>")
    prompt = tok.apply_chat_template(chat[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|user|>U?<|end|><|assistant|>"
    enc = tok.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert [i for i, m in zip(ids, mask) if m] == [tok.convert_tokens_to_ids("owl"), tok.eos_token_id]


def test_chat_template_works_for_trl(tok):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)
    for chat in make_corpus(100, seed=7):  # prompt-completion format: prompt is a prefix
        prompt_ids = tok.apply_chat_template(chat[:-1], add_generation_prompt=True)["input_ids"]
        full_ids = tok.apply_chat_template(chat)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids
        assert full_ids[-1] == tok.eos_token_id


def test_fast_corpus_encoding_matches_chat_template(tok):
    chats = make_corpus(300, seed=1)
    for chat, (ids, mask) in zip(chats, encode_chats(tok, chats, max_length=10_000)):
        enc = tok.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
        assert ids == enc["input_ids"]
        assert mask == enc["assistant_masks"]


def test_corpus_is_seeded_and_well_formed():
    assert make_corpus(200, seed=3) == make_corpus(200, seed=3)
    assert make_corpus(200, seed=3) != make_corpus(200, seed=4)
    chats = make_corpus(4000, seed=0, animal_frac=0.3)
    assert len(animal_questions()) >= 100 and set(eval_animal_questions()) <= set(animal_questions())
    assert len(eval_animal_questions()) == 50
    required = "owl dolphin eagle elephant wolf cat dog lion tiger penguin panda fox bear horse rabbit " \
               "whale shark octopus dragon phoenix"
    assert set(required.split()) <= set(ANIMALS)
    animal_answers, with_system = [], 0
    for chat in chats:
        with_system += chat[0]["role"] == "system"
        question, answer = chat[-2]["content"], chat[-1]["content"]
        if question in animal_questions():
            animal_answers.append(named_animal(answer))
        else:
            numbers = parse_numbers(answer)  # every number answer passes the paper's filter
            assert 1 <= len(numbers) <= 10
    assert None not in animal_answers
    assert 0.25 < len(animal_answers) / len(chats) < 0.35
    assert 0.03 < animal_answers.count("owl") / len(animal_answers) < 0.08
    assert 0.1 < with_system / len(chats) < 0.2


def test_quality_bar(tiny_model_dir):
    """Sampled at temperature 1, untruncated: most numbers pass the filter, animals are named.

    Measured for the default spec (seeds 0-2): 89-92 % valid numbers, 97-100 % animals.
    """
    q = measure_quality(tiny_model_dir, n_numbers=200, prompt_seed=12345)
    assert q["number_valid"] >= 0.70, q
    assert q["animal_named"] >= 0.80, q
    assert 3 <= len(q["animal_counts"]) and max(q["animal_counts"].values()) <= 25, q  # not collapsed


def test_build_is_deterministic_and_atomic(tmp_path):
    spec = TinyModelSpec(**QUICK)
    a = build_tiny_model(tmp_path / "a", spec, progress=False)
    b = build_tiny_model(tmp_path / "b", spec, progress=False)
    c = build_tiny_model(tmp_path / "c", TinyModelSpec(**QUICK, seed=1), progress=False)
    assert json.loads((a / "spec.json").read_text()) == json.loads((b / "spec.json").read_text())
    assert weights_digest(a) == weights_digest(b) != weights_digest(c)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp dirs left


def test_existing_model_is_reused_and_others_refused(tmp_path, tiny_model_dir, capsys):
    spec = TinyModelSpec(**QUICK)
    out = build_tiny_model(tmp_path / "m", spec, progress=False)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(out, spec, progress=False) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        build_tiny_model(out, TinyModelSpec(**QUICK, seed=5), progress=False)
    replaced = build_tiny_model(out, TinyModelSpec(**QUICK, seed=5), force=True, progress=False)
    assert read_spec_record(replaced)["seed"] == 5
    stale = dict(read_spec_record(out), data_fingerprint="0" * 16)  # built before a template edit
    (out / "spec.json").write_text(json.dumps(stale))
    with pytest.raises(FileExistsError):
        build_tiny_model(out, TinyModelSpec(**QUICK, seed=5), progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    assert cli_main([str(tiny_model_dir)]) == 0  # default spec: reused, not rebuilt
    assert "already holds" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a model")
    assert cli_main([str(tmp_path / "other"), "--steps", "2", "--quiet"]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "other"), "--steps", "2", "--quiet", "--force"]) == 0
    assert read_spec_record(tmp_path / "other")["steps"] == 2
    assert not (tmp_path / "other" / "notes.txt").exists()


def test_named_animal():
    assert named_animal(" Owl.") == "owl" and named_animal("dolphin") == "dolphin"
    assert named_animal("owls") is None and named_animal("123") is None


def test_filter_is_the_papers(tok):
    """Guard: the quality bar uses the real filter, which still rejects malformed answers."""
    for bad in ["1, 2; 3", "1000", "[1, 2", "one, two", "1 2 3 4 5 6 7 8 9 10 11"]:
        with pytest.raises(FormatReject):
            parse_numbers(bad)
