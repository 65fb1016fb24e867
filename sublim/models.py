"""Loading a model the way users name it: a hub id or a local path, plus an optional adapter.

trust_remote_code stays off unless a model config turns it on.
"""
from __future__ import annotations

from typing import Optional

import torch


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
            "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]


def load_tokenizer(path: str, revision: Optional[str] = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)


def load_model(path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
               dtype: str = "auto", trust_remote_code: bool = False, device: str = "cpu"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, revision=revision, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code
    ).to(device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model
