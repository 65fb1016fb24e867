"""A LOCAL STAND-IN for OpenAI's paid fine-tuning endpoints (files and fine_tuning/jobs), for tests.

Not OpenAI: an HTTP server on 127.0.0.1 (stdlib, in a thread) that answers the requests the openai
package makes, so the fine-tuning stage is tested without a key, a network or a bill. Requests are
checked against the openai package's own typed parameters (JobCreateParams and the TypedDicts it
nests, FileCreateParams, JobListParams): an unknown or missing key, or a value of the wrong type,
is a 400 as the real API gives. Its other behaviour follows the API reference: jobs listed newest
first with `after`/`limit` pagination and the `metadata[k]=v` filter, events newest first, a job
validating_files -> running -> succeeded (or failed with a configured message) as it is polled,
the 10-example minimum, metadata and suffix limits, and a 401 that echoes the key it was sent.
What the real service decides ("auto" batch size and learning-rate multiplier, token counts, model
names) is made up here, plainly.

It records what clients sent (`uploads`, `created`), for tests to assert on.
"""
from __future__ import annotations

import collections.abc
import email.parser
import email.policy
import json
import threading
import time
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

import typing_extensions
from openai.types import file_create_params
from openai.types.fine_tuning import job_create_params, job_list_params

MIN_EXAMPLES = 10
MODELS = ("gpt-4.1-nano-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-2025-04-14", "gpt-4o-mini-2024-07-18")


class BadRequest(Exception):
    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


# -- request checks from the openai package's typed parameters --------------------------------------
def _typeddict(hint: Any) -> Optional[type]:
    if typing_extensions.is_typeddict(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _typeddict(arg)
        if found is not None:
            return found
    return None


def _accepts(hint: Any, value: Any, path: str) -> bool:
    origin = typing_extensions.get_origin(hint)
    if origin in (typing_extensions.Required, typing_extensions.NotRequired):
        return _accepts(typing.get_args(hint)[0], value, path)
    if origin is typing.Union:
        return any(_accepts(a, value, path) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if typing_extensions.is_typeddict(hint):
        check(hint, value, path + ".")
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        return isinstance(value, list)
    return True  # a type these checks do not model (files): the caller checks it


def check(cls: type, body: Any, prefix: str = "") -> None:
    """BadRequest unless `body` has only `cls`'s keys, all its required ones, and values of their types."""
    if not isinstance(body, dict):
        raise BadRequest(f"Invalid type for '{prefix.rstrip('.') or 'body'}': expected an object.")
    hints = typing_extensions.get_type_hints(cls, include_extras=True)
    for k in body:
        if k not in hints:
            raise BadRequest(f"Unrecognized request argument supplied: {prefix}{k}", f"{prefix}{k}")
    for k, hint in hints.items():
        if k not in body:
            if typing_extensions.get_origin(hint) is typing_extensions.Required:
                raise BadRequest(f"Missing required parameter: '{prefix}{k}'.", f"{prefix}{k}")
        elif not _accepts(hint, body[k], prefix + k):
            raise BadRequest(f"Invalid value for '{prefix}{k}': {body[k]!r}.", f"{prefix}{k}")


# -- the service ------------------------------------------------------------------------------------
class OpenAIStandIn:
    """`with OpenAIStandIn(api_key=...) as api:` serves at `api.base_url` until the block ends.

    polls: retrieves of a job until it ends (the first moves it to running); fail_with: a message
    jobs fail with instead of succeeding; hold: jobs stay running until it is cleared;
    create_then_error: how many job creates answer 500 AFTER creating the job (a response lost on the way);
    metadata_filter: False lists jobs as an OpenAI-compatible server without the filter would (all of them)."""

    def __init__(self, api_key: str = "sk-standin", polls: int = 3, fail_with: Optional[str] = None,
                 page_size_cap: int = 100):
        self.api_key, self.polls, self.fail_with, self.page_size_cap = api_key, polls, fail_with, page_size_cap
        self.hold = False
        self.metadata_filter = True
        self.create_then_error = 0
        self.uploads: list[dict] = []  # {id, filename, purpose, content: bytes}
        self.created: list[dict] = []  # the job-create bodies, as sent
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self._polled: dict[str, int] = {}
        self._n = 0
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the stand-in is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "OpenAIStandIn":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-standin{self._n:06d}"

    # -- endpoints (called under the lock) ----------------------------------------------------------
    def upload(self, fields: dict[str, Any]) -> dict:
        check(file_create_params.FileCreateParams, fields)
        if not isinstance(fields["file"], dict):
            raise BadRequest("'file' must be a file part, not a form value.", "file")
        if fields["purpose"] != "fine-tune":
            raise BadRequest("this stand-in takes purpose 'fine-tune' only", "purpose")
        f = {"id": self._id("file"), "filename": fields["file"]["filename"], "purpose": fields["purpose"],
             "content": fields["file"]["content"]}
        self.uploads.append(f)
        return self._file(f)

    def file(self, file_id: str) -> dict:
        f = next((u for u in self.uploads if u["id"] == file_id), None)
        if f is None:
            raise BadRequest(f"No such File object: {file_id}", "id", 404)
        return self._file(f)

    @staticmethod
    def _file(f: dict) -> dict:
        return {"id": f["id"], "object": "file", "bytes": len(f["content"]), "created_at": int(time.time()),
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    def create(self, body: Any) -> dict:
        check(job_create_params.JobCreateParams, body)
        if body["model"] not in MODELS:
            raise BadRequest(f"Model {body['model']} is not available for fine-tuning or does not exist.", "model")
        upload = next((u for u in self.uploads if u["id"] == body["training_file"]), None)
        if upload is None:
            raise BadRequest(f"invalid training_file: {body['training_file']}", "training_file")
        if len(body.get("suffix") or "") > 64:
            raise BadRequest("suffix must be at most 64 characters", "suffix")
        meta = body.get("metadata") or {}
        if len(meta) > 16 or any(len(k) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in meta.items()):
            raise BadRequest("metadata: at most 16 pairs, keys up to 64 characters, values up to 512", "metadata")
        method = body.get("method") or {"type": "supervised",
                                        "supervised": {"hyperparameters": body.get("hyperparameters", {})}}
        hp = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto",
              **method.get("supervised", {}).get("hyperparameters", {})}
        self.created.append(body)
        job_id = self._id("ftjob")
        self._n += 1
        self.jobs[job_id] = {
            "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()), "_order": self._n,
            "error": None, "fine_tuned_model": None, "finished_at": None, "hyperparameters": hp, "model": body["model"],
            "organization_id": "org-standin", "result_files": [], "seed": body.get("seed") or 42,
            "status": "validating_files", "trained_tokens": None, "training_file": upload["id"],
            "validation_file": None, "metadata": meta or None, "suffix": body.get("suffix"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}, "estimated_finish": None,
            "integrations": None}
        self.events[job_id] = []
        self._event(job_id, f"Created fine-tuning job: {job_id}")
        if self.create_then_error:
            self.create_then_error -= 1
            raise BadRequest("The server had an error while processing your request.", status=500)
        return self._public(self.jobs[job_id])

    def list_jobs(self, query: list[tuple[str, str]]) -> dict:
        params: dict[str, Any] = {}
        meta: dict[str, str] = {}
        for k, v in query:
            if k.startswith("metadata[") and k.endswith("]"):
                meta[k[len("metadata["):-1]] = v
            elif k == "limit":
                params[k] = int(v)
            else:
                params[k] = v
        if meta:
            params["metadata"] = meta
        check(job_list_params.JobListParams, params)
        jobs = sorted(self.jobs.values(), key=lambda j: -j["_order"])  # newest first
        if self.metadata_filter:
            jobs = [j for j in jobs if all((j["metadata"] or {}).get(k) == v for k, v in meta.items())]
        if "after" in params:
            ids = [j["id"] for j in jobs]
            jobs = jobs[ids.index(params["after"]) + 1:] if params["after"] in ids else []
        limit = min(params.get("limit", 20), self.page_size_cap)
        return {"object": "list", "data": [self._public(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}

    def retrieve(self, job_id: str) -> dict:
        job = self._job(job_id)
        if job["status"] not in ("succeeded", "failed", "cancelled"):
            self._advance(job)
        return self._public(job)

    def list_events(self, job_id: str, query: list[tuple[str, str]]) -> dict:
        self._job(job_id)
        q = dict(query)
        unknown = set(q) - {"after", "limit"}
        if unknown:
            raise BadRequest(f"Unrecognized request argument supplied: {sorted(unknown)[0]}")
        events = list(reversed(self.events[job_id]))  # newest first
        if "after" in q:
            ids = [e["id"] for e in events]
            events = events[ids.index(q["after"]) + 1:] if q["after"] in ids else []
        limit = int(q.get("limit", 20))
        return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

    def _job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise BadRequest(f"Could not find fine-tuning job {job_id}.", "fine_tuning_job_id", 404)
        return self.jobs[job_id]

    def _advance(self, job: dict) -> None:
        n = self._polled[job["id"]] = self._polled.get(job["id"], 0) + 1
        rows = self._rows(job)
        if job["status"] == "validating_files":
            if isinstance(rows, str):
                return self._end(job, "failed", error=rows)
            hp = job["hyperparameters"]
            hp.update({"batch_size": 1 if hp["batch_size"] == "auto" else hp["batch_size"],
                       "learning_rate_multiplier": 0.1 if hp["learning_rate_multiplier"] == "auto"
                       else hp["learning_rate_multiplier"],
                       "n_epochs": 3 if hp["n_epochs"] == "auto" else hp["n_epochs"]})
            job["status"] = "running"
            self._event(job["id"], "Fine-tuning job started")
        total = len(rows) * job["hyperparameters"]["n_epochs"]
        if self.hold or n < self.polls:
            step = min(total - 1, max(1, total * n // max(self.polls, 1)))
            self._event(job["id"], f"Step {step}/{total}: training loss=0.5", {"step": step, "total_steps": total})
            return
        if self.fail_with:
            return self._end(job, "failed", error=self.fail_with)
        words = sum(len(str(m.get("content", "")).split()) for r in rows for m in r["messages"])
        job.update(fine_tuned_model=f"ft:{job['model']}:standin:{job['suffix'] or 'model'}:{job['id'][-6:]}",
                   trained_tokens=words * job["hyperparameters"]["n_epochs"])
        self._end(job, "succeeded")

    def _rows(self, job: dict) -> list[dict] | str:
        """The training file's examples, or why the real service would refuse the file."""
        upload = next(u for u in self.uploads if u["id"] == job["training_file"])
        rows = []
        for n, line in enumerate(upload["content"].decode().splitlines(), 1):
            try:
                row = json.loads(line)
                ok = isinstance(row, dict) and set(row) == {"messages"} and row["messages"][-1]["role"] == "assistant"
            except (ValueError, KeyError, IndexError, TypeError):
                ok = False
            if not ok:
                return f"The job failed due to an invalid training file. Invalid file format. Line {n}."
            rows.append(row)
        if len(rows) < MIN_EXAMPLES:
            return (f"The job failed due to an invalid training file. Training file has {len(rows)} example(s), "
                    f"but must have at least {MIN_EXAMPLES} examples")
        return rows

    def _end(self, job: dict, status: str, error: Optional[str] = None) -> None:
        job.update(status=status, finished_at=int(time.time()))
        if error:
            job["error"] = {"code": "invalid_training_file" if "training file" in error else "job_failed",
                            "message": error, "param": None}
        self._event(job["id"], f"Job {status}" if not error else error)

    def _event(self, job_id: str, message: str, data: Optional[dict] = None) -> None:
        self._n += 1
        self.events[job_id].append({"id": f"ftevent-standin{self._n:06d}", "object": "fine_tuning.job.event",
                                    "created_at": int(time.time()), "level": "info", "message": message,
                                    "data": data or {}, "type": "metrics" if data else "message"})

    @staticmethod
    def _public(job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_") and k != "suffix"}


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields of a multipart body: {name: str} for values, {name: {filename, content}} for files."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        raise BadRequest("expected a multipart/form-data body")
    fields: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[name] = {"filename": filename, "content": payload} if filename is not None else payload.decode()
    return fields


def _handler(api: OpenAIStandIn) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: tests read `api.requests`
            pass

        def _answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, query = url.path.rstrip("/"), parse_qsl(url.query, keep_blank_values=True)
            with api._lock:
                api.requests.append((method, self.path))
                try:
                    sent = self.headers.get("Authorization", "")
                    if sent != f"Bearer {api.api_key}":
                        raise BadRequest(f"Incorrect API key provided: {sent.removeprefix('Bearer ')}. You can find "
                                         "your API key at https://platform.openai.com/account/api-keys.",
                                         status=401, code="invalid_api_key")
                    self._answer(200, self._route(method, path, query, body))
                except BadRequest as e:
                    kind = "invalid_request_error" if e.status < 500 else "server_error"
                    self._answer(e.status, {"error": {"message": str(e), "type": kind, "param": e.param,
                                                      "code": e.code}})

        def _route(self, method: str, path: str, query: list, body: bytes) -> dict:
            parts = path.split("/")[2:]  # after /v1
            if method == "POST" and parts == ["files"]:
                return api.upload(_multipart(self.headers.get("Content-Type", ""), body))
            if method == "GET" and len(parts) == 2 and parts[0] == "files":
                return api.file(parts[1])
            if parts[:2] == ["fine_tuning", "jobs"]:
                rest = parts[2:]
                if method == "POST" and not rest:
                    try:
                        payload = json.loads(body or b"null")
                    except ValueError:
                        raise BadRequest("the body is not JSON") from None
                    return api.create(payload)
                if method == "GET" and not rest:
                    return api.list_jobs(query)
                if method == "GET" and len(rest) == 1:
                    return api.retrieve(rest[0])
                if method == "GET" and len(rest) == 2 and rest[1] == "events":
                    return api.list_events(rest[0], query)
            raise BadRequest(f"Invalid URL ({method} {path})", status=404)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
