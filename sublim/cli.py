"""`sublim`: the one entrypoint. Hydra composes the config here and nowhere else; the stages are
plain functions called with typed config objects.

One cell: compose (Hydra) -> typed (sublim.config) -> checked and planned (sublim.plan) -> the
missing stages run (sublim.pipeline) -> its result (sublim.results: the eval kind's or the MNIST
stage's own summary) in the job folder, printed and logged to W&B (sublim.tracking).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sublim import tracking
from sublim.aliases import rewrite_argv
from sublim.cache import Store
from sublim.cell import cell_of
from sublim.cellstate import heartbeat
from sublim.chat_template import describe as describe_system_prompts
from sublim.chat_template import system_prompts
from sublim.config import Config, register, to_typed
from sublim.errors import ConfigError, debug
from sublim.failures import explain
from sublim.isolate import wants_isolation
from sublim.pipeline import describe, execute
from sublim.plan import build
from sublim.results import result
from sublim.spec import provenance
from sublim.sweep import record_failure, write_outcome
from sublim.target import Target, resolve

log = logging.getLogger("sublim")
register()


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="config")
def run(dcfg: DictConfig) -> dict | None:
    """One cell. An expected failure (sublim.errors) prints one line and exits non-zero; in a sweep it
    is recorded in the job folder (outcome.json) and the grid goes on; OutcomeReport names every
    failed cell at the end. A bug keeps its stack."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        try:
            with job_heartbeat(dcfg, Path(hc.runtime.output_dir)):
                return run_cell(dcfg)
        except Exception as e:
            failure = explain(e, dcfg)
            child = getattr(e, "child_traceback", None)  # the stack of a stage that ran in its own process
            if failure is None:  # a bug: its stack
                if child and child not in str(e):
                    sys.stderr.write(child)
                raise
            if debug():
                sys.stderr.write(child or "")
                traceback.print_exc()
            sys.exit(failure.text)
    try:
        with job_heartbeat(dcfg, Path(hc.runtime.output_dir)):
            metrics = run_cell(dcfg)
    except Exception as e:
        failure = explain(e, dcfg)
        record_failure(e, failure.line if failure else None)
        return None
    write_outcome(Path(hc.runtime.output_dir), "ok", list(hc.overrides.task))
    return metrics


def job_heartbeat(dcfg: DictConfig, job_dir: Path):
    """job.json in the job folder while the cell runs (sublim.cellstate tells running from dead by it);
    none for a dry run, which computes nothing."""
    if OmegaConf.select(dcfg, "dry_run", default=False, throw_on_resolution_failure=False):
        return contextlib.nullcontext()
    return heartbeat(job_dir, artifacts=OmegaConf.select(dcfg, "paths.artifacts", default=None,
                                                         throw_on_resolution_failure=False))


def target_of(cfg: Config) -> Target:
    """Where this job's stages run: from the launcher it was sent with, else this machine."""
    launcher = None
    if HydraConfig.initialized() and "launcher" in HydraConfig.get():
        launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=False)
    return resolve(cfg.device, cfg.sampler.backend, launcher)


def threads() -> int:
    """torch threads on CPU: OMP_NUM_THREADS (default 1; tiny models are fastest on one thread)."""
    return int(os.environ.get("OMP_NUM_THREADS") or 1)


def run_cell(dcfg: DictConfig) -> dict | None:
    cfg = to_typed(dcfg)  # unknown/added keys and wrong types fail here, naming the key
    cfg.paths.artifacts = str(Path(cfg.paths.artifacts).resolve())
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    store = Store(cfg.paths.artifacts)
    if cfg.task not in ("pipeline", "mnist", "entanglement"):
        raise ConfigError(f"task={cfg.task!r}: use pipeline, mnist or entanglement")
    plan = build(cfg, target_of(cfg), threads())
    name = cfg.task if cfg.task != "pipeline" else cell_of(cfg)["name"]
    print(f"plan for {name} (artifacts: {store.root}):\n{describe(plan, store)}", flush=True)
    if cfg.dry_run:
        return None
    import torch

    # CPU float sums depend on the thread count: pin it so a cell gives the same samples wherever it runs
    torch.set_num_threads(plan.steps[0].runtime.threads if plan.steps else threads())
    artifacts = execute(plan, store, isolate=wants_isolation(cfg.isolate, plan.target.device))
    res = result(cfg, plan, artifacts, job_dir)
    if res is None:  # nothing measured (stages=[sample,filter]): the keys, for sublim-store and the report
        (job_dir / "cell.json").write_text(json.dumps({"cell": cell_of(cfg), "keys": plan.keys()}, indent=2))
        return None
    prompts = system_prompts(cfg, plan.steps)  # what the student saw, a chat template's default included
    res.metrics["system_prompts"], res.lines[1:1] = prompts, describe_system_prompts(prompts)
    before = tracking.logged_before(job_dir)
    metrics = res.metrics | {"provenance": provenance()}
    (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logged = tracking.log_once(cfg.logger, job_dir, before, metrics["keys"],
                               OmegaConf.to_container(OmegaConf.structured(cfg)), res.cell, res.tracked, res.rows,
                               res.images)
    if logged:
        metrics |= logged
        (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print("\n".join(res.lines))
    return metrics


def main() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    sys.argv[1:] = rewrite_argv(sys.argv[1:])  # old spellings the README showed (sublim.aliases)
    try:
        run()
    except KeyboardInterrupt:  # one line, not the stack of whatever torch was doing
        sys.stderr.write("\ninterrupted: finished stages are in the artifact store (a fine-tune keeps its last "
                         "checkpoint); run the same command again to resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
