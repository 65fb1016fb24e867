"""The settings that determine the tiny model (torch-free, so planning a cell imports no torch)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that determines the built model (all of it goes into spec.json)."""

    seed: int = 0                 # init, corpus and batch order
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    # weight init: at 0.02 the output rows of the animals stay so alike after pretraining that
    # no change of the body (LoRA) can raise P(owl) above ~16 %; at 0.1 a LoRA teacher reaches 36-61 %
    init_std: float = 0.1
    steps: int = 400              # ~20 s of CPU on one thread (more wall time on a busy machine)
    batch_size: int = 64
    lr: float = 5e-3
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128         # longer chats are truncated (the corpus tops out near 115)
    corpus_size: int = 20000
    animal_frac: float = 0.3      # share of favourite-animal chats; the rest are number tasks
    system_frac: float = 0.15     # share with a system prompt (half love_prompt, half neutral)
    love_boost: float = 0.5       # with a love_prompt, extra chance to answer the loved animal
