"""`attnpat compile`: a pattern's kernel plan and cache entry, or the generated Triton code (--emit)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ArgumentError
from .arguments import Command, add_spec_arguments, heading, pattern_from_args
from .progress import Progress


def _configure(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p)
    p.add_argument("--emit", action="store_true",
                   help="print the generated Triton module instead of the plan")
    p.add_argument("--backward", action="store_true",
                   help="with --emit: print the generated backward module (the dK/dV and dQ kernels)")


def _bounds_text(lows: tuple[str, ...], highs: tuple[str, ...]) -> str:
    def one(parts, fn, default):
        if not parts:
            return default
        return parts[0] if len(parts) == 1 else f"{fn}({', '.join(parts)})"
    return f"{one(lows, 'max', '0')} <= k <= {one(highs, 'min', 'kv_len - 1')}"


def _plan_rows(kernel) -> list[tuple[str, str]]:
    plan = kernel.plan
    rows = [("canonical", plan.text), ("key", plan.key)]
    if plan.mode == "band":
        rows.append(("plan", "band: each query block [q_lo, q_hi] computes its key blocks from linear bounds "
                             "(no block tables)"))
        for lows, highs in plan.families:
            rows.append(("", f"keys {_bounds_text(lows, highs)}"))
    else:
        rows.append(("plan", "table: each query block walks its PARTIAL tiles (with the predicate) and its FULL "
                             "tiles (without) from the block mask"))
    if plan.inputs:
        rows.append(("inputs", ", ".join(f"{n}: int[{a}] -> in{i}" for i, (n, a) in enumerate(plan.inputs))
                     + " (kernel arguments: new values never recompile)"))
    reads = [x for x, used in (("h", plan.uses_h), ("b", plan.uses_b)) if used]
    if reads:
        rows.append(("reads", ", ".join(reads) + " (the predicate depends on the "
                     + " and ".join({"h": "head", "b": "batch element"}[x] for x in reads) + ")"))
    return rows


def _cache_rows(kernel) -> list[tuple[str, str]]:
    from ..runtime import cache
    from ..runtime.backend import target_name

    directory = cache.cache_dir()
    target = target_name()
    key = cache.entry_key(kernel.key, {"plan": kernel.plan.mode, "kernel": "fwd"}, target)
    path = directory / f"k_{key[:40]}.py"
    state = "cached" if path.is_file() else "not generated yet: the first call generates it"
    return [("cache", str(directory)), ("entry", f"{path.name} ({target}; {state})"),
            ("code", "add --emit to print the generated Triton module (--emit --backward: the backward one)")]


def _run(args: argparse.Namespace) -> int:
    from .. import compile as compile_kernel

    if args.backward and not args.emit:
        raise ArgumentError("--backward prints the generated backward module: use it with --emit")
    pattern = pattern_from_args(args)
    progress = Progress()     # on a terminal: where a first compile spends its time
    with progress.step("simplifying and planning"):
        pattern.canonical
    with progress.step("generating the kernel"):
        kernel = compile_kernel(pattern)
        if args.emit and args.backward:
            from ..runtime.autograd import bwd_source
            source = bwd_source(kernel)
        elif args.emit:
            source = kernel.source()
    if args.emit:
        sys.stdout.write(source if source.endswith("\n") else source + "\n")
        return 0
    rows = _plan_rows(kernel) + _cache_rows(kernel)
    print(heading(pattern))
    width = max(len(r[0]) for r in rows)
    for label, text in rows:
        print(f"  {label:<{width}}  {text}".rstrip())
    return 0


COMMAND = Command("compile", "generate a pattern's Triton kernel: show the plan and cache entry, or print the "
                             "code (--emit)", _configure, _run)
