"""The context-parallel forward and backward on checked arguments and a ContextMask (mask.py): the transfers,
one kernel call per key range, the log-sum-exp merge, and dK/dV sent back to their owners (the package
docstring describes them)."""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from .plan import TRANSFER_BYTES

__all__ = ["forward", "backward", "sinkless"]

_sinkless: dict = {}                                                  # canonical key -> Kernel without the sink


def sinkless(kernel):
    """The kernel of the same pattern without its `score sink` (None when it has none): the ranges after a
    chunk's first run through it, so the merge counts the sink once."""
    terms = kernel.compiled.checked.scores
    if terms is None or terms.sink is None:
        return None
    found = _sinkless.get(kernel.key)
    if found is None:
        from ..compiler import nodes as N
        from ..compiler import pipeline
        from ..runtime.kernel import Kernel
        read = {x.id for e in terms.bias for x in N.walk(e) if isinstance(x, N.Name)}
        scores = None if terms.softcap is None and not terms.bias else dataclasses.replace(
            terms, sink=None, inputs=tuple(d for d in terms.inputs if d.name in read))
        found = _sinkless[kernel.key] = Kernel(pipeline.back(dataclasses.replace(kernel.compiled.checked,
                                                                                 scores=scores)))
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


def _rows(runs) -> int:
    return sum(b - a for a, b in runs)


def _pack(t: torch.Tensor, runs, chunks) -> torch.Tensor:
    """The rows of `runs` (absolute) of this rank's t [2, B, H, N, D], one tensor."""
    parts = [t[:, :, :, chunks.local_rows(a, b)] for a, b in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)


def _received_at(cm) -> tuple[list, dict]:
    """Where received rows sit in the one received tensor (peers in rank order): ([(a, b, offset) of each run
    of absolute rows [a, b)], {peer: offset of its first row})."""
    out, first, at = [], {}, 0
    for j in sorted(cm.recvs):
        first[j] = at
        for a, b in cm.recvs[j]:
            out.append((a, b, at))
            at += b - a
    return out, first


def _rows_of(cm, kv: torch.Tensor, received: torch.Tensor, at: list, c: int, a: int, b: int):
    """Rows [a, b) of chunk c: this rank's own, or from the received tensor; the slice of `kv` or `received`."""
    if cm.chunks.owner[c] == cm.rank:
        return kv, cm.chunks.local_rows(a, b)
    for a0, b0, off in at:
        if a0 <= a and b <= b0:
            return received, slice(off + a - a0, off + b - a0)
    raise RuntimeError(f"rows [{a}, {b}) were not received")   # never: the plan sends every piece it computes


def _range_kv(cm, kv, received, at, rng) -> torch.Tensor:
    """Keys and values [2, B, Hkv, end - start, D] of a range: its pieces, rows no piece covers zero."""
    parts = [_rows_of(cm, kv, received, at, *p) for p in rng.pieces]
    spans = [(p[1], p[2]) for p in rng.pieces]
    if spans[0][0] == rng.start and spans[-1][1] == rng.end and all(
            x[1] == y[0] for x, y in zip(spans, spans[1:])):
        got = [t[:, :, :, s] for t, s in parts]
        return got[0] if len(got) == 1 else torch.cat(got, dim=3)
    out = kv.new_zeros((*kv.shape[:3], rng.end - rng.start, kv.shape[4]))
    for (t, s), (a, b) in zip(parts, spans):
        out[:, :, :, a - rng.start:b - rng.start] = t[:, :, :, s]
    return out


def forward(kernel, cm, q, k, v, scale: float, floats: dict):
    """(out, lse, received K/V [2, B, Hkv, rows, D]) of this rank's queries: the transfers, one kernel call per
    key range, the log-sum-exp merge (a `score sink` counted once: one range runs the pattern with it)."""
    B, Hkv, _, D = k.shape
    kv = torch.stack([k, v])                                              # one message per peer: K and V
    got = _exchange(cm.group, {i: _pack(kv, runs, cm.chunks) for i, runs in cm.sends.items()},
                    {j: (2, B, Hkv, _rows(runs), D) for j, runs in cm.recvs.items()}, kv)
    TRANSFER_BYTES["forward"] += sum(t.numel() * t.element_size() for t in got.values())
    received = torch.cat([got[j] for j in sorted(got)], dim=3) if got else kv.new_zeros((2, B, Hkv, 0, D))
    at, _ = _received_at(cm)
    plain = sinkless(kernel) or kernel
    out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    for w in cm.work:
        qc = q[:, :, w.lo:w.lo + w.n].contiguous()
        parts = []
        for rng in w.ranges:
            kvr = _range_kv(cm, kv, received, at, rng)
            parts.append((kernel if rng.sink else plain).forward(qc, kvr[0].contiguous(), kvr[1].contiguous(),
                                                                 scale, True, rng.mask, floats))
        out[:, :, w.lo:w.lo + w.n], lse[:, :, w.lo:w.lo + w.n] = _merge(parts, qc)
    return out, lse, received


def backward(kernel, cm, q, k, v, out, lse, received, dout, scale: float, floats: dict,
             float_grads: tuple = ()):
    """(dq, dk, dv, [gradient of each float input named in `float_grads`]) from the merged out and lse: the
    backward kernels per range, dK/dV of fetched rows sent back to their owners (the forward's transfers
    reversed). A float input's gradient is this rank's queries' part."""
    from ..runtime.autograd import attention_backward
    from ..runtime.scores import op_input_grads, stack_bias_grads
    chunks, (at, first) = cm.chunks, _received_at(cm)
    kv = torch.stack([k, v])
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv = torch.zeros(kv.shape, dtype=torch.float32, device=k.device)
    dgot = torch.zeros(received.shape, dtype=torch.float32, device=k.device)
    bias = {}
    for w in cm.work:
        rows = slice(w.lo, w.lo + w.n)
        qc, oc, lc, dc = (t[:, :, rows].contiguous() for t in (q, out, lse, dout))
        for rng in w.ranges:
            kvr = _range_kv(cm, kv, received, at, rng)
            grads = {} if float_grads else None
            g_q, g_k, g_v = attention_backward(kernel, qc, kvr[0].contiguous(), kvr[1].contiguous(), oc, lc, dc,
                                               scale=scale, mask=rng.mask, floats=floats, bias_grads=grads)
            for n, g in (grads or {}).items():
                bias[n] = bias[n] + g if n in bias else g
            dq[:, :, rows] += g_q.float()
            g_kv = torch.stack([g_k, g_v]).float()
            for c, a, b in rng.pieces:   # rows no piece covers were zeros: their gradient is dropped
                t, s = _rows_of(cm, dkv, dgot, at, c, a, b)
                t[:, :, :, s] += g_kv[:, :, :, a - rng.start:b - rng.start]
    back = {j: dgot[:, :, :, first[j]:first[j] + _rows(runs)].to(k.dtype) for j, runs in cm.recvs.items()}
    got = _exchange(cm.group, back, {i: (2, *k.shape[:2], _rows(runs), k.shape[3]) for i, runs in cm.sends.items()},
                    k)
    TRANSFER_BYTES["backward"] += sum(t.numel() * t.element_size() for t in got.values())
    for i, t in got.items():
        at_i = 0
        for a, b in cm.sends[i]:
            dkv[:, :, :, chunks.local_rows(a, b)] += t[:, :, :, at_i:at_i + b - a].float()
            at_i += b - a
    dfloats = []
    if float_grads:
        names = ",".join(sorted(floats))
        tensors = [floats[n].detach().requires_grad_(n in float_grads) for n in sorted(floats)]
        zero = torch.zeros(q.shape[1], dtype=torch.float32, device=q.device)   # a rank with no query
        dbias = stack_bias_grads(kernel.plan, {n: bias.get(n, zero) for n in kernel.plan.bias_inputs},
                                 q.shape[1], q.device)
        dfloats = op_input_grads(kernel.compiled, names, tensors, out, lse, dout, dbias)
        dfloats = [g for n, g in zip(sorted(floats), dfloats) if n in float_grads]
    return dq.to(q.dtype), dkv[0].to(k.dtype, copy=True), dkv[1].to(v.dtype, copy=True), dfloats   # no aliases


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
