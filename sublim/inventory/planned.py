"""The keys of a sweep's cells that have not finished: a grid killed (or still going) part way will
reuse, once resumed, artifacts that no job folder of its names yet (the teacher data its first cells
computed). Those cells are planned as `dry_run` plans them (compose -> typed -> build: nothing is
loaded or run), from the folder the sweep was started in and for the device its launcher gives a
job (the sweep's multirun.yaml), so the keys are the ones its jobs will ask for.

The one part of sublim-store that composes configs (Hydra, the planner): imported only when a
sweep plan (`sweep_plan.json`) has cells without a result.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import sublim
from sublim.cellstate import sweep_states


def unfinished(sweep: Path) -> list[tuple[int | str, list[str]]]:
    """(job, overrides) of every planned cell of the sweep that has no result: not started, running,
    failed or dead (a re-run of the sweep computes what they miss and reuses the rest)."""
    return [(job, ov) for job, ov, st in sweep_states(sweep) if st.state != "ok"]


def _sweep_settings(sweep: Path) -> tuple[Optional[dict], Optional[str]]:
    """(the launcher's settings, the folder the sweep was started in) from its multirun.yaml; Nones
    when it wrote none (killed before its first launch)."""
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.load(sweep / "multirun.yaml")
    except (OSError, ValueError):
        return None, None
    launcher = OmegaConf.select(saved, "hydra.launcher", default=None)
    cwd = OmegaConf.select(saved, "hydra.runtime.cwd", default=None)
    return (OmegaConf.to_container(launcher, resolve=False) if launcher is not None else None,
            str(cwd) if cwd else None)


@contextlib.contextmanager
def _cwd(path: Optional[str]):
    """Relative paths in a cell (paths.tiny_model, a prompts file) as its jobs resolve them."""
    before = os.getcwd()
    if path and Path(path).is_dir():
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def planned_keys(sweep: Path, cells: list[tuple[int | str, list[str]]]) -> tuple[dict[str, tuple[set, str]], list[str]]:
    """{"<sweep>#<job>": ((stage, key) pairs, experiment)} for each cell, and one line per cell that
    could not be planned (its config no longer composes, a model is gone): what it would reuse is
    then not kept by it."""
    from hydra import compose, initialize_config_dir

    from sublim.config import register, to_typed
    from sublim.plan import build
    from sublim.target import resolve

    launcher, cwd = _sweep_settings(sweep)
    register()
    out: dict[str, tuple[set, str]] = {}
    problems: list[str] = []
    conf = Path(sublim.__file__).resolve().parent / "conf"
    with _cwd(cwd), initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for job, overrides in cells:
            try:
                cfg = to_typed(compose("config", overrides=list(overrides)))
                plan = build(cfg, resolve(cfg.device, cfg.sampler.backend, launcher))
            except Exception as e:  # noqa: BLE001 - any failure: this cell keeps nothing, said in one line
                first = (str(e).strip().splitlines() or [""])[0][:200]
                problems.append(f"{sweep} cell #{job} ({' '.join(overrides)}): not finished and cannot be planned "
                                f"now ({type(e).__name__}: {first}): what it would reuse is not kept by it")
                continue
            out[f"{sweep}#{job}"] = ({(s.stage, s.key) for s in plan.steps}, cfg.experiment_name)
    return out, problems
