"""No import cycle among sublim's modules, counting imports inside functions (TYPE_CHECKING ones
excepted): registries and errors live in leaf modules."""
from __future__ import annotations

from sublim import codeversion


def test_sublim_has_no_import_cycle():
    assert codeversion.cycles(codeversion.import_graph()) == []


def test_a_cycle_through_a_function_local_import_is_found(tmp_path):
    pkg = tmp_path / "sublim"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from sublim import b\n")
    (pkg / "b.py").write_text("def f():\n    from sublim.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sublim import a\n")
    assert codeversion.cycles(codeversion.import_graph(pkg)) == [["sublim.a", "sublim.b"]]


def test_registries_and_errors_are_leaves():
    graph = codeversion.import_graph()
    for leaf in ("sublim.errors", "sublim.spec", "sublim.stages", "sublim.domains", "sublim.backends"):
        assert graph[leaf] <= {"sublim.spec", "sublim.errors"}, (leaf, graph[leaf])
