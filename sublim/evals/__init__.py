"""Eval kinds by name (a leaf registry): eval.kind -> the module of that kind, imported on use.

An eval kind is one module with
- `Spec`: a frozen dataclass, the `eval` stage's key and only input, with a `kind` field (its name
  here), so a step read back from disk finds its class;
- `run(spec, work, inputs, runtime)`: writes `metrics.json` into `work`, holding at least
  `n_questions`, `n_answers` and `confidence` (and `answers.jsonl`, which W&B shows as a table);
- `summary(ev, target) -> dict`: its part of the job's metrics.json, from that metrics.json (`target`:
  the trait the cell measures, None for a base cell); `lines(m) -> list[str]`: what the job prints
  of it; `tracked(m) -> dict`: the W&B run summary (flat names).
Adding one is that module plus a line in KINDS (or `register` from a test or a plugin).
"""
from __future__ import annotations

import importlib
from types import ModuleType

KINDS = {
    "preference": "sublim.evals.preference",
    "misalignment": "sublim.evals.misalignment",
}
_REGISTERED: dict[str, ModuleType] = {}


def register(name: str, module: ModuleType) -> None:
    """Add an eval kind that is not in KINDS (a test's, a plugin's): an object with the names above."""
    _REGISTERED[name] = module


def known() -> list[str]:
    return list(KINDS) + [k for k in _REGISTERED if k not in KINDS]


def get_kind(name: str) -> ModuleType:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in KINDS:
        raise KeyError(f"eval.kind={name!r} is unknown; known: {', '.join(known())}")
    return importlib.import_module(KINDS[name])


def spec_class(kind: str) -> type:
    return get_kind(kind).Spec
