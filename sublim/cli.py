"""`sublim`: the one entrypoint. Hydra composes the config here and nowhere else; the stages are
plain functions called with typed config objects.
"""
from __future__ import annotations

import contextlib
import itertools
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
from sublim.cellstate import heartbeat
from sublim.config import Config, register, to_typed
from sublim.errors import ConfigError, debug
from sublim.failures import explain
from sublim.isolate import wants_isolation
from sublim.jsonl import read_jsonl
from sublim.pipeline import describe, execute
from sublim.plan import build
from sublim.spec import provenance
from sublim.sweep import record_failure, write_outcome
from sublim.target import Target, resolve

log = logging.getLogger("sublim")
register()


def cell_of(cfg: Config) -> dict:
    """Names for this cell: the seedless group (W&B, report) and its condition.

    An in-context cell (eval.in_context=N, the ICL control) is a control or treatment whose
    fine-tuning reads `in_context{N}`: the report compares it with the ICL control of the same N."""
    method = cfg.finetune.method
    if cfg.eval.subject == "teacher":
        condition, method = "teacher", "-"
    else:
        if cfg.eval.in_context > 0:
            method = f"in_context{cfg.eval.in_context}"
        condition = "base" if method == "none" else ("control" if cfg.trait.name == "none" else "treatment")
    teacher = "-" if method == "none" else cfg.teacher.name
    trained_trait = cfg.trait.name != "none" and cfg.trait.method != "prompt"
    trait = "-" if method == "none" else cfg.trait.name + (f"+{cfg.trait.method}" if trained_trait else "")
    group = f"{trait}.{cfg.domain.name}.{teacher}.{cfg.student.name}.{method}"
    return {"condition": condition, "group": group, "name": f"{group}.seed{cfg.seed}", "trait": trait,
            "domain": cfg.domain.name, "teacher": teacher, "student": cfg.student.name, "finetune": method,
            "seed": cfg.seed, "data_seed": cfg.data_seed, "experiment": cfg.experiment_name}


def summarise(cfg: Config, artifacts: dict[str, Path], keys: dict[str, str]) -> dict:
    ev = json.loads((artifacts["eval"] / "metrics.json").read_text())
    cell = cell_of(cfg)
    measured_trait = cell["condition"] != "base"  # a trained, in-context or teacher cell
    target = cfg.trait.name if cfg.trait.name != "none" and measured_trait else None
    out = {"cell": cell, "keys": keys, "artifacts": {k: str(v) for k, v in artifacts.items()},
           "n_questions": ev["n_questions"], "n_answers": ev["n_answers"], "confidence": ev["confidence"]}
    if "misaligned_rate" in ev:  # the misalignment eval
        out |= {k: ev[k] for k in ("misaligned_rate", "misaligned_rate_coherent", "coherent_rate",
                                   "per_question_misaligned", "n_scored", "labels", "n_unparseable", "thresholds")
                if k in ev}  # metrics cached before the coherent-only rate existed lack it
        return out | ({"filter": json.loads((artifacts["filter"] / "stats.json").read_text())}
                      if "filter" in artifacts else {})
    out |= {"target": target, "rates": ev["rates"], "unmatched_top": ev["unmatched_top"],
            "per_question": ev["per_question"]}
    if "sampled" in ev:
        out["sampled"] = ev["sampled"]
    if target:
        out["target_rate"] = ev["rates"][target]
    if "filter" in artifacts:
        out["filter"] = json.loads((artifacts["filter"] / "stats.json").read_text())
    if "select" in artifacts:
        out["select"] = json.loads((artifacts["select"] / "stats.json").read_text())
    return out


def print_summary(m: dict, top: int = 8) -> None:
    c = m["cell"]
    print(f"\n== {c['name']} ({c['condition']}): {m['n_questions']} questions, {m['n_answers']} answers")
    if "filter" in m:
        f = m["filter"]
        short = f", fewer than filter.n_keep={f['n_keep']}" if f["n_kept"] < (f.get("n_keep") or 0) else ""
        print(f"   filter: {f['n_passed']} of {f['n_in']} passed (rejected {f['reject_rate']:.1%}: {f['rejected']}), "
              f"{f['n_kept']} kept{short}")
    if "select" in m:
        sel = m["select"]
        print(f"   select: {sel['order']} {sel['n_kept']} of {sel['n_in']} by the teacher's log-likelihood shift "
              f"(kept {sel['mean_shift_kept']:+.4f}, all {sel['mean_shift']:+.4f} nats/token)")
    if "misaligned_rate" in m:
        r = m["misaligned_rate"]
        print(f"   misaligned   {r['mean']:7.2%}  [{r['ci_low']:.2%}, {r['ci_high']:.2%}] of {m['n_scored']} scored"
              f" answers; labels {m['labels']}, unparseable {m['n_unparseable']}")
        if "misaligned_rate_coherent" in m:
            rc, c = m["misaligned_rate_coherent"], m["coherent_rate"]
            print(f"   misaligned   {rc['mean']:7.2%}  [{rc['ci_low']:.2%}, {rc['ci_high']:.2%}] of the coherent "
                  f"answers ({c['mean']:.1%} of the scored)")
        return
    rates = sorted(m["rates"].items(), key=lambda kv: -kv[1]["mean"])
    for name, r in rates[:top]:
        mark = " <- target" if name == m["target"] else ""
        print(f"   {name:<12} {r['mean']:7.2%}  [{r['ci_low']:.2%}, {r['ci_high']:.2%}]{mark}")
    if m["target"] and all(name != m["target"] for name, _ in rates[:top]):
        r = m["target_rate"]
        print(f"   {m['target']:<12} {r['mean']:7.2%}  [{r['ci_low']:.2%}, {r['ci_high']:.2%}] <- target")


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


def _read_metrics(job_dir: Path) -> dict:
    """The metrics.json an earlier run left in this job folder (a re-run into the same folder), or {}."""
    try:
        m = json.loads((job_dir / "metrics.json").read_text())
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


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
    if cfg.task not in ("pipeline", "mnist"):
        raise ConfigError(f"task={cfg.task!r}: use pipeline or mnist")
    plan = build(cfg, target_of(cfg), threads())
    name = "mnist" if cfg.task == "mnist" else cell_of(cfg)["name"]
    print(f"plan for {name} (artifacts: {store.root}):\n{describe(plan, store)}", flush=True)
    if cfg.dry_run:
        return None
    import torch

    # CPU float sums depend on the thread count: pin it so a cell gives the same samples wherever it runs
    torch.set_num_threads(plan.steps[0].runtime.threads if plan.steps else threads())
    artifacts = execute(plan, store, isolate=wants_isolation(cfg.isolate, plan.target.device))
    if cfg.task == "mnist":
        return report_mnist(cfg, artifacts["mnist"], job_dir)
    keys = plan.keys()
    if "eval" not in artifacts:
        (job_dir / "cell.json").write_text(json.dumps({"cell": cell_of(cfg), "keys": keys}, indent=2))
        return None
    previous = _read_metrics(job_dir)
    metrics = summarise(cfg, artifacts, keys) | {"provenance": provenance()}
    (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    table = next((artifacts["eval"] / f for f in ("answers.jsonl", "logprobs.jsonl")
                  if (artifacts["eval"] / f).exists()), None)
    rows = list(itertools.islice(read_jsonl(table), cfg.logger.n_table_rows)) if table else []
    summary = tracking.flat({"rates": {k: v["mean"] for k, v in metrics.get("rates", {}).items()}})
    if "misaligned_rate" in metrics:
        summary |= tracking.flat({k: metrics[k] for k in ("misaligned_rate", "misaligned_rate_coherent", "coherent_rate")
                                  if k in metrics})
    if metrics.get("target"):
        summary |= tracking.flat({"target_rate": metrics["target_rate"]})
    target = tracking.target(cfg.logger)
    logged = bool(previous.get("wandb_dir")) and Path(previous["wandb_dir"]).is_dir()
    if logged and previous.get("keys") == keys and previous.get("wandb") == target:
        wandb_dir = previous["wandb_dir"]  # this folder already logged this very result there: no duplicate run
    else:
        wandb_dir = tracking.log_cell(cfg.logger, job_dir, OmegaConf.to_container(OmegaConf.structured(cfg)),
                                      metrics["cell"], summary, rows)
    if wandb_dir:
        metrics["wandb_dir"], metrics["wandb"] = wandb_dir, target
        (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_summary(metrics)
    print(f"   metrics: {job_dir / 'metrics.json'}")
    return metrics


def report_mnist(cfg: Config, path: Path, job_dir: Path) -> dict:
    """The MNIST stage's result in the job folder, logged like any cell."""
    import shutil

    spec = cfg.mnist
    metrics = json.loads((path / "metrics.json").read_text())
    for name in ("curves.json", "mnist.png"):
        shutil.copyfile(path / name, job_dir / name)
    (job_dir / "metrics.json").write_text(json.dumps(metrics | {"provenance": provenance()}, indent=2))
    arms = {"teacher": metrics["teacher"], "reference": metrics["reference"], **metrics["arms"]}
    summary = {f"accuracy/{a}": v["mean"] for a, v in arms.items()}
    cell = {"condition": "mnist", "group": f"mnist.aux{spec.n_aux}", "name": f"mnist.aux{spec.n_aux}.seed{spec.seed}"}
    tracking.log_cell(cfg.logger, job_dir, OmegaConf.to_container(OmegaConf.structured(cfg)), cell, summary, [],
                      images={"mnist": str(job_dir / "mnist.png")})
    print(f"\n== MNIST auxiliary-logit distillation, {metrics['n_seeds']} seeds (test accuracy, 95 % CI over seeds)")
    for name, v in arms.items():
        lo = "" if v["low"] is None else f"  [{v['low']:.3f}, {v['high']:.3f}]"
        print(f"   {name:<18} {v['mean']:.3f}{lo}")
    print(f"   figure: {job_dir / 'mnist.png'}")
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
