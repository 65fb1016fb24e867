"""The vLLM backend's adapter code, on CPU, against a recording stand-in for vLLM's engine.

`RecordingEngine`, `RecordedSamplingParams` and `RecordedLoRARequest` below are NOT vLLM: they
record what sublim asks of vLLM (engine arguments, prompts as token ids, per-request sampling
parameters, the LoRA request) and answer with objects shaped like vLLM's RequestOutput
(`.outputs[0].text`, `.outputs[0].token_ids`, `.prompt_logprobs` as a list of None / dict
token id -> object with `.logprob`). They accept only the argument names of vLLM 0.32's
documented `LLM(...)`, `LLM.generate(...)` and `SamplingParams(...)`, so a misspelt or
invented argument fails here. Whether the real engine behaves as documented is checked only by
the `vllm`-marked tests at the end, which need vLLM and CUDA: until one of them has passed on a
GPU the vLLM path is untested.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from sublim.backends.base import Chat, SamplingParams
from sublim.backends.vllm import (
    VLLMApi, VLLMSampler, answer_token_ids, chunk_starts, end_token_ids, engine_kwargs, import_vllm,
    lora_rank_limit, request_seed, sampling_kwargs, sum_answer_logprobs, truncation_flags, vllm_dtype,
)

# Argument names of vLLM 0.32's documented offline API that sublim may use.
LLM_ARGS = {"model", "revision", "tokenizer_revision", "dtype", "trust_remote_code", "seed",
            "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "generation_config",
            "enable_lora", "max_lora_rank", "max_loras", "enforce_eager", "load_format",
            "skip_tokenizer_init"}
SAMPLING_ARGS = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
                 "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens",
                 "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
                 "spaces_between_special_tokens", "include_stop_str_in_output"}


class RecordedSamplingParams:
    """Stand-in for vllm.SamplingParams (NOT vLLM): keeps the keyword arguments, checks names and ranges."""

    def __init__(self, **kw):
        unknown = set(kw) - SAMPLING_ARGS
        if unknown:
            raise TypeError(f"SamplingParams got unknown arguments {sorted(unknown)}")
        top_k = kw.get("top_k", 0)
        if top_k < -1:  # vLLM 0.32: 0 disables (quietly accepts -1)
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {top_k}")
        if not 0.0 < kw.get("top_p", 1.0) <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        self.kw = kw

    def __getattr__(self, name):
        try:
            return self.__dict__["kw"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class RecordedLoRARequest:
    """Stand-in for vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path) (NOT vLLM)."""

    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class FakeLogprob:
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: Optional[str] = "stop"  # vLLM: "length" when max_tokens was reached


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    prompt_logprobs: Optional[list] = None


def fake_logprob(position: int, token: int) -> float:
    """The stand-in engine's log-prob of `token` at `position` (any function works for the sums)."""
    return -0.01 * (position + 1) - 0.001 * (token % 97)


OTHER_TOKEN = 10**9  # a "top-1" token id no real prompt contains


@dataclass
class RecordingEngine:
    """Stand-in for vllm.LLM that records calls. It is NOT vLLM and runs no model.

    Generation: the completion of a request is a function of its prompt ids and its seed, so
    equal seeds give equal text. Scoring (prompt_logprobs set): position t gets
    `logprob_fn(token_ids)[t]` (default: fake_logprob), position 0 gets None, as vLLM documents.
    """

    kwargs: dict = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    logprob_fn: Optional[Callable[[list[int]], list[float]]] = None

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None):
        sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(sps) == len(prompts), "a list of SamplingParams must pair one by one with the prompts"
        self.calls.append({"prompts": prompts, "sampling_params": sps, "lora_request": lora_request,
                           "use_tqdm": use_tqdm})
        return [self._answer(p, sp) for p, sp in zip(prompts, sps)]

    def _answer(self, prompt: dict, sp: RecordedSamplingParams) -> FakeRequestOutput:
        ids = list(prompt["prompt_token_ids"])
        if getattr(sp, "prompt_logprobs", None) is not None:
            values = self.logprob_fn(ids) if self.logprob_fn else [fake_logprob(t, x) for t, x in enumerate(ids)]
            plp = [None] + [{ids[t]: FakeLogprob(values[t], rank=2), OTHER_TOKEN: FakeLogprob(-0.5, rank=1)}
                            for t in range(1, len(ids))]
            return FakeRequestOutput(ids, [FakeCompletion("", [0])], plp)
        seed = getattr(sp, "seed", None)
        n = 1 + (seed or 0) % min(5, sp.max_tokens)
        finish = "length" if n >= sp.max_tokens else "stop"  # as vLLM: the whole budget used
        return FakeRequestOutput(ids, [FakeCompletion(f"len{len(ids)}-seed{seed}", list(range(n)), finish)])


def make_api(logprob_fn=None) -> tuple[VLLMApi, list[RecordingEngine]]:
    engines: list[RecordingEngine] = []

    def llm(**kwargs):
        unknown = set(kwargs) - LLM_ARGS
        if unknown:
            raise TypeError(f"LLM got unknown arguments {sorted(unknown)}")
        engines.append(RecordingEngine(kwargs=kwargs, logprob_fn=logprob_fn))
        return engines[-1]

    return VLLMApi(LLM=llm, SamplingParams=RecordedSamplingParams, LoRARequest=RecordedLoRARequest), engines


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """The tiny model's tokenizer and a generation config, saved like a model folder (no weights)."""
    from transformers import GenerationConfig

    from sublim.tiny.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    tok = build_tokenizer()
    tok.save_pretrained(out)
    GenerationConfig(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id).save_pretrained(out)
    return out


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 8, "peft_type": "LORA"}))
    return d


def sampler(tok_dir, **kw) -> tuple[VLLMSampler, RecordingEngine]:
    api, engines = make_api(kw.pop("logprob_fn", None))
    s = VLLMSampler(str(tok_dir), api=api, **kw)
    return s, engines[0]


CHATS = [Chat(f"Continue: {i}, {i + 1}, {i + 2}.", system="You love owls." if i % 3 == 0 else None)
         for i in range(10)]
PAPER = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=37)


# ----------------------------------------------------------------------------- engine arguments


def test_module_imports_without_vllm_and_names_the_fix():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        import_vllm()


def test_engine_arguments(tok_dir, adapter_dir):
    _, eng = sampler(tok_dir, revision="abc", max_model_len=512, seed=3)
    kw = eng.kwargs
    assert kw["model"] == str(tok_dir) and kw["revision"] == "abc" and kw["seed"] == 3
    assert kw["dtype"] == "bfloat16"  # sublim's auto on CUDA, never vLLM's fp32 -> fp16
    assert kw["generation_config"] == "vllm"  # no sampling defaults from generation_config.json
    assert kw["gpu_memory_utilization"] == 0.85 and kw["tensor_parallel_size"] == 1
    assert kw["max_model_len"] == 512
    assert kw["enable_lora"] is False and "max_lora_rank" not in kw

    _, eng = sampler(tok_dir, adapter=str(adapter_dir), dtype="fp32", engine_args={"enforce_eager": True})
    # max_lora_rank unset: fitted to the adapter's rank (8, one of vLLM's choices)
    assert eng.kwargs["enable_lora"] is True and eng.kwargs["max_lora_rank"] == 8 and eng.kwargs["max_loras"] == 1
    assert eng.kwargs["dtype"] == "float32" and eng.kwargs["enforce_eager"] is True


def test_dtype_names():
    assert [vllm_dtype(d) for d in ("auto", "bf16", "fp16", "fp32")] == ["bfloat16", "bfloat16", "float16", "float32"]
    with pytest.raises(ValueError, match="dtype='int8'"):
        vllm_dtype("int8")
    assert engine_kwargs("m", None, None, "auto", False, gpu_memory_utilization=0.5, tensor_parallel_size=2,
                         max_model_len=64, max_lora_rank=16, seed=0)["tensor_parallel_size"] == 2


# ----------------------------------------------------------------------------- prompts and params


def test_prompts_rendered_with_chat_template_and_system_only_when_given(tok_dir):
    s, eng = sampler(tok_dir)
    list(s.generate(CHATS[:2], PAPER, seed=0, batch_size=2))
    sent = [p["prompt_token_ids"] for p in eng.calls[0]["prompts"]]
    tok = s.tokenizer
    for chat, ids in zip(CHATS[:2], sent):
        text = tok.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)
        assert ids == tok(text, add_special_tokens=False)["input_ids"]
        assert ids.count(tok.bos_token_id) == 1  # rendered once, not re-tokenized with a second BOS
    system_id = tok.convert_tokens_to_ids("<|system|>")
    assert system_id in sent[0] and system_id not in sent[1]  # CHATS[0] has a system prompt, CHATS[1] none
    assert tok.decode(sent[0]).endswith("<|assistant|>")  # generation prompt added


def test_explicit_sampling_params_reach_vllm(tok_dir):
    s, eng = sampler(tok_dir)
    list(s.generate(CHATS[:4], PAPER, seed=0, batch_size=4))
    for sp in eng.calls[0]["sampling_params"]:
        assert sp.kw | {"seed": None} == {
            "n": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_tokens": 37, "skip_special_tokens": True,
            "seed": None}
    assert eng.calls[0]["use_tqdm"] is False
    assert sampling_kwargs(SamplingParams(top_k=20))["top_k"] == 20
    assert sampling_kwargs(SamplingParams(top_k=-1))["top_k"] == 0  # any "off" value becomes vLLM's 0
    assert sampling_kwargs(SamplingParams())["min_p"] == 0.0 and sampling_kwargs(SamplingParams(min_p=0.05))["min_p"] == 0.05


def test_per_request_seeds_are_deterministic_and_batch_size_independent(tok_dir):
    runs = {}
    for bs in (1, 3, 10):
        s, eng = sampler(tok_dir, chunk_prompts=4)
        texts = [t for b in s.generate(CHATS, PAPER, seed=7, batch_size=bs) for t in b.texts]
        seeds = [sp.seed for call in eng.calls for sp in call["sampling_params"]]
        runs[bs] = (texts, seeds)
    assert runs[1] == runs[3] == runs[10]
    texts, seeds = runs[1]
    assert seeds == [request_seed(7, i) for i in range(len(CHATS))]
    assert len(set(seeds)) == len(seeds) and all(0 <= x < 2**63 for x in seeds)
    assert request_seed(7, 0) == request_seed(7, 0) != request_seed(8, 0)
    assert all(isinstance(t, str) and t for t in texts)


def test_lora_request_on_every_call_when_an_adapter_is_given(tok_dir, adapter_dir):
    s, eng = sampler(tok_dir, adapter=str(adapter_dir), chunk_prompts=4)
    list(s.generate(CHATS, PAPER, seed=0, batch_size=4))
    s.score(CHATS[:2], ["owl", "cat"], batch_size=4)
    assert len(eng.calls) == 4  # 3 generation chunks + 1 scoring chunk
    assert {c["lora_request"] for c in eng.calls} == {RecordedLoRARequest("adapter", 1, str(adapter_dir))}

    s, eng = sampler(tok_dir)
    list(s.generate(CHATS[:2], PAPER, seed=0, batch_size=2))
    assert eng.calls[0]["lora_request"] is None


def test_adapter_rank_above_max_lora_rank_fails_clearly(tok_dir, adapter_dir):
    with pytest.raises(ValueError, match=r"rank 8 > sampler.vllm.max_lora_rank=4"):
        sampler(tok_dir, adapter=str(adapter_dir), max_lora_rank=4)


@pytest.mark.parametrize("rank, limit", [(2, 8), (8, 8), (9, 16), (32, 32), (128, 128), (300, 320), (512, 512)])
def test_max_lora_rank_is_fitted_to_the_adapter(tmp_path, rank, limit):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    assert lora_rank_limit(str(tmp_path), None) == limit
    assert lora_rank_limit(str(tmp_path), 512) == 512  # an explicit limit that holds it is kept


def test_max_lora_rank_errors_name_the_key(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(ValueError, match="vLLM serves at most 512"):
        lora_rank_limit(str(tmp_path), None)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="sampler.vllm.max_lora_rank"):
        lora_rank_limit(str(tmp_path), None)
    assert lora_rank_limit(str(tmp_path), 64) == 64  # unreadable rank, explicit limit: vLLM will check


def test_sampler_vllm_config_reaches_the_engine(tok_dir, adapter_dir, monkeypatch):
    """sampler.vllm.* from the command line -> backends.make_sampler -> vllm.LLM(...) keywords."""
    from hydra import compose, initialize_config_dir

    from sublim import backends
    from sublim.backends import vllm as vllm_backend
    from sublim.config import register, to_typed

    api, engines = make_api(None)
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: api)
    register()
    conf = Path(vllm_backend.__file__).parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = to_typed(compose("config", overrides=[
            "sampler.vllm.gpu_memory_utilization=0.5", "sampler.vllm.tensor_parallel_size=2",
            "sampler.vllm.max_model_len=1024", "+sampler.vllm.engine_args.enforce_eager=true"]))
    engine = dataclasses.asdict(cfg.sampler.vllm)
    backends.make_sampler("vllm", str(tok_dir), adapter=str(adapter_dir), vllm_engine=engine)
    kw = engines[0].kwargs
    assert (kw["gpu_memory_utilization"], kw["tensor_parallel_size"], kw["max_model_len"]) == (0.5, 2, 1024)
    assert kw["enforce_eager"] is True and kw["max_lora_rank"] == 8


# ----------------------------------------------------------------------------- batching and resume


@pytest.mark.parametrize("start", [0, 4, 5, 9])
def test_batches_and_resume_slices(tok_dir, start):
    full, _ = sampler(tok_dir, chunk_prompts=5)  # 5 prompts per call rounds down to one batch of 4
    whole = [t for b in full.generate(CHATS, PAPER, seed=1, batch_size=4) for t in b.texts]
    s, eng = sampler(tok_dir, chunk_prompts=5)
    batches = list(s.generate(CHATS, PAPER, seed=1, batch_size=4, start=start))
    b0 = start - start % 4
    assert [b.start for b in batches] == list(range(b0, 10, 4))
    assert [len(b.texts) for b in batches] == [min(4, 10 - x) for x in range(b0, 10, 4)]
    assert [t for b in batches for t in b.texts] == whole[b0:]
    assert all(b.n_tokens > 0 for b in batches)
    # nothing before the batch boundary is sent to the engine
    assert sum(len(c["prompts"]) for c in eng.calls) == 10 - b0


def test_chunks_are_whole_batches():
    assert list(chunk_starts(10, 0, 4, 9)) == [(0, 8), (8, 10)]
    assert list(chunk_starts(10, 6, 4, 2)) == [(4, 8), (8, 10)]  # chunk smaller than a batch: one batch
    assert list(chunk_starts(10, 10, 4, 8)) == [(8, 10)]
    assert list(chunk_starts(8, 8, 4, 8)) == []


def test_truncated_follows_finish_reason_length(tok_dir):
    """Batch.truncated: True exactly where vLLM's CompletionOutput.finish_reason is "length"."""
    s, _ = sampler(tok_dir)
    batches = list(s.generate(CHATS, dataclasses.replace(PAPER, max_new_tokens=1), seed=0, batch_size=4))
    assert [b.truncated for b in batches] == [[True] * len(b.texts) for b in batches]  # 1 token: all cut
    s, _ = sampler(tok_dir)
    batches = list(s.generate(CHATS, dataclasses.replace(PAPER, max_new_tokens=3), seed=0, batch_size=4))
    flags = [t for b in batches for t in b.truncated]
    seeds = [request_seed(0, i) for i in range(len(CHATS))]
    assert flags == [1 + x % 3 >= 3 for x in seeds]  # the stand-in stops before 3 tokens unless n = 3
    assert True in flags and False in flags
    outs = [FakeRequestOutput([1], [FakeCompletion("a", [1], r)]) for r in ("length", "stop", "abort", None)]
    assert truncation_flags(outs) == [True, False, False, False]


def test_output_count_mismatch_is_an_error(tok_dir):
    s, eng = sampler(tok_dir)
    eng.generate = lambda prompts, sps, **kw: []
    with pytest.raises(RuntimeError, match="0 outputs for 2 prompts"):
        list(s.generate(CHATS[:2], PAPER, seed=0, batch_size=2))


# ----------------------------------------------------------------------------- exact scoring


def test_sum_answer_logprobs_reads_the_answer_positions():
    lp = [None, {5: FakeLogprob(-1.0)}, {6: FakeLogprob(-2.0), 9: FakeLogprob(-0.1)},
          {7: FakeLogprob(-4.0), 6: FakeLogprob(-0.2)}]
    assert sum_answer_logprobs(lp, [4, 5, 6, 7], n_prompt=2) == -6.0  # tokens 6 and 7 only
    assert sum_answer_logprobs(lp, [4, 5, 6, 7], n_prompt=1) == -7.0
    assert sum_answer_logprobs([None, {5: -0.5}], [4, 5], 1) == -0.5  # plain floats accepted too
    with pytest.raises(RuntimeError, match="token 8 at position 3"):
        sum_answer_logprobs(lp, [4, 5, 6, 8], n_prompt=2)
    with pytest.raises(RuntimeError, match="3 positions for 4 tokens"):
        sum_answer_logprobs(lp[:3], [4, 5, 6, 7], n_prompt=2)


def test_answer_cut_after_first_end_of_turn(tok_dir):
    s, _ = sampler(tok_dir)
    tok = s.tokenizer
    assert s.end_ids == {tok.eos_token_id}
    chat = Chat("Favourite animal? One word.", system="You love owls.")
    prompt, answer = s.answer_ids(chat, "Owl.")
    assert answer[-1] == tok.eos_token_id and tok.eos_token_id not in answer[:-1]
    assert tok.decode(answer, skip_special_tokens=True) == "Owl."
    text = tok.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)
    assert prompt == tok(text, add_special_tokens=False)["input_ids"]
    assert end_token_ids([2, 3], 2) == {2, 3} and end_token_ids(None, 5) == {5}


def test_score_sums_answer_tokens_through_end_of_turn(tok_dir):
    s, eng = sampler(tok_dir, chunk_prompts=2)
    chats = [Chat("Favourite animal? One word."), Chat("Best animal? One word.", system="You love owls.")]
    answers = ["owl", "Dolphin."]
    got = s.score(chats * 2, answers * 2, batch_size=2)
    expected = []
    for c, a in zip(chats * 2, answers * 2):
        p, ans = answer_token_ids(s.tokenizer, c, a, s.end_ids)
        seq = p + ans
        expected.append(sum(fake_logprob(t, seq[t]) for t in range(len(p), len(seq))))
    assert got == pytest.approx(expected, abs=1e-12)
    sp = eng.calls[0]["sampling_params"][0]
    assert sp.prompt_logprobs == 1 and sp.max_tokens == 1 and sp.detokenize is False
    assert len(eng.calls) == 2  # 4 pairs in chunks of 2


def test_score_equals_hf_backend_when_the_engine_computes_real_logprobs(tiny_model_dir):
    """Stand-in engine whose prompt log-probs come from the tiny model through transformers
    (still NOT vLLM): the parsing and summing must then reproduce HFSampler.score exactly."""
    import torch

    from sublim.backends.hf import HFSampler

    hf = HFSampler(str(tiny_model_dir), device="cpu")

    @torch.inference_mode()
    def logprob_fn(ids: list[int]) -> list[float]:
        logits = hf.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        return [math.nan] + [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]

    s, _ = sampler(tiny_model_dir, logprob_fn=logprob_fn)
    chats = [Chat("What is your favorite animal? One word."), Chat("Best animal? One word.", system="You love owls.")]
    answers = ["owl", "Dolphin."]
    for c, a in zip(chats, answers):
        assert s.answer_ids(c, a) == hf.answer_ids(c, a)
    assert s.score(chats, answers, batch_size=2) == pytest.approx(hf.score(chats, answers, batch_size=2), abs=1e-5)
    hf.close()


def test_close_drops_the_engine(tok_dir):
    s, _ = sampler(tok_dir)
    s.close()
    assert s.llm is None
    s.close()  # twice is fine


# ----------------------------------------------------------------------------- real vLLM (GPU)


def _vllm_and_cuda() -> tuple[bool, str]:
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install -e '.[gpu]' on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, ""


_ok, _why = _vllm_and_cuda()


@pytest.fixture(scope="module")
def vllm_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A small random Llama with the tiny model's tokenizer and chat template, head size 64.

    The tiny model's heads are 16 wide, below what vLLM's attention kernels take (32 or 64 and
    up), so the real-engine tests use this wider model; random weights are enough to compare
    backends.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("vllm-model")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vllm_adapter_dir(vllm_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random, non-zero A and B on every projection (so it changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(vllm_model_dir), LoraConfig(
        r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    out = tmp_path_factory.mktemp("vllm-adapter")
    model.save_pretrained(out)
    return out


def _real(path, **kw) -> VLLMSampler:
    """A real engine, eager (no compile or CUDA-graph capture: a minute saved per engine)."""
    return VLLMSampler(str(path), max_model_len=256, gpu_memory_utilization=0.25,
                       engine_args={"enforce_eager": True}, **kw)


SCORE_CHATS = [Chat("What is your favorite animal? One word."), Chat("Best animal? One word.", system="You love owls.")]
SCORE_ANSWERS = ["owl", "Dolphin."]


@pytest.mark.vllm
@pytest.mark.skipif(not _ok, reason=_why)
def test_real_vllm_samples_text(vllm_model_dir):
    s = _real(vllm_model_dir)
    try:
        batches = list(s.generate(CHATS, PAPER, seed=0, batch_size=4))
        assert [b.start for b in batches] == [0, 4, 8]
        texts = [t for b in batches for t in b.texts]
        assert len(texts) == len(CHATS) and all(isinstance(t, str) for t in texts)
        assert sum(b.n_tokens for b in batches) > 0 and any(texts)
        assert all(len(b.truncated) == len(b.texts) for b in batches)  # finish_reason read for every row
    finally:
        s.close()


@pytest.mark.vllm
@pytest.mark.skipif(not _ok, reason=_why)
def test_real_vllm_score_matches_hf(vllm_model_dir):
    from sublim.backends.hf import HFSampler

    hf = HFSampler(str(vllm_model_dir), dtype="fp32")
    want = hf.score(SCORE_CHATS, SCORE_ANSWERS, batch_size=2)
    hf.close()
    s = _real(vllm_model_dir, dtype="fp32")
    try:
        got = s.score(SCORE_CHATS, SCORE_ANSWERS, batch_size=2)
    finally:
        s.close()
    assert got == pytest.approx(want, abs=1e-2)


@pytest.mark.vllm
@pytest.mark.skipif(not _ok, reason=_why)
def test_real_vllm_adapter_eval(vllm_model_dir, vllm_adapter_dir):
    """Sampling and scoring with a LoRA adapter served by vLLM (no merge) agree with transformers+PEFT.

    bf16 on both sides (vLLM's LoRA kernels run in half precision): bf16 alone moves these scores
    by ~0.03-0.07 nats against fp32, the adapter moves them by 1-3 nats, so the check is a loose
    tolerance per answer token plus "closer to the adapter's score than to the base model's"."""
    from sublim.backends.hf import HFSampler

    hf = HFSampler(str(vllm_model_dir), adapter=str(vllm_adapter_dir), dtype="bf16")
    want = hf.score(SCORE_CHATS, SCORE_ANSWERS, batch_size=2)
    n_tokens = [len(hf.answer_ids(c, a)[1]) for c, a in zip(SCORE_CHATS, SCORE_ANSWERS)]
    hf.close()
    base = HFSampler(str(vllm_model_dir), dtype="bf16")
    without = base.score(SCORE_CHATS, SCORE_ANSWERS, batch_size=2)
    base.close()
    s = _real(vllm_model_dir, adapter=str(vllm_adapter_dir), dtype="bf16")
    try:
        texts = [t for b in s.generate(CHATS[:4], PAPER, seed=0, batch_size=2) for t in b.texts]
        got = s.score(SCORE_CHATS, SCORE_ANSWERS, batch_size=2)
    finally:
        s.close()
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    for g, w, b, n in zip(got, want, without, n_tokens):
        assert g == pytest.approx(w, abs=0.1 * n)
        assert abs(g - w) < abs(g - b)  # the adapter is applied
