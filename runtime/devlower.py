"""Block masks of document patterns lowered on the inputs' device with torch operations.

Handled exactly: a mask that is ``doc[q] == doc[k]`` (an int[k] input) joined by ``and`` with linear
conditions on ``q - k``, ``k`` and ``q`` whose band on ``q - k`` contains 0 (document, document_full,
document_sliding_window, and any conjunction of a document condition with causal, windows, ranges of k or q),
with document ids monotone along each row (sorted ascending or descending) and query positions inside the
id array. Anything else returns None and takes the closed-form lowering (compiler/lower/).

A document is a run of equal ids. With monotone ids each id is one run, so ``doc[q] == doc[k]`` holds exactly
when q and k lie in the same run. Per query block, the candidate key blocks are one range: the runs the block
touches (their first start and last end) intersected with the linear bounds. Each candidate tile is then
decided exactly from its first and last shared runs (a run strictly between them lies wholly inside the tile,
and its diagonal is allowed, since the band contains 0). Work is O(kv_len) elementwise to find the runs plus
O(candidate tiles), and candidate tiles are the non-empty ones plus at most two per query block. The one
device->host synchronisation of a build reads the number of candidate tiles (an output size) and whether
the ids are monotone.
"""

from __future__ import annotations

import torch

from ..compiler import nodes as N
from ..compiler.ir import And, Lin, Opaque
from .tiles import Tiles

__all__ = ["document_form", "document_tiles"]

_BIG = 1 << 62   # an open end of a bound; positions stay far below it, so sums never overflow int64


def _doc_name(expr) -> str | None:
    """`x` when expr is ``x[q] == x[k]`` (either side first)."""
    if not (isinstance(expr, N.Compare) and expr.ops == ("==",) and len(expr.comparators) == 1):
        return None
    sides = (expr.left, expr.comparators[0])
    if not all(isinstance(s, N.Subscript) and isinstance(s.value, N.Name) and isinstance(s.index, N.Name)
               for s in sides):
        return None
    if sides[0].value.id != sides[1].value.id or {sides[0].index.id, sides[1].index.id} != {"q", "k"}:
        return None
    return sides[0].value.id


def _at(a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    return a.index_select(0, i)   # a gather along one axis: cheaper than general indexing


def document_form(ir):
    """(input name, (dlo, dhi), (klo, khi), (qlo, qhi)) when the IR is a document condition and linear bounds
    this module lowers exactly (see the module docstring); None otherwise."""
    atoms = ir.args if isinstance(ir, And) else (ir,)
    name = None
    bounds = {(1, -1): [-_BIG, _BIG], (0, 1): [-_BIG, _BIG], (1, 0): [-_BIG, _BIG]}
    for a in atoms:
        if isinstance(a, Opaque) and name is None and _doc_name(a.expr) is not None:
            name = _doc_name(a.expr)
        elif isinstance(a, Lin) and a.form in bounds:
            b = bounds[a.form]
            b[0] = b[0] if a.lo is None else min(max(b[0], a.lo), _BIG)
            b[1] = b[1] if a.hi is None else max(min(b[1], a.hi), -_BIG)
        else:
            return None
    band = bounds[(1, -1)]
    if name is None or not band[0] <= 0 <= band[1]:
        return None
    return name, tuple(band), tuple(bounds[(0, 1)]), tuple(bounds[(1, 0)])


def document_tiles(form, doc: torch.Tensor, q_len: int, kv_len: int, q_start: int, block_q: int, block_k: int):
    """The Tiles (runtime/tiles.py) of ids `doc` int64 [V, kv_len] on their device (one stored mask per row) at
    block_q x block_k tiles; None when the ids are not monotone or the query
    positions leave the id array (the caller lowers in closed form)."""
    _, (dlo, dhi), (klo, khi), (qlo, qhi) = form
    if q_len == 0 or kv_len == 0 or q_start < 0 or q_start + q_len > kv_len:
        return None
    device = doc.device
    V = doc.shape[0]
    nqb, nkb = -(-q_len // block_q), -(-kv_len // block_k)
    # one ascending sequence over every row: ids turned ascending (descending rows negated), shifted to start at
    # 0, and row v lifted by v * 2**33 (int32 ids span less than 2**33); a run is then a range of equal keys,
    # found by binary search, and runs compare by their keys
    sign = torch.where(doc[:, -1:] >= doc[:, :1], 1, -1)
    key = (doc - doc[:, :1]) * sign + torch.arange(V, device=device)[:, None] * (1 << 33)
    monotone = (key[:, 1:] >= key[:, :-1]).all()
    flat = key.reshape(-1)

    def key_at(v, p):
        return torch.take(flat, v * kv_len + p)

    def run_start(v, x):   # first position of the run with key x (in row v)
        return torch.searchsorted(flat, x, side="left") - v * kv_len

    def run_end(v, x):     # one past its last position
        return torch.searchsorted(flat, x, side="right") - v * kv_len

    # per query block: its rows (absolute positions) cut by the q range, and its range of candidate key blocks
    qb = torch.arange(nqb, device=device)
    p_lo = q_start + qb * block_q
    p_hi = q_start + torch.clamp((qb + 1) * block_q, max=q_len) - 1
    ql, qh = torch.clamp(p_lo, min=qlo), torch.clamp(p_hi, max=qhi)
    rows_ok = ql <= qh
    ql_i, qh_i = torch.minimum(ql, p_hi), torch.maximum(qh, p_lo)   # readable positions even when cut empty
    rows = torch.arange(V, device=device)[:, None]
    k_lo = torch.clamp(torch.maximum(run_start(rows, key_at(rows, ql_i)), ql_i - dhi), min=max(klo, 0))
    k_hi = torch.clamp(torch.minimum(run_end(rows, key_at(rows, qh_i)) - 1, qh_i - dlo), max=min(khi, kv_len - 1))
    kb_lo = torch.div(k_lo, block_k, rounding_mode="floor")
    counts = torch.where(rows_ok & (k_lo <= k_hi), torch.div(k_hi, block_k, rounding_mode="floor") - kb_lo + 1, 0)
    flat_counts = counts.reshape(-1)
    total, ok = torch.stack([flat_counts.sum(), monotone.to(torch.int64)]).tolist()   # the one synchronisation
    if not ok:
        return None

    # the keys at both ends of every query block's rows and every key block's keys, and their runs' bounds
    # (binary searches per block, none per tile)
    kbs = torch.arange(nkb, device=device)
    k0s = kbs * block_k
    k1s = torch.clamp(k0s + block_k, max=kv_len) - 1
    kls, khs = torch.clamp(k0s, min=klo).clamp(max=kv_len - 1), torch.clamp(k1s, max=khi).clamp(min=0)
    ends = {}
    for name, pos in (("ql", ql_i), ("qh", qh_i), ("kl", kls), ("kh", khs)):
        at = key_at(rows, pos)
        ends[name] = (at.reshape(-1), run_start(rows, at).reshape(-1), run_end(rows, at).reshape(-1))

    # every candidate tile, in (variant, query block, key block) order
    row = torch.repeat_interleave(torch.arange(V * nqb, device=device), flat_counts, output_size=total)
    first = torch.cumsum(flat_counts, 0) - flat_counts
    kb = _at(kb_lo.reshape(-1), row) + torch.arange(total, device=device) - _at(first, row)
    v, t_qb = torch.div(row, nqb, rounding_mode="floor"), row % nqb
    col = v * nkb + kb
    ql_t, qh_t = _at(ql_i, t_qb), _at(qh_i, t_qb)
    k0, k1, kl, kh = (_at(a, kb) for a in (k0s, k1s, kls, khs))
    (rq_lo, sq_lo, eq_lo), (rq_hi, sq_hi, eq_hi) = ((_at(a, row) for a in ends[n]) for n in ("ql", "qh"))
    (rk_lo, sk_lo, ek_lo), (rk_hi, sk_hi, ek_hi) = ((_at(a, col) for a in ends[n]) for n in ("kl", "kh"))
    # the first shared run is the later of the runs at the tile's first row and first key, the last shared
    # one the earlier of the runs at its last row and last key
    later = rq_lo >= rk_lo
    s1, e1 = torch.where(later, sq_lo, sk_lo), torch.where(later, eq_lo, ek_lo)
    earlier = rq_hi <= rk_hi
    s2, e2 = torch.where(earlier, sq_hi, sk_hi), torch.where(earlier, eq_hi, ek_hi)

    def run_allows(s, e):
        # the tile cut to the run [s, e): does the band reach it?
        a_lo, a_hi = torch.maximum(ql_t, s), torch.minimum(qh_t, e - 1)
        b_lo, b_hi = torch.maximum(kl, s), torch.minimum(kh, e - 1)
        return (a_lo - b_hi <= dhi) & (a_hi - b_lo >= dlo)

    shared = torch.maximum(rq_lo, rk_lo) <= torch.minimum(rq_hi, rk_hi)
    # a run strictly between the first and the last shared one lies inside the tile, and its diagonal is allowed
    nonempty = shared & (run_allows(s1, e1) | run_allows(s2, e2) | (e1 < s2))
    uncut = (ql_t == _at(p_lo, t_qb)) & (qh_t == _at(p_hi, t_qb)) & (kl == k0) & (kh == k1)
    full = (uncut & (rq_lo == rq_hi) & (rk_lo == rk_hi) & (rq_lo == rk_lo)
            & (ql_t - kh >= dlo) & (qh_t - kl <= dhi))

    kind = torch.where(full, 2, torch.where(nonempty, 1, 0))
    return Tiles(v, t_qb, kb, kind, V, nqb, nkb, block_q, block_k)
