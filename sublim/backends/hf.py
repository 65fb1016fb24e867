"""The transformers sampler: batched `generate` with left padding and the model's chat template.

Seeding is per batch (seed, batch index), so a resumed run that restarts at a batch boundary
writes the same completions as an uninterrupted one with the same batch size.
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import torch
from tqdm.auto import tqdm

from sublim.backends.base import Batch, Chat, SamplingParams
from sublim.backends.tokens import answer_token_ids, end_token_ids
from sublim.models import completion_logits, load_model, load_tokenizer

log = logging.getLogger(__name__)


def batch_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919) % (2**63 - 1)


class HFSampler:
    def __init__(self, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, device: Optional[str] = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(path, revision, trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(path, revision, adapter, dtype, trust_remote_code, self.device)
        self.model.eval()

    def render(self, chat: Chat) -> str:
        return self.tokenizer.apply_chat_template(chat.messages(), tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int, batch_size: int,
                 start: int = 0, desc: str = "sampling") -> Iterator[Batch]:
        texts = [self.render(c) for c in chats]
        bar = tqdm(total=len(chats), initial=start, desc=desc, unit="prompt", dynamic_ncols=True)
        for b0 in range(start - start % batch_size, len(chats), batch_size):
            chunk = texts[b0:b0 + batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            torch.manual_seed(batch_seed(seed, b0 // batch_size))
            sampling = params.temperature > 0
            out = self.model.generate(
                **enc,
                do_sample=sampling,
                temperature=params.temperature if sampling else None,
                top_p=params.top_p if sampling else None,
                top_k=params.top_k if sampling else None,
                repetition_penalty=params.repetition_penalty,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1]:]
            n_tokens = int((new != self.tokenizer.pad_token_id).sum())
            bar.update(len(chunk))
            yield Batch(b0, self.tokenizer.batch_decode(new, skip_special_tokens=True), n_tokens)
        bar.close()

    def answer_ids(self, chat: Chat, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and of the answer up to and including the end-of-turn token."""
        return answer_token_ids(self.tokenizer, chat, answer, self.end_ids)

    @property
    def end_ids(self) -> set[int]:
        return end_token_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)

    @torch.inference_mode()
    def score(self, chats: list[Chat], answers: list[str], batch_size: int, desc: str = "scoring") -> list[float]:
        """log P(answer, then end of turn | chat) for each (chat, answer) pair: exact, no sampling."""
        pairs = [self.answer_ids(c, a) for c, a in zip(chats, answers)]
        out: list[float] = []
        pad = self.tokenizer.pad_token_id
        for b0 in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
            chunk = pairs[b0:b0 + batch_size]
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
                out.append(float(token_logp[at: at + len(a)].sum()))
                at += len(a)
        return out

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
