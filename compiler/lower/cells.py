"""Conditions constant on chunk cells, decided cell by cell.

A condition that reads q only through ``q // c`` and k only through ``k // c'`` (constants c, c' >= 1;
BigBird's ``hash(seed, h, q // 64, k // 64) % n < r``, block windows ``abs(q // 64 - k // 64) <= 1``)
has one value on every cell [i*gq, (i+1)*gq) x [j*gk, (j+1)*gk), gq and gk the gcd of the divisors of q
and of k (0: not read, one cell per tile on that axis). So it is decided exactly by evaluating it once
per cell a tile overlaps -- with `evaluate_points`, at one point of each cell -- instead of at every point:
a tile a multiple of (or a divisor of) the chunk size overlaps a handful of cells.
"""

from __future__ import annotations

import math

import numpy as np

from .. import nodes as N
from ..ir import IR, And, Const, Opaque, Or
from .geometry import ALL, NONE, SOME, Box, Geo, floordiv
from .points import evaluate_points

__all__ = ["cell_sizes", "cell_group", "join", "in_group", "cell_counts", "cell_slices", "cell_boxes", "cell_plan",
           "eval_cells", "cell_verdict", "chunk_split", "chunk_cells", "CELL_SLICE"]

CELL_SLICE = 1 << 20      # (tile, chunk cell) pairs per numpy pass: bounds the temporaries


def _chunk_divisors(e: N.Expr, acc: dict) -> bool:
    """Fold the divisors of every ``q // c`` / ``k // c`` in e into acc (gcd per variable); False when e
    reads q or k any other way, or reads h, b or a runtime input (not specialised away)."""
    if isinstance(e, N.BinOp) and e.op == "//" and isinstance(e.left, N.Name) and e.left.id in ("q", "k"):
        if isinstance(e.right, N.Num) and e.right.value >= 1:
            acc[e.left.id] = math.gcd(acc[e.left.id], e.right.value)
            return True
        return False
    if isinstance(e, (N.Num, N.BoolLit)):
        return True
    if isinstance(e, N.Name):
        return False
    if isinstance(e, N.Subscript):   # a list look-up (an input's index is a bare q or k)
        return isinstance(e.value, N.ListLit) and _chunk_divisors(e.value, acc) and _chunk_divisors(e.index, acc)
    if isinstance(e, N.Unary):
        return _chunk_divisors(e.operand, acc)
    if isinstance(e, N.BinOp):
        return _chunk_divisors(e.left, acc) and _chunk_divisors(e.right, acc)
    if isinstance(e, N.BoolOp):
        return all(_chunk_divisors(v, acc) for v in e.values)
    if isinstance(e, N.Compare):
        return _chunk_divisors(e.left, acc) and all(_chunk_divisors(c, acc) for c in e.comparators)
    if isinstance(e, N.Call):
        return not e.kwargs and all(_chunk_divisors(a, acc) for a in e.args)
    if isinstance(e, (N.SetLit, N.ListLit)):
        return all(_chunk_divisors(x, acc) for x in e.elts)
    return False


def cell_sizes(node: IR) -> tuple[int, int] | None:
    """(gq, gk) when `node` is constant on every chunk cell (see above), else None."""
    if isinstance(node, Opaque):
        acc = {"q": 0, "k": 0}
        return (acc["q"], acc["k"]) if _chunk_divisors(node.expr, acc) else None
    if isinstance(node, (And, Or)):
        gq = gk = 0
        for a in node.args:
            g = cell_sizes(a)
            if g is None:
                return None
            gq, gk = math.gcd(gq, g[0]), math.gcd(gk, g[1])
        return gq, gk
    return None   # Const is decided without cells; Lin and Mod in closed form


def cell_group(args: list, op):
    """Split the arguments of an And / Or into (one node for those constant on chunk cells, the others)."""
    cellwise = [a for a in args if not isinstance(a, Const) and cell_sizes(a) is not None]
    if not cellwise:
        return None, args
    others = [a for a in args if not any(a is c for c in cellwise)]
    return join(cellwise, op), others


def join(args: list, op) -> IR:
    """``op(*args)``, or the one argument."""
    return args[0] if len(args) == 1 else op(tuple(args))


def in_group(a, group) -> bool:
    """Whether `a` is `group` or one of its arguments (by identity)."""
    return a is group or (isinstance(group, (And, Or)) and any(a is g for g in group.args))


def cell_counts(lo: np.ndarray, hi: np.ndarray, g: int) -> np.ndarray:
    """Cells of size g (0: one cell) that the ranges [lo, hi] overlap (0 for an empty range)."""
    if g == 0:
        return (lo <= hi).astype(np.int64)
    return np.where(lo <= hi, floordiv(hi, g) - floordiv(lo, g) + 1, 0)


def cell_range(lo: np.ndarray, hi: np.ndarray, g: int, i: np.ndarray):
    """The part of [lo, hi] in its i-th overlapped cell of size g."""
    if g == 0:
        return lo, hi
    start = (floordiv(lo, g) + i) * g
    return np.maximum(lo, start), np.minimum(hi, start + (g - 1))


def cell_slices(counts: np.ndarray):
    """Consecutive ranges [a, b) of tiles (or rectangles) holding about CELL_SLICE cells each, given the
    cells of each."""
    ends = np.cumsum(counts)
    a, n = 0, len(counts)
    while a < n:
        base = ends[a - 1] if a else 0
        b = max(a + 1, int(np.searchsorted(ends, base + CELL_SLICE, side="right")))
        yield a, min(b, n)
        a = b


def cell_boxes(box: Box, tiles: np.ndarray, nq: np.ndarray, nk: np.ndarray, g: tuple[int, int]):
    """Every (tile, cell) pair of `tiles` (indices into box) as (pair -> position in `tiles`, sub-box)."""
    cnt = nq * nk
    t = np.repeat(np.arange(len(tiles), dtype=np.int64), cnt)
    r = np.arange(len(t), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    per_row = nk[t]
    s = tiles[t]
    q0, q1 = cell_range(box.q0[s], box.q1[s], g[0], r // per_row)
    k0, k1 = cell_range(box.k0[s], box.k1[s], g[1], r % per_row)
    return t, Box(q0, q1, k0, k1, box.qb[s], box.kb[s])


def cell_plan(box: Box, tiles: np.ndarray, g: tuple[int, int], geo: Geo):
    """(cells along q, cells along k) per tile, charged to the budget; None when over it."""
    nq = cell_counts(box.q0[tiles], box.q1[tiles], g[0])
    nk = cell_counts(box.k0[tiles], box.k1[tiles], g[1])
    total = int((nq * nk).sum())
    if total > geo.cells_left:
        return None
    geo.cells_left -= total
    return nq, nk


def eval_cells(node: IR, sub: Box, geo: Geo) -> np.ndarray:
    """The value of a node constant on chunk cells on each sub-box (one cell's part of a tile)."""
    v = evaluate_points(node, sub.q0, sub.k0, geo.inputs, geo.q_start)
    return np.broadcast_to(np.asarray(v, bool), sub.q0.shape)


def cell_verdict(node: IR, g: tuple[int, int], box: Box, geo: Geo):
    """Exact (verdict, exact) of a node constant on chunk cells, or None when the cells exceed the budget.

    Each tile's cells are laid out on a [tiles, NQ, NK] grid (NQ, NK the most cells a tile overlaps along
    q and k; tiles of one lowering differ by one cell at most) and evaluated at one point each: the start of
    the cell moved into the sequence, whose `q // c` and `k // c` are those of every point of the cell that
    the tile holds. Grid entries past a tile's cells (and empty tiles) are evaluated at a point of the
    sequence too -- so nothing is evaluated where the dense mask is not -- and not counted.
    """
    n = len(box.q0)
    if n == 0:
        return np.zeros(0, np.int8), np.ones(0, bool)
    axes = []
    for lo, hi, c, first_pos, last_pos in ((box.q0, box.q1, g[0], geo.q_start, geo.q_start + geo.q_len - 1),
                                           (box.k0, box.k1, g[1], 0, geo.kv_len - 1)):
        count = cell_counts(lo, hi, c)
        first = lo if c == 0 else floordiv(lo, c) * c
        axes.append((first, count, c, int(count.max(initial=0)), first_pos, last_pos))
    (fq, nq, gq, NQ, q_first, q_last), (fk, nk, gk, NK, k_first, k_last) = axes
    per_tile = max(NQ * NK, 1)
    if n * per_tile > geo.cells_left:
        return None
    geo.cells_left -= n * per_tile
    iq, ik = np.arange(NQ, dtype=np.int64), np.arange(NK, dtype=np.int64)
    trues = np.zeros(n, np.int64)
    step = max(1, CELL_SLICE // per_tile)
    for a in range(0, n, step):
        b = min(n, a + step)
        q = np.clip(fq[a:b, None, None] + gq * iq[None, :, None], q_first, q_last)
        k = np.clip(fk[a:b, None, None] + gk * ik[None, None, :], k_first, k_last)
        valid = (iq[None, :, None] < nq[a:b, None, None]) & (ik[None, None, :] < nk[a:b, None, None])
        val = evaluate_points(node, q, k, geo.inputs, geo.q_start)
        trues[a:b] = np.logical_and(val, valid).sum(axis=(1, 2))
    cnt = nq * nk
    v = np.where(trues == 0, NONE, np.where(trues == cnt, ALL, SOME)).astype(np.int8)
    return v, np.ones(n, bool)


def chunk_split(ir: IR):
    """How `ir` splits on chunk cells, for counting tiles cell by cell (compiler/analysis.py).

    Returns (group, (gq, gk), rest, op): `group` is constant on every gq x gk cell (see the module
    docstring) and `ir` is ``op(group, rest)`` -- or just `group` when rest and op are None (the whole of
    `ir` is constant on the cells). None when no part of `ir` is: neither `ir` nor any argument of a
    top-level and/or.
    """
    if isinstance(ir, Const):
        return None
    g = cell_sizes(ir)
    if g is not None:
        return ir, g, None, None
    if isinstance(ir, (And, Or)):
        op = type(ir)
        group, others = cell_group(list(ir.args), op)
        if group is not None and others:
            return group, cell_sizes(group), join(others, op), op
    return None


def chunk_cells(q0: np.ndarray, q1: np.ndarray, k0: np.ndarray, k1: np.ndarray, g: tuple[int, int],
                counts_only: bool = False):
    """The chunk cells of size g = (gq, gk) (0: one cell along that axis) that the rectangles
    [q0, q1] x [k0, k1] (absolute positions, non-empty) overlap, each clipped to its rectangle.

    Returns the cells per rectangle (counts_only), else (rectangle of each cell, cq0, cq1, ck0, ck1),
    rectangle by rectangle.
    """
    nq, nk = cell_counts(q0, q1, g[0]), cell_counts(k0, k1, g[1])
    if counts_only:
        return nq * nk
    zero = np.zeros(len(q0), np.int64)
    t, sub = cell_boxes(Box(q0, q1, k0, k1, zero, zero), np.arange(len(q0), dtype=np.int64), nq, nk, g)
    return t, sub.q0, sub.q1, sub.k0, sub.k1
