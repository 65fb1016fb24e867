"""Stage `reference`: a tiny transformer pretrained from scratch on a synthetic chat corpus.

It stands in for a hub model on a laptop: the CPU demo's teacher and students start from it, and
its init seed gives the different-initialisation control. Output: model/ (an ordinary
transformers folder with tokenizer and chat template).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

VERSION = 1


def spec_of(reference) -> "TinyModelSpec":  # noqa: F821
    from sublim.tiny.model import TinyModelSpec

    return TinyModelSpec(**dataclasses.asdict(reference))


def pretrain(work: Path, reference) -> None:
    from sublim.tiny.model import build_tiny_model

    build_tiny_model(work / "model", spec_of(reference), force=True)
