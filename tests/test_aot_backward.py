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

import attnpat
from attnpat.runtime.aot import compile_many
from attnpat.runtime.autograd import bwd_aot_requests

TARGETS = ("sm_80", "sm_90a")
HEAD_DIMS = (64, 128)
_ALL_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DTYPES = tuple(_ALL_DTYPES[d] for d in os.environ.get("ATTNPAT_AOT_BWD_DTYPES", "fp16,bf16").split(","))


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
                    for request in bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=d):
                        labels.append((name, request["kernel"], target, d, str(dtype).replace("torch.", "")))
                        requests.append(request)
    return list(zip(labels, compile_many(requests)))


def test_every_backward_kernel_compiles_without_spills_and_with_tensor_cores(reports):
    problems = []
    for (name, kernel, target, d, dtype), r in reports:
        label = (f"{name} {kernel} {target} d={d} {dtype} ({r.block_m}x{r.block_n}, {r.num_warps} warps, "
                 f"{r.num_stages} stages): regs={r.registers} stack={r.stack_bytes} local={r.spill_bytes} "
                 f"mma={r.mma_kind}x{r.mma_count}")
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
    assert len(reports) == kernels * len(TARGETS) * len(HEAD_DIMS) * len(DTYPES) * 2   # dK/dV and dQ
    assert {label[1] for label, _ in reports} == {"attn_bwd_dkdv", "attn_bwd_dq"}
    assert all(r.occupancy_blocks >= 1 for _, r in reports)


def test_summary_table(reports):
    """Per kernel, target, head dim and dtype: the config and the register range over the library (shown with
    pytest -s; docs/backward.md holds a copy)."""
    rows: dict = {}
    for (name, kernel, target, d, dtype), r in reports:
        key = (kernel, target, d, dtype)
        row = rows.setdefault(key, {"cfg": f"{r.block_m}x{r.block_n} w{r.num_warps} s{r.num_stages}",
                                    "regs": [], "stack": 0, "mma": set(), "smem": 0})
        row["regs"].append(r.registers)
        row["stack"] = max(row["stack"], r.stack_bytes + r.spill_bytes)
        row["mma"].add(r.mma_kind)
        row["smem"] = max(row["smem"], r.shared_bytes)
    lines = ["| kernel | target | d | dtype | block_m x block_n, warps, stages | registers | stack+local | "
             "shared (max) | MMA |", "|---|---|---|---|---|---|---|---|---|"]
    for (kernel, target, d, dtype), row in sorted(rows.items()):
        lines.append(f"| {kernel} | {target} | {d} | {dtype} | {row['cfg']} | {min(row['regs'])}-{max(row['regs'])} "
                     f"| {row['stack']} | {row['smem']} | {'/'.join(sorted(row['mma']))} |")
    print("\n" + "\n".join(lines))
    assert rows
