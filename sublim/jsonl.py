"""JSON-lines files: the format of every data set sublim writes (open with pandas.read_json(lines=True)).

Reading never lets a raw decoder error out. `read_jsonl` yields one dict per non-blank line and
raises `JsonlError` (a ValueError) naming the file and the 1-based line for anything else: bytes
that are not UTF-8, text that is not JSON (or nested too deeply to decode), JSON that is not an
object. `complete_prefix` (resuming a work file) never raises on content: it keeps the rows
before the first line that is torn (no final newline) or unreadable in any of those ways, and
cuts the file there, so what follows is computed again.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Optional

log = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"


class JsonlError(ValueError):
    """A line of a JSONL file that is not one JSON object; `path` and `line` (1-based) name it."""

    def __init__(self, path: str | Path, line: int, problem: str):
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


def _parse_line(raw: bytes) -> tuple[Optional[dict], str]:
    """(the row, "") for a line holding one JSON object, else (None, what is wrong with it)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start}): {raw[:80]!r}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg}): {text[:80]!r}"
    except RecursionError:
        return None, f"JSON nested too deeply to read: {text[:80]!r}"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object: {text[:80]!r}"
    return row, ""


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """The rows of a JSONL file, one dict per non-blank line; JsonlError for any other line.

    Lines end at b"\\n" only; a UTF-8 byte-order mark at the start of the file is ignored."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            row, problem = _parse_line(raw)
            if row is None:
                raise JsonlError(path, n, problem)
            yield row


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def complete_prefix(path: Path) -> list[dict]:
    """The rows a killed writer finished; the file is cut after them.

    A torn last line (no final newline) is cut off silently. A complete line that is not one JSON
    object (corruption, not an interrupted write) ends the prefix too, with a warning naming the
    file and line: it and everything after it are cut and computed again. Never raises on content.
    """
    if not path.exists():
        return []
    rows, good_bytes = [], 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            row, problem = _parse_line(line)
            if row is None:
                log.warning("%s:%d: %s; resuming from the row before it (the rest is cut and recomputed)",
                            path, n, problem)
                break
            rows.append(row)
            good_bytes += len(line)
    with open(path, "r+b") as f:
        f.truncate(good_bytes)
    return rows
