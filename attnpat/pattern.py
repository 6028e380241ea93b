"""`Pattern`: a checked pattern with bound parameters -- what users hold and pass around."""

from __future__ import annotations

from .compiler import nodes as N
from .compiler.check import CheckedPattern, check_pattern
from .compiler.parse import parse_module
from .compiler.unparse import unparse
from .library import locate, pick_pattern, resolve_library, split_spec

__all__ = ["Pattern", "load", "parse"]


class Pattern:
    """A pattern ready to analyse, lower and run.

    Attributes:
        name: the pattern's name.
        params: bound parameter values (defaults with overrides applied).
        inputs: names of the runtime inputs it needs at call time, with their axes.
        checked: the closed, typed expression (stage 2's output).
    """

    def __init__(self, module: N.Module, name: str, params: dict[str, object] | None = None):
        self.module = module
        self.definition = next(p for p in module.patterns if p.name == name)
        self.checked: CheckedPattern = check_pattern(module, name, params, resolve_library)
        self._overrides = dict(params or {})

    @property
    def name(self) -> str:
        return self.checked.name

    @property
    def params(self) -> dict[str, object]:
        return dict(self.checked.params)

    @property
    def inputs(self) -> dict[str, str]:
        return {d.name: d.axis for d in self.checked.inputs}

    def with_params(self, **params) -> "Pattern":
        """Return the same pattern with some parameters changed."""
        return Pattern(self.module, self.name, {**self._overrides, **params})

    def source(self) -> str:
        """The pattern's definition as canonical text."""
        return unparse(self.definition)

    def expression(self) -> str:
        """The checked mask expression (parameters substituted, definitions inlined) as text."""
        return str(self.checked)

    def dense_mask(self, q_len: int, kv_len: int, *, batch: int = 1, heads: int = 1,
                   q_offset: int | None = None, **inputs):
        """Evaluate the mask on every (b, h, q, k): bool tensor [batch, heads, q_len, kv_len].

        Query row i sits at absolute position i + (kv_len - q_len), or i + q_offset when given.
        """
        from .reference import evaluate_dense
        return evaluate_dense(self.checked, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset,
                              inputs=inputs)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_show(v)}" for k, v in self.checked.params)
        return f"Pattern({self.name}({params}))"


def _show(v) -> str:
    if isinstance(v, frozenset):
        return "{" + ", ".join(map(str, sorted(v))) + "}"
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return repr(v)


def load(path_or_name: str, pattern: str | None = None, **params) -> Pattern:
    """Load a pattern from a `.attn` file or the library (`'sliding_window'`, `'file.attn:name'`).

    Args:
        path_or_name: a file path, a library file or pattern name, optionally with ':PATTERN'.
        pattern: which pattern of the file (default: the one named like the file, or the only one).
        **params: parameter overrides, checked against the declared types and `require` clauses.
    """
    spec, named = split_spec(path_or_name)
    module, stem = locate(spec)
    return Pattern(module, pick_pattern(module, stem, pattern or named), params)


def parse(text: str, pattern: str | None = None, *, name: str = "<string>", **params) -> Pattern:
    """Parse pattern text and return one of its patterns (the only one, or `pattern`)."""
    module = parse_module(text, name)
    return Pattern(module, pick_pattern(module, "", pattern), params)
