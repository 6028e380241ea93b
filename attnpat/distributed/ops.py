"""The context-parallel attention as PyTorch custom ops (``torch.ops.attnpat.cp_fwd`` / ``cp_bwd``), so that
torch.compile records each call as one opaque node, as runtime/op.py does for one device.

* the ContextMask is named by its handle, a 0-dim int64 CPU tensor (``ContextMask.handle``); the mask holds
  the kernel, the process group, the plan and the per-range masks, so the ops take nothing else about them;
* float[h] inputs are a list of tensors with their names beside them (one comma-separated string), checked
  inside the op;
* the forward returns (out, lse, token): the token names what the backward needs and the forward made (the
  received K/V rows and the mask), kept here until the backward takes it or the autograd graph is freed.
"""

from __future__ import annotations

import itertools
import weakref

import torch

from ..errors import ArgumentError
from .core import backward, forward

__all__ = ["register", "apply"]

_MASKS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # handle -> ContextMask, while it lives
_HELD: dict = {}                                                       # token -> (mask, received K/V)
_IDS = itertools.count(1)


def register(cm) -> torch.Tensor:
    """Give a ContextMask its handle tensor (once, when it is made)."""
    n = next(_IDS)
    _MASKS[n] = cm
    return torch.tensor(n, dtype=torch.int64)


def _mask(handle: torch.Tensor):
    found = _MASKS.get(int(handle))
    if found is None:
        raise ArgumentError("the context mask of this call no longer exists; keep the object that "
                            "attnpat.distributed.block_mask returned while calls use it")
    return found


def _floats(cm, names: str, tensors, heads: int) -> dict:
    from ..runtime.scores import split
    _, floats = split(cm.compiled, heads, dict(zip(names.split(",") if names else (), tensors)))
    return floats


@torch.library.custom_op("attnpat::cp_fwd", mutates_args=())
def cp_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, floats: list[torch.Tensor], names: str,
           mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Context-parallel attention on checked q, k, v: (out, lse, token of what the backward reads)."""
    cm = _mask(mask)
    cm.kernel._check_backend(q.device)
    out, lse, received = forward(cm.kernel, cm, q, k, v, scale, _floats(cm, names, floats, q.shape[1]))
    n = next(_IDS)
    _HELD[n] = (cm, received)
    token = torch.tensor(n, dtype=torch.int64)
    weakref.finalize(token, _HELD.pop, n, None)   # freed with the autograd graph that saved it
    return out, lse, token


@cp_fwd.register_fake
def _cp_fwd_fake(q, k, v, floats, names, mask, scale):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty(q.shape[:3], dtype=torch.float32), torch.empty((), dtype=torch.int64, device="cpu"))


@torch.library.custom_op("attnpat::cp_bwd", mutates_args=())
def cp_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
           dout: torch.Tensor, floats: list[torch.Tensor], names: str, token: torch.Tensor, scale: float,
           wants: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, gradients [wanted float inputs, Hq] fp32) of cp_fwd."""
    held = _HELD.get(int(token))   # not popped: retain_graph=True may run the backward again
    if held is None:
        raise ArgumentError("the context-parallel forward of this backward is gone (its autograd graph was freed)")
    cm, received = held
    given = _floats(cm, names, floats, q.shape[1])
    want = tuple(n for n, w in zip(sorted(given), wants) if w)
    dq, dk, dv, dfloats = backward(cm.kernel, cm, q, k, v, out, lse, received, dout.contiguous(), scale, given,
                                   want)
    stacked = torch.stack([g.float() for g in dfloats]) if dfloats else q.new_empty((0, q.shape[1]),
                                                                                    dtype=torch.float32)
    return dq, dk, dv, stacked


@cp_bwd.register_fake
def _cp_bwd_fake(q, k, v, out, lse, dout, floats, names, token, scale, wants):
    return (*(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v)),
            q.new_empty((sum(wants), q.shape[1]), dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    q, k, v, floats, names, _mask_handle, scale = inputs
    out, lse, token = output
    ctx.save_for_backward(q, k, v, out, lse, token, *floats)
    ctx.mark_non_differentiable(lse, token)
    ctx.names, ctx.scale = names, scale


def _backward(ctx, dout, _dlse, _dtoken):
    q, k, v, out, lse, token, *floats = ctx.saved_tensors
    wants = [t.requires_grad for t in floats]
    dq, dk, dv, stacked = torch.ops.attnpat.cp_bwd(q, k, v, out, lse, dout, floats, ctx.names, token, ctx.scale,
                                                   wants)
    rows = iter(range(stacked.shape[0]))
    dfloats = [stacked[next(rows)].to(t.dtype) if w else None for t, w in zip(floats, wants)]
    return dq, dk, dv, dfloats, None, None, None


cp_fwd.register_autograd(_backward, setup_context=_setup_context)


def apply(q, k, v, cm, scale: float, floats: dict) -> torch.Tensor:
    """The op on a checked call: out."""
    names = sorted(floats)
    out, _, _ = torch.ops.attnpat.cp_fwd(q, k, v, [floats[n] for n in names], ",".join(names), cm.handle, scale)
    return out
