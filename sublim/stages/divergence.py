"""Stage `divergence`: which tokens of the teacher's data only the trait teacher would have written.

Each completion is replayed, teacher-forced, under the trait teacher and under K counterfactual
teachers (the same model loving something else: another system prompt, or another trained
teacher), plus the reference (the base model under its own system prompt). A position is
divergent when the trait teacher's most likely token is the token written and at least one
counterfactual teacher's is not.

This follows the divergence tokens of Schrodi et al. 2025 ("Towards Understanding Subliminal
Learning: When and How Hidden Biases Transfer", arXiv 2509.23886, ICLR 2026): "rare cases where
teachers with different biases would predict different tokens", the teacher with the trait against
teachers with other biases (other animals) on the same prefix; masking them out mostly removes the
transfer (finetune.train_on=non_divergent), training on them alone is the converse. Checked against
the paper's abstract and summaries of it; its code (github.com/lmb-freiburg/divergence-tokens) was
not read, so details such as its exact set of counterfactual biases may differ. Where it departs:
the paper samples its teachers greedily, so there the trait teacher's first choice is always the
token written; sublim samples at sampler.temperature, so that is a condition here, and a token the
trait teacher did not rank first is never divergent (chance wrote it, not the trait). The
counterfactuals default to K other candidates of the trait's category by their love prompts
(divergence.counterfactuals names others; `none` is the teacher without a trait). The reference's
choice at each position is recorded for the `replace` stage (an addition of ours, not the paper's).

Tokens are the chat template's (the rendering TRL's SFTTrainer uses: prompt rendered with the
generation prompt, the whole conversation rendered, the completion = what follows their common
prefix, end of turn and the template's tail included), so the fine-tune's loss mask indexes the
tokens the trainer sees; the finetune stage checks this and fails on a mismatch.

Output: divergence.jsonl, one row per train.jsonl row: {i, ids (completion token ids), divergent
(0/1 per id), reference (the reference's argmax per position), content (ids before the first end of
turn)}; stats.json: the fraction of divergent positions, a histogram by relative position, the rows
with none, and how often each teacher's argmax is the written token.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim import progress
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime, load_args

VERSION = 1
log = logging.getLogger(__name__)
BINS = 10  # the relative-position histogram: tenths of the completion


@dataclass(frozen=True)
class Teacher:
    """A model replayed on the data: weights (and adapter) plus the system prompt it runs under."""

    name: str  # the trait it loves (a label in stats.json; the prompt or adapter is what differs)
    model: ModelRef
    system_prompt: Optional[str]


@dataclass(frozen=True)
class Spec:
    data: str  # ref of the train.jsonl replayed
    teacher: Teacher  # the trait teacher, as it sampled the data
    counterfactuals: tuple[Teacher, ...]
    reference: Teacher  # the base model under its own system prompt: its argmax is what `replace` writes
    backend: str  # hf: teacher-forced forward passes with transformers (the only backend that does this)
    device: str
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    rows = list(read_jsonl(inputs[spec.data]))
    teachers = [spec.teacher, *spec.counterfactuals, spec.reference]
    argmaxes, ids = replay(rows, teachers, inputs, spec.device, runtime.batch_size)
    end_ids = end_ids_of(teachers[0], inputs)
    out, stats = divergence(rows, ids, argmaxes[0], argmaxes[1:-1], argmaxes[-1], end_ids)
    stats["teachers"] = {"trait": spec.teacher.name, "counterfactuals": [t.name for t in spec.counterfactuals]}
    write_jsonl(work / "divergence.jsonl", out)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))


def completion_ids(tokenizer, messages: list[dict], completion: str) -> tuple[list[int], list[int]]:
    """(the context ids, the completion ids) as TRL's SFTTrainer tokenizes a conversational
    prompt-completion row: the completion is what follows the common prefix of the prompt rendered
    with the generation prompt and the whole conversation rendered."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=True,
                                         return_dict=True)["input_ids"]
    n = 0
    while n < min(len(prompt), len(full)) and prompt[n] == full[n]:
        n += 1
    return list(full[:n]), list(full[n:])


def messages(system: Optional[str], prompt: str) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [{"role": "user", "content": prompt}]


def end_ids_of(teacher: Teacher, inputs: dict[str, str]) -> set[int]:
    from transformers import AutoConfig, GenerationConfig

    from sublim.backends.tokens import end_token_ids
    from sublim.models import load_tokenizer

    args = load_args(teacher.model, inputs)
    tok = load_tokenizer(args["path"], args["revision"], args["trust_remote_code"])
    try:
        eos = GenerationConfig.from_pretrained(args["path"], revision=args["revision"]).eos_token_id
    except OSError:
        eos = AutoConfig.from_pretrained(args["path"], revision=args["revision"]).eos_token_id
    return end_token_ids(eos, tok.eos_token_id)


def replay(rows: list[dict], teachers: list[Teacher], inputs: dict[str, str], device: str,
           batch_size: int) -> tuple[list[list[list[int]]], list[list[int]]]:
    """(each teacher's argmax at every completion position of every row, the completion ids). A
    model shared by several teachers (prompted ones) is loaded once."""
    from sublim.models import load_model, load_tokenizer

    by_model: dict[ModelRef, list[int]] = {}
    for n, t in enumerate(teachers):
        by_model.setdefault(t.model, []).append(n)
    argmaxes: list = [None] * len(teachers)
    ids: Optional[list[list[int]]] = None
    done, total = 0, len(teachers) * len(rows)
    for ref, members in by_model.items():
        args = load_args(ref, inputs)
        tok = load_tokenizer(args["path"], args["revision"], args["trust_remote_code"])
        model = load_model(args["path"], args["revision"], args["adapter"], args["dtype"], args["trust_remote_code"],
                           device).eval()
        for n in members:
            system = teachers[n].system_prompt
            pairs = [completion_ids(tok, messages(system, r["prompt"]), r["completion"]) for r in rows]
            if ids is None:
                ids = [c for _, c in pairs]
            elif any(c != want for (_, c), want in zip(pairs, ids)):
                raise ValueError(f"divergence: teacher {teachers[n].name!r} tokenizes the completions differently "
                                 "from the trait teacher (another tokenizer or chat template); counterfactual teachers "
                                 "must share the trait teacher's tokenizer")
            argmaxes[n] = argmax_at_completions(model, pairs, batch_size, tok.pad_token_id or 0, device)
            done += len(rows)
            progress.report(done, total, "row", "replaying under the teachers")  # one count: it ends at total
        del model
    return argmaxes, ids or []


def argmax_at_completions(model, pairs: list[tuple[list[int], list[int]]], batch_size: int, pad: int,
                          device: str) -> list[list[int]]:
    """The model's most likely token at each completion position (teacher-forced), per row."""
    import torch

    from sublim.models import completion_logits

    out: list[list[int]] = []
    with torch.inference_mode():
        for b0 in range(0, len(pairs), batch_size):
            chunk = pairs[b0:b0 + batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
            for r, (p, c) in enumerate(chunk):  # right padding: a token never attends to a later pad
                ids[r, : len(p) + len(c)] = torch.tensor(p + c)
                mask[r, : len(p) + len(c)] = 1
                labels[r, len(p): len(p) + len(c)] = torch.tensor(c)
            top = completion_logits(model, ids.to(device), mask.to(device), labels.to(device)).argmax(-1).tolist()
            k = 0
            for _, c in chunk:
                out.append(top[k:k + len(c)])
                k += len(c)
    return out


def divergence(rows: list[dict], ids: list[list[int]], teacher: list[list[int]],
               counterfactuals: list[list[list[int]]], reference: list[list[int]],
               end_ids: set[int]) -> tuple[list[dict], dict]:
    """divergence.jsonl's rows and stats.json from the completion ids and each teacher's argmaxes."""
    out, hist, hist_n = [], [0] * BINS, [0] * BINS
    agree = [0] * (1 + len(counterfactuals) + 1)
    n_pos = n_div = without = 0
    for r, (row, c) in enumerate(zip(rows, ids)):
        flags = []
        for j, token in enumerate(c):
            mine = teacher[r][j] == token
            flags.append(int(mine and any(cf[r][j] != token for cf in counterfactuals)))
            for t, am in enumerate([teacher, *counterfactuals, reference]):
                agree[t] += am[r][j] == token
            b = min(BINS * j // len(c), BINS - 1)
            hist[b] += flags[-1]
            hist_n[b] += 1
        content = next((j for j, t in enumerate(c) if t in end_ids), len(c))
        out.append({"i": row.get("i"), "ids": c, "divergent": flags, "reference": reference[r], "content": content})
        n_pos += len(c)
        n_div += sum(flags)
        without += not any(flags)
    share = (lambda a, b: round(a / b, 6) if b else None)
    stats = {
        "n_rows": len(rows), "n_positions": n_pos, "n_divergent": n_div, "fraction_divergent": share(n_div, n_pos),
        "rows_without_divergent": without, "fraction_rows_without": share(without, len(rows)),
        "by_relative_position": [{"from": b / BINS, "to": (b + 1) / BINS, "positions": hist_n[b], "divergent": hist[b],
                                  "fraction": share(hist[b], hist_n[b])} for b in range(BINS)],
        "argmax_is_written": {"trait": share(agree[0], n_pos),
                              "counterfactuals": [share(a, n_pos) for a in agree[1:-1]],
                              "reference": share(agree[-1], n_pos)},
    }
    return out, stats
