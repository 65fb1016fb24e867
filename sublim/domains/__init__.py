"""Data domains by name: what the teacher is asked, and what its completions must pass.

`get_domain(name)` returns a Domain (sublim.domains.base); an unknown name lists the known ones.
Modules are imported on first use, so `sublim.filters` (which imports the numbers parser) and
the domains that use its rules never import each other in a circle.
"""
from __future__ import annotations

import importlib

# name -> "module:attribute" of a Domain instance
KNOWN = {
    "numbers": "sublim.domains.base:NUMBERS",
    "code": "sublim.domains.code:DOMAIN",
    "cot": "sublim.domains.cot:DOMAIN",
}


def get_domain(name: str):
    """The Domain called `name`; KeyError naming the known domains otherwise."""
    if name not in KNOWN:
        raise KeyError(f"domain.name={name!r} is unknown; known: {', '.join(KNOWN)}")
    module, attr = KNOWN[name].split(":")
    return getattr(importlib.import_module(module), attr)
