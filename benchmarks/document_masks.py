"""Document block masks: attnpat's device lowering against FlexAttention's create_block_mask, in one run.

    python benchmarks/document_masks.py                      # 8K, 32K, 128K, 1M tokens (Flex up to 128K)
    python benchmarks/document_masks.py --sizes 8192,32768 --flex-max 32768 --repeats 3
    python benchmarks/document_masks.py --flex-mode eager    # Flex uncompiled (no C++ compiler needed)

What is timed, per size, on the same packed documents (lengths uniform in [64, 4096], seed fixed):

* attnpat device: ``attnpat.block_mask(document, N, N, doc=ids)`` followed by building its tables at
  128 x 128 tiles (``m.tables(128, 128, 1, 1)``) -- input validation, the run finding and tile enumeration
  with torch ops on the ids' device (runtime/devlower.py), forward and transposed tables. Best of --repeats.
* attnpat closed form: ``Pattern.block_mask(N, N, block_q=128, block_k=128, doc=ids)`` -- the numpy
  lowering (compiler/lower/) that every call used before the device lowering (the oracle); --closed-max.
* Flex: ``torch.compile(create_block_mask)(mask_mod, None, None, N, N, device="cpu", BLOCK_SIZE=128)`` for
  ``doc[q] == doc[k] and q >= k``, warmed up at every size (benchmarks/block_mask.py's Flex runner: compiling
  calls are never timed). It evaluates the mask at all N^2 points, so sizes above --flex-max are left out.

Tiles are compared tile by tile with Flex's (which looked at every point, so it is exact): the row says
"exact" when every tile's kind (EMPTY / PARTIAL / FULL) agrees, else MISMATCH with the counts.
Ratios (Flex / attnpat, closed form / attnpat) are printed per size. torch runs with --threads threads
(default 1: these machines have two cores shared with other work, and a second thread mostly waits).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attnpat                                           # noqa: E402
from attnpat import packing                              # noqa: E402

TILE = 128


def packed_ids(n: int, seed: int = 0, lo: int = 64, hi: int = 4096) -> torch.Tensor:
    """Document ids of n tokens: document lengths uniform in [lo, hi], the last one cut at n."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n // lo + 1,), generator=g)
    ends = torch.cumsum(lengths, 0)
    count = int((ends < n).sum()) + 1
    lengths = lengths[:count].clone()
    lengths[-1] = n - int(lengths[:-1].sum())
    return packing.document_ids(lengths, total=n)


def best_of(fn, repeats: int):
    fn()   # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def ours(pattern, ids, n, repeats):
    def build():
        m = attnpat.block_mask(pattern, n, n, doc=ids)
        m.tables(TILE, TILE, 1, 1)
        return m
    return best_of(build, repeats)


def compare_tiles(mine: np.ndarray, theirs: np.ndarray) -> str:
    if mine.shape != theirs.shape:
        return f"MISMATCH shapes {mine.shape} vs {theirs.shape}"
    differ = int((mine != theirs).sum())
    return "exact" if differ == 0 else f"MISMATCH in {differ} tiles"


def fmt_ms(s) -> str:
    return "-" if s is None else f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def _ratio(theirs, mine) -> str:
    if not theirs:
        return "-"
    r = theirs / mine
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8192,32768,131072,1048576")
    ap.add_argument("--flex-max", type=int, default=131072, help="largest size Flex runs at (N^2 points)")
    ap.add_argument("--closed-max", type=int, default=1 << 20, help="largest size the closed form runs at")
    ap.add_argument("--flex-mode", choices=("compile", "eager"), default="compile")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    pattern = attnpat.load("document")
    pattern.compiled   # parse, check, simplify outside the timing
    print(f"# document masks, tiles {TILE}x{TILE}, doc[q] == doc[k] and k <= q; {platform.machine()} "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} thread(s)), "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    flex = None
    if any(n <= args.flex_max for n in sizes):
        from block_mask import Flex, flex_dense
        flex = Flex(args.flex_mode)   # B=1, H=1, BLOCK_SIZE=128 (= TILE)
    header = (f"{'tokens':>8} {'docs':>5} {'attnpat ms':>10} {'closed ms':>9} {'flex ms':>9} {'flex/attnpat':>12} "
              f"{'closed/attnpat':>14} {'partial':>8} {'full':>8} {'flex tiles':>10}  check")
    print(header)
    for n in sizes:
        ids = packed_ids(n)
        docs = int(ids[-1]) + 1
        t_ours, m = ours(pattern, ids, n, args.repeats)
        mine = m.tile_kinds(TILE, TILE)[0, 0]
        partial, full = int((mine == 1).sum()), int((mine == 2).sum())
        t_closed = None
        if n <= args.closed_max:
            t_closed, bm = best_of(lambda: pattern.block_mask(n, n, block_q=TILE, block_k=TILE, doc=ids),
                                   max(1, min(args.repeats, 2)))
            if not np.array_equal(bm.to_dense(), mine[None]):
                print(f"# MISMATCH at {n}: the closed form's tiles differ from the device lowering's")
        t_flex, check, flex_tiles = None, "flex not run (N^2 points)", "-"
        if flex is not None and n <= args.flex_max:
            ids_flex = ids

            def mask_mod(b, h, q, k):
                return (ids_flex[q] == ids_flex[k]) & (q >= k)
            t_flex, fbm, _, status = flex.run(mask_mod, n, 1, max(1, min(args.repeats, 3)))
            if fbm is not None:
                theirs = flex_dense(fbm, 1)[0]
                check = compare_tiles(mine, theirs)
                flex_tiles = f"{int((theirs == 1).sum())}+{int((theirs == 2).sum())}"
            else:
                check = status
        ratio_flex = _ratio(t_flex, t_ours)
        ratio_closed = _ratio(t_closed, t_ours)
        print(f"{n:>8} {docs:>5} {fmt_ms(t_ours):>10} {fmt_ms(t_closed):>9} {fmt_ms(t_flex):>9} {ratio_flex:>12} "
              f"{ratio_closed:>14} {partial:>8} {full:>8} {flex_tiles:>10}  {check}", flush=True)
    if flex is not None:
        for note in flex.notes:
            print("# note:", note)
        print(f"# flex mode: {flex.mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
