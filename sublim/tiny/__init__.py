"""A tiny Llama built and pretrained locally, loadable by path like a hub model (tests, CPU demo).

Names are imported on first use, so `sublim.tiny.spec` (the settings) loads without torch."""
from __future__ import annotations

import importlib

__all__ = ["TinyModelSpec", "build_tiny_model", "read_spec_record", "spec_from_dict", "spec_record"]


def __getattr__(name: str):
    if name == "TinyModelSpec":
        return importlib.import_module("sublim.tiny.spec").TinyModelSpec
    if name in __all__:
        return getattr(importlib.import_module("sublim.tiny.model"), name)
    raise AttributeError(name)
