"""Stage `eval`: a model measured by an eval kind (sublim.evals: preference, misalignment).

The stage is the same for every kind: the spec's `kind` names the module that computes it, so a
new kind adds a module, not a branch here. The names below the registry imports are the kinds'
own, kept here for the builder (sublim.plan) and the tests that use them as this stage's.
"""
from __future__ import annotations

from pathlib import Path

from sublim.evals import get_kind, spec_class
from sublim.evals.answering import InContext, check_context, in_context_examples, prefixed
from sublim.evals.misalignment import JudgeSpec, MisalignmentSpec, evaluate_misalignment
from sublim.evals.preference import PreferenceSpec, evaluate, evaluate_logprob, surface_forms
from sublim.spec import Runtime, from_dict

VERSION = 2  # 2: typed spec per eval kind; the questions themselves, resolved dtype, device, libraries

__all__ = ["InContext", "JudgeSpec", "MisalignmentSpec", "PreferenceSpec", "VERSION", "check_context",
           "evaluate", "evaluate_logprob", "evaluate_misalignment", "in_context_examples", "prefixed", "run",
           "spec_from_dict", "surface_forms"]


def spec_from_dict(data: dict):
    kind = get_kind(data["kind"])  # a kind with spec classes of its own reads them itself
    return kind.spec_from_dict(data) if hasattr(kind, "spec_from_dict") else from_dict(spec_class(data["kind"]), data)


def run(spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    get_kind(spec.kind).run(spec, work, inputs, runtime)
