"""Analysis users can read: what a pattern costs and what it lets a model see, at one shape.

:func:`analyze` answers, for one pattern at one shape (q_len x kv_len, heads, batch, block size):

* the **density** -- the exact fraction of (query, key) pairs that are allowed;
* the **tiles** -- how many block_q x block_k tiles are EMPTY, PARTIAL and FULL, and the tile efficiency
  (allowed pairs / pairs inside the non-empty tiles, the ones a block-sparse kernel computes);
* the **FLOPs** of the kernel (4 * head_dim per computed pair: QK^T and PV) against full causal attention,
  and the ideal (allowed pairs only);
* the largest **look-back** and **look-ahead** of any query, hence the KV cache a decoder needs;
* the **rows with no allowed key** (their output is 0);
* the **receptive field** after L stacked layers: how far back information can reach the last query.

Nothing here evaluates the N^2 points. Everything starts from the closed-form block mask
(:meth:`attnpat.Pattern.block_mask`): a FULL tile contributes its whole area and its first and last key
to every one of its rows without looking inside; only the PARTIAL tiles are looked into. Where the mask
(or an and/or part of it at the top) reads q and k only through ``q // c`` and ``k // c'`` -- BigBird's
blocks -- it is constant on chunk cells, and a PARTIAL tile is counted cell by cell, exactly, one
evaluation per cell (:func:`_partial_cells`); otherwise, and in the cells such a part leaves open, the
points are evaluated one by one (with :func:`~attnpat.compiler.lower.evaluate_points`, in chunks). The
cost is O(q_len + kv_len + tiles + cells + points evaluated); for a sliding window that is O(N * window),
never O(N^2) unless the pattern itself has O(N^2) partial pairs outside constant cells.

The result, :class:`Analysis`, its derived numbers and its report live in :mod:`.analysis_report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError
from .analysis_report import Analysis
from .ir import And
from .lower import BlockMask, TileKind, chunk_cells, chunk_split, classify_rects, evaluate_points
from .lower.cells import cell_slices
from .lower.geometry import BIG
from .lower.points import POINTS_PER_CALL
from .values import format_value

__all__ = ["Analysis", "analyze", "causal_pairs", "receptive_field", "tile_grid"]

_CHUNK_ELEMENTS = POINTS_PER_CALL   # points evaluated per numpy call (a name of its own: tests shrink it)
SLAB_TILES = 1 << 24                # query x key blocks lowered at once: explain's memory is bounded
_CELL_GAIN = 4                      # count cell by cell when cells * _CELL_GAIN <= points (None: never): a
                                    # cell costs about as much as 4 points


# -- closed forms --------------------------------------------------------------------------------------


def causal_pairs(q_len: int, kv_len: int, q_start: int) -> int:
    """Pairs (row i, key k) with 0 <= k <= q_start + i and k < kv_len, summed in closed form.

    Row i (at position p = q_start + i) has clamp(p + 1, 0, kv_len) causal keys: 0 while p < 0, p + 1 up
    to p = kv_len - 1, then kv_len.
    """
    if q_len <= 0 or kv_len <= 0:
        return 0
    a, b = q_start, q_start + q_len - 1
    total = 0
    lo, hi = max(a, 0), min(b, kv_len - 1)            # rows with p + 1 keys
    if lo <= hi:
        total += (hi - lo + 1) * (lo + hi + 2) // 2
    lo = max(a, kv_len)                               # rows that see every key
    if lo <= b:
        total += (b - lo + 1) * kv_len
    return total


def receptive_field(last: int, first_min: int, first_max: int, earliest: np.ndarray, latest: np.ndarray,
                    layers: int) -> int:
    """How far back from position `last` information can come after `layers` layers.

    Args:
        last: the position of the query asked about.
        first_min, first_max: its smallest and largest allowed key (first_min > first_max: none).
        earliest, latest: for every position p in [0, P) used as a query in the layers below, its smallest
            and largest allowed key (earliest > latest for a row with no key).
    Returns:
        last - lo, where [lo, hi] is the interval reached: I_1 = [last] joined with the last query's keys,
        I_{i+1} = I_i joined with [min earliest, max latest] over the positions of I_i. Reachable sets are
        kept as intervals, which is exact when every query's keys form an interval that moves monotonically
        with the query (windows, causal, chunks) and an upper bound otherwise. Each position is folded in
        once, so the cost is O(P) whatever `layers` is.
    """
    lo = hi = last
    if first_min <= first_max:
        lo, hi = min(lo, first_min), max(hi, first_max)
    n = len(earliest)
    seen_lo, seen_hi = 0, -1          # positions already folded into emin / lmax
    emin, lmax = BIG, -BIG
    for _ in range(layers - 1):
        a, b = max(lo, 0), min(hi, n - 1)
        if a > b:
            break
        if seen_lo > seen_hi:
            parts = [(a, b)]
        else:
            parts = [(a, seen_lo - 1), (seen_hi + 1, b)]
        for x, y in parts:
            if x <= y:
                emin = min(emin, int(earliest[x:y + 1].min()))
                lmax = max(lmax, int(latest[x:y + 1].max()))
        seen_lo, seen_hi = a, b
        new_lo, new_hi = min(lo, emin), max(hi, lmax)
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    return last - lo


@dataclass
class _RowFacts:
    """Per-row facts of one stored variant."""

    allowed: int          # allowed pairs
    tile_pairs: int       # pairs inside non-empty tiles
    loose: int            # PARTIAL tiles that are all allowed or all masked
    evaluated: int        # points evaluated
    count: np.ndarray     # int64 [q_len]: allowed keys per row
    kmin: np.ndarray      # int64 [q_len]: smallest allowed key (BIG if none)
    kmax: np.ndarray      # int64 [q_len]: largest allowed key (-1 if none)
    partial: np.ndarray   # int64 [PARTIAL tiles]: allowed pairs of each PARTIAL tile, in CSR order


def _block_sizes(bm: BlockMask) -> tuple[np.ndarray, np.ndarray]:
    """Rows in each query block and keys in each key block (the last ones may be cut short)."""
    rows_in = np.minimum(bm.block_q, bm.q_len - np.arange(bm.num_q_blocks, dtype=np.int64) * bm.block_q)
    cols_in = np.minimum(bm.block_k, bm.kv_len - np.arange(bm.num_k_blocks, dtype=np.int64) * bm.block_k)
    return rows_in, cols_in


def _scan(bm: BlockMask, v: int, ir, inputs: dict) -> _RowFacts:
    """Counts and first/last allowed keys per row of variant v: FULL tiles in closed form, PARTIAL tiles
    cell by cell where the mask is constant on chunk cells (:func:`_partial_cells`), else point by point
    (chunked)."""
    kv_len, bq, bk, q_start, nqb = bm.kv_len, bm.block_q, bm.block_k, bm.q_start, bm.num_q_blocks
    rows_in, cols_in = _block_sizes(bm)

    # FULL tiles: every row of the block sees every key of the tile.
    fptr = bm.full_ptr[v]
    fcount = np.diff(fptr)
    fidx = bm.full_idx[fptr[0]:fptr[-1]].astype(np.int64)
    fqb = np.repeat(np.arange(nqb, dtype=np.int64), fcount)
    width = np.bincount(fqb, weights=cols_in[fidx], minlength=nqb).astype(np.int64)
    full_allowed = int((rows_in * width).sum())
    first = np.full(nqb, BIG, np.int64)
    last = np.full(nqb, -1, np.int64)
    has = fcount > 0
    if has.any():   # a block's first and last FULL key blocks (its columns are sorted)
        first[has] = fidx[fptr[:-1][has] - fptr[0]] * bk
        last[has] = np.minimum((fidx[fptr[1:][has] - fptr[0] - 1] + 1) * bk, kv_len) - 1
    count = np.repeat(width, rows_in)
    kmin = np.repeat(first, rows_in).astype(np.int64)
    kmax = np.repeat(last, rows_in).astype(np.int64)

    # PARTIAL tiles: rows [r0, r1] x keys [c0, c1].
    pptr = bm.partial_ptr[v]
    pidx = bm.partial_idx[pptr[0]:pptr[-1]].astype(np.int64)
    pqb = np.repeat(np.arange(nqb, dtype=np.int64), np.diff(pptr))
    area = rows_in[pqb] * cols_in[pidx]
    tile_pairs = full_allowed + int(area.sum())
    r0, c0 = pqb * bq, pidx * bk
    r1, c1 = r0 + rows_in[pqb] - 1, c0 + cols_in[pidx] - 1
    acc = (count, kmin, kmax)
    split = chunk_split(ir) if _CELL_GAIN is not None and len(pidx) else None
    if split is not None:
        cells = chunk_cells(q_start + r0, q_start + r1, c0, c1, split[1], counts_only=True)
        if int(cells.sum()) * _CELL_GAIN > int(area.sum()):
            split = None     # cells hardly larger than points: the point path is faster
    if split is None:
        partial = _partial_points(ir, inputs, q_start, r0, r1, c0, c1, acc)
        evaluated = int(area.sum())
    else:
        partial, evaluated = _partial_cells(split, inputs, bm, (pqb, pidx, r0, r1, c0, c1), cells, acc)
    allowed = full_allowed + int(partial.sum())
    loose = int(((partial == 0) | (partial == area)).sum())
    return _RowFacts(allowed, tile_pairs, loose, evaluated, count, kmin, kmax, partial)


def _partial_points(ir, inputs: dict, q_start: int, r0, r1, c0, c1, acc) -> np.ndarray:
    """Evaluate the rectangles rows [r0, r1] x keys [c0, c1] (row indices, key positions; non-empty,
    inside the sequence) point by point: add each row's allowed keys to acc's counts, fold its first and
    last allowed keys into acc's kmin / kmax, and return the allowed pairs of each rectangle.

    Rectangles are padded to the largest height x width and taken in numpy calls of about _CHUNK_ELEMENTS
    points (a huge rectangle row-band by row-band); the padding is evaluated at the rectangle's last row or
    key and not counted.
    """
    count, kmin, kmax = acc
    q_len = len(count)
    n = len(r0)
    out = np.zeros(n, np.int64)
    if n == 0:
        return out
    H, W = int((r1 - r0).max()) + 1, int((c1 - c0).max()) + 1
    dk = np.arange(W, dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // (H * W))          # rectangles per numpy call
    row_step = H if H * W <= _CHUNK_ELEMENTS else max(1, _CHUNK_ELEMENTS // W)   # rows of a huge one
    for s in range(0, n, chunk):
        a0, a1 = r0[s:s + chunk, None], r1[s:s + chunk, None]
        b0, b1 = c0[s:s + chunk, None], c1[s:s + chunk, None]
        col = b0 + dk[None, :]                                # [T, W] key positions
        col_ok = col <= b1
        kpos = np.minimum(col, b1)
        per = np.zeros(len(a0), np.int64)
        for d0 in range(0, H, row_step):
            dq = np.arange(d0, min(d0 + row_step, H), dtype=np.int64)
            row = a0 + dq[None, :]                            # [T, R] row indices
            row_ok = row <= a1
            row = np.minimum(row, a1)                         # padding rows count nothing
            m = evaluate_points(ir, (q_start + row)[:, :, None], kpos[:, None, :], inputs, q_start)
            m = np.broadcast_to(m, (len(a0), len(dq), W)) & row_ok[:, :, None] & col_ok[:, None, :]
            per_row = m.sum(axis=2, dtype=np.int64)           # [T, R]
            any_row = per_row > 0
            lo = b0 + m.argmax(axis=2)
            hi = b0 + (W - 1 - m[:, :, ::-1].argmax(axis=2))
            flat = row.ravel()
            count += np.bincount(flat, weights=per_row.ravel(), minlength=q_len).astype(np.int64)
            np.minimum.at(kmin, flat, np.where(any_row, lo, BIG).ravel())
            np.maximum.at(kmax, flat, np.where(any_row, hi, -1).ravel())
            per += per_row.sum(axis=1)
        out[s:s + chunk] = per
    return out


def _partial_cells(split, inputs: dict, bm: BlockMask, tiles, cells: np.ndarray, acc):
    """The PARTIAL tiles (query block, key block, rows [r0, r1], keys [c0, c1]) of a mask ``op(group,
    rest)`` whose `group` is constant on every gq x gk chunk cell
    (:func:`~attnpat.compiler.lower.chunk_split`), cell by cell; `cells`: how many each tile overlaps.

    The group is evaluated once per cell a tile overlaps (at the cell's first point inside the tile, so
    nothing is evaluated outside the sequence). Where it decides the mask (the whole mask is the group;
    true in an Or; false in an And) the cell is all allowed or all masked. Elsewhere (true in an And, false
    in an Or) the mask is `rest` on the cell: the lowering's classifier (Lin and Mod exactly on any
    rectangle) proves many such cells all allowed or all masked -- a causal condition away from the
    diagonal -- and `rest` is evaluated point by point only on the others (:func:`_partial_points`).

    An allowed cell adds its area to its tile and the same keys to each of its rows: the rows of a query
    block are cut into *bands* at the block's q-cell boundaries, every row of a band lies in the same q-cell
    of every tile of the block, so the cell adds its width, first key and last key to one band, and the
    bands are spread over their rows once at the end. Exact; returns (allowed pairs per tile, points
    evaluated).
    """
    group, g, rest, op = split
    q_start, q_len, bq = bm.q_start, bm.q_len, bm.block_q
    pqb, pidx, r0, r1, c0, c1 = tiles
    count, kmin, kmax = acc
    n = len(r0)
    starts = np.arange(0, q_len, bq, dtype=np.int64)                # band starts (row indices)
    if g[0]:
        starts = np.union1d(starts, np.arange((-q_start) % g[0], q_len, g[0], dtype=np.int64))
    nb = len(starts)
    band_len = np.diff(np.append(starts, q_len))
    band_count = np.zeros(nb, np.int64)
    band_kmin = np.full(nb, BIG, np.int64)
    band_kmax = np.full(nb, -1, np.int64)
    per_tile = np.zeros(n, np.int64)
    evaluated = 0
    for a, b in cell_slices(cells):               # tiles [a, b) hold about CELL_SLICE cells
        t, q0, q1, k0, k1 = chunk_cells(q_start + r0[a:b], q_start + r1[a:b], c0[a:b], c1[a:b], g)
        val = np.broadcast_to(np.asarray(evaluate_points(group, q0, k0, inputs, q_start), bool), q0.shape)
        on = val.copy() if op is not And else np.zeros(len(val), bool)     # cells all allowed
        if rest is not None:
            open_ = np.nonzero(val if op is And else ~val)[0]
            kind = classify_rects(rest, q0[open_], q1[open_], k0[open_], k1[open_], pqb[a:b][t[open_]],
                                  pidx[a:b][t[open_]], q_len=q_len, kv_len=bm.kv_len, block_q=bq,
                                  block_k=bm.block_k, q_start=q_start, inputs=inputs)
            on[open_[kind == TileKind.FULL]] = True
            open_ = open_[kind == TileKind.PARTIAL]
            if len(open_):
                got = _partial_points(rest, inputs, q_start, q0[open_] - q_start, q1[open_] - q_start,
                                      k0[open_], k1[open_], acc)
                per_tile[a:b] += np.bincount(t[open_], weights=got, minlength=b - a).astype(np.int64)
                evaluated += int(((k1 - k0 + 1) * (q1 - q0 + 1))[open_].sum())
        if on.any():
            t, q0, q1, k0, k1 = t[on], q0[on], q1[on], k0[on], k1[on]
            w = k1 - k0 + 1
            band = np.searchsorted(starts, q0 - q_start, side="right") - 1
            per_tile[a:b] += np.bincount(t, weights=w * (q1 - q0 + 1), minlength=b - a).astype(np.int64)
            band_count += np.bincount(band, weights=w, minlength=nb).astype(np.int64)
            np.minimum.at(band_kmin, band, k0)
            np.maximum.at(band_kmax, band, k1)
    count += np.repeat(band_count, band_len)
    np.minimum(kmin, np.repeat(band_kmin, band_len), out=kmin)
    np.maximum(kmax, np.repeat(band_kmax, band_len), out=kmax)
    return per_tile, evaluated


def tile_grid(pattern, q_len: int, kv_len: int, *, block_q: int, block_k: int, batch_index: int = 0,
              head: int = 0, batch: int = 1, q_offset: int | None = None, inputs: dict | None = None,
              count_budget: int = 1 << 25):
    """The tiles of one (batch element, head) slice, for drawings of long sequences.

    Returns:
        (kinds, counts, q_start): kinds is uint8 [Q_blocks, K_blocks] (0 EMPTY, 1 PARTIAL, 2 FULL, from
        the closed-form block mask); counts is int64 of the same shape with the exact allowed pairs of each
        tile -- FULL tiles by their area, PARTIAL ones point by point -- or None when that would evaluate
        more than `count_budget` points.
    """
    bm, sources = pattern.lowering(q_len, kv_len, block_q=block_q, block_k=block_k, heads=head + 1,
                                   batch=batch, q_offset=q_offset, **dict(inputs or {}))
    v = int(bm.variant[batch_index, head])
    kinds = bm.to_dense(batch=batch_index)[head]
    pptr = bm.partial_ptr[v]
    n_partial = int(pptr[-1] - pptr[0])
    if n_partial * block_q * block_k > count_budget:
        return kinds, None, bm.q_start
    rows_in, cols_in = _block_sizes(bm)
    counts = np.where(kinds == 2, rows_in[:, None] * cols_in[None, :], 0).astype(np.int64)
    if n_partial:
        ir, ins = sources[v]
        scan = _scan(bm, v, ir, ins)
        pqb = np.repeat(np.arange(bm.num_q_blocks), np.diff(pptr))
        counts[pqb, bm.partial_idx[pptr[0]:pptr[-1]]] = scan.partial
    return kinds, counts, bm.q_start


# -- analyze ---------------------------------------------------------------------------------------------


def analyze(pattern, q_len: int, kv_len: int | None = None, *, heads: int = 1, batch: int = 1,
            q_offset: int | None = None, layers: int = 1, block_q: int = 128, block_k: int = 64,
            head_dim: int = 128, **inputs) -> Analysis:
    """Analyse a pattern at one shape without evaluating its N^2 points.

    Args:
        pattern: a :class:`attnpat.Pattern`, or a FILE_OR_NAME[:PATTERN] string for :func:`attnpat.load`.
        q_len, kv_len: sequence lengths (kv_len defaults to q_len); query row i sits at absolute position
            i + (kv_len - q_len), or i + q_offset when given.
        heads, batch: counts are summed over every (batch, head); per-head and per-batch masks are
            analysed one distinct mask at a time.
        layers: stacked layers for the receptive field (>= 1).
        block_q, block_k: the kernel's tile (the forward kernel's default is 128 x 64).
        head_dim: D in the FLOP counts (4 * D per computed pair).
        **inputs: the pattern's runtime inputs (e.g. doc=tensor of ids), as for Pattern.block_mask.
    Returns:
        an :class:`Analysis`.
    """
    if isinstance(pattern, str):
        from ..pattern import load
        pattern = load(pattern)
    kv_len = q_len if kv_len is None else kv_len
    for name, v, lo in (("layers", layers, 1), ("head_dim", head_dim, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
    from ..reference import query_positions
    square = layers > 1 and q_len == kv_len and query_positions(q_len, kv_len, q_offset) == 0
    f = _facts(pattern, q_len, kv_len, heads=heads, batch=batch, q_offset=q_offset, block_q=block_q,
               block_k=block_k, inputs=inputs, rows=square)
    field_, note, extra = _receptive(pattern, f, layers, heads=heads, batch=batch, block_q=block_q,
                                     block_k=block_k, inputs=inputs)
    params = ", ".join(f"{k}={format_value(v)}" for k, v in pattern.params.items())
    return Analysis(
        pattern=f"{pattern.name}({params})", canonical=pattern.canonical.text, key=pattern.canonical.key,
        q_len=q_len, kv_len=kv_len, q_start=f.q_start, heads=heads, batch=batch, block_q=block_q,
        block_k=block_k, head_dim=head_dim, layers=layers, allowed=f.allowed, total=batch * heads * q_len * kv_len,
        tiles=f.tiles, loose_partial=f.loose, tile_pairs=f.tile_pairs,
        causal_pairs=batch * heads * causal_pairs(q_len, kv_len, f.q_start), lookback=f.lookback,
        lookahead=f.lookahead, max_keys=f.max_keys, empty_rows=f.empty_rows, rows=batch * heads * q_len,
        receptive_field=field_, receptive_note=note, variants=f.variants, evaluated=f.evaluated + extra,
        scores=pattern.canonical.score_text,
    )


@dataclass
class _Facts:
    """What analyze needs of every row, summed over heads, batch and slabs of query blocks."""

    q_start: int
    rows: int
    kv_len: int
    allowed: int = 0
    tile_pairs: int = 0
    loose: int = 0
    empty_rows: int = 0
    evaluated: int = 0
    variants: int = 0
    max_keys: int = 0
    lookback: int | None = None
    lookahead: int | None = None
    tiles: dict = field(default_factory=lambda: {"EMPTY": 0, "PARTIAL": 0, "FULL": 0})
    last: list = field(default_factory=list)       # per batch element: the last query's (min key, max key)
    earliest: list = field(default_factory=list)   # per batch element: every row's smallest allowed key
    latest: list = field(default_factory=list)     # ... and largest, merged over heads (when rows=True)


def _facts(pattern, q_len: int, kv_len: int, *, heads: int, batch: int, q_offset, block_q: int, block_k: int,
           inputs: dict, rows: bool) -> _Facts:
    """Row facts of the whole shape, lowered a slab of query blocks at a time: at most about SLAB_TILES
    tiles are held at once, so memory follows the slab, not q_len x kv_len (one slab when the pattern has
    int[q] inputs, which are given for the whole query range)."""
    from ..reference import check_sizes, query_positions
    check_sizes(q_len=q_len, kv_len=kv_len, heads=heads, batch=batch)
    q_start = query_positions(q_len, kv_len, q_offset)
    f = _Facts(q_start, q_len, kv_len)
    if rows:
        f.earliest = [np.full(q_len, BIG, np.int64) for _ in range(batch)]
        f.latest = [np.full(q_len, -1, np.int64) for _ in range(batch)]
    step = q_len
    if not any(axis == "q" for axis in pattern.inputs.values()):
        step = max(1, SLAB_TILES // max(1, -(-kv_len // block_k))) * block_q
    for r0 in range(0, max(q_len, 1), max(step, 1)):
        n = min(step, q_len - r0)
        bm, sources = pattern.lowering(n, kv_len, block_q=block_q, block_k=block_k, heads=heads, batch=batch,
                                       q_offset=q_start + r0, **inputs)
        uses = np.bincount(bm.variant.ravel(), minlength=bm.num_variants)
        scans = [_scan(bm, v, ir, ins) for v, (ir, ins) in enumerate(sources)]
        for u, sc in zip(uses, scans):
            f.allowed += int(u) * sc.allowed
            f.tile_pairs += int(u) * sc.tile_pairs
            f.loose += int(u) * sc.loose
            f.empty_rows += int(u) * int((sc.count == 0).sum())
        f.evaluated += sum(sc.evaluated for sc in scans)
        f.variants = max(f.variants, bm.num_variants)
        for kind, c in bm.counts().items():
            f.tiles[kind] += c
        qpos = q_start + r0 + np.arange(n, dtype=np.int64)
        for sc in scans:
            some = sc.count > 0
            if some.any():
                back = max(int((qpos[some] - sc.kmin[some]).max()), 0)
                ahead = max(int((sc.kmax[some] - qpos[some]).max()), 0)
                f.lookback = back if f.lookback is None else max(f.lookback, back)
                f.lookahead = ahead if f.lookahead is None else max(f.lookahead, ahead)
                f.max_keys = max(f.max_keys, int(sc.count.max()))
        for b in range(batch if n else 0):
            vs = [int(v) for v in bm.variant[b]]
            if r0 + n == q_len:   # the slab of the last query
                f.last.append((min(int(scans[v].kmin[-1]) for v in vs), max(int(scans[v].kmax[-1]) for v in vs)))
            if rows:
                f.earliest[b][r0:r0 + n] = np.minimum.reduce([scans[v].kmin for v in vs])
                f.latest[b][r0:r0 + n] = np.maximum.reduce([scans[v].kmax for v in vs])
    return f


def _receptive(pattern, f: _Facts, layers: int, *, heads: int, batch: int, block_q: int, block_k: int,
               inputs: dict) -> tuple[int | None, str, int]:
    """The receptive field of the last query, the largest over batch elements (heads are merged: a layer's
    output at a position mixes every head)."""
    if not f.last:
        return None, "no queries", 0
    last = f.q_start + f.rows - 1
    note, extra = "", 0
    if layers == 1:
        square = None
    elif f.earliest:   # the queries analysed are every position: their rows serve the layers below
        square = f
    elif any(axis == "q" for axis in pattern.inputs.values()):
        return None, ("the layers below see every position as a query, but int[q] inputs are given only for "
                      "the queries analysed; use q_len == kv_len"), 0
    else:
        # The layers below compute every key position as a query (self-attention over kv_len positions).
        square = _facts(pattern, f.kv_len, f.kv_len, heads=heads, batch=batch, q_offset=0, block_q=block_q,
                        block_k=block_k, inputs=inputs, rows=True)
        extra = square.evaluated
        note = f"the layers below are taken as self-attention over all {f.kv_len:,} positions"
    best = 0
    for b in range(batch):
        empty = np.zeros(0, np.int64)
        earliest, latest = (empty, empty) if square is None else (square.earliest[b], square.latest[b])
        best = max(best, receptive_field(last, *f.last[b], earliest, latest, layers))
    return best, note, extra
