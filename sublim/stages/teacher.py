"""Stage `teacher`: a teacher whose trait comes from fine-tuning rather than a system prompt.

LoRA on the reference model, trained on a trait data set: the user's chat JSONL (e.g. insecure
code for the misaligned teacher) or favourite-<category> answers written here. Output: adapter/,
trait_data.jsonl (exactly what was trained on), train_log.jsonl, stats.json.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from sublim.config import FinetuneConfig, ModelConfig
from sublim.jsonl import write_jsonl
from sublim.stages.finetune import finetune
from sublim.traits import preference_rows

VERSION = 1


def train_teacher(work: Path, reference: ModelConfig, train: FinetuneConfig, seed: int, name: str, category: str,
                  n_examples: int, data: Optional[str]) -> None:
    data_path = work / "trait_data.jsonl"
    if data:
        shutil.copyfile(data, data_path)
    else:
        write_jsonl(data_path, preference_rows(name, category, n_examples, seed))
    finetune(work, reference, data_path, train, seed)
