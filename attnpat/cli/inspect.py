"""`attnpat inspect`: compile a pattern's kernels ahead of time for a GPU target (no GPU needed) and report
registers, spills, shared memory, tensor-core MMA and occupancy."""

from __future__ import annotations

import argparse
import re
import sys

from ..errors import ArgumentError
from .arguments import Command, add_spec_arguments, error, heading, pattern_from_args, positive
from .progress import Progress, time_line

_DTYPE_NAMES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
                "fp32": "float32", "float32": "float32"}


def _configure(p: argparse.ArgumentParser) -> None:
    from ..runtime.aot import TARGETS
    add_spec_arguments(p)
    p.add_argument("--target", required=True, choices=sorted(TARGETS), help="the GPU architecture to compile for")
    p.add_argument("--dtype", default="bf16", choices=sorted(_DTYPE_NAMES), help="q/k/v dtype (default bf16)")
    p.add_argument("--head-dim", type=positive, default=128, metavar="D", help="head dimension (default 128)")
    p.add_argument("--backward", action="store_true", help="also compile the backward kernels")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", default=[],
                   help="a launch option as attnpat.compile takes it (repeatable): block_m, block_n, num_warps, "
                        "num_stages for the forward; bwd_block_m, bwd_block_n, bwd_num_warps, bwd_num_stages for "
                        "both backward kernels; dkdv_* and dq_* for one of them")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")


def _compile_options(texts: list[str]) -> dict[str, int]:
    """--option NAME=VALUE values; the names and values are checked by the Kernel, as for attnpat.compile."""
    options = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"\s*-?\d+\s*", value):
            raise ArgumentError(f"'--option' takes NAME=VALUE with an integer VALUE, got '{text}'")
        options[name.strip()] = int(value)
    return options


def inspect_requests(kernel, *, target: str, dtype, head_dim: int, backward: bool) -> list[dict]:
    """The ahead-of-time compile requests for a kernel's forward (and backward) programs."""
    from ..runtime.kernel import aot_request
    requests = [aot_request(kernel, target=target, dtype=dtype, head_dim=head_dim)]
    if backward:
        from ..runtime.autograd import bwd_aot_requests
        requests += bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=head_dim)
    return requests


def _warnings(reports, limit: int, target: str) -> list[str]:
    out = []
    for r in reports:
        if r.spills:
            out.append(f"WARNING: {r.kernel} spills registers ({r.stack_bytes} bytes of stack, "
                       f"{r.spill_bytes} bytes of local memory): expect it to be slow")
        if r.shared_bytes > limit:
            out.append(f"WARNING: {r.kernel} needs {r.shared_bytes} bytes of shared memory, over the "
                       f"{limit} bytes a block may use on {target}: it will not launch")
        if r.mma_count == 0:
            out.append(f"WARNING: {r.kernel} uses no tensor-core MMA instructions")
    return out


def _table(reports) -> list[str]:
    header = ("kernel", "block", "warps", "stages", "regs", "spill B", "smem B", "MMA", "occupancy")
    rows = [(r.kernel, f"{r.block_m}x{r.block_n}", str(r.num_warps), str(r.num_stages), str(r.registers),
             str(r.stack_bytes + r.spill_bytes), str(r.shared_bytes), f"{r.mma_count} {r.mma_kind}",
             f"{r.occupancy_blocks} block(s)/SM, {r.occupancy_blocks * r.num_warps} warps")
            for r in reports]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows)]


def _run(args: argparse.Namespace) -> int:
    import json

    import torch

    from .. import compile as compile_kernel
    from ..runtime.aot import SMEM_LIMIT, TARGETS, compile_many

    pattern = pattern_from_args(args)
    if not 16 <= args.head_dim <= 256:
        error(f"--head-dim must be between 16 and 256, got {args.head_dim}")
        return 1
    dtype = getattr(torch, _DTYPE_NAMES[args.dtype])
    progress = Progress()
    with progress.step("simplifying and planning", name="simplify and plan"):
        pattern.canonical
    with progress.step("generating the kernel source", name="code generation"):
        kernel = compile_kernel(pattern, **_compile_options(args.option))
        requests = inspect_requests(kernel, target=args.target, dtype=dtype, head_dim=args.head_dim,
                                    backward=args.backward)
    with progress.step(f"compiling {len(requests)} kernel{'s' if len(requests) > 1 else ''} for {args.target} "
                       f"(Triton -> PTX -> ptxas, in child processes)", name="ahead-of-time compile", tick=True):
        reports = compile_many(requests)
    seconds = {"total": sum(progress.seconds.values()), **progress.seconds}
    warnings_out = _warnings(reports, SMEM_LIMIT[TARGETS[args.target]], args.target)
    if args.json:
        print(json.dumps({"pattern": pattern.name, "key": kernel.key, "plan": kernel.plan.mode,
                          "target": args.target, "kernels": [r.to_dict() for r in reports],
                          "warnings": warnings_out, "seconds": seconds}, indent=2))
        return 0
    print(f"{heading(pattern)}  plan {kernel.plan.mode}  key {kernel.key}")
    print(f"target {args.target}, {args.dtype}, head dim {args.head_dim} (compiled ahead of time, no GPU)")
    for line in _table(reports):
        print(line)
    print(time_line(seconds))
    for w in warnings_out:
        print(w, file=sys.stderr)
    return 0


COMMAND = Command("inspect", "compile a pattern's kernels ahead of time for a GPU target (no GPU needed) and "
                             "report registers, spills, shared memory, tensor-core MMA and occupancy",
                  _configure, _run)
