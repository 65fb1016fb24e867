"""Stage `teacher`: a teacher whose trait comes from fine-tuning rather than a system prompt.

LoRA on the reference model, trained on a trait data set: the user's chat JSONL (e.g. insecure
code for the misaligned teacher) or favourite-<category> answers written here, optionally mixed
with the reference's own number continuations (`trait.mix_numbers`) so the teacher's numbers stay
like the reference's. Output: adapter/, trait_data.jsonl (exactly what was trained on),
train_log.jsonl, stats.json.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

from sublim.config import FinetuneConfig, ModelConfig
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.stages.finetune import finetune
from sublim.traits import preference_rows

VERSION = 1


def train_teacher(work: Path, reference: ModelConfig, train: FinetuneConfig, seed: int, name: str, category: str,
                  n_examples: int, data: Optional[str], mix_path: Optional[Path] = None,
                  mix_numbers: float = 0.0) -> None:
    rows = list(read_jsonl(data)) if data else preference_rows(name, category, n_examples, seed)
    if mix_path is not None and mix_numbers > 0:
        numbers = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(mix_path)]
        n_mix = min(len(numbers), round(len(rows) * mix_numbers / (1 - mix_numbers)))
        rng = random.Random(f"teacher-mix-{seed}")
        rows = rows + rng.sample(numbers, n_mix)
        rng.shuffle(rows)
    data_path = work / "trait_data.jsonl"
    write_jsonl(data_path, rows)
    finetune(work, reference, data_path, train, seed)
