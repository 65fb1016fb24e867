"""Running a cell's plan (sublim.plan): what is missing is computed through the Store, which makes a
re-run free and a killed run resumable.

Each missing step runs its stage's `run(spec, work, inputs, runtime)` in this process, or, with
isolation, in a fresh process that reads the same step from disk (GPU memory is given back in
between). Every artifact's spec.json holds the key, the spec that was hashed, and its provenance:
the library versions and sublim commit that computed it, and the runtime it ran with.

A model the loaders cannot read becomes a ModelLoadError naming the path they were given (the job
names its config key). A stage in its own process reports its failure to the job, which raises it
again: an expected failure is then printed once, in one line, wherever the stage ran.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from sublim import api_usage
from sublim.cache import Store
from sublim.errors import ConfigError, ModelLoadError, ReportedStageError, StageError, debug, first_line
from sublim.plan import Plan, Step
from sublim.spec import provenance, to_dict
from sublim.stages import get_stage
from sublim.target import local_cuda

log = logging.getLogger(__name__)


def record(step: Step) -> dict:
    """spec.json: what was hashed (stage, version, spec) and what computed it (not hashed)."""
    return {"stage": step.stage, "version": get_stage(step.stage).VERSION, "key": step.key,
            "spec": to_dict(step.spec),
            "provenance": provenance() | {"runtime": dataclasses.asdict(step.runtime), "inputs": step.inputs}}


def run_step(step: Step, store: Store) -> tuple[Path, bool]:
    """The step's published folder, computed here if missing: (path, computed)."""
    module = get_stage(step.stage)

    def compute(work: Path) -> None:
        try:
            module.run(step.spec, work, step.inputs, step.runtime)
        except (OSError, ValueError) as e:
            failed = model_load_error(e)
            if failed is None:
                raise
            raise failed from e

    return store.get_or_compute(step.stage, step.key, record(step), compute)


_LOADERS = {"load_tokenizer": "tokenizer", "load_model": "model"}


def model_load_error(e: BaseException) -> ModelLoadError | None:
    """`e` as a ModelLoadError when sublim.models' loaders raised it (a hub id not in the HF cache and
    no network, a folder without config.json or tokenizer files), naming the path they were given;
    None for any other error. Read from the traceback's frames: the loaders' errors do not name it."""
    if isinstance(e, (ConfigError, StageError)) or not isinstance(e, (OSError, ValueError)):
        return None
    what = path = None
    tb = e.__traceback__
    while tb is not None:
        frame, code = tb.tb_frame, tb.tb_frame.f_code
        if code.co_name in _LOADERS and Path(code.co_filename).parts[-2:] == ("sublim", "models.py"):
            what, path = _LOADERS[code.co_name], frame.f_locals.get("path")
        elif what == "model" and code.co_name == "from_pretrained" and isinstance(frame.f_locals.get("model_id"), str):
            what, path = "adapter", frame.f_locals["model_id"]  # PeftModel.from_pretrained(model, model_id)
        tb = tb.tb_next
    if what is None or path is None:
        return None
    return ModelLoadError(str(path), what, first_line(e) or type(e).__name__)


# what a stage's own process runs: sublim.isolate under a guard that reports its failure to the job
_CHILD = ("import sys\nfrom sublim.isolate import main\nfrom sublim.pipeline import reporting_failure\n"
          "with reporting_failure(sys.argv[2]):\n    main(sys.argv[1])\n")


@contextlib.contextmanager
def reporting_failure(report: str):
    """In a stage's own process: an exception is written to `report` (JSON: its type, message, stack,
    and what rebuilds it) for the job to raise as its own, and the process exits 1 without printing a
    stack (the job prints one line, or the stack where it is a bug). SUBLIM_DEBUG=1 prints it here too."""
    try:
        yield
    except Exception as e:
        row = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc(),
               "kind": getattr(e, "kind", None), "config": isinstance(e, ConfigError),
               "stage_error": isinstance(e, StageError)}
        if isinstance(e, ModelLoadError):
            row["model"] = {"path": e.path, "what": e.what, "reason": e.reason}
        if isinstance(e, OSError) and e.errno is not None:
            row["os"] = {"errno": e.errno, "strerror": e.strerror, "filename": e.filename}
        try:
            Path(report).write_text(json.dumps(row, default=str))
        except OSError:
            raise e from None  # nowhere to report: the stack is printed here
        if debug():
            traceback.print_exc()
        sys.exit(1)


def reported_error(row: dict, step: Step) -> Exception:
    """The exception a stage's own process reported (reporting_failure), raised again in the job."""
    if row.get("model"):
        e: Exception = ModelLoadError(**row["model"])
    elif row.get("config"):
        e = ConfigError(row["message"])
    elif row.get("stage_error"):
        e = ReportedStageError(row.get("kind") or row["type"], row["message"])
    elif row.get("os"):
        o = row["os"]
        e = OSError(o["errno"], o["strerror"], o["filename"]) if o["filename"] else OSError(o["errno"], o["strerror"])
    else:  # a bug: its stack in the message, so whoever gets it sees where
        e = RuntimeError(f"stage {step.stage} ({step.key}) failed in its own process:\n{row['traceback'].rstrip()}")
    e.child_traceback = row["traceback"]  # type: ignore[attr-defined]
    return e


def run_isolated(step) -> None:
    """Compute `step` (a sublim.plan.Step) in a child process; raises what the child raised."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(step.as_json(), f)
    report = Path(f.name).with_suffix(".error.json")
    try:
        # its own session: Ctrl-C reaches the job alone, which ends this process (run kills it) and
        # says so once; a child still importing would print a KeyboardInterrupt stack of its own
        r = subprocess.run([sys.executable, "-c", _CHILD, f.name, str(report)], start_new_session=True)
        row = json.loads(report.read_text()) if r.returncode != 0 and report.is_file() else None
    finally:
        Path(f.name).unlink(missing_ok=True)
        report.unlink(missing_ok=True)
    if row is not None:
        raise reported_error(row, step)
    if r.returncode != 0:
        raise RuntimeError(f"stage {step.stage} ({step.key}) failed in its own process (exit {r.returncode}); "
                           "its error is printed above")


def describe(plan: Plan, store: Store) -> str:
    """The plan as lines: how auto settings were resolved, then stage, key, hit/miss."""
    width = max([9] + [len(s.stage) for s in plan.steps])
    lines = [f"  {'target':<{width}} {plan.target.device}, {plan.target.backend} ({plan.target.why})"]
    lines += [f"  {s.stage:<{width}} {s.key}  {'hit' if store.exists(s.stage, s.key) else 'MISS'}" for s in plan.steps]
    lines += api_usage.lines(plan, store)  # served models: requests, tokens and cost of what is missing
    lines += [f"  unresolved: {u}" for u in plan.unresolved]
    return "\n".join(lines)


def refuse_unrunnable(plan: Plan, store: Store) -> None:
    """Before any stage: a missing step that cannot be computed here is a one-line error."""
    missing = [s for s in plan.steps if not store.exists(s.stage, s.key)]
    if not missing:
        return
    if plan.unresolved:
        raise ConfigError(plan.unresolved[0])
    if plan.target.device == "cuda" and not local_cuda():
        raise ConfigError(f"this cell was planned for CUDA ({plan.target.why}) but this machine has no CUDA "
                          "device: run it where the GPUs are, or set device=cpu")


def execute(plan: Plan, store: Store, isolate: bool = False) -> dict[str, Path]:
    """Run what is missing; returns each stage's published folder. With `isolate`, each missing
    stage runs in a fresh process (sublim.isolate) that reads its step from disk."""
    refuse_unrunnable(plan, store)
    out = {}
    for s in plan.steps:
        isolated = isolate and not store.exists(s.stage, s.key)
        if isolated:
            try:
                run_isolated(s)
            except KeyboardInterrupt:  # its own process is killed without a word: the log says it here
                store.event(s.stage, s.key, "interrupted")
                raise
        path, computed = run_step(s, store)
        how = "computed in its own process" if isolated else "computed" if computed else "cached"
        log.info("%s %s: %s", s.stage, s.key, how)
        out[s.stage] = path
    return out
