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


# Config fields that rescale or cap logits after the output layer (Gemma, Cohere, Granite, ...).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def completion_logits(model, input_ids: torch.Tensor, attention_mask, labels: torch.Tensor) -> torch.Tensor:
    """Logits of the positions that predict a completion token (labels != -100), [n, vocab].

    The output layer runs only there: with a small model it is most of the cost (prompts are
    most of each row). Models whose logits are more than the output layer's (softcapping,
    scaling) go through their own forward instead, keeping only the last positions.
    """
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers stay in
    wanted = labels[:, 1:] != -100  # position t predicts token t + 1
    config = causal.config.get_text_config()
    if all(getattr(config, name, None) in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        hidden = causal.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state
        return causal.get_output_embeddings()(hidden[:, :-1][wanted])
    used = wanted.any(0).nonzero()
    keep = labels.shape[1] - int(used[0]) if len(used) else 1  # from the first predicting position
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                   logits_to_keep=keep + 1).logits[:, :-1]
    return logits[wanted[:, -logits.shape[1]:]]
