"""One name per concept: the README's glossary names every stage, eval kind, domain and Make target,
and nothing shipped (YAMLs, README examples) uses a spelling that sublim.aliases rewrites."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sublim.aliases import rewrite
from sublim.domains import KNOWN as DOMAINS
from sublim.evals import KINDS
from sublim.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OVERRIDE = re.compile(r"[+~]{0,2}[A-Za-z_][\w@./-]*=[^\s`'\"|)]+")


def glossary() -> str:
    start = README.index("### Glossary")
    return README[start:README.index("\n### ", start + 1)]


def make_targets() -> list[str]:
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    return phony.split(":", 1)[1].split()


@pytest.mark.parametrize("kind,names", [("stage", list(STAGES)), ("eval kind", list(KINDS)),
                                        ("domain", list(DOMAINS)), ("Make target", make_targets())])
def test_the_glossary_names_each(kind, names):
    missing = [n for n in names if f"`{n}`" not in glossary()]
    assert not missing, f"add these {kind}s to the README's glossary: {missing}"


def old_spellings(text: str) -> list[str]:
    return [tok for tok in OVERRIDE.findall(text) if rewrite(tok)[1]]


def test_no_readme_example_uses_an_old_spelling():
    aliases = README.index("**Old spellings**")
    text = README[:aliases] + README[README.index("\n###", aliases):]  # all but the table of old spellings
    assert old_spellings(text) == []


@pytest.mark.parametrize("path", sorted((ROOT / "sublim" / "conf").rglob("*.yaml")),
                         ids=lambda p: p.relative_to(ROOT / "sublim" / "conf").as_posix())
def test_no_shipped_yaml_uses_an_old_spelling(path):
    text = path.read_text()
    groups = re.findall(r"^\s*-\s*(?:override\s+)?/?([\w@.]+):\s*(\S+)", text, flags=re.M)  # defaults entries
    params = re.findall(r"^\s+([\w@.]+):\s*([\w.,-]+)\s*$", text, flags=re.M)  # sweeper params
    spelt = [f"{k}={v}" for k, v in groups + params] + OVERRIDE.findall(text)
    assert [s for s in spelt if rewrite(s)[1]] == []


def test_the_check_itself_catches_an_old_spelling():
    assert old_spellings("run `sublim teacher=tiny filter.shuffle=within`") == ["teacher=tiny", "filter.shuffle=within"]
