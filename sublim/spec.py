"""What every stage spec is made of, and the runtime a stage may read beside it.

A stage's spec is a frozen dataclass of resolved values (no `auto`), with models and files
named by their content (a fingerprint, a hub commit, or the key of the stage that made them) and
never by where they are. Where they are travels beside the spec as `inputs` (ref -> local path),
and how fast or where the stage runs as `Runtime`: neither is in the key. This module is a leaf
(stdlib only), so stages, the planner and the isolated-stage runner can all import it.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

HUB = "hub:"
# a model behind an OpenAI-compatible server: "served:<server>/<name>" or "served:<server>/<name>@<revision>",
# <server> the kind of server (openai | vllm | other: which request fields it takes), <name> what
# requests name, <revision> what pins its weights (the provider's dated snapshot is in the name)
SERVED = "served:"


@dataclass(frozen=True)
class ModelRef:
    """A model as a key holds it.

    weights: "sha256:..." (a local folder's content), "hub:org/name@commit", "served:<server>/<name>[@rev]"
    (a model behind an OpenAI-compatible server), or "<stage>:<key>/<sub>" (an artifact: the reference
    stage's model, a teacher's adapter, the model id an OpenAI fine-tune returned). adapter: the same kinds, or None.
    dtype: resolved for the device the stage runs on (float32 | bfloat16 | float16)."""

    weights: str
    adapter: Optional[str] = None
    dtype: str = "float32"
    trust_remote_code: bool = False

    @property
    def unresolved(self) -> bool:
        return "@unresolved:" in self.weights


@dataclass(frozen=True)
class Runtime:
    """What a stage may read beyond its spec. None of it changes what is computed, each field says
    why; a test walks the config schema and fails on a field that is neither keyed nor listed here."""

    # prompts (or rows) per forward pass: speed and memory. The transformers sampler seeds each
    # batch, so the size picks WHICH seeded draw is made (never its distribution); it is recorded
    # in the work folder and a resume with another size restarts the stage (no spliced draws)
    batch_size: int = 64
    # examples per device step in training; gradient accumulation keeps the keyed effective batch
    micro_batch_size: int = 1
    save_steps: int = 500  # trainer checkpoints: only where a killed fine-tune resumes from
    vllm: dict = field(default_factory=dict)  # engine memory, parallelism, context room, chunking
    threads: int = 1  # torch intra-op threads on CPU (speed; the device and dtype are keyed)
    batched: bool = True  # MNIST: seeds side by side or one after another (the same numbers)
    artifacts: str = "artifacts"  # where the store is
    # how to reach each served model, by its ModelRef.weights: {base_url, api_key_env, server,
    # max_in_flight, max_retries, timeout_s}. Where a model is served, not what it is (the ref is keyed)
    served: dict = field(default_factory=dict)


def artifact_ref(stage: str, key: str, sub: str = "") -> str:
    """A ref to an upstream artifact (or a file or folder inside it)."""
    return f"{stage}:{key}" + (f"/{sub}" if sub else "")


def parse_artifact_ref(ref: str) -> Optional[tuple[str, str, str]]:
    """(stage, key, sub) of an artifact ref, None for content and hub refs."""
    if ref.startswith((HUB, SERVED, "sha256:")) or ":" not in ref:
        return None
    stage, rest = ref.split(":", 1)
    key, _, sub = rest.partition("/")
    return stage, key, sub


def locate(inputs: dict[str, str], ref: str) -> str:
    """The local path of `ref` (inputs), or the hub id of a hub ref."""
    if ref.startswith(HUB):
        return ref[len(HUB):].rsplit("@", 1)[0]
    if ref.startswith(SERVED):
        return served_name(ref)
    return inputs[ref]


def served_name(ref: str) -> str:
    """The model name requests carry, from a "served:<server>/<name>[@revision]" ref."""
    return ref[len(SERVED):].split("/", 1)[1].rsplit("@", 1)[0]


def served_server(ref: str) -> str:
    """The kind of server (openai | vllm | other) of a served ref."""
    return ref[len(SERVED):].split("/", 1)[0]


def hub_revision_of(ref: str) -> Optional[str]:
    return ref.rsplit("@", 1)[1] if ref.startswith(HUB) else None


def load_args(m: ModelRef, inputs: dict[str, str]) -> dict:
    """What sublim.models.load_model (and the samplers) take for this model."""
    return {"path": locate(inputs, m.weights), "revision": hub_revision_of(m.weights),
            "adapter": locate(inputs, m.adapter) if m.adapter else None, "dtype": m.dtype,
            "trust_remote_code": m.trust_remote_code}


# -- library versions --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def libraries(*dists: str) -> dict[str, Optional[str]]:
    """major.minor of each library a stage computes with: keyed. TRL, transformers and PEFT change
    defaults and numerics in minor releases and keep them within a minor's patches; the full versions
    are recorded in every artifact's provenance."""
    out = {}
    for d in dists:
        v = version(d)
        out[d] = ".".join(v.split("+")[0].split(".")[:2]) if v else None
    return out


@functools.lru_cache(maxsize=1)
def sublim_commit() -> Optional[str]:
    """The git commit sublim runs from (with +dirty when the tree has changes), None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


MODEL_LIBRARIES = ("torch", "transformers")  # what computes with a model: keyed (libraries)
TRAIN_LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
PROVENANCE_LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "openai")


def provenance() -> dict:
    """Full versions of the libraries that compute stages, and the sublim commit."""
    return {"libraries": {d: v for d in PROVENANCE_LIBRARIES if (v := version(d))}, "sublim": sublim_commit()}


# -- specs as dicts and back -----------------------------------------------------------------
def to_dict(spec: Any) -> dict:
    return dataclasses.asdict(spec)


def from_dict(cls: type, data: Any) -> Any:
    """A spec dataclass from its dict (JSON): nested dataclasses, Optional, tuples."""
    return _build(cls, data)


def _build(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value})
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        dcs = [a for a in args if dataclasses.is_dataclass(a)]
        if dcs and isinstance(value, dict):
            return _build(dcs[0], value)
        return _build(args[0], value) if len(args) == 1 else value
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_build(inner, v) for v in value)
    return value
