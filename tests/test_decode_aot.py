"""The split-KV decode kernel compiles ahead of time for sm_80 and sm_90a without spills and with tensor-core
MMA (no GPU needed: runtime/aot.py), on three kernels that cover its plans -- a one-family band
(sliding_window), a two-family band read from a KV cache's ring (streaming_llm) and a table plan with a runtime
input (document) -- at head dim 64 in fp16 with one query (16 rows, padded) and 128 in bf16 with 16 queries x 4
GQA heads (64 rows, the largest layout), plus 4 queries x 8 heads, head dim 256, and fp32 (IEEE products on CUDA
cores: no MMA expected, no spills; 16 rows per program)."""

from __future__ import annotations

import pytest
import torch

import attnpat
from attnpat.runtime.aot import compile_many
from attnpat.runtime.decode import aot_request
from kernel_util import AOT_TARGETS, aot_problems

CASES = [(name, d, dtype, q_len, group)
         for name in ("sliding_window", "streaming_llm", "document")
         for d, dtype, q_len, group in ((64, torch.float16, 1, 1), (128, torch.bfloat16, 16, 4))]
CASES.append(("sliding_window", 128, torch.float16, 4, 8))
FP32 = [("streaming_llm", 64, torch.float32, 1, 4), ("document", 128, torch.float32, 16, 4),
        ("streaming_llm", 256, torch.bfloat16, 16, 4)]


@pytest.fixture(scope="module")
def reports():
    labels, requests = [], []
    for name, d, dtype, q_len, group in CASES + FP32:
        compiled = attnpat.load(name).compiled
        for target in AOT_TARGETS:
            labels.append(f"{name} attn_decode {target} d={d} {str(dtype).replace('torch.', '')} q={q_len} g={group}")
            requests.append(aot_request(compiled, target=target, dtype=dtype, head_dim=d, q_len=q_len, group=group,
                                        ring=name == "streaming_llm"))
    return list(zip(labels, compile_many(requests)))


def test_decode_kernels_compile_without_spills_and_with_tensor_cores(reports):
    problems = [p for p in aot_problems(reports) if not (p.startswith("no tensor-core MMA") and " float32 " in p)]
    assert not problems, "\n".join(problems)
    assert len(reports) == (len(CASES) + len(FP32)) * len(AOT_TARGETS)
    assert all(r.occupancy_blocks >= 1 for _, r in reports)
