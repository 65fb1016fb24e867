"""Stage `teacher`: a teacher whose trait comes from fine-tuning rather than a system prompt.

LoRA on the reference model, trained on a trait data set: the user's chat JSONL (e.g. insecure
code for the misaligned teacher) or favourite-<category> answers written here, optionally mixed
with the reference's own number continuations (`trait.mix_numbers`) so the teacher's numbers stay
like the reference's. Output: adapter/ (or model/ for full fine-tuning), trait_data.jsonl
(exactly what was trained on), train_log.jsonl, stats.json.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime, load_args
from sublim.stages.finetune import TrainSpec, finetune
from sublim.traits import preference_rows

VERSION = 2  # 2: typed spec; resolved precision, device and library versions keyed


@dataclass(frozen=True)
class Spec:
    base: ModelRef  # the reference model the trait is trained into
    system_prompt: Optional[str]
    train: TrainSpec
    seed: int
    name: str
    category: str
    data: Optional[str]  # content ref of trait.data; None: `n_examples` preference answers written here
    n_examples: Optional[int]
    mix_numbers: float
    mix_data: Optional[str]  # ref of the control teacher's filtered numbers (train.jsonl), when mixed
    device: str
    libraries: dict


def trait_rows(spec: Spec, inputs: dict[str, str]) -> list[dict]:
    rows = list(read_jsonl(inputs[spec.data])) if spec.data else preference_rows(spec.name, spec.category,
                                                                                spec.n_examples, spec.seed)
    if spec.mix_data is not None and spec.mix_numbers > 0:
        numbers = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(inputs[spec.mix_data])]
        n_mix = min(len(numbers), round(len(rows) * spec.mix_numbers / (1 - spec.mix_numbers)))
        rng = random.Random(f"teacher-mix-{spec.seed}")
        rows = rows + rng.sample(numbers, n_mix)
        rng.shuffle(rows)
    return rows


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    data_path = work / "trait_data.jsonl"
    write_jsonl(data_path, trait_rows(spec, inputs))
    finetune(work, load_args(spec.base, inputs), spec.system_prompt, data_path, spec.train, spec.seed, spec.device,
             runtime)
