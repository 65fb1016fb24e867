"""W&B logging of one cell: offline unless WANDB_MODE says otherwise; failures never lose results.

Runs are grouped by cell without the seed, with the seed in the name and the condition (base,
control, treatment) as job type, so the W&B UI aggregates seeds.
"""
from __future__ import annotations

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
        run = wandb.init(project=cfg.project, entity=cfg.entity, mode=mode, dir=str(job_dir),
                         group=cell["group"], name=cell["name"], job_type=cell["condition"],
                         config=config, reinit="finish_previous")
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


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
