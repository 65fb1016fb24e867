"""Stage `reference`: a tiny transformer pretrained from scratch on a synthetic chat corpus.

It stands in for a hub model on a laptop: the CPU demo's teacher and students start from it, and
its init seed gives the different-initialisation control. Output: model/ (an ordinary
transformers folder with tokenizer and chat template).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sublim.spec import Runtime
from sublim.tiny.spec import TinyModelSpec

VERSION = 2  # 2: spec = the settings + library versions


@dataclass(frozen=True)
class Spec:
    model: TinyModelSpec
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    from sublim.tiny.model import build_tiny_model

    build_tiny_model(work / "model", spec.model, force=True)
