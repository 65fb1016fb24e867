"""Where a job's stages will run, decided once when the cell is planned.

`auto` settings (device, sampler backend, dtype, precision) are resolved for that device, from the
launcher the job is sent with: a SLURM launcher that asks for GPUs plans CUDA even on a CPU login
node, so a dry run there shows the keys the GPU job will compute. Nothing here imports torch
unless this machine has an NVIDIA driver.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Optional

from sublim.backends import BACKENDS
from sublim.errors import ConfigError

DTYPES = {"auto": None, "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


@dataclass(frozen=True)
class Target:
    device: str  # cpu | cuda
    backend: str  # hf | vllm
    why: str  # one line: how both were decided

    def dtype(self, setting: str, key: str) -> str:
        """A model's dtype for this device: auto is bfloat16 on CUDA, float32 on CPU."""
        if setting not in DTYPES:
            raise ConfigError(f"{key}={setting!r}: use auto, bfloat16 (bf16), float16 (fp16) or float32 (fp32)")
        return DTYPES[setting] or ("bfloat16" if self.device == "cuda" else "float32")


def local_cuda() -> bool:
    """CUDA on this machine (torch is imported only where an NVIDIA driver is)."""
    if not (os.path.exists("/proc/driver/nvidia/version") or glob.glob("/dev/nvidia[0-9]*")):
        return False
    import torch

    return torch.cuda.is_available()


def launcher_gpus(launcher: Optional[dict[str, Any]]) -> Optional[int]:
    """GPUs per job a cluster launcher asks for (None: a local launcher, the job runs here)."""
    target = str((launcher or {}).get("_target_", "")).lower()
    if "local" in target or not ("slurm" in target or "submitit" in target):
        return None
    gpus = launcher.get("gpus_per_node") or launcher.get("gpus_per_task") or 0
    gres = str(launcher.get("gres") or "")
    return int(gpus) or (1 if "gpu" in gres else 0)


def resolve(device: str, backend: str, launcher: Optional[dict[str, Any]] = None) -> Target:
    """Target for the `device` and `sampler.backend` settings (each auto or a name)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={device!r}: use auto, cpu or cuda")
    if backend != "auto" and backend not in BACKENDS:  # the registry: a new backend is known here too
        raise ConfigError(f"sampler.backend={backend!r} is unknown; known: auto, {', '.join(BACKENDS)}")
    gpus = launcher_gpus(launcher)
    if device != "auto":
        dev, why = device, f"device={device}"
    elif gpus is not None:
        dev, why = ("cuda" if gpus > 0 else "cpu"), f"device=auto: the launcher asks for {gpus} GPU(s) per job"
    else:
        dev = "cuda" if local_cuda() else "cpu"
        why = "device=auto: " + ("CUDA is available here" if dev == "cuda" else "no CUDA device here")
    if backend != "auto":
        return Target(dev, backend, f"{why}; sampler.backend={backend}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if dev == "cuda" and has_vllm:
        return Target(dev, "vllm", f"{why}; sampler.backend=auto: vllm (installed, CUDA)")
    reason = "no CUDA" if dev != "cuda" else "vllm is not installed"
    return Target(dev, "hf", f"{why}; sampler.backend=auto: transformers ({reason})")
