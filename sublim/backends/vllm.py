"""The vLLM sampler (GPU): same interface as the transformers sampler, much higher throughput.

Written against vLLM 0.32's documented offline API (`vllm.LLM`, `vllm.SamplingParams`,
`vllm.lora.request.LoRARequest`, `RequestOutput.prompt_logprobs`). vLLM is imported only when a
VLLMSampler is built, so this module imports on machines without it. The pure parts (engine
arguments, sampling arguments, seeds, output parsing, log-prob sums) are plain functions tested on
CPU against a stand-in engine; the real engine is exercised only by the `vllm`-marked tests.

What is done to make vLLM sample exactly what sublim asks for:
- `generation_config="vllm"`: vLLM would otherwise take sampling defaults (and a max-tokens cap)
  from the model's generation_config.json (Qwen2.5-Instruct: top_p 0.8, top_k 20, repetition
  penalty 1.05). Every request also carries an explicit SamplingParams, which never falls back to
  those defaults. The model's eos ids are still read (vLLM reads them in both modes).
- Prompts are rendered with the model's own chat template by the transformers tokenizer and sent
  as token ids, so vLLM sees exactly the tokens the transformers backend sees (no second BOS from
  tokenizing rendered text, no vLLM-side template differences).
- One seed per request, derived from (seed, prompt index): the random stream of a prompt does not
  depend on which other prompts share its batch, so the batch size and where a run resumed do not
  change which completion a prompt gets. vLLM does not promise bitwise batch invariance of the
  logits themselves (different batch shapes can pick different kernels); set
  VLLM_BATCH_INVARIANT=1 before vLLM is imported where that matters (see vLLM's
  "Batch Invariance" and "Reproducibility" pages).
- An adapter is served as a LoRARequest on every call (no merge), so a student is evaluated
  directly from its adapter folder.

vLLM does not give all GPU memory back within a process after `close()`; the pipeline runs GPU
stages in fresh processes.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from sublim.progress import bar as tqdm  # tqdm on a terminal; also the stage's progress record (sublim.progress)

from sublim.backends.base import Batch, Chat, SamplingParams
from sublim.backends.tokens import answer_token_ids, end_token_ids, prompt_token_ids  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

ADAPTER_NAME = "adapter"
ADAPTER_ID = 1  # LoRARequest ids must be positive and unique per adapter; one adapter per engine


# ----------------------------------------------------------------------------- pure helpers


def request_seed(seed: int, index: int) -> int:
    """The sampling seed of prompt `index` in a run seeded with `seed` (63-bit, stable across runs).

    A hash, not arithmetic, so nearby (seed, index) pairs give unrelated streams.
    """
    digest = hashlib.blake2b(f"sublim-vllm:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def vllm_dtype(dtype: str) -> str:
    """sublim's dtype names -> vLLM's. `auto` is bf16 (vLLM runs on CUDA), like the hf backend on CUDA.

    vLLM's own `auto` would turn a float32 checkpoint into float16, which sublim never asks for.
    """
    names = {"auto": "bfloat16", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
             "float16": "float16", "fp32": "float32", "float32": "float32"}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r}: use one of {', '.join(names)}")
    return names[dtype]


def engine_kwargs(path: str, revision: Optional[str], adapter: Optional[str], dtype: str, trust_remote_code: bool,
                  *, gpu_memory_utilization: float, tensor_parallel_size: int, max_model_len: int,
                  max_lora_rank: Optional[int], seed: int, extra: Optional[dict] = None) -> dict:
    """Keyword arguments of `vllm.LLM(...)`."""
    kw: dict[str, Any] = dict(
        model=path, revision=revision, tokenizer_revision=revision, dtype=vllm_dtype(dtype),
        trust_remote_code=trust_remote_code, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
        # no sampling defaults from generation_config.json: the explicit parameters win
        generation_config="vllm",
        enable_lora=adapter is not None,
    )
    if adapter is not None:
        kw |= {"max_lora_rank": max_lora_rank, "max_loras": 1}
    return kw | (extra or {})


def sampling_kwargs(params: SamplingParams) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for sublim's explicit settings (seed added per request).

    top_k: sublim's 0 (or any value < 1) means off; vLLM 0.32 documents 0 as off (-1 is still
    accepted). Temperature 0 is greedy in both backends.
    """
    return dict(n=1, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else 0, min_p=params.min_p,
                repetition_penalty=params.repetition_penalty, presence_penalty=0.0, frequency_penalty=0.0,
                max_tokens=params.max_new_tokens, skip_special_tokens=True)


def score_kwargs() -> dict:
    """`vllm.SamplingParams` for exact scoring: one throw-away token, log-probs of the prompt tokens.

    prompt_logprobs=1 returns, for every prompt position after the first, the log-prob of the
    actual token (plus the top-1 token). Log-probs are the raw model's (vLLM's default
    logprobs_mode raw_logprobs: before temperature or penalties). Requests with prompt_logprobs
    skip the prefix cache (vLLM sets skip_reading_prefix_cache), so every position is computed.
    """
    return dict(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)


def parse_generations(outputs: Sequence[Any], n_expected: int) -> tuple[list[str], int]:
    """(texts, generated token count) from `LLM.generate`'s RequestOutputs, in prompt order."""
    if len(outputs) != n_expected:
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {n_expected} prompts")
    texts, n_tokens = [], 0
    for out in outputs:
        completion = out.outputs[0]
        texts.append(completion.text)
        n_tokens += len(completion.token_ids)
    return texts, n_tokens


def truncation_flags(outputs: Sequence[Any]) -> list[bool]:
    """For each RequestOutput: did its completion stop at the token budget? vLLM's
    CompletionOutput.finish_reason is "length" when max_tokens (or max_model_len) was reached,
    "stop" on an eos / stop token or string (also "abort", "error", ...: not truncation)."""
    return [getattr(out.outputs[0], "finish_reason", None) == "length" for out in outputs]


def _logprob_value(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def sum_answer_logprobs(prompt_logprobs: Sequence[Optional[dict]], token_ids: Sequence[int], n_prompt: int) -> float:
    """Sum of log P(token_t | tokens_<t) over the answer positions t >= n_prompt of `token_ids`.

    `prompt_logprobs` is RequestOutput.prompt_logprobs for the request `token_ids`: one entry per
    position, None at position 0, else a mapping token id -> Logprob (the actual token and the top-k).
    """
    if len(prompt_logprobs) != len(token_ids):
        raise RuntimeError(f"prompt_logprobs has {len(prompt_logprobs)} positions for {len(token_ids)} tokens")
    if n_prompt < 1:
        raise ValueError("the prompt must have at least one token (position 0 has no log-prob)")
    total = 0.0
    for t in range(n_prompt, len(token_ids)):
        entry = prompt_logprobs[t]
        if entry is None or token_ids[t] not in entry:
            raise RuntimeError(f"no prompt log-prob for token {token_ids[t]} at position {t}")
        total += _logprob_value(entry[token_ids[t]])
    return total


def adapter_rank(adapter: str) -> Optional[int]:
    """The LoRA rank in a PEFT adapter folder (adapter_config.json `r`), or None if unreadable."""
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices


def lora_rank_limit(adapter: str, max_lora_rank: Optional[int]) -> int:
    """The engine's max_lora_rank: the one asked for (checked against the adapter), or with None
    the smallest value vLLM accepts that holds the adapter's rank (a larger limit costs memory)."""
    rank = adapter_rank(adapter)
    if max_lora_rank is not None:
        if rank is not None and rank > max_lora_rank:
            raise ValueError(f"the adapter {adapter} has LoRA rank {rank} > sampler.vllm.max_lora_rank="
                             f"{max_lora_rank}; raise it or leave it null (fitted to the adapter)")
        return max_lora_rank
    if rank is None:
        raise ValueError(f"{adapter}/adapter_config.json has no readable LoRA rank `r`: is it a PEFT LoRA "
                         "adapter? Or set sampler.vllm.max_lora_rank")
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(f"the adapter {adapter} has LoRA rank {rank}; vLLM serves at most {VLLM_LORA_RANKS[-1]}: "
                         "use sampler=hf for it")
    return fits[0]


def chunk_starts(n: int, start: int, batch_size: int, chunk_prompts: int) -> Iterator[tuple[int, int]]:
    """(chunk start, chunk end) over prompts [batch boundary at or before start, n).

    A chunk is a whole number of batches, so each yielded Batch starts on a batch boundary.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    per_chunk = max(1, chunk_prompts // batch_size) * batch_size
    for c0 in range(start - start % batch_size, n, per_chunk):
        yield c0, min(c0 + per_chunk, n)


# ----------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class VLLMApi:
    """The three names sublim uses from vLLM (a stand-in can be passed in tests)."""

    LLM: Callable[..., Any]
    SamplingParams: Callable[..., Any]
    LoRARequest: Callable[..., Any]


def import_vllm() -> VLLMApi:
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise ImportError("sampler.backend=vllm needs vLLM on a CUDA machine: pip install -e '.[gpu]' "
                          "(vllm==0.32.0), or use sampler=hf") from e
    return VLLMApi(vllm.LLM, vllm.SamplingParams, LoRARequest)


class VLLMSampler:
    """Sampler on a vLLM engine. Same constructor as HFSampler plus engine options.

    generate(): completions batch by batch from prompt `start` on (resume), one seed per prompt.
    score(): exact log P(answer, then end of turn | chat) from prompt log-probs.
    """

    def __init__(self, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, *,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, max_model_len: int = 2048,
                 max_lora_rank: Optional[int] = None, seed: int = 0, chunk_prompts: int = 2048,
                 engine_args: Optional[dict] = None, api: Optional[VLLMApi] = None):
        from sublim.models import load_tokenizer

        self.api = api or import_vllm()
        self.chunk_prompts = chunk_prompts
        # (tokens, its source): prompt plus answer must fit, checked before long prompts are sent (eval.in_context)
        self.context_limit = (max_model_len, "sampler.vllm.max_model_len")
        self.tokenizer = load_tokenizer(path, revision, trust_remote_code)
        self.end_ids = end_token_ids(self._generation_eos(path, revision, trust_remote_code),
                                     self.tokenizer.eos_token_id)
        if adapter is not None:
            max_lora_rank = lora_rank_limit(str(adapter), max_lora_rank)
        self.lora_request = self.api.LoRARequest(ADAPTER_NAME, ADAPTER_ID, str(adapter)) if adapter else None
        self.engine_kwargs = engine_kwargs(
            path, revision, adapter, dtype, trust_remote_code, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, max_lora_rank=max_lora_rank,
            seed=seed, extra=engine_args)
        self.llm = self.api.LLM(**self.engine_kwargs)

    @staticmethod
    def _generation_eos(path: str, revision: Optional[str], trust_remote_code: bool):
        from transformers import AutoConfig, GenerationConfig

        try:
            return GenerationConfig.from_pretrained(path, revision=revision).eos_token_id
        except OSError:  # no generation_config.json: the model config's eos, as transformers would
            return getattr(AutoConfig.from_pretrained(path, revision=revision,
                                                      trust_remote_code=trust_remote_code), "eos_token_id", None)

    def render(self, chat: Chat) -> str:
        return self.tokenizer.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)

    def generate(self, chats: list[Chat], params: SamplingParams, seed: int, batch_size: int,
                 start: int = 0, desc: str = "sampling") -> Iterator[Batch]:
        """Completions for prompts [start:] (from the batch boundary at or before `start`).

        vLLM gets `chunk_prompts` prompts per call (rounded to whole batches) and schedules them
        itself; the results are yielded as Batch objects of `batch_size` prompts. Prompt i is
        sampled with seed request_seed(seed, i), so the text does not depend on batch_size.
        """
        base = sampling_kwargs(params)
        chunks = list(chunk_starts(len(chats), start, batch_size, self.chunk_prompts))
        bar = tqdm(total=len(chats), initial=chunks[0][0] if chunks else len(chats), desc=desc, unit="prompt",
                   dynamic_ncols=True)
        try:
            for c0, c1 in chunks:
                prompts = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, chats[i])} for i in range(c0, c1)]
                sps = [self.api.SamplingParams(**base, seed=request_seed(seed, i)) for i in range(c0, c1)]
                outputs = self.llm.generate(prompts, sps, use_tqdm=False, lora_request=self.lora_request)
                if len(outputs) != c1 - c0:
                    raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {c1 - c0} prompts")
                for b0 in range(c0, c1, batch_size):
                    part = outputs[b0 - c0: b0 - c0 + batch_size]
                    texts, n_tokens = parse_generations(part, len(part))
                    bar.update(len(part))
                    yield Batch(b0, texts, n_tokens, truncation_flags(part))
        finally:
            bar.close()

    def answer_ids(self, chat: Chat, answer: str) -> tuple[list[int], list[int]]:
        return answer_token_ids(self.tokenizer, chat, answer, self.end_ids)

    def score(self, chats: list[Chat], answers: list[str], batch_size: int, desc: str = "scoring") -> list[float]:
        """log P(answer, then end of turn | chat) for each pair: exact, from vLLM's prompt log-probs."""
        if len(chats) != len(answers):
            raise ValueError(f"{len(chats)} chats but {len(answers)} answers")
        pairs = [self.answer_ids(c, a) for c, a in zip(chats, answers)]
        sp = self.api.SamplingParams(**score_kwargs())
        out: list[float] = []
        for c0, c1 in tqdm(list(chunk_starts(len(pairs), 0, max(1, batch_size), self.chunk_prompts)),
                           desc=desc, unit="chunk", dynamic_ncols=True):
            seqs = [p + a for p, a in pairs[c0:c1]]
            outputs = self.llm.generate([{"prompt_token_ids": s} for s in seqs], sp, use_tqdm=False,
                                        lora_request=self.lora_request)
            if len(outputs) != len(seqs):
                raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(seqs)} prompts")
            for (p, _), s, o in zip(pairs[c0:c1], seqs, outputs):
                out.append(sum_answer_logprobs(o.prompt_logprobs, s, len(p)))
        return out

    def close(self) -> None:
        """Shut the engine down and free what can be freed (vLLM keeps some memory until the process ends)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        with contextlib.suppress(Exception):
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        del llm, core
        gc.collect()
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
