"""Context parallelism on torch.distributed: each rank fetches only the keys its queries can see.

``attention(q, k, v, pattern, group=None, **inputs)`` takes this rank's rows of the sequence (q, k, v
[B, H, N_local, D]: a contiguous shard, the last may be shorter, or two chunks of the load-balanced zigzag
layout) and the runtime inputs whole. Every rank computes the same plan (plan.py) from the pattern's
closed-form block mask, receives from each peer, in one message, the runs of key/value rows its queries need
(``batch_isend_irecv``), runs the kernel once per contiguous key range with the pattern evaluated at
absolute positions (the kernels' KV_START), and merges the partial results by log-sum-exp; a `score sink` is
counted once (one range per query chunk runs the pattern with it, the others without). The backward runs the
backward kernels per range with the merged output and log-sum-exp and sends the dK/dV of fetched rows back to
their owners, which sum them; a float[h] input (ALiBi slopes, sinks) gets the part of its gradient that this
rank's queries make, which the caller's gradient all-reduce sums, as for any replicated parameter.

``block_mask(pattern, lengths_or_total, ...)`` builds the plan, the whole sequence's mask and this rank's
transfers and per-range masks once per step (a :class:`ContextMask`), for every layer and the backward:
``attention(q, k, v, pattern, block_mask=cm)``; its ``layout="auto"`` picks contiguous or zigzag shards from
the plan's per-rank work, and ``cm.shard`` / ``cm.gather`` move whole-sequence tensors to and from that
layout. The call is a pair of custom ops (ops.py), so ``torch.compile(fullgraph=True)`` records it as one
node when the mask is prepared outside the compiled function. See docs/distributed.md.
"""

from __future__ import annotations

from .plan import TRANSFER_BYTES, ContextPlan, make_plan, report, shard_offsets

__all__ = ["attention", "block_mask", "ContextMask", "ContextPlan", "make_plan", "report", "shard_offsets",
           "TRANSFER_BYTES", "BUILDS"]


def attention(q, k, v, pattern, *, group=None, layout: str | None = None, scale: float | None = None,
              lengths=None, block_mask=None, **inputs):
    """Pattern attention over a sequence sharded across `group` (default: the world): q, k, v are this rank's
    rows [B, H, N_local, D] (k, v [B, Hkv, N_local, D]) -- its contiguous shard, or with layout='zigzag' the
    chunks r and 2P-1-r of 2P equal chunks, concatenated -- and runtime inputs the whole sequence's (with a
    prepared `block_mask`: only the float[h] ones; its layout, group and lengths hold). `lengths`: every
    rank's row count (all-gathered when not given). Differentiable in q, k, v and the float[h] inputs."""
    from .context import attention as _attention   # torch.distributed only when used
    return _attention(q, k, v, pattern, group=group, layout=layout, scale=scale, lengths=lengths,
                      block_mask=block_mask, **inputs)


def block_mask(pattern, lengths, *, group=None, layout: str = "auto", heads: int | None = None,
               batch: int | None = None, device=None, **inputs):
    """A ContextMask built once per step for every layer and the backward: `lengths` rows per rank (or the
    sequence's length, split evenly) of `group` in `layout`, integer runtime inputs the whole sequence's."""
    from .mask import block_mask as _block_mask
    return _block_mask(pattern, lengths, group=group, layout=layout, heads=heads, batch=batch, device=device,
                       **inputs)


def __getattr__(name: str):
    """ContextMask and BUILDS, imported (with torch.distributed) on first use."""
    if name in ("ContextMask", "BUILDS"):
        from . import mask
        return getattr(mask, name)
    raise AttributeError(f"module 'attnpat.distributed' has no attribute {name!r}")
