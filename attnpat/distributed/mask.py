"""The prepared context mask: what every layer and the backward of one step share, built once.

``attnpat.distributed.block_mask(pattern, lengths_or_total, ...)`` validates the runtime inputs, lowers the
whole sequence's mask, makes the plan and this rank's transfers and per-range ShardMasks, and returns a
:class:`ContextMask`; ``attnpat.distributed.attention(..., block_mask=cm)`` reads it. A call without one makes
one for itself (context.py). docs/distributed.md describes the object.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from ..errors import ArgumentError
from ..runtime.shardmask import ShardMask
from ..runtime.kernel import kernel_of
from .plan import Chunks, even_lengths, layout_chunks, layout_choice, make_plan, transfers

__all__ = ["ContextMask", "block_mask", "split_lengths", "BUILDS", "LAYOUTS"]

# Context masks built since the process started (each one a plan and a whole-sequence mask): tests count the
# builds per step with it, as tests of attnpat.block_mask count runtime.blockmask.BUILD_COUNTS.
BUILDS = {"plans": 0}
LAYOUTS = ("contiguous", "zigzag")

def split_lengths(total: int, world: int, layout: str) -> tuple[int, ...]:
    """Rows per rank for a sequence of `total` rows: equal shards, the last shorter (zigzag: equal, even)."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ArgumentError(f"the sequence length must be an int >= 0, got {total!r}")
    if layout == "zigzag" and total % (2 * world):
        raise ArgumentError(f"layout 'zigzag' cuts the sequence into {2 * world} equal chunks: its length "
                            f"{total} must be a multiple of {2 * world}")
    return even_lengths(total, world)


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """One kernel call of a query chunk: keys [start, end) (absolute), filled from `pieces` ((chunk, a, b):
    rows [a, b) of that chunk; rows no piece covers are zero, masked for every query of the chunk), its
    block mask, and whether it runs the pattern with its sink (one range per chunk does)."""

    start: int
    end: int
    pieces: tuple[tuple[int, int, int], ...]
    mask: ShardMask
    sink: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    """A query chunk this rank holds: its rows [lo, lo + n) of the rank's tensors and its key ranges."""

    chunk: int
    lo: int
    n: int
    ranges: tuple[Range, ...]


class ContextMask:
    """A pattern's context-parallel mask for one sequence layout and process group, built once per step.

    Attributes:
        kernel, compiled: the pattern's Kernel and compiled value.
        layout: 'contiguous' (one shard a rank) or 'zigzag' (chunks r and 2P-1-r of 2P).
        lengths: rows per rank (what each rank's q, k, v hold); total: the sequence's length.
        group, world, rank: the process group (None: the world), its size and this process's rank in it.
        heads, batch: the sizes it was built for (None: any, as attnpat.block_mask; batch is also set by
            [batch, L] inputs).
        device: where its tables and inputs live.
        plan: the ContextPlan (key rows per chunk); chunks: the layout's chunks (plan.Chunks).
        whole: the whole sequence's PreparedMask (runtime inputs validated once, tables built once).
        sends, recvs: this rank's transfers, {peer: runs of absolute rows}.
        work: this rank's query chunks and their key ranges (Work), each with its ShardMask.
        handle: a 0-dim int64 CPU tensor naming the mask to the custom ops (ops.py).
    """

    __slots__ = ("kernel", "compiled", "layout", "lengths", "total", "group", "world", "rank", "heads", "batch",
                 "device", "plan", "chunks", "whole", "sends", "recvs", "work", "handle", "__weakref__")

    def __init__(self, kernel, layout, lengths, group, world, rank, heads, batch, device, plan, chunks, whole):
        self.kernel, self.compiled, self.layout, self.lengths = kernel, kernel.compiled, layout, lengths
        self.total, self.group, self.world, self.rank = sum(lengths), group, world, rank
        self.heads, self.batch, self.device, self.plan, self.chunks, self.whole = (heads, batch, device, plan,
                                                                                    chunks, whole)
        self.sends, self.recvs = transfers(plan, chunks, rank)
        self.work = tuple(_work(plan, chunks, whole, c, kernel.compiled) for c in chunks.of(rank)
                          if chunks.lengths[c])
        self.handle: torch.Tensor | None = None   # names the mask to the custom ops (ops.py)

    # -- the caller's tensors in this layout ----------------------------------------------------------------

    def rows(self, rank: int | None = None) -> torch.Tensor:
        """The absolute positions of `rank`'s rows (default: this rank's), in its tensors' order (int64)."""
        c = self.chunks
        r = self.rank if rank is None else rank
        parts = [torch.arange(c.starts[i], c.starts[i] + c.lengths[i]) for i in c.of(r)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def shard(self, x: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """This rank's rows of a whole-sequence tensor (`dim` indexes positions), in this layout's order."""
        if x.shape[dim] != self.total:
            raise ArgumentError(f"shard: the tensor has {x.shape[dim]} rows along dim {dim}, the sequence "
                                f"{self.total}")
        return x.index_select(dim, self.rows().to(x.device))

    def unshard(self, parts, dim: int = 2) -> torch.Tensor:
        """The whole sequence from every rank's rows (`parts`, in rank order, as shard returned them)."""
        if len(parts) != self.world:
            raise ArgumentError(f"unshard: {len(parts)} parts for {self.world} ranks")
        order = torch.cat([self.rows(r) for r in range(self.world)])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return torch.cat(list(parts), dim).index_select(dim, inverse.to(parts[0].device))

    def gather(self, x: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """The whole sequence from this rank's rows `x` on every rank: one all_gather (padded to the longest
        shard; not differentiable)."""
        most = max(self.lengths)
        pad = list(x.shape)
        pad[dim] = most - x.shape[dim]
        padded = torch.cat([x, x.new_zeros(pad)], dim).contiguous()
        got = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(got, padded, group=self.group)
        return self.unshard([t.narrow(dim, 0, n) for t, n in zip(got, self.lengths)], dim)

    def __repr__(self) -> str:
        return (f"ContextMask({self.compiled.name}, layout={self.layout}, lengths={list(self.lengths)}, "
                f"rank={self.rank}/{self.world}, heads={self.heads}, batch={self.batch}, device={self.device}, "
                f"peers={sorted(self.recvs)})")


def _work(plan, chunks: Chunks, whole, c: int, compiled) -> Work:
    start, n = chunks.starts[c], chunks.lengths[c]
    spans = list(plan.ranges(c))
    has_sink = compiled.checked.scores is not None and compiled.checked.scores.sink is not None
    if not spans and has_sink:   # no key: one call over the chunk's own (masked) rows gives lse = the sink
        spans = [(start, start + n, ((c, start, start + n),))]
    ranges = tuple(Range(a, b, tuple(pieces), ShardMask(whole, start, n, a, b - a), i == 0 and has_sink)
                   for i, (a, b, pieces) in enumerate(spans))
    return Work(c, chunks.local[c], n, ranges)


def block_mask(pattern, lengths, *, group=None, layout: str = "auto", heads: int | None = None,
               batch: int | None = None, device=None, **inputs) -> ContextMask:
    """attnpat.distributed.block_mask: a ContextMask for `group`, `lengths` (rows per rank, or the sequence's
    length, split evenly) in `layout` ('auto': chosen from the plan's per-rank work, plan.layout_choice),
    integer runtime inputs the whole sequence's (checked once, kept on `device`)."""
    from ..runtime.blockmask import prepare
    from .ops import register
    if layout not in (*LAYOUTS, "auto"):
        raise ArgumentError(f"layout must be 'auto', 'contiguous' or 'zigzag', got {layout!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise ArgumentError("attnpat.distributed needs torch.distributed initialised "
                            "(torch.distributed.init_process_group)")
    kernel = kernel_of(pattern)
    compiled = kernel.compiled
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if isinstance(lengths, int) and not isinstance(lengths, bool):
        lengths = split_lengths(lengths, world, layout)
    lengths = tuple(int(x) for x in lengths)
    if len(lengths) != world or any(n < 0 for n in lengths):
        raise ArgumentError(f"'lengths' {list(lengths)} must hold one row count >= 0 per rank ({world})")
    terms = compiled.checked.scores
    floats = sorted(set(inputs) & {d.name for d in terms.inputs}) if terms is not None else []
    if floats:
        raise ArgumentError(f"float input '{floats[0]}' given to block_mask: float[h] inputs (score terms) go "
                            f"to attention, with the mask")
    for what, size, used in (("heads", heads, compiled.plan.uses_h), ("batch", batch, compiled.plan.uses_b)):
        if used and size is None:   # the plan must cover every head / sequence the calls will run
            raise ArgumentError(f"pattern '{compiled.name}' reads {'h' if what == 'heads' else 'b'}: pass "
                                f"{what}= (the query {what} of the calls) to block_mask")
    total = sum(lengths)
    whole = prepare(compiled, total, total, batch=batch, heads=heads, q_offset=0, device=device, inputs=inputs)
    rows = batch if batch is not None else max((t.shape[0] for t in whole.inputs.values()), default=1)
    tables = {n: t.cpu().numpy() for n, t in whole.inputs.items()}
    sizes = dict(heads=heads or 1, batch=rows, tables=tables)
    if layout == "auto" and lengths == even_lengths(total, world):
        layout, _, plans = layout_choice(compiled, total, world, **sizes)
        plan, chunks = plans[layout]
    else:   # 'auto' for shards of other lengths: they are contiguous
        layout = "contiguous" if layout == "auto" else layout
        chunks = layout_chunks(layout, lengths)
        plan = make_plan(compiled, chunks.lengths, **sizes)
    BUILDS["plans"] += 1
    cm = ContextMask(kernel, layout, lengths, group, world, rank, heads, whole._batch_rows(), whole.device, plan,
                     chunks, whole)
    cm.handle = register(cm)
    return cm
