"""`attnpat verify`: property-test a pattern's kernels against the float64 dense reference."""

from __future__ import annotations

import argparse
import sys

from .arguments import Command, add_spec_arguments, error, integer, pattern_from_args, positive
from .progress import Progress, time_line


def _configure(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p)
    p.add_argument("--examples", type=positive, default=25, metavar="N", help="cases to draw (default 25)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu runs Triton's interpreter (small sizes); cuda the compiled kernels")
    p.add_argument("--forward-only", action="store_true", help="do not check gradients")
    p.add_argument("--max-len", type=positive, default=96, metavar="N", help="longest sequence drawn")
    p.add_argument("--seed", type=integer, default=None, help="hypothesis seed (default: derandomized)")


def _case_text(case: dict) -> str:
    return (f"q_len={case['q_len']} kv_len={case['kv_len']} heads={case['heads']}/{case['kv_heads']} "
            f"{case['dtype']} D={case['head_dim']}")


def _run(args: argparse.Namespace) -> int:
    from ..verify import require_hypothesis, verify

    require_hypothesis()          # before any work: say how to install it
    pattern = pattern_from_args(args)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            error("--device cuda: no CUDA device is available here")
            return 1
    progress = Progress()
    with progress.step("simplifying and planning the kernel", name="simplify and plan"):
        pattern.canonical

    def report(done: int, total: int, case: dict, shrinking: bool) -> None:
        what = "shrinking a failing case" if shrinking else "cases"
        progress.bar(min(done, total), total, f"{what}; last: {_case_text(case)}")

    result = verify(pattern, spec=args.spec, examples=args.examples, backward=not args.forward_only,
                    device=args.device, max_len=args.max_len, seed=args.seed, progress=report)
    progress.done()
    what = "forward" if args.forward_only else "forward and backward"
    seconds = {**result.seconds, **progress.seconds,
               "total": result.seconds.get("total", 0.0) + sum(progress.seconds.values())}
    if result.passed:
        print(f"{args.spec}: ok -- {result.examples} cases, {what}, match the float64 reference")
        print(time_line(seconds))
        return 0
    print(f"{args.spec}: FAILED after {result.examples} cases: {result.failure}", file=sys.stderr)
    print(time_line(seconds), file=sys.stderr)
    print("smallest failing case:\n", file=sys.stderr)
    print(result.snippet, file=sys.stderr)
    return 1


COMMAND = Command("verify", "property-test a pattern's kernels against the float64 dense reference (forward and "
                            "backward); print the smallest failing case as a Python snippet", _configure, _run)
