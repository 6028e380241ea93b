"""attnpat demo: check the pattern library and draw every library pattern in the terminal.

What it shows, using only the command line (`attnpat check` / `attnpat show`, called in-process):

1. `attnpat check` parses and checks every file of the standard library (patterns/*.attn).
2. Every library pattern drawn on 24 queries x 24 keys, with small parameter values chosen so that the
   structure is visible (window=6, chunk=6, ...), and runtime inputs supplied on the command line for the
   patterns that need them (document ids for the document patterns, global flags, prefix lengths).
   Rows are queries (labelled with their absolute position q), columns are keys k.
3. Decoding with a KV cache: 4 queries against 24 keys, the queries aligned bottom-right (row i is at
   position q = i + 20), as FlashAttention and xformers do.
4. A long sequence (4096 x 4096) drawn downsampled: each character stands for a tile of 128 queries x
   64 keys that is fully allowed, partly allowed or empty.

Patterns added to the library later are drawn too, with their defaults (large integer defaults are
shrunk to 4 when the pattern's `require` clauses allow it). Runs in a few seconds on a CPU and exits 0
when the library checks.
"""

from __future__ import annotations

import shlex
import sys

import attnpat
from attnpat.cli import main, summary
from attnpat.library import resolve_library

N = 24
DOCS = "0x7,1x10,2x7"   # three documents: keys 0-6, 7-16, 17-23

# Library pattern -> extra command-line arguments for a 24 x 24 drawing.
SHOW = {
    "bigbird": ["--set", "block=3", "--set", "window_blocks=3", "--set", "global_blocks=1",
                "--set", "random_blocks=1", "--set", "key_blocks=8", "--head", "1"],
    "causal": [],
    "chunked_causal": ["--set", "chunk=6"],
    "dilated": ["--set", "window=4", "--set", "dilation=3"],
    "dilated_local": ["--set", "radius=2", "--set", "dilation=3"],
    "document": ["--input", f"doc={DOCS}"],
    "document_full": ["--input", f"doc={DOCS}"],
    "document_sliding_window": ["--set", "window=4", "--input", f"doc={DOCS}"],
    "full": [],
    "local": ["--set", "radius=3"],
    "longformer": ["--set", "window=4", "--set", "globals={0, 12}"],
    "longformer_flags": ["--set", "window=4", "--input", "is_global=1,0x11,1,0x11"],
    "per_head": ["--set", "windows=[2, 4, 8, 16]", "--head", "2"],
    "prefix_lm": ["--set", "prefix=8"],
    "prefix_lm_dynamic": ["--input", "prefix_len=8x24"],
    "sliding_window": ["--set", "window=6"],
    "streaming_llm": ["--set", "sinks=2", "--set", "window=6"],
}

EXTRA = [
    ("decoding with a KV cache: 4 new queries, 24 keys (bottom-right aligned)",
     ["show", "sliding_window", "--set", "window=6", "--q-len", "4", "--kv-len", str(N)]),
    ("streaming_llm while decoding: the sinks stay visible to the last queries",
     ["show", "streaming_llm", "--set", "sinks=2", "--set", "window=6", "--q-len", "4", "--kv-len", str(N)]),
    ("a long sequence, downsampled into tiles of 128 queries x 64 keys",
     ["show", "streaming_llm", "--set", "sinks=64", "--set", "window=512", "--q-len", "4096",
      "--width", "64", "--height", "32"]),
]


def generic_args(name: str) -> list[str]:
    """Arguments for a library pattern the table above does not know: small ints, made-up inputs."""
    args: list[str] = []
    try:
        pattern = attnpat.load(name)
    except attnpat.PatternError:
        return args
    for key, value in pattern.params.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 12:
            try:
                attnpat.load(name, **{key: 4})
            except attnpat.PatternError:
                continue
            args += ["--set", f"{key}=4"]
    for key, axis in pattern.inputs.items():
        args += ["--input", f"{key}={DOCS}" if axis == "k" else f"{key}=0x12,1x12"]
    return args


def run(argv: list[str]) -> int:
    print(f"$ attnpat {shlex.join(argv)}", flush=True)
    status = main(argv)
    sys.stderr.flush()
    print(flush=True)
    return status


def main_demo() -> int:
    print("== 1. check the library ==\n")
    check_status = run(["check"])

    print(f"== 2. every library pattern on {N} queries x {N} keys ==\n")
    failures = []
    for name in attnpat.library_names():
        found = resolve_library(name)
        if found is not None:
            print(f"-- {name}: {summary(found[1])}")
        args = SHOW.get(name)
        if args is None:
            args = generic_args(name)
        if run(["show", name, "--q-len", str(N), *args]) != 0:
            failures.append(name)

    print("== 3. fewer queries than keys, and long sequences ==\n")
    for title, argv in EXTRA:
        print(f"-- {title}")
        if run(argv) != 0:
            failures.append(" ".join(argv))

    if failures:
        print(f"could not draw: {', '.join(failures)}", file=sys.stderr)
    return 1 if check_status or failures else 0


if __name__ == "__main__":
    sys.exit(main_demo())
