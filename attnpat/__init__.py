"""attnpat: a compiler for attention sparsity patterns.

Write a pattern in a small text language, and attnpat checks it, simplifies it, lowers it to a block mask
in closed form, generates a Triton kernel for it and runs it from PyTorch.
"""

from .runtime.backend import choose_before_triton as _choose_before_triton
from .runtime.backend import kernel_device

_choose_before_triton()   # before anything imports triton: see attnpat/runtime/backend.py

from .errors import (
    ArgumentError, EmptyPatternError, InputError, ParameterError, PatternError, PatternNameError,
    PatternSyntaxError, PatternTypeError, RequirementError,
)
from .library import library_names
from .pattern import Pattern, load, parse
from .reference import reference_attention


def compile(pattern, **options):
    """Compile a pattern (a Pattern or a FILE_OR_NAME[:PATTERN] string) into a cached Triton kernel."""
    from .runtime.kernel import compile as _compile
    return _compile(pattern, **options)


def attention(q, k, v, pattern, *, scale=None, return_lse=False, q_offset=None, block_mask=None, **inputs):
    """Attention restricted to `pattern` on [B, H, N, D] tensors, through its generated kernel (with a mask
    from attnpat.block_mask, or the runtime inputs as keywords)."""
    from .runtime.kernel import attention as _attention
    return _attention(q, k, v, pattern, scale=scale, return_lse=return_lse, q_offset=q_offset,
                      block_mask=block_mask, **inputs)


def block_mask(pattern, q_len, kv_len, *, batch=None, heads=None, q_offset=None, device=None, **inputs):
    """A pattern's block mask prepared once -- runtime inputs validated and kept on `device` -- to pass as
    attention(..., block_mask=m) to every layer; their backward passes reuse it (docs/runtime.md)."""
    from .runtime.kernel import prepared_mask
    return prepared_mask(pattern, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, device=device,
                         **inputs)

from ._version import __version__

__all__ = [
    "Pattern", "load", "parse", "compile", "attention", "block_mask", "library_names", "reference_attention", "kernel_device",
    "PatternError", "PatternSyntaxError", "PatternNameError", "PatternTypeError", "ParameterError",
    "RequirementError", "EmptyPatternError", "InputError", "ArgumentError",
]
