"""Labels whose glyphs the figure font lacks (Chinese or Arabic trait names, emoji): never boxes.

Matplotlib draws a character its font lacks as an empty box and only says so in a warning about
"Glyph ... missing". Before a figure is saved, `fit_text` reads every text in it (titles, tick
labels, legends, annotations), and for each character the default font lacks looks up an installed
font that has it (matplotlib's font manager; its "Last Resort" font, which draws boxes, does not
count); those fonts become fallbacks of the figure's texts (matplotlib >= 3.6 draws each glyph
from the first font that has it). A character no installed font covers is drawn as a readable
escape (鸟 -> \\u9e1f) and a MissingGlyphWarning names the characters. A "$" is escaped as well,
so a name never turns into (possibly unparsable) mathtext.
"""
from __future__ import annotations

import functools
import unicodedata
import warnings
from pathlib import Path

import matplotlib.font_manager as fm
from matplotlib import rcParams
from matplotlib.text import Text
from matplotlib.ticker import Formatter

# fonts that cannot stand in for a missing letter: boxes for everything, TeX encodings, size variants
NOT_FALLBACKS = ("Last Resort", "cm", "STIXNonUnicode", "STIXSize", "DejaVu Math")


class MissingGlyphWarning(UserWarning):
    """No installed font has some characters of a figure's labels: they are drawn as escapes."""


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:  # noqa: BLE001 - an unreadable font file covers nothing
        return frozenset()


@functools.lru_cache(maxsize=None)
def _primary() -> tuple[str, str]:
    """(family name, file) of the font text gets by default."""
    path = fm.findfont(fm.FontProperties(family=rcParams["font.family"]))
    try:
        name = fm.FontProperties(fname=path).get_name()
    except Exception:  # noqa: BLE001
        name = "DejaVu Sans"
    return name, path


@functools.lru_cache(maxsize=None)
def _fallbacks() -> tuple[tuple[str, str], ...]:
    """(family, file) of every installed font that may stand in, regular faces first, by name."""
    seen, out = set(), []
    for f in sorted(fm.fontManager.ttflist, key=lambda f: (f.style != "normal", f.weight != 400, f.name, f.fname)):
        if f.name.startswith(NOT_FALLBACKS) or f.name in seen:
            continue
        seen.add(f.name)
        out.append((f.name, f.fname))
    return tuple(out)


def _drawn(ch: str) -> bool:
    """A character that needs a glyph (not a space or a control character)."""
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")


def plan(texts: list[str]) -> tuple[list[str], set[str]]:
    """(font families to draw `texts` with, first the default one; characters no font has)."""
    name, path = _primary()
    have = _charmap(path)
    missing = sorted({ch for t in texts for ch in t if _drawn(ch) and ord(ch) not in have})
    if not missing:
        return [name], set()
    families, uncovered = [name], set()
    for ch in missing:
        font = next((fam for fam, fpath in _fallbacks() if fam in families and ord(ch) in _charmap(fpath)), None) \
            or next((fam for fam, fpath in _fallbacks() if ord(ch) in _charmap(fpath)), None)
        if font is None:
            uncovered.add(ch)
        elif font not in families:
            families.append(font)
    return families, uncovered


def escape(text: str, uncovered: set[str]) -> str:
    """`text` with characters no font has as \\uXXXX and "$" kept literal (no mathtext)."""
    out = []
    for i, ch in enumerate(text):
        if ch in uncovered:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        elif ch == "$" and not (i and text[i - 1] == "\\"):  # escaped once: a second pass changes nothing
            out.append("\\$")
        else:
            out.append(ch)
    return "".join(out)


class _Escaping(Formatter):
    """Another formatter's tick labels, escaped (tick labels are made at draw time)."""

    def __init__(self, inner: Formatter, uncovered: set[str]):
        self.inner, self.uncovered = inner, uncovered

    def set_axis(self, axis) -> None:
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def set_locs(self, locs) -> None:
        self.inner.set_locs(locs)

    def get_offset(self) -> str:
        return escape(self.inner.get_offset(), self.uncovered)

    def __call__(self, x, pos=None) -> str:
        return escape(str(self.inner(x, pos)), self.uncovered)

    def format_ticks(self, values) -> list[str]:
        return [escape(str(s), self.uncovered) for s in self.inner.format_ticks(values)]


def _tick_labels(axis) -> list[str]:
    try:
        return [str(s) for s in axis.get_major_formatter().format_ticks(axis.get_majorticklocs())]
    except Exception:  # noqa: BLE001 - a formatter that needs a draw first: its labels are numbers
        return []


def fit_text(fig, name: str = "figure") -> list[str]:
    """Make every text of `fig` drawable (see the module docstring); returns the fallback families
    used. Call before saving."""
    texts = [t for t in fig.findobj(match=Text) if t.get_text()]
    axes = [a for ax in fig.axes for a in (ax.xaxis, ax.yaxis)]
    ticks = {a: _tick_labels(a) for a in axes}
    families, uncovered = plan([t.get_text() for t in texts] + [s for labels in ticks.values() for s in labels])
    for t in texts:
        fixed = escape(t.get_text(), uncovered)
        if fixed != t.get_text():
            t.set_text(fixed)
    for a, labels in ticks.items():
        if any(escape(s, uncovered) != s for s in labels):
            a.set_major_formatter(_Escaping(a.get_major_formatter(), uncovered))
    if len(families) > 1:
        for t in fig.findobj(match=Text):
            t.set_fontfamily(families)
    if uncovered:
        chars = "".join(sorted(uncovered))
        warnings.warn(f"{name}: no installed font has {len(uncovered)} character(s) of its labels "
                      f"({escape(chars[:12], uncovered)}{'...' if len(chars) > 12 else ''}): drawn as escapes; "
                      "install a font that covers them (e.g. Noto Sans CJK for Chinese) to draw them",
                      MissingGlyphWarning, stacklevel=2)
    return families[1:]


def fit_and_save(fig, path: Path, **savefig_kwargs) -> Path:
    fit_text(fig, Path(path).name)
    fig.savefig(path, **savefig_kwargs)
    return path
