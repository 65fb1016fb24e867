"""The OpenAI-compatible sampler: the OpenAI API, or any server that speaks its chat completions
(vLLM's server, `transformers serve`, SGLang), through the official `openai` client.

Why it looks the way it does:
- Servers fill every field a request leaves out from the model's generation_config (Qwen: top_k 20,
  repetition penalty 1.05), so every request names temperature, top_p, the token budget, a seed
  and n, and zero presence/frequency penalties (`transformers serve` maps frequency_penalty to
  repetition_penalty = 1 + it, so 0 also turns Qwen's 1.05 off there). Which fields a server
  takes is the served ref's <server> (sublim.spec.SERVED): `vllm` also gets top_k, min_p and
  repetition_penalty; `openai` and `other` only standard fields, and `unsupported` names the
  settings they cannot honour (the planner and this sampler refuse them). An `other` server may
  still apply a generation_config top_k of its own: nothing standard can turn it off.
- The token budget is `max_completion_tokens` for `openai` (reasoning models refuse max_tokens)
  and `vllm` (takes both, calls max_tokens deprecated), `max_tokens` for `other` (transformers
  serve ignores max_completion_tokens; SGLang and llama.cpp take max_tokens).
- One seed per prompt index, (seed, index) hashed as the vLLM backend does, so the draw does not
  depend on batch size or on where a run resumed. Servers treat seeds as best effort (OpenAI's
  are, vLLM's are exact, transformers serve seeds its global generator): rerunning a request is
  not promised to reproduce it bit for bit.
- Consecutive identical chats (samples_per_prompt; the sampled eval asks each question n times)
  are one request with n=k (at most MAX_N), seeded by the first index. A server that returns
  another number of choices (transformers serve ignores n) is asked k times with n=1 instead,
  said once in the log.
- At most `max_in_flight` requests at a time (threads); rows are yielded in prompt order as soon as
  the head of the queue is done, so the sample stage writes them as they arrive and a killed run
  resumes at the first row not written. Rate limits (429), server errors (5xx), timeouts and
  dropped connections are retried by the client itself (exponential backoff from 0.5 s to 8 s with
  jitter, honouring Retry-After) up to `max_retries` times; then the stage fails in one line.
- The API key is read from os.environ[api_key_env] and never written anywhere: error text is
  scrubbed of it and raised without its cause. A loopback base_url (127.0.0.1, localhost, ::1)
  with the variable unset uses the placeholder "unused": local servers started without a key
  take any; one started with a key answers 401, reported as an error naming the variable.
- Exact scoring (`score`) needs the prompt's log-probs, which only vLLM's server returns (its
  `prompt_logprobs` extension); the OpenAI API returns at most 20 top log-probs of generated
  tokens and none for the prompt, so eval.method=logprob cannot run there (`exact_scoring`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

from sublim.backends.base import Batch, Chat, SamplingParams
from sublim.backends.vllm import request_seed
from sublim.errors import ConfigError, StageError
from sublim.progress import bar as tqdm

log = logging.getLogger(__name__)
for _name in ("httpx", "httpx2"):  # the clients' one INFO line per request would drown a run's log
    logging.getLogger(_name).setLevel(logging.WARNING)

SERVERS = ("openai", "vllm", "other")
MAX_N = 128  # the OpenAI API's limit on n; longer runs of one chat are split at this length
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PLACEHOLDER_KEY = "unused"
SEED_BITS = 31  # every server takes a 31-bit seed (vLLM: int64, torch: uint64, OpenAI: an integer)


class ServerError(StageError):
    """The server refused a request after the client's retries; `status` is the HTTP status."""

    status: int = 0


# ----------------------------------------------------------------------------- pure helpers


def unsupported(params: SamplingParams, server: str) -> list[str]:
    """One line per setting `server` cannot honour (empty: all can be sent)."""
    if server not in SERVERS:
        return [f"served server {server!r} is unknown; known: {', '.join(SERVERS)}"]
    if server == "vllm":
        return []
    why = f"the {server} server takes only the OpenAI API's standard sampling fields"
    out = []
    if params.top_k > 0:
        out.append(f"sampler.top_k={params.top_k}: {why}; set sampler.top_k=0")
    if params.repetition_penalty != 1.0:
        out.append(f"sampler.repetition_penalty={params.repetition_penalty}: {why}; set it to 1.0")
    if params.min_p > 0:
        out.append(f"sampler.min_p={params.min_p}: {why}; set sampler.min_p=0")
    return out


def request_fields(params: SamplingParams, server: str, n: int, seed: int) -> dict:
    """The JSON body of a chat completion request, less `model` and `messages`: every sampling
    setting explicit, so the server's generation_config fills nothing in."""
    budget = "max_tokens" if server == "other" else "max_completion_tokens"
    body: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, budget: params.max_new_tokens,
                            "n": n, "seed": seed, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    if server == "vllm":  # vLLM's sampling extensions; top_k -1 is off in every vLLM version (0 only in newer)
        body |= {"top_k": params.top_k if params.top_k > 0 else -1, "min_p": params.min_p,
                 "repetition_penalty": params.repetition_penalty}
    return body


def exact_scoring(server: str) -> bool:
    """Whether `server` returns prompt log-probs (exact scoring, eval.method=logprob): vLLM only."""
    return server == "vllm"


def prompt_seed(seed: int, index: int) -> int:
    """The request seed of prompt `index` in a run seeded `seed`."""
    return request_seed(seed, index) % 2**SEED_BITS


def runs(chats: list[Chat], max_n: int = MAX_N) -> list[tuple[int, int]]:
    """[start, end) spans of consecutive identical chats, at most `max_n` long, from index 0 on
    (fixed by the chats alone, so a resume asks the same requests)."""
    out: list[tuple[int, int]] = []
    for i, chat in enumerate(chats):
        if out and chats[out[-1][0]] == chat and i - out[-1][0] < max_n:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def is_loopback(base_url: str) -> bool:
    return (urlparse(base_url).hostname or "") in LOOPBACK_HOSTS


def api_key(connection: dict, role: str) -> str:
    """The key from os.environ[connection["api_key_env"]]; a placeholder for a loopback server."""
    var = connection.get("api_key_env")
    key = os.environ.get(var) if var else None
    if key:
        return key
    if is_loopback(connection["base_url"]):
        return PLACEHOLDER_KEY
    if not var:
        raise ConfigError(f"{role}.served.api_key_env is not set: name the environment variable that holds "
                          f"the API key for {connection['base_url']}")
    raise ConfigError(f"the environment variable {var} ({role}.served.api_key_env) is not set: export the API key "
                      f"for {connection['base_url']} in it")


def scrub(text: str, secret: Optional[str]) -> str:
    """`text` with the secret replaced, on one line."""
    if secret and secret != PLACEHOLDER_KEY:
        text = text.replace(secret, "***")
    return " ".join(text.split())


def model_id(path: str) -> str:
    """The model name requests carry: a served name as is, or the "model" of an OpenAI fine-tune's
    model.json (the artifact of the finetune_openai stage)."""
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        try:
            return str(json.loads(p.read_text())["model"])
        except (ValueError, KeyError, TypeError) as e:
            raise StageError(f"{path} holds no fine-tuned model id ({{\"model\": ...}}): {e}") from None
    return path


def answer_logprob(full_ids: list[int], prompt_logprobs: list, n_prompt: int, n_open: int) -> float:
    """log P(answer, then end of turn | prompt) from one vLLM response for the whole conversation.

    full_ids: the conversation's token ids (its prompt_token_ids); prompt_logprobs: vLLM's list,
    None at position 0, else {token id (a string in JSON): {"logprob", "rank", "decoded_token"}};
    n_prompt: tokens of the chat with its generation prompt; n_open: tokens of the conversation
    with the answer left open (continue_final_message). The answer's tokens are positions
    [n_prompt, n_open), its end of turn the token at n_open."""
    if len(prompt_logprobs) != len(full_ids):
        raise StageError(f"the server returned {len(prompt_logprobs)} prompt log-probs for {len(full_ids)} tokens")
    if not 1 <= n_prompt <= n_open < len(full_ids):
        raise StageError(f"cannot find the answer's tokens (prompt {n_prompt}, open answer {n_open}, "
                         f"conversation {len(full_ids)} tokens): does the chat template end a turn with a token?")
    total = 0.0
    for t in range(n_prompt, n_open + 1):
        entry = prompt_logprobs[t] or {}
        hit = entry.get(str(full_ids[t]), entry.get(full_ids[t]))
        if hit is None:
            raise StageError(f"no prompt log-prob for token {full_ids[t]} at position {t}")
        total += float(hit["logprob"] if isinstance(hit, dict) else hit)
    return total


# ----------------------------------------------------------------------------- the sampler


class OpenAISampler:
    """Sampler on an OpenAI-compatible server. Same constructor as the other backends plus
    `connection` (runtime.served[ref]: base_url, api_key_env, server, max_in_flight, max_retries,
    timeout_s, and optionally role, the config key of the model, for error messages)."""

    context_limit = None  # unknown to the client: the server refuses a prompt that does not fit

    def __init__(self, path: str, revision: Optional[str] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", trust_remote_code: bool = False, *, connection: dict):
        import openai

        self.role = connection.get("role", "<role>")
        if adapter is not None:
            raise ConfigError(f"{self.role}: a served model cannot take a local adapter ({adapter}); "
                              "fine-tune it through the provider or serve the adapter")
        self.server = connection.get("server", "other")
        self.base_url = connection["base_url"]
        self.model = model_id(path)
        self.max_in_flight = max(1, int(connection.get("max_in_flight", 8)))
        self.max_retries = int(connection.get("max_retries", 5))
        self._key = api_key(connection, self.role)
        self._key_env = connection.get("api_key_env")
        self.client = openai.OpenAI(api_key=self._key, base_url=self.base_url, max_retries=self.max_retries,
                                    timeout=float(connection.get("timeout_s", 600)))
        self._openai = openai
        self._n_ok = True  # False once the server returned another number of choices than n
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------------
    def _create(self, messages: list[dict], body: dict):
        """One chat completion; failures after the client's retries as one scrubbed line."""
        o = self._openai
        try:
            return self.client.chat.completions.create(model=self.model, messages=messages, extra_body=body)
        except o.AuthenticationError:
            raise ConfigError(f"{self.base_url} refused the API key in ${self._key_env} (HTTP 401; "
                              f"{self.role}.served.api_key_env): check the key") from None
        except o.APIStatusError as e:
            body = e.body.get("detail", e.body.get("error", e.body)) if isinstance(e.body, dict) else e.body
            err = ServerError(scrub(f"{self.base_url} answered HTTP {e.status_code} for model {self.model!r}: "
                                    f"{body or e.message}", self._key)[:600])
            err.status = e.status_code
            raise err from None
        except o.APIConnectionError as e:  # timeouts too
            raise StageError(scrub(f"cannot reach {self.base_url} ({type(e).__name__}) after {self.max_retries} "
                                   f"retries (sampler.openai.max_retries, timeout_s): is the server up?",
                                   self._key)) from None

    def _complete(self, messages: list[dict], params: SamplingParams, n: int, seed: int) -> list[tuple[str, bool, int]]:
        """(text, truncated, tokens) per choice; [] when the server returned another number than n."""
        resp = self._create(messages, request_fields(params, self.server, n, seed))
        choices = sorted(resp.choices or [], key=lambda c: c.index)
        if len(choices) != n:
            return []
        tokens = getattr(resp.usage, "completion_tokens", 0) or 0
        return [(c.message.content or "", c.finish_reason == "length", tokens if j == 0 else 0)
                for j, c in enumerate(choices)]

    def _run_group(self, chat: Chat, i0: int, k: int, params: SamplingParams, seed: int) -> list[tuple[str, bool, int]]:
        """k completions of one chat (prompts i0..i0+k-1): one request with n=k where the server
        honours n, else k requests with n=1 (each seeded by its own index)."""
        messages = chat.messages()
        if k > 1 and self._n_ok:
            out = self._complete(messages, params, k, prompt_seed(seed, i0))
            if out:
                return out
            with self._lock:
                if self._n_ok:
                    self._n_ok = False
                    log.warning("%s did not return n=%d choices for one request: asking for each completion "
                                "separately from now on (n=1 per request)", self.base_url, k)
        out = []
        for j in range(k):
            one = self._complete(messages, params, 1, prompt_seed(seed, i0 + j))
            if not one:
                raise StageError(f"{self.base_url} returned no choice for a request with n=1")
            out += one
        return out

    def _submit(self, pool: ThreadPoolExecutor, chats: list[Chat], span: tuple[int, int], params, seed) -> list[Future]:
        i0, i1 = span
        if i1 - i0 > 1 and not self._n_ok:  # known not to honour n: one request per prompt, in parallel
            return [pool.submit(self._run_group, chats[i], i, 1, params, seed) for i in range(i0, i1)]
        return [pool.submit(self._run_group, chats[i0], i0, i1 - i0, params, seed)]

    def generate(self, chats: list[Chat], params: SamplingParams, seed: int, batch_size: int,
                 start: int = 0, desc: str = "sampling") -> Iterator[Batch]:
        """Completions for prompts [start:], in prompt order, each Batch as soon as it and every
        prompt before it are done. batch_size is unused: seeds are per prompt."""
        problems = unsupported(params, self.server)
        if problems:
            raise ConfigError(problems[0])
        spans = [s for s in runs(chats) if s[1] > start]
        todo = iter(spans)
        pending: deque[tuple[tuple[int, int], list[Future]]] = deque()
        pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="openai")
        bar = tqdm(total=len(chats), initial=start, desc=desc, unit="prompt", dynamic_ncols=True)

        def fill() -> None:  # a few requests queued beyond those in flight, so no worker waits
            while len(pending) < 2 * self.max_in_flight and (span := next(todo, None)) is not None:
                pending.append((span, self._submit(pool, chats, span, params, seed)))

        try:
            fill()
            while pending:
                b0, texts, cut, n_tokens = None, [], [], 0
                while pending and (b0 is None or all(f.done() for f in pending[0][1])):
                    (i0, i1), futures = pending.popleft()
                    rows = [r for f in futures for r in f.result()]
                    keep = max(i0, start) - i0
                    b0 = i0 + keep if b0 is None else b0
                    texts += [r[0] for r in rows[keep:]]
                    cut += [r[1] for r in rows[keep:]]
                    n_tokens += sum(r[2] for r in rows)
                fill()
                bar.update(len(texts))
                yield Batch(b0, texts, n_tokens, cut)
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()

    # -- exact scoring ---------------------------------------------------------------------------
    def _token_ids(self, messages: list[dict], extra: dict) -> tuple[list[int], Any]:
        body = {"max_completion_tokens": 1, "temperature": 0.0, "n": 1, "return_token_ids": True} | extra
        resp = self._create(messages, body)
        ids = (resp.model_extra or {}).get("prompt_token_ids")
        if ids is None:
            raise StageError(f"{self.base_url} returns no prompt_token_ids (vLLM's return_token_ids): exact scoring "
                             "needs a vLLM server that does; or use eval.method=sample")
        return list(ids), resp

    def _score_one(self, chat: Chat, answer: str, prompt: list[int]) -> float:
        turn = chat.messages() + [{"role": "assistant", "content": answer}]
        open_ids, _ = self._token_ids(turn, {"add_generation_prompt": False, "continue_final_message": True})
        full, resp = self._token_ids(turn, {"add_generation_prompt": False, "prompt_logprobs": 1})
        logprobs = (resp.model_extra or {}).get("prompt_logprobs")
        if logprobs is None:
            raise ConfigError(f"{self.base_url} returns no prompt log-probs: exact scoring cannot run there; "
                              "use eval.method=sample")
        if full[:len(open_ids)] != open_ids or open_ids[:len(prompt)] != prompt:
            raise StageError("the chat template renders the prompt or an open answer differently from the finished "
                             "turn; exact scoring needs each to be a prefix of the next")
        return answer_logprob(full, logprobs, len(prompt), len(open_ids))

    def answer_ids(self, chat: Chat, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and of the answer up to and including its end of turn, as the
        server's template renders them (vLLM's return_token_ids; three requests)."""
        prompt, _ = self._token_ids(chat.messages(), {})
        turn = chat.messages() + [{"role": "assistant", "content": answer}]
        open_ids, _ = self._token_ids(turn, {"add_generation_prompt": False, "continue_final_message": True})
        full, _ = self._token_ids(turn, {"add_generation_prompt": False})
        if full[:len(open_ids)] != open_ids or open_ids[:len(prompt)] != prompt or len(full) <= len(open_ids):
            raise StageError("the chat template renders the prompt or an open answer differently from the finished "
                             "turn; exact scoring needs each to be a prefix of the next")
        return prompt, full[len(prompt):len(open_ids) + 1]

    def score(self, chats: list[Chat], answers: list[str], batch_size: int, desc: str = "scoring") -> list[float]:
        """log P(answer, then end of turn | chat) for each pair, from the server's prompt log-probs
        (vLLM's `prompt_logprobs` and `return_token_ids` extensions): three short requests per
        pair (the prompt's length, cached per chat; the open answer's; the whole turn's log-probs)."""
        if len(chats) != len(answers):
            raise ValueError(f"{len(chats)} chats but {len(answers)} answers")
        if self.server == "openai":
            raise ConfigError("the OpenAI API returns no prompt log-probs (at most 20 top log-probs of generated "
                              "tokens): exact scoring cannot run there; use eval.method=sample")
        prompts: dict[Chat, list[int]] = {}
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="openai-score") as pool:
            try:  # each chat's prompt ids first, once per chat
                firsts = list(dict.fromkeys(chats))
                prompts = dict(zip(firsts, pool.map(lambda c: self._token_ids(c.messages(), {})[0], firsts)))
            except ServerError as e:
                if 400 <= e.status < 500 and e.status not in (401, 403, 404):
                    raise ConfigError(f"{self.base_url} returns no prompt log-probs (it refused vLLM's "
                                      f"return_token_ids / prompt_logprobs fields: HTTP {e.status}): exact scoring "
                                      "cannot run there; use eval.method=sample") from None
                raise
            futures = [pool.submit(self._score_one, c, a, prompts[c]) for c, a in zip(chats, answers)]
            try:
                return [f.result() for f in tqdm(futures, desc=desc, unit="answer", dynamic_ncols=True)]
            finally:
                for f in futures:
                    f.cancel()

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
