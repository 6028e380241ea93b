"""Attention speed and memory on a CUDA GPU: attnpat against FlexAttention, SDPA and FlashAttention.

For each library pattern and sequence length (4K..128K by default) it times the forward and the forward +
backward of
  * attnpat's generated kernel (`attnpat.compile`),
  * FlexAttention with its best block mask for the same pattern (`create_block_mask`, BLOCK_SIZE 128,
    broadcast over batch and heads unless the pattern differs per head, built once outside the timing) and
    `torch.compile(flex_attention)`,
  * SDPA with a dense boolean mask (up to --sdpa-max tokens: the N x N mask must fit in memory),
  * FlashAttention's `window_size` (causal and sliding window only), where the flash-attn package is
    installed,
and prints TFLOP/s, peak memory and attnpat's speed as a ratio of each baseline timed in the same run
(> 1: attnpat is faster). FLOPs count only the allowed (query, key) pairs: 4 * head_dim per pair forward,
3.5x that for forward + backward (the backward does 2.5x the forward's matrix products), so every column is
measured against the same useful work.

Before timing anything it checks that the comparison is fair:
  * each FlexAttention mask_mod (written by hand, as a Flex user would) allows exactly the pairs that
    attnpat's pattern allows, at a small ragged size;
  * at every size, attnpat's output (and, with backward, its dQ/dK/dV) agrees with FlexAttention's
    (or SDPA's where Flex has no mask) within a few units of the dtype's rounding; a row whose results
    disagree is printed as MISMATCH and the exit status is 1.

Without a CUDA device it says so and exits 0. `--device cpu` is a dry run of the whole script at small
sizes (attnpat under Triton's interpreter, FlexAttention eager, forward only for Flex): it exercises every
check and column, and additionally compares attnpat with the float64 reference. Its times mean nothing.

    python benchmarks/attention.py [--lengths 4096,16384,65536,131072] [--patterns sliding_window,document]
                                   [--batch 1] [--heads 16] [--kv-heads 16] [--head-dim 128] [--dtype bf16]
                                   [--no-backward] [--sdpa-max 16384] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

DEFAULT_PATTERNS = ["causal", "sliding_window", "local", "streaming_llm", "prefix_lm", "chunked_causal",
                    "dilated", "longformer", "document", "per_head", "bigbird"]
PARAMS = {"sliding_window": dict(window=4096), "local": dict(radius=2048), "streaming_llm": dict(sinks=4, window=4092),
          "prefix_lm": dict(prefix=2048), "chunked_causal": dict(chunk=8192), "dilated": dict(window=2048, dilation=2),
          "longformer": dict(window=1024, globals={0, 1, 2, 3}), "per_head": dict(windows=[512, 1024, 2048, 4096]),
          "bigbird": dict(block=128, window_blocks=3, global_blocks=2, random_blocks=3, key_blocks=64)}
# The dry run scales windows down so that its small sequences still have masked and unmasked tiles.
CPU_PARAMS = {"sliding_window": dict(window=64), "local": dict(radius=32), "streaming_llm": dict(sinks=4, window=60),
              "prefix_lm": dict(prefix=48), "chunked_causal": dict(chunk=96), "dilated": dict(window=32, dilation=2),
              "longformer": dict(window=32, globals={0, 1, 2, 3}), "per_head": dict(windows=[16, 32, 48, 64]),
              "bigbird": dict(block=16, window_blocks=3, global_blocks=1, random_blocks=2, key_blocks=16)}
# Agreement threshold, in units of the dtype's machine epsilon, relative to the largest magnitude.
AGREE_EPS = 8
CHECK_LEN = 300   # the mask_mod equivalence check's size: not a multiple of any block size


def flex_mask_mod(name: str, params: dict, n: int, device):
    """The pattern as a hand-written FlexAttention mask_mod, and whether it differs per head (None: not
    written here)."""
    if name == "causal":
        return (lambda b, h, q, k: k <= q), False
    if name == "sliding_window":
        w = params["window"]
        return (lambda b, h, q, k: (k <= q) & (q - k < w)), False
    if name == "local":
        r = params["radius"]
        return (lambda b, h, q, k: (q - k <= r) & (k - q <= r)), False
    if name == "streaming_llm":
        s, w = params["sinks"], params["window"]
        return (lambda b, h, q, k: (k <= q) & ((k < s) | (q - k < w))), False
    if name == "prefix_lm":
        p = params["prefix"]
        return (lambda b, h, q, k: (k <= q) | (k < p)), False
    if name == "chunked_causal":
        c = params["chunk"]
        return (lambda b, h, q, k: (k <= q) & (q // c == k // c)), False
    if name == "dilated":
        w, d = params["window"], params["dilation"]
        return (lambda b, h, q, k: (k <= q) & (q - k < w * d) & ((q - k) % d == 0)), False
    if name == "longformer":
        r = params["window"] // 2
        g = torch.zeros(n, dtype=torch.bool, device=device)
        g[[i for i in params["globals"] if i < n]] = True
        return (lambda b, h, q, k: ((q - k <= r) & (k - q <= r)) | g[q] | g[k]), False
    if name == "document":
        doc = doc_ids(n, device)
        return (lambda b, h, q, k: (k <= q) & (doc[q] == doc[k])), False
    if name == "per_head":
        ws = torch.tensor(params["windows"], device=device)
        return (lambda b, h, q, k: (k <= q) & (q - k < ws[h % len(params["windows"])])), True
    if name == "bigbird":
        from attnpat.compiler.hashing import hash32   # the same hash, written with torch integer ops
        blk, wb, gb = params["block"], params["window_blocks"], params["global_blocks"]
        rb, kb, seed = params["random_blocks"], params["key_blocks"], params.get("seed", 0)

        def bigbird(b, h, q, k):
            qb, kbk = q // blk, k // blk
            return (((qb - kbk).abs() <= wb // 2) | (qb < gb) | (kbk < gb)
                    | (hash32(seed, h, qb, kbk) % kb < rb))
        return bigbird, True
    return None, False


def doc_ids(n: int, device) -> torch.Tensor:
    """Documents of varied lengths (1/2, 1/4, 1/8, ... of the sequence, at least 128 tokens or n/8) packed
    into one row."""
    ids, start, i = torch.empty(n, dtype=torch.int64), 0, 0
    while start < n:
        length = max(n >> (i + 1), min(128, max(n // 8, 1)))
        ids[start:start + length] = i
        start, i = start + length, i + 1
    return ids.to(device)


def check_mask_mod(pattern, mod, heads: int, device) -> str | None:
    """None when `mod` allows exactly the pattern's pairs at a small ragged size, else what differs."""
    from torch.nn.attention.flex_attention import create_mask
    inputs = {"doc": doc_ids(CHECK_LEN, "cpu")} if "doc" in pattern.inputs else {}
    ours = pattern.dense_mask(CHECK_LEN, CHECK_LEN, heads=heads, **inputs)
    theirs = create_mask(mod, 1, heads, CHECK_LEN, CHECK_LEN, device=device).cpu()
    differ = int((ours != theirs).sum())
    return None if differ == 0 else f"{differ} of {ours.numel()} mask entries differ at N={CHECK_LEN}"


class Timer:
    """Best-of-`reps` wall time and peak memory of a callable: CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device, reps: int):
        self.cuda = device.type == "cuda"
        self.reps = reps

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn) -> tuple[float | None, float | None]:
        """(seconds, peak GiB) -- (None, None) when it runs out of memory; peak is None on CPU."""
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            fn()   # warm-up: compilation and caches stay out of the timing
            self._sync()
            best = math.inf
            for _ in range(self.reps):
                if self.cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    torch.cuda.synchronize()
                    best = min(best, start.elapsed_time(end) / 1e3)
                else:
                    t0 = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - t0)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return None, None
        return best, (torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None)


def run_once(fn, q, k, v, grad: torch.Tensor | None):
    """Output (and, given the output's gradient, dQ, dK, dV) of one call on fresh leaves."""
    qq, kk, vv = (t.detach().requires_grad_(grad is not None) for t in (q, k, v))
    out = fn(qq, kk, vv)
    if grad is None:
        return (out.detach(),)
    out.backward(grad)
    return out.detach(), qq.grad, kk.grad, vv.grad


def disagreement(ours, theirs) -> float:
    """The largest |difference| over the results, relative to the largest magnitude of `theirs` (>= 1)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        scale = max(float(b.double().abs().max()) if b.numel() else 0.0, 1e-6)
        worst = max(worst, float((a.double() - b.double()).abs().max()) / scale if a.numel() else 0.0)
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default=None, help="comma-separated sequence lengths (cuda: 4096,16384,65536,"
                    "131072; cpu: 128,256)")
    ap.add_argument("--patterns", default=",".join(DEFAULT_PATTERNS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=None, help="query heads (cuda: 16, cpu: 4)")
    ap.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: --heads; fewer is GQA)")
    ap.add_argument("--head-dim", type=int, default=None, help="cuda: 128, cpu: 32")
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="cuda: bf16, cpu: fp32")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--sdpa-max", type=int, default=16384, help="largest N for SDPA with a dense mask")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions, best kept (cuda: 10, cpu: 1)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a dry run at small sizes that checks every path; its times mean nothing")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        print("benchmarks/attention.py: no CUDA device here -- this benchmark times GPU kernels, so there is "
              "nothing to measure. (On CPU, see benchmarks/block_mask.py, `attnpat inspect`, `attnpat verify`, "
              "and `--device cpu` for a dry run of this script.)")
        return 0

    import attnpat
    from attnpat.compiler.analysis import analyze
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    device = torch.device(args.device)
    lengths = [int(x) for x in (args.lengths or ("128,256" if cpu else "4096,16384,65536,131072")).split(",")]
    H = args.heads or (4 if cpu else 16)
    Hkv = args.kv_heads or H
    B, D = args.batch, args.head_dim or (32 if cpu else 128)
    dtype_name = args.dtype or ("fp32" if cpu else "bf16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    tolerance = AGREE_EPS * torch.finfo(dtype).eps if dtype != torch.float32 else 1e-3   # tf32-free fp32
    timer = Timer(device, args.reps or (1 if cpu else 10))
    # On a GPU FlexAttention is only fast compiled; on the CPU the dry run keeps it eager (compiling takes
    # minutes there) and FlexAttention has no CPU backward.
    flex = flex_attention if cpu else torch.compile(flex_attention, dynamic=False)
    where = "CPU dry run -- times are NOT meaningful" if cpu else torch.cuda.get_device_name()
    print(f"# {where} | torch {torch.__version__} | B={B} H={H} Hkv={Hkv} D={D} {dtype_name} | "
          f"TFLOP/s over allowed pairs; ratio = baseline time / attnpat time (> 1: attnpat faster)")
    failures = 0
    header = (f"{'pattern':15s} {'N':>7s} {'pass':8s} {'attnpat':>15s} {'flex':>15s} {'sdpa':>15s} "
              f"{'flash':>15s} {'vs flex':>8s} {'vs sdpa':>8s} {'vs flash':>8s}  agree")
    print(header)
    for name in args.patterns.split(","):
        params = (CPU_PARAMS if cpu else PARAMS).get(name, {})
        pattern = attnpat.load(name, **params)
        kernel = attnpat.compile(pattern)
        mod_check, _ = flex_mask_mod(name, params, CHECK_LEN, device)
        if mod_check is not None:
            problem = check_mask_mod(pattern, mod_check, H, device)
            if problem:
                print(f"{name:15s} MISMATCH: the FlexAttention mask_mod is not the same pattern: {problem}")
                failures += 1
                continue
        for n in lengths:
            inputs = {"doc": doc_ids(n, device)} if "doc" in pattern.inputs else {}
            cpu_inputs = {key: t.cpu() for key, t in inputs.items()}
            allowed = analyze(pattern, n, heads=H, batch=B, head_dim=D, **cpu_inputs).allowed
            gen = torch.Generator(device="cpu").manual_seed(n)
            q, k, v = (torch.randn(B, h, n, D, generator=gen).to(device, dtype) for h in (H, Hkv, Hkv))
            # a fixed, non-uniform upstream gradient: ones would make dV = P^T 1 blind to P's layout errors
            grad_out = torch.randn(B, H, n, D, generator=gen).to(device, dtype)
            mod, per_head = flex_mask_mod(name, params, n, device)
            block_mask = None
            if mod is not None:
                # Flex's best: broadcast over batch (and heads unless per-head); compiled mask creation on a
                # GPU (eager evaluation of all N^2 points runs out of memory at 64K)
                block_mask = create_block_mask(mod, None, H if per_head else None, n, n, device=device,
                                               BLOCK_SIZE=128, _compile=not cpu)
            dense = None
            if n <= args.sdpa_max:
                dense = pattern.dense_mask(n, n, heads=H if pattern_reads_head(pattern) else 1,
                                           **cpu_inputs).to(device)
            impls = {"attnpat": lambda a, b, c: kernel(a, b, c, **inputs)}
            if block_mask is not None:
                impls["flex"] = lambda a, b, c: flex(a, b, c, block_mask=block_mask, enable_gqa=H != Hkv)
            if dense is not None:
                impls["sdpa"] = lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                    a, b, c, attn_mask=dense, enable_gqa=H != Hkv)
            if flash_attn_func is not None and not cpu and name in ("causal", "sliding_window") \
                    and dtype != torch.float32:
                window = (params.get("window", n + 1) - 1, 0)
                impls["flash"] = lambda a, b, c: flash_attn_func(
                    a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2), causal=True,
                    window_size=window).transpose(1, 2)
            for label, backward in [("fwd", False)] + ([] if args.no_backward else [("fwd+bwd", True)]):
                runnable = {key: fn for key, fn in impls.items() if not (backward and cpu and key == "flex")}
                grad = grad_out if backward else None
                # agreement first, outside the timing: attnpat against the first baseline present
                ours = run_once(runnable["attnpat"], q, k, v, grad)
                agree = []
                others = [key for key in ("flex", "sdpa", "flash") if key in runnable]
                if cpu:
                    ref = _reference(pattern, q, k, v, grad, cpu_inputs)
                    agree.append(("fp64", disagreement(ours, ref)))
                if others:
                    agree.append((others[0], disagreement(ours, run_once(runnable[others[0]], q, k, v, grad))))
                bad = [f"{who} {err:.1e}" for who, err in agree if not err <= tolerance]
                results = {}
                for key, fn in runnable.items():
                    results[key] = timer(lambda fn=fn: run_once(fn, q, k, v, grad))
                flops = 4 * D * allowed * (3.5 if backward else 1.0)   # allowed: summed over batch and heads

                def cell(key):
                    t, mem = results.get(key, (None, None))
                    if t is None:
                        return f"{'-':>15s}" if key not in runnable else f"{'OOM':>15s}"
                    return f"{flops / t / 1e12:7.2f}TF" + (f" {mem:5.1f}G" if mem is not None else f" {'':5s}")

                def ratio(key):
                    t, t_ours = results.get(key, (None,))[0], results["attnpat"][0]
                    return f"{t / t_ours:7.2f}x" if t and t_ours else f"{'-':>8s}"

                verdict = ("MISMATCH " + ", ".join(bad)) if bad else \
                    "ok (" + ", ".join(f"{who} {err:.1e}" for who, err in agree) + ")"
                failures += bool(bad)
                print(f"{name:15s} {n:7d} {label:8s} {cell('attnpat')} {cell('flex')} {cell('sdpa')} "
                      f"{cell('flash')} {ratio('flex')} {ratio('sdpa')} {ratio('flash')}  {verdict}", flush=True)
            del dense, block_mask
    print(f"SUMMARY: {failures} mismatch(es)" if failures else "SUMMARY: every result agreed")
    return 1 if failures else 0


def pattern_reads_head(pattern) -> bool:
    """Whether the mask differs between heads (then SDPA needs a per-head dense mask)."""
    from attnpat.compiler.simplify import uses
    return uses(pattern.checked.expr, "h")


def _reference(pattern, q, k, v, grad, inputs):
    """The float64 dense reference's output (and gradients) on the same inputs."""
    import attnpat
    qq, kk, vv = (t.detach().double().requires_grad_(grad is not None) for t in (q, k, v))
    out = attnpat.reference_attention(qq, kk, vv, pattern, **inputs)
    if grad is None:
        return (out.detach(),)
    out.backward(grad.double())
    return out.detach(), qq.grad, kk.grad, vv.grad


if __name__ == "__main__":
    sys.exit(main())
