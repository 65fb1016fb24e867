"""Find every job folder under the given paths and read its metrics into tables.

Why a separate step: a sweep is messy (failed jobs, dry runs, jobs still running or killed,
corrupt files, hand-edited or truncated JSON, NaN where a number should be, the same cell run
twice). Collection decides once what counts as a cell and what is a hole, so the statistics
downstream see clean tables and the report can list every hole instead of crashing on it. It
never raises for what a job folder holds: every field is checked for its type; a malformed one is
an `invalid` problem naming the file and the field (the cell is set aside only when the field says
which cell it is), a NaN or infinite value a `non-finite` one (the value is left out of every mean).
A folder without metrics gets its state from sublim.cellstate: running, dead, failed or not run.

Tables (pandas, one integer `job` id joins them):
- cells: one row per job (cell fields, target, target rate and its CI, misaligned rate, ...,
  `setting`: what else differs from comparable cells, see sublim.report.settings; `nonfinite`:
  the fields whose values were NaN or infinite, comma-separated).
- rates: one row per job x candidate (the eval's rate, its CI across questions, per-question
  spread). Every candidate is there, so one control/base evaluation serves every target. A rate
  that was not finite is NaN here (and named in the problems).
- questions: one row per job x candidate x question (the per-question rate; finite ones only).

Defence arms and data costs (cells columns): `defence` is the cell's `defence.name`: the cell's own
`cell.defence` when metrics.json has one, else the composed config's `defence.name`, else "none"
(a run from before defences existed is undefended). `filter_in` / `filter_passed`: the teacher
completions the filter saw and passed (its stats.json, copied into metrics.json); `n_train`: the
rows the student trained on (n_kept of the last of DATA_STAGES that metrics.json records);
`rejected`: those stages' reject counts by reason, as JSON text ({"format": 12, "replace/format":
3}). Each is missing (NaN/None), never 0, when the job did not record it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sublim.cellstate import HEARTBEAT, OUTCOME, PLAN, cell_state, load_json, planned_folder, read_plan, text_safe
from sublim.report.settings import job_settings, setting_labels

CELL_FIELDS = ["condition", "group", "name", "trait", "domain", "teacher", "student", "finetune",
               "seed", "data_seed", "experiment"]
NAME_FIELDS = ["trait", "domain", "teacher", "student", "finetune"]  # which cell it is: malformed -> set aside
CELL_COLUMNS = ["job", "path", *CELL_FIELDS, "target", "target_rate", "target_ci_low", "target_ci_high",
                "misaligned_rate", "misaligned_ci_low", "misaligned_ci_high", "misaligned_coherent_rate",
                "none_rate", "top_unmatched", "n_questions", "n_answers", "confidence", "filter_kept",
                "filter_reject_rate", "eval_key", "nonfinite", "defence", "filter_in", "filter_passed", "n_train",
                "rejected"]
DATA_STAGES = ("filter", "replace", "rewrite", "mix", "remove", "select")  # stages that drop rows, in pipeline order, as metrics.json names them
SKIP_DIRS = {"wandb", ".hydra", "__pycache__", ".git", ".venv"}
MAX_LISTED = 4  # fields named per problem line; the rest counted
RATE_SLACK = 1e-9  # a mean of rates may pass 1 by rounding
MAX_INT = 2**53  # seeds and counts beyond this are no seeds or counts (and overflow int64 columns)


@dataclass
class Problem:
    """A job folder that did not yield a cell, a cell that was set aside, or values left out."""

    path: str
    kind: str  # failed | running | dead | not run | unreadable | invalid | non-finite | dry run | no eval | duplicate
    detail: str = ""
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:  # a folder name that is not UTF-8 must not stop a table or a print
        self.path, self.detail = text_safe(str(self.path)), text_safe(str(self.detail))
        self.overrides = [text_safe(str(o)) for o in self.overrides]

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


# -- checking a metrics.json, field by field --------------------------------------------------------
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if _is_num(v):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return f"a string ({v[:30]!r}{'…' if len(v) > 30 else ''})"
    return "a list" if isinstance(v, list) else "an object" if isinstance(v, dict) else type(v).__name__


class _Check:
    """What is wrong with one metrics.json: malformed fields and non-finite values, by field."""

    def __init__(self):
        self.invalid: list[str] = []
        self.nonfinite: list[str] = []
        self.fatal = False

    def bad(self, fld: str, expected: str, v: Any, fatal: bool = False) -> None:
        self.invalid.append(f"{fld}: expected {expected}, got {_describe(v)}")
        self.fatal |= fatal

    def num(self, fld: str, v: Any, nan_ok: bool = False) -> float:
        """A finite float, or NaN (named: a non-number as invalid, NaN/inf as non-finite)."""
        if not _is_num(v):
            self.bad(fld, "a number", v)
            return math.nan
        x = float(v)
        if not math.isfinite(x):
            if not (nan_ok and math.isnan(x)):
                self.nonfinite.append(f"{fld} = {x}")
            return math.nan
        return x

    def interval(self, fld: str, v: Any, ci_expected: bool = True) -> dict | None:
        """{mean, ci_low, ci_high} of a rate as floats (NaN where absent or not finite), or None
        when `v` is no rate at all (not an object, no numeric mean, a mean outside [0, 1]). A NaN
        bound is only a problem when an interval was expected (a one-question eval has none)."""
        if not isinstance(v, dict):
            self.bad(fld, "an object {mean, ci_low, ci_high}", v)
            return None
        if "mean" not in v:
            self.invalid.append(f"{fld}: no 'mean'")
            return None
        mean = self.num(f"{fld}.mean", v["mean"])
        if math.isnan(mean) and not _is_num(v["mean"]):
            return None  # a non-number mean: nothing to report for this rate
        if not math.isnan(mean) and not -RATE_SLACK <= mean <= 1 + RATE_SLACK:
            self.bad(f"{fld}.mean", "a rate between 0 and 1", v["mean"])
            return None
        out = {"mean": mean}
        for k in ("ci_low", "ci_high"):
            x = v.get(k)
            out[k] = math.nan if x is None else self.num(f"{fld}.{k}", x, nan_ok=not ci_expected or math.isnan(mean))
        return out

    def text(self, fld: str, v: Any, fatal: bool = False) -> str | None:
        if v is None or isinstance(v, str):
            return v
        if _is_num(v) and math.isfinite(v):
            return str(v)
        self.bad(fld, "a string", v, fatal)
        return None

    def integer(self, fld: str, v: Any, fatal: bool = False) -> int | None:
        """An integer that fits the tables' int64 columns (a seed, a count), or None (named)."""
        if v is None:
            return None
        x = None
        if isinstance(v, int) and not isinstance(v, bool):
            x = v
        elif isinstance(v, float) and v.is_integer():
            x = int(v)
        elif isinstance(v, str) and v.strip().lstrip("+-").isdigit() and len(v.strip()) < 20:
            x = int(v.strip())
        if x is None or abs(x) > MAX_INT:
            self.bad(fld, "an integer", v, fatal)
            return None
        return x

    def lines(self, set_aside: bool) -> list[tuple[str, str]]:
        def joined(items: list[str]) -> str:
            more = len(items) - MAX_LISTED
            return "; ".join(items[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")

        out = []
        if self.invalid:
            out.append(("invalid", joined(self.invalid) + (" — cell set aside" if set_aside else
                                                           " — ignored; the rest of the cell is reported")))
        if self.nonfinite:
            out.append(("non-finite", joined(self.nonfinite) + " — left out of every mean"))
        return out


def _data_costs(m: dict, chk: _Check, filter_kept: int | None) -> dict:
    """n_train (the last recorded data stage's n_kept, DATA_STAGES order) and the reject counts of
    every recorded data stage as JSON text (reasons of stages other than the filter prefixed
    "stage/"); None where nothing was recorded."""
    n_train, why = None, None
    for stage in DATA_STAGES:
        st = m.get(stage)
        if st is None:
            continue
        if not isinstance(st, dict):
            if stage != "filter":  # the filter's own check names it
                chk.bad(stage, "an object", st)
            continue
        kept = filter_kept if stage == "filter" else chk.integer(f"{stage}.n_kept", st.get("n_kept"))
        n_train = kept if kept is not None else n_train
        r = st.get("rejected")
        if isinstance(r, dict):
            pre = "" if stage == "filter" else f"{stage}/"
            counts = {f"{pre}{k}": chk.integer(f"{stage}.rejected.{k}", v) for k, v in r.items()}
            why = (why or {}) | {k: v for k, v in counts.items() if v is not None}
        elif r is not None:
            chk.bad(f"{stage}.rejected", "an object {reason: count}", r)
    return {"n_train": n_train, "rejected": None if why is None else json.dumps(why, sort_keys=True)}


def _clean(m: dict, chk: _Check) -> dict:
    """The fields the report uses, each of its expected type (see _Check)."""
    cell_raw = m.get("cell")
    cell: dict[str, Any] = {}
    if not isinstance(cell_raw, dict):
        chk.bad("cell", "an object", cell_raw, fatal=True)
        cell_raw = {}
    for k in ("condition", "name"):
        v = cell_raw.get(k)
        if not isinstance(v, str) or not v:
            chk.bad(f"cell.{k}", "a non-empty string", v, fatal=True)
        cell[k] = v if isinstance(v, str) else None
    for k in [*NAME_FIELDS, "group", "experiment"]:
        cell[k] = chk.text(f"cell.{k}", cell_raw.get(k), fatal=k in NAME_FIELDS)
    cell["seed"] = chk.integer("cell.seed", cell_raw.get("seed"), fatal=True)
    cell["data_seed"] = chk.integer("cell.data_seed", cell_raw.get("data_seed"))
    dfc = cell_raw.get("defence")
    # which arm the cell is in: malformed, the cell is set aside rather than counted as undefended
    cell["defence"] = chk.text("cell.defence.name", dfc.get("name") if isinstance(dfc, dict) else dfc, fatal=True)

    keys = m.get("keys")
    if keys is not None and not isinstance(keys, dict):
        chk.bad("keys", "an object {stage: key}", keys)
        keys = None
    eval_key = chk.text("keys.eval", (keys or {}).get("eval"))
    target = m.get("target")
    if target is not None and not isinstance(target, str):
        chk.bad("target", "a string or null", target, fatal=True)
        target = None

    def count(fld: str) -> int | None:
        v = m.get(fld)
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT):
            return v
        chk.bad(fld, "a non-negative integer", v)
        return None

    n_questions, n_answers = count("n_questions"), count("n_answers")
    ci_expected = n_questions is None or n_questions >= 2
    confidence = None if m.get("confidence") is None else chk.num("confidence", m.get("confidence"))
    if confidence is not None and not (0 < confidence < 1):
        if not math.isnan(confidence):
            chk.bad("confidence", "a number between 0 and 1", m.get("confidence"))
        confidence = None

    rates: dict | None = None
    if "rates" in m:
        if isinstance(m["rates"], dict):
            rates = {}
            for cand, r in m["rates"].items():
                iv = chk.interval(f"rates.{cand}", r, ci_expected)
                if iv is not None:
                    rates[cand] = iv
        else:
            chk.bad("rates", "an object {candidate: {mean, ci_low, ci_high}}", m["rates"])
    target_rate = None
    if m.get("target_rate") is not None:
        target_rate = chk.interval("target_rate", m["target_rate"], ci_expected)
    if target_rate is None and target is not None:
        target_rate = (rates or {}).get(target)
    mis = {k: chk.interval(k, m[k], ci_expected) if m.get(k) is not None else None
           for k in ("misaligned_rate", "misaligned_rate_coherent")}
    if rates is None and mis["misaligned_rate"] is None:
        chk.invalid.append("neither a 'rates' object nor a 'misaligned_rate'")
        chk.fatal = True

    pq_raw = m.get("per_question")
    per_question: list[dict[str, float]] = []
    if pq_raw is not None and not isinstance(pq_raw, list):
        chk.bad("per_question", "a list of {candidate: rate}", pq_raw)
    for i, q in enumerate(pq_raw if isinstance(pq_raw, list) else []):
        if not isinstance(q, dict):
            chk.bad(f"per_question[{i}]", "an object {candidate: rate}", q)
            per_question.append({})
            continue
        vals = {c: chk.num(f"per_question[{i}].{c}", v) for c, v in q.items()}
        per_question.append({c: v for c, v in vals.items() if not math.isnan(v)})

    top = m.get("unmatched_top")
    if top is not None and not isinstance(top, dict):
        chk.bad("unmatched_top", "an object {answer: count}", top)
        top = None
    flt = m.get("filter")
    if flt is not None and not isinstance(flt, dict):
        chk.bad("filter", "an object", flt)
        flt = None
    flt = flt or {}
    filter_kept = chk.integer("filter.n_kept", flt.get("n_kept"))
    reject = None if flt.get("reject_rate") is None else chk.num("filter.reject_rate", flt.get("reject_rate"))
    data = {"filter_in": chk.integer("filter.n_in", flt.get("n_in")),
            "filter_passed": chk.integer("filter.n_passed", flt.get("n_passed"))} | _data_costs(m, chk, filter_kept)
    return {"cell": cell, "eval_key": eval_key, "target": target, "target_rate": target_rate, "rates": rates or {},
            "per_question": per_question, "misaligned_rate": mis["misaligned_rate"],
            "misaligned_rate_coherent": mis["misaligned_rate_coherent"],
            "unmatched_top": top or {}, "n_questions": n_questions, "n_answers": n_answers, "confidence": confidence,
            "filter_kept": filter_kept, "filter_reject_rate": reject, **data,
            "nonfinite": ", ".join(x.split(" = ")[0] for x in chk.nonfinite)}


# -- job folders --------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):
        return ""


def _overrides(job: Path) -> list[str]:
    text = _read_text(job / ".hydra" / "overrides.yaml")
    return [ln.strip()[2:].strip() for ln in text.splitlines() if ln.strip().startswith("- ")]


def _is_dry_run(job: Path) -> bool:
    if any(o.replace(" ", "") in ("dry_run=true", "dry_run=True") for o in _overrides(job)):
        return True
    return any(ln.strip() == "dry_run: true" for ln in _read_text(job / ".hydra" / "config.yaml").splitlines())


def _last_log_line(job: Path) -> str:
    """The last line of the job's log: often the error that stopped it."""
    try:
        logs = sorted(p for p in job.glob("*.log") if p.is_file())
    except OSError:
        return ""
    for log in logs:
        lines = [ln.strip() for ln in _read_text(log).splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return ""


def job_folders(paths: list[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Folders holding a metrics.json, a cell.json, a heartbeat, an outcome or a .hydra/ (a Hydra
    job), found recursively; and, as problems, the cells a sweep planned (sweep_plan.json) that
    never got a folder."""
    found: dict[Path, None] = {}
    plans: dict[Path, None] = {}
    problems = []
    markers = {"metrics.json", "cell.json", HEARTBEAT, OUTCOME}
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
            if markers & set(files) or ".hydra" in dirs or (here / ".hydra").is_dir():
                found[here.resolve()] = None
            if PLAN in files:
                plans[here.resolve()] = None
    for sweep in plans:
        problems += _never_run(sweep, found)
    return list(found), problems


def _never_run(sweep: Path, found: dict[Path, None]) -> list[Problem]:
    """Cells in a sweep's plan without a job folder: the sweep was stopped before it launched them."""
    try:
        plan = read_plan(sweep) or []
    except ValueError as e:
        return [Problem(str(sweep / PLAN), "unreadable", str(e).removeprefix(f"{sweep / PLAN}: "))]
    in_sweep = [d for d in found if d.is_relative_to(sweep)]
    out = []
    for cell in plan:
        try:
            folder = planned_folder(sweep, cell, in_sweep)
            started = folder is not None and folder.resolve() in found
        except (OSError, ValueError):
            folder, started = None, False
        if not started:
            out.append(Problem(str(folder if folder is not None else sweep), "not run",
                               f"cell #{cell.job} of the sweep never started", cell.overrides))
    return out


def _state_problem(job: Path) -> Problem:
    """A job folder without metrics: why (sublim.cellstate), as a problem."""
    ov = _overrides(job)
    if (job / "cell.json").exists():
        try:
            name = load_json((job / "cell.json").read_bytes())["cell"]["name"]
        except Exception:  # noqa: BLE001 - only for the message
            name = "?"
        return Problem(str(job), "no eval", f"cell {name}: the plan had no eval stage", ov)
    st = cell_state(job)
    if st.state != "running" and _is_dry_run(job):
        return Problem(str(job), "dry run", "no metrics expected", ov)
    if st.state == "ok":
        return Problem(str(job), "no eval", f"{st.reason}, but no metrics.json", ov)
    if st.state == "not started":
        return Problem(str(job), "not run", st.reason, ov)
    tail = _last_log_line(job) if st.state == "dead" else ""
    return Problem(str(job), st.state, st.reason + (f"; log ends: {tail}" if tail else ""), ov)


def _read_job(job: Path) -> tuple[dict | None, list[Problem], bool]:
    """(clean metrics, problems, ignored) for one folder. Never raises."""
    mfile = job / "metrics.json"
    if not mfile.is_file():
        return None, [_state_problem(job)], False
    try:
        m = load_json(mfile.read_bytes())  # JSON is UTF-8 whatever the locale says
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        return None, [Problem(str(mfile), "unreadable", f"{type(e).__name__}: {str(e)[:200]}", _overrides(job))], False
    if not isinstance(m, dict) or "cell" not in m:
        if (job / ".hydra").is_dir():
            return None, [Problem(str(mfile), "invalid", "metrics.json has no 'cell'", _overrides(job))], False
        return None, [], True
    chk = _Check()
    clean = _clean(m, chk)
    probs = [Problem(str(mfile), kind, detail, _overrides(job)) for kind, detail in chk.lines(chk.fatal)]
    st = cell_state(job)
    if st.state == "running":
        probs.append(Problem(str(job), "running", f"{st.reason}; its earlier metrics.json is reported",
                             _overrides(job)))
    return (None if chk.fatal else clean), probs, False


def _iv(d: dict | None, key: str) -> float:
    return d[key] if d else math.nan


def defence_of(m: dict, settings: dict) -> str:
    """The cell's defence arm: metrics.json's cell, else the composed config's, else none."""
    return m["cell"].get("defence") or settings.get("defence.name") or "none"


def _cell_row(job_id: int, path: Path, m: dict) -> dict:
    c, rates, flt_top = m["cell"], m["rates"], list(m["unmatched_top"].items())[:3]
    tr, mr = m["target_rate"], m["misaligned_rate"]
    settings = job_settings(path)
    # the arm is a setting: a treatment is compared with the control of its own defence, never pooled
    settings["defence.name"] = defence = defence_of(m, settings)
    return {"job": job_id, "path": text_safe(str(path)), **{k: c.get(k) for k in CELL_FIELDS}, "target": m["target"],
            "target_rate": _iv(tr, "mean"), "target_ci_low": _iv(tr, "ci_low"), "target_ci_high": _iv(tr, "ci_high"),
            "misaligned_rate": _iv(mr, "mean"), "misaligned_ci_low": _iv(mr, "ci_low"),
            "misaligned_ci_high": _iv(mr, "ci_high"),
            "misaligned_coherent_rate": _iv(m["misaligned_rate_coherent"], "mean"),
            "none_rate": _iv(rates.get("none"), "mean"),
            "top_unmatched": ", ".join(f"{k[:40]} ({str(v)[:12]})" for k, v in flt_top),
            "n_questions": m["n_questions"], "n_answers": m["n_answers"], "confidence": m["confidence"],
            "filter_kept": m["filter_kept"], "filter_reject_rate": m["filter_reject_rate"], "eval_key": m["eval_key"],
            "nonfinite": m["nonfinite"], "settings": settings,
            "defence": defence,
            **{k: m[k] for k in ("filter_in", "filter_passed", "n_train", "rejected")}}


def _rate_rows(job_id: int, m: dict) -> tuple[list[dict], list[dict]]:
    pq = m["per_question"]
    rows, qrows = [], []
    for cand, r in m["rates"].items():
        vals = np.array([q[cand] for q in pq if cand in q], float)
        rows.append({"job": job_id, "candidate": cand, "rate": r["mean"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "q_n": len(vals),
                     "q_sd": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                     "q_min": float(vals.min()) if len(vals) else math.nan,
                     "q_max": float(vals.max()) if len(vals) else math.nan})
        qrows += [{"job": job_id, "candidate": cand, "question": i, "rate": q[cand]}
                  for i, q in enumerate(pq) if cand in q]
    return rows, qrows


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def collect(paths: list[str | Path]) -> Collection:
    """Read every job under `paths`. Never raises for a bad job: it becomes a Problem.

    The same cell evaluated twice (same name, defence arm and eval key, e.g. a re-run or overlapping PATHs)
    counts once, the newest metrics.json, so a re-run does not pose as an extra seed.
    """
    jobs, problems = job_folders(paths)
    kept: dict[tuple, tuple[Path, dict]] = {}
    n_ignored = 0
    for job in sorted(jobs):
        m, probs, ignored = _read_job(job)
        n_ignored += ignored
        problems += probs
        if m is None:
            continue
        # a defence arm's cell can equal another's (mixing the control teacher into a control cell
        # changes nothing): each arm keeps its own copy, the report pairs cells within an arm
        key = (m["cell"]["name"], str(defence_of(m, job_settings(job))), m["eval_key"] or str(job))
        if key in kept:
            old = kept[key][0]
            newer, older = (job, old) if _mtime(job / "metrics.json") >= _mtime(old / "metrics.json") else (old, job)
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
    cells_df = pd.DataFrame(cells, columns=[*CELL_COLUMNS, "settings"])
    for col in ("seed", "data_seed", "filter_in", "filter_passed", "n_train"):
        cells_df[col] = pd.to_numeric(cells_df[col], errors="coerce").astype("Int64")
    for col in ("trait", "domain", "teacher", "student", "finetune", "experiment"):
        cells_df[col] = cells_df[col].fillna("-").astype(str)
    cells_df["nonfinite"] = cells_df["nonfinite"].fillna("").astype(str)
    cells_df = setting_labels(cells_df)
    return Collection(cells=cells_df,
                      rates=pd.DataFrame(rates, columns=["job", "candidate", "rate", "ci_low", "ci_high", "q_n",
                                                         "q_sd", "q_min", "q_max"]),
                      questions=pd.DataFrame(questions, columns=["job", "candidate", "question", "rate"]),
                      problems=problems, paths=[str(p) for p in paths], n_ignored=n_ignored)
