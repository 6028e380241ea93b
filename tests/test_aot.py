"""Every library kernel compiles ahead of time for sm_80 and sm_90a: no spills, tensor-core MMA.

`triton.compile` with a GPUTarget needs no GPU; cuobjdump (shipped in the triton wheel) reads the cubin.
"""

from __future__ import annotations

import pytest
import torch

from attnpat.runtime.aot import compile_many
from attnpat.runtime.kernel import aot_request
from kernel_util import AOT_HEAD_DIMS, AOT_TARGETS, aot_problems, library_kernels

DTYPES = (torch.float16, torch.bfloat16)


@pytest.fixture(scope="module")
def reports():
    labels, requests = [], []
    for name, kernel in library_kernels():
        for target in AOT_TARGETS:
            for d in AOT_HEAD_DIMS:
                for dtype in DTYPES:
                    labels.append(f"{name} attn_fwd {target} d={d} {str(dtype).replace('torch.', '')}")
                    requests.append(aot_request(kernel, target=target, dtype=dtype, head_dim=d))
    return list(zip(labels, compile_many(requests)))


def test_every_library_kernel_compiles_without_spills_and_with_tensor_cores(reports):
    problems = aot_problems(reports)
    assert not problems, "\n".join(problems)


def test_reports_cover_every_combination(reports):
    assert len(reports) == len(library_kernels()) * len(AOT_TARGETS) * len(AOT_HEAD_DIMS) * len(DTYPES)
    assert all(r.occupancy_blocks >= 1 for _, r in reports)
