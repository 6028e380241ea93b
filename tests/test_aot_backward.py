"""Every library pattern's backward kernels (dK/dV and dQ) compile ahead of time for sm_80 and sm_90a at head
dims 64 and 128 in fp16 and bf16: no spills (no stack frame, no local memory) and tensor-core MMA.

`triton.compile` with a GPUTarget needs no GPU; cuobjdump (shipped in the triton wheel) reads the cubin. The
requests mirror runtime/kernel.py's aot_request: unit head-dim strides are the constant 1 and the other strides
and the pointers are divisible by 16, as Triton's JIT specialises them for contiguous tensors.

All compiles go to one compile_many call (two child processes). The backward kernels are larger than the
forward ones, so this is the slowest test file; ATTNPAT_AOT_BWD_DTYPES=fp16 halves it (fp16 and bf16 compile
to the same registers and instructions but for the MMA's input type).
"""

from __future__ import annotations

import os

import pytest
import torch

from attnpat.runtime.aot import compile_many
from attnpat.runtime.autograd import bwd_aot_requests
from kernel_util import AOT_HEAD_DIMS, AOT_TARGETS, aot_problems, library_kernels

_ALL_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DTYPES = tuple(_ALL_DTYPES[d] for d in os.environ.get("ATTNPAT_AOT_BWD_DTYPES", "fp16,bf16").split(","))


@pytest.fixture(scope="module")
def reports():
    labels, requests = [], []
    for name, kernel in library_kernels():
        for target in AOT_TARGETS:
            for d in AOT_HEAD_DIMS:
                for dtype in DTYPES:
                    for request in bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=d):
                        labels.append(f"{name} {request['kernel']} {target} d={d} "
                                      f"{str(dtype).replace('torch.', '')}")
                        requests.append(request)
    return list(zip(labels, compile_many(requests)))


def test_every_backward_kernel_compiles_without_spills_and_with_tensor_cores(reports):
    problems = aot_problems(reports)
    assert not problems, "\n".join(problems)


def test_reports_cover_every_combination(reports):
    kernels = len(library_kernels())
    assert len(reports) == kernels * len(AOT_TARGETS) * len(AOT_HEAD_DIMS) * len(DTYPES) * 2   # dK/dV and dQ
    assert {r.kernel for _, r in reports} == {"attn_bwd_dkdv", "attn_bwd_dq"}
    assert all(r.occupancy_blocks >= 1 for _, r in reports)
