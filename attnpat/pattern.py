"""`Pattern`: a checked pattern with bound parameters -- what users hold and pass around."""

from __future__ import annotations

from .compiler import nodes as N
from .compiler import pipeline
from .compiler.check import CheckedPattern
from .compiler.parse import parse_module
from .compiler.values import format_value
from .compiler.unparse import unparse
from .library import locate, pick_pattern, resolve_library, split_spec

__all__ = ["Pattern", "load", "parse"]


class Pattern:
    """A pattern ready to analyse, lower and run: the user's handle on the compiler's values.

    The front stages (parse, check) run when a Pattern is made, so a mistake in the text or the parameters
    raises at once; the rest of the compiler (simplify, plan) runs on first use and gives `compiled`, the
    frozen value code generation, lowering and the runtime read (see compiler/pipeline.py).

    Attributes:
        name: the pattern's name.
        params: bound parameter values (defaults with overrides applied).
        inputs: names of the runtime inputs it needs at call time, with their axes.
        checked: the closed, typed expression (stage check's output).
    """

    def __init__(self, module: N.Module, name: str, params: dict[str, object] | None = None):
        self.module = module
        self.definition = next(p for p in module.patterns if p.name == name)
        self.checked: CheckedPattern = pipeline.front(module, name, params, resolve_library)
        self._overrides = dict(params or {})
        self._compiled: pipeline.Compiled | None = None

    @property
    def name(self) -> str:
        return self.checked.name

    @property
    def params(self) -> dict[str, object]:
        return dict(self.checked.params)

    @property
    def inputs(self) -> dict[str, str]:
        return {d.name: d.axis for d in self.checked.inputs}

    @property
    def float_inputs(self) -> dict[str, str]:
        """The float runtime inputs the score terms read, name -> axis ('h': one value per head)."""
        scores = self.checked.scores
        return {} if scores is None else {d.name: "h" for d in scores.inputs}

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

    @property
    def compiled(self) -> pipeline.Compiled:
        """The pattern through every compile-time stage (raises EmptyPatternError for an empty mask)."""
        if self._compiled is None:
            # the simplifier can take seconds: the value is cached on disk next to the kernels (runtime/cache.py)
            from .runtime.cache import compiled_value
            self._compiled = compiled_value(self.checked, pipeline.back)
        return self._compiled

    @property
    def canonical(self):
        """The canonical form (stage simplify): simplified IR, canonical text and the stable key."""
        return self.compiled.canonical

    @property
    def key(self) -> str:
        """A hex digest shared by every equivalent spelling of this pattern."""
        return self.canonical.key

    def block_mask(self, q_len: int, kv_len: int, *, block_q: int = 128, block_k: int = 64, heads: int = 1,
                   batch: int = 1, q_offset: int | None = None, **inputs):
        """The tiles (EMPTY / PARTIAL / FULL) of this pattern at one shape, computed in closed form.

        Args:
            q_len, kv_len: sequence lengths; query row i sits at i + (kv_len - q_len) unless q_offset is given.
            block_q, block_k: tile sizes.
            heads, batch: the mask is specialised per head when the pattern reads `h`, and per batch when it
                reads `b` or its runtime inputs are given per batch ([B, L]); equal masks are stored once.
            **inputs: the runtime inputs (e.g. doc=tensor of ids).
        Returns:
            a :class:`~attnpat.compiler.lower.BlockMask`.
        """
        return self.lowering(q_len, kv_len, block_q=block_q, block_k=block_k, heads=heads, batch=batch,
                             q_offset=q_offset, **inputs)[0]

    def lowering(self, q_len: int, kv_len: int, *, block_q: int = 128, block_k: int = 64, heads: int = 1,
                 batch: int = 1, q_offset: int | None = None, **inputs):
        """Like block_mask, but also returns, for each stored variant, the IR and the input tables it was
        lowered from (what evaluating its PARTIAL tiles point by point needs).

        Returns:
            (BlockMask, [(ir, {input: (axis, values)}) per variant]).
        """
        from .compiler.lower.variants import lower_compiled
        from .reference import check_sizes, prepare_inputs, query_positions
        compiled = self.compiled   # raise EmptyPatternError early
        check_sizes(q_len=q_len, kv_len=kv_len, heads=heads, batch=batch)
        tensors = prepare_inputs(self.checked, q_len, kv_len, batch, inputs)
        return lower_compiled(compiled, q_len, kv_len, block_q=block_q, block_k=block_k, heads=heads, batch=batch,
                              q_start=query_positions(q_len, kv_len, q_offset),
                              tables={n: t.numpy() for n, t in tensors.items()})

    def _variants(self, heads: int, batch: int):
        """Distinct IRs over (b, h) and their assignment (compiler/lower/variants.py; memoised per shape)."""
        from .compiler.lower.variants import variants
        return variants(self.compiled, heads, batch)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in self.checked.params)
        return f"Pattern({self.name}({params}))"


def load(path_or_name: str, pattern: str | None = None, **params) -> Pattern:
    """Load a pattern from a `.attn` file or the library (`'sliding_window'`, `'file.attn:name'`).

    Args:
        path_or_name: a file path, a library file or pattern name, optionally with ':PATTERN'.
        pattern: which pattern of the file (default: the one named like the file, or the only one).
        **params: parameter overrides, checked against the declared types and `require` clauses. No
            pattern can declare a parameter named like an argument of load, parse or Pattern.with_params
            (path_or_name, pattern, text, name, self): the checker rejects it where it is declared
            (compiler.check.RESERVED_PARAMETER_NAMES), so `params` never collides with them.
    """
    spec, named = split_spec(path_or_name)
    module, stem = locate(spec)
    return Pattern(module, pick_pattern(module, stem, pattern or named), params)


def parse(text: str, pattern: str | None = None, *, name: str = "<string>", **params) -> Pattern:
    """Parse pattern text and return one of its patterns (the only one, or `pattern`)."""
    module = parse_module(text, name)
    return Pattern(module, pick_pattern(module, "", pattern), params)
