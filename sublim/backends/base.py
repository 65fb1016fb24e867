"""What every sampler backend takes and returns, so stages never depend on one engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol


@dataclass(frozen=True)
class Chat:
    """One prompt: an optional system message, earlier (user, assistant) turns, and the user message.

    `history` holds worked examples shown before the question (eval.in_context: the teacher's data
    in the student's context instead of in its weights); every backend renders a chat through
    `messages()`, so sampling and exact scoring see the same turns."""

    user: str
    system: Optional[str] = None
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        turns = [{"role": role, "content": text} for pair in self.history
                 for role, text in zip(("user", "assistant"), pair)]
        return head + turns + [{"role": "user", "content": self.user}]


@dataclass(frozen=True)
class SamplingParams:
    """Explicit sampling settings: they override whatever the model's generation_config says."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64
    min_p: float = 0.0  # 0 = off


@dataclass
class Batch:
    """Completions for a contiguous slice [start, start + len(texts)) of the prompts.

    truncated[j]: completion j used its whole token budget (max_new_tokens) without producing an
    end-of-turn / eos token, so it may be cut short. Empty: not known (a sampler that cannot tell).
    """

    start: int
    texts: list[str]
    n_tokens: int
    truncated: list[bool] = field(default_factory=list)


class Sampler(Protocol):
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int, batch_size: int,
                 start: int = 0, desc: str = "sampling") -> Iterator[Batch]:
        """Completions batch by batch, from prompt index `start` on (resume), seeded per batch."""
        ...

    def close(self) -> None: ...
