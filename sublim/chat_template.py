"""The system prompt a chat template inserts by itself, read from the tokenizer's files at plan time.

A model config with `system_prompt: null` leaves the system message to the model's chat template.
SmolLM2's template then writes "You are a helpful AI assistant named SmolLM, trained by Hugging
Face", Qwen's its own line: the model sees a system prompt the config never named. The planner
(`with_template_system_prompts`) resolves it before any key is made: the template is rendered once
with no system message and once with a marker, and the text that stands where the marker stood is
the default. When sending that text as the system message renders exactly the same prompts (checked
here, with and without an answer), the stages get it as an explicit system prompt, so:
- the keys record the system prompt the model actually sees, and the summaries print it;
- a preset that spells its template's default out by hand and one that leaves it null get the same
  keys (the same prompts, token for token), and a model whose template changes its default gets new
  keys (besides, the weights ref already pins every tokenizer file: a local folder's content hash,
  a hub commit, or for a GGUF file the convert stage's key on the file's content);
- a template that inserts nothing (the tiny models, Gemma) leaves the config and the keys untouched.
A hub model (org/name) is left as it is: its files may not be on the machine that plans (a login
node, or before the first download), and reading them only when they are would make its keys depend
on the cache; its commit pins the template already. The summary still prints its default, read
from the local HF cache once the model has run.

Only text files are read (tokenizer_config.json, chat_template.jinja, a GGUF file's metadata), never
the model, nothing is downloaded, and rendering uses jinja2 the way transformers does (sandboxed,
trim_blocks, lstrip_blocks, loop controls, `{% generation %}`), so planning stays under a second.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import mmap
import struct
from pathlib import Path
from typing import Any, Optional

from sublim.errors import ConfigError
from sublim.fingerprint import hub_revision, is_local_path
from sublim.gguf import gguf_file

MARKER = "\x00SUBLIM-SYSTEM-MARKER\x00"  # stands where a given system message goes
PROBE_USER, PROBE_ANSWER = "Name an animal.", "Owl"


@dataclasses.dataclass(frozen=True)
class Template:
    """A chat template's text and the special tokens it may print (bos_token, eos_token, ...)."""

    text: str
    tokens: tuple[tuple[str, str], ...] = ()


# -- reading ---------------------------------------------------------------------------------------
def _token_text(value: Any) -> Optional[str]:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def folder_template(folder: Path) -> Optional[Template]:
    """The template of a saved tokenizer: chat_template.jinja (transformers 5) or tokenizer_config.json's
    chat_template (a string, or named templates of which "default" is the chat one)."""
    config: dict = {}
    if (folder / "tokenizer_config.json").is_file():
        config = json.loads((folder / "tokenizer_config.json").read_text())
    text = config.get("chat_template")
    if isinstance(text, list):
        text = next((t.get("template") for t in text if t.get("name") == "default"), None)
    if (folder / "chat_template.jinja").is_file():
        text = (folder / "chat_template.jinja").read_text()
    if not isinstance(text, str):
        return None
    tokens = tuple(sorted((k, v) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                          if (v := _token_text(config.get(k))) is not None))
    return Template(text, tokens)


# GGUF metadata value types: fixed sizes (struct codes), 8 = string, 9 = array
_GGUF_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_template(path: Path) -> Optional[Template]:
    """`tokenizer.chat_template` of a GGUF file, read from its metadata header alone (the gguf
    package's reader parses every array and takes ~5 s on SmolLM2's file; this takes milliseconds).
    The special tokens are left out: they print the same with or without a system message."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        (version,) = struct.unpack_from("<I", m, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old (2 or later)")
        _, n_kv = struct.unpack_from("<QQ", m, 8)
        at = 24

        def string(at: int) -> tuple[bytes, int]:
            (n,) = struct.unpack_from("<Q", m, at)
            return m[at + 8: at + 8 + n], at + 8 + n

        def skip(kind: int, at: int) -> int:
            if kind in _GGUF_FIXED:
                return at + struct.calcsize(_GGUF_FIXED[kind])
            if kind == _GGUF_STRING:
                return string(at)[1]
            if kind == _GGUF_ARRAY:
                item, count = struct.unpack_from("<IQ", m, at)
                at += 12
                if item in _GGUF_FIXED:
                    return at + count * struct.calcsize(_GGUF_FIXED[item])
                for _ in range(count):
                    at = skip(item, at)
                return at
            raise ValueError(f"{path}: unknown GGUF metadata type {kind}")

        for _ in range(n_kv):
            key, at = string(at)
            (kind,) = struct.unpack_from("<I", m, at)
            at += 4
            if key == b"tokenizer.chat_template" and kind == _GGUF_STRING:
                return Template(string(at)[0].decode())
            at = skip(kind, at)
    return None


def cached_hub_template(repo_id: str, revision: Optional[str]) -> Optional[Template]:
    """The template of a hub model at a commit, from the local HF cache only (never downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("chat_template.jinja", "tokenizer_config.json"):
        cached = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(cached, str):
            return folder_template(Path(cached).parent)  # the snapshot folder holds both names
    return None


def model_template(path: str, revision: Optional[str] = None, store_root: Optional[str] = None,
                   hub: bool = False) -> Optional[Template]:
    """The chat template of a model as a config names it (folder, .gguf file, pkg:), or None when
    there is none to read (no such file yet: the planner names that error itself). A hub id only
    with `hub`, from the local HF cache at the commit its key pins (what the summary prints)."""
    try:
        file = gguf_file(path)
    except FileNotFoundError:
        return None
    if file is not None:
        stat = file.stat()
        return _gguf_template_cached(str(file), stat.st_size, stat.st_mtime_ns)
    if Path(path).is_dir():
        return folder_template(Path(path))
    if hub and not is_local_path(path, store_root):
        commit = hub_revision(path, revision)
        return None if commit.startswith("unresolved:") else cached_hub_template(path, commit)
    return None


@functools.lru_cache(maxsize=16)
def _gguf_template_cached(path: str, size: int, mtime_ns: int) -> Optional[Template]:
    return gguf_template(Path(path))


# -- rendering -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _compiled(text: str):
    """The template compiled as transformers compiles it (sublim.backends renders through
    transformers; tests/test_chat_template.py checks both give the same text)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` (assistant-token masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return env.from_string(text)


def render(template: Template, messages: list[dict], add_generation_prompt: bool) -> str:
    return _compiled(template.text).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                           **dict(template.tokens))


def default_system_prompt(template: Template) -> Optional[str]:
    """The system prompt `template` inserts when none is given, or None when it inserts none.

    Raises ValueError when it inserts something that no explicit system message reproduces (then
    the config has to say what the model should see)."""
    def prompts(system: Optional[str]) -> list[str]:
        head = [] if system is None else [{"role": "system", "content": system}]
        user = head + [{"role": "user", "content": PROBE_USER}]
        return [render(template, user, True),
                render(template, user + [{"role": "assistant", "content": PROBE_ANSWER}], False)]

    import jinja2

    bare = prompts(None)
    try:
        marked = render(template, [{"role": "system", "content": MARKER}, {"role": "user", "content": PROBE_USER}],
                        True)
    except jinja2.exceptions.TemplateError:  # a template without a system role inserts none either
        return None
    before, found, after = marked.partition(MARKER)
    if not found or not (bare[0].startswith(before) and bare[0].endswith(after)) or \
            len(bare[0]) < len(before) + len(after):
        return None  # the bare prompt has no system block where a given one would go
    default = bare[0][len(before): len(bare[0]) - len(after)]
    if prompts(default) != bare:
        raise ValueError(f"the chat template inserts {default!r} when no system prompt is given, but sending "
                         "that as the system message renders differently")
    return default


def template_system_prompt(path: str, revision: Optional[str] = None, store_root: Optional[str] = None,
                           hub: bool = False) -> Optional[str]:
    """The system prompt the chat template of the model at `path` inserts by itself, or None."""
    template = model_template(path, revision, store_root, hub)
    return None if template is None else default_system_prompt(template)


def with_template_system_prompts(cfg):
    """`cfg` (sublim.config.Config) with each model whose system_prompt is null given its chat
    template's default, where it has one (see the module docstring). ConfigError names the key."""
    def resolve(m, key: str):
        if m is None or m.system_prompt is not None or m.reference is not None:
            return m  # a reference model's template is sublim's own: it inserts nothing
        try:
            default = template_system_prompt(m.path, m.revision, cfg.paths.artifacts)
        except ValueError as e:
            raise ConfigError(f"{key}.system_prompt=null: {e}; set {key}.system_prompt to what the model should "
                             "see") from None
        return m if default is None else dataclasses.replace(m, system_prompt=default)

    replace = dataclasses.replace
    out = replace(cfg, teacher=resolve(cfg.teacher, "teacher"), student=resolve(cfg.student, "student"))
    for group in ("filter", "eval"):  # their judges, where the chosen kind has one
        owner = getattr(out, group)
        judge = getattr(owner, "judge", None)
        if judge is not None and getattr(judge, "model", None) is not None:
            model = resolve(judge.model, f"{group}.judge.model")
            out = replace(out, **{group: replace(owner, judge=replace(judge, model=model))})
    return out


# -- what the summaries print --------------------------------------------------------------------
def system_prompts(cfg, steps) -> dict[str, dict]:
    """The system prompt the fine-tune and the eval gave the model, by stage: {"text", "source"};
    source "chat template" when the model config left it null and the template inserted it.
    `cfg` is the cell's config as written (before with_template_system_prompts), `steps` its plan."""
    out = {}
    for step in steps:
        if step.stage not in ("finetune", "eval") or getattr(step.spec, "subliminal", None):
            continue  # a subliminal prompt is built when the eval runs: its own line says it (sublim.evals.subliminal)
        text = step.spec.system_prompt
        subject = cfg.teacher if step.stage == "eval" and getattr(cfg.eval, "subject", "student") == "teacher" \
            else cfg.student
        left = subject.system_prompt is None and subject.reference is None
        default = (template_system_prompt(subject.path, subject.revision, cfg.paths.artifacts, hub=True)
                   if left else None)
        if left and default is not None and text in (None, default):  # a hub model's is not keyed, only shown
            out[step.stage] = {"text": default, "source": "chat template"}
        else:
            out[step.stage] = {"text": text, "source": "config"}
    return out


def describe(prompts: dict[str, dict]) -> list[str]:
    """Summary lines: one per distinct system prompt, naming the stages that used it and its source."""
    lines = []
    for text, source in dict.fromkeys((p["text"], p["source"]) for p in prompts.values()):
        stages = ", ".join(s for s, p in prompts.items() if (p["text"], p["source"]) == (text, source))
        where = (" (inserted by the model's chat template: its system_prompt is null)"
                 if source == "chat template" else "")
        lines.append(f"   system prompt ({stages}): {'none' if text is None else repr(text)}{where}")
    return lines
