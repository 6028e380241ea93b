"""`attnpat verify`: property-test a pattern's kernels against the float64 dense reference."""

from __future__ import annotations

import argparse
import sys

from .arguments import Command, add_spec_arguments, error, integer, pattern_from_args, positive


def _configure(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p)
    p.add_argument("--examples", type=positive, default=25, metavar="N", help="cases to draw (default 25)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu runs Triton's interpreter (small sizes); cuda the compiled kernels")
    p.add_argument("--forward-only", action="store_true", help="do not check gradients")
    p.add_argument("--max-len", type=positive, default=96, metavar="N", help="longest sequence drawn")
    p.add_argument("--seed", type=integer, default=None, help="hypothesis seed (default: derandomized)")


def _run(args: argparse.Namespace) -> int:
    from ..verify import verify

    pattern = pattern_from_args(args)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            error("--device cuda: no CUDA device is available here")
            return 1
    result = verify(pattern, spec=args.spec, examples=args.examples, backward=not args.forward_only,
                    device=args.device, max_len=args.max_len, seed=args.seed)
    what = "forward" if args.forward_only else "forward and backward"
    if result.passed:
        print(f"{args.spec}: ok -- {result.examples} cases, {what}, match the float64 reference")
        return 0
    print(f"{args.spec}: FAILED after {result.examples} cases: {result.failure}", file=sys.stderr)
    print("smallest failing case:\n", file=sys.stderr)
    print(result.snippet, file=sys.stderr)
    return 1


COMMAND = Command("verify", "property-test a pattern's kernels against the float64 dense reference (forward and "
                            "backward); print the smallest failing case as a Python snippet", _configure, _run)
