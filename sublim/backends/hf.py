"""The transformers sampler: batched `generate` with left padding and the model's chat template.

Seeding is per batch (seed, batch index), so a resumed run that restarts at a batch boundary
writes the same completions as an uninterrupted one with the same batch size.

On a GPU, prompts are batched by length: each window of `sort_window` batches is ordered longest
first before it is cut into batches, so a batch pads to prompts of about its own length (code and
math prompts vary several-fold). A window is generated whole and its completions come back in
prompt order, so a resume inside a window regenerates that window (same batches, same seeds) and
keeps only the prompts asked for. On CPU the default is off (one batch per window: consecutive
prompts, as before), which keeps results made before this was added.
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import torch
from sublim.progress import bar as tqdm  # tqdm on a terminal; also the stage's progress record (sublim.progress)
from transformers import DynamicCache

from sublim.backends.base import Batch, Chat, SamplingParams
from sublim.backends.tokens import answer_token_ids, cached_prompt_ids, context_limit, end_token_ids
from sublim.models import completion_logits, load_model, load_tokenizer

log = logging.getLogger(__name__)


def batch_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919) % (2**63 - 1)


def longest_first(lengths: list[int]) -> list[int]:
    """Positions ordered by length, longest first (ties in position order): the heaviest batch
    comes first, so running out of memory shows at once."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


class HFSampler:
    def __init__(self, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, device: Optional[str] = None,
                 sort_by_length: Optional[bool] = None, sort_window: int = 8):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = load_tokenizer(path, revision, trust_remote_code)
        model = load_model(path, revision, adapter, dtype, trust_remote_code, device)
        self._setup(model, tokenizer, device, sort_by_length, sort_window)

    @classmethod
    def from_loaded(cls, model, tokenizer, device: str, sort_by_length: Optional[bool] = None,
                    sort_window: int = 8) -> "HFSampler":
        """A sampler around a model already in memory (the GPU benchmark's random-weight model)."""
        sampler = cls.__new__(cls)
        sampler._setup(model, tokenizer, device, sort_by_length, sort_window)
        return sampler

    def _setup(self, model, tokenizer, device: str, sort_by_length: Optional[bool], sort_window: int) -> None:
        if sort_window < 1:
            raise ValueError(f"sort_window={sort_window} must be at least 1 batch")
        self.device, self.model, self.tokenizer = device, model.eval(), tokenizer
        self.sort_by_length = device != "cpu" if sort_by_length is None else sort_by_length
        self.sort_window = sort_window
        self.context_limit = context_limit(model.config, tokenizer)  # (tokens, its source): see tokens.context_limit
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._prompt_ids = cached_prompt_ids(self.tokenizer)  # a chat rendered once for all its answers

    def render(self, chat: Chat) -> str:
        return self.tokenizer.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int, batch_size: int,
                 start: int = 0, desc: str = "sampling") -> Iterator[Batch]:
        """Completions for prompts [start:], one Batch per window, in prompt order."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        texts = [self.render(c) for c in chats]
        window = batch_size * (self.sort_window if self.sort_by_length else 1)
        bar = tqdm(total=len(chats), initial=start, desc=desc, unit="prompt", dynamic_ncols=True)
        for w0 in range(start - start % window, len(chats), window):
            w1 = min(w0 + window, len(chats))
            order = list(range(w0, w1))
            if self.sort_by_length:
                lengths = [len(ids) for ids in self.tokenizer(texts[w0:w1], add_special_tokens=False)["input_ids"]]
                order = [w0 + i for i in longest_first(lengths)]
            done: dict[int, tuple[str, int, bool]] = {}
            for k, b in enumerate(range(0, len(order), batch_size)):
                rows = order[b:b + batch_size]
                outs = self._generate_batch([texts[i] for i in rows], params, batch_seed(seed, w0 // batch_size + k))
                done.update(zip(rows, outs))
                bar.update(sum(i >= start for i in rows))
            keep = range(max(w0, start), w1)
            yield Batch(keep.start, [done[i][0] for i in keep], sum(done[i][1] for i in keep),
                        [done[i][2] for i in keep])
        bar.close()

    def _generate_batch(self, texts: list[str], params: SamplingParams, seed: int) -> list[tuple[str, int, bool]]:
        """(completion, generated token count, truncated) for each rendered prompt, sampled as one
        batch. Truncated: no end id (`end_ids`) among the row's generated ids, i.e. it stopped at
        max_new_tokens (finished rows end with one, then padding)."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(seed)
        sampling = params.temperature > 0
        out = self.model.generate(
            **enc,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=params.top_k if sampling else None,
            # None when off: a min_p of 0 removes nothing but would add a softmax per generated token
            min_p=params.min_p if sampling and params.min_p > 0 else None,
            repetition_penalty=params.repetition_penalty,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1]:]
        counts = (new != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        ended = torch.isin(new, torch.tensor(sorted(self.end_ids), dtype=new.dtype, device=new.device)).any(dim=1)
        truncated = [not e for e in ended.tolist()]
        return list(zip(self.tokenizer.batch_decode(new, skip_special_tokens=True), map(int, counts), truncated))

    def answer_ids(self, chat: Chat, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and of the answer up to and including the end-of-turn token (the
        prompt's ids cached per chat: sublim.backends.tokens.cached_prompt_ids)."""
        return answer_token_ids(self.tokenizer, chat, answer, self.end_ids, list(self._prompt_ids(chat)))

    @property
    def end_ids(self) -> set[int]:
        return end_token_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)

    @torch.inference_mode()
    def score(self, chats: list[Chat], answers: list[str], batch_size: int, desc: str = "scoring") -> list[float]:
        """log P(answer, then end of turn | chat) for each (chat, answer) pair: exact, no sampling.

        Where chats repeat (the exact preference eval: every candidate form of one question), each
        prompt runs once and its answers are scored from its cached keys and values; otherwise (one
        answer per chat: the score stage) whole sequences are batched. Both give the score of the
        whole conversation's tokenization (sublim.backends.tokens.answer_token_ids)."""
        if len(chats) != len(answers):
            raise ValueError(f"{len(chats)} chats but {len(answers)} answers")
        pairs = [self.answer_ids(c, a) for c, a in zip(chats, answers)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (prompt, _) in enumerate(pairs):
            groups.setdefault(tuple(prompt), []).append(i)
        if len(pairs) >= 2 * len(groups):
            return self._score_from_prefixes(pairs, groups, batch_size, desc)
        return self._score_whole(pairs, batch_size, desc)

    @torch.inference_mode()
    def _score_from_prefixes(self, pairs: list[tuple[list[int], list[int]]], groups: dict[tuple[int, ...], list[int]],
                             batch_size: int, desc: str) -> list[float]:
        """Each prompt's forward pass once (its cache and last logits), then its answers in batches
        fed after a copy of that cache: an answer's first token is scored by the prompt's last
        logits, the rest by the answer's own positions."""
        out = [0.0] * len(pairs)
        pad = self.tokenizer.pad_token_id
        for prompt, members in tqdm(groups.items(), desc=desc, unit="prompt", dynamic_ncols=True):
            ids = torch.tensor([prompt], device=self.device)
            first = self.model(input_ids=ids, use_cache=True)
            prefix = [(layer.keys, layer.values) for layer in first.past_key_values.layers]
            last = torch.log_softmax(first.logits[0, -1].float(), dim=-1).tolist()
            members = sorted(members, key=lambda i: len(pairs[i][1]))  # batches of like length pad little
            for b0 in range(0, len(members), batch_size):
                chunk = members[b0:b0 + batch_size]
                tails = [pairs[i][1] for i in chunk]
                scores = [last[t[0]] for t in tails]
                width = max(map(len, tails)) - 1
                if width > 0:  # answers of one token are scored by the prompt's last logits alone
                    feed = torch.full((len(chunk), width), pad, dtype=torch.long)
                    for r, t in enumerate(tails):  # right padding: a token never attends to a later pad
                        feed[r, : len(t) - 1] = torch.tensor(t[:-1])
                    n = len(chunk)  # a fresh cache each batch: the forward appends to it
                    cache = DynamicCache([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix],
                                         config=self.model.config)
                    logits = self.model(input_ids=feed.to(self.device), past_key_values=cache, use_cache=True,
                                        attention_mask=torch.ones((len(chunk), len(prompt) + width), dtype=torch.long,
                                                                  device=self.device)).logits
                    logp = torch.log_softmax(logits.float(), dim=-1)
                    for r, t in enumerate(tails):
                        if len(t) > 1:
                            scores[r] += float(logp[r, torch.arange(len(t) - 1), torch.tensor(t[1:])].sum())
                for i, v in zip(chunk, scores):
                    out[i] = v
        return out

    @torch.inference_mode()
    def _score_whole(self, pairs: list[tuple[list[int], list[int]]], batch_size: int, desc: str) -> list[float]:
        """Whole sequences (prompt + answer) in batches, the output layer only where answers are."""
        # each score is its own sequence's: batching by length changes padding, not results
        order = longest_first([len(p) + len(a) for p, a in pairs]) if self.sort_by_length else list(range(len(pairs)))
        scores: list[float] = []
        pad = self.tokenizer.pad_token_id
        for b0 in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
            chunk = [pairs[i] for i in order[b0:b0 + batch_size]]
            seqs = [p + a for p, a in chunk]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):  # right padding: positions match the unpadded sequence
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            labels = torch.full_like(ids, -100)
            for i, (p, a) in enumerate(chunk):
                labels[i, len(p): len(p) + len(a)] = torch.tensor(a)
            labels = labels.to(self.device)
            logits = completion_logits(self.model, ids.to(self.device), mask.to(self.device), labels)
            logp = torch.log_softmax(logits.float(), dim=-1)  # rows: answer tokens in order
            token_logp = logp.gather(1, labels[:, 1:][labels[:, 1:] != -100][:, None])[:, 0].cpu()
            at = 0
            for _, a in chunk:
                scores.append(float(token_logp[at: at + len(a)].sum()))
                at += len(a)
        out = [0.0] * len(pairs)
        for i, v in zip(order, scores):
            out[i] = v
        return out

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
