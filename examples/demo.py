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
5. Every library pattern compiled to its Triton kernel (band or table plan), cached, and run on small
   tensors (fp16 and bf16, GQA with 4 query heads on 2 key/value heads) wherever attnpat runs kernels
   (`attnpat.kernel_device()`): compiled on the GPU when there is one, under Triton's interpreter on the CPU
   otherwise; the output and log-sum-exp are compared with the float64 dense reference (on the CPU) and the
   largest errors printed.

Patterns added to the library later are drawn too, with their defaults (large integer defaults are
shrunk to 4 when the pattern's `require` clauses allow it). Runs in about half a minute on a CPU and
exits 0 when the library checks and every kernel matches the reference.
"""

from __future__ import annotations

import shlex
import sys
import warnings

import torch

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
    "prefix_lm_lengths": ["--input", "prefix_len=8"],
    "causal_padded": ["--input", "seq_len=17"],
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

    print(f"== 4. every library kernel, generated, cached and run on small tensors {where_kernels_run()} ==\n")
    kernel_failures = run_kernels()

    if failures:
        print(f"could not draw: {', '.join(failures)}", file=sys.stderr)
    return 1 if check_status or failures or kernel_failures else 0


# Small parameter values, so that the masks have structure at 96 x 96.
KERNEL_PARAMS = {
    "sliding_window": dict(window=20), "local": dict(radius=10), "longformer": dict(window=16, globals={0, 50}),
    "longformer_flags": dict(window=16), "dilated": dict(window=12, dilation=3),
    "dilated_local": dict(radius=6, dilation=2), "streaming_llm": dict(sinks=4, window=16),
    "prefix_lm": dict(prefix=30), "chunked_causal": dict(chunk=32), "document_sliding_window": dict(window=20),
    "per_head": dict(windows=[8, 16, 32, 64]), "bigbird": dict(block=16, random_blocks=2, key_blocks=8),
}


def where_kernels_run() -> str:
    """Where step 4 runs its kernels, in words."""
    if attnpat.kernel_device().type == "cuda":
        return f"on the GPU ({torch.cuda.get_device_name()}, compiled)"
    return "on the CPU (Triton's interpreter)"


def kernel_inputs(pattern, n: int, heads: int = 4) -> dict:
    """Runtime inputs for the kernels: three documents, two global tokens, a prefix (or sequence length) of 30,
    and per-head floats for score terms (ALiBi-like slopes, sink logits)."""
    out = {name: torch.tensor([2.0 ** -(i + 1) for i in range(heads)]) for name in pattern.float_inputs}
    for name, axis in pattern.inputs.items():
        if axis == "b":   # one value per sequence, shared by the batch: a prefix or sequence length of 30
            out[name] = torch.tensor([30])
        elif name == "is_global":
            out[name] = torch.tensor([1 if i in (0, 50) else 0 for i in range(n)])
        elif name == "prefix_len":
            out[name] = torch.full((n,), 30)
        else:
            out[name] = torch.tensor([i * 3 // n for i in range(n)])
    return out


def run_kernels() -> list[str]:
    """Compile each library pattern, run it on the kernel device (compiled on a GPU, else Triton's interpreter
    on the CPU) and compare with the float64 oracle, computed on the CPU."""
    warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")
    dev = attnpat.kernel_device()
    print(f"{'pattern':26s} {'plan':5s} {'dtype':9s} {'max |out - ref|':>16s} {'max |lse - ref|':>16s}  key")
    failures = []
    torch.manual_seed(0)
    b, heads, kv_heads, n, d = 1, 4, 2, 96, 32
    for name in attnpat.library_names():
        pattern = attnpat.load(name, **KERNEL_PARAMS.get(name, {}))
        kernel = attnpat.compile(pattern, block_m=32, block_n=32)
        inputs = kernel_inputs(pattern, n, heads)                         # on the CPU, for the reference
        dev_inputs = {key: t.to(dev) for key, t in inputs.items()}    # for the kernel
        for dtype in (torch.float16, torch.bfloat16):
            q = torch.randn(b, heads, n, d).to(dtype)
            k = torch.randn(b, kv_heads, n, d).to(dtype)
            v = torch.randn(b, kv_heads, n, d).to(dtype)
            out, lse = kernel(q.to(dev), k.to(dev), v.to(dev), return_lse=True, **dev_inputs)
            out, lse = out.cpu(), lse.cpu()
            ref, ref_lse = attnpat.reference_attention(q, k, v, pattern, return_lse=True, **inputs)
            err = (out.double() - ref).abs().max().item()
            finite = torch.isfinite(ref_lse)
            lse_err = (lse.double()[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
            ok = err < (5e-3 if dtype == torch.float16 else 3e-2) and torch.equal(torch.isfinite(lse), finite)
            if not ok:
                failures.append(f"{name} {dtype}")
            print(f"{name:26s} {kernel.plan.mode:5s} {str(dtype)[6:]:9s} {err:16.2e} {lse_err:16.2e}  "
                  f"{kernel.key}{'' if ok else '  <-- too large'}", flush=True)
    print()
    if failures:
        print(f"kernel errors too large: {', '.join(failures)}", file=sys.stderr)
    return failures


if __name__ == "__main__":
    sys.exit(main_demo())
