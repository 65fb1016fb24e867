"""Planning cells with served models (sampler=openai, gpt-4.1-nano, finetune=openai): what pins a
served model is keyed and where it is served is not; settings a server cannot honour and exact
scoring on the OpenAI API fail before any request; dry runs need no key and count API use."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config_util import plan_cell, typed
from sublim.api_usage import estimate
from sublim.errors import ConfigError

pytestmark = pytest.mark.openai
NANO = ("experiment=paper_nano", "paths.artifacts=/nonexistent/store")


def keys(*overrides: str) -> dict[str, str]:
    return plan_cell(typed(*overrides)).keys()


def test_the_nano_cell_plans_without_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    plan = plan_cell(typed(*NANO))
    assert [s.stage for s in plan.steps] == ["sample", "filter", "finetune_openai", "eval"]
    sample = plan.steps[0]
    assert sample.spec.teacher.weights == "served:openai/gpt-4.1-nano-2025-04-14"
    assert (sample.spec.backend, sample.spec.device, sample.spec.libraries) == ("openai", "server", {})
    ft = plan.steps[2].spec
    assert (ft.epochs, ft.batch_size, ft.learning_rate_multiplier) == (10, None, None)
    assert plan.steps[3].spec.subject.weights == f"finetune_openai:{plan.steps[2].key}/model.json"
    # the connection travels beside the spec (Runtime), named by the variable, never the key itself
    conn = sample.runtime.served[sample.spec.teacher.weights]
    assert conn["api_key_env"] == "OPENAI_API_KEY" and conn["base_url"] == "https://api.openai.com/v1"


def test_where_a_model_is_served_is_not_keyed_what_pins_it_is():
    base = keys(*NANO)
    assert keys(*NANO, "teacher.served.base_url=https://proxy.example/v1", "student.served.api_key_env=OTHER",
                "sampler.openai.max_in_flight=2") == base
    teacher = keys(*NANO, "teacher.path=gpt-4.1-nano-2025-05-01")  # another snapshot: other weights
    assert all(teacher[s] != base[s] for s in base)
    student = keys(*NANO, "student.path=gpt-4.1-nano-2025-05-01")
    assert student["sample"] == base["sample"] and student["finetune_openai"] != base["finetune_openai"]
    assert keys(*NANO, "seed=1")["finetune_openai"] != base["finetune_openai"]
    assert keys(*NANO, "finetune.epochs=3")["finetune_openai"] != base["finetune_openai"]


@pytest.mark.parametrize("overrides, key", [
    (("teacher.path=gpt-4.1-nano",), "teacher.path=gpt-4.1-nano: a floating alias"),
    (("sampler.top_k=20",), "sampler.top_k"),
    (("sampler.repetition_penalty=1.05",), "sampler.repetition_penalty"),
    (("sampler.min_p=0.05",), "sampler.min_p"),
    (("eval.method=logprob",), "eval.method=logprob: the OpenAI API returns no log-probs of prompt tokens"),
    (("select.by=shift",), "select.by=shift"),
    (("finetune=lora",), "finetune=lora: the student (gpt-4.1-nano) is a served model"),
    (("trait.method=finetune",), "trait.method=finetune"),
])
def test_what_the_openai_api_cannot_do_fails_at_plan_time(overrides, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        plan_cell(typed(*NANO, *overrides))


def test_finetune_openai_needs_an_openai_student(tmp_path):
    with pytest.raises(ConfigError, match="finetune=openai fine-tunes through OpenAI's API"):
        plan_cell(typed("experiment=paper_nano", "pairing=nano_qwen", "finetune=openai", "student.revision=abc"))


def test_a_self_hosted_server_needs_a_revision_or_a_local_folder(tiny_model_dir):
    over = ("experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "finetune=none", "eval.method=sample",
            "sampler=openai", "model@teacher=qwen2.5-7b-instruct", "model@student=qwen2.5-7b-instruct")
    with pytest.raises(ConfigError, match=r"(teacher|student).revision is null: a self-hosted server"):
        plan_cell(typed(*over))
    pinned = plan_cell(typed(*over, "teacher.revision=abc123", "student.revision=abc123"))
    assert pinned.steps[-1].spec.subject.weights == "served:vllm/Qwen/Qwen2.5-7B-Instruct@abc123"
    # a served name that is a local model folder (transformers serve, vLLM) is pinned by its content
    local = plan_cell(typed(*over[:5], "model@teacher=tiny", "model@student=tiny"))
    assert local.steps[-1].spec.subject.weights.startswith(f"served:vllm/{tiny_model_dir}@sha256:")
    # vLLM takes top_k, repetition_penalty and min_p: keyed through the sampling settings
    assert plan_cell(typed(*over[:5], "model@teacher=tiny", "model@student=tiny", "sampler.top_k=20"))


def test_api_use_is_counted_per_missing_stage():
    plan = plan_cell(typed(*NANO, "domain.n_prompts=100", "filter.n_keep=50", "eval.n_questions=4"))
    found = {stage: u for stage, u in estimate(plan.steps, {s.key for s in plan.steps}).values()}
    sample, train, ev = found["sample"], found["finetune_openai"], found["eval"]
    assert sample.requests == 100 and sample.completion_tokens == 100 * 64
    assert ev.requests == 4 and ev.completion_tokens == 4 * 100 * 16
    # training: at most n_keep rows of (prompt + max_tokens + chat overhead) tokens, x 10 epochs
    assert train.training_tokens % 10 == 0 and 50 * 64 * 10 < train.training_tokens < 50 * 200 * 10
    assert train.cost == pytest.approx(train.training_tokens * 1.5 / 1e6)
    assert sample.cost == pytest.approx((sample.prompt_tokens * 0.10 + sample.completion_tokens * 0.40) / 1e6)
    # cached stages cost nothing again
    assert estimate(plan.steps, set()) == {}


def test_sweep_plan_paper_nano_counts_requests_with_no_key_and_no_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "sublim.cli", "--multirun", "sweep=paper_nano", "dry_run=true",
                        "logger=none", f"paths.artifacts={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 's'}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("plan for cell") == 30
    assert "api: sample 30,000 requests" in r.stdout and "api: finetune_openai <= " in r.stdout
    total = [ln for ln in r.stdout.splitlines() if ln.startswith("API use of the missing stages")]
    # 6 teachers sample once each (shared by their 5 students); 30 students each evaluated on 50 questions
    assert total and "181,500 requests" in total[0]
