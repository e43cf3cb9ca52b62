"""The package's import graph has no cycles, so a reader can follow any module down without meeting it again.

Every import statement counts, at module level or inside a function: ``from a.b import c`` is an edge to
``a.b.c`` when that is a module, else to ``a.b`` (for a package: its ``__init__``, which is why the version lives in
``normalcy.version`` and nothing inside imports the top-level package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import normalcy

ROOT = Path(normalcy.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """Each normalcy module and the normalcy modules its import statements name."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (f, is_pkg) in mods.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                for alias in node.names:
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_inside_imports_the_top_level_package() -> None:
    graph = import_graph()
    assert [m for m, deps in graph.items() if "normalcy" in deps] == []


def test_at_least_four_subpackages() -> None:
    subpackages = [p.parent.name for p in ROOT.glob("*/__init__.py")]
    assert len(subpackages) >= 4, subpackages
