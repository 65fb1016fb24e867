"""Code versioning of stages: changing the code a stage runs changes that stage's key.

A stage's code is its module and every sublim module it reaches: imports (top-level or inside
functions; `if TYPE_CHECKING:` ones excepted) and the module names registries hold as strings
("sublim.domains.code:DOMAIN"), transitively. Its hash is taken over each module's syntax tree
without docstrings, so comments, docstrings and formatting are free. `sublim/stages/code.json`
records, per stage, the VERSION and the hash it was checked at; `tests/test_stage_code.py` fails
when a hash moved and the VERSION did not, until one of:

    bump VERSION in the stage's module (its key changes: its old results recompute), then
        python -m sublim.codeversion record
    or declare the change output-neutral (a refactor, a log line), with the reason kept in code.json:
        python -m sublim.codeversion record --neutral "why the output cannot change"

`python -m sublim.codeversion` (check) lists what moved and the modules that did.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Optional

from sublim.stages import STAGES

ROOT = Path(__file__).resolve().parent  # the sublim package
RECORD = "stages/code.json"
_MODULE_STRING = re.compile(r"^(sublim(?:\.\w+)+)(?::\w+)?$")


def modules(root: Path = ROOT) -> dict[str, Path]:
    pkg = root.name
    out = {}
    for f in root.rglob("*.py"):
        parts = [pkg, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _type_checking(tree: ast.AST) -> set[int]:
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for b in n.body:
                skip.update(id(x) for x in ast.walk(b))
    return skip


def _resolve(name: str, known: dict[str, Path]) -> Optional[str]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT, strings: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body). With `strings`, also the
    modules named by string constants (registries), which is what a stage can reach at run time."""
    known = modules(root)
    pkg = root.name
    edges: dict[str, set[str]] = {m: set() for m in known}
    for m, f in known.items():
        is_pkg = f.name == "__init__.py"
        tree = ast.parse(f.read_text(), str(f))
        skip = _type_checking(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            named = False  # a module named by a string: a registry entry, even of the package's own
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = m.split(".") if is_pkg else m.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _MODULE_STRING.match(node.value)
                targets, named = ([match.group(1)] if match else []), True
            for t in targets:
                if t.split(".")[0] != pkg:
                    continue
                r = _resolve(t, known)
                # a package importing its own submodules re-exports them: no edge (but a registry's is one)
                if r and r != m and (named or not r.startswith(m + ".")):
                    edges[m].add(r)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def reach(stage_module: str, root: Path = ROOT, edges: Optional[dict[str, set[str]]] = None) -> list[str]:
    """Every module the stage's module can run: imports and registry strings, transitively."""
    edges = edges if edges is not None else import_graph(root, strings=True)
    seen, todo = {stage_module}, [stage_module]
    while todo:
        for n in edges[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return sorted(seen)


def _code(path: Path) -> str:
    """The module's syntax tree without docstrings: what runs, not what explains it."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def code_hash(stage: str, root: Path = ROOT, edges: Optional[dict[str, set[str]]] = None) -> tuple[str, list[str]]:
    """(hash, modules) of the code stage `stage` runs, in the package at `root`."""
    known = modules(root)
    mods = reach(STAGES[stage].replace("sublim", root.name, 1), root, edges)
    h = hashlib.sha256()
    for m in mods:
        h.update(m.encode() + b"\0" + _code(known[m]).encode() + b"\0")
    return h.hexdigest()[:16], mods


def stage_version(stage: str, root: Path = ROOT) -> int:
    """The VERSION a stage module declares, read from its source (no import: `root` may be a copy)."""
    path = modules(root)[STAGES[stage].replace("sublim", root.name, 1)]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "VERSION" for t in node.targets):
            return int(ast.literal_eval(node.value))
    raise ValueError(f"{path}: no VERSION")


def read_record(root: Path = ROOT) -> dict:
    p = root / RECORD
    return json.loads(p.read_text()) if p.exists() else {"stages": {}, "neutral": []}


def problems(root: Path = ROOT) -> list[str]:
    """One line per stage whose code moved since it was recorded while its VERSION stayed."""
    rec = read_record(root)["stages"]
    edges = import_graph(root, strings=True)
    out = []
    for stage in STAGES:
        h, mods = code_hash(stage, root, edges)
        version = stage_version(stage, root)
        was = rec.get(stage)
        if was is None:
            out.append(f"{stage}: not recorded; run `python -m sublim.codeversion record`")
        elif was["code"] != h and was["version"] == version:
            moved = [m for m in mods if was.get("modules", {}).get(m) != _module_hash(root, m)]
            out.append(f"{stage}: its code changed ({', '.join(moved) or 'the set of modules it reaches'}) but "
                       f"VERSION is still {version}: bump VERSION in {STAGES[stage].replace('.', '/')}.py, or declare "
                       "it output-neutral with `python -m sublim.codeversion record --neutral \"why\"`")
        elif was["version"] != version and was["code"] == h:
            out.append(f"{stage}: VERSION moved to {version} with no code change recorded; run "
                       "`python -m sublim.codeversion record`")
    return out


def _module_hash(root: Path, module: str) -> str:
    return hashlib.sha256(_code(modules(root)[module]).encode()).hexdigest()[:12]


def record(neutral: Optional[str] = None, root: Path = ROOT) -> list[str]:
    """Record every stage's current hash; refuses a moved hash with an unchanged VERSION unless
    `neutral` says why the change cannot alter any output. Returns what it recorded."""
    rec = read_record(root)
    edges = import_graph(root, strings=True)
    done = []
    for stage in STAGES:
        h, mods = code_hash(stage, root, edges)
        version = stage_version(stage, root)
        was = rec["stages"].get(stage)
        if was and was["code"] == h and was["version"] == version:
            continue
        if was and was["version"] == version and was["code"] != h:
            if not neutral:
                raise SystemExit(f"{stage}: code changed but VERSION is still {version}; bump it, or pass "
                                 "--neutral \"why the output cannot change\"")
            rec["neutral"].append({"stage": stage, "version": version, "code": h, "why": neutral})
        rec["stages"][stage] = {"version": version, "code": h, "modules": {m: _module_hash(root, m) for m in mods}}
        done.append(f"{stage}: version {version}, code {h}")
    (root / RECORD).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="check", choices=["check", "record"])
    ap.add_argument("--neutral", help="record a code change without a VERSION bump, saying why no output changes")
    args = ap.parse_args()
    if args.command == "record":
        print("\n".join(record(args.neutral)) or "nothing changed")
        return
    found = problems()
    print("\n".join(found) or "every stage's code matches its recorded version")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
