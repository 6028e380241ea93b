"""Tile lists on a device and the kernels' tables made from them, for every build path of a prepared mask.

A :class:`Tiles` value lists the non-empty tiles of each stored mask variant as flat tensors sorted by
(variant, query block, key block), with their kind (1 PARTIAL, 2 FULL; entries of kind 0 are padding). From
it come the compressed rows the forward and dQ kernels walk and the compressed columns of the dK/dV kernel
(:func:`tables`), and the tiles at any coarser tile shape whose sides are multiples of its own
(:func:`coarsen`): a coarse tile is EMPTY when all its fine tiles are, FULL when all are FULL, so coarsening is
exact -- a prepared mask built once serves kernels with larger tiles without reading the inputs again. All of
it is torch operations with output sizes known on the host: no device->host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Tiles", "tables", "coarsen", "from_blockmask"]


@dataclass(frozen=True, slots=True, eq=False)
class Tiles:
    """Non-empty tiles of `variants` stored masks at tiles of block_q x block_k (sorted, kind 0 = padding)."""

    v: torch.Tensor       # int64 [T]
    qb: torch.Tensor      # int64 [T]
    kb: torch.Tensor      # int64 [T]
    kind: torch.Tensor    # int64 [T]: 0 padding, 1 PARTIAL, 2 FULL
    variants: int
    nqb: int
    nkb: int
    block_q: int
    block_k: int


def _csr(rows, minor, sel, per_variant: int, variants: int):
    """Compressed rows of the selected entries (given in row-major order): ptr int32 [variants * (per_variant
    + 1)] as the kernels index it (variant * (count + 1) + row), idx int32 (unused entries past the end)."""
    device = rows.device
    sel64 = sel.to(torch.int64)
    total = rows.numel()
    idx = torch.zeros(total + 1, dtype=torch.int32, device=device)   # slot `total` collects the unselected
    idx[torch.where(sel, torch.cumsum(sel64, 0) - 1, total)] = minor.to(torch.int32)
    counts = torch.zeros(variants * per_variant, dtype=torch.int64, device=device).index_add_(0, rows, sel64)
    flat = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    at = (torch.arange(variants, device=device)[:, None] * per_variant
          + torch.arange(per_variant + 1, device=device)[None, :])
    return flat[at].reshape(-1).to(torch.int32), idx


def _named(count_name: str, count: int, rows, minor, kind, per_variant: int, variants: int) -> dict:
    out = {count_name: count}
    out["RowPtrP"], out["ColIdxP"] = _csr(rows, minor, kind == 1, per_variant, variants)
    out["RowPtrF"], out["ColIdxF"] = _csr(rows, minor, kind == 2, per_variant, variants)
    return out


def tables(t: Tiles) -> tuple[dict, dict]:
    """(forward tables, transposed tables) by the kernels' parameter names, without Variant."""
    fwd = _named("NUM_QB", t.nqb, t.v * t.nqb + t.qb, t.kb, t.kind, t.nqb, t.variants)
    t_row = t.v * t.nkb + t.kb
    order = torch.sort(t_row, stable=True).indices                 # (variant, key block, query block) order
    bwd = _named("NUM_KB", t.nkb, t_row[order], t.qb[order], t.kind[order], t.nkb, t.variants)
    return fwd, bwd


def coarsen(t: Tiles, block_q: int, block_k: int) -> Tiles:
    """The same masks at tiles of block_q x block_k, multiples of t's tile sides: exact (see the module)."""
    fq, fk = block_q // t.block_q, block_k // t.block_k
    nqb, nkb = -(-t.nqb // fq), -(-t.nkb // fk)
    cq, ck = torch.div(t.qb, fq, rounding_mode="floor"), torch.div(t.kb, fk, rounding_mode="floor")
    valid = t.kind > 0
    end = t.variants * nqb * nkb
    key = torch.where(valid, (t.v * nqb + cq) * nkb + ck, end)     # padding sorts last
    key, order = torch.sort(key, stable=True)
    kind = t.kind[order]
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    group = torch.cumsum(first.to(torch.int64), 0) - 1
    n_full = torch.zeros_like(key).index_add_(0, group, (kind == 2).to(torch.int64))
    cq, ck = cq[order], ck[order]
    fine = (torch.clamp(t.nqb - cq * fq, max=fq) * torch.clamp(t.nkb - ck * fk, max=fk))
    coarse = torch.where(n_full[group] == fine, 2, 1)
    coarse = torch.where(first & (key < end), coarse, 0)
    return Tiles(t.v[order], cq, ck, coarse, t.variants, nqb, nkb, block_q, block_k)


def from_blockmask(bm, device) -> Tiles:
    """The tiles of a closed-form compiler.lower.BlockMask, on `device`."""
    vs, qbs, kbs, kinds = [], [], [], []
    for kind, ptr, idx in ((1, bm.partial_ptr, bm.partial_idx), (2, bm.full_ptr, bm.full_idx)):
        for v in range(bm.num_variants):
            counts = np.diff(ptr[v])
            qbs.append(np.repeat(np.arange(bm.num_q_blocks), counts))
            kbs.append(idx[ptr[v, 0]:ptr[v, -1]].astype(np.int64))
            vs.append(np.full(len(qbs[-1]), v))
            kinds.append(np.full(len(qbs[-1]), kind))
    v, qb, kb, kind = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (vs, qbs, kbs, kinds))
    order = np.lexsort((kb, qb, v))
    dev = [torch.from_numpy(np.ascontiguousarray(a[order], dtype=np.int64)).to(device) for a in (v, qb, kb, kind)]
    return Tiles(*dev, bm.num_variants, bm.num_q_blocks, bm.num_k_blocks, bm.block_q, bm.block_k)
