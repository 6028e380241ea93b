"""Kernels with score terms (issue 14) compile ahead of time for sm_80 and sm_90a: no spills, tensor-core MMA.

Two patterns, the forward, dK/dV and dQ kernels of each, in fp16 at head dim 64 and bf16 at 128: a softcap with
an ALiBi bias from a float input (Gemma-2 style, plus a per-head constant; its dQ kernel sums the slopes'
gradient) and a sink with a sliding window (gpt-oss). The library's
score patterns are compiled by tests/test_aot.py and tests/test_aot_backward.py with every other library kernel.
"""

from __future__ import annotations

import pytest
import torch

import attnpat
from attnpat.runtime.aot import compile_many
from attnpat.runtime.autograd import bwd_aot_requests
from attnpat.runtime.kernel import aot_request
from kernel_util import AOT_TARGETS, aot_problems

PATTERNS = {
    "softcap_alibi": """
pattern softcap_alibi(cap: float = 50.0):
    input slopes: float[h]
    score softcap(cap)
    score bias(-slopes[h] * (q - k) - [0.5, 0.25, 0.125, 0.0625][h % 4])
    mask causal and q - k < 4096
""",
    "sink_window": """
pattern sink_window(window: int = 128):
    input sinks: float[h]
    score sink(sinks[h])
    mask causal and q - k < window
""",
}
CONFIGS = ((torch.float16, 64), (torch.bfloat16, 128))


@pytest.fixture(scope="module")
def reports():
    labels, requests = [], []
    for name, text in PATTERNS.items():
        kernel = attnpat.compile(attnpat.parse(text, name))
        for target in AOT_TARGETS:
            for dtype, d in CONFIGS:
                what = f"{name} {target} d={d} {str(dtype).replace('torch.', '')}"
                labels.append(f"{what} attn_fwd")
                requests.append(aot_request(kernel, target=target, dtype=dtype, head_dim=d))
                for r in bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=d):
                    labels.append(f"{what} {r['kernel']}")
                    requests.append(r)
    return list(zip(labels, compile_many(requests)))


def test_score_kernels_compile_without_spills_and_with_tensor_cores(reports):
    assert len(reports) == len(PATTERNS) * len(AOT_TARGETS) * len(CONFIGS) * 3
    problems = aot_problems(reports)
    assert not problems, "\n".join(problems)
