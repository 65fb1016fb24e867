"""Text for people at a terminal, shared by the commands that print (sublim-report, sublim-status,
sublim-store) and the cell-state reasons: a stdlib leaf, so the light commands stay light.

`console` makes any text printable on the stream's encoding (an ASCII terminal, a log file), with
common typography spelled in ASCII and anything else as a backslash escape; `ago` says a duration
the way the status lines do.
"""
from __future__ import annotations

import sys

ASCII = str.maketrans({"—": "--", "–": "-", "−": "-", "→": "->", "·": "|", "×": "x", "†": "+", "…": "...",
                       "≥": ">=", "≤": "<=", "±": "+/-", "\u00a0": " "})


def console(text: str, stream=None) -> str:
    """`text` as `stream` (default: stdout) can encode it: as is if it can, else typography in
    ASCII and any other character that does not fit as a backslash escape."""
    enc = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    try:
        return text.translate(ASCII).encode(enc, "backslashreplace").decode(enc)
    except LookupError:
        return text.translate(ASCII).encode("ascii", "backslashreplace").decode("ascii")


def safe_streams() -> None:
    """Whatever else prints (warnings, logging) must not fail on an ASCII terminal either."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def ago(seconds: float) -> str:
    """A duration for a status line: 45 s, 12 min, 3.5 h, 2.0 d."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
