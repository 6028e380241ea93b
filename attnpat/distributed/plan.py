"""Context-parallel plans: which key rows each rank fetches, from the pattern's closed-form block mask.

The sequence is split into contiguous shards, one per rank (the last may be shorter). Rank i's queries need,
from the shard of rank j, the key rows of every non-empty tile between them: runs of consecutive rows
[a, b), all sent in one message per (i, j) pair. The mask is lowered once at a fine granularity (``grain`` rows,
compiler/lower), so a sliding window whose shard is at least the window needs one neighbour's halo and a
document mask only the shards its documents span. Every rank computes the same plan from the same sizes and
inputs, so no rank asks another what it needs.

This module reads no torch.distributed: ``attnpat explain --ranks P`` prints the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compiler.lower.variants import lower_compiled
from ..errors import ArgumentError

__all__ = ["ContextPlan", "Chunks", "make_plan", "layout_chunks", "transfers", "shard_offsets", "grain_for",
           "report", "rank_rows", "TRANSFER_BYTES"]

# Bytes this process received from peers, by pass, counted from the buffers the transfers filled (tests and
# the benchmark compare them with the plan; attnpat/distributed/context.py counts). Reset by assigning 0.
TRANSFER_BYTES = {"forward": 0, "backward": 0}


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """The key rows each rank fetches.

    Attributes:
        lengths: rows per rank (contiguous shards, in rank order).
        fetch: fetch[i][j] = ((a, b), ...), the runs of absolute key rows rank i reads from rank j, ascending
            (empty: nothing); the diagonal holds rank i's own rows it attends.
        tiles: tiles[i] = non-empty (grain x grain) tiles of rank i's queries, summed over stored variants
            (the work, at the plan's granularity).
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
        """The key ranges rank `rank` computes attention over: adjacent fetched pieces merged, each as
        (start, end, ((owner, a, b), ...))."""
        pieces = sorted((a, b, j) for j, runs in enumerate(self.fetch[rank]) for a, b in runs)
        out: list = []
        for a, b, j in pieces:
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b, out[-1][2] + ((j, a, b),))
            else:
                out.append((a, b, ((j, a, b),)))
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
    positions 0..sum-1), from its runtime inputs as int64 numpy arrays [B', length] by name."""
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
    bm, _ = lower_compiled(compiled, total, total, block_q=grain, block_k=grain,
                           heads=heads if plan.uses_h else 1, batch=batch if plan.uses_b or tables else 1,
                           q_start=0, tables=tables or {})
    dense = bm.to_dense()
    dense = dense.reshape(-1, *dense.shape[-2:])        # [variants in use, q blocks, k blocks]
    need = (dense > 0).any(0)
    work = (dense > 0).sum(0)
    fetch, tiles = [], []
    for i in range(P):
        q0, q1 = offs[i], offs[i] + lengths[i]
        if q1 == q0:
            fetch.append(((),) * P)
            tiles.append(0)
            continue
        rows = slice(q0 // grain, -(-q1 // grain))
        cols = np.flatnonzero(need[rows].any(0))
        tiles.append(int(work[rows].sum()))
        fetch.append(tuple(_runs(cols, grain, offs[j], offs[j] + lengths[j]) for j in range(P)))
    return ContextPlan(lengths, tuple(fetch), tuple(tiles), grain)


def _runs(cols: np.ndarray, grain: int, k0: int, k1: int) -> tuple[tuple[int, int], ...]:
    """The rows [k0, k1) of the needed key blocks `cols` (ascending), as runs of consecutive rows."""
    inside = cols[(cols * grain < k1) & ((cols + 1) * grain > k0)]
    if len(inside) == 0:
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
