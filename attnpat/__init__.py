"""attnpat: a compiler for attention sparsity patterns.

Write a pattern in a small text language, and attnpat checks it, simplifies it, lowers it to a block mask
in closed form, generates a Triton kernel for it and runs it from PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .runtime.backend import choose_before_triton as _choose_before_triton
from .runtime.backend import kernel_device

_choose_before_triton()   # before anything imports triton: see attnpat/runtime/backend.py

from ._version import __version__
from .errors import (
    ArgumentError, EmptyPatternError, InputError, ParameterError, PatternError, PatternNameError,
    PatternSyntaxError, PatternTypeError, RangeError, RequirementError,
)
from .library import library_names
from .pattern import Pattern, load, parse
from .reference import reference_attention

if TYPE_CHECKING:   # torch is imported only by what needs it (the CLI's light commands never do)
    import torch

    from .runtime.blockmask import PreparedMask
    from .runtime.kernel import Kernel


def compile(pattern: Pattern | str, **options: int) -> Kernel:
    """Compile a pattern (a Pattern or a FILE_OR_NAME[:PATTERN] string) into a cached Triton kernel."""
    from .runtime.kernel import compile as _compile
    return _compile(pattern, **options)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern | str, *,
              scale: float | None = None, return_lse: bool = False, q_offset: int | None = None,
              block_mask: PreparedMask | None = None, kv_start: int = 0, **inputs: torch.Tensor):
    """Attention restricted to `pattern` on [B, H, N, D] tensors, through its generated kernel (with a mask
    from attnpat.block_mask, or the runtime inputs as keywords; keys at absolute positions kv_start..)."""
    from .runtime.kernel import attention as _attention
    return _attention(q, k, v, pattern, scale=scale, return_lse=return_lse, q_offset=q_offset,
                      block_mask=block_mask, kv_start=kv_start, **inputs)


def block_mask(pattern: Pattern | str, q_len: int, kv_len: int, *, batch: int | None = None,
               heads: int | None = None, q_offset: int | None = None, device: torch.device | str | None = None,
               **inputs: torch.Tensor) -> PreparedMask:
    """A pattern's block mask prepared once -- runtime inputs validated and kept on `device` -- to pass as
    attention(..., block_mask=m) to every layer; their backward passes reuse it (docs/runtime.md)."""
    from .runtime.kernel import prepared_mask
    return prepared_mask(pattern, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, device=device,
                         **inputs)


__all__ = [
    "Pattern", "load", "parse", "compile", "attention", "block_mask", "library_names", "reference_attention",
    "kernel_device", "__version__", "PatternError", "PatternSyntaxError", "PatternNameError", "PatternTypeError",
    "ParameterError", "RequirementError", "EmptyPatternError", "InputError", "ArgumentError", "RangeError",
]


def __getattr__(name: str):
    """attnpat.KVCache, attnpat.layer_caches and attnpat.decode_attention, imported (with torch) on first use."""
    if name in ("KVCache", "layer_caches"):
        from .runtime import kvcache
        return getattr(kvcache, name)
    if name == "decode_attention":
        from .runtime.decode import decode_attention
        return decode_attention
    raise AttributeError(f"module 'attnpat' has no attribute {name!r}")
