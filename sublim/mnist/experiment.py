"""run(spec, out_dir): teachers, student arms, accuracies with 95 % t-intervals, curves, a figure.

Writes metrics.json, curves.json and mnist.png into out_dir and returns the metrics dict.
Every interval is sublim.stats.t_interval over seeds, as in the paper's figures.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..stats import RATE, t_interval
from .data import load
from .model import cpu_threads
from .plot import plot
from .spec import MnistSpec
from .train import SeedResults, resolve_device, train_seeds, train_sequential


def _summary(values) -> dict:
    values = [float(v) for v in values]
    return {"per_seed": values, **t_interval(values, bounds=RATE).as_dict()}


def _json(obj):
    """NaN (a one-seed interval) -> null, so the files stay strict JSON."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    return obj


def metrics_of(res: SeedResults, spec: MnistSpec, device: torch.device, data_info: dict, times: dict) -> dict:
    return {
        "spec": asdict(spec),
        "device": str(device),
        "seeds": res.seeds,
        "n_seeds": len(res.seeds),
        "data": data_info,
        "teacher": _summary(res.teacher_acc),
        "reference": _summary(res.reference_acc),
        "arms": {arm: _summary(acc) for arm, acc in res.arm_acc.items()},
        "timings": times,
    }


def curves_of(res: SeedResults) -> dict:
    arms = {}
    for arm, c in res.curves.items():
        ivs = [t_interval(c[:, j], bounds=RATE) for j in range(c.shape[1])]
        arms[arm] = {"mean": [iv.mean for iv in ivs], "low": [iv.low for iv in ivs],
                     "high": [iv.high for iv in ivs], "per_seed": np.asarray(c).tolist()}
    return {"steps": res.curve_steps, "arms": arms}


def run(spec: MnistSpec, out_dir: Path, progress: bool = True) -> dict:
    spec.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    t0 = time.perf_counter()
    data = load(spec.data_path, spec.test_fraction, spec.split_seed)
    data_s = time.perf_counter() - t0
    seeds = list(range(spec.seed, spec.seed + spec.n_seeds))
    with cpu_threads(spec.threads, device):
        train = train_seeds if spec.batched else train_sequential
        res = train(spec, data, seeds, device, progress)
    times = {"data_s": data_s, **res.times, "total_s": time.perf_counter() - t0,
             "batched": spec.batched, "torch_threads": spec.threads if device.type == "cpu" else None}
    info = {"source": data.source, "n_train": len(data.y_train), "n_test": len(data.y_test),
            "n_features": data.n_features}
    metrics, curves = metrics_of(res, spec, device, info, times), curves_of(res)
    plot(metrics, curves, out_dir / "mnist.png")
    metrics = _json(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "curves.json").write_text(json.dumps(_json(curves), indent=2))
    return metrics
