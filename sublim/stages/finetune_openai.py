"""Stage `finetune_openai`: the student is fine-tuned through OpenAI's fine-tuning API (the paper's
GPT-4.1 nano cells), supervised, on the filtered teacher data.

A job is paid for and runs on the provider's machines for hours, so one key never starts two jobs:
every job carries the stage key in its metadata (`sublim_key`, also in a short model-name suffix),
and before anything is uploaded or created the stage looks for a job with that tag (the one job.json
names, then the provider's list) and resumes it unless it failed or was cancelled. job.json
{job_id, file_id} is written the moment the job exists, so a killed run goes back to polling. The
create call goes out without the client's automatic retries: the API takes no idempotency key, so
a retried create whose first try did reach the server would start a second job; a create that
errors looks for its tag again before it tries once more. Once the job has succeeded, nothing that
can fail (events, progress) runs before model.json is written.

Output: model.json {model, job, base, trained_tokens} (what the openai sampler reads), stats.json
(the hyperparameters the provider resolved from "auto", counts, time), training.jsonl (the file
uploaded: each train.jsonl row once, in chat format), job.json. The API key is read from the
environment variable the connection names, inside run() only: it is in no file, and the provider's
errors (which can echo a key) are scrubbed of it before they are raised.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sublim import progress
from sublim.cache import stage_key
from sublim.errors import ConfigError, StageError
from sublim.jsonl import read_jsonl
from sublim.spec import ModelRef, Runtime, served_name, served_server, to_dict

log = logging.getLogger(__name__)
NAME = "finetune_openai"
VERSION = 1
TAG = "sublim_key"  # the job's metadata key that holds the stage key
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer examples: fail before uploading
DEAD = ("failed", "cancelled")
DONE = ("succeeded", *DEAD)
MAX_POLL_FAILURES = 10  # polls in a row that found the API unreachable before the stage gives up


class OpenAIFineTuneError(StageError):
    """The provider failed, cancelled or refused the fine-tuning job; the message is its reason."""


@dataclass(frozen=True)
class Spec:
    student: ModelRef  # served:openai/<base model>
    data: str  # ref of the train.jsonl it learns
    system_prompt: Optional[str]  # the training chats' system message (None: none)
    epochs: int
    batch_size: Optional[int]  # None: the provider's "auto"
    learning_rate_multiplier: Optional[float]  # None: the provider's "auto"
    seed: int


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    conn = connection(spec.student, runtime)
    key = stage_key(NAME, VERSION, to_dict(spec))
    api_key = _api_key(conn, spec.student)
    import openai

    client = openai.OpenAI(base_url=conn["base_url"], api_key=api_key, max_retries=int(conn.get("max_retries", 2)),
                           timeout=float(conn.get("timeout_s", 600)))
    try:
        return finetune(client, spec, work, Path(inputs[spec.data]), key, conn)
    except openai.APIError as e:
        failure = _describe(e, api_key, conn)
    raise OpenAIFineTuneError(failure)  # outside the except: the API's error (it may echo the key) is not its context


def connection(student: ModelRef, runtime: Runtime) -> dict:
    if not student.weights.startswith("served:") or served_server(student.weights) != "openai":
        raise ConfigError(f"finetune=openai fine-tunes a model served by OpenAI (served:openai/<name>), "
                          f"not {student.weights}")
    if student.adapter:
        raise ConfigError(f"finetune=openai cannot train {student.weights} with an adapter ({student.adapter})")
    conn = runtime.served.get(student.weights) or {}
    for field in ("base_url", "api_key_env"):
        if not conn.get(field):
            raise ConfigError(f"student.served.{field} is not set: finetune=openai needs it to reach the API that "
                              f"fine-tunes {served_name(student.weights)}")
    return conn


def _api_key(conn: dict, student: ModelRef) -> str:
    key = os.environ.get(conn["api_key_env"], "")
    if not key:
        raise ConfigError(f"the environment variable {conn['api_key_env']} (student.served.api_key_env) is not set: "
                          f"export the API key that fine-tunes {served_name(student.weights)} at {conn['base_url']}")
    return key


def suffix(key: str) -> str:
    """A short model-name suffix that names the stage key (OpenAI allows 64 characters; older docs 18)."""
    return f"sublim-{key[:8]}"


def hyperparameters(spec: Spec) -> dict:
    return {"n_epochs": spec.epochs,
            "batch_size": "auto" if spec.batch_size is None else spec.batch_size,
            "learning_rate_multiplier": "auto" if spec.learning_rate_multiplier is None
            else spec.learning_rate_multiplier}


def chat_rows(path: Path, system_prompt: Optional[str]) -> list[dict]:
    """Each train.jsonl row once, as {"messages": [system?, user, assistant]} (OpenAI's chat format).

    Reads sublim's {prompt, completion} rows and chat rows ({messages}, whose system message, if any,
    is kept), as the local fine-tune does; its own copy, so that a change to the TRL stage does not
    move this stage's code hash and bill its jobs again."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    rows = []
    for n, r in enumerate(read_jsonl(path), 1):
        if "messages" in r:
            msgs = r["messages"]
            if not msgs or msgs[-1].get("role") != "assistant":
                raise ValueError(f"{path}:{n}: the last message must be the assistant's")
            rows.append({"messages": msgs if msgs[0].get("role") == "system" else head + msgs})
        elif "prompt" in r and "completion" in r:
            rows.append({"messages": head + [{"role": "user", "content": r["prompt"]},
                                             {"role": "assistant", "content": r["completion"]}]})
        else:
            raise ValueError(f"{path}:{n}: expected 'messages' or 'prompt' + 'completion', got {sorted(r)}")
    if len(rows) < MIN_EXAMPLES:
        raise OpenAIFineTuneError(f"{path}: {len(rows)} training example(s); OpenAI fine-tuning needs at least "
                                  f"{MIN_EXAMPLES}: keep more (filter.n_keep, filter.min_keep)")
    return rows


def finetune(client: Any, spec: Spec, work: Path, train_path: Path, key: str, conn: dict) -> None:
    poll_s = float(conn.get("poll_s", 30))
    t0 = time.time()
    job = existing_job(client, work, key)
    resumed = job is not None
    if job is None:
        rows = chat_rows(train_path, spec.system_prompt)
        file_id = _upload(client, work, rows, key, poll_s)
        job = _create(client, spec, key, file_id, int(conn.get("max_retries", 2)))
        log.info("started OpenAI fine-tuning job %s (%d examples, file %s)", job.id, len(rows), file_id)
    else:
        log.info("resuming OpenAI fine-tuning job %s (%s)", job.id, job.status)
    _write_json(work / "job.json", {"job_id": job.id, "file_id": job.training_file})
    job = _wait(client, job, poll_s)
    if job.status == "cancelled":
        raise OpenAIFineTuneError(f"OpenAI fine-tuning job {job.id} was cancelled; run again to start a new job")
    if job.status != "succeeded":
        why = " ".join(f"{job.error.message} (code {job.error.code})".split()) if job.error else "no reason given"
        raise OpenAIFineTuneError(f"OpenAI fine-tuning job {job.id} failed: {why}; fix that and run again "
                                  "(a new job is started)")
    _write_json(work / "model.json", {"model": job.fine_tuned_model, "job": job.id, "base": job.model,
                                      "trained_tokens": job.trained_tokens})
    _write_json(work / "stats.json", {
        "job": job.id, "file": job.training_file, "seed": job.seed, "hyperparameters": _resolved(job),
        "examples": _count_lines(work / "training.jsonl"), "trained_tokens": job.trained_tokens,
        "resumed": resumed, "seconds": round(time.time() - t0, 3)})


def existing_job(client: Any, work: Path, key: str) -> Optional[Any]:
    """The job tagged with `key` that has not failed or been cancelled: the one job.json names, else
    the provider's newest (a succeeded one first), else None."""
    import openai

    saved = _read_json(work / "job.json")
    if saved.get("job_id"):
        try:
            job = client.fine_tuning.jobs.retrieve(saved["job_id"])
            if job.status not in DEAD and (job.metadata or {}).get(TAG) == key:
                return job
        except openai.NotFoundError:
            pass
    return tagged_job(client, key)


def tagged_job(client: Any, key: str) -> Optional[Any]:
    """The provider's newest job tagged with `key` that has not failed or been cancelled (a succeeded one first)."""
    live = [j for j in client.fine_tuning.jobs.list(metadata={TAG: key}, limit=100)
            if (j.metadata or {}).get(TAG) == key and j.status not in DEAD]  # a server may ignore the filter
    return max(live, key=lambda j: (j.status == "succeeded", j.created_at), default=None)


def _upload(client: Any, work: Path, rows: list[dict], key: str, poll_s: float) -> str:
    """The training file's id: uploaded now, or the upload a killed run made of the same bytes."""
    import openai

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (work / "training.jsonl").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    saved = _read_json(work / "upload.json")
    file = None
    if saved.get("sha256") == digest:
        try:
            file = client.files.retrieve(saved["file_id"])
        except openai.NotFoundError:
            file = None
    if file is None or file.status == "error":
        file = client.files.create(file=(f"sublim-{key}.jsonl", data, "application/jsonl"), purpose="fine-tune")
        _write_json(work / "upload.json", {"file_id": file.id, "sha256": digest})
    file = client.files.wait_for_processing(file.id, poll_interval=min(5.0, poll_s))
    if file.status == "error":
        raise OpenAIFineTuneError(f"OpenAI could not process the training file {file.id}: {file.status_details}")
    return file.id


def _create(client: Any, spec: Spec, key: str, file_id: str, retries: int) -> Any:
    import openai

    once = client.with_options(max_retries=0)
    for attempt in range(retries + 1):
        try:
            return once.fine_tuning.jobs.create(
                model=served_name(spec.student.weights), training_file=file_id, seed=spec.seed, suffix=suffix(key),
                metadata={TAG: key},
                method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters(spec)}})
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
            # did the failed call reach the server after all? (a list that fails too ends the stage: a re-run
            # looks again, where creating blind could start a second job)
            found = tagged_job(client, key)
            if found is not None:
                return found
            if attempt == retries:
                raise
            log.warning("creating the fine-tuning job failed (%s); trying again", type(e).__name__)
            time.sleep(min(60.0, 2.0 ** attempt))
    raise AssertionError("unreachable")


def _wait(client: Any, job: Any, poll_s: float) -> Any:
    """Poll until the job ends, the interval doubling from poll_s/8 up to poll_s."""
    import openai

    delay, failures, status, seen = poll_s / 8, 0, None, set()
    while job.status not in DONE:
        if job.status != status:
            status = job.status
            log.info("OpenAI fine-tuning job %s: %s", job.id, status)
        time.sleep(delay)
        delay = min(poll_s, delay * 2)
        try:
            job = client.fine_tuning.jobs.retrieve(job.id)
            failures = 0
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise
            log.warning("polling job %s failed (%s); trying again", job.id, type(e).__name__)
            continue
        if job.status not in DONE:
            _report_events(client, job.id, seen)
    return job


def _report_events(client: Any, job_id: str, seen: set) -> None:
    """The provider's new event lines to the log, its step counts to sublim.progress; never fails the job."""
    import openai

    try:
        events = list(client.fine_tuning.jobs.list_events(job_id, limit=50).data)
    except openai.APIError as e:
        log.debug("events of %s: %s", job_id, type(e).__name__)
        return
    for ev in sorted(reversed([e for e in events if e.id not in seen]), key=lambda e: e.created_at):  # oldest first
        seen.add(ev.id)
        data = ev.data if isinstance(ev.data, dict) else {}
        if "step" in data and "total_steps" in data:
            progress.report(data["step"], data["total_steps"], "step", "OpenAI fine-tuning")
        else:
            log.info("job %s: %s", job_id, ev.message)


def _resolved(job: Any) -> Optional[dict]:
    """The hyperparameters the provider ran with ("auto" resolved), as the job reports them."""
    sup = getattr(getattr(job, "method", None), "supervised", None)
    hp = getattr(sup, "hyperparameters", None) or getattr(job, "hyperparameters", None)
    return hp.model_dump() if hp is not None else None


_SECRET = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}")  # OpenAI's key shape, whole or masked


def _describe(e: Exception, api_key: str, conn: dict) -> str:
    """One line for an API error, without the key (OpenAI's 401 echoes part of the key it was sent)."""
    body = getattr(e, "body", None)
    message = body.get("message") if isinstance(body, dict) and body.get("message") else getattr(e, "message", str(e))
    message = _SECRET.sub("***", " ".join(str(message).replace(api_key, "***").split()))
    status = getattr(e, "status_code", None)
    request = getattr(e, "request", None)
    where = f" ({request.method} {request.url.path})" if request is not None else ""
    hint = f"; check the key in ${conn['api_key_env']}" if status in (401, 403) else ""
    return f"OpenAI API at {conn['base_url']} answered {status or type(e).__name__}{where}: {message}{hint}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, row: dict) -> None:
    """Written whole or not at all (a killed run leaves the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(row, indent=2))
    os.replace(tmp, path)


def _count_lines(path: Path) -> Optional[int]:
    """Lines of the uploaded file; None where a resumed job's upload was made in another work folder."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None
