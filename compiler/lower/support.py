"""Support: for each query block, a few intervals of key blocks that may hold an allowed pair.

Solved in closed form for linear atoms (bands in q - k, ranges of k or q) and by binary search over an
O(N) table for ``f(q) op g(k)`` with ``g`` nondecreasing (chunks ``q // c == k // c``, sorted document ids);
everything else keeps the whole row. :func:`candidate_tiles` turns the intervals into the tiles to classify.
"""

from __future__ import annotations

import numpy as np

from .. import nodes as N
from ..ir import IR, Const, Lin, Mod, Opaque, Or
from .geometry import BIG, Box, Geo, floordiv
from .interval import Interval
from .points import evaluate_points

__all__ = ["support", "candidate_tiles"]


def _all(geo: Geo):
    return [(np.zeros(geo.nqb, np.int64), np.full(geo.nqb, geo.nkb - 1, np.int64))]


def _rows_only(geo: Geo, ok: np.ndarray):
    lo = np.where(ok, 0, 1)
    hi = np.where(ok, geo.nkb - 1, 0)
    return [(lo.astype(np.int64), hi.astype(np.int64))]


def _k_to_blocks(geo: Geo, klo: np.ndarray, khi: np.ndarray):
    klo = np.maximum(klo, 0)
    khi = np.minimum(khi, geo.kv_len - 1)
    empty = klo > khi
    lo = np.where(empty, 1, klo // geo.bk)
    hi = np.where(empty, 0, khi // geo.bk)
    return lo.astype(np.int64), hi.astype(np.int64)


def support(node: IR, geo: Geo):
    """Intervals [(lo, hi)] of key blocks per query block (int64 arrays) that hold every tile `node` may allow."""
    if isinstance(node, Const):
        return _all(geo) if node.value else []
    if isinstance(node, Lin):
        lo = -BIG if node.lo is None else node.lo
        hi = BIG if node.hi is None else node.hi
        a = node.cq * geo.q_lo
        b = node.cq * geo.q_hi
        mn, mx = np.minimum(a, b), np.maximum(a, b)
        if node.ck == 0:
            return _rows_only(geo, (mx >= lo) & (mn <= hi))
        # lo - cq*q <= ck*k <= hi - cq*q over the block's q
        t_lo = np.where(node.lo is None, -BIG, lo - mx)
        t_hi = np.where(node.hi is None, BIG, hi - mn)
        if node.ck > 0:
            klo, khi = -floordiv(-t_lo, node.ck), floordiv(t_hi, node.ck)
        else:
            c = -node.ck
            klo, khi = -floordiv(t_hi, c), floordiv(-t_lo, c)
        klo = np.where(t_lo == -BIG if node.ck > 0 else t_hi == BIG, -BIG, klo)
        khi = np.where(t_hi == BIG if node.ck > 0 else t_lo == -BIG, BIG, khi)
        return [_k_to_blocks(geo, np.clip(klo, -BIG, BIG), np.clip(khi, -BIG, BIG))]
    if isinstance(node, Opaque):
        return _monotone_support(node.expr, geo) or _all(geo)
    if isinstance(node, Mod):
        return _all(geo)
    if isinstance(node, Or):
        out = []
        for a in node.args:
            out.extend(support(a, geo))
        return out
    parts = [support(a, geo) for a in node.args]
    parts.sort(key=len)
    acc = parts[0]
    for p in parts[1:]:
        if len(acc) * len(p) > 64:   # keep the product small: fall back to the hull of each side
            acc, p = [_hull(acc, geo)], [_hull(p, geo)]
        acc = [(np.maximum(a0, b0), np.minimum(a1, b1)) for a0, a1 in acc for b0, b1 in p]
    return acc


def _hull(ivs, geo):
    if not ivs:
        return (np.ones(geo.nqb, np.int64), np.zeros(geo.nqb, np.int64))
    lo = np.min([np.where(a <= b, a, BIG) for a, b in ivs], axis=0)
    hi = np.max([np.where(a <= b, b, -1) for a, b in ivs], axis=0)
    return lo, hi


def _side_vars(e: N.Expr) -> set[str]:
    """The position variables an expression reads (inputs count by the variable they are indexed with; an
    int[b] input is one value per slice, a constant here)."""
    skip = {id(x.index) for x in N.walk(e) if isinstance(x, N.Subscript) and isinstance(x.index, N.Name)
            and x.index.id == "b"}
    return {x.id for x in N.walk(e) if isinstance(x, N.Name) and x.id in ("q", "k", "h", "b") and id(x) not in skip}


def _monotone_support(e: N.Expr, geo: Geo):
    """For ``f(q) op g(k)`` with g nondecreasing over k (k // c, sorted ids), solve for k by binary search."""
    if not (isinstance(e, N.Compare) and len(e.ops) == 1 and e.ops[0] in ("==", "<", "<=", ">", ">=")):
        return None
    left, op, right = e.left, e.ops[0], e.comparators[0]
    lv, rv = _side_vars(left), _side_vars(right)
    if "q" not in lv and "k" in lv and "q" in rv and "k" not in rv:
        left, right = right, left
        op = {"==": "==", "<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
        lv, rv = rv, lv
    if "k" in lv or rv != {"k"} or not lv <= {"q"}:
        return None
    if any(geo.inputs.get(n, ("", None))[0] == "q" for n in _input_names(right)):
        return None
    g = evaluate_points(right, np.zeros(1, np.int64), np.arange(geo.kv_len, dtype=np.int64), geo.inputs,
                        geo.q_start, batch_values=None)
    g = np.broadcast_to(g, (geo.kv_len,)).astype(np.int64)
    if geo.kv_len > 1 and not (np.diff(g) >= 0).all():
        return None
    box = Box(geo.q_lo, geo.q_hi, np.zeros(geo.nqb, np.int64), np.zeros(geo.nqb, np.int64),
               np.arange(geo.nqb), np.zeros(geo.nqb, np.int64))
    f_lo, f_hi = Interval(geo, box).int(left)
    # keys with g(k) op f for some f in [f_lo, f_hi]
    if op == "==":
        klo = np.searchsorted(g, f_lo, side="left")
        khi = np.searchsorted(g, f_hi, side="right") - 1
    elif op in ("<", "<="):      # f op g(k): g(k) >= f_lo (or >)
        klo = np.searchsorted(g, f_lo, side="left" if op == "<=" else "right")
        khi = np.full(geo.nqb, geo.kv_len - 1)
    else:                        # f > g(k)
        klo = np.zeros(geo.nqb, np.int64)
        khi = np.searchsorted(g, f_hi, side="right" if op == ">=" else "left") - 1
    return [_k_to_blocks(geo, klo.astype(np.int64), khi.astype(np.int64))]


def _input_names(e) -> set[str]:
    return {x.value.id for x in N.walk(e) if isinstance(x, N.Subscript) and isinstance(x.value, N.Name)}


def candidate_tiles(ivs, geo: Geo, row0: int = 0):
    """Distinct (query block, key block) pairs covered by a list of per-row intervals (rows from row0),
    sorted by (row, column).

    Several intervals per row are merged without sorting the tiles: per row, the intervals are ordered by
    their start and each is cut to begin after the ones before it reach, which leaves disjoint pieces in
    column order.
    """
    if not ivs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m, nrows = len(ivs), len(ivs[0][0])
    lo = np.stack([np.maximum(a, 0) for a, _ in ivs]).astype(np.int64)            # [m, rows]
    hi = np.stack([np.minimum(b, geo.nkb - 1) for _, b in ivs]).astype(np.int64)
    if m > 1:
        lo = np.where(lo <= hi, lo, BIG)        # empty intervals go last and stay empty
        order = np.argsort(lo, axis=0, kind="stable")
        lo, hi = np.take_along_axis(lo, order, 0), np.take_along_axis(hi, order, 0)
        reach = np.maximum.accumulate(hi, axis=0)
        lo[1:] = np.maximum(lo[1:], reach[:-1] + 1)
    lo, hi = lo.T.ravel(), hi.T.ravel()          # row-major: each row's pieces in column order
    n = np.maximum(hi - lo + 1, 0)
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.repeat(np.repeat(np.arange(row0, row0 + nrows, dtype=np.int64), m), n)
    starts = np.repeat(np.cumsum(n) - n, n)
    cols = np.arange(total, dtype=np.int64) - starts + np.repeat(lo, n)
    return rows, cols
