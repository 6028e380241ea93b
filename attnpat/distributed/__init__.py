"""Context parallelism on torch.distributed: each rank fetches only the keys its queries can see.

``attention(q, k, v, pattern, group=None, **inputs)`` takes this rank's rows of the sequence (q, k, v
[B, H, N_local, D]: a contiguous shard, the last may be shorter, or two chunks of the load-balanced zigzag
layout) and the runtime inputs whole. Every rank computes the same plan (plan.py) from the pattern's
closed-form block mask, receives from each peer, in one message, the runs of key/value rows its queries need
(``batch_isend_irecv``), runs the kernel once per contiguous key range with the pattern evaluated at
absolute positions (the kernels' KV_START), and merges the partial results by log-sum-exp. The backward runs
the backward kernels per range with the merged output and log-sum-exp and sends the dK/dV of fetched rows
back to their owners, which sum them. See docs/distributed.md.
"""

from __future__ import annotations

from .plan import TRANSFER_BYTES, ContextPlan, make_plan, report, shard_offsets

__all__ = ["attention", "plan_for", "ContextPlan", "make_plan", "report", "shard_offsets", "TRANSFER_BYTES"]


def attention(q, k, v, pattern, *, group=None, layout: str = "contiguous", scale: float | None = None,
              lengths=None, **inputs):
    """Pattern attention over a sequence sharded across `group` (default: the world): q, k, v are this rank's
    rows [B, H, N_local, D] (k, v [B, Hkv, N_local, D]) -- its contiguous shard, or with layout='zigzag' the
    chunks r and 2P-1-r of 2P equal chunks, concatenated -- and runtime inputs the whole sequence's.
    `lengths`: every rank's row count (all-gathered when not given). Differentiable in q, k, v."""
    from .context import attention as _attention   # torch.distributed only when used
    return _attention(q, k, v, pattern, group=group, layout=layout, scale=scale, lengths=lengths, **inputs)


def plan_for(pattern, lengths, *, heads: int = 1, batch: int = 1, device=None, **inputs):
    """(ContextPlan, the whole sequence's PreparedMask) for shards of `lengths` rows: inputs validated once."""
    from .context import plan_for as _plan_for
    return _plan_for(pattern, lengths, heads=heads, batch=batch, device=device, **inputs)
