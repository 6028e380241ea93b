"""A training step of L attention layers (forward + backward) on packed documents: block-mask builds per step.

    python benchmarks/training_step.py                       # L=32, 512 tokens, 2 heads (CPU: interpreter)
    python benchmarks/training_step.py --layers 8 --tokens 256

Each step draws new document lengths (as a data loader would), then runs L attention layers, each one
``attention(x, k_l, v_l)`` on the previous layer's output, and the backward of their sum. Three ways:

* attnpat, prepared: ``m = attnpat.block_mask(document, N, N, doc=ids)`` once per step, every layer
  ``attnpat.attention(..., block_mask=m)``; the backward reuses m.
* attnpat, per call: ``attnpat.attention(..., doc=ids)`` in every layer (each call builds its own mask,
  which that call's backward reuses).
* Flex: ``create_block_mask`` once per step (compiled with --flex-mode compile, else eager), every layer
  ``flex_attention(..., block_mask=m)``. FlexAttention has no backward on the CPU: there its layers run
  forward only (said in the output), which does not change its mask count.

Printed per way: mask builds per step (attnpat counts the builds that read the inputs in
runtime.blockmask.BUILD_COUNTS; tables at a coarser tile shape are coarsened from them, exactly, and listed
apart), the time spent getting masks per step (every PreparedMask.tables call, the cached look-ups of later
layers included), and the step's wall time. On the CPU the attnpat kernels run under Triton's interpreter,
so step times measure the interpreter, not attention; the mask columns are the point. Ratios are against
attnpat prepared, same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import torch

import attnpat
from attnpat import packing
from attnpat.runtime import blockmask


def lengths_for(n: int, step: int) -> list[int]:
    g = torch.Generator().manual_seed(step)
    out = []
    while sum(out) < n:
        out.append(int(torch.randint(n // 16, n // 3 + 1, (1,), generator=g)))
    out[-1] -= sum(out) - n
    return out


class MaskTimer:
    """Wall time spent getting attnpat's mask tables (every PreparedMask.tables call: builds, coarsenings
    and the cached look-ups of later layers) and the number of builds that read the inputs."""

    def __init__(self):
        self.seconds = 0.0
        self._orig = blockmask.PreparedMask.tables
        self._counts = dict(blockmask.BUILD_COUNTS)
        timer = self

        def timed(mask, *args, **kwargs):
            t = time.perf_counter()
            try:
                return timer._orig(mask, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t
        blockmask.PreparedMask.tables = timed

    def take(self):
        now = dict(blockmask.BUILD_COUNTS)
        builds = sum(now[k] - self._counts[k] for k in ("device", "closed_form"))
        derived = now["derived"] - self._counts["derived"]
        out = (builds, derived, self.seconds)
        self.seconds, self._counts = 0.0, now
        return out


def attnpat_step(pattern, ids, layers, tensors, prepared: bool, timer: MaskTimer):
    x, ks, vs = tensors
    n = x.shape[2]
    t0 = time.perf_counter()
    if prepared:
        t = time.perf_counter()
        m = attnpat.block_mask(pattern, n, n, doc=ids.to(x.device))
        timer.seconds += time.perf_counter() - t     # validation, counted with the mask time
        kw = {"block_mask": m}
    else:
        kw = {"doc": ids.to(x.device)}
    out = x
    for k, v in zip(ks, vs):
        out = attnpat.attention(out, k, v, pattern, **kw)
    out.float().sum().backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def flex_step(ids, layers, tensors, create, grad: bool):
    from torch.nn.attention.flex_attention import flex_attention
    x, ks, vs = tensors
    n = x.shape[2]
    t0 = time.perf_counter()
    doc = ids.to(x.device)

    def mask_mod(b, h, q, k):
        return (doc[q] == doc[k]) & (q >= k)
    t = time.perf_counter()
    m = create(mask_mod, None, None, n, n, device=str(x.device))
    mask_s = time.perf_counter() - t
    if not grad:   # Flex checks requires_grad itself: hand it detached tensors
        x, ks, vs = x.detach(), [k.detach() for k in ks], [v.detach() for v in vs]
    with torch.set_grad_enabled(grad):
        out = x
        for k, v in zip(ks, vs):
            out = flex_attention(out, k, v, block_mask=m)
        if grad:
            out.float().sum().backward()
    return time.perf_counter() - t0, mask_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2, help="steps per way (the first one warms up)")
    ap.add_argument("--flex-mode", choices=("compile", "eager"), default="eager")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = attnpat.kernel_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    n, L = args.tokens, args.layers
    pattern = attnpat.load("document")
    pattern.compiled
    print(f"# training step: {L} layers fwd+bwd, {n} tokens, {args.heads} heads x {args.head_dim}, {dtype}, "
          f"device {device} ({'Triton interpreter' if device.type == 'cpu' else 'compiled kernels'}); "
          f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} thread(s))")

    def tensors():
        g = torch.Generator().manual_seed(0)
        make = lambda: torch.randn(1, args.heads, n, args.head_dim, generator=g).to(device, dtype)  # noqa: E731
        return (make().requires_grad_(), [make().requires_grad_() for _ in range(L)],
                [make().requires_grad_() for _ in range(L)])

    timer = MaskTimer()
    rows = []
    for label, prepared in (("attnpat prepared", True), ("attnpat per call", False)):
        for step in range(args.steps):
            ids = packing.document_ids(lengths_for(n, step))
            timer.take()
            wall = attnpat_step(pattern, ids, L, tensors(), prepared, timer)
            builds, derived, mask_s = timer.take()
        rows.append((label, builds, mask_s, wall, f"+ {derived} coarsened from a build" if derived else ""))
    from torch.nn.attention.flex_attention import create_block_mask
    create = torch.compile(create_block_mask) if args.flex_mode == "compile" else create_block_mask
    grad = device.type == "cuda"
    for step in range(args.steps):
        ids = packing.document_ids(lengths_for(n, step))
        wall, mask_s = flex_step(ids, L, tensors(), create, grad)
    note = "" if grad else "forward only: no Flex backward on CPU"
    rows.append((f"flex ({args.flex_mode} mask)", 1, mask_s, wall, note))
    base = rows[0][2]
    print(f"{'way':<22} {'builds/step':>11} {'mask ms/step':>12} {'vs prepared':>11} {'step s':>8}  note")
    for label, builds, mask_s, wall, note in rows:
        print(f"{label:<22} {builds:>11} {mask_s * 1e3:>12.2f} {mask_s / base:>10.1f}x {wall:>8.2f}  {note}")
    print(f"# attnpat prepared: {rows[0][1]} build(s) per step for {L} layers; per call: {rows[1][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
