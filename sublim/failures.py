"""Expected failures in one line: what went wrong, which config key or path, and the fix.

`explain(exc, dcfg)` turns an exception from a cell into a Failure, or None for a bug (which keeps
its stack). The entrypoint prints Failure.text; a sweep records Failure.line in outcome.json.
"""
from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sublim.errors import ConfigError, ModelLoadError, StageError, first_line

@dataclasses.dataclass
class Failure:
    """An expected failure as sublim reports it: `line` (outcome.json, the sweep's summary) and `text`
    (what a single cell prints: the line, or a stage error's whole message)."""

    line: str
    text: str


MODEL_KEYS = ("teacher", "student", "domain.judge.model", "eval.judge.model")
# the errno of a store that cannot be written (or read): a read-only or full filesystem, permissions
STORE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _select(dcfg: DictConfig, key: str):
    try:
        return OmegaConf.select(dcfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # a config too broken to read the key from: the error names no key then
        return None


def _same_path(value, path: str) -> bool:
    if not isinstance(value, str) or not value:
        return False
    if value == path:
        return True
    try:
        return os.path.exists(value) and Path(value).resolve() == Path(path).resolve()
    except OSError:
        return False


def _under(path, root: Path) -> bool:
    try:
        p = Path(os.fsdecode(path)).resolve()
    except (OSError, TypeError, ValueError):
        return False
    return p == root or root in p.parents


def _causes(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _stage_line(kind: str, message: str) -> str:
    """A stage error's first line; one that introduces what follows (`Examples:`) ends before that."""
    line = first_line(message)
    if line.endswith(":") and len(message.strip().splitlines()) > 1 and ". " in line:
        line = line[: line.rindex(". ") + 1]
    return f"{kind}: {line}"


def explain_model(e: ModelLoadError, dcfg: DictConfig) -> str:
    """A model that could not be loaded, named by its config key when it has one."""
    key = value = None
    for k in MODEL_KEYS:
        for field, what in (("path", ("model", "tokenizer")), ("adapter", ("adapter",))):
            v = _select(dcfg, f"{k}.{field}")
            if key is None and e.what in what and _same_path(v, e.path):
                key, value = f"{k}.{field}", v
    if key is None and e.what == "adapter" and _same_path(_select(dcfg, "trait.adapter"), e.path):
        key, value = "trait.adapter", _select(dcfg, "trait.adapter")
    reason = e.reason.rstrip(":. ")
    local = os.path.exists(e.path) or e.path.startswith(("/", ".", "~"))
    if local and e.what == "tokenizer" and Path(e.path).is_dir() and \
            not any((Path(e.path) / f).exists() for f in TOKENIZER_FILES):
        reason = f"no tokenizer files in it ({', '.join(TOKENIZER_FILES[:2])})"
    if key is None:  # an artifact of the store (a trained teacher, the reference model)
        return f"cannot load the {e.what} {e.path} ({reason})"
    if not local:
        revision = _select(dcfg, f"{key.rsplit('.', 1)[0]}.revision")
        rev = f" --revision {revision}" if revision else ""
        return (f"{key}={value}: cannot load the {e.what} ({reason}): it is not in the local HF cache; download it "
                f"where there is network (huggingface-cli download {value}{rev}), or point {key} at a local folder")
    needs = ("adapter_config.json and the adapter weights" if e.what == "adapter"
             else "config.json, the weights and the tokenizer files")
    return (f"{key}={value}: cannot load the {e.what} ({reason}): point {key} at a folder saved with "
            f"save_pretrained ({needs})")


def explain_store(e: OSError, root: Path) -> str:
    where = f"{e.strerror or e}: {os.fsdecode(e.filename)}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"paths.artifacts={root}: {where}: free space there, or point paths.artifacts at a folder with room"
    return (f"paths.artifacts={root}: {where}: point paths.artifacts at a folder this job can write "
            "(a cell whose stages are all cached only reads the store)")


def explain(e: BaseException, dcfg: DictConfig) -> Failure | None:
    """`e` as one line (what, which key or path, the fix) when it is an expected failure; None for a bug."""
    if isinstance(e, (ConfigError, OmegaConfBaseException)):
        return Failure(f"ConfigError: {first_line(e)}", f"config error: {e}")
    if isinstance(e, ModelLoadError):
        line = explain_model(e, dcfg)
        return Failure(f"ModelLoadError: {line}", f"error: {line}")
    if isinstance(e, StageError):
        return Failure(_stage_line(e.kind, str(e)), f"error: {e.kind}: {str(e).rstrip()}")
    artifacts = _select(dcfg, "paths.artifacts")
    if isinstance(artifacts, str):
        root = Path(artifacts).resolve()
        for x in _causes(e):
            if isinstance(x, OSError) and x.errno in STORE_ERRNOS and x.filename and _under(x.filename, root):
                line = explain_store(x, root)
                return Failure(f"{type(x).__name__}: {line}", f"error: {line}")
    return None


