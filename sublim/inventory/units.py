"""Sizes as people read them (538.0 MB; ages: sublim.terminal.ago), shared by the reasons refs gives, the
lines prune says and the listings; a leaf module so each of those can use it without importing the
others.
"""
from __future__ import annotations


def human(n: float) -> str:
    """Bytes in decimal units: 538.0 MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


