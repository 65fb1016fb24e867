"""The MNIST auxiliary-logit experiment (Cloud, Le et al. 2025, section 6), many seeds at once.

A teacher MLP learns digits through its 10 class logits; a student with the SAME initial weights,
trained only to match the teacher's m auxiliary logits on uniform noise, learns digits too; a
student from a different init does not. `run` trains all seeds as one batched network.
Names are imported on first use, so `sublim.mnist.spec` (the settings) loads without torch.
"""
from __future__ import annotations

import importlib

__all__ = ["ARMS", "MnistSpec", "run"]
# The batched-vs-sequential timing is sublim.mnist.bench.bench (not re-exported: the submodule's
# name would shadow a function of the same name here).


def __getattr__(name: str):
    if name == "run":
        return importlib.import_module("sublim.mnist.experiment").run
    if name in ("ARMS", "MnistSpec"):
        return getattr(importlib.import_module("sublim.mnist.spec"), name)
    raise AttributeError(name)
