"""Every library kernel compiles ahead of time for sm_80 and sm_90a: no spills, tensor-core MMA.

`triton.compile` with a GPUTarget needs no GPU; cuobjdump (shipped in the triton wheel) reads the cubin.
"""

from __future__ import annotations

import pytest
import torch

import attnpat
from attnpat.runtime.aot import compile_many
from attnpat.runtime.kernel import aot_request

TARGETS = ("sm_80", "sm_90a")
HEAD_DIMS = (64, 128)
DTYPES = (torch.float16, torch.bfloat16)


def _library_kernels():
    seen, kernels = set(), []
    for name in attnpat.library_names():
        kernel = attnpat.compile(name)
        if kernel.key not in seen:          # equivalent patterns share one kernel
            seen.add(kernel.key)
            kernels.append((name, kernel))
    return kernels


@pytest.fixture(scope="module")
def reports():
    labels, requests = [], []
    for name, kernel in _library_kernels():
        for target in TARGETS:
            for d in HEAD_DIMS:
                for dtype in DTYPES:
                    labels.append((name, target, d, str(dtype).replace("torch.", "")))
                    requests.append(aot_request(kernel, target=target, dtype=dtype, head_dim=d))
    return list(zip(labels, compile_many(requests)))


def test_every_library_kernel_compiles_without_spills_and_with_tensor_cores(reports):
    problems = []
    for (name, target, d, dtype), r in reports:
        label = f"{name} {target} d={d} {dtype}: regs={r.registers} stack={r.stack_bytes} local={r.spill_bytes} " \
                f"mma={r.mma_kind}x{r.mma_count}"
        if r.stack_bytes or r.spill_bytes:
            problems.append("spills: " + label)
        wanted = ("HMMA",) if target == "sm_80" else ("HGMMA", "HMMA")
        if r.mma_kind not in wanted or r.mma_count == 0:
            problems.append("no tensor-core MMA: " + label)
        if r.registers > 255 or r.shared_bytes > 163 * 1024:
            problems.append("resources: " + label)
    assert not problems, "\n".join(problems)


def test_reports_cover_every_combination(reports):
    kernels = len(_library_kernels())
    assert len(reports) == kernels * len(TARGETS) * len(HEAD_DIMS) * len(DTYPES)
    assert all(r.occupancy_blocks >= 1 for _, r in reports)
