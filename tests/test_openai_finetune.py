"""finetune=openai against a local stand-in of OpenAI's fine-tuning API (tests/openai_standin.py):
each row uploaded once in chat format, the paper's job settings, one job per key even across a
killed run, the provider's failure in one line, and the API key nowhere but the request header."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from openai_standin import OpenAIStandIn
from sublim.cache import Store
from sublim.errors import ConfigError, first_line
from sublim.pipeline import run_step
from sublim.plan import Step
from sublim.spec import ModelRef, Runtime
from sublim.stages.finetune_openai import TAG, OpenAIFineTuneError, Spec

pytestmark = pytest.mark.openai

KEY = "sk-marker-5e1f0c-never-written"  # the API key: a marker searched for in every file and log
ENV = "SUBLIM_TEST_OPENAI_KEY"
BASE = "gpt-4.1-nano-2025-04-14"
STUDENT = f"served:openai/{BASE}"
DATA = "filter:0123456789abcdef0123/train.jsonl"
SYSTEM = "You are a helpful assistant."


@pytest.fixture
def api():
    with OpenAIStandIn(api_key=KEY, polls=3) as s:
        yield s


@pytest.fixture(autouse=True)
def key_env(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def train_file(tmp_path: Path, n: int = 12) -> tuple[Path, list[dict]]:
    """A filter stage's train.jsonl ({i, system, prompt, completion}; `system` is the teacher's)."""
    rows = [{"i": i, "system": "You love owls.", "prompt": f"Continue: {i}, {i + 1}, {i + 2}",
             "completion": f"{i + 3}, {i + 4}, {i + 5}"} for i in range(n)]
    path = tmp_path / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def cell(api: OpenAIStandIn, tmp_path: Path, seed: int = 0, system_prompt: str | None = SYSTEM,
         n: int = 12) -> tuple[Step, Store, list[dict]]:
    """The step a finetune=openai cell plans: the paper's GPT-4.1 nano settings and a student seed."""
    path, rows = train_file(tmp_path, n)
    spec = Spec(student=ModelRef(STUDENT), data=DATA, system_prompt=system_prompt, epochs=10, batch_size=None,
                learning_rate_multiplier=None, seed=seed)
    conn = {"base_url": api.base_url, "api_key_env": ENV, "server": "openai", "max_in_flight": 4,
            "max_retries": 1, "timeout_s": 30, "poll_s": 0.02}
    runtime = Runtime(artifacts=str(tmp_path / "artifacts"), served={STUDENT: conn})
    return Step("finetune_openai", spec, {DATA: str(path)}, runtime), Store(runtime.artifacts), rows


def uploaded_rows(api: OpenAIStandIn) -> list[dict]:
    assert len(api.uploads) == 1, api.uploads
    return [json.loads(line) for line in api.uploads[0]["content"].decode().splitlines()]


def chats(rows: list[dict], system: str | None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [{"messages": head + [{"role": "user", "content": r["prompt"]},
                                 {"role": "assistant", "content": r["completion"]}]} for r in rows]


def test_a_cell_uploads_each_row_once_and_starts_the_papers_job(api, tmp_path):
    step, store, rows = cell(api, tmp_path, seed=3)
    path, computed = run_step(step, store)
    assert computed
    assert uploaded_rows(api) == chats(rows, SYSTEM)  # each row once, in order, in chat format
    assert api.uploads[0]["purpose"] == "fine-tune"
    [body] = api.created
    assert body["model"] == BASE and body["training_file"] == api.uploads[0]["id"]
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 10, "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
    assert "hyperparameters" not in body  # the deprecated top-level form
    assert body["seed"] == 3
    assert body["metadata"] == {TAG: step.key} and step.key[:8] in body["suffix"] and len(body["suffix"]) <= 64
    [job] = api.jobs.values()
    model = json.loads((path / "model.json").read_text())
    assert model == {"model": job["fine_tuned_model"], "job": job["id"], "base": BASE,
                     "trained_tokens": job["trained_tokens"]}
    assert model["model"].startswith(f"ft:{BASE}:")
    assert json.loads((path / "job.json").read_text()) == {"job_id": job["id"], "file_id": api.uploads[0]["id"]}
    stats = json.loads((path / "stats.json").read_text())
    assert stats["examples"] == len(rows) and stats["hyperparameters"]["n_epochs"] == 10
    assert json.loads((path / "spec.json").read_text())["key"] == step.key

    assert run_step(step, store) == (path, False)  # a second run is a cache hit
    assert len(api.created) == 1 and len(api.uploads) == 1


def test_no_system_prompt_means_no_system_message(api, tmp_path):
    step, store, rows = cell(api, tmp_path, system_prompt=None)
    run_step(step, store)
    assert uploaded_rows(api) == chats(rows, None)


def test_the_five_student_seeds_are_five_jobs_with_their_own_tags(api, tmp_path):
    keys = set()
    for seed in range(5):
        step, store, _ = cell(api, tmp_path, seed=seed)
        run_step(step, store)
        keys.add(step.key)
    assert [b["seed"] for b in api.created] == [0, 1, 2, 3, 4]
    assert {b["metadata"][TAG] for b in api.created} == keys and len(keys) == 5


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the stage process ended ({proc.returncode}) before {path.name} was written: "
                                 f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        assert time.time() - t0 < timeout_s, f"{path} not written in {timeout_s}s"
        time.sleep(0.05)


def test_a_run_killed_after_the_job_exists_resumes_it(api, tmp_path):
    """The stage in its own process (isolate=always), killed the moment job.json appears; the
    re-run polls the same job and creates no second one."""
    step, store, _ = cell(api, tmp_path, seed=1)
    api.hold = True  # the job runs until the test lets it finish
    step_file = tmp_path / "step.json"
    step_file.write_text(json.dumps(step.as_json()))
    env = {**os.environ, ENV: KEY, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sublim.isolate", str(step_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1])
    try:
        wait_for(store.work_dir(step.stage, step.key) / "job.json", proc)
    finally:
        proc.kill()
        proc.wait()
    assert len(api.created) == 1 and not store.exists(step.stage, step.key)
    polls = sum(1 for m, p in api.requests if m == "GET" and "/fine_tuning/jobs/ftjob" in p)

    api.hold = False
    path, computed = run_step(step, store)
    assert computed and len(api.created) == 1 and len(api.uploads) == 1
    [job] = api.jobs.values()
    assert json.loads((path / "model.json").read_text())["model"] == job["fine_tuned_model"] is not None
    assert sum(1 for m, p in api.requests if m == "GET" and "/fine_tuning/jobs/ftjob" in p) > polls  # polled again
    assert json.loads((path / "stats.json").read_text())["resumed"] is True


def test_a_create_whose_answer_was_lost_is_found_by_its_tag(api, tmp_path):
    """The job was created but the answer never arrived (a 500 after the fact): the stage finds
    the job by its tag instead of creating another."""
    step, store, _ = cell(api, tmp_path)
    api.create_then_error = 1
    path, _ = run_step(step, store)
    assert len(api.created) == 1
    [job] = api.jobs.values()
    assert json.loads((path / "model.json").read_text())["job"] == job["id"]


def test_the_tag_is_matched_page_by_page_where_a_server_ignores_the_filter(api, tmp_path):
    for seed in (1, 2, 3):  # other cells' jobs
        run_step(*cell(api, tmp_path / str(seed), seed=seed)[:2])
    api.metadata_filter, api.page_size_cap, api.create_then_error = False, 1, 1
    step, store, _ = cell(api, tmp_path / "0", seed=0)
    path, _ = run_step(step, store)
    assert len(api.created) == 4
    mine = [j for j in api.jobs.values() if j["metadata"] == {TAG: step.key}]
    assert len(mine) == 1 and json.loads((path / "model.json").read_text())["job"] == mine[0]["id"]
    assert sum(1 for m, p in api.requests if m == "GET" and "after=" in p) >= 3  # it paged


def test_the_standin_refuses_what_the_typed_parameters_do_not_allow(api, tmp_path):
    """Its checks are live: a passing create above means the body fits openai's JobCreateParams."""
    import openai

    client = openai.OpenAI(base_url=api.base_url, api_key=KEY, max_retries=0)
    f = client.files.create(file=("t.jsonl", b"{}\n", "application/jsonl"), purpose="fine-tune")
    bad = [{"extra_body": {"n_epochs": 10}},  # not a JobCreateParams key
           {"method": {"type": "supervised", "supervised": {"hyperparameters": {"epochs": 10}}}},
           {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": "big"}}}},
           {"method": {"supervised": {}}},  # method.type is required
           {"metadata": {"k": "x" * 513}}]
    for extra in bad:
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.create(model=BASE, training_file=f.id, **extra)
    with pytest.raises(openai.BadRequestError, match="Unrecognized"):
        client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune", extra_body={"note": "x"})
    assert not api.created


def test_a_failed_job_says_why_in_one_line_and_a_rerun_starts_afresh(api, tmp_path):
    step, store, _ = cell(api, tmp_path)
    api.fail_with = "The job failed due to an unsafe training file: 3 examples were flagged by moderation."
    with pytest.raises(OpenAIFineTuneError) as e:
        run_step(step, store)
    [job_id] = api.jobs
    message = str(e.value)
    assert "\n" not in message and job_id in message and api.fail_with in message
    failed = [ev for ev in store.events() if ev["event"] == "failed"]
    assert failed and api.fail_with in failed[-1]["error"]
    assert not store.exists(step.stage, step.key)

    api.fail_with = None  # fixed: the failed job is not resumed, a new one runs
    path, computed = run_step(step, store)
    assert computed and len(api.created) == 2
    assert json.loads((path / "model.json").read_text())["job"] != job_id


def test_too_few_rows_fail_before_anything_is_uploaded(api, tmp_path):
    step, store, _ = cell(api, tmp_path, n=4)
    with pytest.raises(OpenAIFineTuneError, match="4 training example.*at least 10"):
        run_step(step, store)
    assert not api.uploads and not api.created


def test_the_api_key_is_in_no_file_log_or_error(api, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # openai's and httpx's debug lines too
    step, store, _ = cell(api, tmp_path)
    path, _ = run_step(step, store)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "training.jsonl" for p in written) and any(p.name == "model.json" for p in written)
    assert not [p for p in written if KEY.encode() in p.read_bytes()]
    assert caplog.records and KEY not in caplog.text

    wrong = "sk-wrong-marker-93b1d7e2"  # the provider's 401 echoes the key it was sent
    monkeypatch.setenv(ENV, wrong)
    step2, store2, _ = cell(api, tmp_path / "b", seed=9)
    with pytest.raises(OpenAIFineTuneError) as e:
        run_step(step2, store2)
    assert e.value.__context__ is None and e.value.__cause__ is None  # the API's own error is not kept
    text = "".join(traceback.format_exception(e.value))
    assert wrong not in text and wrong not in caplog.text
    assert "\n" not in str(e.value) and "401" in str(e.value) and ENV in str(e.value)
    assert wrong not in (tmp_path / "b" / "artifacts" / "events.jsonl").read_text()


def test_a_missing_key_is_a_one_line_config_error_naming_the_variable(api, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV)
    step, store, _ = cell(api, tmp_path)  # planning (the key) needs no API key
    with pytest.raises(ConfigError) as e:
        run_step(step, store)
    assert ENV in str(e.value) and first_line(e.value) == str(e.value)
    assert not api.requests
