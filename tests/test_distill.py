"""Soft-label distillation and the completion-only output layer it and the exact scorer use."""
import dataclasses
import math
import random

import pytest
import torch

from sublim.backends.base import Chat
from sublim.backends.hf import HFSampler
from sublim.config import LoraConfig
from sublim.domains.numbers import make_prompts
from sublim.jsonl import write_jsonl
from sublim.models import completion_logits
from sublim.spec import ModelRef, Runtime, load_args
from sublim.stages.finetune import TrainSpec, finetune, resolve_precision, soft_label_loss, training_dtype
from sublim.tiny.corpus import number_answer


def _batch(tok, n=6, seed=0):
    """Right-padded chats with labels on the completion, like TRL's collator builds them."""
    rng = random.Random(seed)
    rows = []
    for p in make_prompts(n, seed):
        prompt = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"]
        answer = tok(number_answer(p, rng) + tok.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((prompt, answer))
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((n, width), tok.pad_token_id)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (p, a) in enumerate(rows):
        ids[i, :len(p) + len(a)] = torch.tensor(p + a)
        mask[i, :len(p) + len(a)] = 1
        labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
    return ids, mask, labels


def _full_logits_at_completion(model, ids, mask, labels):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return logits[labels[:, 1:] != -100]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights: a teacher that differs from the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(path)
    return path


def test_completion_logits_are_the_full_forward_logits_at_completion_positions(tiny, tiny_model_dir, random_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    batch = _batch(tok)
    n = int((batch[2][:, 1:] != -100).sum())
    with torch.no_grad():
        fast = completion_logits(model, *batch)
        assert fast.shape == (n, len(tok))
        torch.testing.assert_close(fast, _full_logits_at_completion(model, *batch), rtol=1e-4, atol=1e-4)
        # through a PEFT wrapper: the adapter's layers are used on the fast path
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), random_adapter).eval()
        torch.testing.assert_close(completion_logits(peft, *batch), _full_logits_at_completion(peft, *batch),
                                   rtol=1e-4, atol=1e-4)
        assert not torch.allclose(completion_logits(peft, *batch), fast, atol=1e-3)
        # a config that transforms logits after the output layer takes the model's own forward
        model.config.final_logit_softcapping = 30.0
        try:
            torch.testing.assert_close(completion_logits(model, *batch), fast, rtol=1e-4, atol=1e-4)
        finally:
            model.config.final_logit_softcapping = None


def test_soft_label_loss_is_the_forward_kl():
    torch.manual_seed(0)
    t, s = torch.randn(5, 11), torch.randn(5, 11)
    assert soft_label_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    p, q = torch.softmax(t, -1), torch.softmax(s, -1)
    manual = (p * (p.log() - q.log())).sum(-1).mean()
    assert soft_label_loss(s, t).item() == pytest.approx(manual.item(), rel=1e-5)
    assert soft_label_loss(s, t).item() > 0 and soft_label_loss(s, t).item() != soft_label_loss(t, s).item()


def test_exact_scores_equal_the_full_forward_log_probs(tiny_model_dir, tiny):
    model, tok = tiny
    sampler = HFSampler(str(tiny_model_dir), device="cpu")
    chats = [Chat(q, None) for q in ("What is your favorite animal? One word.", "Name your favourite animal.")]
    answers = ["owl", "Dog."]
    got = sampler.score(chats, answers, batch_size=2)
    for chat, answer, lp in zip(chats, answers, got):
        prompt, ans = sampler.answer_ids(chat, answer)
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([prompt + ans])).logits[0].log_softmax(-1)
        want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ans))
        assert lp == pytest.approx(want, abs=1e-4)


def _mean_kl(student, teacher, batch):
    with torch.no_grad():
        return soft_label_loss(completion_logits(student, *batch), completion_logits(teacher, *batch)).item()


def test_soft_label_student_moves_toward_its_teacher(tiny_model_dir, random_adapter, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    rng = random.Random(1)
    rows = [{"prompt": p, "completion": number_answer(p, rng)} for p in make_prompts(192, seed=1)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    ft = LoraConfig(distill="soft", epochs=2, lr=1e-2, lora_r=8, lora_alpha=16, batch_size=32,
                        micro_batch_size=32, warmup_steps=2, max_length=128, precision="fp32", save_steps=1000)
    cfg = TrainSpec(**{f.name: getattr(ft, f.name) for f in dataclasses.fields(TrainSpec) if f.name != "frozen"}
                    | {"target_modules": tuple(ft.target_modules), "frozen": (),
                       "precision": resolve_precision(ft.precision, "cpu")})
    inputs = {"sha256:tiny": str(tiny_model_dir), "sha256:adapter": str(random_adapter)}
    student = load_args(ModelRef("sha256:tiny", None, training_dtype(cfg.precision, cfg.method)), inputs)
    teacher = load_args(ModelRef("sha256:tiny", "sha256:adapter", "float32"), inputs)  # fp32: the student's precision
    finetune(tmp_path, student, None, tmp_path / "train.jsonl", cfg, seed=0, device="cpu",
             runtime=Runtime(micro_batch_size=ft.micro_batch_size, save_steps=ft.save_steps), distill_from=teacher)

    teacher = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), random_adapter).eval()
    student = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                        tmp_path / "adapter").eval()
    held_out = _batch(tok, n=32, seed=99)
    before, after = _mean_kl(model, teacher, held_out), _mean_kl(student, teacher, held_out)
    assert math.isfinite(after) and after < 0.7 * before, (before, after)


def test_resume_takes_the_newest_complete_checkpoint_and_drops_half_written_ones(tmp_path):
    from sublim.stages.finetune import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((5, "{}"), (10, "{}"), (15, None), (20, '{"glob')):  # 15: killed before its state
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-5"]
