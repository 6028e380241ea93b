"""Stage 4 -- lower: canonical IR -> a :class:`BlockMask`, in closed form.

The query axis is cut into blocks of ``block_q`` rows and the key axis into blocks of ``block_k`` columns;
every tile (query block x key block) is EMPTY (no allowed pair), PARTIAL (some) or FULL (all). The lowering
never looks at the N^2 points:

1. *support*: from the IR, each query block gets a few intervals of key blocks that may hold an allowed
   pair -- solved in closed form for linear atoms (bands in q - k, ranges of k or q), by binary search over
   an O(N) table for ``f(q) == g(k)`` with ``g`` monotone (chunks ``q // c == k // c``, sorted document
   ids); everything else keeps the whole row (a set of global columns stays a set of runs);
2. *classify*: each candidate tile is classified with three-valued logic; linear and modular atoms are
   exact on a tile, conjunctions with ranges of q or k cut the tile to a sub-rectangle first, conditions
   that read q and k only through ``q // c`` and ``k // c`` (BigBird's hashed random blocks, block windows)
   are constant on every chunk cell and are evaluated once per cell the tile overlaps, exactly, and any
   other condition is bounded with interval arithmetic (runtime inputs through per-block min/max);
3. *refine*: the few tiles whose PARTIAL verdict is not proven exact are evaluated point by point, within
   a budget, so the masks of the library patterns are tight, and every mask is sound.

Work and memory grow with the number of candidate tiles, not with q_len * kv_len.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError
from . import nodes as N
from .hashing import hash32
from .ir import IR, And, Const, Lin, Mod, Opaque, Or

__all__ = ["TileKind", "BlockMask", "lower", "evaluate_points", "REFINE_BUDGET", "CELL_BUDGET", "chunk_split",
           "chunk_cells", "classify_rects"]

REFINE_BUDGET = 1 << 25   # points evaluated one by one, at most, to tighten unproven PARTIAL tiles
CELL_BUDGET = 1 << 25     # (tile, chunk cell) pairs evaluated, at most, per chunk of candidate tiles
_CELL_SLICE = 1 << 20     # (tile, chunk cell) pairs per numpy pass: bounds the temporaries
_BIG = np.int64(1) << 62


class TileKind(enum.IntEnum):
    """What a query-block x key-block tile holds."""

    EMPTY = 0
    PARTIAL = 1
    FULL = 2


@dataclass(frozen=True, eq=False)
class _Rows:
    """CSR of one variant: for each row block, sorted column blocks."""

    ptr: np.ndarray      # int64 [rows + 1]
    idx: np.ndarray      # int32 [nnz]


@dataclass(frozen=True, eq=False)
class BlockMask:
    """The tiles of a pattern at one shape, as compressed rows for the forward and columns for the backward.

    Layout. Masks that are equal for several (batch, head) pairs are stored once: ``variant[b, h]`` picks
    one of ``num_variants`` stored masks. For variant ``v``:

    * ``partial_ptr[v]`` / ``partial_idx`` and ``full_ptr[v]`` / ``full_idx``: for query block ``i`` its
      PARTIAL (FULL) key blocks are ``idx[ptr[v, i]:ptr[v, i + 1]]``, sorted ascending; ``ptr`` is int64
      [V, Q_blocks + 1] with offsets into the one flat int32 ``idx`` array;
    * ``t_partial_ptr`` / ``t_partial_idx`` and ``t_full_ptr`` / ``t_full_idx``: the transpose, for each key
      block its query blocks (what a dK/dV backward pass walks).

    EMPTY tiles appear nowhere. Query block ``i`` covers rows ``[i * block_q, (i + 1) * block_q)`` (the
    last one is cut at q_len); those rows sit at absolute positions ``q_start + row``.

    ``stats`` counts the work, summed over the stored variants: ``candidate_tiles`` (tiles classified),
    ``cells_evaluated`` (tile x chunk-cell pairs at which a condition on ``q // c`` and ``k // c`` was
    evaluated) and ``points_refined`` (points evaluated one by one to tighten PARTIAL tiles).
    """

    q_len: int
    kv_len: int
    block_q: int
    block_k: int
    q_start: int
    batch: int
    heads: int
    variant: np.ndarray          # int32 [batch, heads]
    partial_ptr: np.ndarray      # int64 [V, QB + 1]
    partial_idx: np.ndarray      # int32
    full_ptr: np.ndarray
    full_idx: np.ndarray
    t_partial_ptr: np.ndarray    # int64 [V, KB + 1]
    t_partial_idx: np.ndarray
    t_full_ptr: np.ndarray
    t_full_idx: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def num_q_blocks(self) -> int:
        return -(-self.q_len // self.block_q)

    @property
    def num_k_blocks(self) -> int:
        return -(-self.kv_len // self.block_k)

    @property
    def num_variants(self) -> int:
        return int(self.partial_ptr.shape[0])

    def counts(self) -> dict[str, int]:
        """Tile counts summed over every (batch, head): {'EMPTY': .., 'PARTIAL': .., 'FULL': ..}."""
        per_variant_p = np.diff(self.partial_ptr[:, [0, -1]], axis=1)[:, 0]
        per_variant_f = np.diff(self.full_ptr[:, [0, -1]], axis=1)[:, 0]
        uses = np.bincount(self.variant.ravel(), minlength=self.num_variants)
        partial = int((per_variant_p * uses).sum())
        full = int((per_variant_f * uses).sum())
        total = self.batch * self.heads * self.num_q_blocks * self.num_k_blocks
        return {"EMPTY": total - partial - full, "PARTIAL": partial, "FULL": full}

    def row(self, q_block: int, *, batch: int = 0, head: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(partial key blocks, full key blocks) of one query block."""
        v = int(self.variant[batch, head])
        p, f = self.partial_ptr[v], self.full_ptr[v]
        return (self.partial_idx[p[q_block]:p[q_block + 1]], self.full_idx[f[q_block]:f[q_block + 1]])

    def to_dense(self, *, batch: int | None = None) -> np.ndarray:
        """Tile kinds as uint8 [H, Q_blocks, K_blocks] (for batch 0, or `batch`), or [B, H, QB, KB] when
        the mask differs across the batch and no batch is chosen. Meant for small sizes and pictures."""
        qb, kb = self.num_q_blocks, self.num_k_blocks
        grids = np.zeros((self.num_variants, qb, kb), dtype=np.uint8)
        for v in range(self.num_variants):
            for ptr, idx, kind in ((self.partial_ptr, self.partial_idx, TileKind.PARTIAL),
                                   (self.full_ptr, self.full_idx, TileKind.FULL)):
                counts = np.diff(ptr[v])
                rows = np.repeat(np.arange(qb), counts)
                grids[v, rows, idx[ptr[v, 0]:ptr[v, -1]]] = kind
        if batch is not None:
            return grids[self.variant[batch]]
        if (self.variant == self.variant[0:1]).all():
            return grids[self.variant[0]]
        return grids[self.variant]

    def __repr__(self) -> str:
        c = self.counts()
        return (f"BlockMask(q_len={self.q_len}, kv_len={self.kv_len}, block=({self.block_q}, {self.block_k}), "
                f"batch={self.batch}, heads={self.heads}, variants={self.num_variants}, "
                f"full={c['FULL']}, partial={c['PARTIAL']}, empty={c['EMPTY']})")


# -- the geometry of one lowering -----------------------------------------------------------------


class _Geo:
    """Block boundaries and per-block summaries of the runtime inputs for one (batch) slice."""

    def __init__(self, q_len, kv_len, block_q, block_k, q_start, inputs: dict[str, tuple[str, np.ndarray]]):
        self.q_len, self.kv_len, self.bq, self.bk, self.q_start = q_len, kv_len, block_q, block_k, q_start
        self.nqb, self.nkb = -(-q_len // block_q), -(-kv_len // block_k)
        rows = np.arange(self.nqb, dtype=np.int64)
        self.q_lo = q_start + rows * block_q
        self.q_hi = q_start + np.minimum((rows + 1) * block_q, q_len) - 1
        cols = np.arange(self.nkb, dtype=np.int64)
        self.k_lo = cols * block_k
        self.k_hi = np.minimum((cols + 1) * block_k, kv_len) - 1
        self.inputs = inputs          # name -> (axis, values int64 [L])
        self._summary: dict = {}
        self.cells_left = CELL_BUDGET  # chunk-cell evaluations still allowed (reset per chunk of tiles)

    def input_range(self, name: str, index_axis: str):
        """Per-block (min, max) of input `name` read at q (per query block) or k (per key block)."""
        key = (name, index_axis)
        if key not in self._summary:
            axis, values = self.inputs[name]
            if index_axis == "k":
                starts, n = self.k_lo, self.kv_len
            elif axis == "q":
                starts, n = np.arange(self.nqb, dtype=np.int64) * self.bq, self.q_len
            else:
                starts = self.q_lo
                n = self.kv_len
                if self.q_len and (self.q_start < 0 or self.q_start + self.q_len > self.kv_len):
                    raise ArgumentError(f"'{name}[q]' reads query positions {self.q_start}.."
                                        f"{self.q_start + self.q_len - 1}, outside the {self.kv_len} values of "
                                        f"int[k] input '{name}'")
                starts = starts.copy()
            block = self.bk if index_axis == "k" else self.bq
            if len(values) == 0 or len(starts) == 0:
                self._summary[key] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                starts = np.clip(starts, 0, n - 1)
                mins = np.minimum.reduceat(values, starts)
                maxs = np.maximum.reduceat(values, starts)
                # reduceat runs to the next start; the last block may be cut short of a full block.
                ends = np.minimum(starts + block, n)
                if len(starts) and ends[-1] < n:
                    mins[-1] = values[starts[-1]:ends[-1]].min()
                    maxs[-1] = values[starts[-1]:ends[-1]].max()
                self._summary[key] = (mins, maxs)
        return self._summary[key]


# -- support: candidate key-block intervals per query block --------------------------------------


def _all(geo: _Geo):
    return [(np.zeros(geo.nqb, np.int64), np.full(geo.nqb, geo.nkb - 1, np.int64))]


def _rows_only(geo: _Geo, ok: np.ndarray):
    lo = np.where(ok, 0, 1)
    hi = np.where(ok, geo.nkb - 1, 0)
    return [(lo.astype(np.int64), hi.astype(np.int64))]


def _k_to_blocks(geo: _Geo, klo: np.ndarray, khi: np.ndarray):
    klo = np.maximum(klo, 0)
    khi = np.minimum(khi, geo.kv_len - 1)
    empty = klo > khi
    lo = np.where(empty, 1, klo // geo.bk)
    hi = np.where(empty, 0, khi // geo.bk)
    return lo.astype(np.int64), hi.astype(np.int64)


def _floordiv(a, b):
    return np.floor_divide(a, b)


def _support(node: IR, geo: _Geo):
    if isinstance(node, Const):
        return _all(geo) if node.value else []
    if isinstance(node, Lin):
        lo = -_BIG if node.lo is None else node.lo
        hi = _BIG if node.hi is None else node.hi
        a = node.cq * geo.q_lo
        b = node.cq * geo.q_hi
        mn, mx = np.minimum(a, b), np.maximum(a, b)
        if node.ck == 0:
            return _rows_only(geo, (mx >= lo) & (mn <= hi))
        # lo - cq*q <= ck*k <= hi - cq*q over the block's q
        t_lo = np.where(node.lo is None, -_BIG, lo - mx)
        t_hi = np.where(node.hi is None, _BIG, hi - mn)
        if node.ck > 0:
            klo, khi = -_floordiv(-t_lo, node.ck), _floordiv(t_hi, node.ck)
        else:
            c = -node.ck
            klo, khi = -_floordiv(t_hi, c), _floordiv(-t_lo, c)
        klo = np.where(t_lo == -_BIG if node.ck > 0 else t_hi == _BIG, -_BIG, klo)
        khi = np.where(t_hi == _BIG if node.ck > 0 else t_lo == -_BIG, _BIG, khi)
        return [_k_to_blocks(geo, np.clip(klo, -_BIG, _BIG), np.clip(khi, -_BIG, _BIG))]
    if isinstance(node, Opaque):
        return _monotone_support(node.expr, geo) or _all(geo)
    if isinstance(node, Mod):
        return _all(geo)
    if isinstance(node, Or):
        out = []
        for a in node.args:
            out.extend(_support(a, geo))
        return out
    parts = [_support(a, geo) for a in node.args]
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
    lo = np.min([np.where(a <= b, a, _BIG) for a, b in ivs], axis=0)
    hi = np.max([np.where(a <= b, b, -1) for a, b in ivs], axis=0)
    return lo, hi


def _side_vars(e: N.Expr) -> set[str]:
    """The position variables an expression reads (inputs count by the variable they are indexed with)."""
    return {x.id for x in N.walk(e) if isinstance(x, N.Name) and x.id in ("q", "k", "h", "b")}


def _monotone_support(e: N.Expr, geo: _Geo):
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
    box = _Box(geo.q_lo, geo.q_hi, np.zeros(geo.nqb, np.int64), np.zeros(geo.nqb, np.int64),
               np.arange(geo.nqb), np.zeros(geo.nqb, np.int64))
    f_lo, f_hi = _Interval(geo, box).int(left)
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


def _tiles(ivs, geo: _Geo, row0: int = 0):
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
        lo = np.where(lo <= hi, lo, _BIG)        # empty intervals go last and stay empty
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


# -- classification -------------------------------------------------------------------------------

_NONE, _SOME, _ALL = 0, 1, 2


@dataclass
class _Box:
    q0: np.ndarray
    q1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    qb: np.ndarray   # the query block of each tile (for per-block input summaries)
    kb: np.ndarray

    def restrict(self, q0=None, q1=None, k0=None, k1=None) -> "_Box":
        return _Box(self.q0 if q0 is None else q0, self.q1 if q1 is None else q1,
                    self.k0 if k0 is None else k0, self.k1 if k1 is None else k1, self.qb, self.kb)


def _lin_range(cq, ck, box: _Box):
    a, b = cq * box.q0, cq * box.q1
    c, d = ck * box.k0, ck * box.k1
    return np.minimum(a, b) + np.minimum(c, d), np.maximum(a, b) + np.maximum(c, d)


def _classify(node: IR, box: _Box, geo: _Geo):
    """(verdict, exact) arrays over tiles: verdict in {_NONE, _SOME, _ALL}; exact says _SOME is proven."""
    n = len(box.q0)
    empty_box = (box.q0 > box.q1) | (box.k0 > box.k1)
    if isinstance(node, Const):
        v = np.full(n, _ALL if node.value else _NONE, np.int8)
        return np.where(empty_box, _NONE, v).astype(np.int8), np.ones(n, bool)
    if isinstance(node, Lin):
        mn, mx = _lin_range(node.cq, node.ck, box)
        lo = -_BIG if node.lo is None else node.lo
        hi = _BIG if node.hi is None else node.hi
        v = np.where((mx < lo) | (mn > hi) | empty_box, _NONE,
                     np.where((mn >= lo) & (mx <= hi), _ALL, _SOME)).astype(np.int8)
        # a form with coefficients 0 or +-1 takes every integer between its extremes on a box
        exact = abs(node.cq) <= 1 and abs(node.ck) <= 1
        return v, np.full(n, exact)
    if isinstance(node, Mod):
        mn, mx = _lin_range(node.cq, node.ck, box)
        mn, mx = mn + node.c0, mx + node.c0
        member = np.isin(np.arange(node.m), node.residues).astype(np.int64)
        pre = np.concatenate([[0], np.cumsum(member)])

        def count(x):   # residues in R among values 0..x (x may be negative: counts below zero)
            return (_floordiv(x, node.m)) * len(node.residues) + pre[np.mod(x, node.m) + 1]
        hits = count(mx) - count(mn - 1)
        total = mx - mn + 1
        v = np.where((hits == 0) | empty_box, _NONE, np.where(hits == total, _ALL, _SOME)).astype(np.int8)
        exact = abs(node.cq) <= 1 and abs(node.ck) <= 1
        return v, np.full(n, exact)
    cells = _cell_sizes(node)
    if cells is not None:
        out = _cell_verdict(node, cells, box, geo)
        if out is not None:
            return out
    if isinstance(node, Opaque):
        v = _Interval(geo, box).bool(node.expr)
        v = np.where(empty_box, _NONE, v).astype(np.int8)
        return v, np.zeros(n, bool)
    if isinstance(node, And):
        # Ranges of q or of k cut the tile to a sub-rectangle on which the rest is judged exactly.
        q0, q1, k0, k1 = box.q0, box.q1, box.k0, box.k1
        rest = []
        for a in node.args:
            if isinstance(a, Lin) and a.cq == 0 and a.ck == 1:
                k0 = k0 if a.lo is None else np.maximum(k0, a.lo)
                k1 = k1 if a.hi is None else np.minimum(k1, a.hi)
            elif isinstance(a, Lin) and a.ck == 0 and a.cq == 1:
                q0 = q0 if a.lo is None else np.maximum(q0, a.lo)
                q1 = q1 if a.hi is None else np.minimum(q1, a.hi)
            else:
                rest.append(a)
        # Conditions constant on chunk cells are judged together, as one exact verdict.
        group, rest = _cell_group(rest, And) if cells is None else (None, rest)
        if group is not None:
            rest.append(group)
        sub = box.restrict(q0, q1, k0, k1)
        cut = (q0 != box.q0) | (q1 != box.q1) | (k0 != box.k0) | (k1 != box.k1)
        sub_empty = (q0 > q1) | (k0 > k1)
        # A band and a residue condition on the same form (dilation) are judged together, exactly.
        verdicts = []
        lins = {a.form: a for a in rest if isinstance(a, Lin)}
        paired = set()
        for a in rest:
            if isinstance(a, Mod) and (a.cq, a.ck) in lins and abs(a.cq) <= 1 and abs(a.ck) <= 1:
                lin = lins[(a.cq, a.ck)]
                paired.add(id(lin))
                verdicts.append(_band_and_residues(lin, a, sub))
        verdicts += [_classify(a, sub, geo) for a in rest
                     if id(a) not in paired and not (isinstance(a, Mod) and (a.cq, a.ck) in lins
                                                     and abs(a.cq) <= 1 and abs(a.ck) <= 1)]
        if verdicts:
            vs = np.stack([v for v, _ in verdicts])
            es = np.stack([e for _, e in verdicts])
            any_none = (vs == _NONE).any(0)
            all_all = (vs == _ALL).all(0)
            n_some = (vs == _SOME).sum(0)
            some_exact = np.where(vs == _SOME, es, True).all(0)
        else:
            any_none = np.zeros(n, bool)
            all_all = np.ones(n, bool)
            n_some = np.zeros(n, np.int64)
            some_exact = np.ones(n, bool)
        v = np.where(sub_empty | any_none | empty_box, _NONE,
                     np.where(all_all & ~cut, _ALL, _SOME)).astype(np.int8)
        exact = (n_some == 0) | ((n_some == 1) & some_exact)
        if group is not None:
            _split_on_cells(v, exact, box, geo, group, [a for a in node.args if not _in_group(a, group)], And)
        return v, exact
    # Or
    group, args = _cell_group(list(node.args), Or) if cells is None else (None, list(node.args))
    if group is not None:
        args.append(group)
    verdicts = [_classify(a, box, geo) for a in args]
    vs = np.stack([v for v, _ in verdicts])
    es = np.stack([e for _, e in verdicts])
    any_all = (vs == _ALL).any(0)
    all_none = (vs == _NONE).all(0)
    n_some = (vs == _SOME).sum(0)
    some_exact = np.where(vs == _SOME, es, True).all(0)
    v = np.where(any_all, _ALL, np.where(all_none, _NONE, _SOME)).astype(np.int8)
    exact = (n_some <= 1) & some_exact
    if group is not None:
        _split_on_cells(v, exact, box, geo, group, [a for a in node.args if not _in_group(a, group)], Or)
    return v, exact


# -- conditions constant on chunk cells -----------------------------------------------------------
#
# A condition that reads q only through ``q // c`` and k only through ``k // c'`` (constants c, c' >= 1;
# BigBird's ``hash(seed, h, q // 64, k // 64) % n < r``, block windows ``abs(q // 64 - k // 64) <= 1``)
# has one value on every cell [i*gq, (i+1)*gq) x [j*gk, (j+1)*gk), gq and gk the gcd of the divisors of q
# and of k (0: not read, one cell per tile on that axis). So it is decided exactly by evaluating it once
# per cell a tile overlaps -- with `evaluate_points`, at one point of each cell -- instead of at every point:
# a tile a multiple of (or a divisor of) the chunk size overlaps a handful of cells.


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


def _cell_sizes(node: IR) -> tuple[int, int] | None:
    """(gq, gk) when `node` is constant on every chunk cell (see above), else None."""
    if isinstance(node, Opaque):
        acc = {"q": 0, "k": 0}
        return (acc["q"], acc["k"]) if _chunk_divisors(node.expr, acc) else None
    if isinstance(node, (And, Or)):
        gq = gk = 0
        for a in node.args:
            g = _cell_sizes(a)
            if g is None:
                return None
            gq, gk = math.gcd(gq, g[0]), math.gcd(gk, g[1])
        return gq, gk
    return None   # Const is decided without cells; Lin and Mod in closed form


def _cell_group(args: list, op):
    """Split the arguments of an And / Or into (one node for those constant on chunk cells, the others)."""
    cellwise = [a for a in args if not isinstance(a, Const) and _cell_sizes(a) is not None]
    if not cellwise:
        return None, args
    others = [a for a in args if not any(a is c for c in cellwise)]
    return (cellwise[0] if len(cellwise) == 1 else op(tuple(cellwise))), others


def _in_group(a, group) -> bool:
    return a is group or (isinstance(group, (And, Or)) and any(a is g for g in group.args))


def _cell_counts(lo: np.ndarray, hi: np.ndarray, g: int) -> np.ndarray:
    """Cells of size g (0: one cell) that the ranges [lo, hi] overlap (0 for an empty range)."""
    if g == 0:
        return (lo <= hi).astype(np.int64)
    return np.where(lo <= hi, _floordiv(hi, g) - _floordiv(lo, g) + 1, 0)


def _cell_range(lo: np.ndarray, hi: np.ndarray, g: int, i: np.ndarray):
    """The part of [lo, hi] in its i-th overlapped cell of size g."""
    if g == 0:
        return lo, hi
    start = (_floordiv(lo, g) + i) * g
    return np.maximum(lo, start), np.minimum(hi, start + (g - 1))


def _cell_slices(counts: np.ndarray):
    """Consecutive tile ranges [a, b) holding about _CELL_SLICE (tile, cell) pairs each."""
    ends = np.cumsum(counts)
    a, n = 0, len(counts)
    while a < n:
        base = ends[a - 1] if a else 0
        b = max(a + 1, int(np.searchsorted(ends, base + _CELL_SLICE, side="right")))
        yield a, min(b, n)
        a = b


def _cell_boxes(box: _Box, tiles: np.ndarray, nq: np.ndarray, nk: np.ndarray, g: tuple[int, int]):
    """Every (tile, cell) pair of `tiles` (indices into box) as (pair -> position in `tiles`, sub-box)."""
    cnt = nq * nk
    t = np.repeat(np.arange(len(tiles), dtype=np.int64), cnt)
    r = np.arange(len(t), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    per_row = nk[t]
    s = tiles[t]
    q0, q1 = _cell_range(box.q0[s], box.q1[s], g[0], r // per_row)
    k0, k1 = _cell_range(box.k0[s], box.k1[s], g[1], r % per_row)
    return t, _Box(q0, q1, k0, k1, box.qb[s], box.kb[s])


def _cell_plan(box: _Box, tiles: np.ndarray, g: tuple[int, int], geo: _Geo):
    """(cells along q, cells along k) per tile, charged to the budget; None when over it."""
    nq = _cell_counts(box.q0[tiles], box.q1[tiles], g[0])
    nk = _cell_counts(box.k0[tiles], box.k1[tiles], g[1])
    total = int((nq * nk).sum())
    if total > geo.cells_left:
        return None
    geo.cells_left -= total
    return nq, nk


def _eval_cells(node: IR, sub: _Box, geo: _Geo) -> np.ndarray:
    """The value of a node constant on chunk cells on each sub-box (one cell's part of a tile)."""
    v = evaluate_points(node, sub.q0, sub.k0, geo.inputs, geo.q_start)
    return np.broadcast_to(np.asarray(v, bool), sub.q0.shape)


def _cell_verdict(node: IR, g: tuple[int, int], box: _Box, geo: _Geo):
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
        count = _cell_counts(lo, hi, c)
        first = lo if c == 0 else _floordiv(lo, c) * c
        axes.append((first, count, c, int(count.max(initial=0)), first_pos, last_pos))
    (fq, nq, gq, NQ, q_first, q_last), (fk, nk, gk, NK, k_first, k_last) = axes
    per_tile = max(NQ * NK, 1)
    if n * per_tile > geo.cells_left:
        return None
    geo.cells_left -= n * per_tile
    iq, ik = np.arange(NQ, dtype=np.int64), np.arange(NK, dtype=np.int64)
    trues = np.zeros(n, np.int64)
    step = max(1, _CELL_SLICE // per_tile)
    for a in range(0, n, step):
        b = min(n, a + step)
        q = np.clip(fq[a:b, None, None] + gq * iq[None, :, None], q_first, q_last)
        k = np.clip(fk[a:b, None, None] + gk * ik[None, None, :], k_first, k_last)
        valid = (iq[None, :, None] < nq[a:b, None, None]) & (ik[None, None, :] < nk[a:b, None, None])
        val = evaluate_points(node, q, k, geo.inputs, geo.q_start)
        trues[a:b] = np.logical_and(val, valid).sum(axis=(1, 2))
    cnt = nq * nk
    v = np.where(trues == 0, _NONE, np.where(trues == cnt, _ALL, _SOME)).astype(np.int8)
    return v, np.ones(n, bool)


def _split_on_cells(v: np.ndarray, exact: np.ndarray, box: _Box, geo: _Geo, group: IR, others: list, op) -> None:
    """Tighten the unproven PARTIAL tiles of ``op(group, *others)`` in place, cell by cell: on each cell of
    `group` it is a constant, which decides the cell (false in an And, true in an Or) or leaves the others
    to be classified on that cell's part of the tile."""
    todo = np.nonzero((v == _SOME) & ~exact)[0]
    if len(todo) == 0 or not others:
        return
    g = _cell_sizes(group)
    plan = _cell_plan(box, todo, g, geo)
    if plan is None:
        return
    nq, nk = plan
    cnt = nq * nk
    rest = others[0] if len(others) == 1 else op(tuple(others))
    decided = _NONE if op is And else _ALL
    for a, b in _cell_slices(cnt):
        t, sub = _cell_boxes(box, todo[a:b], nq[a:b], nk[a:b], g)
        val = _eval_cells(group, sub, geo)
        open_ = np.nonzero(val if op is And else ~val)[0]
        sv = np.full(len(t), decided, np.int8)
        se = np.ones(len(t), bool)
        if len(open_):
            sv[open_], se[open_] = _classify(rest, _Box(sub.q0[open_], sub.q1[open_], sub.k0[open_],
                                                        sub.k1[open_], sub.qb[open_], sub.kb[open_]), geo)
        m = b - a
        none = np.bincount(t[sv == _NONE], minlength=m)
        all_ = np.bincount(t[sv == _ALL], minlength=m)
        proof = np.bincount(t[(sv == _SOME) & se], minlength=m)   # a proven PARTIAL cell: both kinds of pair
        c = cnt[a:b]
        nv = np.where(none == c, _NONE, np.where(all_ == c, _ALL, _SOME)).astype(np.int8)
        v[todo[a:b]] = nv
        exact[todo[a:b]] = (nv != _SOME) | ((all_ + proof > 0) & (none + proof > 0))


def chunk_split(ir: IR):
    """How `ir` splits on chunk cells, for counting tiles cell by cell (compiler/analysis.py).

    Returns (group, (gq, gk), rest, op): `group` is constant on every gq x gk cell (see above) and `ir` is
    ``op(group, rest)`` -- or just `group` when rest and op are None (the whole of `ir` is constant on the
    cells). None when no part of `ir` is: neither `ir` nor any argument of a top-level and/or.
    """
    if isinstance(ir, Const):
        return None
    g = _cell_sizes(ir)
    if g is not None:
        return ir, g, None, None
    if isinstance(ir, (And, Or)):
        op = type(ir)
        group, others = _cell_group(list(ir.args), op)
        if group is not None and others:
            return group, _cell_sizes(group), (others[0] if len(others) == 1 else op(tuple(others))), op
    return None


def chunk_cells(q0: np.ndarray, q1: np.ndarray, k0: np.ndarray, k1: np.ndarray, g: tuple[int, int],
                counts_only: bool = False):
    """The chunk cells of size g = (gq, gk) (0: one cell along that axis) that the rectangles
    [q0, q1] x [k0, k1] (absolute positions, non-empty) overlap, each clipped to its rectangle.

    Returns the cells per rectangle (counts_only), else (rectangle of each cell, cq0, cq1, ck0, ck1),
    rectangle by rectangle.
    """
    nq, nk = _cell_counts(q0, q1, g[0]), _cell_counts(k0, k1, g[1])
    if counts_only:
        return nq * nk
    zero = np.zeros(len(q0), np.int64)
    t, sub = _cell_boxes(_Box(q0, q1, k0, k1, zero, zero), np.arange(len(q0), dtype=np.int64), nq, nk, g)
    return t, sub.q0, sub.q1, sub.k0, sub.k1


def classify_rects(ir: IR, q0: np.ndarray, q1: np.ndarray, k0: np.ndarray, k1: np.ndarray, qb: np.ndarray,
                   kb: np.ndarray, *, q_len: int, kv_len: int, block_q: int, block_k: int, q_start: int,
                   inputs: dict) -> np.ndarray:
    """What `ir` holds on rectangles [q0, q1] x [k0, k1] (absolute positions, non-empty), each inside tile
    (qb, kb) of this geometry: int8 TileKind values, FULL and EMPTY proven (sound: the classification of
    `lower`), PARTIAL when not proven otherwise."""
    geo = _Geo(q_len, kv_len, block_q, block_k, q_start, inputs)
    v, _ = _classify(ir, _Box(q0, q1, k0, k1, qb, kb), geo)
    return v


def _residue_count(x, m: int, residues) -> np.ndarray:
    """How many v in [0, x] (counting below zero for negative x) have v % m in `residues`."""
    member = np.isin(np.arange(m), residues).astype(np.int64)
    pre = np.concatenate([[0], np.cumsum(member)])
    return _floordiv(x, m) * len(residues) + pre[np.mod(x, m) + 1]


def _band_and_residues(lin: Lin, mod: Mod, box: _Box):
    """Exact verdict of ``lo <= f <= hi and (f + c0) % m in R`` for a form f with coefficients 0 or +-1,
    which takes every integer between its extremes on a box."""
    mn, mx = _lin_range(lin.cq, lin.ck, box)
    lo = mn if lin.lo is None else np.maximum(mn, lin.lo)
    hi = mx if lin.hi is None else np.minimum(mx, lin.hi)
    hits = np.where(lo <= hi, _residue_count(hi + mod.c0, mod.m, mod.residues)
                    - _residue_count(lo - 1 + mod.c0, mod.m, mod.residues), 0)
    full = (lo == mn) & (hi == mx) & (hits == mx - mn + 1)
    v = np.where(hits == 0, _NONE, np.where(full, _ALL, _SOME)).astype(np.int8)
    return v, np.ones(len(v), bool)


class _Interval:
    """Interval arithmetic over tiles for checked AST expressions (sound bounds, per tile)."""

    def __init__(self, geo: _Geo, box: _Box):
        self.geo, self.box = geo, box

    def int(self, e: N.Expr):
        box = self.box
        if isinstance(e, N.Num):
            v = np.full(len(box.q0), e.value, np.int64)
            return v, v
        if isinstance(e, N.Name):
            if e.id == "q":
                return box.q0, box.q1
            if e.id == "k":
                return box.k0, box.k1
            raise AssertionError(f"unspecialised variable {e.id}")
        if isinstance(e, N.Unary):
            lo, hi = self.int(e.operand)
            return -hi, -lo
        if isinstance(e, N.BinOp):
            a0, a1 = self.int(e.left)
            b0, b1 = self.int(e.right)
            if e.op == "+":
                return a0 + b0, a1 + b1
            if e.op == "-":
                return a0 - b1, a1 - b0
            if e.op == "*":
                c = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
                return np.minimum.reduce(c), np.maximum.reduce(c)
            m = e.right.value
            if e.op == "//":
                x, y = _floordiv(a0, m), _floordiv(a1, m)
                return np.minimum(x, y), np.maximum(x, y)
            same = _floordiv(a0, m) == _floordiv(a1, m)
            lo, hi = (0, m - 1) if m > 0 else (m + 1, 0)
            return np.where(same, np.mod(a0, m), lo), np.where(same, np.mod(a1, m), hi)
        if isinstance(e, N.Call):
            args = [self.int(a) for a in e.args]
            if e.func == "abs":
                lo, hi = args[0]
                return np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0)), np.maximum(np.abs(lo), np.abs(hi))
            if e.func == "min":
                return np.minimum.reduce([a for a, _ in args]), np.minimum.reduce([b for _, b in args])
            if e.func == "max":
                return np.maximum.reduce([a for a, _ in args]), np.maximum.reduce([b for _, b in args])
            if e.func == "hash":
                single = np.logical_and.reduce([a == b for a, b in args])
                with np.errstate(over="ignore"):
                    h = hash32(*[a for a, _ in args])
                h = np.broadcast_to(np.asarray(h, np.int64), single.shape)
                return np.where(single, h, 0), np.where(single, h, 0xFFFFFFFF)
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.ListLit):
                vals = np.array([x.value for x in e.value.elts], np.int64)
                lo, hi = self.int(e.index)
                single = lo == hi
                pick = vals[np.clip(lo, 0, len(vals) - 1)]
                return np.where(single, pick, vals.min()), np.where(single, pick, vals.max())
            name, axis = e.value.id, e.index.id
            mins, maxs = self.geo.input_range(name, axis)
            blocks = self.box.kb if axis == "k" else self.box.qb
            return mins[blocks], maxs[blocks]
        raise AssertionError(f"no interval rule for {type(e).__name__}")

    def bool(self, e: N.Expr) -> np.ndarray:
        n = len(self.box.q0)
        if isinstance(e, N.BoolLit):
            return np.full(n, _ALL if e.value else _NONE, np.int8)
        if isinstance(e, N.Unary):
            return (2 - self.bool(e.operand)).astype(np.int8)
        if isinstance(e, N.BoolOp):
            vs = np.stack([self.bool(v) for v in e.values])
            return (vs.min(0) if e.op == "and" else vs.max(0)).astype(np.int8)
        if isinstance(e, N.Compare):
            out = np.full(n, _ALL, np.int8)
            left = e.left
            for op, right in zip(e.ops, e.comparators):
                out = np.minimum(out, self._link(left, op, right))
                left = right
            return out
        raise AssertionError(f"no interval rule for {type(e).__name__}")

    def _link(self, left, op, right) -> np.ndarray:
        a0, a1 = self.int(left)
        if op in ("in", "not in"):
            if isinstance(right, N.Call):
                start, stop, step = (x.value for x in right.args)
                values = np.array(list(range(start, stop, step)), np.int64)
            else:
                values = np.array(sorted(x.value for x in right.elts), np.int64)
            inside = np.searchsorted(values, a1, "right") - np.searchsorted(values, a0, "left")
            single = a0 == a1
            v = np.where(inside == 0, _NONE, np.where(single | (inside == a1 - a0 + 1), _ALL, _SOME))
            return (2 - v if op == "not in" else v).astype(np.int8)
        b0, b1 = self.int(right)
        if op == "<":
            return np.where(a1 < b0, _ALL, np.where(a0 >= b1, _NONE, _SOME)).astype(np.int8)
        if op == "<=":
            return np.where(a1 <= b0, _ALL, np.where(a0 > b1, _NONE, _SOME)).astype(np.int8)
        if op == ">":
            return np.where(a0 > b1, _ALL, np.where(a1 <= b0, _NONE, _SOME)).astype(np.int8)
        if op == ">=":
            return np.where(a0 >= b1, _ALL, np.where(a1 < b0, _NONE, _SOME)).astype(np.int8)
        eq = np.where((a0 == a1) & (b0 == b1) & (a0 == b0), _ALL,
                      np.where((a1 < b0) | (b1 < a0), _NONE, _SOME)).astype(np.int8)
        return eq if op == "==" else (2 - eq).astype(np.int8)


# -- point evaluation (refinement and tests) ------------------------------------------------------


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
        return functools.reduce(np.logical_and if isinstance(e, And) else np.logical_or, parts)
    if isinstance(e, N.Num):
        return np.int64(e.value)
    if isinstance(e, N.BoolLit):
        return np.bool_(e.value)
    if isinstance(e, N.Name):
        return {"q": q, "k": k}[e.id]
    if isinstance(e, N.Unary):
        x = evaluate_points(e.operand, q, k, inputs, q_start)
        return np.logical_not(x) if e.op == "not" else -x
    if isinstance(e, N.BinOp):
        a = evaluate_points(e.left, q, k, inputs, q_start)
        b = evaluate_points(e.right, q, k, inputs, q_start)
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide, "%": np.mod}[e.op](a, b)
    if isinstance(e, N.BoolOp):
        parts = [evaluate_points(v, q, k, inputs, q_start) for v in e.values]
        return functools.reduce(np.logical_and if e.op == "and" else np.logical_or, parts)
    if isinstance(e, N.Compare):
        out, left = None, evaluate_points(e.left, q, k, inputs, q_start)
        for op, right in zip(e.ops, e.comparators):
            if op in ("in", "not in"):
                if isinstance(right, N.Call):
                    vals = list(range(*[a.value for a in right.args]))
                else:
                    vals = [x.value for x in right.elts]
                r = np.isin(left, np.array(vals, np.int64))
                r = ~r if op == "not in" else r
            else:
                rv = evaluate_points(right, q, k, inputs, q_start)
                r = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                     "==": np.equal, "!=": np.not_equal}[op](left, rv)
                left = rv
            out = r if out is None else out & r
        return out
    if isinstance(e, N.Call):
        args = [evaluate_points(a, q, k, inputs, q_start) for a in e.args]
        if e.func == "abs":
            return np.abs(args[0])
        if e.func == "min":
            return np.minimum.reduce(np.broadcast_arrays(*args))
        if e.func == "max":
            return np.maximum.reduce(np.broadcast_arrays(*args))
        if e.func == "hash":
            with np.errstate(over="ignore"):   # 64-bit wrap-around is part of the definition
                return hash32(*[np.asarray(a, np.int64) for a in args])
    if isinstance(e, N.Subscript):
        if isinstance(e.value, N.ListLit):
            vals = np.array([x.value for x in e.value.elts], np.int64)
            return vals[evaluate_points(e.index, q, k, inputs, q_start)]
        axis, values = inputs[e.value.id]
        pos = q if e.index.id == "q" else k
        if axis == "q":
            pos = pos - q_start   # int[q] inputs are per query row
        return values[pos]
    raise AssertionError(f"cannot evaluate {type(e).__name__}")


def _refine(ir: IR, v: np.ndarray, exact: np.ndarray, box: _Box, geo: _Geo, budget: int) -> int:
    """Evaluate the unproven PARTIAL tiles point by point when they fit the budget; the points evaluated."""
    todo = np.nonzero((v == _SOME) & ~exact)[0]
    if len(todo) == 0 or len(todo) * geo.bq * geo.bk > budget:
        return 0
    dq = np.arange(geo.bq, dtype=np.int64)
    dk = np.arange(geo.bk, dtype=np.int64)
    chunk = max(1, (1 << 22) // (geo.bq * geo.bk))
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
        v[t] = np.where(~hit, _NONE, np.where(allv, _ALL, _SOME))
    return len(todo) * geo.bq * geo.bk


def _csr(major: np.ndarray, minor: np.ndarray, n_major: int):
    # Tiles arrive sorted by (query block, key block); a stable sort on the major axis keeps the minor sorted.
    order = np.argsort(major, kind="stable")
    counts = np.bincount(major, minlength=n_major)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, minor[order].astype(np.int32)


CHUNK_TILES = 1 << 21   # candidate tiles classified at once: bounds the temporaries, not the result


def _lower_one(ir: IR, geo: _Geo, budget: int, cell_budget: int = CELL_BUDGET):
    """Tiles of one variant: (qb, kb, kind) arrays of the non-empty tiles, plus work counters
    (candidate tiles, chunk cells evaluated, points evaluated).

    Query blocks are taken in chunks of about CHUNK_TILES candidate tiles, so the working memory stays
    bounded and the peak follows the size of the result (a few bytes per non-empty tile).
    """
    ivs = _support(ir, geo)
    per_row = np.zeros(geo.nqb, np.int64)
    for lo, hi in ivs:
        per_row += np.maximum(np.minimum(hi, geo.nkb - 1) - np.maximum(lo, 0) + 1, 0)
    bounds = np.searchsorted(np.cumsum(per_row), np.arange(1, 1 + int(per_row.sum()) // CHUNK_TILES) * CHUNK_TILES)
    edges = [0] + sorted(set(int(b) + 1 for b in bounds if 0 <= b < geo.nqb - 1)) + [geo.nqb]
    out_qb, out_kb, out_v = [], [], []
    work = {"candidate_tiles": 0, "cells_evaluated": 0, "points_refined": 0}
    for r0, r1 in zip(edges[:-1], edges[1:]):
        qb, kb = _tiles([(lo[r0:r1], hi[r0:r1]) for lo, hi in ivs], geo, r0)
        box = _Box(geo.q_lo[qb], geo.q_hi[qb], geo.k_lo[kb], geo.k_hi[kb], qb, kb)
        geo.cells_left = cell_budget
        v, exact = _classify(ir, box, geo)
        work["cells_evaluated"] += cell_budget - geo.cells_left
        work["points_refined"] += _refine(ir, v, exact, box, geo, budget)
        keep = v != _NONE
        out_qb.append(qb[keep].astype(np.int32))
        out_kb.append(kb[keep].astype(np.int32))
        out_v.append(v[keep])
        work["candidate_tiles"] += len(qb)
        del qb, kb, box, v, exact
    return np.concatenate(out_qb), np.concatenate(out_kb), np.concatenate(out_v), work


def lower(variants: list[IR], assignment: np.ndarray, q_len: int, kv_len: int, *, block_q: int, block_k: int,
          q_start: int, inputs_per_batch: list[dict[str, tuple[str, np.ndarray]]] | None = None,
          refine_budget: int = REFINE_BUDGET, cell_budget: int = CELL_BUDGET) -> BlockMask:
    """Lower per-(batch, head) canonical IRs to one BlockMask.

    Args:
        variants: the distinct IRs (after specialising h and b).
        assignment: int [B, H, 2] -- for each (b, h), (index into `variants`, index into inputs_per_batch).
        inputs_per_batch: the runtime input tables, one dict per distinct batch slice.
        refine_budget: points evaluated one by one, at most, per chunk of candidate tiles, to tighten the
            PARTIAL tiles that the closed form leaves unproven (0: none; the mask stays sound).
        cell_budget: (tile, chunk cell) pairs evaluated, at most, per chunk of candidate tiles, for the
            conditions that read q and k only through ``q // c`` and ``k // c`` (over it they are bounded
            with interval arithmetic instead; 0: never).
    """
    for name, v in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ArgumentError(f"{name} must be a positive int, got {v!r}")
    inputs_per_batch = inputs_per_batch or [{}]
    B, H = assignment.shape[:2]
    pairs = {}
    variant = np.zeros((B, H), np.int32)
    for b in range(B):
        for h in range(H):
            key = (int(assignment[b, h, 0]), int(assignment[b, h, 1]))
            variant[b, h] = pairs.setdefault(key, len(pairs))
    geo0 = _Geo(q_len, kv_len, block_q, block_k, q_start, {})
    nqb, nkb = geo0.nqb, geo0.nkb
    rows = {"partial": [], "full": [], "t_partial": [], "t_full": []}
    offsets = {k: 0 for k in rows}
    ptrs = {k: [] for k in rows}
    work = {"candidate_tiles": 0, "cells_evaluated": 0, "points_refined": 0}
    for (vi, bi) in pairs:
        geo = _Geo(q_len, kv_len, block_q, block_k, q_start, inputs_per_batch[bi])
        qb, kb, kind, counts = _lower_one(variants[vi], geo, refine_budget, cell_budget)
        for name, value in counts.items():
            work[name] += value
        for name, sel in (("partial", kind == _SOME), ("full", kind == _ALL)):
            for prefix, major, minor, n in (("", qb, kb, nqb), ("t_", kb, qb, nkb)):
                ptr, idx = _csr(major[sel], minor[sel], n)
                rows[prefix + name].append(idx)
                ptrs[prefix + name].append(ptr + offsets[prefix + name])
                offsets[prefix + name] += len(idx)

    def cat(name, n):
        idx = np.concatenate(rows[name]) if rows[name] else np.zeros(0, np.int32)
        ptr = np.stack(ptrs[name]) if ptrs[name] else np.zeros((0, n + 1), np.int64)
        return ptr, idx.astype(np.int32)

    pp, pi = cat("partial", nqb)
    fp, fi = cat("full", nqb)
    tpp, tpi = cat("t_partial", nkb)
    tfp, tfi = cat("t_full", nkb)
    return BlockMask(q_len, kv_len, block_q, block_k, q_start, B, H, variant, pp, pi, fp, fi, tpp, tpi, tfp, tfi,
                     stats=work)
