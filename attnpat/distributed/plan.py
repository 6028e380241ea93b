"""Context-parallel plans: which key rows each rank fetches, from the pattern's closed-form block mask.

The sequence is split into contiguous shards, one per rank (the last may be shorter). Rank i's queries need,
from the shard of rank j, the key rows of every non-empty tile between them: runs of consecutive rows
[a, b), all sent in one message per (i, j) pair. The mask is lowered once in blocks of ``grain`` rows
(compiler/lower), and each run's ends are then trimmed to the exact first and last rows some query attends,
so a sliding window whose shard is at least the window receives window - 1 rows of one neighbour and a
document mask only the rows of the shards its documents span. Every rank computes the same plan from the
same sizes and inputs, so no rank asks another what it needs. ``choose_layout`` picks contiguous shards or
the zigzag layout from the plans of both.

This module reads no torch.distributed: ``attnpat explain --ranks P`` prints the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compiler.lower.blockmask import TileKind
from ..compiler.lower.points import POINTS_PER_CALL, evaluate_points
from ..compiler.lower.variants import lower_compiled
from ..errors import ArgumentError

__all__ = ["ContextPlan", "Chunks", "make_plan", "layout_chunks", "transfers", "shard_offsets", "grain_for",
           "report", "rank_rows", "even_lengths", "choose_layout", "layout_choice", "TRANSFER_BYTES",
           "RANGE_ALIGN"]

# Bytes this process received from peers, by pass, counted from the buffers the transfers filled (tests and
# the benchmark compare them with the plan; attnpat/distributed/context.py counts). Reset by assigning 0.
TRANSFER_BYTES = {"forward": 0, "backward": 0}

# Key ranges start at a multiple of this (the largest kernel tile side), so a table plan's tiles cropped to a
# range stay whole tiles (runtime/shardmask.py); pieces closer than this share one range (one launch).
RANGE_ALIGN = 128


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """The key rows each rank fetches.

    Attributes:
        lengths: rows per rank (contiguous shards, in rank order).
        fetch: fetch[i][j] = ((a, b), ...), the runs of absolute key rows rank i reads from rank j, ascending
            (empty: nothing), each starting and ending on a row some query of rank i attends; the diagonal
            holds rank i's own rows it attends.
        tiles: tiles[i] = non-empty (grain x grain) tiles of rank i's queries, summed over the heads the
            pattern tells apart (and batch elements, when the mask differs across them): the work, at the
            plan's granularity.
        grain: the granularity of the block mask the plan was read from.
    """

    lengths: tuple[int, ...]
    fetch: tuple[tuple[tuple[int, int], ...], ...]
    tiles: tuple[int, ...]
    grain: int

    @property
    def offsets(self) -> tuple[int, ...]:
        """Absolute position of each rank's first row."""
        return shard_offsets(self.lengths)

    def received_rows(self, rank: int) -> int:
        """Key rows rank `rank` receives from other ranks."""
        return sum(b - a for j, runs in enumerate(self.fetch[rank]) if j != rank for a, b in runs)

    def peers(self, rank: int) -> tuple[int, ...]:
        """The ranks `rank` receives rows from."""
        return tuple(j for j, runs in enumerate(self.fetch[rank]) if j != rank and runs)

    def ranges(self, rank: int) -> list[tuple[int, int, tuple[tuple[int, int, int], ...]]]:
        """The key ranges chunk `rank` computes attention over, each (start, end, ((owner, a, b), ...)): its
        fetched pieces in order, those less than RANGE_ALIGN rows apart merged, `start` the first piece's row
        rounded down to a multiple of RANGE_ALIGN. Rows of [start, end) in no piece are zero-filled (no query
        of the chunk attends them) and their dK/dV dropped."""
        pieces = sorted((a, b, j) for j, runs in enumerate(self.fetch[rank]) for a, b in runs)
        out: list = []
        for a, b, j in pieces:
            if out and a - out[-1][1] < RANGE_ALIGN:
                out[-1] = (out[-1][0], b, out[-1][2] + ((j, a, b),))
            else:   # a - previous end >= RANGE_ALIGN, so rounding a down cannot reach the previous range
                out.append((a - a % RANGE_ALIGN, b, ((j, a, b),)))
        return out


def shard_offsets(lengths) -> tuple[int, ...]:
    """Absolute position of each shard's first row."""
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(lengths)[:-1]])) if len(lengths) else ()


def grain_for(total: int) -> int:
    """The plan's granularity: 16 rows, coarser for long sequences (at most ~512 blocks a side)."""
    g = 16
    while -(-total // g) > 512:
        g *= 2
    return g


def make_plan(compiled, lengths, *, heads: int = 1, batch: int = 1, tables: dict | None = None,
              grain: int | None = None) -> ContextPlan:
    """The plan of a compiled pattern over shards of `lengths` rows (queries and keys at the same absolute
    positions 0..sum-1), from its runtime inputs as int64 numpy arrays [B', length] by name: runs of needed
    key blocks, their ends trimmed to exact attended rows."""
    lengths = tuple(int(n) for n in lengths)
    if not lengths or any(n < 0 for n in lengths):
        raise ArgumentError(f"shard lengths must be non-negative ints, one per rank, got {list(lengths)}")
    total = sum(lengths)
    grain = grain or grain_for(total)
    P = len(lengths)
    offs = shard_offsets(lengths)
    if total == 0:
        return ContextPlan(lengths, tuple(((),) * P for _ in range(P)), (0,) * P, grain)
    plan = compiled.plan
    bm, sources = lower_compiled(compiled, total, total, block_q=grain, block_k=grain,
                                 heads=heads if plan.uses_h else 1, batch=batch if plan.uses_b or tables else 1,
                                 q_start=0, tables=tables or {})
    dense = bm.to_dense()
    dense = dense.reshape(-1, *dense.shape[-2:])        # [heads (x batch), q blocks, k blocks]: the work
    work = (dense > 0).sum(0)
    kinds = _variant_grids(bm)                          # [stored variants, q blocks, k blocks]: the rows
    need = (kinds > 0).any(0)
    fetch, tiles, budget = [], [], [TRIM_BUDGET]
    for i in range(P):
        q0, q1 = offs[i], offs[i] + lengths[i]
        if q1 == q0:
            fetch.append(((),) * P)
            tiles.append(0)
            continue
        rows = slice(q0 // grain, -(-q1 // grain))
        cols = np.flatnonzero(need[rows].any(0))
        tiles.append(int(work[rows].sum()))
        edges = _Edges(kinds[:, rows], sources, q0, q1, grain, budget)
        fetch.append(tuple(edges.trim(_runs(cols, grain, offs[j], offs[j] + lengths[j])) for j in range(P)))
    return ContextPlan(lengths, tuple(fetch), tuple(tiles), grain)


def _variant_grids(bm) -> np.ndarray:
    """Tile kinds of every stored variant, uint8 [V, Q blocks, K blocks]."""
    first = {}
    for b in range(bm.batch):
        for h in range(bm.heads):
            first.setdefault(int(bm.variant[b, h]), (b, h))
    return np.stack([bm.to_dense(batch=first[v][0])[first[v][1]] for v in range(bm.num_variants)])


# points a plan evaluates one by one, at most, to trim runs to exact rows; past it, the edges left are whole
# blocks' (rows no query attends may then be fetched: correct, a little more to move)
TRIM_BUDGET = 1 << 26


class _Edges:
    """Trims runs of whole blocks to the first and last key row that some query of [q0, q1) attends, in any
    stored variant. Only a run's edge blocks are evaluated point by point, only against the query blocks whose
    tile there is PARTIAL (a FULL tile: every key attended), and from the edge inward in doubling slices of
    keys, so an attended edge costs one column of queries."""

    def __init__(self, kinds: np.ndarray, sources, q0: int, q1: int, grain: int, budget: list):
        self.kinds, self.sources, self.q0, self.q1, self.grain = kinds, sources, q0, q1, grain
        self.budget = budget      # [points left], shared by the plan's chunks

    def trim(self, runs):
        """`runs` with each edge moved inward to an attended row; runs with none dropped."""
        out = []
        for a, b in runs:
            a = self._edge(a, b, first=True)
            if a is not None:
                out.append((a, self._edge(a, b, first=False)))
        return tuple(out)

    def _edge(self, a: int, b: int, *, first: bool):
        """The first attended row of [a, b) (first=True), or one past the last; None when none is."""
        g = self.grain
        for kb in range(a // g, -(-b // g)) if first else range((b - 1) // g, a // g - 1, -1):
            lo, hi = max(a, kb * g), min(b, (kb + 1) * g)
            col = self.kinds[:, :, kb]                          # [V, query blocks of the chunk]
            if (col == TileKind.FULL).any():
                return lo if first else hi
            q = self._queries(np.flatnonzero((col > 0).any(0)))
            width = 1
            while len(q) and lo < hi:
                keys = np.arange(lo, min(hi, lo + width)) if first else np.arange(max(lo, hi - width), hi)
                cost = len(q) * len(keys) * len(self.sources)
                if cost > self.budget[0]:
                    return lo if first else hi                  # out of budget: the rows not yet excluded
                self.budget[0] -= cost
                hit = np.flatnonzero(self._attended(q, keys))
                if len(hit):
                    return int(keys[hit[0]]) if first else int(keys[hit[-1]]) + 1
                lo, hi, width = (keys[-1] + 1, hi, 2 * width) if first else (lo, keys[0], 2 * width)
        return None

    def _queries(self, qblocks: np.ndarray) -> np.ndarray:
        """The chunk's query rows in `qblocks` (indices from the chunk's first block)."""
        g = self.grain
        q = ((qblocks + self.q0 // g)[:, None] * g + np.arange(g)).ravel()
        return q[(q >= self.q0) & (q < self.q1)]

    def _attended(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        """bool [len(k)]: which keys some query of `q` attends, in any stored variant."""
        seen = np.zeros(len(k), bool)
        step = max(1, POINTS_PER_CALL // len(k))              # bounded temporaries
        for ir, inputs in self.sources:
            for s in range(0, len(q), step):
                qs = q[s:s + step, None]
                seen |= np.broadcast_to(evaluate_points(ir, qs, k[None, :], inputs, 0), (len(qs), len(k))).any(0)
        return seen


def _runs(cols: np.ndarray, grain: int, k0: int, k1: int) -> tuple[tuple[int, int], ...]:
    """The rows [k0, k1) of the needed key blocks `cols` (ascending), as runs of consecutive rows."""
    inside = cols[(cols * grain < k1) & ((cols + 1) * grain > k0)]
    if len(inside) == 0 or k1 <= k0:
        return ()
    breaks = np.flatnonzero(np.diff(inside) > 1)
    firsts, lasts = np.r_[inside[0], inside[breaks + 1]], np.r_[inside[breaks], inside[-1]]
    return tuple((max(k0, int(f) * grain), min(k1, (int(e) + 1) * grain)) for f, e in zip(firsts, lasts))


class Chunks:
    """The sequence's chunks in position order: their lengths, absolute starts, owning rank and first row in
    the owner's tensors. Contiguous: one chunk per rank. Zigzag (for causal masks): 2P equal chunks, rank r
    holding chunks r and 2P-1-r (in that order), so every rank has as much work."""

    def __init__(self, lengths, owner, local):
        self.lengths, self.owner, self.local = tuple(lengths), tuple(owner), tuple(local)
        self.starts = shard_offsets(self.lengths)

    def of(self, rank: int) -> list[int]:
        """The chunks `rank` holds, in its tensors' order."""
        return sorted((c for c, o in enumerate(self.owner) if o == rank), key=lambda c: self.local[c])

    def chunk_at(self, row: int) -> int:
        """The chunk holding absolute `row`."""
        return max(c for c, s in enumerate(self.starts) if s <= row and self.lengths[c])

    def local_rows(self, a: int, b: int) -> slice:
        """Absolute rows [a, b) of one chunk as rows of its owner's tensors."""
        c = self.chunk_at(a)
        return slice(self.local[c] + a - self.starts[c], self.local[c] + b - self.starts[c])


def layout_chunks(layout: str, lengths) -> Chunks:
    """The chunks of `layout` for ranks holding `lengths` rows each."""
    P = len(lengths)
    if layout == "contiguous":
        return Chunks(lengths, range(P), (0,) * P)
    if len(set(lengths)) != 1 or lengths[0] % 2:
        raise ArgumentError(f"layout 'zigzag' needs the same even number of rows on every rank, got {list(lengths)}")
    half = lengths[0] // 2
    return Chunks((half,) * 2 * P, [c if c < P else 2 * P - 1 - c for c in range(2 * P)],
                  [0 if c < P else half for c in range(2 * P)])


def even_lengths(total: int, world: int) -> tuple[int, ...]:
    """The contiguous split of `total` rows over `world` ranks: equal shards of ceil(total / world) rows,
    the last shorter (trailing ranks may hold none)."""
    if world < 1 or total < 0:
        raise ArgumentError(f"even_lengths needs total >= 0 and world >= 1, got {total} and {world}")
    size = -(-total // world)
    return tuple(max(0, min(size, total - r * size)) for r in range(world))


# zigzag is chosen when it lowers the busiest rank's work by at least this share
ZIGZAG_MARGIN = 0.10


def layout_choice(compiled, total: int, world: int, *, heads: int = 1, batch: int = 1,
                  tables: dict | None = None) -> tuple[str, str, dict]:
    """(layout, why in one line, {layout: (plan, chunks)}) for `total` rows over `world` ranks: zigzag when the
    sequence cuts into 2 * world equal chunks and it lowers the busiest rank's tiles by ZIGZAG_MARGIN; when
    neither layout's busiest rank has clearly less work, the one whose busiest receiver gets fewer rows;
    otherwise contiguous."""
    lengths = even_lengths(total, world)
    plans = {}
    for layout in ("contiguous", "zigzag"):
        if layout == "zigzag" and (world < 2 or total % (2 * world)):
            break
        chunks = layout_chunks(layout, lengths)
        plans[layout] = (make_plan(compiled, chunks.lengths, heads=heads, batch=batch, tables=tables), chunks)
    if "zigzag" not in plans:
        return "contiguous", (f"zigzag needs {total} rows to cut into {2 * world} equal chunks" if world > 1
                              else "one rank"), plans
    peak = {name: _peaks(*plans[name]) for name in plans}
    (wc, rc), (wz, rz) = peak["contiguous"], peak["zigzag"]
    if wz <= (1 - ZIGZAG_MARGIN) * wc:
        return "zigzag", f"it lowers the busiest rank's work from {wc:,} to {wz:,} tiles", plans
    if wc <= (1 - ZIGZAG_MARGIN) * wz:
        return "contiguous", f"its busiest rank has {wc:,} tiles against zigzag's {wz:,}", plans
    even = (f"neither lowers the busiest rank's work by {ZIGZAG_MARGIN:.0%} ({wc:,} tiles contiguous, {wz:,} "
            f"zigzag) and its busiest receiver gets")
    if rz < rc:
        return "zigzag", f"{even} {rz:,} rows against contiguous's {rc:,}", plans
    return "contiguous", f"{even} {rc:,} rows against zigzag's {rz:,}", plans


def choose_layout(compiled, total: int, world: int, *, heads: int = 1, batch: int = 1,
                  tables: dict | None = None) -> str:
    """'zigzag' or 'contiguous' for `total` rows over `world` ranks (see :func:`layout_choice`)."""
    return layout_choice(compiled, total, world, heads=heads, batch=batch, tables=tables)[0]


def _peaks(cplan: ContextPlan, chunks: Chunks) -> tuple[int, int]:
    """(the busiest rank's tiles, the most rows one rank receives) of a plan in a layout."""
    rows = rank_rows(cplan, 1, chunks)
    return max(r["tiles"] for r in rows), max(r["received_rows"] for r in rows)


def transfers(cplan: ContextPlan, chunks: Chunks, rank: int):
    """(runs rank sends: {peer: runs}, runs it receives: {peer: runs}): per pair, the union over the
    receiver's chunks of the rows it needs from the sender's chunks, ascending."""
    def needs(i: int, j: int):
        runs = []
        for cj in chunks.of(j):
            rows = sorted(r for ci in chunks.of(i) for r in cplan.fetch[ci][cj])
            for a, b in rows:
                if runs and a <= runs[-1][1] and runs[-1][0] >= chunks.starts[cj]:
                    runs[-1] = (runs[-1][0], max(runs[-1][1], b))
                else:
                    runs.append((a, b))
        return tuple(sorted(runs))
    world = max(chunks.owner) + 1
    sends = {i: needs(i, rank) for i in range(world) if i != rank}
    recvs = {j: needs(rank, j) for j in range(world) if j != rank}
    return {i: r for i, r in sends.items() if r}, {j: r for j, r in recvs.items() if r}


def rank_rows(cplan: ContextPlan, row_bytes: int, chunks: Chunks | None = None) -> list[dict]:
    """Per rank: its rows, work (non-empty tiles), peers, and the bytes it receives (`row_bytes` per key row:
    K and V of every batch element and kv head) against an all-gather (every other rank's rows) and a ring
    (P - 1 steps of the largest shard). `chunks`: the layout the plan's shards make (default: one a rank)."""
    chunks = chunks or Chunks(cplan.lengths, range(len(cplan.lengths)), (0,) * len(cplan.lengths))
    P = max(chunks.owner) + 1
    held = [sum(chunks.lengths[c] for c in chunks.of(r)) for r in range(P)]
    out = []
    for r in range(P):
        _, recvs = transfers(cplan, chunks, r)
        got = sum(b - a for runs in recvs.values() for a, b in runs)
        out.append({"rank": r, "rows": held[r], "tiles": sum(cplan.tiles[c] for c in chunks.of(r)),
                    "peers": sorted(recvs), "received_rows": got, "bytes": got * row_bytes,
                    "all_gather_bytes": (sum(held) - held[r]) * row_bytes,
                    "ring_bytes": (P - 1) * max(held) * row_bytes})
    return out


def report(cplan: ContextPlan, row_bytes: int, chunks: Chunks | None = None, layout: str = "contiguous") -> str:
    """The plan as text: one line per rank (see :func:`rank_rows`)."""
    rows = rank_rows(cplan, row_bytes, chunks)
    lines = [f"context parallel over {len(rows)} ranks ({layout} layout; tiles of {cplan.grain} x "
             f"{cplan.grain}; bytes = K and V rows received, {row_bytes:,} bytes a row):",
             f"  {'rank':>4} {'rows':>8} {'tiles':>8} {'receives':>14} {'all-gather':>14} {'ring':>14}  from"]
    for r in rows:
        share = f" ({r['bytes'] / r['all_gather_bytes']:.0%})" if r["all_gather_bytes"] else ""
        lines.append(f"  {r['rank']:>4} {r['rows']:>8,} {r['tiles']:>8,} {r['bytes']:>14,} {r['all_gather_bytes']:>14,}"
                     f" {r['ring_bytes']:>14,}  {','.join(map(str, r['peers'])) or '-'}{share}")
    total, ag = sum(r["bytes"] for r in rows), sum(r["all_gather_bytes"] for r in rows)
    lines.append(f"  total received {total:,} bytes vs all-gather {ag:,}" + (f" ({total / ag:.0%})" if ag else ""))
    return "\n".join(lines)
