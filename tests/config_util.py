"""Composing sublim's config and planning a cell in-process, as the entrypoint would, for tests of
keys and checks (no model is loaded: a plan only fingerprints the model folder)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from sublim.config import Config, register, to_typed
from sublim.plan import Plan, build
from sublim.target import resolve

CONF = Path(__file__).resolve().parents[1] / "sublim" / "conf"


def typed(*overrides: str) -> Config:
    """The typed config `sublim OVERRIDES...` would run."""
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_typed(compose("config", overrides=list(overrides)))


def plan_cell(cfg: Config, device: str = "cpu") -> Plan:
    """The cell's plan for `device` (the sampler backend as configured, vllm taken as absent)."""
    return build(cfg, resolve(device, "hf" if cfg.sampler.backend == "auto" else cfg.sampler.backend))


def plan_steps(root: Path, model: Path, *overrides: str, device: str = "cpu") -> dict:
    """stage -> Step of a smoke cell on `model` (artifacts under root/a)."""
    cfg = typed("experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={root / 'a'}", *overrides)
    return {s.stage: s for s in plan_cell(cfg, device).steps}
