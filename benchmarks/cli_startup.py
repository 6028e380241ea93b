"""How long the `attnpat` commands take in a fresh process, against `python -c pass` as the baseline.

    python benchmarks/cli_startup.py [--repeat N] [--png-only]

Each command runs N times (default 5) as a new process; the table gives the median and the fastest wall
time, the time over the baseline, and whether the process imported torch / triton (from `sys.modules`
at exit). `--help`, `--version`, `check`, `list`, `show` and `explain` need no kernel and should import
neither. The last rows time `show --png` of a 64K x 64K sliding window (matplotlib figure included), the
README's claim. Times depend on the machine and its load: this is a benchmark, not a test (the test that
the light commands import neither torch nor triton is tests/test_imports.py).

TRITON_INTERPRET is left as the environment has it; with it unset, `import attnpat` currently imports
torch to choose the Triton backend (see runtime/backend.py), so run both ways to see the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

_PROBE = """
import sys
sys.argv = ["attnpat", *sys.argv[1:]]
try:
    from attnpat.cli import main
    status = main(sys.argv[1:])
finally:
    heavy = [m for m in ("torch", "triton", "sympy", "matplotlib") if m in sys.modules]
    sys.stderr.write("\\nIMPORTED " + ",".join(heavy) + "\\n")
"""


def _run(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    imported = next((line[9:] for line in proc.stderr.splitlines() if line.startswith("IMPORTED ")), "")
    return elapsed, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--png-only", action="store_true", help="only the 64K x 64K PNG rows")
    args = parser.parse_args()
    png = os.path.join(tempfile.mkdtemp(prefix="attnpat-bench-"), "sw.png")
    py = sys.executable
    commands = [
        ("python -c pass (baseline)", [py, "-c", "pass"]),
        ("python -c 'import torch'", [py, "-c", "import torch"]),
        ("python -c 'import attnpat'", [py, "-c", "import attnpat"]),
        ("attnpat --help", [py, "-c", _PROBE, "--help"]),
        ("attnpat --version", [py, "-c", _PROBE, "--version"]),
        ("attnpat list", [py, "-c", _PROBE, "list"]),
        ("attnpat check causal", [py, "-c", _PROBE, "check", "causal"]),
        ("attnpat check (library)", [py, "-c", _PROBE, "check"]),
        ("attnpat show causal", [py, "-c", _PROBE, "show", "causal"]),
        ("attnpat explain sliding_window 4K", [py, "-c", _PROBE, "explain", "sliding_window", "--q-len", "4096"]),
        ("attnpat show sliding_window 64K", [py, "-c", _PROBE, "show", "sliding_window", "--q-len", "65536"]),
        ("attnpat show sliding_window 64K --png", [py, "-c", _PROBE, "show", "sliding_window", "--q-len",
                                                   "65536", "--png", png]),
    ]
    if args.png_only:
        commands = [commands[0], *commands[-2:]]
    print(f"python {sys.version.split()[0]}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '(unset)')}, "
          f"{args.repeat} runs each, wall seconds")
    print(f"{'command':<42} {'median':>7} {'best':>7} {'+base':>7}  imports")
    base = None
    for label, argv in commands:
        times, imported = [], ""
        for _ in range(args.repeat):
            t, imported = _run(argv)
            times.append(t)
        median = statistics.median(times)
        base = median if base is None else base
        print(f"{label:<42} {median:7.2f} {min(times):7.2f} {median - base:7.2f}  {imported or '-'}")


if __name__ == "__main__":
    main()
