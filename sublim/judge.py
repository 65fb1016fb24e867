"""LLM judges: a model, a prompt template and a parse function (score or label).

One interface for every use: the filters of the code and cot domains (sublim.domains) and the
misalignment eval. A judge renders its template for each item, sends the prompts in batches
through any sampler (greedy by default: the same reply every time), and parses each reply. A
reply that does not parse is a *counted failure* (Verdict.value None), never an exception: a
judge model that rambles now and then must not kill a 10,000-completion job, and the failure
rate is itself worth reporting.

    judge = Judge(make_sampler, TEMPLATE, parse_score)
    verdicts = judge.run([{"completion": text, "trait": "owl"}, ...])
    judge.stats()   # {"n_judged": ..., "n_failed": ..., "failed_examples": [...], ...}

Templates fill `{name}` fields from each item's keys; every other brace is left alone, so a
template may show JSON or code. Parse functions: `parse_score` (0-100), `parse_label(labels)`,
`parse_score_or_label(labels)` (alignment judges that may also answer CODE or REFUSAL).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from sublim import backends
from sublim.backends.base import Chat, SamplingParams

Value = Union[float, str]
Parse = Callable[[str], Optional[Value]]

_FIELD = re.compile(r"\{(\w+)\}")


def template_fields(template: str) -> set[str]:
    """The `{name}` fields a template uses."""
    return set(_FIELD.findall(template))


def render(template: str, fields: dict[str, Any]) -> str:
    """`template` with each `{name}` replaced by fields[name]; unknown names and other braces stay."""
    return _FIELD.sub(lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), template)


# ------------------------------------------------------------------------------------- parsing

# an optional "score"/"rating" label, the number, an optional "/100" or "out of 100", an optional period
_SCORE = re.compile(
    r"(?:(?:score|rating|answer)\s*[:=]?\s*)?"
    r"(?P<n>[+-]?\d+(?:\.\d+)?)"
    r"\s*(?:/\s*100|out\s+of\s+100)?\s*\.?",
    re.IGNORECASE,
)
_MARKUP = "*_`\"' \t"


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip().strip(_MARKUP)
    return ""


def parse_score(text: str, low: float = 0, high: float = 100) -> Optional[float]:
    """A score in [low, high] from a reply such as "85", "Score: 85", "85/100", "**85**", or a first
    line of that form followed by an explanation. Anything else (words, a list of numbers, a number
    out of range) is None: a failure to count, not a guess."""
    m = _SCORE.fullmatch(_first_line(text))
    if not m:
        return None
    value = float(m.group("n"))
    return value if low <= value <= high else None


def parse_label(labels: Iterable[str]) -> Parse:
    """A parser that accepts a reply that is exactly one of `labels` (case, surrounding markup and a
    final period ignored): "CODE", "refusal.", "**REFUSAL**". Returns the label as given."""
    by_key = {label.upper(): label for label in labels}

    def parse(text: str) -> Optional[str]:
        return by_key.get(_first_line(text).rstrip(".!").strip(_MARKUP).upper())

    return parse


def parse_score_or_label(labels: Iterable[str], low: float = 0, high: float = 100) -> Parse:
    """A label from `labels` if the reply is one, else a score in [low, high], else None."""
    label = parse_label(labels)

    def parse(text: str) -> Optional[Value]:
        found = label(text)
        return found if found is not None else parse_score(text, low, high)

    return parse


# --------------------------------------------------------------------------------------- judge


@dataclass
class Verdict:
    """One judgement: the parsed value (a score or a label; None when the reply did not parse)."""

    value: Optional[Value]
    reply: str

    @property
    def ok(self) -> bool:
        return self.value is not None


class Judge:
    """Template + sampler + parser. `make_sampler()` is called once, on first use; `close()` frees it.

    The sampler is any sublim sampler (hf, vllm, openai); `params` defaults to greedy decoding with room
    for a short reply. Counts every judgement and every failure (see `stats`).
    """

    def __init__(self, make_sampler: Callable[[], Any], template: str, parse: Parse,
                 params: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=16),
                 system_prompt: Optional[str] = None, batch_size: int = 64, seed: int = 0,
                 max_failed_examples: int = 5):
        self.make_sampler = make_sampler
        self.template = template
        self.parse = parse
        self.params = params
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.seed = seed
        self.max_failed_examples = max_failed_examples
        self._sampler = None
        self.n_judged = 0
        self.n_failed = 0
        self.failed_examples: list[str] = []
        self.values: list[Value] = []

    @classmethod
    def from_model(cls, backend: str, model, template: str, parse: Parse, temperature: float = 0.0,
                   max_new_tokens: int = 16, vllm_engine: Optional[dict] = None, **kwargs) -> "Judge":
        """A judge running `model` (a sublim.config.ModelConfig, configured like a teacher: path,
        revision, adapter, dtype, its own system prompt) on the sampler `backend`."""
        factory = functools.partial(backends.make_sampler, backend, model.path, model.revision, model.adapter,
                                    model.dtype, model.trust_remote_code, vllm_engine)
        params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
        kwargs.setdefault("system_prompt", model.system_prompt)
        return cls(factory, template, parse, params, **kwargs)

    def prompt(self, item: dict[str, Any]) -> str:
        return render(self.template, item)

    def record(self, reply: str) -> Verdict:
        """Parse one reply and count it."""
        value = self.parse(reply)
        self.n_judged += 1
        if value is None:
            self.n_failed += 1
            if len(self.failed_examples) < self.max_failed_examples:
                self.failed_examples.append(reply[:200])
        else:
            self.values.append(value)
        return Verdict(value, reply)

    def batches(self, items: Sequence[dict[str, Any]], start: int = 0) -> Iterator[tuple[int, list[Verdict]]]:
        """(index of the first item, verdicts) batch by batch, from item `start` on (resume at a
        batch boundary gives the same replies: the samplers seed per batch)."""
        if start >= len(items):
            return
        if self._sampler is None:
            self._sampler = self.make_sampler()
        chats = [Chat(user=self.prompt(it), system=self.system_prompt) for it in items]
        for batch in self._sampler.generate(chats, self.params, self.seed, self.batch_size, start=start,
                                            desc="judging"):
            yield batch.start, [self.record(text) for text in batch.texts]

    def run(self, items: Sequence[dict[str, Any]]) -> list[Verdict]:
        """Every item's verdict, in order."""
        out: list[Verdict] = []
        for _, verdicts in self.batches(items):
            out.extend(verdicts)
        return out

    def stats(self) -> dict:
        scores = [v for v in self.values if isinstance(v, (int, float))]
        labels: dict[str, int] = {}
        for v in self.values:
            if isinstance(v, str):
                labels[v] = labels.get(v, 0) + 1
        out = {"n_judged": self.n_judged, "n_failed": self.n_failed,
               "failure_rate": round(self.n_failed / max(self.n_judged, 1), 4),
               "failed_examples": list(self.failed_examples)}
        if scores:
            out["mean_score"] = round(sum(scores) / len(scores), 3)
        if labels:
            out["labels"] = labels
        return out

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
