"""The block mask -- what the lowering produces -- and :func:`lower`, which builds it.

:func:`lower` runs the steps of the package per stored variant: support (:mod:`.support`) gives the
candidate tiles, classification (:mod:`.classify`) decides them, refinement (:func:`.points.refine`)
tightens the unproven PARTIAL ones, and the non-empty tiles are stored as compressed rows and columns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ...errors import ArgumentError
from ..ir import IR
from ..ranges import LOWER_BITS, check_ranges, fit_to_shape
from ..values import describe
from .classify import classify
from .geometry import ALL, CELL_BUDGET, NONE, SOME, Box, Geo
from .points import REFINE_BUDGET, refine
from .support import candidate_tiles, support

__all__ = ["TileKind", "BlockMask", "lower", "CHUNK_TILES", "MAX_BLOCKS", "MAX_POSITION"]


class TileKind(enum.IntEnum):
    """What a query-block x key-block tile holds."""

    EMPTY = 0
    PARTIAL = 1
    FULL = 2


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


def _csr(major: np.ndarray, minor: np.ndarray, n_major: int):
    # Tiles arrive sorted by (query block, key block); a stable sort on the major axis keeps the minor sorted.
    order = np.argsort(major, kind="stable")
    counts = np.bincount(major, minlength=n_major)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, minor[order].astype(np.int32)


CHUNK_TILES = 1 << 21   # candidate tiles classified at once: bounds the temporaries, not the result


def _lower_one(ir: IR, geo: Geo, budget: int, cell_budget: int = CELL_BUDGET):
    """Tiles of one variant: (qb, kb, kind) arrays of the non-empty tiles, plus work counters
    (candidate tiles, chunk cells evaluated, points evaluated).

    Query blocks are taken in chunks of about CHUNK_TILES candidate tiles, so the working memory stays
    bounded and the peak follows the size of the result (a few bytes per non-empty tile).
    """
    ivs = support(ir, geo)
    per_row = np.zeros(geo.nqb, np.int64)
    for lo, hi in ivs:
        per_row += np.maximum(np.minimum(hi, geo.nkb - 1) - np.maximum(lo, 0) + 1, 0)
    bounds = np.searchsorted(np.cumsum(per_row), np.arange(1, 1 + int(per_row.sum()) // CHUNK_TILES) * CHUNK_TILES)
    edges = [0] + sorted(set(int(b) + 1 for b in bounds if 0 <= b < geo.nqb - 1)) + [geo.nqb]
    out_qb, out_kb, out_v = [], [], []
    work = {"candidate_tiles": 0, "cells_evaluated": 0, "points_refined": 0}
    for r0, r1 in zip(edges[:-1], edges[1:]):
        qb, kb = candidate_tiles([(lo[r0:r1], hi[r0:r1]) for lo, hi in ivs], geo, r0)
        box = Box(geo.q_lo[qb], geo.q_hi[qb], geo.k_lo[kb], geo.k_hi[kb], qb, kb)
        geo.cells_left = cell_budget
        v, exact = classify(ir, box, geo)
        work["cells_evaluated"] += cell_budget - geo.cells_left
        work["points_refined"] += refine(ir, v, exact, box, geo, budget)
        keep = v != NONE
        out_qb.append(qb[keep].astype(np.int32))
        out_kb.append(kb[keep].astype(np.int32))
        out_v.append(v[keep])
        work["candidate_tiles"] += len(qb)
        del qb, kb, box, v, exact
    return np.concatenate(out_qb), np.concatenate(out_kb), np.concatenate(out_v), work


MAX_BLOCKS = 1 << 24     # query or key blocks of one block mask (its per-block arrays are int64)
MAX_POSITION = 1 << 40   # |position| and lengths the lowering takes: int64 arithmetic stays far from its edge


def _check_positions(q_len: int, kv_len: int, q_start: int, block_q: int, block_k: int) -> None:
    for name, v in (("q_len", q_len), ("kv_len", kv_len), ("query position", q_start), ("block_q", block_q),
                    ("block_k", block_k)):
        if abs(v) > MAX_POSITION or abs(q_start + q_len) > MAX_POSITION:
            raise ArgumentError(f"{name} {v} is too large: block masks take positions and lengths up to "
                                f"2**40 in magnitude")
    for name, n, b in (("q_len", q_len, block_q), ("kv_len", kv_len, block_k)):
        if -(-n // b) > MAX_BLOCKS:   # per-block arrays: bounded memory
            raise ArgumentError(f"{name} {n} makes {-(-n // b)} blocks of {b}; at most {MAX_BLOCKS} blocks "
                                f"per axis are supported (use larger blocks)")


def _exact(ir: IR, geo: Geo) -> IR:
    """The IR cut to the shape, refused (RangeError) if the lowering's int64 arithmetic could not compute it
    exactly."""
    q_range, k_range = (geo.q_start, geo.q_start + geo.q_len - 1), (0, geo.kv_len - 1)
    ir = fit_to_shape(ir, q_range, k_range)
    inputs = {n: (int(v.min()), int(v.max())) for n, (_, v) in geo.inputs.items() if len(v)}
    check_ranges(ir, q_range, k_range, inputs, bits=LOWER_BITS, what="the block-mask lowering")
    return ir


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
            raise ArgumentError(f"{name} must be a positive int, got {describe(v)}")
    _check_positions(q_len, kv_len, q_start, block_q, block_k)
    inputs_per_batch = inputs_per_batch or [{}]
    B, H = assignment.shape[:2]
    pairs = {}
    variant = np.zeros((B, H), np.int32)
    for b in range(B):
        for h in range(H):
            key = (int(assignment[b, h, 0]), int(assignment[b, h, 1]))
            variant[b, h] = pairs.setdefault(key, len(pairs))
    geo0 = Geo(q_len, kv_len, block_q, block_k, q_start, {})
    nqb, nkb = geo0.nqb, geo0.nkb
    rows = {"partial": [], "full": [], "t_partial": [], "t_full": []}
    offsets = {k: 0 for k in rows}
    ptrs = {k: [] for k in rows}
    work = {"candidate_tiles": 0, "cells_evaluated": 0, "points_refined": 0}
    for (vi, bi) in pairs:
        geo = Geo(q_len, kv_len, block_q, block_k, q_start, inputs_per_batch[bi])
        qb, kb, kind, counts = _lower_one(_exact(variants[vi], geo), geo, refine_budget, cell_budget)
        for name, value in counts.items():
            work[name] += value
        for name, sel in (("partial", kind == SOME), ("full", kind == ALL)):
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
