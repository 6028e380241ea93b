"""A Mistral-style attention layer whose mask comes from a pattern file.

Shows: loading `examples/patterns/mistral.attn` with a parameter override, rotary embeddings and grouped-
query attention (8 query heads on 2 key/value heads) around `attnpat.compile(...)`, the kernel's output
checked against the float64 reference, and a decoding step -- one new query against a KV cache -- where
attnpat aligns the query bottom-right (it sits at the last position), as FlashAttention does.
The layer runs on `attnpat.kernel_device()`: on the GPU with compiled kernels when there is one, otherwise
on the CPU under Triton's interpreter (small sizes); the float64 reference runs on the CPU.
"""

from __future__ import annotations

import math
import pathlib
import warnings

import torch
from torch import nn

import attnpat

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")
HERE = pathlib.Path(__file__).parent


def rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over the last dimension (pairs of channels)."""
    d = x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    angle = positions[:, None].float() * freq[None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class SlidingWindowAttention(nn.Module):
    """Grouped-query attention with a pattern from a .attn file."""

    def __init__(self, dim: int, heads: int, kv_heads: int, window: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.pattern = attnpat.load(str(HERE / "patterns" / "mistral.attn"), window=window)
        self.kernel = attnpat.compile(self.pattern)

    def qkv(self, x: torch.Tensor, start: int):
        b, n, _ = x.shape
        pos = torch.arange(start, start + n, device=x.device)
        q = self.wq(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        return rotary(q, pos), rotary(k, pos), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x, 0)
        out = self.kernel(q.contiguous(), k.contiguous(), v.contiguous())
        return self.wo(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def main() -> None:
    torch.manual_seed(0)
    dev = attnpat.kernel_device()
    layer = SlidingWindowAttention(dim=128, heads=8, kv_heads=2, window=32).to(dev)
    print(f"pattern: {layer.pattern!r}  canonical: {layer.pattern.canonical.text}  plan: {layer.kernel.plan.mode}")
    x = torch.randn(2, 96, 128).to(dev)
    with torch.no_grad():
        y = layer(x)
        q, k, v = layer.qkv(x, 0)
        out = layer.kernel(q.contiguous(), k.contiguous(), v.contiguous())
        ref = attnpat.reference_attention(q.cpu(), k.cpu(), v.cpu(), layer.pattern)
    err = (out.cpu().double() - ref).abs().max().item()
    print(f"prefill: output {tuple(y.shape)}, attention max |kernel - fp64 reference| = {err:.2e}")
    assert err < 1e-4

    # Decoding: the 97th token attends to the cached keys; q_len=1 < kv_len=97 puts it at position 96.
    with torch.no_grad():
        x_new = torch.randn(2, 1, 128).to(dev)
        q1, k1, v1 = layer.qkv(x_new, 96)
        k_cache, v_cache = torch.cat([k, k1], dim=2), torch.cat([v, v1], dim=2)
        step = layer.kernel(q1.contiguous(), k_cache.contiguous(), v_cache.contiguous())
        ref = attnpat.reference_attention(q1.cpu(), k_cache.cpu(), v_cache.cpu(), layer.pattern)
    err = (step.cpu().double() - ref).abs().max().item()
    keys = int(layer.pattern.dense_mask(1, 97).sum())
    print(f"decode step: 1 query over a 97-key cache sees {keys} keys (the window); max error {err:.2e}")
    assert keys == 32 and err < 1e-4


if __name__ == "__main__":
    main()
