"""Changing the code a stage runs changes its key: a recorded hash per stage over the modules it
reaches (sublim.codeversion) fails until the stage's VERSION is bumped or the change is declared
output-neutral."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from sublim import codeversion
from sublim.stages import STAGES


def test_every_stage_matches_its_recorded_code():
    assert codeversion.problems() == []


@pytest.fixture
def copy(tmp_path):
    """sublim's Python modules and its code record, copied to edit."""
    root = tmp_path / "sublim"
    shutil.copytree(codeversion.ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "conf", "data"))
    return root


def edit_function(path: Path, name_part: str, statement: str = "_edited = 1") -> str:
    """Put a statement at the top of the first function whose name contains name_part."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and name_part in n.name)
    fn.body.insert(0, ast.parse(statement).body[0])
    path.write_text(ast.unparse(tree))
    return fn.name


def bump(root: Path, stage: str) -> None:
    path = root / (STAGES[stage].split(".", 1)[1].replace(".", "/") + ".py")
    text = path.read_text()
    v = codeversion.stage_version(stage, root)
    path.write_text(text.replace(f"VERSION = {v}", f"VERSION = {v + 1}", 1))


def test_editing_the_numbers_rule_without_a_version_bump_fails(copy):
    assert codeversion.problems(copy) == []
    edited = edit_function(copy / "domains" / "numbers.py", "format_reject")
    found = codeversion.problems(copy)
    filter_line = next((p for p in found if p.startswith("filter:")), None)
    assert filter_line and "sublim.domains.numbers" in filter_line and "bump VERSION" in filter_line, (edited, found)
    assert not any(p.startswith(("finetune:", "transform:")) for p in found)  # they never run the rule
    bump(copy, "filter")
    assert not any(p.startswith("filter:") for p in codeversion.problems(copy))


def test_docstrings_and_comments_are_free(copy):
    path = copy / "domains" / "numbers.py"
    path.write_text(path.read_text().replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")
    assert codeversion.problems(copy) == []


def test_a_registry_member_counts(copy):
    """The code domain is reached through the domain registry's strings, not an import."""
    edit_function(copy / "domains" / "code.py", "make_prompts")
    stages = {p.split(":")[0] for p in codeversion.problems(copy)}
    assert {"sample", "filter"} <= stages and "finetune" not in stages


def test_record_refuses_an_unbumped_change_unless_declared_neutral(copy):
    edit_function(copy / "stages" / "transform.py", "run")
    with pytest.raises(SystemExit, match="transform: code changed"):
        codeversion.record(root=copy)
    codeversion.record(neutral="a log line only", root=copy)
    rec = json.loads((copy / codeversion.RECORD).read_text())
    assert rec["neutral"][-1]["stage"] == "transform" and rec["neutral"][-1]["why"] == "a log line only"
    assert codeversion.problems(copy) == []
