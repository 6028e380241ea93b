"""Greedy generation with a sliding-window KV cache: memory stays flat, tokens match a full-cache run.

Shows: a tiny random-weight decoder (2 layers, GQA: 4 query heads on 2 key/value heads) whose attention is
sliding_window(64); `attnpat.layer_caches` gives each layer an `attnpat.KVCache` sized by the pattern
(look-back + 1 = 64 entries, in a ring), and `cache.attend(q, k, v)` appends the new token's keys and values and
runs the split-KV decode kernel over the ring. The same model then generates again with a full KV cache (every
position kept, `attnpat.decode_attention` over the whole history); the tokens are identical, while the ring's
memory stops growing once the window is full and the full cache keeps growing.

    python examples/generate_window.py                 # 2,000 tokens (on the CPU interpreter: 100)
    python examples/generate_window.py --tokens 300 --window 32

Runs on `attnpat.kernel_device()`: on the GPU with compiled kernels when there is one, otherwise on the CPU
under Triton's interpreter, where each step is slow, so the default there is 100 tokens.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

import attnpat
from attnpat.runtime.backend import interpreting

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")

VOCAB, DIM, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 96, 64, 2, 4, 2, 16


class TinyDecoder:
    """Random weights; attention is delegated to `attend(layer, q, k, v)` so two caches can run it."""

    def __init__(self, device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)

        def w(*shape):
            return (torch.randn(*shape, generator=g) / shape[0] ** 0.5).to(device)

        self.embed = torch.randn(VOCAB, DIM, generator=g).to(device)
        self.layers = [dict(q=w(DIM, HEADS * HEAD_DIM), k=w(DIM, KV_HEADS * HEAD_DIM), v=w(DIM, KV_HEADS * HEAD_DIM),
                            o=w(HEADS * HEAD_DIM, DIM), up=w(DIM, 4 * DIM), down=w(4 * DIM, DIM))
                       for _ in range(LAYERS)]
        self.out = w(DIM, VOCAB)

    def forward(self, tokens: torch.Tensor, start: int, attend) -> torch.Tensor:
        """Logits [n, VOCAB] of n new tokens [n] (batch 1) at positions start.. appended to what `attend` has
        cached."""
        n = tokens.shape[0]
        pos = torch.arange(start, start + n, device=tokens.device, dtype=torch.float32)[:, None]
        freq = 10000.0 ** (-torch.arange(0, DIM, 2, device=tokens.device) / DIM)
        x = self.embed[tokens] + torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], 1)   # sinusoidal
        for i, p in enumerate(self.layers):
            h = torch.nn.functional.layer_norm(x, (DIM,))
            q = (h @ p["q"]).view(1, n, HEADS, HEAD_DIM).transpose(1, 2)
            k = (h @ p["k"]).view(1, n, KV_HEADS, HEAD_DIM).transpose(1, 2)
            v = (h @ p["v"]).view(1, n, KV_HEADS, HEAD_DIM).transpose(1, 2)
            a = attend(i, q.contiguous(), k.contiguous(), v.contiguous())
            x = x + a.transpose(1, 2).reshape(n, HEADS * HEAD_DIM) @ p["o"]
            x = x + torch.relu(torch.nn.functional.layer_norm(x, (DIM,)) @ p["up"]) @ p["down"]
        return torch.nn.functional.layer_norm(x, (DIM,)) @ self.out


def generate(model, prompt, steps: int, attend, on_step=None) -> list[int]:
    """Greedy decoding: the prompt in one chunk, then one token at a time."""
    logits = model.forward(prompt, 0, attend)
    out = []
    for t in range(steps):
        token = int(logits[-1].argmax())
        out.append(token)
        if on_step:
            on_step(t)
        logits = model.forward(torch.tensor([token], device=prompt.device), len(prompt) + t, attend)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=None, help="tokens to generate (2000; 100 on the interpreter)")
    ap.add_argument("--window", type=int, default=64)
    args = ap.parse_args(argv)
    steps = args.tokens if args.tokens is not None else (100 if interpreting() else 2000)
    device = attnpat.kernel_device()
    model = TinyDecoder(device)
    pattern = attnpat.load("sliding_window", window=args.window)
    prompt = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(1)).to(device)

    # -- the ring: one KVCache per layer, sized by the pattern; one split so both runs add in the same order --
    caches = attnpat.layer_caches([pattern] * LAYERS, batch=1, kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                                  dtype=torch.float32, device=device, num_splits=1)
    ring_bytes = []
    ring = generate(model, prompt, steps, lambda i, q, k, v: caches[i].attend(q, k, v),
                    lambda t: ring_bytes.append(sum(c.nbytes for c in caches)))

    # -- the full cache: every position kept, the same pattern over the whole history --
    history = [[None, None] for _ in range(LAYERS)]

    def full_attend(i, q, k, v):
        kv = history[i]
        kv[0] = k if kv[0] is None else torch.cat([kv[0], k], 2)
        kv[1] = v if kv[1] is None else torch.cat([kv[1], v], 2)
        return attnpat.decode_attention(q, kv[0], kv[1], pattern, num_splits=1)

    full_bytes = []
    full = generate(model, prompt, steps, full_attend,
                    lambda t: full_bytes.append(sum(2 * h[0].numel() * h[0].element_size() for h in history)))

    print(f"generated {steps} tokens with sliding_window({args.window}), {LAYERS} layers, on {device}")
    print(f"KV cache capacity per layer: {caches[0].capacity} entries ({caches[0].slots} slots in the ring)")
    for t in sorted({0, min(args.window, steps - 1), steps // 2, steps - 1}):
        print(f"  after token {t + 1:5d}: ring cache {ring_bytes[t]:8,d} bytes   full cache {full_bytes[t]:8,d} bytes")
    flat = len(set(ring_bytes)) == 1
    print(f"ring memory flat: {flat}; full cache grew {full_bytes[-1] / full_bytes[0]:.1f}x")
    same = ring == full
    print(f"tokens identical to the full-cache run: {same}")
    print("first tokens:", ring[:16])
    return 0 if same and flat else 1


if __name__ == "__main__":
    sys.exit(main())
