"""Context parallelism: bytes received and time per rank, forward and backward, attnpat's plan against an
all-gather baseline.

For each pattern (sliding_window, document, streaming_llm, causal) and world size (2, 4, 8 by default) it
spawns one process per rank (gloo on the CPU, under Triton's interpreter; NCCL on one GPU per rank when
CUDA has enough devices) and times, per rank, in the same run:

  * attnpat.distributed.attention (contiguous shards) -- forward: each rank receives only the key/value rows
    its queries need and runs the kernel per key range; backward: the backward kernels per range, then the
    dK/dV of fetched rows go back to their owners;
  * the all-gather baseline -- forward: every rank all-gathers K and V and runs the single-process kernel on
    its queries against the whole sequence (q_offset = its first row); backward: the single-process backward
    gives dK/dV for the whole sequence from this rank's queries, and a reduce-scatter sums them into each
    owner's rows (NCCL's reduce_scatter_tensor; gloo has none, so there it is one point-to-point exchange
    that moves the same bytes: each rank receives every other rank's contribution to its own rows).

Bytes are what each rank received: for attnpat counted from the buffers its transfers filled
(attnpat.distributed.TRANSFER_BYTES), forward K/V and backward dK/dV; for the baseline the other ranks'
shards, gathered in the forward and reduce-scattered in the backward. Backward times exclude the forward.
On the CPU the times measure the interpreter, not a GPU: compare the bytes, and the times only between
attnpat and the baseline of one row. max|diff| compares the output and dq/dk/dv with the baseline's.

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


def _time_backward(forward, dout, repeat: int) -> float:
    """Best time of the backward alone (each repeat runs a fresh forward outside the timing)."""
    best = float("inf")
    for _ in range(repeat):
        out = forward()
        dist.barrier()
        start = time.perf_counter()
        out.backward(dout)
        best = min(best, time.perf_counter() - start)
    return best


def _reduce_scatter(full: torch.Tensor, world: int, rank: int, cuda: bool) -> torch.Tensor:
    """Sum over ranks of `full` [..., world * n, D] (dim -2), this rank's n rows of it."""
    parts = list(full.chunk(world, dim=-2))
    if cuda:
        out = torch.empty_like(parts[rank])
        dist.reduce_scatter_tensor(out, torch.stack(parts).contiguous())
        return out
    got = [torch.empty_like(parts[rank]) for _ in range(world)]
    ops = [dist.P2POp(dist.isend, parts[j].contiguous(), j) for j in range(world) if j != rank]
    ops += [dist.P2POp(dist.irecv, got[j], j) for j in range(world) if j != rank]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return parts[rank] + sum(got[j] for j in range(world) if j != rank)


class _Gathered(torch.autograd.Function):
    """All-gather K and V in the forward; reduce-scatter dK and dV in the backward (the baseline)."""

    @staticmethod
    def forward(ctx, k, v, world: int, rank: int, cuda: bool):
        ctx.world, ctx.rank, ctx.cuda = world, rank, cuda
        kv = torch.stack([k, v]).contiguous()
        parts = [torch.empty_like(kv) for _ in range(world)]
        dist.all_gather(parts, kv)
        full = torch.cat(parts, dim=3)
        return full[0], full[1]

    @staticmethod
    def backward(ctx, dk, dv):
        d = _reduce_scatter(torch.stack([dk, dv]), ctx.world, ctx.rank, ctx.cuda)
        return d[0], d[1], None, None, None


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
        q, k, v, dout = (torch.randn(1, H, total, D, generator=g)[:, :, rows].to(device, dtype).contiguous()
                         for _ in range(4))
        mine = [t.clone().requires_grad_() for t in (q, k, v)]
        theirs = [t.clone().requires_grad_() for t in (q, k, v)]

        def ours():
            return cp.attention(*mine, pat, layout="contiguous", **inputs)

        def gathered():
            kf, vf = _Gathered.apply(theirs[1], theirs[2], world, rank, cuda)
            return attnpat.attention(theirs[0], kf, vf, pat, q_offset=rank * size, **inputs)

        ours().backward(dout)   # compile and plan outside the timing
        gathered().backward(dout)
        cp.TRANSFER_BYTES["forward"] = cp.TRANSFER_BYTES["backward"] = 0
        with torch.no_grad():
            t_ours = _time(ours, args.repeat)
        got = cp.TRANSFER_BYTES["forward"] // args.repeat
        cp.TRANSFER_BYTES["backward"] = 0
        b_ours = _time_backward(ours, dout, args.repeat)
        back = cp.TRANSFER_BYTES["backward"] // args.repeat
        with torch.no_grad():
            t_ag = _time(gathered, args.repeat)
        b_ag = _time_backward(gathered, dout, args.repeat)
        ag_bytes = 2 * (world - 1) * k.numel() * k.element_size()   # K and V gathered; dK and dV scattered
        for t in mine + theirs:
            t.grad = None
        a, b = ours(), gathered()
        a.backward(dout)
        b.backward(dout)
        check = max((x.float() - y.float()).abs().max().item()
                    for x, y in [(a, b)] + [(m.grad, t.grad) for m, t in zip(mine, theirs)])
        lines.append(f"{name},{world},{rank},{got},{back},{ag_bytes},{t_ours:.4f},{t_ag:.4f},{b_ours:.4f},"
                     f"{b_ag:.4f},{check:.2e}")
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
    print(f"{'':26}{'-- bytes received (forward, backward) --':^46}{'-- forward s --':^22}"
          f"{'-- backward s --':^22}")
    print(f"{'pattern':<14} {'ranks':>5} {'rank':>4} {'K/V':>9} {'dK/dV':>11} {'all-gather':>18} {'share':>6} "
          f"{'attnpat':>8} {'all-gather':>11} {'attnpat':>8} {'all-gather':>11}  max|diff|")
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
        for name, w, r, got, back, ag, t1, t2, b1, b2, diff in sorted(rows, key=lambda x: (x[0], int(x[2]))):
            share = int(got) / int(ag) if int(ag) else 0.0
            bad |= float(diff) > 1e-2
            print(f"{name:<14} {w:>5} {r:>4} {int(got):>9,} {int(back):>11,} {int(ag):>18,} {share:>6.0%} "
                  f"{float(t1):>8.3f} {float(t2):>11.3f} {float(b1):>8.3f} {float(b2):>11.3f}  {diff}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
