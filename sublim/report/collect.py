"""Find every job folder under the given paths and read its metrics into tables.

Why a separate step: a sweep is messy (failed jobs, dry runs, jobs still running, corrupt files,
the same cell run twice). Collection decides once what counts as a cell and what is a hole, so
the statistics downstream see clean tables and the report can list every hole instead of
crashing on it.

Tables (pandas, one integer `job` id joins them):
- cells: one row per job (cell fields, target, target rate and its CI, misaligned rate, ...,
  `setting`: what else differs from comparable cells, see sublim.report.settings).
- rates: one row per job x candidate (the eval's rate, its CI across questions, per-question
  spread). Every candidate is there, so one control/base evaluation serves every target.
- questions: one row per job x candidate x question (the per-question rate).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sublim.report.settings import job_settings, setting_labels
from sublim.sweep import PLAN

CELL_FIELDS = ["condition", "group", "name", "trait", "domain", "teacher", "student", "finetune",
               "seed", "data_seed", "experiment"]
SKIP_DIRS = {"wandb", ".hydra", "__pycache__", ".git", ".venv"}


@dataclass
class Problem:
    """A job folder that did not yield a cell, or a cell that was set aside."""

    path: str
    kind: str  # failed | unreadable | invalid | dry run | no eval | duplicate | not run
    detail: str = ""
    overrides: list[str] = field(default_factory=list)

    def line(self) -> str:
        ov = f" (overrides: {' '.join(self.overrides)})" if self.overrides else ""
        return f"{self.kind}: {self.path}{ov}" + (f" — {self.detail}" if self.detail else "")


@dataclass
class Collection:
    cells: pd.DataFrame
    rates: pd.DataFrame
    questions: pd.DataFrame
    problems: list[Problem]
    paths: list[str]
    n_ignored: int = 0  # metrics.json files without a "cell" (e.g. the artifact store's evals)


def _num(d: dict | None, key: str) -> float:
    v = (d or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and v is not None else math.nan


def _overrides(job: Path) -> list[str]:
    f = job / ".hydra" / "overrides.yaml"
    if not f.exists():
        return []
    return [ln.strip()[2:].strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip().startswith("- ")]


def _is_dry_run(job: Path) -> bool:
    if any(o.replace(" ", "") in ("dry_run=true", "dry_run=True") for o in _overrides(job)):
        return True
    cfg = job / ".hydra" / "config.yaml"
    return cfg.exists() and any(ln.strip() == "dry_run: true" for ln in cfg.read_text(errors="replace").splitlines())


def _recorded_error(job: Path) -> str:
    """The error a sweep job recorded in its outcome.json (the first line of it), or ""."""
    try:
        o = json.loads((job / "outcome.json").read_text())
    except (OSError, ValueError):
        return ""
    error = o.get("error") if isinstance(o, dict) and o.get("status") == "failed" else None
    return str(error).strip().splitlines()[0][:300] if error else ""


def _last_log_line(job: Path) -> str:
    """The last line of the job's log: often the error that stopped it."""
    for log in sorted(job.glob("*.log")):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return ""


def job_folders(paths: list[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Folders holding a metrics.json, a cell.json or a .hydra/ (a Hydra job), found recursively;
    and, as problems, the cells a sweep planned (sweep_plan.json) that never got a folder."""
    found: dict[Path, None] = {}
    plans: dict[Path, None] = {}
    problems = []
    for p in map(Path, paths):
        if p.is_file():
            found[p.resolve().parent] = None
            continue
        if not p.is_dir():
            problems.append(Problem(str(p), "unreadable", "no such file or folder"))
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            here = Path(root)
            if "metrics.json" in files or "cell.json" in files or (here / ".hydra").is_dir():
                found[here.resolve()] = None
            if PLAN in files:
                plans[here.resolve()] = None
    for sweep in plans:
        problems += _never_run(sweep, found)
    return list(found), problems


def _never_run(sweep: Path, found: dict[Path, None]) -> list[Problem]:
    """Cells in a sweep's plan without a job folder: the sweep was stopped before it launched them."""
    try:
        plan = json.loads((sweep / PLAN).read_text())
        cells = [(int(c["job"]), list(c["overrides"]), c.get("folder")) for c in plan]
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [Problem(str(sweep / PLAN), "unreadable", f"{type(e).__name__}: {e}")]
    return [Problem(str(sweep / folder), "not run", f"cell #{job} of the sweep never started", ov)
            for job, ov, folder in cells if folder and (sweep / folder).resolve() not in found]


def _read_job(job: Path) -> tuple[dict | None, Problem | None, bool]:
    """(metrics, problem, ignored) for one folder."""
    mfile = job / "metrics.json"
    hydra = (job / ".hydra").is_dir()
    if not mfile.exists():
        ov = _overrides(job)
        if (job / "cell.json").exists():
            try:
                name = json.loads((job / "cell.json").read_text())["cell"]["name"]
            except Exception:
                name = "?"
            return None, Problem(str(job), "no eval", f"cell {name}: the plan had no eval stage", ov), False
        if _is_dry_run(job):
            return None, Problem(str(job), "dry run", "no metrics expected", ov), False
        error = _recorded_error(job)
        if error:
            return None, Problem(str(job), "failed", error, ov), False
        return None, Problem(str(job), "failed", "no metrics.json (failed or still running)"
                             + (f"; log ends: {_last_log_line(job)}" if _last_log_line(job) else ""), ov), False
    try:
        m = json.loads(mfile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, Problem(str(mfile), "unreadable", f"{type(e).__name__}: {e}", _overrides(job)), False
    if not isinstance(m, dict) or "cell" not in m:
        if hydra:
            return None, Problem(str(mfile), "invalid", "metrics.json has no 'cell'", _overrides(job)), False
        return None, None, True
    cell = m.get("cell")
    missing = [k for k in ("condition", "name") if not isinstance(cell, dict) or k not in cell]
    if missing:
        return None, Problem(str(mfile), "invalid", f"cell lacks {missing}"), False
    if not isinstance(m.get("rates"), dict) and not isinstance(m.get("misaligned_rate"), dict):
        return None, Problem(str(mfile), "invalid", "neither 'rates' nor 'misaligned_rate'"), False
    return m, None, False


def _cell_row(job_id: int, path: Path, m: dict) -> dict:
    c = m["cell"]
    row = {"job": job_id, "path": str(path)} | {k: c.get(k) for k in CELL_FIELDS}
    target = m.get("target")
    tr = m.get("target_rate") or ((m.get("rates") or {}).get(target) if target else None)
    rates = m.get("rates") or {}
    top = m.get("unmatched_top") or {}
    flt = m.get("filter") or {}
    row |= {"target": target, "target_rate": _num(tr, "mean"), "target_ci_low": _num(tr, "ci_low"),
            "target_ci_high": _num(tr, "ci_high"),
            "misaligned_rate": _num(m.get("misaligned_rate"), "mean"),
            "misaligned_ci_low": _num(m.get("misaligned_rate"), "ci_low"),
            "misaligned_ci_high": _num(m.get("misaligned_rate"), "ci_high"),
            "misaligned_coherent_rate": _num(m.get("misaligned_rate_coherent"), "mean"),
            "none_rate": _num(rates.get("none"), "mean"),
            "top_unmatched": ", ".join(f"{k} ({v})" for k, v in list(top.items())[:3]),
            "n_questions": m.get("n_questions"), "n_answers": m.get("n_answers"),
            "confidence": m.get("confidence"), "filter_kept": flt.get("n_kept"),
            "filter_reject_rate": flt.get("reject_rate"), "eval_key": (m.get("keys") or {}).get("eval")}
    return row


def _rate_rows(job_id: int, m: dict) -> tuple[list[dict], list[dict]]:
    rates = m.get("rates") or {}
    pq = [q for q in (m.get("per_question") or []) if isinstance(q, dict)]
    rows, qrows = [], []
    for cand, r in rates.items():
        vals = np.array([q[cand] for q in pq if isinstance(q.get(cand), (int, float))], float)
        rows.append({"job": job_id, "candidate": cand, "rate": _num(r, "mean"), "ci_low": _num(r, "ci_low"),
                     "ci_high": _num(r, "ci_high"), "q_n": len(vals),
                     "q_sd": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                     "q_min": float(vals.min()) if len(vals) else math.nan,
                     "q_max": float(vals.max()) if len(vals) else math.nan})
        qrows += [{"job": job_id, "candidate": cand, "question": i, "rate": float(q[cand])}
                  for i, q in enumerate(pq) if isinstance(q.get(cand), (int, float))]
    return rows, qrows


def collect(paths: list[str | Path]) -> Collection:
    """Read every job under `paths`. Never raises for a bad job: it becomes a Problem.

    The same cell evaluated twice (same name and eval key, e.g. a re-run or overlapping PATHs)
    counts once, the newest metrics.json, so a re-run does not pose as an extra seed.
    """
    jobs, problems = job_folders(paths)
    kept: dict[tuple, tuple[Path, dict]] = {}
    n_ignored = 0
    for job in sorted(jobs):
        m, prob, ignored = _read_job(job)
        n_ignored += ignored
        if prob:
            problems.append(prob)
        if m is None:
            continue
        key = (m["cell"]["name"], (m.get("keys") or {}).get("eval") or str(job))
        if key in kept:
            old = kept[key][0]
            newer, older = (job, old) if (job / "metrics.json").stat().st_mtime >= (old / "metrics.json").stat().st_mtime \
                else (old, job)
            problems.append(Problem(str(older), "duplicate", f"same cell {key[0]} and eval as {newer}; kept the newer"))
            if newer == old:
                continue
        kept[key] = (job, m)
    cells, rates, questions = [], [], []
    for i, (job, m) in enumerate(sorted(kept.values(), key=lambda jm: str(jm[0]))):
        cells.append(_cell_row(i, job, m))
        r, q = _rate_rows(i, m)
        rates += r
        questions += q
    cells_df = pd.DataFrame(cells, columns=list(_cell_row(0, Path("."), {"cell": {}}).keys()))
    for col in ("seed", "data_seed"):
        cells_df[col] = pd.to_numeric(cells_df[col], errors="coerce").astype("Int64")
    for col in ("trait", "domain", "teacher", "student", "finetune", "experiment"):
        cells_df[col] = cells_df[col].fillna("-").astype(str)
    cells_df["settings"] = [job_settings(Path(p)) for p in cells_df["path"]]
    cells_df = setting_labels(cells_df)
    return Collection(cells=cells_df,
                      rates=pd.DataFrame(rates, columns=["job", "candidate", "rate", "ci_low", "ci_high", "q_n",
                                                         "q_sd", "q_min", "q_max"]),
                      questions=pd.DataFrame(questions, columns=["job", "candidate", "question", "rate"]),
                      problems=problems, paths=[str(p) for p in paths], n_ignored=n_ignored)
