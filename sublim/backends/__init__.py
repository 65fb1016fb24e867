"""Sampler backends by name (a leaf registry): `hf` (transformers, any device) and `vllm` (GPU).

`auto` is resolved by the planner for the device the job will run on (sublim.target), never here
at run time, so a dry run on a CPU login node plans the keys the GPU job computes.
"""
from __future__ import annotations

import importlib
from typing import Optional

from sublim.spec import load_args

# name -> "module:class"; the class takes (path, revision, adapter, dtype, trust_remote_code, ...)
BACKENDS = {
    "hf": "sublim.backends.hf:HFSampler",
    "vllm": "sublim.backends.vllm:VLLMSampler",
}
KNOWN = ("auto", *BACKENDS)


def backend_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"sampler.backend={name!r} is unknown; known: {', '.join(KNOWN)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_sampler(backend: str, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, vllm_engine: Optional[dict] = None,
                 device: Optional[str] = None):
    """A sampler of `backend`; `vllm_engine` holds the vLLM engine options (sampler.vllm), which
    the hf backend does not need; `device` the transformers device (None: CUDA when present)."""
    cls = backend_class(backend)
    if backend == "vllm":
        return cls(path, revision, adapter, dtype, trust_remote_code, **(vllm_engine or {}))
    return cls(path, revision, adapter, dtype, trust_remote_code, device=device)


def sampler_for(backend: str, model, inputs: dict[str, str], device: str, runtime):
    """A sampler for a spec's ModelRef, located through the stage's inputs."""
    return make_sampler(backend, **load_args(model, inputs), vllm_engine=dict(runtime.vllm), device=device)
