"""No import cycles inside the package: no module imports (at any depth, lazily or not) a module that imports it.

The import graph is read from the source with `ast`, without importing anything: an edge A -> B for every
`import` or `from ... import` in A (inside functions too: a lazy import is still a dependency) that names a
module of the package (`from .. import compile` is an edge to the package's __init__). Importing a submodule
also runs its package's __init__ first, but that implicit edge is not counted: a package may import its own
submodules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:   # pragma: no cover
    tomllib = None

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, Path]:
    if tomllib is None:
        pytest.skip("needs tomllib (Python 3.11+)")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def package_modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> source file."""
    modules: dict[str, Path] = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()

        def add(target: str) -> None:
            while target and target not in modules:    # `from .x import name`: name is not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)

        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in modules else base)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}     # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_the_package():
    modules = package_modules()
    assert {"attnpat", "attnpat.cli", "attnpat.cli.arguments", "attnpat.compiler.parse", "attnpat.verify",
            "attnpat.runtime.kernel"} <= set(modules)
    graph = import_graph(modules)
    assert "attnpat.compiler.parse" in graph["attnpat.cli.arguments"]
    assert "attnpat.cli.arguments" in graph["attnpat.cli.check"]


def test_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph(package_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
