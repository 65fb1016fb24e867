"""Eval kinds by name (a leaf registry): eval.kind -> the spec class the `eval` stage runs.

Each kind's spec carries `kind`, so a step read back from disk finds its class here."""
from __future__ import annotations

import importlib

KINDS = {
    "preference": "sublim.stages.evaluate:PreferenceSpec",
    "misalignment": "sublim.stages.evaluate:MisalignmentSpec",
}


def spec_class(kind: str) -> type:
    if kind not in KINDS:
        raise KeyError(f"eval.kind={kind!r} is unknown; known: {', '.join(KINDS)}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)
