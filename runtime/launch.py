"""What the forward (runtime/kernel.py) and backward (runtime/autograd.py) launchers share: the argument
values every generated kernel takes, named as compiler/codegen/signature.py names them, and the
ahead-of-time compile request of a kernel signature."""

from __future__ import annotations

import torch

from ..compiler.codegen.signature import Signature, input_names

__all__ = ["LOG2E", "pow2", "dot_precision", "input_args", "nonfinite_rows", "aot_request", "device_arch"]

LOG2E = 1.4426950408889634

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def pow2(n: int) -> int:
    """The padded head dimension HEAD_DIM_P: the next power of two, at least 16."""
    return 1 << max(4, (n - 1).bit_length())


def dot_precision(dtype: torch.dtype) -> str:
    """DOT_PRECISION: IEEE fp32 products for fp32 tensors, tensor cores (tf32 for fp32 inputs) otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def device_arch(device) -> int | None:
    """The GPU architecture the kernels compile for on `device` (80 for sm_80, 90 for sm_90), None under the
    interpreter."""
    from .backend import interpreting
    if device.type == "cuda" and not interpreting():
        major, minor = torch.cuda.get_device_capability(device)
        return 10 * major + minor
    return None


def input_args(inputs: tuple[tuple[str, str], ...], tensors: dict, device) -> dict:
    """The runtime inputs as kernel arguments by name: int32 tensors [B or 1, length] and their batch
    strides (0 for one row shared by the batch)."""
    args = {}
    for i, (name, _axis) in enumerate(inputs):
        t = tensors[name].to(device=device, dtype=torch.int32).contiguous()
        ptr, stride = input_names(i)
        args[ptr], args[stride] = t, 0 if t.shape[0] == 1 else t.stride(0)
    return args


def nonfinite_rows(v: torch.Tensor) -> torch.Tensor:
    """VBad: int8 [B, Hkv, M], 1 where key row j of v holds a NaN or an inf. One pass over v (its row minimum
    and maximum, no copy of v); O(M x D), small next to the attention that reads v once per query block."""
    lo, hi = torch.aminmax(v, dim=-1)
    return (~(torch.isfinite(lo) & torch.isfinite(hi))).to(torch.int8)


def aot_request(sig: Signature, path: str, *, target: str, dtype: torch.dtype, head_dim: int, tile,
                constants: dict) -> dict:
    """The request (for attnpat.runtime.aot.compile_many) that compiles kernel `sig` of the module at `path`
    with the launch configuration `tile` (block_m, block_n, num_warps, num_stages) and the compile-time
    `constants`, specialised as Triton's JIT specialises it for contiguous tensors: unit head-dim strides
    constant, the other strides and the pointers divisible by 16."""
    return {"path": path, "kernel": sig.kernel, "target": target, "dtype": _DTYPE_NAMES[dtype],
            "head_dim": head_dim, "block_m": tile.block_m, "block_n": tile.block_n, "num_warps": tile.num_warps,
            "num_stages": tile.num_stages, "constexprs": {**constants, **dict.fromkeys(sig.unit_strides(), 1)},
            "pointers": sig.pointers(), "floats": sig.floats(), "divisible": sig.divisible()}
