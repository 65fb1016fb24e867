"""What a plan will ask of paid APIs, estimated before anything is sampled (dry_run, sweep-plan).

Counted for the missing stages whose model is served (cached ones cost nothing again):
- requests: one per prompt (a prompt's samples_per_prompt answers are one request with n), one per
  eval question (its n_samples answers: n), one per judged completion (the misalignment eval's
  judge asks two questions per answer);
- prompt tokens: characters / 4 (OpenAI's rule of thumb for English text) of the system prompt and
  the user message, plus 7 per request for the chat format; number lists tokenise denser than
  English, so treat it as a rough figure;
- completion tokens: an UPPER bound, max_tokens x answers (most answers stop earlier);
- training tokens: (rows the filter keeps, at most n_keep) x (prompt + max_tokens) x epochs, again an
  upper bound, before any row exists;
- cost: those tokens at the prices in the model's config (served.prices), where given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sublim.spec import parse_artifact_ref

CHARS_PER_TOKEN = 4
CHAT_OVERHEAD = 7  # tokens a chat request adds around its messages (role markers, reply priming)


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # upper bound
    training_tokens: int = 0  # upper bound, epochs included
    cost: Optional[float] = 0.0  # US$; None where a price is missing
    priced: list[str] = field(default_factory=list)

    def add(self, other: "Usage") -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.training_tokens += other.training_tokens
        self.cost = None if self.cost is None or other.cost is None else self.cost + other.cost

    def line(self) -> str:
        parts = [f"{self.requests:,} requests"] if self.requests else []
        parts += [f"~{self.prompt_tokens:,} prompt tokens"] if self.prompt_tokens else []
        parts += [f"<= {self.completion_tokens:,} completion tokens"] if self.completion_tokens else []
        parts += [f"<= {self.training_tokens:,} training tokens"] if self.training_tokens else []
        cost = "cost unknown (no served.prices in config)" if self.cost is None else f"~${self.cost:,.2f}"
        return f"{', '.join(parts) or 'nothing'}; {cost}"


def tokens(text: Optional[str]) -> int:
    return -(-len(text or "") // CHARS_PER_TOKEN)


def _priced(usage: Usage, prices: dict, training: bool = False) -> Usage:
    rates = [(usage.prompt_tokens, prices.get("input")), (usage.completion_tokens, prices.get("output"))]
    if training:
        rates = [(usage.training_tokens, prices.get("training"))]
    if any(n and rate is None for n, rate in rates):
        usage.cost = None
    else:
        usage.cost = sum(n * (rate or 0) / 1e6 for n, rate in rates)
    return usage


def _chats_usage(chats: list[tuple[Optional[str], str]], n: int, max_tokens: int, prices: dict) -> Usage:
    """Requests for (system, user) chats, `n` answers each."""
    return _priced(Usage(requests=len(chats),
                         prompt_tokens=sum(tokens(s) + tokens(u) + CHAT_OVERHEAD for s, u in chats),
                         completion_tokens=len(chats) * n * max_tokens), prices)


def estimate(steps: list, missing: set[str]) -> dict[str, tuple[str, Usage]]:
    """{key: (stage, usage)} of the missing steps that call a served model."""
    from sublim.stages.sample import prompts_of

    by_key = {s.key: s for s in steps}
    out: dict[str, tuple[str, Usage]] = {}
    sampled: dict[str, tuple[list[str], object]] = {}  # sample key -> (prompts, spec)
    for s in steps:
        if s.stage == "sample":
            sampled[s.key] = (prompts_of(s.spec, s.inputs), s.spec)
    for s in steps:
        if s.key not in missing:
            continue
        served = s.runtime.served
        if s.stage == "sample" and s.spec.backend == "openai":
            prompts, spec = sampled[s.key]
            per = spec.domain.get("samples_per_prompt", 1)
            firsts = prompts[::per]
            out[s.key] = (s.stage, _chats_usage([(spec.system_prompt, p) for p in firsts], per,
                                                spec.sampling.max_new_tokens,
                                                served[spec.teacher.weights].get("prices", {})))
        elif s.stage == "filter" and s.spec.judge is not None and s.spec.judge.backend == "openai":
            upstream = parse_artifact_ref(s.spec.samples)
            prompts, spec = sampled.get(upstream[1], ([], None)) if upstream else ([], None)
            j = s.spec.judge
            out[s.key] = (s.stage, _chats_usage([(j.system_prompt, j.template + p) for p in prompts], 1,
                                                j.max_new_tokens, served[j.model.weights].get("prices", {})))
        elif s.stage == "finetune_openai":
            out[s.key] = (s.stage, _training(s, by_key, sampled))
        elif s.stage == "eval" and getattr(s.spec, "backend", None) == "openai":
            out[s.key] = (s.stage, _eval(s))
    return out


def _training(s, by_key: dict, sampled: dict) -> Usage:
    spec = s.spec
    data = parse_artifact_ref(spec.data)
    rows, per_row = 0, 0
    step = by_key.get(data[1]) if data else None
    while step is not None and step.stage != "filter":  # transform / select in between keep the rows' size
        ref = getattr(step.spec, "data", None) or getattr(step.spec, "rows", None)
        up = parse_artifact_ref(ref) if isinstance(ref, str) else None
        step = by_key.get(up[1]) if up else None
    if step is not None:
        up = parse_artifact_ref(step.spec.samples)
        prompts, sample = sampled.get(up[1], ([], None)) if up else ([], None)
        if prompts:
            rows = min(len(prompts), step.spec.n_keep or len(prompts))
            per_row = (sum(tokens(p) for p in prompts) // len(prompts) + tokens(spec.system_prompt)
                       + sample.sampling.max_new_tokens + CHAT_OVERHEAD)
    usage = Usage(training_tokens=rows * per_row * spec.epochs)
    return _priced(usage, s.runtime.served[spec.student.weights].get("prices", {}), training=True)


def _eval(s) -> Usage:
    spec = s.spec
    prices = s.runtime.served[spec.subject.weights].get("prices", {})
    if spec.sampling is None:  # exact scoring on a self-hosted server: a request per question x answer form
        forms = len(spec.forms or ()) * len(getattr(spec, "candidates", ()))
        return _priced(Usage(requests=len(spec.questions) * max(forms, 1)), prices)
    n = getattr(spec, "n_samples", None) or 1
    usage = _chats_usage([(spec.system_prompt, q) for q in spec.questions], n, spec.sampling.max_new_tokens, prices)
    judge = getattr(spec, "judge", None)  # the misalignment eval: two judge questions per answer
    if judge is not None and judge.model.weights in s.runtime.served:
        answers = len(spec.questions) * n
        j = Usage(requests=2 * answers, prompt_tokens=2 * answers * (spec.sampling.max_new_tokens + 200),
                  completion_tokens=2 * answers * judge.max_new_tokens)
        usage.add(_priced(j, s.runtime.served[judge.model.weights].get("prices", {})))
    return usage


def missing_usage(plan, store) -> dict[str, tuple[str, Usage]]:
    return estimate(plan.steps, {s.key for s in plan.steps if not store.exists(s.stage, s.key)})


def lines(plan, store) -> list[str]:
    """The dry run's API lines for one cell."""
    return [f"  api: {stage} {u.line()}" for stage, u in missing_usage(plan, store).values()]


def total(found: dict[str, tuple[str, Usage]]) -> Optional[str]:
    """One line for a grid: each missing stage counted once however many cells share it."""
    if not found:
        return None
    sum_ = Usage()
    for _, u in found.values():
        sum_.add(u)
    return (f"API use of the missing stages (estimated before sampling, see sublim.api_usage): {sum_.line()}")
