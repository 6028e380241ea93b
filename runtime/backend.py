"""How this process runs Triton: compiled for CUDA, or under Triton's interpreter.

Triton fixes the choice when it is first imported (its standard library is built for one or the other),
so attnpat makes it once, before its own first import of triton: the interpreter when the user set
``TRITON_INTERPRET=1`` or when no CUDA device is present (CPU machines, tests), the compiler otherwise.
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import sys

__all__ = ["interpreting", "import_triton", "choose", "choose_before_triton", "target_name", "kernel_device"]


def interpreting() -> bool:
    """Whether kernels run under Triton's interpreter in this process."""
    import_triton()
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def kernel_device():
    """The device attnpat's kernels run on in this process: CUDA when they are compiled, else the CPU
    (Triton's interpreter). Scripts that should run anywhere put their tensors there."""
    import torch
    return torch.device("cpu") if interpreting() else torch.device("cuda")


def target_name(device=None) -> str:
    """What kernels are built for in this process: 'interpreter', or 'cuda:sm_XY' for `device`."""
    if interpreting():
        return "interpreter"
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return f"cuda:sm_{major}{minor}"


def choose() -> None:
    """Pick the interpreter on machines without CUDA, if triton is not imported yet.

    Runs when triton is first imported (see `choose_before_triton`, installed when attnpat is imported),
    because other libraries import triton too (creating a torch optimizer does), and after that the choice
    is fixed for the process.
    """
    if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
        import torch
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"


class _ChooseBeforeTriton(importlib.abc.MetaPathFinder):
    """Makes the choice at the first import of triton, by anyone, and then steps aside.

    Choosing means asking torch whether CUDA is there, which costs a second or more; deferring it to the
    first import of triton keeps `import attnpat` (and the CLI's check, show, explain, list) free of torch.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "triton":
            _remove_hook()
            choose()
        return None   # the ordinary finders import it


_HOOK = _ChooseBeforeTriton()


def _remove_hook() -> None:
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def choose_before_triton() -> None:
    """Arrange for `choose` to run just before triton is first imported (at once if nothing is left to wait
    for). Called when attnpat is imported."""
    if "triton" in sys.modules or "TRITON_INTERPRET" in os.environ:
        return   # the choice is already fixed, or the user made it
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def import_triton():
    """Import triton, first choosing the interpreter on machines without CUDA."""
    choose()
    import triton
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on"):
        _patch_interpreter_bf16_dot()
    else:
        _check_compiler_has_a_gpu()
    return triton


@functools.lru_cache(maxsize=None)
def _no_gpu_message() -> str | None:
    """Why compiled kernels cannot run here, or None (asked once per process: the answer does not change)."""
    if "TRITON_INTERPRET" in os.environ:
        return None   # the user chose; a wrong choice shows in Triton's own error
    import torch
    if torch.cuda.is_available():
        return None
    return ("triton was imported before attnpat on a machine without a CUDA device, so it was set up to "
            "compile for a GPU and cannot run attnpat's kernels here. Import attnpat before anything that "
            "imports triton (torch.compile and torch optimizers do), or set TRITON_INTERPRET=1 in the "
            "environment to run kernels under Triton's interpreter")


def _check_compiler_has_a_gpu() -> None:
    message = _no_gpu_message()
    if message is not None:
        raise RuntimeError(message)


def _patch_interpreter_bf16_dot() -> None:
    """Make the interpreter's tl.dot read bf16 operands as numbers.

    Triton's interpreter stores bf16 tensors as their raw uint16 bits and its `create_dot` hands those
    bits to numpy's matmul as integers (it converts only fp8 operands), so every bf16 dot product is
    garbage. Widening bf16 to fp32 first is exact (bf16 is the top half of an fp32) and gives what the
    tensor cores compute: exact products summed in fp32. Compiled kernels are untouched.
    """
    import dataclasses

    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    # The interpreter checks every int32 operation for overflow by default, which costs about half of its
    # run time; compiled kernels do not check (outside Triton's debug mode), so the tests run the same code
    # without it.
    b = interpreter.interpreter_builder
    if hasattr(b, "options") and getattr(b.options, "sanitize_overflow", False):
        b.options = dataclasses.replace(b.options, sanitize_overflow=False)

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_attnpat_bf16", False):
        return
    original = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16 or b.dtype.scalar == tl.bfloat16:
            def widen(x):
                if x.dtype.scalar != tl.bfloat16:
                    return x
                bits = np.asarray(x.data).astype(np.uint32) << 16
                return interpreter.TensorHandle(bits.view(np.float32), tl.float32)
            a, b = widen(a), widen(b)
        return original(self, a, b, d, input_precision, max_num_imprecise_acc)

    create_dot._attnpat_bf16 = True
    builder.create_dot = create_dot
