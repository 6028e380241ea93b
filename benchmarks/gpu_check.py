"""`make gpu-check`: the checks that need a CUDA GPU, run one after the other.

`make test` runs attnpat's kernels under Triton's interpreter on CPU tensors, on every machine
(tests/conftest.py). This script runs them compiled, on the GPU, in three steps:

1. `attnpat verify NAME --device cuda` for every library pattern: hypothesis draws shapes, GQA head counts,
   dtypes, head dims and runtime inputs, and checks the forward and backward kernels against the float64
   reference. The library's default parameters are sized for long sequences (a 4096-token window is plain
   causal attention at verify's lengths of at most 96), so each pattern is verified with the small values
   that examples/demo.py runs its kernels with at 96 x 96 (its KERNEL_PARAMS; large integer defaults of
   patterns it does not list are shrunk as the demo shrinks them).
2. Every script in examples/: they put their tensors on `attnpat.kernel_device()`, the GPU here.
3. `python benchmarks/attention.py`: speed and memory against FlexAttention, SDPA and FlashAttention
   (it checks that the results agree before it times anything).

Each command runs in its own process with TRITON_INTERPRET=0, whatever the calling shell set, and the
script goes on after a failing command: it lists the failures at the end and exits 1 if there were any.
Without a CUDA device it prints one line saying so and exits 0.

    python benchmarks/gpu_check.py [--examples N] [--no-benchmark] [--list]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
VERIFY_EXAMPLES = 10      # hypothesis cases per pattern: each new dtype / head dim / block size compiles kernels


@functools.cache
def _demo():
    """examples/demo.py as a module (its KERNEL_PARAMS and generic_args)."""
    spec = importlib.util.spec_from_file_location("_attnpat_demo", EXAMPLES / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verify_sets(name: str) -> list[str]:
    """The `--set NAME=VALUE` arguments that give library pattern `name` small parameter values."""
    from attnpat.cli import describe_value
    demo = _demo()
    if name in demo.KERNEL_PARAMS:
        out: list[str] = []
        for key, value in demo.KERNEL_PARAMS[name].items():
            out += ["--set", f"{key}={describe_value(value)}"]
        return out
    args = demo.generic_args(name)    # --set and --input pairs; verify draws the inputs itself
    return [x for i in range(0, len(args), 2) if args[i] == "--set" for x in args[i:i + 2]]


def steps(examples: int = VERIFY_EXAMPLES, benchmark: bool = True) -> list[list[str]]:
    """The commands, as argv lists without the interpreter: ['attnpat', ...] or a script path."""
    import attnpat
    out = [["attnpat", "verify", name, "--device", "cuda", "--examples", str(examples), *verify_sets(name)]
           for name in attnpat.library_names()]
    out += [[f"examples/{p.name}"] for p in sorted(EXAMPLES.glob("*.py"))]
    if benchmark:
        out.append(["benchmarks/attention.py"])
    return out


def command(step: list[str]) -> list[str]:
    """What to run for a step: `attnpat` as `python -m attnpat`, scripts with this interpreter."""
    if step[0] == "attnpat":
        return [sys.executable, "-m", "attnpat", *step[1:]]
    return [sys.executable, *step]


def shown(step: list[str]) -> str:
    return shlex.join(step if step[0] == "attnpat" else ["python", *step])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=VERIFY_EXAMPLES, metavar="N",
                    help=f"cases `attnpat verify` draws per pattern (default {VERIFY_EXAMPLES})")
    ap.add_argument("--no-benchmark", action="store_true", help="leave out benchmarks/attention.py")
    ap.add_argument("--list", action="store_true", help="print the commands and exit (needs no GPU)")
    args = ap.parse_args(argv)

    if not args.list:
        import torch
        if not torch.cuda.is_available():
            print("make gpu-check: no CUDA device here -- these checks need a GPU (they run attnpat's compiled "
                  "kernels); `make test` checks the kernels under Triton's interpreter on the CPU.")
            return 0

    todo = steps(args.examples, benchmark=not args.no_benchmark)
    if args.list:
        for step in todo:
            print(shown(step))
        return 0

    import torch
    print(f"gpu-check on {torch.cuda.get_device_name()} | torch {torch.__version__} | {len(todo)} commands",
          flush=True)
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    failed: list[str] = []
    start = time.time()
    for step in todo:
        print(f"\n$ {shown(step)}", flush=True)
        t0 = time.time()
        rc = subprocess.run(command(step), cwd=ROOT, env=env).returncode
        print(f"-> {'ok' if rc == 0 else f'FAILED (exit status {rc})'} in {time.time() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(shown(step))
    print(f"\ngpu-check: {len(todo) - len(failed)} of {len(todo)} commands passed in {time.time() - start:.0f} s")
    for line in failed:
        print(f"  FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
