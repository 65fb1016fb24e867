"""Teachers, then every student arm, for a group of seeds trained as one batched network.

`train_seeds(spec, data, seeds)` is the whole per-seed recipe. Called with all seeds it is the
batched path; `train_sequential` calls it with one seed at a time. Each seed draws its init, data
order and noise from its own generators (model.seed_generator), so both paths see the same
numbers and agree to float tolerance (tests/test_mnist.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sublim.progress import bar as tqdm  # tqdm on a terminal; also the stage's progress record (sublim.progress)

from .data import Digits
from .model import Params, accuracy, cat, forward, init_params, seed_generator, select
from .spec import MnistSpec

N_CLASSES = 10
# RNG streams of one seed: the reference (teacher) init, the different-init student's init,
# the teacher's data order, the students' noise, the order a fixed noise pool is visited in.
REFERENCE_INIT, OTHER_INIT, TEACHER_ORDER, NOISE, NOISE_ORDER = range(5)
# arm -> (its teacher: "trained" | "reference", its init: "reference" | "other", KL on all logits?)
ARM_RECIPE = {
    "same_init": ("trained", "reference", False),
    "different_init": ("trained", "other", False),
    "reference_student": ("reference", "reference", False),
    "all_logits": ("trained", "reference", True),
}


@dataclass
class SeedResults:
    """Per-seed results of a group of seeds (arrays have one row per seed, in seed order)."""

    seeds: list[int]
    teacher_acc: np.ndarray
    reference_acc: np.ndarray  # the untrained initial model
    arm_acc: dict[str, np.ndarray]
    curve_steps: list[int]
    curves: dict[str, np.ndarray]  # arm -> [S, len(curve_steps)]
    teacher: Params = field(repr=False)
    students: dict[str, Params] = field(repr=False)
    times: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MnistSpec.device='cuda' but torch sees no CUDA device")
    return torch.device(name)


def _fused(device: torch.device) -> dict:
    """Fused Adam (one kernel for all parameters): same elementwise update, less overhead."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_teachers(params: Params, x: torch.Tensor, y: torch.Tensor, seeds: Sequence[int],
                   spec: MnistSpec, progress: bool) -> Params:
    """Cross-entropy on the 10 class logits only: the auxiliary logits get no direct signal."""
    params = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(params, lr=spec.teacher_lr, **_fused(x.device))
    orders = [seed_generator(s, TEACHER_ORDER) for s in seeds]
    n, b, s = len(x), spec.teacher_batch, len(seeds)
    steps = spec.teacher_epochs * -(-n // b)
    with tqdm(total=steps, desc=f"teachers x{s}", disable=not progress, leave=False) as bar:
        for _ in range(spec.teacher_epochs):
            perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(x.device)
            for i in range(0, n, b):
                idx = perm[:, i:i + b]
                logits = forward(params, x[idx])[..., :N_CLASSES]
                per_seed = F.cross_entropy(logits.reshape(-1, N_CLASSES), y[idx].reshape(-1),
                                           reduction="none").view(s, -1).mean(1)
                opt.zero_grad(set_to_none=True)
                per_seed.sum().backward()  # sum, not mean: no 1/S coupling between seeds
                opt.step()
                bar.update()
    return [p.detach() for p in params]


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes, mean over the batch: one value per model [S]."""
    return F.kl_div(student_logits.log_softmax(-1), teacher_logits.log_softmax(-1),
                    log_target=True, reduction="none").sum(-1).mean(-1)


def noise_batches(spec: MnistSpec, seeds: Sequence[int], d: int, n_train: int, dev: torch.device):
    """Each step's noise [S, batch, d], in [noise_low, noise_high): fresh every step, or batches of a
    fixed per-seed pool (spec.noise_pool) in a new order each epoch. Drawn from each seed's own
    generators, so a seed gets the same noise batched or alone."""
    lo, width = spec.noise_low, spec.noise_high - spec.noise_low
    gens = [seed_generator(sd, NOISE, dev) for sd in seeds]
    if spec.noise_pool == 0:
        while True:
            fresh = torch.stack([torch.rand(spec.student_batch, d, generator=g, device=dev) for g in gens])
            yield fresh.mul_(width).add_(lo)
    n = n_train if spec.noise_pool == -1 else spec.noise_pool
    pool = torch.stack([torch.rand(n, d, generator=g, device=dev) for g in gens]).mul_(width).add_(lo)
    orders = [seed_generator(sd, NOISE_ORDER, dev) for sd in seeds]
    rows = torch.arange(len(seeds), device=dev)[:, None]
    while True:  # one epoch: every image once; the last batch may be smaller (the same size for every seed)
        perm = torch.stack([torch.randperm(n, generator=g, device=dev) for g in orders])
        for b in range(0, n, spec.student_batch):
            yield pool[rows, perm[:, b:b + spec.student_batch]]


def distill(students: Params, teachers: Params, plan: list[tuple[int, bool]], seeds: Sequence[int],
            spec: MnistSpec, x_test: torch.Tensor, y_test: torch.Tensor, progress: bool, n_train: int = 0):
    """Train the stacked students (arm-major blocks of S) on uniform noise (noise_batches).

    plan[a] = (index of arm a's teacher block in `teachers`, KL on all logits?). Every arm of a
    seed sees the same noise batch (a paired comparison), and each teacher block is run once per
    step however many arms share it. Returns final students, curve steps, curve [A*S, points].
    """
    s, d = len(seeds), x_test.shape[1]
    n_t = teachers[0].shape[0] // s
    dev = x_test.device
    students = [p.clone().requires_grad_() for p in students]
    opt = torch.optim.Adam(students, lr=spec.student_lr, **_fused(dev))
    batches = noise_batches(spec, seeds, d, n_train, dev)
    every = spec.eval_every if spec.eval_every > 0 else max(spec.student_steps, 1)
    steps_at, curve = [0], [accuracy(students, x_test, y_test)]
    with tqdm(total=spec.student_steps, desc=f"students x{len(plan) * s}", disable=not progress,
              leave=False) as bar:
        for step in range(1, spec.student_steps + 1):
            noise = next(batches)
            with torch.no_grad():
                t_logits = forward(teachers, noise.repeat(n_t, 1, 1))
            s_logits = forward(students, noise.repeat(len(plan), 1, 1))
            loss = 0.0
            for a, (t, all_logits) in enumerate(plan):
                k = slice(None) if all_logits else slice(N_CLASSES, None)
                loss = loss + _kl(s_logits[a * s:(a + 1) * s, :, k], t_logits[t * s:(t + 1) * s, :, k]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            if step % every == 0 or step == spec.student_steps:
                steps_at.append(step)
                curve.append(accuracy(students, x_test, y_test))
    return [p.detach() for p in students], steps_at, torch.stack(curve, 1)


def tensors(data: Digits, device: torch.device):
    f = lambda a, dt: torch.as_tensor(a, dtype=dt, device=device)
    return (f(data.x_train, torch.float32), f(data.y_train, torch.long),
            f(data.x_test, torch.float32), f(data.y_test, torch.long))


def train_seeds(spec: MnistSpec, data: Digits, seeds: Sequence[int], device: torch.device,
                progress: bool = True) -> SeedResults:
    """Teachers of `seeds` together, then every student arm of `seeds` together."""
    seeds, s = list(seeds), len(seeds)
    xtr, ytr, xte, yte = tensors(data, device)
    sizes = [data.n_features, spec.hidden_1, spec.hidden_2, N_CLASSES + spec.n_aux]
    to = lambda ps: [p.to(device) for p in ps]
    reference = to(init_params(seeds, sizes, spec.init, REFERENCE_INIT))
    times = {}
    _sync(device)
    t0 = time.perf_counter()
    teacher = train_teachers(reference, xtr, ytr, seeds, spec, progress)
    _sync(device)
    times["teacher_s"] = time.perf_counter() - t0

    recipes = [ARM_RECIPE[a] for a in spec.arms]
    teacher_names = sorted({r[0] for r in recipes}, key=["trained", "reference"].index)
    teacher_stack = cat([teacher if n == "trained" else reference for n in teacher_names])
    other = to(init_params(seeds, sizes, spec.init, OTHER_INIT)) if any(r[1] == "other" for r in recipes) else None
    students0 = cat([reference if r[1] == "reference" else other for r in recipes])
    plan = [(teacher_names.index(r[0]), r[2]) for r in recipes]
    t0 = time.perf_counter()
    students, steps_at, curve = distill(students0, teacher_stack, plan, seeds, spec, xte, yte, progress, len(xtr))
    _sync(device)
    times["students_s"] = time.perf_counter() - t0

    np_ = lambda t: t.detach().cpu().numpy()
    blocks = {arm: (a * s, (a + 1) * s) for a, arm in enumerate(spec.arms)}
    return SeedResults(
        seeds=seeds,
        teacher_acc=np_(accuracy(teacher, xte, yte)),
        reference_acc=np_(accuracy(reference, xte, yte)),
        arm_acc={arm: np_(curve[lo:hi, -1]) for arm, (lo, hi) in blocks.items()},
        curve_steps=steps_at,
        curves={arm: np_(curve[lo:hi]) for arm, (lo, hi) in blocks.items()},
        teacher=teacher,
        students={arm: select(students, lo, hi) for arm, (lo, hi) in blocks.items()},
        times=times,
    )


def merge(parts: list[SeedResults]) -> SeedResults:
    """One SeedResults from per-seed runs (the sequential path), times summed."""
    if len(parts) == 1:
        return parts[0]
    catn = lambda xs: np.concatenate(xs)
    arms = list(parts[0].arm_acc)
    return SeedResults(
        seeds=[s for p in parts for s in p.seeds],
        teacher_acc=catn([p.teacher_acc for p in parts]),
        reference_acc=catn([p.reference_acc for p in parts]),
        arm_acc={a: catn([p.arm_acc[a] for p in parts]) for a in arms},
        curve_steps=parts[0].curve_steps,
        curves={a: catn([p.curves[a] for p in parts]) for a in arms},
        teacher=cat([p.teacher for p in parts]),
        students={a: cat([p.students[a] for p in parts]) for a in arms},
        times={k: sum(p.times[k] for p in parts) for k in parts[0].times},
    )


def train_sequential(spec: MnistSpec, data: Digits, seeds: Sequence[int], device: torch.device,
                     progress: bool = True) -> SeedResults:
    """The same recipe one seed after another (S = 1): the baseline the batched path must beat."""
    return merge([train_seeds(spec, data, [s], device, progress) for s in seeds])
