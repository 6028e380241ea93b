"""Interval arithmetic over tiles: sound per-tile bounds of a checked AST expression.

Integer expressions get (lo, hi) int64 arrays, one entry per tile; conditions get a three-valued verdict
(NONE, SOME, ALL). Runtime inputs are bounded by their per-block min and max (:meth:`Geo.input_range`).
Operators and builtins follow the ``interval`` column of :mod:`..semantics`; names, literals and
look-ups are bounded here.
"""

from __future__ import annotations

import numpy as np

from ...errors import PatternError
from .. import nodes as N
from ..semantics import BUILTINS, OPERATORS, constant, operator_of
from .geometry import ALL, NONE, Box, Geo

__all__ = ["Interval"]


class Interval:
    """Interval arithmetic over tiles for checked AST expressions (sound bounds, per tile)."""

    def __init__(self, geo: Geo, box: Box):
        self.geo, self.box = geo, box

    def int(self, e: N.Expr):
        """(lo, hi) int64 bounds of an integer expression on each tile."""
        box = self.box
        if _is_condition(e):   # `(q < 8) == (k < 8)`: a condition compared as 0 / 1
            t = self.bool(e)
            return (t == ALL).astype(np.int64), (t != NONE).astype(np.int64)
        if isinstance(e, N.Num):
            v = np.full(len(box.q0), e.value, np.int64)
            return v, v
        if isinstance(e, N.Name):
            if e.id == "q":
                return box.q0, box.q1
            if e.id == "k":
                return box.k0, box.k1
            raise PatternError(f"internal error: variable '{e.id}' was not specialised before lowering")
        if isinstance(e, N.Unary):
            return operator_of(e).interval(self.int(e.operand))
        if isinstance(e, N.BinOp):
            if e.op in ("//", "%"):   # the divisor is a constant (the simplifier keeps no other)
                m = e.right.value
                return operator_of(e).interval(self.int(e.left), (m, m))
            return operator_of(e).interval(self.int(e.left), self.int(e.right))
        if isinstance(e, N.Call) and BUILTINS[e.func].interval is not None:
            return BUILTINS[e.func].interval(*[self.int(a) for a in e.args])
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.ListLit):
                vals = np.array([x.value for x in e.value.elts], np.int64)
                lo, hi = self.int(e.index)
                single = lo == hi
                pick = vals[np.clip(lo, 0, len(vals) - 1)]
                return np.where(single, pick, vals.min()), np.where(single, pick, vals.max())
            name, axis = e.value.id, e.index.id
            if axis == "b":   # an int[b] input: one value for the whole (batch) slice
                v = np.full(len(box.q0), self.geo.inputs[name][1][0], np.int64)
                return v, v
            mins, maxs = self.geo.input_range(name, axis)
            blocks = self.box.kb if axis == "k" else self.box.qb
            return mins[blocks], maxs[blocks]
        raise PatternError(f"internal error: no interval rule for {type(e).__name__}", getattr(e, "span", None))

    def bool(self, e: N.Expr) -> np.ndarray:
        """The trit of a condition on each tile: ALL (true at every point), SOME or NONE."""
        n = len(self.box.q0)
        if isinstance(e, N.BoolLit):
            return np.full(n, ALL if e.value else NONE, np.int8)
        if isinstance(e, N.Unary):
            return OPERATORS[e.op].interval(self.bool(e.operand))
        if isinstance(e, N.BoolOp):
            return OPERATORS[e.op].interval(*[self.bool(v) for v in e.values])
        if isinstance(e, N.Compare):
            out = np.full(n, ALL, np.int8)
            left = e.left
            for op, right in zip(e.ops, e.comparators):
                # a member test's right side is its constant container, a comparison's another bound
                other = constant(right) if op in ("in", "not in") else self.int(right)
                out = np.minimum(out, OPERATORS[op].interval(self.int(left), other))
                left = right
            return out
        raise PatternError(f"internal error: no interval rule for {type(e).__name__}", getattr(e, "span", None))


def _is_condition(e: N.Expr) -> bool:
    """Whether a checked expression is a condition (bool) rather than an integer."""
    return (isinstance(e, (N.BoolLit, N.BoolOp, N.Compare))
            or isinstance(e, N.Unary) and e.op == "not")
