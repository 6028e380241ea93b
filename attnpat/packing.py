"""Packed sequences as users hold them -- document lengths, or cumulative ``cu_seqlens`` as FlashAttention's
varlen API takes them -- turned into the runtime inputs the library's document patterns take.

    lengths = [5, 3, 4]                      # three documents packed into one row of 12 tokens
    doc = attnpat.packing.document_ids(lengths)            # tensor([0,0,0,0,0,1,1,1,2,2,2,2])
    doc = attnpat.packing.ids_from_cu_seqlens(torch.tensor([0, 5, 8, 12]))   # the same
    start = attnpat.packing.document_starts(lengths)       # tensor([0,0,0,0,0,5,5,5,8,8,8,8])

The ids are sorted, which is what lets a document pattern's block mask be built on the device
(docs/runtime.md). With ``total`` larger than the documents, the positions past them (padding) form one more
document of their own, so no real token attends to padding. Everything runs on the tensors' device; passing
``total`` avoids the one device->host read of the documents' total length.
"""

from __future__ import annotations

import torch

from .errors import ArgumentError

__all__ = ["document_ids", "ids_from_cu_seqlens", "document_starts", "cu_seqlens_from_lengths"]


def cu_seqlens_from_lengths(lengths, *, device=None) -> torch.Tensor:
    """Cumulative offsets [n + 1] (int64, from 0) of document lengths (a sequence or 1-D integer tensor)."""
    t = torch.as_tensor(lengths, device=device)
    if t.numel() == 0 and t.dim() == 1:   # no documents: an empty list is an empty integer tensor
        t = t.to(torch.int64)
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ArgumentError(f"'lengths' must be a 1-D sequence of integers, got {_describe(t)}")
    if t.numel() and bool((t < 0).any()):
        shown = t.tolist() if t.numel() <= 16 else "a negative one"
        raise ArgumentError(f"'lengths' must be non-negative, got {shown}")
    return torch.cat([t.new_zeros(1, dtype=torch.int64), torch.cumsum(t.to(torch.int64), 0)])


def ids_from_cu_seqlens(cu_seqlens, *, total: int | None = None) -> torch.Tensor:
    """Document ids (int64 [total]) of the positions of packed documents given by their offsets cu_seqlens
    [n + 1] (0 first, non-decreasing); total defaults to cu_seqlens[-1], and positions past it get id n."""
    cu = torch.as_tensor(cu_seqlens)
    if cu.dim() != 1 or cu.numel() == 0 or cu.dtype.is_floating_point or cu.dtype == torch.bool:
        raise ArgumentError(f"'cu_seqlens' must be a non-empty 1-D integer tensor, got {_describe(cu)}")
    first, last, ordered = torch.stack([cu[0], cu[-1], (cu[1:] >= cu[:-1]).all().to(cu.dtype)]).tolist()
    if first != 0 or not ordered:
        raise ArgumentError("'cu_seqlens' must start at 0 and never decrease (offsets of packed documents)")
    if total is None:
        total = last
    if isinstance(total, bool) or not isinstance(total, int) or total < last:
        raise ArgumentError(f"'total' must be an int >= the documents' length {last}, got {total!r}")
    positions = torch.arange(total, device=cu.device)
    return torch.searchsorted(cu[1:].to(torch.int64), positions, right=True)


def document_ids(lengths, *, total: int | None = None, device=None) -> torch.Tensor:
    """Document ids (int64 [total]) of documents of the given lengths packed one after another; total
    defaults to their sum, and positions past it (padding) get one more id of their own."""
    return ids_from_cu_seqlens(cu_seqlens_from_lengths(lengths, device=device), total=total)


def document_starts(lengths, *, total: int | None = None, device=None) -> torch.Tensor:
    """The first position of each position's document (int64 [total]), for patterns that read document
    starts (``k >= start[q]``); padding positions start where the documents end."""
    cu = cu_seqlens_from_lengths(lengths, device=device)
    ids = ids_from_cu_seqlens(cu, total=total)
    return cu[ids]


def _describe(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)} of {str(t.dtype).replace('torch.', '')}"
