"""attnpat: a compiler for attention sparsity patterns.

Write a pattern in a small text language, and attnpat checks it, simplifies it, lowers it to a block mask
in closed form, generates a Triton kernel for it and runs it from PyTorch.
"""

from .errors import (
    ArgumentError, EmptyPatternError, InputError, ParameterError, PatternError, PatternNameError,
    PatternSyntaxError, PatternTypeError, RequirementError,
)
from .library import library_names
from .pattern import Pattern, load, parse
from .reference import reference_attention

__version__ = "0.1.0"

__all__ = [
    "Pattern", "load", "parse", "library_names", "reference_attention",
    "PatternError", "PatternSyntaxError", "PatternNameError", "PatternTypeError", "ParameterError",
    "RequirementError", "EmptyPatternError", "InputError", "ArgumentError",
]
