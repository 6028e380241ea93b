"""The context-parallel attention on torch.distributed: transfers, per-range kernels, the merge, the backward
(the package docstring describes it)."""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist

from ..errors import ArgumentError
from ..runtime.shardmask import ShardMask
from .plan import TRANSFER_BYTES, Chunks, layout_chunks, make_plan, transfers

__all__ = ["attention", "plan_for", "ShardMask"]

_kernels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kernel(pattern):
    from ..runtime.kernel import Kernel, _check_pattern, _spec_kernel
    if isinstance(pattern, str):
        return _spec_kernel(pattern)
    _check_pattern(pattern)
    found = _kernels.get(pattern)
    if found is None:
        found = _kernels[pattern] = Kernel(pattern.compiled)
    return found


def _peer(group, j: int) -> int:
    return j if group is None else dist.get_global_rank(group, j)


def _exchange(group, sends: dict, recvs: dict, like: torch.Tensor) -> dict:
    """Point-to-point transfers: `sends` {rank: tensor}, `recvs` {rank: shape}; returns {rank: received}."""
    ops, out = [], {}
    for j, shape in recvs.items():
        out[j] = torch.empty(shape, dtype=like.dtype, device=like.device)
        ops.append(dist.P2POp(dist.irecv, out[j], _peer(group, j), group))
    for j, t in sends.items():
        ops.append(dist.P2POp(dist.isend, t.contiguous(), _peer(group, j), group))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return out


def _lengths(group, n: int, device) -> tuple[int, ...]:
    """Every rank's shard length (one all_gather of ints)."""
    world = dist.get_world_size(group)
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    got = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(got, mine, group=group)
    return tuple(int(t.item()) for t in got)


def plan_for(pattern, lengths, *, heads: int = 1, batch: int = 1, device=None, **inputs) -> tuple:
    """(ContextPlan, the whole sequence's PreparedMask) for shards of `lengths` rows: inputs validated once."""
    from ..runtime.blockmask import prepare
    kernel = _kernel(pattern)
    compiled = kernel.compiled
    if compiled.plan.float_inputs or (compiled.canonical.scores is not None
                                      and compiled.canonical.scores.sink is not None):
        raise ArgumentError(f"pattern '{compiled.name}': context parallelism supports no float inputs or sink "
                            f"score term yet (docs/distributed.md)")
    total = sum(lengths)
    whole = prepare(compiled, total, total, batch=batch if compiled.plan.uses_b else None,
                    heads=heads if compiled.plan.uses_h else None, q_offset=0, device=device, inputs=inputs)
    tables = {n: t.cpu().numpy() for n, t in whole.inputs.items()}
    return make_plan(compiled, lengths, heads=heads, batch=batch, tables=tables), whole


def attention(q, k, v, pattern, *, group=None, layout: str = "contiguous", scale: float | None = None,
              lengths=None, **inputs):
    """Pattern attention over a sequence sharded across `group` (default: the world): q, k, v are this rank's
    rows [B, H, N_local, D] (k, v [B, Hkv, N_local, D]) in `layout`, runtime inputs the whole sequence's.
    `lengths`: every rank's row count (all-gathered when not given). Differentiable in q, k, v."""
    if layout not in ("contiguous", "zigzag"):
        raise ArgumentError(f"layout must be 'contiguous' or 'zigzag', got {layout!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise ArgumentError("attnpat.distributed.attention needs torch.distributed initialised "
                            "(torch.distributed.init_process_group)")
    from ..runtime.checks import check_qkv
    from ..runtime.checks import check_scale
    B, Hq, N, D, Hkv, M = check_qkv(q, k, v, dtypes=(torch.float16, torch.bfloat16, torch.float32))
    if M != N:
        raise ArgumentError(f"q and k must hold the same rows of the sequence: q has {N} rows, k {M}")
    if v.shape[3] != D or not 16 <= D <= 256:
        raise ArgumentError(f"q, k and v need one head_dim between 16 and 256, got {D} and v's {v.shape[3]}")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    lengths = _lengths(group, N, q.device) if lengths is None else tuple(int(x) for x in lengths)
    if len(lengths) != world or lengths[rank] != N:
        raise ArgumentError(f"'lengths' {list(lengths)} must hold one length per rank ({world}), this rank's "
                            f"({rank}) equal to its {N} rows")
    chunks = layout_chunks(layout, lengths)
    kernel = _kernel(pattern)
    kernel._check_backend(q.device)   # CUDA tensors, or the interpreter announced once
    cplan, whole = plan_for(pattern, chunks.lengths, heads=Hq, batch=B, device=q.device, **inputs)
    info = (kernel, cplan, chunks, whole, group, rank, check_scale(scale, D))
    return _ContextAttention.apply(q, k, v, info)


def _rows(runs) -> int:
    return sum(b - a for a, b in runs)


def _pack(t: torch.Tensor, runs, chunks: Chunks) -> torch.Tensor:
    """The rows of `runs` (absolute) of this rank's t [2, B, H, N, D], one tensor."""
    parts = [t[:, :, :, chunks.local_rows(a, b)] for a, b in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)


def _unpack(t: torch.Tensor, runs) -> dict:
    """A received message of `runs` split back: {(a, b): rows [a, b)}."""
    out, at = {}, 0
    for a, b in runs:
        out[(a, b)], at = t[:, :, :, at:at + b - a], at + b - a
    return out


def _find(runs: dict, a: int, b: int):
    """(the run of `runs` holding rows [a, b), the offset of a in it)."""
    for (a0, b0) in runs:
        if a0 <= a and b <= b0:
            return (a0, b0), a - a0
    raise RuntimeError(f"rows [{a}, {b}) were not received")   # never: the plan sends every piece it computes


class _ContextAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, info):
        kernel, cplan, chunks, whole, group, rank, scale = info
        B, Hkv, _, D = k.shape
        sends, recvs = transfers(cplan, chunks, rank)
        kv = torch.stack([k, v])                                          # one message per peer: K and V
        got = _exchange(group, {i: _pack(kv, runs, chunks) for i, runs in sends.items()},
                        {j: (2, B, Hkv, _rows(runs), D) for j, runs in recvs.items()}, kv)
        TRANSFER_BYTES["forward"] += sum(t.numel() * t.element_size() for t in got.values())
        got = {j: _unpack(t, recvs[j]) for j, t in got.items()}

        def rows(cj: int, a: int, b: int) -> torch.Tensor:
            j = chunks.owner[cj]
            if j == rank:
                return kv[:, :, :, chunks.local_rows(a, b)]
            run, at = _find(got[j], a, b)
            return got[j][run][:, :, :, at:at + b - a]

        out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
        work = []
        for ci in chunks.of(rank):
            lo, n = chunks.local[ci], chunks.lengths[ci]
            qc = q[:, :, lo:lo + n].contiguous()
            ranges = []
            for start, end, pieces in cplan.ranges(ci):
                parts = [rows(cj, a, b) for cj, a, b in pieces]
                kvr = parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)
                mask = ShardMask(whole, chunks.starts[ci], n, start, end - start)
                ranges.append((kvr[0].contiguous(), kvr[1].contiguous(), mask, pieces))
            out[:, :, lo:lo + n], lse[:, :, lo:lo + n] = _merge(
                [kernel.forward(qc, kr, vr, scale, True, m) for kr, vr, m, _ in ranges], qc)
            work.append((lo, n, ranges))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.info, ctx.work, ctx.transfers = info, work, (sends, recvs)
        return out

    @staticmethod
    def backward(ctx, dout):
        from ..runtime.autograd import attention_backward
        q, k, v, out, lse = ctx.saved_tensors
        kernel, cplan, chunks, whole, group, rank, scale = ctx.info
        sends, recvs = ctx.transfers
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dkv = torch.zeros((2, *k.shape), dtype=torch.float32, device=k.device)
        acc = {j: {run: torch.zeros((2, *k.shape[:2], run[1] - run[0], k.shape[3]), dtype=torch.float32,
                                    device=k.device) for run in runs} for j, runs in recvs.items()}
        for lo, n, ranges in ctx.work:
            rows = slice(lo, lo + n)
            qc, oc, lc, dc = (t[:, :, rows].contiguous() for t in (q, out, lse, dout))
            for kr, vr, mask, pieces in ranges:
                g_q, g_k, g_v = attention_backward(kernel, qc, kr, vr, oc, lc, dc, scale=scale, mask=mask)
                dq[:, :, rows] += g_q.float()
                g_kv = torch.stack([g_k, g_v]).float()
                for cj, a, b in pieces:
                    part, j = g_kv[:, :, :, a - mask.kv_start:b - mask.kv_start], chunks.owner[cj]
                    if j == rank:
                        dkv[:, :, :, chunks.local_rows(a, b)] += part
                    else:
                        run, at = _find(acc[j], a, b)
                        acc[j][run][:, :, :, at:at + b - a] += part
        back = {j: torch.cat([acc[j][run] for run in recvs[j]], dim=3).to(k.dtype) for j in acc}
        got = _exchange(group, back, {i: (2, *k.shape[:2], _rows(runs), k.shape[3]) for i, runs in sends.items()},
                        k)   # the forward's transfers, reversed
        TRANSFER_BYTES["backward"] += sum(t.numel() * t.element_size() for t in got.values())
        for i, t in got.items():
            for (a, b), part in _unpack(t, sends[i]).items():
                dkv[:, :, :, chunks.local_rows(a, b)] += part.float()
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None


def _merge(parts, q):
    """Partial (out, lse) over disjoint key ranges merged by log-sum-exp: (out, lse); 0 and -inf for a
    query no range allows."""
    if not parts:
        return torch.zeros_like(q), torch.full(q.shape[:3], float("-inf"), device=q.device)
    lses = torch.stack([lse for _, lse in parts])                         # [R, B, H, N]
    lse = torch.logsumexp(lses, dim=0)
    safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    w = torch.exp(lses - safe)                                             # 0 where a range has no key
    out = sum(w[r, ..., None] * o.float() for r, (o, _) in enumerate(parts))
    return out.to(q.dtype), lse
