"""Ranges of numeric config fields: how they are written and checked (a leaf: the schemas in
sublim.config and sublim.mnist.spec both declare theirs with `num`; the syntax is in sublim.config's
docstring)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

SEED_RANGE = "[0, 2**32)"  # numpy seeds are unsigned 32-bit integers


@dataclass(frozen=True)
class Range:
    """A parsed range spec (see the module docstring): lo/hi None where unbounded."""

    spec: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def is_any(self) -> bool:
        return self.spec == "any"

    def __contains__(self, x: float) -> bool:
        if self.is_any:
            return True
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        return "any number" if self.is_any else (f"in {self.spec}" if self.spec[0] in "[(" else self.spec)


def _end(text: str) -> float:
    text = text.strip()
    if "**" in text:
        base, power = text.split("**")
        return int(base) ** int(power)
    try:
        return int(text)
    except ValueError:
        return float(text)


@functools.lru_cache(maxsize=None)
def parse_range(spec: str) -> Range:
    """A range spec as a Range; a malformed spec raises ValueError (at import, where it is declared)."""
    s = spec.strip()
    try:
        if s == "any":
            return Range(s)
        for op in (">=", "<=", ">", "<"):
            if s.startswith(op):
                v = _end(s[len(op):])
                return Range(s, lo=v, lo_open=op == ">") if op[0] == ">" else Range(s, hi=v, hi_open=op == "<")
        if s[0] in "[(" and s[-1] in "])":
            lo, hi = (_end(x) for x in s[1:-1].split(","))
            if lo < hi:
                return Range(s, lo, hi, s[0] == "(", s[-1] == ")")
    except (ValueError, IndexError):
        pass
    raise ValueError(f"range spec {spec!r}: use '> a', '>= a', '< b', '<= b', '[a, b]' (parentheses for open "
                     "ends) or 'any'")


def ranged(spec: str, hint: str = "") -> dict:
    """The field metadata declaring a number's range (and a hint shown with an error)."""
    parse_range(spec)  # a malformed spec fails when its schema is defined
    return {"range": spec, "hint": hint}


def num(default: Any, spec: str, hint: str = "") -> Any:
    """A numeric dataclass field with its range: `lr: float = num(2e-4, "> 0", "the learning rate")`."""
    return field(default=default, metadata=ranged(spec, hint))


def shown(value: Any) -> str:
    """A value as a user would type it: 0 for 0.0, so the error echoes the override."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def range_problem(key: str, value: Any, metadata: Any) -> Optional[str]:
    """`key=value: must be ... (hint)` when value (or, for a list, an element) is outside the range
    declared in a field's metadata; None when it is inside, null, or no range is declared."""
    spec = metadata.get("range") if metadata else None
    if spec is None or value is None:
        return None
    r = parse_range(spec)
    items = value if isinstance(value, (list, tuple)) else [value]
    bad = [x for x in items if isinstance(x, (int, float)) and not isinstance(x, bool) and x not in r]
    if not bad:
        return None
    hint = f" ({metadata['hint']})" if metadata.get("hint") else ""
    if isinstance(value, (list, tuple)):
        return f"{key}=[{', '.join(map(shown, value))}]: each must be {r}{hint}; {', '.join(map(shown, bad))} is not"
    finite = "" if math.isfinite(value) else "finite and "
    return f"{key}={shown(value)}: must be {finite}{r}{hint}"
