"""The errors sublim expects and reports in one line (a leaf module: anything may import it).

`sublim` prints an expected failure as one line (what, which key or path, the fix) and exits
non-zero; the stack only with SUBLIM_DEBUG=1. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


class StageError(RuntimeError):
    """A stage that cannot produce its artifact for a reason the user can fix (too little data
    passed the filter, a model that cannot be found); the message says what and how."""

    @property
    def kind(self) -> str:
        """The error's name as printed (FilterError, ...)."""
        return type(self).__name__


class ModelLoadError(StageError):
    """A model, adapter or tokenizer the loaders could not read (a hub id that cannot be fetched, a
    folder without its files). `path` is what the loader was given; the job names the config key."""

    def __init__(self, path: str, what: str, reason: str):
        self.path, self.what, self.reason = path, what, reason
        super().__init__(f"cannot load the {what} {path}: {reason}")

    def __reduce__(self):  # pickles (a pool worker's result) with its fields
        return type(self), (self.path, self.what, self.reason)


class ReportedStageError(StageError):
    """An expected failure of a stage that ran in its own process (sublim.isolate), as it reported it."""

    def __init__(self, kind: str, message: str):
        self._kind = kind
        super().__init__(message)

    @property
    def kind(self) -> str:
        return self._kind

    def __reduce__(self):
        return type(self), (self._kind, str(self))


def debug() -> bool:
    """SUBLIM_DEBUG=1: expected failures print their stack too (an environment variable, not a config
    key: it changes no cache key)."""
    return os.environ.get("SUBLIM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def first_line(text: object, limit: int = 400) -> str:
    """The first non-blank line of `text`, at most `limit` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
