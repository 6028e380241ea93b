"""Attention speed and memory on a CUDA GPU: attnpat against FlexAttention, SDPA and FlashAttention.

For each library pattern and sequence length (4K..128K by default) it times the forward and the forward +
backward of
  * attnpat's generated kernel (`attnpat.compile`),
  * FlexAttention with its best block mask for the same pattern (`create_block_mask`, BLOCK_SIZE 128,
    built once outside the timing) and `torch.compile(flex_attention)`,
  * SDPA with a dense boolean mask (where the N x N mask fits in memory),
  * FlashAttention's `window_size` (sliding window / causal only), where the flash-attn package is
    installed,
and prints TFLOP/s (counting 4 * head_dim FLOPs per allowed pair forward, 2.5x that for forward + backward),
peak memory, and attnpat's speed as a ratio of each baseline timed in the same run.

Without a CUDA device it says so and exits 0 (the kernels' correctness and build quality are checked on
CPU by the test suite and `attnpat verify` / `attnpat inspect`).

    python benchmarks/attention.py [--lengths 4096,16384,65536,131072] [--patterns sliding_window,document]
                                   [--heads 16] [--kv-heads 16] [--head-dim 128] [--dtype bf16] [--no-backward]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

DEFAULT_PATTERNS = ["causal", "sliding_window", "local", "streaming_llm", "prefix_lm", "chunked_causal",
                    "dilated", "longformer", "document", "per_head", "bigbird"]
PARAMS = {"sliding_window": dict(window=4096), "local": dict(radius=2048), "streaming_llm": dict(sinks=4, window=4092),
          "prefix_lm": dict(prefix=2048), "chunked_causal": dict(chunk=8192), "dilated": dict(window=2048, dilation=2),
          "longformer": dict(window=1024, globals={0, 1, 2, 3}), "per_head": dict(windows=[512, 1024, 2048, 4096]),
          "bigbird": dict(block=128, window_blocks=3, global_blocks=2, random_blocks=3, key_blocks=64)}


def _flex_mask_mod(name: str, params: dict, n: int, device, heads: int):
    """The same pattern as a FlexAttention mask_mod (hand-written, like a FlexAttention user would)."""
    if name == "causal":
        return lambda b, h, q, k: k <= q
    if name == "sliding_window":
        w = params["window"]
        return lambda b, h, q, k: (k <= q) & (q - k < w)
    if name == "local":
        r = params["radius"]
        return lambda b, h, q, k: (q - k <= r) & (k - q <= r)
    if name == "streaming_llm":
        s, w = params["sinks"], params["window"]
        return lambda b, h, q, k: (k <= q) & ((k < s) | (q - k < w))
    if name == "prefix_lm":
        p = params["prefix"]
        return lambda b, h, q, k: (k <= q) | (k < p)
    if name == "chunked_causal":
        c = params["chunk"]
        return lambda b, h, q, k: (k <= q) & (q // c == k // c)
    if name == "dilated":
        w, d = params["window"], params["dilation"]
        return lambda b, h, q, k: (k <= q) & (q - k < w * d) & ((q - k) % d == 0)
    if name == "longformer":
        r = params["window"] // 2
        g = torch.zeros(n, dtype=torch.bool, device=device)
        g[list(params["globals"])] = True
        return lambda b, h, q, k: ((q - k <= r) & (k - q <= r)) | g[q] | g[k]
    if name == "document":
        doc = _doc_ids(n, device)
        return lambda b, h, q, k: (k <= q) & (doc[q] == doc[k])
    if name == "per_head":
        ws = torch.tensor(params["windows"], device=device)
        return lambda b, h, q, k: (k <= q) & (q - k < ws[h % len(params["windows"])])
    return None   # bigbird's hash is not written for FlexAttention here


def _doc_ids(n: int, device) -> torch.Tensor:
    """Documents of varied lengths (1/2, 1/4, 1/8, ... of the sequence) packed into one row."""
    ids, start, i = torch.empty(n, dtype=torch.int64), 0, 0
    while start < n:
        length = max(n >> (i + 1), 128)
        ids[start:start + length] = i
        start, i = start + length, i + 1
    return ids.to(device)


def _time(fn, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def _measure(fn, reps=5):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        t = _time(fn, reps)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, None
    return t, torch.cuda.max_memory_allocated() / 2**30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="4096,16384,65536,131072")
    ap.add_argument("--patterns", default=",".join(DEFAULT_PATTERNS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--no-backward", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/attention.py: no CUDA device here -- this benchmark times GPU kernels, so there is "
              "nothing to measure. (On CPU, see benchmarks/block_mask.py, `attnpat inspect` and `attnpat verify`.)")
        return 0

    import attnpat
    from attnpat.compiler.analysis import analyze
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    flex = torch.compile(flex_attention, dynamic=False)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    device = torch.device("cuda")
    B, H, Hkv, D = args.batch, args.heads, args.kv_heads, args.head_dim
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | B={B} H={H} Hkv={Hkv} D={D} {args.dtype}")
    print(f"{'pattern':15s} {'N':>7s} {'pass':8s} {'attnpat':>16s} {'flex':>16s} {'sdpa':>16s} {'flash':>16s} "
          f"{'vs flex':>8s} {'vs sdpa':>8s}")
    for name in args.patterns.split(","):
        params = PARAMS.get(name, {})
        pattern = attnpat.load(name, **params)
        kernel = attnpat.compile(pattern)
        for n in (int(x) for x in args.lengths.split(",")):
            inputs = {"doc": _doc_ids(n, device)} if "doc" in pattern.inputs else {}
            allowed = analyze(pattern, n, heads=H, head_dim=D, **{k2: v2.cpu() for k2, v2 in inputs.items()}).allowed
            q = torch.randn(B, H, n, D, device=device, dtype=dtype)
            k = torch.randn(B, Hkv, n, D, device=device, dtype=dtype)
            v = torch.randn(B, Hkv, n, D, device=device, dtype=dtype)
            mod = _flex_mask_mod(name, params, n, device, H)
            block_mask = create_block_mask(mod, B, H, n, n, device=device, BLOCK_SIZE=128) if mod else None
            passes = [("fwd", False)] + ([] if args.no_backward else [("fwd+bwd", True)])
            for label, backward in passes:
                def run(fn):
                    def go():
                        qq, kk, vv = (t.detach().requires_grad_(backward) for t in (q, k, v))
                        out = fn(qq, kk, vv)
                        if backward:
                            out.backward(torch.ones_like(out))
                    return go
                results = {"attnpat": _measure(run(lambda a, b, c: kernel(a, b, c, **inputs)))}
                results["flex"] = _measure(run(lambda a, b, c: flex(a, b, c, block_mask=block_mask,
                                                                     enable_gqa=H != Hkv))) if block_mask else (None, None)
                if n <= 32768:
                    dense = pattern.dense_mask(n, n, heads=H, **{k2: v2.cpu() for k2, v2 in inputs.items()}).to(device)
                    results["sdpa"] = _measure(run(lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                        a, b, c, attn_mask=dense, enable_gqa=H != Hkv)))
                    del dense
                else:
                    results["sdpa"] = (None, None)
                results["flash"] = (None, None)
                if flash_attn_func is not None and name in ("causal", "sliding_window"):
                    window = (params.get("window", n) - 1, 0)
                    results["flash"] = _measure(run(lambda a, b, c: flash_attn_func(
                        a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2), causal=True,
                        window_size=window).transpose(1, 2)))
                flops = 4 * D * allowed * (2.5 if backward else 1.0)   # allowed is summed over batch and heads

                def cell(r):
                    t, mem = r
                    return f"{flops / t / 1e12:6.1f}TF {mem:5.1f}G" if t else f"{'-':>16s}"

                ours = results["attnpat"][0]
                ratio = lambda other: f"{results[other][0] / ours:7.2f}x" if ours and results[other][0] else f"{'-':>8s}"
                print(f"{name:15s} {n:7d} {label:8s} {cell(results['attnpat']):>16s} {cell(results['flex']):>16s} "
                      f"{cell(results['sdpa']):>16s} {cell(results['flash']):>16s} {ratio('flex')} {ratio('sdpa')}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
