"""Argument checks shared by the reference and the kernels: one clear error naming the argument."""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import ArgumentError

__all__ = ["check_qkv", "check_scale", "check_kernel_head_dims", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_qkv(q, k, v, *, require_same_dtype: bool = True, dtypes=None):
    """Validate q [B, Hq, N, D], k [B, Hkv, M, D], v [B, Hkv, M, Dv]; return (B, Hq, N, D, Hkv, M)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ArgumentError(f"'{name}' must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ArgumentError(f"'{name}' must have 4 dimensions [batch, heads, seq_len, head_dim], "
                                f"got shape {list(t.shape)}")
        if not t.dtype.is_floating_point:
            raise ArgumentError(f"'{name}' must be a floating-point tensor, got {t.dtype}")
        if dtypes is not None and t.dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise ArgumentError(f"'{name}' has dtype {str(t.dtype).replace('torch.', '')}; supported: {names}")
    if not (q.device == k.device == v.device):
        raise ArgumentError(f"'q', 'k' and 'v' must be on one device, got {q.device}, {k.device}, {v.device}")
    if require_same_dtype and not (q.dtype == k.dtype == v.dtype):
        raise ArgumentError(f"'q', 'k' and 'v' must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, Hq, N, D = q.shape
    Bk, Hkv, M, Dk = k.shape
    if Bk != B or v.shape[0] != B:
        raise ArgumentError(f"batch sizes differ: q has {B}, k has {Bk}, v has {v.shape[0]}")
    if Dk != D:
        raise ArgumentError(f"'k' head_dim {Dk} must equal q's head_dim {D}")
    if v.shape[1] != Hkv or v.shape[2] != M:
        raise ArgumentError(f"'v' must have shape [{B}, {Hkv}, {M}, head_dim] like 'k', got {list(v.shape)}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ArgumentError(f"q's {Hq} heads must be a multiple of k/v's {Hkv} heads (GQA/MQA)")
    return B, Hq, N, D, Hkv, M


def check_scale(scale, head_dim: int) -> float:
    """The softmax scale as a float: 1/sqrt(head_dim) by default; numbers and 0-dim tensors accepted."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, torch.Tensor) and scale.dim() == 0 and scale.dtype != torch.bool:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ArgumentError(f"'scale' must be a finite number, got {scale!r}")
    return float(scale)


def check_kernel_head_dims(v, D: int) -> None:
    """The kernels' head-dim rules: v's head_dim equals q's, and it lies in 16..256."""
    if v.shape[3] != D:
        raise ArgumentError(f"'v' head_dim {v.shape[3]} must equal q's head_dim {D}")
    if not 16 <= D <= 256:
        raise ArgumentError(f"head_dim must be between 16 and 256, got {D}")
