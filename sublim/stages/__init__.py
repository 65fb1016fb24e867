"""The stages by name, in pipeline order (a leaf registry: names to module paths, imported on use).

A stage is one module with `VERSION`, a frozen `Spec` (or `spec_from_dict` where a stage has one
spec per kind), and `run(spec, work, inputs, runtime)`: the spec is the key and the only input;
`inputs` maps the refs in the spec to local paths; `runtime` holds what cannot change the output.
Adding a stage is one module plus a line here (or `register` from a test or a plugin).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from sublim.spec import from_dict

STAGES: dict[str, str] = {
    "convert": "sublim.stages.convert",
    "reference": "sublim.stages.reference",
    "teacher": "sublim.stages.teacher",
    "paraphrase": "sublim.stages.paraphrase",
    "sample": "sublim.stages.sample",
    "filter": "sublim.stages.filter",
    "divergence": "sublim.stages.divergence",
    "replace": "sublim.stages.replace",
    "rewrite": "sublim.stages.rewrite",
    "mix": "sublim.stages.mix",
    "remove": "sublim.stages.remove",
    "transform": "sublim.stages.transform",
    "score": "sublim.stages.score",
    "select": "sublim.stages.select",
    "finetune": "sublim.stages.finetune",
    "finetune_openai": "sublim.stages.finetune_openai",
    "eval": "sublim.stages.evaluate",
    "mnist": "sublim.stages.mnist",
    "entanglement": "sublim.stages.entanglement",
}
_REGISTERED: dict[str, ModuleType] = {}


def register(name: str, module: ModuleType) -> None:
    """Add a stage that is not in STAGES (a test's, a plugin's): any object with VERSION, Spec, run."""
    _REGISTERED[name] = module


def get_stage(name: str) -> ModuleType:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in STAGES:
        raise KeyError(f"stage {name!r} is unknown; known: {', '.join(list(STAGES) + list(_REGISTERED))}")
    return importlib.import_module(STAGES[name])


def spec_from_dict(name: str, data: dict):
    """The typed spec of stage `name` from its JSON form (an isolated stage reads it from disk)."""
    module = get_stage(name)
    if hasattr(module, "spec_from_dict"):
        return module.spec_from_dict(data)
    return from_dict(module.Spec, data)
