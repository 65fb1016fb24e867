"""Mirror the report to one W&B run (job_type "report"): tables and figures side by side with
the cells' own runs. Offline unless WANDB_MODE says otherwise; the run folder lives in --out.

W&B is a mirror, never the record: any failure here warns and returns None, and the CSV,
Markdown and PNG files are already on disk.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _table(wandb, df: pd.DataFrame):
    """A wandb.Table from plain Python values (NaN -> None), whatever pandas' dtypes are."""
    data = df.astype(object).where(df.notna(), None).to_numpy().tolist()
    return wandb.Table(columns=[str(c) for c in df.columns], data=data)


def log_report(out: Path, tables: dict[str, pd.DataFrame], figures: dict[str, Path], summary: dict,
               config: dict, project: str = "sublim", entity: str | None = None) -> str | None:
    """Logs one run; returns its local folder, or None when W&B failed."""
    try:
        import wandb

        mode = os.environ.get("WANDB_MODE") or "offline"
        out.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, entity=entity, mode=mode, dir=str(out), job_type="report",
                         group="report", name=f"report-{time.strftime('%Y%m%d-%H%M%S')}", config=config,
                         reinit="finish_previous")
        payload = {name: _table(wandb, df) for name, df in tables.items() if df is not None and len(df.columns)}
        payload |= {f"figures/{name}": wandb.Image(str(p), caption=name) for name, p in figures.items()}
        run.log(payload)
        run.summary.update(summary)
        run_dir = run.dir
        run.finish()
        return str(Path(run_dir).parent)
    except Exception as e:  # noqa: BLE001 - a mirror must not lose the files
        log.warning("W&B logging of the report failed (%s: %s); the report is in %s", type(e).__name__, e, out)
        return None
