"""Longformer-style attention: a local window plus global tokens, given two ways.

Shows: global tokens as a set parameter (`globals={0, 64}`: they see every key and every query sees
them), the same tokens as a runtime flag per position (`longformer_flags` with `is_global`), which can
change on every call without recompiling; that both give the same output; and what `attnpat explain`
reports about the pattern (density, tiles, how many keys the busiest query reads).
The kernels run on the GPU when there is one, under Triton's interpreter on the CPU otherwise
(`attnpat.kernel_device()`); the float64 reference runs on the CPU.
"""

from __future__ import annotations

import warnings

import torch

import attnpat
from attnpat.compiler.analysis import analyze

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")


def main() -> None:
    torch.manual_seed(0)
    dev = attnpat.kernel_device()
    n, globals_ = 160, {0, 64}
    by_set = attnpat.load("longformer", window=16, globals=globals_)
    by_flag = attnpat.load("longformer_flags", window=16)
    flags = torch.tensor([1 if i in globals_ else 0 for i in range(n)])

    q, k, v = (torch.randn(1, 4, n, 32) for _ in range(3))   # on the CPU, for the reference
    qd, kd, vd = q.to(dev), k.to(dev), v.to(dev)               # for the kernels
    out_set = attnpat.attention(qd, kd, vd, by_set).cpu()
    out_flag = attnpat.attention(qd, kd, vd, by_flag, is_global=flags.to(dev)).cpu()
    ref = attnpat.reference_attention(q, k, v, by_set)
    print(f"set parameter : max |kernel - fp64| = {(out_set.double() - ref).abs().max():.2e}")
    print(f"runtime flags : max |kernel - fp64| = {(out_flag.double() - ref).abs().max():.2e}")
    assert torch.allclose(out_set, out_flag, atol=1e-5)

    # Moving the global token needs no recompile: only the flags change.
    flags2 = torch.zeros(n, dtype=torch.int64)
    flags2[100] = 1
    out2 = attnpat.attention(qd, kd, vd, by_flag, is_global=flags2.to(dev)).cpu()
    ref2 = attnpat.reference_attention(q, k, v, by_flag, is_global=flags2)
    print(f"moved global  : max |kernel - fp64| = {(out2.double() - ref2).abs().max():.2e}")

    report = analyze(by_set, 4096, block_q=128, block_k=64)
    print()
    print(report)
    assert (out_set.double() - ref).abs().max() < 1e-4 and (out2.double() - ref2).abs().max() < 1e-4


if __name__ == "__main__":
    main()
