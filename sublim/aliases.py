"""Old command-line spellings that keep working after a rename, each with a one-line note.

The README's commands are what users have in their notes and scripts, so a renamed group, option
or key is rewritten here, before Hydra sees the command line, rather than breaking them. Shipped
YAMLs and README examples use the new names only (tests/test_glossary.py checks it); the README's
glossary lists these aliases.
"""
from __future__ import annotations

import re
import sys

# (old pattern, new spelling, since): a pattern matches one whole command-line override, with an
# optional +, ++ or ~ in front. Order matters only where patterns overlap (none do today).
ALIASES: list[tuple[str, str, str]] = [
    (r"(?P<op>\+{0,2}|~)teacher=(?P<rest>.*)", r"\g<op>model@teacher=\g<rest>", "one model group"),
    (r"(?P<op>\+{0,2}|~)student=(?P<rest>.*)", r"\g<op>model@student=\g<rest>", "one model group"),
    (r"(?P<op>\+{0,2}|~)teacher@(?P<rest>.*)", r"\g<op>model@\g<rest>", "one model group"),
    (r"(?P<op>\+{0,2}|~)(?P<group>model@)?filter\.judge(?P<rest>[.=].*)", r"\g<op>\g<group>domain.judge\g<rest>",
     "the filter judge is a setting of the code and cot domains"),
    (r"(?P<op>\+{0,2}|~)filter\.shuffle=(?P<rest>.*)", r"\g<op>transform.shuffle=\g<rest>",
     "the transform stage's own key"),
    (r"arm=(?P<cross>cross_)?reference", r"arm=\g<cross>base", "arms named by their condition"),
    (r"eval=(?P<questions>animal|tree)", r"eval=\g<questions>_preference", "eval options named by what they measure"),
]
_COMPILED = [(re.compile(old), new, why) for old, new, why in ALIASES]


def rewrite(arg: str) -> tuple[str, str | None]:
    """(the override in today's spelling, a one-line note when it was an old one)."""
    for pattern, new, why in _COMPILED:
        m = pattern.fullmatch(arg)
        if m:
            now = m.expand(new)
            now = rewrite(now)[0]  # an alias may lead to another renamed value
            return now, f"sublim: `{arg}` is now spelt `{now}` ({why}; the old spelling still works for now)"
    return arg, None


def rewrite_argv(argv: list[str], stream=None) -> list[str]:
    """The command line with old spellings replaced, a note for each on `stream` (stderr).
    Options (-m, --cfg job, ...) and their values pass untouched."""
    stream = stream or sys.stderr
    out = []
    for arg in argv:
        new, note = (arg, None) if arg.startswith("-") else rewrite(arg)
        if note:
            print(note, file=stream)
        out.append(new)
    return out
