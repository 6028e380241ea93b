"""The code generator's one templating mechanism: ``${name}`` placeholders.

Kernel modules are written as templates (templates/*.py.txt; a few one-line fragments are string constants
next to their use) and filled with :func:`render` / :func:`fill`:

* a placeholder alone on its line takes a block of code: each line of the value is indented to the
  placeholder's column, and an empty value removes the line;
* any other placeholder is replaced in place (a value of several lines, such as a wrapped parameter list,
  carries the indentation of its continuation lines).

Every placeholder needs a value and every value must be used, so a template and its generator cannot drift
apart silently.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["render", "fill", "template"]

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_BLOCK = re.compile(r"^( *)\$\{(\w+)\} *$")


@functools.lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of templates/NAME.py.txt."""
    return resources.files(__package__).joinpath("templates", f"{name}.py.txt").read_text()


def render(name: str, /, **values) -> str:
    """templates/NAME.py.txt with its placeholders filled (without its final newline)."""
    return _fill(template(name), values, name).rstrip("\n")


def fill(text: str, /, **values) -> str:
    """`text` with its placeholders filled (see the module docstring)."""
    return _fill(text, values, repr(text[:40]))


def _fill(text: str, values: dict, _where: str) -> str:
    used: set[str] = set()

    def value(key: str) -> str:
        if key not in values:
            raise KeyError(f"template {_where}: no value for ${{{key}}}")
        used.add(key)
        return str(values[key])

    out: list[str] = []
    for line in text.split("\n"):
        block = _BLOCK.match(line)
        if block:
            pad, v = block.group(1), value(block.group(2)).rstrip("\n")
            out += [pad + x if x else x for x in v.split("\n")] if v else []
        else:
            out.append(_PLACEHOLDER.sub(lambda m: value(m.group(1)), line))
    unused = set(values) - used
    if unused:
        raise KeyError(f"template {_where}: no placeholder for {sorted(unused)}")
    return "\n".join(out)
