"""attnpat.distributed.attention: the call's checks, a ContextMask made for a call without one (mask.py), then
the custom op (ops.py) that runs core.py's forward and backward."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..errors import ArgumentError
from ..runtime.kernel import kernel_of
from .mask import LAYOUTS, ContextMask, block_mask

__all__ = ["attention", "check_call"]


def _lengths(group, n: int, device) -> tuple[int, ...]:
    """Every rank's shard length (one all_gather of ints)."""
    world = dist.get_world_size(group)
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    got = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(got, mine, group=group)
    return tuple(int(t.item()) for t in got)


# -- the call -------------------------------------------------------------------------------------------------


def check_call(q, k, v, pattern, *, group, layout, lengths, block_mask_, inputs: dict):
    """The call's checks (ArgumentError / InputError): (ContextMask, {float input: tensor}). Without a prepared
    mask, one is made for the call."""
    from ..runtime.checks import check_kernel_head_dims, check_qkv
    if not dist.is_available() or not dist.is_initialized():
        raise ArgumentError("attnpat.distributed.attention needs torch.distributed initialised "
                            "(torch.distributed.init_process_group)")
    B, Hq, N, D, Hkv, M = check_qkv(q, k, v, dtypes=(torch.float16, torch.bfloat16, torch.float32))
    if M != N:
        raise ArgumentError(f"q and k must hold the same rows of the sequence: q has {N} rows, k {M}")
    check_kernel_head_dims(v, D)
    if layout is not None and layout not in LAYOUTS:
        hint = " ('auto' is for attnpat.distributed.block_mask, which then shards for you)" if layout == "auto" else ""
        raise ArgumentError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}{hint}")
    if block_mask_ is None:
        return _own_mask(q, pattern, group, layout, lengths, inputs)
    # traced by Dynamo under torch.compile: plain Python on constants; the op checks the float inputs
    _check_mask(block_mask_, pattern, group, layout, lengths, inputs, B, Hq, N, q.device)
    return block_mask_, dict(inputs)


@torch.compiler.disable   # Python, numpy and collectives: under torch.compile a graph break, then run as is
def _own_mask(q, pattern, group, layout, lengths, inputs: dict):
    """(a ContextMask made for one call, its float inputs): the lengths all-gathered unless given."""
    from ..runtime.scores import split
    B, Hq, N = q.shape[:3]
    kernel = kernel_of(pattern)
    ints, floats = split(kernel.compiled, Hq, dict(inputs))
    lengths = _lengths(group, N, q.device) if lengths is None else tuple(int(x) for x in lengths)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if len(lengths) != world or lengths[rank] != N:
        raise ArgumentError(f"'lengths' {list(lengths)} must hold one length per rank ({world}), this rank's "
                            f"({rank}) equal to its {N} rows")
    plan = kernel.compiled.plan
    cm = block_mask(pattern, lengths, group=group, layout=layout or "contiguous", heads=Hq if plan.uses_h else None,
                    batch=B if plan.uses_b else None, device=q.device, **ints)
    return cm, floats


@torch._dynamo.assume_constant_result
def _key_of(pattern) -> str:
    """The canonical key of a pattern's kernel (a constant of the graph under torch.compile)."""
    return kernel_of(pattern).key


def _check_mask(cm, pattern, group, layout, lengths, inputs: dict, B: int, Hq: int, N: int, device) -> None:
    if not isinstance(cm, ContextMask):
        raise ArgumentError(f"'block_mask' must be made by attnpat.distributed.block_mask, got {type(cm).__name__}"
                            f" (attnpat.block_mask makes single-device masks)")
    if _key_of(pattern) != cm.compiled.key:
        raise ArgumentError(f"'block_mask' was built for pattern '{cm.compiled.name}' ({cm.compiled.canonical.text}),"
                            f" not for this call's")
    terms = cm.compiled.checked.scores
    ints = sorted(n for n in inputs if terms is None or n not in {d.name for d in terms.inputs})
    if ints:
        raise ArgumentError(f"runtime input '{ints[0]}' given with 'block_mask': the mask holds its "
                            f"inputs; pass them to attnpat.distributed.block_mask")
    if group is not None and group is not cm.group:
        raise ArgumentError("'group' differs from the group 'block_mask' was built for; leave it out of the call")
    world, rank = dist.get_world_size(cm.group), dist.get_rank(cm.group)
    if (world, rank) != (cm.world, cm.rank):
        raise ArgumentError(f"'block_mask' was built on rank {cm.rank} of {cm.world}, but this process is rank "
                            f"{rank} of {world}")
    if layout is not None and layout != cm.layout:
        raise ArgumentError(f"'layout' {layout!r} differs from the block mask's ({cm.layout!r}); leave it out of "
                            f"the call")
    if lengths is not None and tuple(int(x) for x in lengths) != cm.lengths:
        raise ArgumentError(f"'lengths' {list(lengths)} differ from the block mask's {list(cm.lengths)}")
    if N != cm.lengths[cm.rank]:
        raise ArgumentError(f"'block_mask' gives rank {cm.rank} {cm.lengths[cm.rank]} rows, but q has {N}")
    for what, mine, call in (("batch", cm.batch, B), ("heads", cm.heads, Hq)):
        if mine is not None and mine != call:
            raise ArgumentError(f"'block_mask' was built for {what}={mine}, but q has {what} {call}")
    if device != cm.device:
        raise ArgumentError(f"'block_mask' lives on {cm.device}, but q is on {device}")


def attention(q, k, v, pattern, *, group=None, layout=None, scale=None, lengths=None, block_mask=None, **inputs):
    """attnpat.distributed.attention (the package's docstring)."""
    from ..runtime.checks import check_scale
    from .ops import apply
    cm, floats = check_call(q, k, v, pattern, group=group, layout=layout, lengths=lengths, block_mask_=block_mask,
                            inputs=inputs)
    return apply(q, k, v, cm, check_scale(scale, q.shape[3]), floats)


