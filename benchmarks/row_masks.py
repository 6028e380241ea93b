"""Row-interval block masks (prefix lengths, sequence lengths, flags): the device lowering against the closed
form, in one run.

    python benchmarks/row_masks.py                          # 8K, 32K, 128K tokens, batch 8
    python benchmarks/row_masks.py --sizes 8192 --batch 2 --closed-max 8192

What is timed, per pattern and size (best of --repeats, after a warm-up):

* device: ``attnpat.block_mask(pattern, N, N, **inputs)`` then its tables at 128 x 128 tiles
  (``m.tables(128, 128, B, 1)``) -- validation, the row intervals and tile enumeration with torch ops on the
  inputs' device (runtime/devrows.py), forward and transposed tables;
* closed form: ``Pattern.block_mask(N, N, block_q=128, block_k=128, batch=B, **inputs)`` -- the numpy lowering
  (compiler/lower/), which the runtime used for these patterns before; up to --closed-max tokens.

The tiles of both are compared tile by tile: "exact" when every tile's kind agrees, "tighter" when they
differ and the device is right on every differing tile (decided point by point), else MISMATCH. Inputs: prefix and
sequence lengths uniform in [0, N] per sequence (prefix_lm_lengths, causal_padded), the same as one row per
query (prefix_lm_dynamic, [B, N]), one global token in 512 (longformer_flags, window 512), and causal
documents of 64..4096 tokens whose ids (0..7) come back in random order (runtime/devids.py).
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import attnpat
from document_masks import best_of   # this folder is on sys.path when a benchmark runs as a script

TILE = 128


def cases(n: int, batch: int, g: torch.Generator):
    """(label, pattern, inputs) per pattern at n tokens."""
    lengths = torch.randint(0, n + 1, (batch,), generator=g)
    flags = (torch.rand(batch, n, generator=g) < 1 / 512).long()
    return [
        ("prefix_lm_lengths", attnpat.load("prefix_lm_lengths"), {"prefix_len": lengths}),
        ("causal_padded", attnpat.load("causal_padded"), {"seq_len": lengths}),
        ("prefix_lm_dynamic", attnpat.load("prefix_lm_dynamic"),
         {"prefix_len": lengths[:, None].expand(batch, n).contiguous()}),
        ("longformer_flags", attnpat.load("longformer_flags"), {"is_global": flags}),
        ("document (unsorted)", attnpat.load("document"), {"doc": _unsorted_ids(n, g)}),
    ]


def _unsorted_ids(n: int, g: torch.Generator) -> torch.Tensor:
    """Packed documents of 64..4096 tokens labelled with ids 0..7 in random order: ids come back."""
    lengths = torch.randint(64, 4097, (n // 64 + 1,), generator=g)
    labels = torch.randint(0, 8, (len(lengths),), generator=g)
    return torch.repeat_interleave(labels, lengths)[:n]


def compare(p, n: int, batch: int, inputs: dict, got: np.ndarray, bm) -> str:
    """'exact' when the device tiles equal the closed form's; where they differ, each differing tile is
    decided point by point: 'tighter' when the device is right on every one (the closed form bounds these
    tiles with per-block minima and maxima and leaves them PARTIAL), else 'MISMATCH'."""
    want = np.stack([bm.to_dense(batch=b) for b in range(batch)])
    if np.array_equal(got, want):
        return "exact"
    for b, qb in sorted({(int(b), int(i)) for b, _, i, _ in np.argwhere(got != want)}):
        one = {k: (v[b:b + 1] if getattr(v, "dim", lambda: 0)() == 2 else v) for k, v in inputs.items()}
        rows = min(TILE, n - qb * TILE)
        dense = p.dense_mask(rows, n, q_offset=qb * TILE, **one)[0, 0].numpy()
        pad = -(-n // TILE) * TILE - n
        tiles = np.pad(dense, ((0, 0), (0, pad)), constant_values=False).reshape(rows, -1, TILE)
        full = np.pad(dense, ((0, 0), (0, pad)), constant_values=True).reshape(rows, -1, TILE).all((0, 2))
        exact = np.where(full, 2, np.where(tiles.any((0, 2)), 1, 0))
        if not np.array_equal(got[b, 0, qb], exact):
            return "MISMATCH"
    return "tighter"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8192,32768,131072")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--closed-max", type=int, default=32768, help="largest size the closed form is timed at")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"batch {args.batch}, tiles {TILE}x{TILE}")
    print(f"{'pattern':<20} {'tokens':>7} {'device ms':>10} {'closed ms':>10} {'ratio':>7}  tiles")
    g = torch.Generator().manual_seed(0)
    bad = 0
    for n in (int(s) for s in args.sizes.split(",")):
        for label, p, inputs in cases(n, args.batch, g):
            def device():
                m = attnpat.block_mask(p, n, n, batch=args.batch, **inputs)
                m.tables(TILE, TILE, args.batch, 1)
                return m
            t_dev, m = best_of(device, args.repeats)
            assert all(how == "device" for how in m.builds.values()), m.builds
            row = f"{label:<20} {n // 1024:>6}K {t_dev * 1e3:>10.2f}"
            if n <= args.closed_max:
                t_cf, bm = best_of(lambda: p.block_mask(n, n, block_q=TILE, block_k=TILE, batch=args.batch,
                                                        **inputs), 1)
                verdict = compare(p, n, args.batch, inputs, m.tile_kinds(TILE, TILE, args.batch, 1), bm)
                bad += verdict == "MISMATCH"
                row += f" {t_cf * 1e3:>10.1f} {t_cf / t_dev:>6.0f}x  {verdict}"
            else:
                row += f" {'-':>10} {'-':>7}  -"
            print(row, flush=True)
    print("SUMMARY:", "no tile mismatches" if not bad else f"{bad} MISMATCH rows")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
