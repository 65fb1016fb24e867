"""Stage `mnist`: the MNIST auxiliary-logit experiment (sublim.mnist) as one cached stage.

Output: metrics.json, curves.json, mnist.png. The data files are keyed by content (a path says
nothing about what is in it now); batching and threads change speed, not results, and travel in
the runtime. The device is resolved and keyed, as in every stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sublim.mnist.spec import MnistSpec
from sublim.spec import Runtime

VERSION = 2  # 2: typed spec (the settings as before, data by content, device, library versions)
RUNTIME_FIELDS = ("batched", "threads")  # MnistSpec fields that are runtime, not keyed


@dataclass(frozen=True)
class Spec:
    settings: dict  # MnistSpec's fields but RUNTIME_FIELDS; data_path a content ref (or None); device resolved
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    from sublim.mnist.experiment import run as mnist_run  # torch: only where the stage runs

    settings = dict(spec.settings)
    data = settings.get("data_path")
    settings["data_path"] = inputs[data] if data else None
    names = {f.name for f in dataclasses.fields(MnistSpec)}
    mnist = MnistSpec(**{k: v for k, v in settings.items() if k in names}, batched=runtime.batched,
                      threads=runtime.threads)
    mnist_run(mnist, work)
