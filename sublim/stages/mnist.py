"""Stage `mnist`: the MNIST auxiliary-logit experiment (sublim.mnist) as one cached stage.

Output: metrics.json, curves.json, mnist.png. The data files are keyed by content (a path says
nothing about what is in it now); batching and threads change speed, not results, and travel in
the runtime. The device is resolved and keyed, as in every stage.

Like an eval kind (sublim.evals), the stage says what a job makes of its result: `cell` (the W&B
names), `FILES` (copied into the job folder), `lines` (printed) and `tracked` (the W&B summary).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sublim.mnist.spec import MnistSpec
from sublim.spec import Runtime

VERSION = 2  # 2: typed spec (the settings as before, data by content, device, library versions)
RUNTIME_FIELDS = ("batched", "threads")  # MnistSpec fields that are runtime, not keyed
FILES = ("curves.json", "mnist.png")  # beside the job's metrics.json: the figure without the store


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


# -- what a job makes of it ------------------------------------------------------------------------
def cell(spec: Spec) -> dict:
    group = f"mnist.aux{spec.settings['n_aux']}"
    return {"condition": "mnist", "group": group, "name": f"{group}.seed{spec.settings['seed']}"}


def _arms(m: dict) -> dict:
    return {"teacher": m["teacher"], "reference": m["reference"], **m["arms"]}


def lines(m: dict) -> list[str]:
    out = [f"\n== MNIST auxiliary-logit distillation, {m['n_seeds']} seeds (test accuracy, 95 % CI over seeds)"]
    for name, v in _arms(m).items():
        lo = "" if v["low"] is None else f"  [{v['low']:.3f}, {v['high']:.3f}]"
        out.append(f"   {name:<18} {v['mean']:.3f}{lo}")
    return out


def tracked(m: dict) -> dict:
    return {f"accuracy/{a}": v["mean"] for a, v in _arms(m).items()}
