"""Classification: each candidate tile is EMPTY, PARTIAL or FULL, with three-valued logic.

Linear and modular atoms are exact on a tile; conjunctions with ranges of q or k cut the tile to a
sub-rectangle first; conditions that read q and k only through ``q // c`` and ``k // c`` are decided per
chunk cell (:mod:`.cells`); any other condition is bounded with interval arithmetic (:mod:`.interval`).
A verdict comes with ``exact``: whether a PARTIAL verdict is proven (else refinement may tighten it).
"""

from __future__ import annotations

import numpy as np

from ..ir import IR, And, Const, Lin, Mod, Opaque, Or
from .cells import cell_boxes, cell_group, cell_plan, cell_sizes, cell_slices, cell_verdict, eval_cells, in_group, join
from .geometry import ALL, BIG, NONE, SOME, Box, Geo, floordiv, lin_range
from .interval import Interval

__all__ = ["classify", "classify_rects"]


def classify(node: IR, box: Box, geo: Geo):
    """(verdict, exact) arrays over tiles: verdict in {NONE, SOME, ALL}; exact says SOME is proven."""
    n = len(box.q0)
    empty_box = (box.q0 > box.q1) | (box.k0 > box.k1)
    if isinstance(node, Const):
        v = np.full(n, ALL if node.value else NONE, np.int8)
        return np.where(empty_box, NONE, v).astype(np.int8), np.ones(n, bool)
    if isinstance(node, Lin):
        mn, mx = lin_range(node.cq, node.ck, box)
        lo = -BIG if node.lo is None else node.lo
        hi = BIG if node.hi is None else node.hi
        v = np.where((mx < lo) | (mn > hi) | empty_box, NONE,
                     np.where((mn >= lo) & (mx <= hi), ALL, SOME)).astype(np.int8)
        # a form with coefficients 0 or +-1 takes every integer between its extremes on a box
        exact = abs(node.cq) <= 1 and abs(node.ck) <= 1
        return v, np.full(n, exact)
    if isinstance(node, Mod):
        mn, mx = lin_range(node.cq, node.ck, box)
        mn, mx = mn + node.c0, mx + node.c0
        hits = _residue_count(mx, node.m, node.residues) - _residue_count(mn - 1, node.m, node.residues)
        total = mx - mn + 1
        v = np.where((hits == 0) | empty_box, NONE, np.where(hits == total, ALL, SOME)).astype(np.int8)
        exact = abs(node.cq) <= 1 and abs(node.ck) <= 1
        return v, np.full(n, exact)
    cells = cell_sizes(node)
    if cells is not None:
        out = cell_verdict(node, cells, box, geo)
        if out is not None:
            return out
    if isinstance(node, Opaque):
        v = Interval(geo, box).bool(node.expr)
        v = np.where(empty_box, NONE, v).astype(np.int8)
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
        group, rest = cell_group(rest, And) if cells is None else (None, rest)
        if group is not None:
            rest.append(group)
        sub = box.restrict(q0, q1, k0, k1)
        cut = (q0 != box.q0) | (q1 != box.q1) | (k0 != box.k0) | (k1 != box.k1)
        sub_empty = (q0 > q1) | (k0 > k1)
        # A band and a residue condition on the same form (dilation) are judged together, exactly.
        verdicts, paired = [], set()
        lins = {a.form: a for a in rest if isinstance(a, Lin)}
        for a in rest:
            if isinstance(a, Mod) and (a.cq, a.ck) in lins and abs(a.cq) <= 1 and abs(a.ck) <= 1:
                lin = lins[(a.cq, a.ck)]
                paired.update((id(lin), id(a)))
                verdicts.append(_band_and_residues(lin, a, sub))
        verdicts += [classify(a, sub, geo) for a in rest if id(a) not in paired]
        if verdicts:
            vs, n_some, some_exact = _tally(verdicts)
            any_none = (vs == NONE).any(0)
            all_all = (vs == ALL).all(0)
        else:
            any_none = np.zeros(n, bool)
            all_all = np.ones(n, bool)
            n_some = np.zeros(n, np.int64)
            some_exact = np.ones(n, bool)
        v = np.where(sub_empty | any_none | empty_box, NONE,
                     np.where(all_all & ~cut, ALL, SOME)).astype(np.int8)
        exact = (n_some == 0) | ((n_some == 1) & some_exact)
        if group is not None:
            split_on_cells(v, exact, box, geo, group, [a for a in node.args if not in_group(a, group)], And)
        return v, exact
    # Or
    group, args = cell_group(list(node.args), Or) if cells is None else (None, list(node.args))
    if group is not None:
        args.append(group)
    vs, n_some, some_exact = _tally([classify(a, box, geo) for a in args])
    any_all = (vs == ALL).any(0)
    all_none = (vs == NONE).all(0)
    v = np.where(any_all, ALL, np.where(all_none, NONE, SOME)).astype(np.int8)
    exact = (n_some <= 1) & some_exact
    if group is not None:
        split_on_cells(v, exact, box, geo, group, [a for a in node.args if not in_group(a, group)], Or)
    return v, exact


def _tally(verdicts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (verdict, exact) pairs of an and/or's arguments as (stacked verdicts, SOME verdicts per tile,
    whether each tile's SOME verdicts are all proven)."""
    vs = np.stack([v for v, _ in verdicts])
    es = np.stack([e for _, e in verdicts])
    return vs, (vs == SOME).sum(0), np.where(vs == SOME, es, True).all(0)


def split_on_cells(v: np.ndarray, exact: np.ndarray, box: Box, geo: Geo, group: IR, others: list, op) -> None:
    """Tighten the unproven PARTIAL tiles of ``op(group, *others)`` in place, cell by cell: on each cell of
    `group` it is a constant, which decides the cell (false in an And, true in an Or) or leaves the others
    to be classified on that cell's part of the tile."""
    todo = np.nonzero((v == SOME) & ~exact)[0]
    if len(todo) == 0 or not others:
        return
    g = cell_sizes(group)
    plan = cell_plan(box, todo, g, geo)
    if plan is None:
        return
    nq, nk = plan
    cnt = nq * nk
    rest = join(others, op)
    decided = NONE if op is And else ALL
    for a, b in cell_slices(cnt):
        t, sub = cell_boxes(box, todo[a:b], nq[a:b], nk[a:b], g)
        val = eval_cells(group, sub, geo)
        open_ = np.nonzero(val if op is And else ~val)[0]
        sv = np.full(len(t), decided, np.int8)
        se = np.ones(len(t), bool)
        if len(open_):
            sv[open_], se[open_] = classify(rest, Box(sub.q0[open_], sub.q1[open_], sub.k0[open_],
                                                        sub.k1[open_], sub.qb[open_], sub.kb[open_]), geo)
        m = b - a
        none = np.bincount(t[sv == NONE], minlength=m)
        all_ = np.bincount(t[sv == ALL], minlength=m)
        proof = np.bincount(t[(sv == SOME) & se], minlength=m)   # a proven PARTIAL cell: both kinds of pair
        c = cnt[a:b]
        nv = np.where(none == c, NONE, np.where(all_ == c, ALL, SOME)).astype(np.int8)
        v[todo[a:b]] = nv
        exact[todo[a:b]] = (nv != SOME) | ((all_ + proof > 0) & (none + proof > 0))


def classify_rects(ir: IR, q0: np.ndarray, q1: np.ndarray, k0: np.ndarray, k1: np.ndarray, qb: np.ndarray,
                   kb: np.ndarray, *, q_len: int, kv_len: int, block_q: int, block_k: int, q_start: int,
                   inputs: dict) -> np.ndarray:
    """What `ir` holds on rectangles [q0, q1] x [k0, k1] (absolute positions, non-empty), each inside tile
    (qb, kb) of this geometry: int8 TileKind values, FULL and EMPTY proven (sound: the classification of
    `lower`), PARTIAL when not proven otherwise."""
    geo = Geo(q_len, kv_len, block_q, block_k, q_start, inputs)
    v, _ = classify(ir, Box(q0, q1, k0, k1, qb, kb), geo)
    return v


def _residue_count(x, m: int, residues) -> np.ndarray:
    """How many v in [0, x] (counting below zero for negative x) have v % m in `residues`."""
    member = np.isin(np.arange(m), residues).astype(np.int64)
    pre = np.concatenate([[0], np.cumsum(member)])
    return floordiv(x, m) * len(residues) + pre[np.mod(x, m) + 1]


def _band_and_residues(lin: Lin, mod: Mod, box: Box):
    """Exact verdict of ``lo <= f <= hi and (f + c0) % m in R`` for a form f with coefficients 0 or +-1,
    which takes every integer between its extremes on a box."""
    mn, mx = lin_range(lin.cq, lin.ck, box)
    lo = mn if lin.lo is None else np.maximum(mn, lin.lo)
    hi = mx if lin.hi is None else np.minimum(mx, lin.hi)
    hits = np.where(lo <= hi, _residue_count(hi + mod.c0, mod.m, mod.residues)
                    - _residue_count(lo - 1 + mod.c0, mod.m, mod.residues), 0)
    full = (lo == mn) & (hi == mx) & (hits == mx - mn + 1)
    v = np.where(hits == 0, NONE, np.where(full, ALL, SOME)).astype(np.int8)
    return v, np.ones(len(v), bool)
