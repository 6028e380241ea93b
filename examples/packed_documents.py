"""Packed sequences: several documents in one row, kept apart by runtime document ids.

Shows: the `document` pattern with `doc` ids given per batch element ([B, L]) -- new ids on every call,
no recompile; that a token never attends across documents (each document's output equals running that
document alone); and that the block mask is built from the ids in O(N + tiles), skipping every tile
between two different documents. The kernels run on the GPU when there is one, under Triton's interpreter
on the CPU otherwise (`attnpat.kernel_device()`); the float64 reference and the block mask stay on the CPU.
"""

from __future__ import annotations

import warnings

import torch

import attnpat

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")


def main() -> None:
    torch.manual_seed(0)
    dev = attnpat.kernel_device()
    lengths = [[30, 50, 48], [64, 64, 0]]           # two rows, each packing documents of these lengths
    n = 128
    doc = torch.tensor([sum(([i] * m for i, m in enumerate(row)), []) for row in lengths])
    pattern = attnpat.load("document")
    kernel = attnpat.compile(pattern)
    q, k, v = (torch.randn(2, 2, n, 32) for _ in range(3))   # on the CPU, for the reference
    out = kernel(q.to(dev), k.to(dev), v.to(dev), doc=doc.to(dev)).cpu()
    ref = attnpat.reference_attention(q, k, v, pattern, doc=doc)
    print(f"packed batch: max |kernel - fp64| = {(out.double() - ref).abs().max():.2e}")

    # The second document of row 0 (positions 30..79) alone, as its own causal sequence:
    alone = attnpat.attention(*(t[:1, :, 30:80].contiguous().to(dev) for t in (q, k, v)),
                              attnpat.load("causal")).cpu()
    gap = (alone - out[:1, :, 30:80]).abs().max().item()
    print(f"document 1 of row 0 packed vs alone: max difference {gap:.2e}")

    bm = pattern.block_mask(n, n, block_q=32, block_k=32, batch=2, doc=doc)
    print(f"block mask: {bm}")
    for b in range(2):
        grid = bm.to_dense(batch=b)[0]
        print(f"row {b} tiles (. empty, p partial, F full):")
        for line in grid:
            print("   " + "".join(".pF"[x] for x in line))
    assert (out.double() - ref).abs().max() < 1e-4 and gap < 1e-4


if __name__ == "__main__":
    main()
