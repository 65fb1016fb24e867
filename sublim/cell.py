"""The names of a cell: its seedless group (W&B, the report), its name and its condition, and the
trait it measures. One definition, so the job folder, W&B and sublim-report agree on what a cell is.
"""
from __future__ import annotations

from typing import Optional

from sublim.config import Config
from sublim.evals import subliminal
from sublim.rewording import label


def cell_of(cfg: Config) -> dict:
    """Names for this cell: the seedless group (W&B, report) and its condition.

    An in-context cell (eval.in_context=N, the ICL control) is a control or treatment whose
    fine-tuning reads `in_context{N}`: the report compares it with the ICL control of the same N.
    A subliminal-prompting cell (eval.subliminal_prompt) reads `subliminal_<trait><k>`: top a
    treatment of the trait, random its control (trait none), paired by the report as any other."""
    method = cfg.finetune.method
    if cfg.eval.subject == "teacher":
        condition, method = "teacher", "-"
    else:
        if getattr(cfg.eval, "in_context", 0) > 0:  # a preference eval's field
            method = f"in_context{cfg.eval.in_context}"
        condition = "base" if method == "none" else ("control" if cfg.trait.name == "none" else "treatment")
    teacher = "-" if method == "none" else cfg.teacher.name
    trained_trait = cfg.trait.name != "none" and cfg.trait.method != "prompt"
    trait = "-" if method == "none" else cfg.trait.name + (f"+{cfg.trait.method}" if trained_trait else "")
    prompted = subliminal.cell(cfg)  # eval.subliminal_prompt: top a treatment, random its control
    if prompted:
        condition, trait, method, teacher = prompted["condition"], prompted["trait"], prompted["finetune"], "-"
    group = f"{trait}.{cfg.domain.name}.{teacher}.{cfg.student.name}.{method}"
    reworded = label(cfg) if method != "none" else ""  # the paraphraser and rewriter by name (sublim.rewording)
    group += f"+{reworded}" if reworded else ""
    return {"condition": condition, "group": group, "name": f"{group}.seed{cfg.seed}", "trait": trait,
            "domain": cfg.domain.name, "teacher": teacher, "student": cfg.student.name, "finetune": method,
            "seed": cfg.seed, "data_seed": cfg.data_seed, "experiment": cfg.experiment_name,
            "defence": cfg.defence.name}  # the defence arm (sublim.report.defences pairs arms by it)


def measured_trait(cfg: Config, cell: dict) -> Optional[str]:
    """The trait whose rate this cell measures: none for a base cell (the untouched student serves
    every target) or a control teacher."""
    prompted = subliminal.cell(cfg)
    if prompted:
        return prompted["target"]
    return cfg.trait.name if cfg.trait.name != "none" and cell["condition"] != "base" else None
