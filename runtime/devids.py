"""Block masks of document patterns with unsorted ids, lowered on the inputs' device with torch operations.

runtime/devlower.py lowers documents whose ids are monotone along the row (each id one run). Here the ids
may be in any order -- an id may come back after others -- for the document forms whose band on ``q - k``
is open on one side (``document`` = causal, ``document_full``, and conjunctions with ``k >= c`` or ``q < c``):

* a query block and a key block *meet* on an id when the id occurs at a row of the one and a key of the
  other; the tile is non-empty exactly when they meet on some id at a pair the band allows -- with the band
  open above (``q - k >= dlo``) that is ``min key <= max row - dlo`` over the id's positions in the two
  blocks, open below the mirror image, open on both sides always;
* the tile is FULL exactly when every row and every key of it hold one and the same id and the band allows
  the whole tile.

So the candidates are the (query block, key block) pairs that meet on an id: per id, its query blocks times
its key blocks, found by sorting the (id, block) groups of each side and joining them. A tile met on several
ids appears once per id; the copies become padding. Work: O(q_len + kv_len) for the sorts, and the pairs.
One device->host synchronisation reads the number of pairs; when the ids spread so that the pairs exceed
PAIR_FACTOR times the tiles of the mask (plus PAIR_SLACK), the build falls back to the closed form.
"""

from __future__ import annotations

import torch

from .tiles import Tiles

__all__ = ["unsorted_document_tiles", "PAIR_FACTOR", "PAIR_SLACK"]

_BIG = 1 << 62
PAIR_FACTOR = 4           # pairs enumerated, at most, per tile of the mask (else: the closed form) ...
PAIR_SLACK = 1 << 16      # ... plus these, so that small masks always stay on the device


def _at(a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    return a.index_select(0, i)


def _groups(vid: torch.Tensor, blk: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, sentinel: int):
    """The distinct (vid, block) groups of the valid entries, compacted to the front (the rest: vid =
    sentinel), sorted by (vid, block), with the least and greatest position of each."""
    n = vid.numel()
    vid = torch.where(valid, vid, sentinel)
    order = torch.sort(blk, stable=True).indices
    order = _at(order, torch.sort(_at(vid, order), stable=True).indices)     # (vid, block) order
    v_s, b_s, p_s = _at(vid, order), _at(blk, order), _at(pos, order)
    start = torch.ones(n, dtype=torch.bool, device=vid.device)
    start[1:] = (v_s[1:] != v_s[:-1]) | (b_s[1:] != b_s[:-1])
    g = torch.cumsum(start.to(torch.int64), 0) - 1
    lo = torch.full((n,), _BIG, dtype=torch.int64, device=vid.device).scatter_reduce(0, g, p_s, "amin")
    hi = torch.full((n,), -_BIG, dtype=torch.int64, device=vid.device).scatter_reduce(0, g, p_s, "amax")
    gv = torch.full((n,), sentinel, dtype=torch.int64, device=vid.device).scatter(0, g, v_s)
    gb = torch.zeros(n, dtype=torch.int64, device=vid.device).scatter(0, g, b_s)
    return gv, gb, lo, hi


def _single(ids: torch.Tensor, ok: torch.Tensor, n: int, block: int):
    """Per block [V, blocks]: whether every position of it is valid and holds one id, and that id."""
    V, nb = ids.shape[0], -(-n // block)
    pad = nb * block - n
    i = torch.cat([ids, ids[:, -1:].expand(V, pad)], 1).view(V, nb, block)
    o = torch.cat([ok.expand(V, n), ok.new_zeros(V, pad)], 1).view(V, nb, block)
    # the last block's missing positions are no rows or keys at all: they count as valid
    o[:, -1, block - pad:] = True
    return (i.amin(2) == i.amax(2)) & o.all(2), i[:, :, 0]


def unsorted_document_tiles(form, doc: torch.Tensor, q_len: int, kv_len: int, q_start: int, block_q: int,
                            block_k: int):
    """The Tiles of a document form (runtime/devlower.document_form) over ids `doc` int64 [V, kv_len] in
    any order; None when the band is closed on both sides, query positions leave the id array, or the ids
    spread too widely (the caller lowers in closed form)."""
    _, (dlo, dhi), (klo, khi), (qlo, qhi) = form
    if (dlo != -_BIG and dhi != _BIG) or q_len == 0 or kv_len == 0 or q_start < 0 or q_start + q_len > kv_len:
        return None
    device, V = doc.device, doc.shape[0]
    nqb, nkb = -(-q_len // block_q), -(-kv_len // block_k)
    vs = torch.arange(V, device=device).view(-1, 1)
    key = vs * (1 << 33) + (doc + (1 << 31))                  # (variant, id) as one ascending key
    sentinel = V * (1 << 33) + 1
    p = q_start + torch.arange(q_len, device=device)
    k = torch.arange(kv_len, device=device)
    ok_q, ok_k = ((p >= qlo) & (p <= qhi)).view(1, -1), ((k >= klo) & (k <= khi)).view(1, -1)
    qb = torch.div(torch.arange(q_len, device=device), block_q, rounding_mode="floor")
    kb = torch.div(k, block_k, rounding_mode="floor")
    qv, qg, q_min, q_max = _groups(key[:, p].reshape(-1), qb.repeat(V), p.repeat(V),
                                   ok_q.expand(V, -1).reshape(-1), sentinel)
    kv_, kg, k_min, k_max = _groups(key.reshape(-1), kb.repeat(V), k.repeat(V), ok_k.expand(V, -1).reshape(-1),
                                    sentinel)
    # each query group meets the key groups of its id: a range of the sorted key groups
    first = torch.searchsorted(kv_, qv)
    count = torch.where(qv < sentinel, torch.searchsorted(kv_, qv, right=True) - first, 0)
    total = int(count.sum().tolist())                         # the one synchronisation
    if total > PAIR_FACTOR * V * nqb * nkb + PAIR_SLACK:
        return None
    qi = torch.repeat_interleave(torch.arange(count.numel(), device=device), count, output_size=total)
    ki = _at(first, qi) + torch.arange(total, device=device) - _at(torch.cumsum(count, 0) - count, qi)
    v = torch.div(_at(qv, qi), 1 << 33, rounding_mode="floor")
    t_qb, t_kb = _at(qg, qi), _at(kg, ki)
    meets = torch.ones(total, dtype=torch.bool, device=device)
    if dhi == _BIG and dlo != -_BIG:
        meets = _at(k_min, ki) <= _at(q_max, qi) - dlo
    elif dlo == -_BIG and dhi != _BIG:
        meets = _at(k_max, ki) >= _at(q_min, qi) - dhi
    # one entry per tile: the copies met on other ids become padding (kind 0)
    tile = (v * nqb + t_qb) * nkb + t_kb
    tile, order = torch.sort(torch.where(meets, tile, V * nqb * nkb))
    v, t_qb, t_kb = _at(v, order), _at(t_qb, order), _at(t_kb, order)
    first_copy = torch.ones(total, dtype=torch.bool, device=device)
    first_copy[1:] = tile[1:] != tile[:-1]
    keep = first_copy & (tile < V * nqb * nkb)
    # FULL: one id over the whole tile, every row and key inside the ranges, the band allowing every pair
    single_q, id_q = _single(doc[:, p], ok_q, q_len, block_q)
    single_k, id_k = _single(doc, ok_k, kv_len, block_k)
    q_lo = q_start + t_qb * block_q
    q_hi = q_start + torch.clamp((t_qb + 1) * block_q, max=q_len) - 1
    k_lo, k_hi = t_kb * block_k, torch.clamp((t_kb + 1) * block_k, max=kv_len) - 1
    fq, fk = v * nqb + t_qb, v * nkb + t_kb
    full = (_at(single_q.reshape(-1), fq) & _at(single_k.reshape(-1), fk)
            & (_at(id_q.reshape(-1), fq) == _at(id_k.reshape(-1), fk))
            & (q_lo - k_hi >= max(dlo, -_BIG)) & (q_hi - k_lo <= min(dhi, _BIG)))
    kind = torch.where(keep, full.to(torch.int64) + 1, 0)
    return Tiles(v, t_qb, t_kb, kind, V, nqb, nkb, block_q, block_k)
