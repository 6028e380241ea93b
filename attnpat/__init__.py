"""attnpat: a compiler for attention sparsity patterns.

Write a pattern in a small text language, and attnpat checks it, simplifies it, lowers it to a block mask
in closed form, generates a Triton kernel for it and runs it from PyTorch.
"""

from .runtime.backend import choose as _choose_backend
from .runtime.backend import kernel_device

_choose_backend()   # before anything else imports triton: see attnpat/runtime/backend.py

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


def attention(q, k, v, pattern, *, scale=None, return_lse=False, q_offset=None, **inputs):
    """Attention restricted to `pattern` on [B, H, N, D] tensors, through its generated kernel."""
    from .runtime.kernel import attention as _attention
    return _attention(q, k, v, pattern, scale=scale, return_lse=return_lse, q_offset=q_offset, **inputs)

__version__ = "0.1.0"

__all__ = [
    "Pattern", "load", "parse", "compile", "attention", "library_names", "reference_attention", "kernel_device",
    "PatternError", "PatternSyntaxError", "PatternNameError", "PatternTypeError", "ParameterError",
    "RequirementError", "EmptyPatternError", "InputError", "ArgumentError",
]
