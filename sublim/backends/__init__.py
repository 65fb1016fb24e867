"""Sampler backends by name (a leaf registry): `hf` (transformers, any device), `vllm` (GPU) and
`openai` (the OpenAI API or any OpenAI-compatible server).

`auto` is resolved by the planner for the device the job will run on (sublim.target), never here
at run time, so a dry run on a CPU login node plans the keys the GPU job computes. A served model
(its ModelRef.weights in runtime.served, or a "served:" ref) always runs on `openai`: the keyed ref
says where it runs, so a misalignment eval with a local subject and a served judge works.
"""
from __future__ import annotations

import importlib
from typing import Optional

from sublim.errors import ConfigError
from sublim.spec import SERVED, load_args

# name -> "module:class"; the class takes (path, revision, adapter, dtype, trust_remote_code, ...)
BACKENDS = {
    "hf": "sublim.backends.hf:HFSampler",
    "vllm": "sublim.backends.vllm:VLLMSampler",
    "openai": "sublim.backends.openai:OpenAISampler",
}
KNOWN = ("auto", *BACKENDS)


def backend_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"sampler.backend={name!r} is unknown; known: {', '.join(KNOWN)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_sampler(backend: str, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, vllm_engine: Optional[dict] = None,
                 device: Optional[str] = None, served: Optional[dict] = None):
    """A sampler of `backend`; `vllm_engine` holds the vLLM engine options (sampler.vllm), which
    the hf backend does not need; `device` the transformers device (None: CUDA when present);
    `served` the connection of a served model (runtime.served[ref], the openai backend only)."""
    cls = backend_class(backend)
    if backend == "openai":
        if not served:
            raise ConfigError(f"sampler.backend=openai needs the model's connection (<role>.served.base_url) "
                              f"for {path}")
        return cls(path, revision, adapter, dtype, trust_remote_code, connection=served)
    if backend == "vllm":
        return cls(path, revision, adapter, dtype, trust_remote_code, **(vllm_engine or {}))
    return cls(path, revision, adapter, dtype, trust_remote_code, device=device)


def backend_for(backend: str, model, runtime) -> str:
    """The backend that runs `model`: `openai` for a served one, else the spec's."""
    served = getattr(runtime, "served", None) or {}
    return "openai" if model.weights in served or model.weights.startswith(SERVED) else backend


def sampler_for(backend: str, model, inputs: dict[str, str], device: str, runtime):
    """A sampler for a spec's ModelRef, located through the stage's inputs."""
    backend = backend_for(backend, model, runtime)
    served = (getattr(runtime, "served", None) or {}).get(model.weights)
    if backend == "openai" and served is None:
        raise ConfigError(f"the model {model.weights} runs on sampler.backend=openai but has no connection "
                          "(runtime.served): give it <role>.served.base_url")
    return make_sampler(backend, **load_args(model, inputs), vllm_engine=dict(runtime.vllm), device=device,
                        served=served)
