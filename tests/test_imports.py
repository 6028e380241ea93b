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


# -- start-up: the commands that need no kernel import neither torch nor triton (issue 18) ----------------
# Measured in a fresh process, through sys.modules, not by timing (benchmarks/cli_startup.py times it).

_PROBE = """
import sys
from attnpat.cli import main
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        status = main(sys.argv[1:])
    except SystemExit as exc:
        status = exc.code
print(status, *[m for m in ("torch", "triton") if m in sys.modules])
"""

_LIGHT_COMMANDS = [
    ["--help"], ["--version"], ["check"], ["check", "document_sliding_window", "--set", "window=8"], ["list"],
    ["explain", "sliding_window", "--q-len", "4096"], ["show", "sliding_window", "--q-len", "300"],
    ["show", "dilated", "--q-len", "100000", "--width", "16", "--height", "8"],
]


def _probe(argv: list[str], env: dict) -> str:
    import os
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.parametrize("argv", _LIGHT_COMMANDS, ids=lambda a: " ".join(a))
def test_light_commands_import_neither_torch_nor_triton(argv):
    # TRITON_INTERPRET is set (tests/conftest.py sets it, so the child inherits it): the backend choice at
    # `import attnpat` is then already made without torch.
    assert _probe(argv, {"TRITON_INTERPRET": "1"}) == "0"


def test_light_commands_without_triton_interpret_set():
    import os
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    import subprocess
    proc = subprocess.run([sys.executable, "-c", _PROBE, "check", "causal"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"


def test_png_and_verify_import_their_optional_dependencies_lazily():
    modules = package_modules()
    for name in ("attnpat.draw", "attnpat.verify", "attnpat.cli.show", "attnpat.cli.verify"):
        tree = ast.parse(modules[name].read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        assert not top & {"matplotlib", "hypothesis"}, name


def test_every_package_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"] if tomllib else None
    if config is None:
        pytest.skip("needs tomllib (Python 3.11+)")
    found = {name for name, path in package_modules().items() if path.name == "__init__.py"}
    assert found == set(config["packages"]), "pyproject.toml [tool.setuptools] packages must list every package"
