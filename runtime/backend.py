"""How this process runs Triton: compiled for CUDA, or under Triton's interpreter.

Triton fixes the choice when it is first imported (its standard library is built for one or the other),
so attnpat makes it once, before its own first import of triton: the interpreter when the user set
``TRITON_INTERPRET=1`` or when no CUDA device is present (CPU machines, tests), the compiler otherwise.
"""

from __future__ import annotations

import os
import sys

__all__ = ["interpreting", "import_triton"]


def interpreting() -> bool:
    """Whether kernels run under Triton's interpreter in this process."""
    import_triton()
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def import_triton():
    """Import triton, first choosing the interpreter on machines without CUDA."""
    if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
        import torch
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    import triton
    return triton
