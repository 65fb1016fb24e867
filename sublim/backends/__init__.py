"""Sampler backends by name: `hf` (transformers, any device) and `vllm` (GPU); `auto` picks."""
from __future__ import annotations

import importlib.util
import logging
from typing import Optional

log = logging.getLogger(__name__)

KNOWN = ("auto", "hf", "vllm")


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): `auto` becomes vllm when vLLM imports and CUDA is present, else hf."""
    if name not in KNOWN:
        raise ValueError(f"sampler.backend={name!r} is unknown; known: {', '.join(KNOWN)}")
    if name != "auto":
        return name, f"sampler.backend={name}"
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    has_cuda = torch.cuda.is_available()
    if has_vllm and has_cuda:
        return "vllm", "auto: vllm is installed and CUDA is available"
    missing = [w for w, ok in (("vllm is not installed", has_vllm), ("no CUDA device", has_cuda)) if not ok]
    return "hf", "auto: transformers, because " + " and ".join(missing)


def make_sampler(backend: str, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, vllm_engine: Optional[dict] = None):
    """A sampler of `backend`; `vllm_engine` holds the vLLM engine options (sampler.vllm), which
    the hf backend does not need."""
    if backend == "hf":
        from sublim.backends.hf import HFSampler

        return HFSampler(path, revision, adapter, dtype, trust_remote_code)
    if backend == "vllm":
        from sublim.backends.vllm import VLLMSampler

        return VLLMSampler(path, revision, adapter, dtype, trust_remote_code, **(vllm_engine or {}))
    raise ValueError(f"sampler.backend={backend!r} is unknown; known: hf, vllm")
