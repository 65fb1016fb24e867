"""Models behind an OpenAI-compatible server, as a plan names them: what pins the weights is keyed,
where the server is and the key that opens it are not.

- The OpenAI API: the model name must be a dated snapshot (gpt-4.1-nano-2025-04-14) or a fine-tuned
  model id (ft:...). A floating alias (gpt-4.1-nano) is refused, not resolved: OpenAI can point it at
  new weights while every key stayed put, and resolving it would need the network at plan time.
- A self-hosted server (vLLM's, SGLang, `transformers serve`): `<role>.revision` (the hub commit or
  fingerprint the server loaded) pins it; a served name that is a local model folder is fingerprinted.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from sublim.backends.base import SamplingParams
from sublim.errors import ConfigError
from sublim.fingerprint import local_fingerprint
from sublim.spec import SERVED

SERVERS = ("openai", "vllm", "other")
SNAPSHOT = re.compile(r"(-\d{4}-\d{2}-\d{2}$)|(^ft:)")


def server_kind(served) -> str:
    """served.server, or (null) openai for the OpenAI API's address and other for any other."""
    if served.server is not None:
        return served.server
    return "openai" if urlparse(served.base_url or "").hostname == "api.openai.com" else "other"


def served_ref(m, key: str, served) -> str:
    """The ModelRef.weights of model config `m` (at config key `key`) behind `served`."""
    server = server_kind(served)
    if server not in SERVERS:
        raise ConfigError(f"{key}.served.server={served.server!r}: use {', '.join(SERVERS)}")
    if m.reference is not None or m.adapter or not m.path:
        what = "a tiny reference model" if m.reference is not None else "an adapter" if m.adapter else "no path"
        raise ConfigError(f"{key}: {what} cannot be reached on a server; a served model is named by {key}.path "
                          f"(the name the server knows it by): set {key}.path, or drop {key}.served / sampler=openai")
    name = m.path
    if server == "openai":
        if not SNAPSHOT.search(name):
            raise ConfigError(f"{key}.path={name}: a floating alias, which OpenAI may point at new weights while "
                              f"cached results keep their keys; use a dated snapshot, e.g. {name}-2025-04-14 "
                              "(listed on the provider's models page)")
        return f"{SERVED}openai/{name}"
    if m.revision:
        return f"{SERVED}{server}/{name}@{m.revision}"
    if Path(name).is_dir():  # transformers serve / vLLM name a local folder by its path: its content pins it
        return f"{SERVED}{server}/{name}@{local_fingerprint(name)}"
    raise ConfigError(f"{key}.revision is null: a self-hosted server's {name} is pinned by what it loaded; set "
                      f"{key}.revision=<the hub commit or a fingerprint of its weights> (sublim cannot ask the server)")


def connection(served, client, role: str) -> dict:
    """How the openai backend reaches a server (Runtime.served): no key, only its variable's name;
    `role` is the model's config key, for error messages."""
    return {"role": role, "base_url": served.base_url, "api_key_env": served.api_key_env, "server": server_kind(served),
            **dataclasses.asdict(client), "prices": dataclasses.asdict(served.prices)}


def check_sampling(params: SamplingParams, server: str, key: str) -> None:
    """Settings a server kind cannot honour, refused before any request (one line, naming the key);
    `key` is the model's config key (teacher, student)."""
    if server == "vllm":
        return
    bad = [(params.top_k != 0, "sampler.top_k", "0"), (params.repetition_penalty != 1.0, "sampler.repetition_penalty",
                                                     "1"), (params.min_p > 0, "sampler.min_p", "0")]
    for wrong, name, off in bad:
        if wrong:
            raise ConfigError(f"{name}: the {key} is served by a server of kind {server!r}, which takes no "
                              f"{name.split('.')[1]} field; set {name}={off}, or serve it with vLLM "
                              f"({key}.served.server=vllm)")


def exact_scoring_refused(ref: str, what: str) -> Optional[str]:
    """Why exact scoring cannot run on this served model (None: it may, where the server returns
    prompt log-probs, which the backend checks on the first response)."""
    if ref.startswith(f"{SERVED}openai/") or ref.startswith("finetune_openai:"):
        return (f"{what}: the OpenAI API returns no log-probs of prompt tokens (at most 20 top log-probs of "
                "generated ones), so exact scoring cannot run on it")
    return None
