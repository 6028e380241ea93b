"""`attnpat list`: library patterns (or a file's) with their parameters and a one-line summary."""

from __future__ import annotations

import argparse
import re

from ..compiler import nodes as N
from ..compiler.unparse import unparse_expr
from ..library import library_names, locate, module_name, resolve_library, split_spec
from .arguments import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="list the patterns of these files (default: the library)")


def _comment_block_above(lines: list[str], index: int) -> list[str]:
    """The comment lines just above line `index` (0-based), skipping blank lines between them and it."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    block = []
    while i >= 0 and lines[i].lstrip().startswith("#"):
        block.append(lines[i].lstrip()[1:].strip())
        i -= 1
    return block[::-1]


def _leading_comment(lines: list[str]) -> list[str]:
    """The comment lines at the top of a file."""
    block = []
    for line in lines:
        if line.lstrip().startswith("#"):
            block.append(line.lstrip()[1:].strip())
        elif line.strip() or block:
            break
    return block


def _first_paragraph(block: list[str]) -> str:
    words = []
    for line in block:
        if not line:
            if words:
                break
            continue
        words.append(line)
    return " ".join(words)


def _shorten(text: str, limit: int = 110) -> str:
    m = re.search(r"(\.|;)(\s+[A-Z(]|\s*$)", text)    # the first sentence ("e.g. x" does not end one)
    if m:
        text = text[:m.start() + 1].rstrip(";")
    if len(text) <= limit:
        return text
    cut = text[:limit - 3].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "..."


def summary(definition: N.PatternDef) -> str:
    """A one-line description of a pattern, from the comments of its file.

    Uses, in order: the pattern's entry in a "Patterns:" list of the file's header comment, the comment
    directly above the pattern (unless it is an "Example:"), or the file's first comment paragraph.
    A leading "name -- " is dropped.
    """
    if definition.span is None:
        return ""
    lines = definition.span.source.text.splitlines()
    header = _leading_comment(lines)
    for entry in header:
        m = re.match(rf"{re.escape(definition.name)}\([^)]*\)\s+(.+)", entry)
        if m:
            return _shorten(m.group(1))
    above = _comment_block_above(lines, definition.span.line - 1)
    text = _first_paragraph(above)
    if not text or text.lower().startswith("example"):
        text = _first_paragraph(header)
    text = re.sub(r"^[\w.]+\s+--\s+", "", text)
    return _shorten(text)


def _signature(p: N.PatternDef) -> str:
    params = ", ".join(f"{x.name}: {x.type}" + ("" if x.default is None else f" = {unparse_expr(x.default)}")
                       for x in p.params)
    return f"{p.name}({params})"


def _inputs(module: N.Module, definition: N.PatternDef, seen: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """The runtime inputs a pattern needs: (name, axis, the pattern declaring it), its own first, then those
    of the patterns it calls (in its file, else in the library), as the checker resolves them."""
    own = [(s.name, s.axis, definition.name) for s in definition.body if isinstance(s, N.InputDecl)]
    out, names = list(own), {name for name, _, _ in own}
    local = {p.name: p for p in module.patterns}
    for node in N.walk(definition.body):
        if not isinstance(node, N.Call) or node.func in seen or node.func == definition.name:
            continue
        if node.func in local:
            callee = (module, local[node.func])
        else:
            callee = resolve_library(node.func) if node.func in _library_set() else None
        if callee is None:
            continue
        for name, axis, where in _inputs(*callee, seen | {definition.name}):
            if name not in names:
                names.add(name)
                out.append((name, axis, where))
    return out


def _library_set() -> frozenset[str]:
    return frozenset(library_names())


def _entries(files: list[str]) -> list[tuple[N.Module, N.PatternDef, str]]:
    if not files:
        out = []
        for name in library_names():
            module, d = resolve_library(name)
            out.append((module, d, module_name(module)))
        return out
    out = []
    for f in files:
        module, _ = locate(split_spec(f)[0])
        out.extend((module, d, module_name(module)) for d in module.patterns)
    return out


def _run(args: argparse.Namespace) -> int:
    for module, d, where in _entries(args.files):
        inputs = _inputs(module, d)
        line = _signature(d)
        shown = [f"{name}: int[{axis}]" + ("" if owner == d.name else f" (from {owner})")
                 for name, axis, owner in inputs]
        # float inputs feed score terms, and a pattern with score terms cannot be called: only its own count
        shown += [f"{s.name}: float[{s.axis}]" for s in d.body if isinstance(s, N.FloatInputDecl)]
        if shown:
            line += "  input " + ", ".join(shown)
        print(f"{line}  [{where}]")
        text = summary(d)
        if text:
            print(f"    {text}")
    return 0


COMMAND = Command("list", "list library patterns (or a file's) with their parameters and a summary", _configure, _run)
