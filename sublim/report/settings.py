"""What else differs between cells that share a name: the setting a group must not pool over.

A cell's name says trait, domain, teacher, student and fine-tuning method, not every setting, so
a LoRA-rank sweep (finetune=lora_r2,lora,lora_r32) or two runs with different eval options would
otherwise be pooled as if they were seeds of one condition. Each job's composed config (Hydra's
.hydra/config.yaml, written with interpolations unresolved, so `${seed}`-derived values read
alike across seeds) is flattened; seeds and keys that change only speed or where files go are
dropped; the keys that still differ among comparable cells become the cell's `setting` label,
e.g. "finetune.lora_r=2". Cells without a saved config have no settings and never split.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sublim.cellstate import text_safe

# seeds (what a replicate varies) and keys that change speed, memory or file locations, not results
NEUTRAL = ("seed", "data_seed", "dry_run", "isolate", "stages", "experiment_name", "trait.train_seed")
NEUTRAL_PREFIXES = ("paths.", "logger.", "hydra.", "sampler.batch_size", "sampler.vllm.", "finetune.micro_batch_size",
                    "finetune.save_steps", "trait.train.micro_batch_size", "trait.train.save_steps")
# what the cell's name and condition already say: differs between a treatment and its baseline by design
NAMED_PREFIXES = ("trait.", "teacher.", "student.", "domain.name", "finetune.method", "eval.subject",
                  "eval.subliminal_")  # subliminal prompting: the condition, trait and method say it (sublim.cell)
GROUP = ["condition", "trait", "domain", "teacher", "student", "finetune"]
FAMILY = ["domain", "student", "finetune"]  # a treatment and the baselines it may be compared with


def _flat(d: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(d, dict):
        out: dict[str, str] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    if isinstance(d, str):
        return {text_safe(prefix[:-1]): text_safe(d)}
    try:
        return {text_safe(prefix[:-1]): json.dumps(d, sort_keys=True, default=str)}
    except (TypeError, ValueError):  # keys of mixed types in a list's dicts: still one comparable text
        return {text_safe(prefix[:-1]): text_safe(repr(d))}


def _neutral(key: str) -> bool:
    return key in NEUTRAL or key.startswith(NEUTRAL_PREFIXES)


def job_settings(job: Path) -> dict[str, str]:
    """The job's result-relevant config values, flattened ("finetune.lora_r" -> "8"); {} if unreadable."""
    try:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        return {k: v for k, v in _flat(cfg).items() if not _neutral(k)} if isinstance(cfg, dict) else {}
    except (OSError, ValueError, RecursionError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}


def _varying(settings: list[dict[str, str]], skip=()) -> set[str]:
    keys = set().union(*settings) if settings else set()
    return {k for k in keys if not k.startswith(tuple(skip)) and len({s.get(k) for s in settings}) > 1}


def setting_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` (with a `settings` column of dicts) plus `setting` (the label, "" when nothing
    differs) and `setting_kv` (the label's pairs outside the named keys, for baseline matching).

    A cell's label keys: those that differ within its group (same condition, trait, domain,
    teacher, student, method), and those outside the named keys that differ within its family
    (same domain, student, method: the cells its baselines come from)."""
    labels: dict = {}
    kvs: dict = {}
    family_keys = {k: _varying(list(g["settings"]), NAMED_PREFIXES)
                   for k, g in cells.groupby(FAMILY, sort=False, dropna=False)}
    for k, g in cells.groupby(GROUP, sort=False, dropna=False):
        keys = sorted(_varying(list(g["settings"])) | family_keys[tuple(k[GROUP.index(f)] for f in FAMILY)])
        for idx, s in zip(g.index, g["settings"]):
            labels[idx] = ", ".join(f"{key}={s.get(key, '(unset)')}" for key in keys)
            kvs[idx] = tuple((key, s.get(key)) for key in keys if not key.startswith(NAMED_PREFIXES))
    return cells.assign(setting=[labels.get(i, "") for i in cells.index],
                        setting_kv=[kvs.get(i, ()) for i in cells.index])


def matches(settings: pd.Series, kv: tuple) -> pd.Series:
    """Which cells (their `settings` dicts) agree with the pairs `kv`."""
    return settings.map(lambda s: all(s.get(k) == v for k, v in kv))
