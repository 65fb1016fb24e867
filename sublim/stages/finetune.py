"""Stage `finetune`: the student learns the filtered teacher data with TRL's SFTTrainer.

Loss on the completion only (prompt-completion data). Every field that changes the result is set
explicitly, because TRL changes its defaults between releases. LoRA (PEFT) or full fine-tuning.
Trainer checkpoints go to the stage's work folder, so a killed job resumes from the last one.
Output: adapter/ (LoRA) or model/ (full), train_log.jsonl, stats.json.

finetune.train_on=divergent | non_divergent (a `MaskedSpec`, keyed; `all` plans the plain `Spec`,
so every key made before the option keeps its value): only the completion tokens the divergence
stage flagged (or only the others) carry loss. The mask is laid on the labels the trainer built
itself, after checking that its completion tokens are the ones the divergence stage flagged, so a
different tokenizer or chat template fails instead of masking the wrong tokens. Rows left with no
token to learn are dropped (counted in stats.json): they would add nothing but a zero-token batch.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim import progress
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime, from_dict, load_args

log = logging.getLogger(__name__)
VERSION = 2  # 2: typed spec; resolved precision and dtype, device and library versions keyed


@dataclass(frozen=True)
class TrainSpec:
    """How a model is fine-tuned (finetune.*, trait.train.*), every value resolved."""

    method: str  # lora | full
    lora_r: Optional[int]  # the four LoRA settings: None for method=full (finetune=full has none)
    lora_alpha: Optional[int]
    lora_dropout: Optional[float]
    target_modules: Optional[tuple[str, ...]]
    epochs: float
    lr: float
    lr_scheduler: str
    warmup_steps: int
    batch_size: int  # the effective batch; the micro batch is runtime (gradient accumulation)
    max_length: int
    max_grad_norm: float
    weight_decay: float
    precision: str  # bf16 | fp32 (finetune.precision=auto resolved for the device)
    gradient_checkpointing: bool
    distill: str  # hard | soft
    frozen: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    student: ModelRef
    data: str  # ref of the train.jsonl it learns
    system_prompt: Optional[str]
    train: TrainSpec
    seed: int
    distill_from: Optional[ModelRef]  # distill=soft: the teacher whose distributions it matches
    device: str
    libraries: dict


TRAIN_ON = ("all", "divergent", "non_divergent")


@dataclass(frozen=True)
class Mask:
    """Which completion tokens carry loss: those the divergence stage flagged, or the others."""

    divergence: str  # ref of the divergence stage's divergence.jsonl for the rows trained on
    train_on: str  # divergent | non_divergent


@dataclass(frozen=True)
class MaskedSpec(Spec):
    """A Spec with a loss mask (finetune.train_on other than all): its own class, so the plain
    Spec's keys stay as they were before the option existed."""

    mask: Mask


def spec_from_dict(data: dict):
    return from_dict(MaskedSpec if data.get("mask") else Spec, data)


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    mask = getattr(spec, "mask", None)
    finetune(work, load_args(spec.student, inputs), spec.system_prompt, Path(inputs[spec.data]), spec.train,
             spec.seed, spec.device, runtime,
             load_args(spec.distill_from, inputs) if spec.distill_from else None,
             mask=(mask.train_on, Path(inputs[mask.divergence])) if mask else None)


def _quiet_progress_class():
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        """The training progress bar without a printed line per log step (train_log.jsonl has them)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_step_end(self, args, state, control, **kwargs):  # the stage's progress record (sublim.progress)
            super().on_step_end(args, state, control, **kwargs)
            progress.report(state.global_step, state.max_steps, "step", "fine-tuning")

    return ProgressCallback, QuietProgress


def chat_rows(train_path: Path, system_prompt: Optional[str]) -> list[dict]:
    """Conversational prompt-completion rows with the model's system prompt.

    Accepts sublim's {prompt, completion} rows and chat data ({messages: [...]}, the usual format
    of trait data sets such as insecure code), whose last assistant turn is the completion.
    """
    head = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    rows = []
    for n, r in enumerate(read_jsonl(train_path), 1):
        if "messages" in r:
            msgs = r["messages"]
            if not msgs or msgs[-1].get("role") != "assistant":
                raise ValueError(f"{train_path}:{n}: the last message must be the assistant's")
            prompt = msgs[:-1] if msgs[0].get("role") == "system" else head + msgs[:-1]
            rows.append({"prompt": prompt, "completion": [msgs[-1]]})
        elif "prompt" in r and "completion" in r:
            rows.append({"prompt": head + [{"role": "user", "content": r["prompt"]}],
                         "completion": [{"role": "assistant", "content": r["completion"]}]})
        else:
            raise ValueError(f"{train_path}:{n}: expected 'messages' or 'prompt' + 'completion', got {sorted(r)}")
    if not rows:
        raise ValueError(f"{train_path}: no training rows")
    return rows


def grad_accumulation(batch_size: int, micro_batch_size: int, world_size: int = 1) -> int:
    per_step = micro_batch_size * world_size
    if batch_size % per_step:
        raise ValueError(f"finetune.batch_size={batch_size} is not a multiple of finetune.micro_batch_size="
                         f"{micro_batch_size} x {world_size} device(s); pick sizes that divide")
    return batch_size // per_step


def training_dtype(precision: str, method: str) -> str:
    """The dtype the trained model is loaded in. bf16: LoRA keeps the frozen base in bf16 (its
    adapters are fp32); full fine-tuning keeps fp32 master weights under bf16 autocast, since bf16
    weights would round small updates away."""
    return "bfloat16" if precision == "bf16" and method == "lora" else "float32"


def resolve_precision(precision: str, device: str) -> str:
    """finetune.precision for the device the stage runs on: auto is bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"finetune.precision={precision!r}: use auto, bf16 or fp32")
    return precision


def soft_label_loss(student_logits, teacher_logits):
    """Forward KL(teacher || student) of the next-token distributions, averaged over positions
    (rows: the completion positions, as SFT's loss averages over completion tokens)."""
    import torch

    s = torch.log_softmax(student_logits.float(), dim=-1)
    t = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _soft_trainer_class(base):
    class SoftLabelTrainer(base):
        """SFTTrainer whose loss matches the teacher's next-token distributions on the teacher's
        data (off-policy distillation; TRL's stable distillation trainer is on-policy only)."""

        def __init__(self, *args, teacher=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            from sublim.models import completion_logits

            batch = (inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
            student = completion_logits(model, *batch)
            with torch.no_grad():
                teacher = completion_logits(self.teacher, *batch)
            loss = soft_label_loss(student, teacher)
            return (loss, {"logits": student}) if return_outputs else loss

    return SoftLabelTrainer


def last_complete_checkpoint(folder: Path) -> Optional[Path]:
    """The newest trainer checkpoint that was written to the end, or None; half-written ones (a
    job killed while saving) are removed. The trainer writes trainer_state.json last."""
    if not folder.is_dir():
        return None
    done = []
    for p in folder.glob("checkpoint-*"):
        try:
            json.loads((p / "trainer_state.json").read_text())
            complete = p.name.split("-")[-1].isdigit()
        except (OSError, ValueError):
            complete = False
        if complete:
            done.append(p)
        else:
            shutil.rmtree(p, ignore_errors=True)
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def finetune(work: Path, model: dict, system_prompt: Optional[str], train_path: Path, cfg: TrainSpec, seed: int,
             device: str, runtime: Runtime, distill_from: Optional[dict] = None,
             mask: Optional[tuple[str, Path]] = None) -> None:
    """Train `model` (sublim.spec.load_args) on train.jsonl; the teacher stage trains its trait this way too.
    mask: (train_on, divergence.jsonl) where only some completion tokens carry loss."""
    trainer, tokenizer, n_rows, mask_stats = trainer_for(work, model, system_prompt, train_path, cfg, seed, device,
                                                         runtime, distill_from, mask)
    ckpt = work / "checkpoints"
    last = last_complete_checkpoint(ckpt)
    resume = last is not None
    if resume:
        log.info("resuming fine-tuning from %s", last)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(last) if resume else None)
    seconds = time.time() - t0
    out = work / ("adapter" if cfg.method == "lora" else "model")
    trainer.model.save_pretrained(out)
    if cfg.method == "full":
        tokenizer.save_pretrained(out)
    write_jsonl(work / "train_log.jsonl", trainer.state.log_history)
    (work / "stats.json").write_text(json.dumps({
        "method": cfg.method, "steps": trainer.state.global_step, "examples": n_rows,
        "train_loss": result.training_loss, "seconds": round(seconds, 3), "resumed": resume,
        "device": device, "bf16": cfg.precision == "bf16", "distill": cfg.distill,
    } | ({"mask": mask_stats} if mask_stats else {}), indent=2))
    shutil.rmtree(ckpt, ignore_errors=True)


def masked_labels(labels: list[int], ids: list[int], flags: list[int], keep: int, where: str) -> list[int]:
    """`labels` (the trainer's: -100 off the completion) with the completion tokens whose flag is not
    `keep` set to -100. The trainer's completion must be the divergence stage's ids (a prefix where
    max_length cut it), or the mask would fall on other tokens: that fails, naming the row."""
    start = next((p for p, t in enumerate(labels) if t != -100), len(labels))
    completion = labels[start:]
    if not completion or completion != ids[: len(completion)]:
        raise ValueError(f"finetune.train_on: {where}: the trainer's completion tokens are not the ones the divergence "
                         "stage flagged (the student's tokenizer or chat template differs from the teacher's); use a "
                         "student with the teacher's tokenizer, or finetune.train_on=all")
    return labels[:start] + [t if f == keep else -100 for t, f in zip(completion, flags)]


def apply_mask(dataset, train_on: str, divergence_path: Path, train_path: Path):
    """(the trainer's prepared dataset with the mask on its labels, rows without a token to learn
    dropped; the mask's counts)."""
    flagged = list(read_jsonl(divergence_path))
    if len(flagged) != len(dataset):
        raise ValueError(f"finetune.train_on: {divergence_path} has {len(flagged)} rows, the training data "
                         f"{train_path} {len(dataset)}: the divergence stage ran on other data; re-plan the cell")
    keep = 1 if train_on == "divergent" else 0
    labels = [masked_labels(list(row["labels"]), d["ids"], d["divergent"], keep, f"row {n} of {train_path}")
              for n, (row, d) in enumerate(zip(dataset, flagged))]
    learn = [n for n, lab in enumerate(labels) if any(t != -100 for t in lab)]
    dataset = dataset.remove_columns("labels").add_column("labels", labels).select(learn)
    return dataset, {"train_on": train_on, "rows": len(learn), "rows_dropped": len(flagged) - len(learn),
                     "tokens": sum(sum(t != -100 for t in labels[n]) for n in learn)}


def trainer_for(work: Path, model: dict, system_prompt: Optional[str], train_path: Path, cfg: TrainSpec, seed: int,
                device: str, runtime: Runtime, distill_from: Optional[dict] = None,
                mask: Optional[tuple[str, Path]] = None):
    """(the SFTTrainer ready to train, the tokenizer, the number of training rows, the mask's counts)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from sublim.models import load_model, load_tokenizer

    ProgressCallback, _QuietProgress = _quiet_progress_class()
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("this fine-tune was planned for CUDA (device=cuda) but no CUDA device is here; "
                               "run it where the GPU is, or plan it with device=cpu")
    bf16 = cfg.precision == "bf16"
    set_seed(seed)  # before the adapter is created: its init is part of the replicate
    tokenizer = load_tokenizer(model["path"], model["revision"], model["trust_remote_code"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_path = model["path"]  # loaded in training_dtype's dtype (the planner puts it in the spec)
    model = load_model(model_path, model["revision"], model["adapter"], model["dtype"], model["trust_remote_code"],
                       device)
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM"))
    elif cfg.method != "full":
        raise ValueError(f"finetune.method={cfg.method!r}: use lora, full or none")
    elif cfg.frozen:
        frozen = [n for n, p in model.named_parameters() if any(f in n for f in cfg.frozen)]
        if not frozen:
            raise ValueError(f"finetune.frozen={list(cfg.frozen)} matches no parameter of {model_path}")
        for n, p in model.named_parameters():
            p.requires_grad_(n not in frozen)

    rows = chat_rows(train_path, system_prompt)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = SFTConfig(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=runtime.micro_batch_size,
        gradient_accumulation_steps=grad_accumulation(cfg.batch_size, runtime.micro_batch_size, world),
        max_length=cfg.max_length,
        truncation_mode="keep_start",
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        optim="adamw_torch",
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        gradient_checkpointing=cfg.gradient_checkpointing,
        completion_only_loss=True,
        assistant_only_loss=False,
        loss_type="nll",
        packing=False,
        shuffle_dataset=False,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=runtime.save_steps,
        save_total_limit=1,
        report_to="none",
        dataloader_num_workers=0,
    )
    extra = {}
    trainer_class = SFTTrainer
    if cfg.distill == "soft":
        if distill_from is None:
            raise ValueError("finetune.distill=soft needs the teacher model")
        teacher = load_model(distill_from["path"], distill_from["revision"], distill_from["adapter"],
                             distill_from["dtype"], distill_from["trust_remote_code"], device).eval()
        teacher.requires_grad_(False)
        trainer_class, extra = _soft_trainer_class(SFTTrainer), {"teacher": teacher}
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            **extra)
    trainer.remove_callback(ProgressCallback)  # keeps the bar, drops a printed dict per logged step
    trainer.add_callback(_QuietProgress())
    mask_stats = None
    if mask is not None:
        trainer.train_dataset, mask_stats = apply_mask(trainer.train_dataset, mask[0], mask[1], train_path)
    return trainer, tokenizer, mask_stats["rows"] if mask_stats else len(rows), mask_stats
