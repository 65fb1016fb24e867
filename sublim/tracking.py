"""W&B logging of one cell: offline unless WANDB_MODE says otherwise; failures never lose results.

Runs are grouped by cell without the seed, with the seed in the name and the condition (base,
control, treatment) as job type, so the W&B UI aggregates seeds. A grid's runs carry the grid's name
as a tag and the values it sweeps under `swept` in their config (grid_tags).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sublim.config import LoggerConfig

log = logging.getLogger(__name__)


def target(cfg: LoggerConfig) -> dict:
    """Where log_cell sends a run: a re-run with the same result and target need not log again."""
    return {"backend": cfg.backend, "project": cfg.project, "entity": cfg.entity,
            "mode": cfg.mode or os.environ.get("WANDB_MODE") or "offline"}


def log_cell(cfg: LoggerConfig, job_dir: Path, config: dict, cell: dict, summary: dict,
             table_rows: list[dict], images: dict[str, str] | None = None) -> str | None:
    """Logs one W&B run; returns its local folder, or None when off or when W&B failed."""
    if cfg.backend == "none":
        return None
    if cfg.backend != "wandb":
        raise ValueError(f"logger.backend={cfg.backend!r}: use wandb or none")
    try:
        import wandb

        mode = target(cfg)["mode"]
        tags, config = grid_tags(config)
        run = wandb.init(project=cfg.project, entity=cfg.entity, mode=mode, dir=str(job_dir),
                         group=cell["group"], name=cell["name"], job_type=cell["condition"],
                         config=config, tags=tags, reinit="finish_previous")
        run.summary.update(summary)
        if table_rows:
            cols = list(table_rows[0])
            run.log({"answers": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in table_rows])})
        if images:
            run.log({k: wandb.Image(v) for k, v in images.items()})
        run_dir = run.dir
        run.finish()
        return str(Path(run_dir).parent)
    except Exception as e:  # W&B is a mirror: the job folder and artifact store hold the results
        log.warning("W&B logging failed (%s: %s); results are in %s", type(e).__name__, e, job_dir)
        return None


def grid_tags(config: dict) -> tuple[list[str] | None, dict]:
    """In a grid job: the grid's name as the run's tag, and the config plus `grid` (name, folder, job
    number, overrides) and `swept` (this cell's values of the keys the grid varies: trait, seed, ...),
    so W&B filters one grid by tag and groups or colours its runs by `swept.*` with no custom code.
    Outside a grid: no tag, the config as it is."""
    from sublim.sweep import current_job

    job = current_job()
    if not job:
        return None, config
    grid = {"name": job["grid"], "dir": job["sweep_dir"], "job": job["job"], "overrides": job["overrides"]}
    return [job["grid"]], config | {"grid": grid, "swept": job["swept"]}


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def logged_before(job_dir: Path) -> dict:
    """What this job folder's metrics.json says it logged (a re-run into the same folder), or {}."""
    try:
        m = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: m.get(k) for k in ("keys", "wandb_dir", "wandb")} if isinstance(m, dict) else {}


def log_once(cfg: LoggerConfig, job_dir: Path, before: dict, keys: dict, config: dict, cell: dict, summary: dict,
             table_rows: list[dict], images: dict[str, str] | None = None) -> dict:
    """log_cell, unless this folder already logged this very result (the same stage keys) to the same
    target: a re-run into one folder makes no second W&B run. Returns the fields metrics.json keeps
    ({"wandb_dir", "wandb"}), {} when nothing was logged."""
    where = target(cfg)
    done = before.get("wandb_dir")
    if done and Path(done).is_dir() and before.get("keys") == keys and before.get("wandb") == where:
        return {"wandb_dir": done, "wandb": where}
    run_dir = log_cell(cfg, job_dir, config, cell, summary, table_rows, images=images)
    return {"wandb_dir": run_dir, "wandb": where} if run_dir else {}
