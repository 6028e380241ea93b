"""Context parallelism: bytes received and time per rank, attnpat's plan against an all-gather baseline.

For each pattern (sliding_window, document, streaming_llm, causal) and world size (2, 4, 8 by default) it
spawns one process per rank (gloo on the CPU, under Triton's interpreter; NCCL on one GPU per rank when
CUDA has enough devices) and times, per rank, in the same run:

  * attnpat.distributed.attention -- each rank receives only the key/value rows its queries need, and
    runs the kernel per received range (the forward);
  * the all-gather baseline -- every rank all-gathers K and V and runs the single-process kernel on its
    queries against the whole sequence (q_offset = its first row).

Bytes are counted from the buffers each rank received (attnpat.distributed.TRANSFER_BYTES) and, for the
baseline, from the gathered shards of the other ranks. On the CPU the times measure the interpreter, not a
GPU: compare the bytes, and the times only between the two columns of one row.

    python benchmarks/context_parallel.py [--ranks 2,4,8] [--length 256] [--heads 2] [--head-dim 16]
                                          [--patterns sliding_window,document,streaming_llm,causal]
                                          [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PATTERNS = {
    "sliding_window": ({"window": 32}, None),
    "document": ({}, "doc"),
    "streaming_llm": ({"sinks": 4, "window": 28}, None),
    "causal": ({}, None),
}


def _inputs(name: str, total: int) -> dict:
    if PATTERNS[name][1] is None:
        return {}
    # documents of 3/8, 1/4, 1/4 and 1/8 of the sequence: some span two shards
    cuts = [0, 3 * total // 8, 5 * total // 8, 7 * total // 8, total]
    return {"doc": torch.cat([torch.full((b - a,), i) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))])}


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        dist.barrier()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _worker(rank: int, world: int, init: str, args, out_dir: str) -> None:
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"
        warnings.filterwarnings("ignore", "attnpat: kernels run under Triton's interpreter")
    import attnpat
    from attnpat import distributed as cp
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init, rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    total, H, D = args.length, args.heads, args.head_dim
    size = total // world
    rows = slice(rank * size, (rank + 1) * size)
    lines = []
    for name in args.patterns:
        pat = attnpat.load(name, **PATTERNS[name][0])
        inputs = {n: t.to(device) for n, t in _inputs(name, total).items()}
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, H, total, D, generator=g)[:, :, rows].to(device, dtype).contiguous()
                   for _ in range(3))

        def ours():
            return cp.attention(q, k, v, pat, **inputs)

        def gathered():
            ks = [torch.empty_like(k) for _ in range(world)]
            vs = [torch.empty_like(v) for _ in range(world)]
            dist.all_gather(ks, k)
            dist.all_gather(vs, v)
            return attnpat.attention(q, torch.cat(ks, 2), torch.cat(vs, 2), pat, q_offset=rank * size, **inputs)

        ours()   # compile and plan outside the timing
        gathered()
        cp.TRANSFER_BYTES["forward"] = cp.TRANSFER_BYTES["backward"] = 0
        t_ours = _time(ours, args.repeat)
        got = cp.TRANSFER_BYTES["forward"] // args.repeat
        t_ag = _time(gathered, args.repeat)
        ag_bytes = 2 * (world - 1) * k.numel() * k.element_size()
        check = (ours().float() - gathered().float()).abs().max().item()
        lines.append(f"{name},{world},{rank},{got},{ag_bytes},{t_ours:.4f},{t_ag:.4f},{check:.2e}")
    with open(os.path.join(out_dir, f"{world}_{rank}.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="2,4,8")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--patterns", default=",".join(PATTERNS))
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    args.patterns = args.patterns.split(",")
    worlds = [int(x) for x in args.ranks.split(",")]
    print("pattern          ranks rank  received_bytes  all_gather_bytes  share   time_s  all_gather_s  max|diff|")
    bad = False
    for world in worlds:
        if args.length % world:
            print(f"--length {args.length} is not a multiple of {world} ranks", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world, f"file://{tmp}/init", args, tmp), nprocs=world, join=True)
            rows = []
            for r in range(world):
                with open(os.path.join(tmp, f"{world}_{r}.csv")) as f:
                    rows += [line.split(",") for line in f.read().split()]
        for name, w, r, got, ag, t1, t2, diff in sorted(rows, key=lambda x: (x[0], int(x[2]))):
            share = int(got) / int(ag) if int(ag) else 0.0
            bad |= float(diff) > 1e-2
            print(f"{name:<16} {w:>5} {r:>4} {int(got):>15,} {int(ag):>17,} {share:>6.0%} {float(t1):>8.3f} "
                  f"{float(t2):>13.3f}  {diff}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
