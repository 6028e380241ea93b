"""Point evaluation: a mask (IR or checked AST) at arrays of absolute positions, and refinement of the
PARTIAL tiles the closed form leaves unproven, point by point.

Operators and builtins mean what the ``numpy`` column of :mod:`..semantics` says; only the IR atoms,
names, literals and look-ups are evaluated here.
"""

from __future__ import annotations

import numpy as np

from ...errors import PatternError
from .. import nodes as N
from ..ir import IR, And, Const, Lin, Mod, Opaque, Or
from ..semantics import BUILTINS, OPERATORS, constant, operator_of
from .geometry import ALL, NONE, SOME, Box, Geo

__all__ = ["evaluate_points", "refine", "REFINE_BUDGET", "POINTS_PER_CALL"]

REFINE_BUDGET = 1 << 25     # points evaluated one by one, at most, to tighten unproven PARTIAL tiles
POINTS_PER_CALL = 1 << 22   # points evaluated per numpy call (about 32 MB of int64 temporaries)


def evaluate_points(e, q: np.ndarray, k: np.ndarray, inputs, q_start: int, batch_values=None) -> np.ndarray:
    """Evaluate IR or a checked AST expression at broadcastable absolute positions q and k (numpy)."""
    if isinstance(e, Const):
        return np.broadcast_to(np.array(e.value), np.broadcast_shapes(q.shape, k.shape))
    if isinstance(e, Lin):
        v = e.cq * q + e.ck * k
        ok = np.ones(v.shape, bool)
        if e.lo is not None:
            ok &= v >= e.lo
        if e.hi is not None:
            ok &= v <= e.hi
        return ok
    if isinstance(e, Mod):
        return np.isin(np.mod(e.cq * q + e.ck * k + e.c0, e.m), e.residues)
    if isinstance(e, Opaque):
        return evaluate_points(e.expr, q, k, inputs, q_start)
    if isinstance(e, (And, Or)):
        parts = [evaluate_points(a, q, k, inputs, q_start) for a in e.args]
        return OPERATORS["and" if isinstance(e, And) else "or"].numpy(*parts)
    if isinstance(e, N.Num):
        return np.int64(e.value)
    if isinstance(e, N.BoolLit):
        return np.bool_(e.value)
    if isinstance(e, N.Name):
        return {"q": q, "k": k}[e.id]

    def ev(x):
        return evaluate_points(x, q, k, inputs, q_start)

    if isinstance(e, N.Unary):
        return operator_of(e).numpy(ev(e.operand))
    if isinstance(e, N.BinOp):
        return operator_of(e).numpy(ev(e.left), ev(e.right))
    if isinstance(e, N.BoolOp):
        return OPERATORS[e.op].numpy(*[ev(v) for v in e.values])
    if isinstance(e, N.Compare):
        links, left = [], ev(e.left)
        for op, right in zip(e.ops, e.comparators):
            if op in ("in", "not in"):     # the container is a constant: a set, list or range
                links.append(OPERATORS[op].numpy(left, constant(right)))
            else:
                rv = ev(right)
                links.append(OPERATORS[op].numpy(left, rv))
                left = rv
        return OPERATORS["and"].numpy(*links)
    if isinstance(e, N.Call) and BUILTINS[e.func].numpy is not None:
        return BUILTINS[e.func].numpy(*[ev(a) for a in e.args])
    if isinstance(e, N.Subscript):
        if isinstance(e.value, N.ListLit):
            vals = np.array([x.value for x in e.value.elts], np.int64)
            return vals[ev(e.index)]
        axis, values = inputs[e.value.id]
        if axis == "b":   # one value per (batch) slice
            return values[0]
        pos = q if e.index.id == "q" else k
        if axis == "q":
            pos = pos - q_start   # int[q] inputs are per query row
        return values[pos]
    raise PatternError(f"internal error: cannot evaluate {type(e).__name__}", getattr(e, "span", None))


def refine(ir: IR, v: np.ndarray, exact: np.ndarray, box: Box, geo: Geo, budget: int) -> int:
    """Evaluate the unproven PARTIAL tiles point by point when they fit the budget; the points evaluated."""
    todo = np.nonzero((v == SOME) & ~exact)[0]
    if len(todo) == 0 or len(todo) * geo.bq * geo.bk > budget:
        return 0
    dq = np.arange(geo.bq, dtype=np.int64)
    dk = np.arange(geo.bk, dtype=np.int64)
    chunk = max(1, POINTS_PER_CALL // (geo.bq * geo.bk))
    for s in range(0, len(todo), chunk):
        t = todo[s:s + chunk]
        q = box.q0[t, None, None] + dq[None, :, None]
        k = box.k0[t, None, None] + dk[None, None, :]
        valid = (q <= box.q1[t, None, None]) & (k <= box.k1[t, None, None])
        qc = np.minimum(q, box.q1[t, None, None])
        kc = np.minimum(k, box.k1[t, None, None])
        m = np.broadcast_to(evaluate_points(ir, qc, kc, geo.inputs, geo.q_start), valid.shape)
        hit = (m & valid).any(axis=(1, 2))
        allv = (m | ~valid).all(axis=(1, 2))
        v[t] = np.where(~hit, NONE, np.where(allv, ALL, SOME))
    return len(todo) * geo.bq * geo.bk
