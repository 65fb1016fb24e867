"""Divergence tokens: detection on a constructed case with known answers, the fine-tune's loss masks
through the trainer's own loss, replacement by the reference's token with the filter run again,
and the plan (train_on=all keeps every key)."""
from __future__ import annotations

import dataclasses
import json
import random
import shutil

import pytest
import torch

from config_util import plan_cell, plan_steps, typed
from sublim.config import LoraConfig, NumbersDomainConfig
from sublim.domains import get_domain
from sublim.domains.numbers import make_prompts
from sublim.errors import ConfigError
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime, load_args, to_dict
from sublim.stages import divergence as div
from sublim.stages import finetune as ft
from sublim.stages import replace as rep
from sublim.stages import spec_from_dict
from sublim.tiny.corpus import number_answer

PROMPT, COMPLETION = "Continue: 101, 202.", "123, 456, 789"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def bigram_model(src, out, table: dict[int, int]):
    """The tiny model made a lookup table: attention and MLP outputs zeroed, so each position's
    hidden state is its own token's embedding (random unit rows, shared by every model built here),
    and the output layer puts table[token] first (sqrt(64) = 8 against about N(0, 1) elsewhere)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    vocab, width = model.lm_head.weight.shape
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = torch.randn(vocab, width, generator=torch.Generator().manual_seed(0))
        emb = emb / emb.norm(dim=1, keepdim=True)
        model.model.embed_tokens.weight.copy_(emb)
        model.model.norm.weight.fill_(1.0)
        head = torch.zeros(vocab, width)
        for u, v in table.items():
            head[v] += emb[u]
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            shutil.copy(f, out / f.name)
    return out


def test_divergent_positions_of_a_constructed_teacher(tiny_model_dir, tok, tmp_path):
    context, comp = div.completion_ids(tok, div.messages("You love owls.", PROMPT), COMPLETION)
    prev = [context[-1], *comp[:-1]]  # the token each completion position is predicted from
    teacher: dict[int, int] = {}
    for p, t in zip(prev, comp):
        teacher.setdefault(p, t)  # the teacher ranks first the token written after each token's first occurrence
    # a repeated token: a position the teacher does not rank first
    assert any(teacher[p] != t for p, t in zip(prev, comp))
    seven = tok.convert_tokens_to_ids("Ġ7")
    changed = {prev[0], prev[1]}  # the counterfactual differs after these tokens: positions 0 and 1 (and any repeat)
    other = {p: (seven if p in changed else t) for p, t in teacher.items()}
    reference = {p: (seven if p in changed else t) for p, t in teacher.items()}
    dirs = {name: bigram_model(tiny_model_dir, tmp_path / name, table) for name, table in
            (("teacher", teacher), ("same", dict(teacher)), ("other", other), ("reference", reference))}
    inputs = {f"sha256:{n}": str(d) for n, d in dirs.items()} | {"filter:k/train.jsonl": str(tmp_path / "train.jsonl")}
    write_jsonl(tmp_path / "train.jsonl", [{"i": 7, "prompt": PROMPT, "completion": COMPLETION}])

    def teacher_of(name, system="You love owls."):
        return div.Teacher(name, ModelRef(f"sha256:{name}"), system)

    def flags(*counterfactuals):
        spec = div.Spec("filter:k/train.jsonl", teacher_of("teacher"), counterfactuals,
                        teacher_of("reference", None), "hf", "cpu", {})
        work = tmp_path / f"work-{len(counterfactuals)}-{counterfactuals[-1].name}"
        work.mkdir()
        div.run(spec, work, inputs, Runtime(batch_size=4))
        (row,) = read_jsonl(work / "divergence.jsonl")
        return row, json.loads((work / "stats.json").read_text())

    # known answers: divergent where the teacher ranks the written token first and the other does not
    want = [int(teacher[p] == t and other[p] != t) for p, t in zip(prev, comp)]
    assert want[:2] == [1, 1] and 0 < sum(want) < len(comp)
    row, stats = flags(teacher_of("same", "You love dogs."), teacher_of("other", "You love cats."))
    assert row["i"] == 7 and row["ids"] == comp and row["divergent"] == want
    assert row["reference"][:2] == [seven, seven]  # the reference's choice, for `replace`
    assert row["content"] == comp.index(tok.eos_token_id)
    assert stats["n_divergent"] == sum(want) and stats["n_positions"] == len(comp)
    assert stats["fraction_divergent"] == pytest.approx(sum(want) / len(comp), abs=1e-6)
    assert sum(b["divergent"] for b in stats["by_relative_position"]) == sum(want)
    assert stats["by_relative_position"][0]["divergent"] == 1  # position 0 is in the first tenth
    assert stats["rows_without_divergent"] == 0
    # a counterfactual that agrees everywhere makes nothing divergent
    row, stats = flags(teacher_of("same", "You love dogs."))
    assert row["divergent"] == [0] * len(comp) and stats["rows_without_divergent"] == 1


# -- the loss masks, through the trainer's loss ------------------------------------------------------
def _train_spec(**kw):
    cfg = LoraConfig(epochs=1, lr=1e-3, lora_r=4, lora_alpha=8, batch_size=8, micro_batch_size=8, warmup_steps=0,
                     max_length=128, precision="fp32", save_steps=1000, **kw)
    return ft.TrainSpec(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ft.TrainSpec)
                           if f.name not in ("frozen", "target_modules")}, target_modules=tuple(cfg.target_modules),
                        frozen=())


@pytest.fixture(scope="module")
def masked_data(tok, tmp_path_factory):
    """8 number rows, and a divergence.jsonl flagging a seeded half of each row's completion tokens."""
    root = tmp_path_factory.mktemp("mask")
    rng = random.Random(3)
    rows = [{"i": n, "prompt": p, "completion": number_answer(p, rng)} for n, p in enumerate(make_prompts(8, seed=3))]
    write_jsonl(root / "train.jsonl", rows)
    flagged = []
    for r in rows:
        context, comp = div.completion_ids(tok, div.messages(None, r["prompt"]), r["completion"])
        flags = [rng.randint(0, 1) for _ in comp]
        flags[0], flags[-1] = 1, 0  # every row has both kinds
        flagged.append({"i": r["i"], "ids": comp, "divergent": flags, "context": context})
    write_jsonl(root / "divergence.jsonl", flagged)
    return root, flagged


def _manual_loss(model, flagged, keep):
    """Mean next-token NLL over exactly the completion tokens whose flag is in `keep`, one row at a time."""
    total, n = 0.0, 0
    with torch.no_grad():
        for d in flagged:
            ids = d["context"] + d["ids"]
            logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
            for j, (t, f) in enumerate(zip(d["ids"], d["divergent"])):
                if f in keep:
                    total -= float(logp[len(d["context"]) - 1 + j, t])
                    n += 1
    return total / n, n


def _trainer_loss(tiny_model_dir, root, tmp_path, train_on):
    student = load_args(ModelRef("sha256:tiny"), {"sha256:tiny": str(tiny_model_dir)})
    mask = (train_on, root / "divergence.jsonl") if train_on else None
    trainer, _, n_rows, stats = ft.trainer_for(tmp_path / str(train_on), student, None, root / "train.jsonl",
                                               _train_spec(), 0, "cpu", Runtime(micro_batch_size=8, save_steps=1000),
                                               mask=mask)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, batch))
    return loss, int((batch["labels"] != -100).sum()), stats


def test_the_mask_keeps_exactly_the_flagged_positions_in_the_trainers_loss(tiny_model_dir, masked_data, tmp_path):
    from transformers import AutoModelForCausalLM

    root, flagged = masked_data
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # a fresh LoRA adapter adds zero
    results = {}
    for train_on, keep in ((None, {0, 1}), ("divergent", {1}), ("non_divergent", {0})):
        loss, n, stats = _trainer_loss(tiny_model_dir, root, tmp_path, train_on)
        want, want_n = _manual_loss(base, flagged, keep)
        assert n == want_n, train_on
        assert loss == pytest.approx(want, abs=1e-4), train_on
        results[train_on] = (loss, n)
        if train_on:
            assert stats == {"train_on": train_on, "rows": 8, "rows_dropped": 0, "tokens": want_n}
    # the two masks split the whole loss: each position counted once, in one of them
    (la, na), (ld, nd), (ln, nn) = results[None], results["divergent"], results["non_divergent"]
    assert nd + nn == na and ld * nd + ln * nn == pytest.approx(la * na, rel=1e-5)
    assert abs(ld - ln) > 1e-3


def test_the_mask_fails_on_other_tokens_and_drops_rows_with_nothing_to_learn(tiny_model_dir, masked_data, tmp_path):
    root, flagged = masked_data
    shifted = [d | {"ids": [t + 1 for t in d["ids"]]} for d in flagged]
    write_jsonl(tmp_path / "divergence.jsonl", shifted)
    student = load_args(ModelRef("sha256:tiny"), {"sha256:tiny": str(tiny_model_dir)})
    with pytest.raises(ValueError, match=r"finetune.train_on: row 0 .*tokenizer or chat template"):
        ft.trainer_for(tmp_path / "w", student, None, root / "train.jsonl", _train_spec(), 0, "cpu",
                       Runtime(micro_batch_size=8, save_steps=1000), mask=("divergent", tmp_path / "divergence.jsonl"))
    none_in_first = [flagged[0] | {"divergent": [0] * len(flagged[0]["ids"])}, *flagged[1:]]
    write_jsonl(tmp_path / "divergence.jsonl", none_in_first)
    trainer, _, n_rows, stats = ft.trainer_for(tmp_path / "w2", student, None, root / "train.jsonl", _train_spec(), 0,
                                               "cpu", Runtime(micro_batch_size=8, save_steps=1000),
                                               mask=("divergent", tmp_path / "divergence.jsonl"))
    assert n_rows == 7 and stats["rows_dropped"] == 1 and len(trainer.train_dataset) == 7


# -- replace, then the filter's rules again -----------------------------------------------------------
def test_replace_swaps_divergent_tokens_for_the_references_and_filters_again(tiny_model_dir, tok, tmp_path):
    context, comp = div.completion_ids(tok, div.messages(None, PROMPT), COMPLETION)
    j = comp.index(tok.convert_tokens_to_ids("Ġ456"))
    end = comp.index(tok.eos_token_id)
    ids = tok.convert_tokens_to_ids

    def flagged(i, at, to):
        flags, ref = [0] * len(comp), list(comp)
        for p, t in zip(at, to):
            flags[p], ref[p] = 1, t
        return {"i": i, "ids": comp, "divergent": flags, "reference": ref, "content": end}

    rows = [{"i": i, "system": None, "prompt": PROMPT, "completion": COMPLETION} for i in range(4)]
    divergence = [flagged(0, [j], [ids("Ġ7")]),  # a number for a number: still the format
                  flagged(1, [j], [ids("Ġcat")]),  # a word: the numbers rule rejects it
                  flagged(2, [end], [ids("Ġ7")]),  # a divergent end of turn is not replaced
                  flagged(3, [], [])]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "divergence.jsonl", divergence)
    domain = get_domain("numbers").spec(NumbersDomainConfig())
    spec = rep.Spec("filter:k/train.jsonl", "divergence:k/divergence.jsonl", ModelRef("sha256:tiny"), domain,
                    {"banned_numbers": [], "format": "paper"}, "owl", 0)
    inputs = {"filter:k/train.jsonl": str(tmp_path / "train.jsonl"), "sha256:tiny": str(tiny_model_dir),
              "divergence:k/divergence.jsonl": str(tmp_path / "divergence.jsonl")}
    work = tmp_path / "work"
    work.mkdir()
    rep.run(spec, work, inputs, Runtime())
    kept = list(read_jsonl(work / "train.jsonl"))
    assert [(r["i"], r["completion"], r["original"]) for r in kept] == [
        (0, "123, 7, 789", COMPLETION), (2, COMPLETION, COMPLETION), (3, COMPLETION, COMPLETION)]
    (rejected,) = read_jsonl(work / "rejects.jsonl")
    assert rejected["i"] == 1 and rejected["completion"] == "123, cat, 789" and rejected["reason"]
    stats = json.loads((work / "stats.json").read_text())
    assert stats | {"rejected": None} == {"n_in": 4, "n_divergent": 2, "n_rows_changed": 2, "n_tokens_replaced": 2,
                                          "n_kept": 3, "n_dropped": 1, "rejected": None}
    assert stats["rejected"] == {rejected["reason"]: 1}


# -- the plan ---------------------------------------------------------------------------------------
def test_train_on_all_keeps_every_key_and_divergent_adds_the_stage(tmp_path, fake_model):
    default = plan_steps(tmp_path, fake_model)
    assert {s: st.key for s, st in plan_steps(tmp_path, fake_model, "finetune.train_on=all").items()} == \
        {s: st.key for s, st in default.items()}
    assert type(default["finetune"].spec) is ft.Spec and "mask" not in to_dict(default["finetune"].spec)
    masked = plan_steps(tmp_path, fake_model, "finetune.train_on=divergent")
    for stage in ("sample", "filter"):
        assert masked[stage].key == default[stage].key
    assert masked["finetune"].key != default["finetune"].key
    spec = masked["divergence"].spec
    assert spec.data == f"filter:{default['filter'].key}/train.jsonl"
    assert [c.name for c in spec.counterfactuals] == ["dolphin", "eagle", "elephant"]  # the first other candidates
    assert spec.counterfactuals[0].system_prompt.startswith("You love dolphins.") and spec.teacher.name == "owl"
    assert spec.reference.model == spec.teacher.model and spec.reference.system_prompt != spec.teacher.system_prompt
    mask = masked["finetune"].spec.mask
    assert mask == ft.Mask(f"divergence:{masked['divergence'].key}/divergence.jsonl", "divergent")
    assert spec_from_dict("finetune", to_dict(masked["finetune"].spec)) == masked["finetune"].spec
    assert spec_from_dict("finetune", to_dict(default["finetune"].spec)) == default["finetune"].spec
    other = plan_steps(tmp_path, fake_model, "finetune.train_on=non_divergent", "divergence.counterfactuals=[none,dog]")
    assert other["divergence"].key != masked["divergence"].key
    assert [c.name for c in other["divergence"].spec.counterfactuals] == ["none", "dog"]


def test_replace_runs_before_the_shuffle_on_the_filters_rows(tmp_path, fake_model):
    steps = plan_steps(tmp_path, fake_model, "transform.divergent=replace", "transform.shuffle=within")
    order = list(steps)
    assert order.index("filter") < order.index("divergence") < order.index("replace") < order.index("transform")
    assert steps["divergence"].spec.data == f"filter:{steps['filter'].key}/train.jsonl"
    assert steps["transform"].spec.train == f"replace:{steps['replace'].key}/train.jsonl"
    assert steps["replace"].spec.rules == steps["filter"].spec.rules
    assert steps["finetune"].spec.data == f"transform:{steps['transform'].key}/train.jsonl"
    for stage in ("divergence", "replace"):  # what an isolated stage process reads back
        assert spec_from_dict(stage, to_dict(steps[stage].spec)) == steps[stage].spec


@pytest.mark.parametrize("overrides, key", [
    (["finetune.train_on=some"], "finetune.train_on"),
    (["transform.divergent=drop"], "transform.divergent"),
    (["finetune=none", "finetune.train_on=divergent"], "finetune.train_on"),
    (["trait.train.train_on=divergent"], "trait.train.train_on"),
    (["finetune.train_on=divergent", "divergence.counterfactuals=[owl]"], "divergence.counterfactuals"),
    (["finetune.train_on=divergent", "divergence.k=30"], "divergence.k"),
])
def test_divergence_settings_fail_naming_the_key(tmp_path, fake_model, overrides, key):
    cfg = typed("experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={tmp_path / 'a'}", *overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_cell(cfg)
