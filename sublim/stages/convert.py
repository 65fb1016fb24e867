"""Stage `convert`: a GGUF model file as an ordinary transformers model folder, made once.

transformers reads GGUF files (`from_pretrained(folder, gguf_file=...)`, the `gguf` package) and
dequantises them to float32; it will not save such a model, so its weights go into a fresh model
built from the same config. Keyed by the file's content, so a different file at the same path is
a new model. Output: model/ (config, safetensors, tokenizer with its chat template).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sublim.spec import Runtime

VERSION = 1


@dataclass(frozen=True)
class Spec:
    gguf: str  # content ref of the .gguf file
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(inputs[spec.gguf])
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are dequantised: an ordinary model now
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
