"""S independent MLPs as one batched network: every weight is a tensor [S, fan_in, fan_out].

One torch.baddbmm per layer runs all S seeds in one forward and one backward. Nothing mixes
seeds: each seed's output depends only on its own slice, losses are SUMMED over seeds (so each
slice's gradient is exactly its own per-seed gradient; a mean would scale it by 1/S) and Adam is
elementwise. Batched training therefore equals training the seeds one by one (tested), while
gradient-norm clipping or weight averaging over the stack would not (neither is used).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

Params = list[torch.Tensor]  # [W1, b1, W2, b2, ...]; W: [S, in, out], b: [S, 1, out]


def seed_generator(seed: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    """An independent RNG per (seed, purpose), so a seed's numbers never depend on the others."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))
    return g


def init_params(seeds: Sequence[int], sizes: Sequence[int], init: str, stream: int) -> Params:
    """Weights for one model per seed, drawn on CPU (identical on every device).

    normal: N(0, 1/fan_in) weights, zero biases. torch: nn.Linear's default, U(+-1/sqrt(fan_in))
    for weights and biases.
    """
    per_seed = []
    for s in seeds:
        g = seed_generator(s, stream)
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)
            if init == "normal":
                w = torch.randn(fan_in, fan_out, generator=g) * bound
                b = torch.zeros(1, fan_out)
            else:
                w = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
                b = (torch.rand(1, fan_out, generator=g) * 2 - 1) * bound
            layers += [w, b]
        per_seed.append(layers)
    return [torch.stack(ts) for ts in zip(*per_seed)]


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits [S, B, out] for inputs [S, B, in] (input row s goes through model s only)."""
    h = x
    n = len(params) // 2
    for i in range(n):
        h = torch.baddbmm(params[2 * i + 1], h, params[2 * i])
        if i < n - 1:
            h = h.relu_()  # in place: baddbmm keeps its inputs, not its output, for backward
    return h


@torch.no_grad()
def accuracy(params: Params, x: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Test accuracy per model [S]: argmax over the class logits only (auxiliary ones ignored)."""
    s = params[0].shape[0]
    logits = forward(params, x.unsqueeze(0).expand(s, *x.shape))[..., :n_classes]
    return (logits.argmax(-1) == y).float().mean(-1)


def cat(stacks: Sequence[Params]) -> Params:
    """Several stacks as one bigger stack (e.g. all student arms trained in one pass)."""
    return [torch.cat(ts) for ts in zip(*stacks)]


def select(params: Params, lo: int, hi: int) -> Params:
    return [p[lo:hi] for p in params]


@contextmanager
def cpu_threads(n: int, device: torch.device):
    """Temporarily set torch's intra-op threads on CPU (n <= 0 or a GPU: leave them)."""
    if n <= 0 or device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
