"""A different window per head, from one pattern.

Shows: `per_head(windows=[...])` indexes a list by the head `h`; the block mask is specialised per head and
heads with equal windows share storage; the kernel walks each head's own tiles; the output matches the
float64 reference head by head. The kernel runs on the GPU when there is one, under Triton's interpreter on
the CPU otherwise (`attnpat.kernel_device()`); the reference runs on the CPU.
"""

from __future__ import annotations

import warnings

import torch

import attnpat

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")


def main() -> None:
    torch.manual_seed(0)
    pattern = attnpat.load("per_head", windows=[8, 32, 8, 128])
    heads, n = 8, 160
    bm = pattern.block_mask(n, n, block_q=32, block_k=32, heads=heads)
    print(f"{pattern!r}: {heads} heads stored as {bm.num_variants} block masks; head -> mask: "
          f"{bm.variant[0].tolist()}")
    for h in range(4):
        grid = bm.to_dense()[h]
        print(f"head {h} (window {pattern.params['windows'][h % 4]:>3}): "
              f"{int((grid > 0).sum())} of {grid.size} tiles visited")
    q, k, v = (torch.randn(1, heads, n, 32) for _ in range(3))
    dev = attnpat.kernel_device()
    out = attnpat.attention(q.to(dev), k.to(dev), v.to(dev), pattern).cpu()
    ref = attnpat.reference_attention(q, k, v, pattern)
    err = (out.double() - ref).abs().amax(dim=(0, 2, 3))
    print("max |kernel - fp64| per head:", " ".join(f"{e:.1e}" for e in err.tolist()))
    assert bm.num_variants == 3 and err.max() < 1e-4


if __name__ == "__main__":
    main()
