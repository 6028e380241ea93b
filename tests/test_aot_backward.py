"""Every library pattern's backward kernels (dK/dV and dQ) compile ahead of time for sm_80 and sm_90a at head
dims 64 and 128 in fp16 and bf16: no spills (no stack frame, no local memory) and tensor-core MMA.

The launch configurations for fp32 and for head dim 256 -- forward and backward, whose tiles differ from the
fp16 / bf16 ones at 64 and 128 -- are checked on three library kernels that cover the plans: a band
(sliding_window), a table with a runtime input (document) and per-head parameters (per_head). They compiled
spill-free for all 17 library kernels when they were chosen (docs/backward.md); three keep the test short. fp32
products are IEEE (DOT_PRECISION "ieee"), so those kernels must contain no tensor-core MMA at all.

`triton.compile` with a GPUTarget needs no GPU; cuobjdump (shipped in the triton wheel) reads the cubin. The
requests mirror runtime/kernel.py's aot_request: unit head-dim strides are the constant 1 and the other strides
and the pointers are divisible by 16, as Triton's JIT specialises them for contiguous tensors.

All compiles go to one compile_many call (two child processes). The backward kernels are larger than the
forward ones, so this is the slowest test file; ATTNPAT_AOT_BWD_DTYPES=fp16 halves the fp16 / bf16 part (fp16
and bf16 compile to the same registers and instructions but for the MMA's input type).
"""

from __future__ import annotations

import os

import pytest
import torch

from attnpat.runtime.aot import SMEM_LIMIT, TARGETS, compile_many
from attnpat.runtime.autograd import bwd_aot_requests
from attnpat.runtime.kernel import aot_request
from kernel_util import AOT_HEAD_DIMS, AOT_TARGETS, aot_problems, library_kernels

_ALL_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DTYPES = tuple(_ALL_DTYPES[d] for d in os.environ.get("ATTNPAT_AOT_BWD_DTYPES", "fp16,bf16").split(","))

OTHER_KERNELS = ("sliding_window", "document", "per_head")
OTHER_CASES = ((torch.float32, 64), (torch.float32, 128), (torch.float32, 256), (torch.bfloat16, 256))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@pytest.fixture(scope="module")
def all_reports():
    """{"library": [(label, report)], "other": [(label, report)]}, from one compile_many call."""
    groups, labels, requests = [], [], []
    for name, kernel in library_kernels():
        for target in AOT_TARGETS:
            for d in AOT_HEAD_DIMS:
                for dtype in DTYPES:
                    for request in bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=d):
                        groups.append("library")
                        labels.append(f"{name} {request['kernel']} {target} d={d} {_dtype_name(dtype)}")
                        requests.append(request)
        if name in OTHER_KERNELS:
            for target in AOT_TARGETS:
                for dtype, d in OTHER_CASES:
                    for request in [aot_request(kernel, target=target, dtype=dtype, head_dim=d),
                                    *bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=d)]:
                        groups.append("other")
                        labels.append(f"{name} {request['kernel']} {target} d={d} {_dtype_name(dtype)}")
                        requests.append(request)
    out = {"library": [], "other": []}
    for group, label, report in zip(groups, labels, compile_many(requests)):
        out[group].append((label, report))
    return out


@pytest.fixture(scope="module")
def reports(all_reports):
    return all_reports["library"]


def test_every_backward_kernel_compiles_without_spills_and_with_tensor_cores(reports):
    problems = aot_problems(reports)
    assert not problems, "\n".join(problems)


def test_reports_cover_every_combination(reports):
    kernels = len(library_kernels())
    assert len(reports) == kernels * len(AOT_TARGETS) * len(AOT_HEAD_DIMS) * len(DTYPES) * 2   # dK/dV and dQ
    assert {r.kernel for _, r in reports} == {"attn_bwd_dkdv", "attn_bwd_dq"}
    assert all(r.occupancy_blocks >= 1 for _, r in reports)


def test_fp32_and_head_dim_256_configs_compile_without_spills(all_reports):
    other = all_reports["other"]
    problems = aot_problems([(label, r) for label, r in other if r.dtype != "fp32"])
    for label, r in other:
        if r.dtype != "fp32":
            continue
        text = (f"{label} ({r.block_m}x{r.block_n}, {r.num_warps} warps, {r.num_stages} stages): "
                f"regs={r.registers} stack={r.stack_bytes} local={r.spill_bytes} mma={r.mma_kind}x{r.mma_count}")
        if r.stack_bytes or r.spill_bytes:
            problems.append("spills: " + text)
        if r.mma_count:   # IEEE fp32 products have no tensor-core form; an MMA here means TF32 crept in
            problems.append("tensor-core MMA in an fp32 kernel: " + text)
        if r.registers > 255 or r.shared_bytes > SMEM_LIMIT[TARGETS[r.target]]:
            problems.append("resources: " + text)
    assert not problems, "\n".join(problems)
    assert len(other) == len(OTHER_KERNELS) * len(AOT_TARGETS) * len(OTHER_CASES) * 3   # forward, dK/dV, dQ
    assert {r.kernel for _, r in other} == {"attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq"}
    assert {(r.dtype, r.head_dim) for _, r in other} == {("fp32", 64), ("fp32", 128), ("fp32", 256), ("bf16", 256)}
    assert all(r.occupancy_blocks >= 1 for _, r in other)
