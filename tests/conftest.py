"""Shared fixtures: the tiny model, built once per test session (~30 s on one CPU thread)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of the default tiny model (sublim.tiny), loadable with the Auto classes."""
    import torch

    from sublim.tiny import TinyModelSpec, build_tiny_model

    torch.set_num_threads(1)  # tiny models: one thread is 5-7x faster on shared cores
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyModelSpec(), progress=False)


@pytest.fixture
def fake_model(tmp_path):
    """A model folder that plans (fingerprints) but cannot load: for key and plan tests."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d
