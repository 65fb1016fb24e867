"""What a job makes of its cell once the stages ran: the job folder's metrics.json, the lines it
prints and its W&B run (summary, table, images). The cell's own part is here: its names, its stage
keys, the filter's and select's statistics. What a measurement means belongs to what measured it:
the eval kind (sublim.evals) and the MNIST stage each give their `summary`/`lines`/`tracked`, so a
new eval kind needs no branch here.
"""
from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sublim.cell import cell_of, measured_trait
from sublim.config import Config
from sublim.evals import get_kind
from sublim.jsonl import read_jsonl
from sublim.plan import Plan
from sublim.stages import entanglement as entanglement_stage
from sublim.stages import mnist as mnist_stage

TABLES = ("answers.jsonl", "logprobs.jsonl")  # an eval's rows W&B shows, the first that exists


@dataclass
class Result:
    cell: dict  # the W&B run's names: group, name, condition
    metrics: dict  # the job's metrics.json, before the provenance and the W&B run are added
    lines: list[str]  # printed once the cell is done
    tracked: dict  # the W&B run summary
    rows: list[dict] = field(default_factory=list)  # the W&B table
    images: dict[str, str] = field(default_factory=dict)


def result(cfg: Config, plan: Plan, artifacts: dict[str, Path], job_dir: Path) -> Optional[Result]:
    """The cell's result; None when nothing measured it (stages=[sample,filter])."""
    specs = {s.stage: s.spec for s in plan.steps}
    if "mnist" in artifacts:
        return mnist(specs["mnist"], plan.keys(), artifacts["mnist"], job_dir)
    if cfg.task == "entanglement" and "entanglement" in artifacts:  # else an upstream (transform.remove_entangled)
        return entanglement(specs["entanglement"], plan.keys(), artifacts["entanglement"], job_dir)
    if "eval" not in artifacts:
        return None
    return evaluated(cfg, get_kind(specs["eval"].kind), plan.keys(), artifacts, job_dir)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def evaluated(cfg: Config, kind, keys: dict[str, str], artifacts: dict[str, Path], job_dir: Path) -> Result:
    ev = _json(artifacts["eval"] / "metrics.json")
    cell = cell_of(cfg)
    m = {"cell": cell, "keys": keys, "artifacts": {k: str(v) for k, v in artifacts.items()},
         "n_questions": ev["n_questions"], "n_answers": ev["n_answers"], "confidence": ev["confidence"]}
    m |= kind.summary(ev, measured_trait(cfg, cell))
    for stage in ("paraphrase", "filter", "replace", "rewrite", "mix", "remove", "select"):  # the data the student learnt from, whatever the eval
        if stage in artifacts:
            m[stage] = _json(artifacts[stage] / "stats.json")
    lines = [f"\n== {cell['name']} ({cell['condition']}): {m['n_questions']} questions, {m['n_answers']} answers",
             *upstream_lines(m), *kind.lines(m), f"   metrics: {job_dir / 'metrics.json'}"]
    table = next((artifacts["eval"] / f for f in TABLES if (artifacts["eval"] / f).exists()), None)
    rows = list(itertools.islice(read_jsonl(table), cfg.logger.n_table_rows)) if table else []
    return Result(cell, m, lines, kind.tracked(m), rows)


def upstream_lines(m: dict) -> list[str]:
    out = []
    if "filter" in m:
        f = m["filter"]
        short = f", fewer than filter.n_keep={f['n_keep']}" if f["n_kept"] < (f.get("n_keep") or 0) else ""
        out.append(f"   filter: {f['n_passed']} of {f['n_in']} passed (rejected {f['reject_rate']:.1%}: "
                   f"{f['rejected']}), {f['n_kept']} kept{short}")
    if "mix" in m:
        out.append(f"   mix: {m['mix']['n_replaced']} of {m['mix']['n_in']} rows from other teachers ({m['mix']['sources']})")
    if "remove" in m:
        out.append(f"   remove: {m['remove']['n_dropped']} of {m['remove']['n_in']} rows held {m['remove']['trait']}'s "
                   f"{m['remove']['k']} most entangled numbers")
    if "select" in m:
        sel = m["select"]
        out.append(f"   select: {sel['order']} {sel['n_kept']} of {sel['n_in']} by the teacher's log-likelihood shift "
                   f"(kept {sel['mean_shift_kept']:+.4f}, all {sel['mean_shift']:+.4f} nats/token)")
    return out


def mnist(spec: mnist_stage.Spec, keys: dict[str, str], out: Path, job_dir: Path) -> Result:
    """The MNIST stage's metrics as they are (plus the key), its figure beside them in the job folder."""
    m = _json(out / "metrics.json")
    for name in mnist_stage.FILES:
        shutil.copyfile(out / name, job_dir / name)
    lines = [*mnist_stage.lines(m), f"   figure: {job_dir / 'mnist.png'}"]
    return Result(mnist_stage.cell(spec), m | {"keys": keys}, lines, mnist_stage.tracked(m),
                  images={"mnist": str(job_dir / "mnist.png")})


def entanglement(spec: entanglement_stage.Spec, keys: dict[str, str], out: Path, job_dir: Path) -> Result:
    """The entanglement stage's statistics (its per-number table stays in entangled.csv), table and
    figure beside them in the job folder."""
    m = _json(out / "entanglement.json")
    rows = m.pop("numbers")
    for name in entanglement_stage.FILES:
        shutil.copyfile(out / name, job_dir / name)
    lines = [*entanglement_stage.lines(m), f"   table: {job_dir / 'entangled.csv'}",
             f"   figure: {job_dir / 'entanglement.png'}"]
    return Result(entanglement_stage.cell(spec), m | {"keys": keys}, lines, entanglement_stage.tracked(m),
                  rows=rows[:50], images={"entanglement": str(job_dir / "entanglement.png")})
