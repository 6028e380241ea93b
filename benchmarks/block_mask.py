"""Block-mask construction: attnpat's closed-form lowering against PyTorch FlexAttention's `create_block_mask`.

    python benchmarks/block_mask.py                       # 16K, 64K, 128K + the 1M-token section
    python benchmarks/block_mask.py --quick               # 2K and 4K, two patterns, Flex eager (< 60 s)
    python benchmarks/block_mask.py --sizes 16384,65536 --patterns sliding_window,document
    python benchmarks/block_mask.py --million-only        # only the 1M-token section (attnpat alone)

What is timed
-------------
* attnpat: ``Pattern.block_mask(N, N, block_q=128, block_k=128, heads=H, **inputs)`` -- one warm-up call,
  then the best of a few calls. The ``Pattern`` object is loaded (parsed, checked, simplified) outside the
  timing; the lowering works from the canonical IR and never looks at the N^2 points.
* FlexAttention: ``torch.compile(create_block_mask)(mask_mod, B=1, H=H, Q_LEN=N, KV_LEN=N, device="cpu",
  BLOCK_SIZE=128)`` with a hand-written ``mask_mod`` equivalent to each library pattern. It evaluates the
  mask_mod at all B*H*N^2 points. Compiled mode is warmed up at every size (a call that compiles, as
  counted by dynamo's counters, is never a timed one), and the dynamo caches are reset between patterns so
  that no pattern runs into the recompile limit (which would silently fall back to eager). Eager mode
  (``--flex-mode eager``, the default of ``--quick``, and the fallback when compilation fails) materialises
  the dense [B, H, N, N] mask and its int64 temporaries, ~8 bytes per point: sizes whose estimate exceeds the
  free memory are reported as OOM without running them, and MemoryError/RuntimeError are caught.

How memory is measured
----------------------
* attnpat ("tracemalloc"): peak of ``tracemalloc`` during one separate, untimed call. numpy reports every
  array buffer to tracemalloc, so this is the peak of everything the lowering allocates (arrays and Python
  objects), temporaries included.
* Flex ("RSS peak"): torch's CPU allocations are invisible to tracemalloc, so we reset the kernel's RSS
  high-water mark (``echo 5 > /proc/self/clear_refs``) right before the timed call -- after
  ``malloc_trim(0)`` so freed heap pages go back to the OS -- and report ``VmHWM`` after the call minus
  ``VmRSS`` before it. This sees all allocations (torch, numpy, the compiled kernel's buffers); memory that an
  allocator reuses from pages it still holds is not counted, so it is a lower bound. Where clear_refs is not
  writable, the column says n/a.

Tiles
-----
Flex's BlockMask keeps PARTIAL tiles in ``kv_num_blocks``/``kv_indices`` and FULL tiles in
``full_kv_num_blocks``/``full_kv_indices``; it is exact (it looked at every point). We compare tile by tile:
attnpat must never have more non-empty tiles than Flex (ours partial+full <= flex partial+full), must keep
every tile Flex keeps, and may call a tile FULL only when Flex does. Any violation prints a ``MISMATCH``
line. "loose" counts tiles that Flex proves FULL and attnpat keeps as PARTIAL (sound, only slower).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import sys
import time
import tracemalloc

import numpy as np
import torch

import attnpat
from attnpat.compiler.hashing import hash32

BLOCK = 128
MIB = 1 << 20
ONE_MILLION = 1 << 20

# --------------------------------------------------------------------------------------------------
# Patterns: attnpat parameters, heads, runtime inputs and the equivalent FlexAttention mask_mod.
# --------------------------------------------------------------------------------------------------


def doc_ids(n: int, seed: int = 0) -> torch.Tensor:
    """Packed documents: lengths drawn uniformly from [256, 4096) (mean ~2K tokens), ids 0, 1, 2, ..."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(256, 4096, (n // 256 + 2,), generator=g)
    return torch.repeat_interleave(torch.arange(len(lens)), lens)[:n].to(torch.int64)


class Case:
    """One benchmarked pattern: how to build it for attnpat and for FlexAttention at length n."""

    def __init__(self, key, library_name, params, heads=1, inputs=None, flex=None, note=""):
        self.key = key
        self.library_name = library_name
        self.params = params            # dict, or callable n -> dict
        self.heads = heads
        self.inputs = inputs            # callable n -> dict of runtime inputs
        self.flex = flex                # callable (n, inputs) -> mask_mod, or None (not expressible)
        self.note = note

    def pattern(self, n):
        params = self.params(n) if callable(self.params) else self.params
        return attnpat.load(self.library_name, **params)

    def make_inputs(self, n):
        return self.inputs(n) if self.inputs else {}

    def label(self, n=None):
        params = self.params(n if n is not None else 16384) if callable(self.params) else self.params
        shown = []
        for k, v in params.items():
            if isinstance(v, (set, frozenset)):
                v = "{" + ",".join(map(str, sorted(v))) + "}"
            elif isinstance(v, (list, tuple)):
                v = "[" + ",".join(map(str, v)) + "]"
            elif callable(self.params) and k == "key_blocks":
                v = "N/128"
            shown.append(f"{k}={v}")
        return f"{self.library_name}({', '.join(shown)})"


def _sliding(w):
    return lambda n, inp: (lambda b, h, q, k: (q >= k) & (q - k < w))


def _local(r):
    return lambda n, inp: (lambda b, h, q, k: (q - k).abs() <= r)


def _causal():
    return lambda n, inp: (lambda b, h, q, k: q >= k)


def _full():
    return lambda n, inp: (lambda b, h, q, k: q >= 0)


def _streaming(sinks, w):
    return lambda n, inp: (lambda b, h, q, k: (q >= k) & ((k < sinks) | (q - k < w)))


def _prefix(prefix):
    return lambda n, inp: (lambda b, h, q, k: (q >= k) | (k < prefix))


def _prefix_dynamic():
    def build(n, inp):
        plen = inp["prefix_len"]
        return lambda b, h, q, k: (q >= k) | (k < plen[q])
    return build


def _chunked(chunk):
    return lambda n, inp: (lambda b, h, q, k: (q >= k) & (q // chunk == k // chunk))


def _dilated(window, dilation):
    return lambda n, inp: (lambda b, h, q, k: (q >= k) & (q - k < window * dilation) & ((q - k) % dilation == 0))


def _dilated_local(radius, dilation):
    return lambda n, inp: (lambda b, h, q, k: ((q - k).abs() <= radius * dilation) & ((q - k) % dilation == 0))


def _longformer(window, globals_):
    def build(n, inp):
        flags = torch.zeros(n, dtype=torch.bool)
        flags[[g for g in sorted(globals_) if 0 <= g < n]] = True

        def mask_mod(b, h, q, k):
            return ((q - k).abs() <= window // 2) | flags[q] | flags[k]
        return mask_mod
    return build


def _longformer_flags(window):
    def build(n, inp):
        flags = inp["is_global"] != 0
        return lambda b, h, q, k: ((q - k).abs() <= window // 2) | flags[q] | flags[k]
    return build


def _document(causal=True, window=None):
    def build(n, inp):
        doc = inp["doc"]

        def mask_mod(b, h, q, k):
            m = doc[q] == doc[k]
            if causal:
                m = m & (q >= k)
            if window is not None:
                m = m & (q - k < window)
            return m
        return mask_mod
    return build


def _per_head(windows):
    def build(n, inp):
        table = torch.tensor(windows, dtype=torch.int64)
        return lambda b, h, q, k: (q >= k) & (q - k < table[h % len(windows)])
    return build


def _bigbird(block, window_blocks, global_blocks, random_blocks, seed):
    def build(n, inp):
        key_blocks = max(n // block, 1)

        def mask_mod(b, h, q, k):
            qb, kb = q // block, k // block
            window = (qb - kb).abs() <= window_blocks // 2
            glob = (qb < global_blocks) | (kb < global_blocks)
            # attnpat's `hash` builtin (compiler/hashing.py) on int64 tensors: every product is reduced to
            # 32 bits at once, so int64 wrap-around never changes the result.
            rand = hash32(seed, h.to(torch.int64), qb.to(torch.int64), kb.to(torch.int64)) % key_blocks < random_blocks
            return window | glob | rand
        return mask_mod
    return build


LONGFORMER_GLOBALS = frozenset({0, 1000})

CASES = [
    Case("sliding_window", "sliding_window", dict(window=256), flex=_sliding(256)),
    Case("local", "local", dict(radius=256), flex=_local(256)),
    Case("causal", "causal", {}, flex=_causal()),
    Case("streaming_llm", "streaming_llm", dict(sinks=4, window=1020), flex=_streaming(4, 1020)),
    Case("prefix_lm", "prefix_lm", dict(prefix=1000), flex=_prefix(1000)),
    Case("chunked_causal", "chunked_causal", dict(chunk=8192), flex=_chunked(8192)),
    Case("dilated", "dilated", dict(window=1024, dilation=2), flex=_dilated(1024, 2)),
    Case("longformer", "longformer", dict(window=512, globals=LONGFORMER_GLOBALS),
         flex=_longformer(512, LONGFORMER_GLOBALS)),
    Case("document", "document", {}, inputs=lambda n: {"doc": doc_ids(n)}, flex=_document()),
    Case("per_head", "per_head", dict(windows=[128, 256, 512, 1024]), heads=4,
         flex=_per_head([128, 256, 512, 1024])),
    Case("bigbird", "bigbird",
         lambda n: dict(block=128, window_blocks=3, global_blocks=2, random_blocks=3,
                        key_blocks=max(n // 128, 1), seed=0),
         flex=_bigbird(128, 3, 2, 3, 0),
         note="hash-based random blocks: every tile may hold one, so every tile is a candidate; the "
              "conditions read q and k only through q // 128 and k // 128, so attnpat evaluates them once "
              "per 128 x 128 cell (one per tile here: exact, (N/128)^2 evaluations per head, no point-wise "
              "work); Flex's mask_mod re-implements attnpat's hash by hand (compiler/hashing.py)"),
    # Not in the default set (pass --patterns ... or --all):
    Case("full", "full", {}, flex=_full()),
    Case("document_full", "document_full", {}, inputs=lambda n: {"doc": doc_ids(n)},
         flex=_document(causal=False)),
    Case("document_sliding_window", "document_sliding_window", dict(window=1024),
         inputs=lambda n: {"doc": doc_ids(n)}, flex=_document(window=1024)),
    Case("dilated_local", "dilated_local", dict(radius=256, dilation=2), flex=_dilated_local(256, 2)),
    Case("longformer_flags", "longformer_flags", dict(window=512),
         inputs=lambda n: {"is_global": (torch.arange(n) % 4096 == 0).to(torch.int64)},
         flex=_longformer_flags(512)),
    Case("prefix_lm_dynamic", "prefix_lm_dynamic", {},
         inputs=lambda n: {"prefix_len": torch.full((n,), 1000, dtype=torch.int64)}, flex=_prefix_dynamic()),
]
BY_KEY = {c.key: c for c in CASES}
DEFAULT_PATTERNS = ["sliding_window", "local", "causal", "streaming_llm", "prefix_lm", "chunked_causal",
                    "dilated", "longformer", "document", "per_head", "bigbird"]
QUICK_PATTERNS = ["sliding_window", "document"]

# 1M-token section: attnpat alone.
MILLION_CASES = [
    Case("sliding_window W=4096", "sliding_window", dict(window=4096)),
    Case("sliding_window W=256", "sliding_window", dict(window=256)),
    Case("local", "local", dict(radius=256)),
    Case("streaming_llm", "streaming_llm", dict(sinks=4, window=1020)),
    Case("chunked_causal", "chunked_causal", dict(chunk=8192)),
    Case("longformer", "longformer", dict(window=512, globals=LONGFORMER_GLOBALS)),
    Case("document", "document", {}, inputs=lambda n: {"doc": doc_ids(n)}),
    # window 1024: shorter than most documents (with 4096 it would never bind and equal `document`)
    Case("document_sliding_window", "document_sliding_window", dict(window=1024),
         inputs=lambda n: {"doc": doc_ids(n)}),
    Case("per_head", "per_head", dict(windows=[128, 256, 512, 1024]), heads=4),
    Case("dilated", "dilated", dict(window=1024, dilation=2)),
    # dense-ish: 33.5M non-empty tiles, so seconds and GBs -- memory follows the tiles, not N^2 points
    Case("causal", "causal", {}),
]

# --------------------------------------------------------------------------------------------------
# Memory helpers
# --------------------------------------------------------------------------------------------------

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None


def _proc_status() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class RssPeak:
    """Peak RSS growth over a block of code: resets the kernel's high-water mark, reads VmHWM after."""

    def __init__(self):
        self.delta = None

    def __enter__(self):
        gc.collect()
        if _LIBC is not None:
            try:
                _LIBC.malloc_trim(0)
            except AttributeError:
                pass
        self.ok = True
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.ok = False
        self.before = _proc_status().get("VmRSS")
        return self

    def __exit__(self, *exc):
        after = _proc_status().get("VmHWM")
        if self.ok and self.before is not None and after is not None:
            self.delta = max(after - self.before, 0)
        return False


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def blockmask_bytes(bm) -> int:
    return sum(getattr(bm, name).nbytes for name in (
        "variant", "partial_ptr", "partial_idx", "full_ptr", "full_idx",
        "t_partial_ptr", "t_partial_idx", "t_full_ptr", "t_full_idx"))


def flex_blockmask_bytes(fbm) -> int:
    total = 0
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):
        t = getattr(fbm, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------------
# attnpat side
# --------------------------------------------------------------------------------------------------


def run_ours(case: Case, n: int, repeats: int):
    """(best seconds, BlockMask, tracemalloc peak bytes)."""
    p = case.pattern(n)
    inputs = case.make_inputs(n)
    kw = dict(block_q=BLOCK, block_k=BLOCK, heads=case.heads, **inputs)
    p.block_mask(n, n, **kw)                                    # warm-up (simplifier caches, imports)
    best, bm = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        bm = p.block_mask(n, n, **kw)
        best = min(best, time.perf_counter() - t0)
    del bm
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    bm = p.block_mask(n, n, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, bm, peak


# --------------------------------------------------------------------------------------------------
# FlexAttention side
# --------------------------------------------------------------------------------------------------


class Flex:
    """create_block_mask, compiled (default) or eager, with warm-up and recompile detection."""

    def __init__(self, mode: str):
        from torch.nn.attention.flex_attention import create_block_mask
        self.create_block_mask = create_block_mask
        self.mode = mode
        self.notes: list[str] = []
        self.compiled = torch.compile(create_block_mask) if mode == "compile" else None

    def reset(self):
        """Between patterns: drop dynamo's caches so no pattern runs into the recompile limit."""
        if self.mode == "compile":
            torch._dynamo.reset()

    @staticmethod
    def _compiles() -> int:
        from torch._dynamo.utils import counters
        return sum(counters["stats"].values()) + sum(counters["frames"].values())

    def _call(self, fn, mask_mod, n, heads):
        return fn(mask_mod, B=1, H=heads, Q_LEN=n, KV_LEN=n, device="cpu", BLOCK_SIZE=BLOCK)

    def run(self, mask_mod, n: int, heads: int, repeats: int):
        """(best seconds, BlockMask, RSS peak delta, status); status is '' or why there is no result."""
        if self.mode == "compile":
            try:
                return self._run_compiled(mask_mod, n, heads, repeats)
            except Exception as e:  # compilation failed on this machine: eager from now on
                self.notes.append(f"torch.compile(create_block_mask) failed ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:120] if str(e) else ''}); Flex timings below are EAGER")
                self.mode = "eager"
                torch._dynamo.reset()
        return self._run_eager(mask_mod, n, heads, repeats)

    def _run_compiled(self, mask_mod, n, heads, repeats):
        # Warm-up at this size; repeat while a call still compiles (dynamic-shape recompiles etc.).
        for _ in range(4):
            before = self._compiles()
            self._call(self.compiled, mask_mod, n, heads)
            if self._compiles() == before:
                break
        return self._timed(self.compiled, mask_mod, n, heads, repeats, check_compiles=True)

    def _run_eager(self, mask_mod, n, heads, repeats):
        need = 8 * heads * n * n                                 # int64 temporaries over the dense grid
        avail = mem_available()
        if avail is not None and need > 0.7 * avail:
            return None, None, None, f"OOM (skipped: eager needs ~{need / 1e9:.0f} GB, {avail / 1e9:.0f} GB free)"
        try:
            if n * n * heads >= 1 << 24:
                repeats = 1
            self._call(self.create_block_mask, mask_mod, n, heads)   # warm-up
            return self._timed(self.create_block_mask, mask_mod, n, heads, repeats)
        except MemoryError:
            return None, None, None, "OOM"
        except RuntimeError as e:
            msg = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            return None, None, None, ("OOM" if "memory" in msg.lower() or "alloc" in msg.lower()
                                      else f"failed: {msg}")

    def _timed(self, fn, mask_mod, n, heads, repeats, check_compiles=False):
        best, fbm, peak = float("inf"), None, None
        timed = 0
        while timed < repeats:
            fbm = None
            before = self._compiles() if check_compiles else 0
            with RssPeak() as rss:
                t0 = time.perf_counter()
                fbm = fn(mask_mod, B=1, H=heads, Q_LEN=n, KV_LEN=n, device="cpu", BLOCK_SIZE=BLOCK)
                dt = time.perf_counter() - t0
            if check_compiles and self._compiles() != before:   # it compiled: not a warm call
                continue
            timed += 1
            if dt < best:
                best = dt
            if rss.delta is not None:
                peak = rss.delta if peak is None else min(peak, rss.delta)
        return best, fbm, peak, ""


def flex_dense(fbm, heads: int) -> np.ndarray:
    """Flex's tiles as uint8 [H, QB, KB]: 1 partial, 2 full (batch 0)."""
    def grid(num, idx):
        num, idx = num[0].long(), idx[0].long()               # [H, QB], [H, QB, KB]
        kb = idx.shape[-1]
        valid = (torch.arange(kb) < num[..., None]).long()
        out = torch.zeros(idx.shape, dtype=torch.long)
        out.scatter_add_(-1, idx, valid)
        return out > 0
    partial = grid(fbm.kv_num_blocks, fbm.kv_indices)
    full = grid(fbm.full_kv_num_blocks, fbm.full_kv_indices) if fbm.full_kv_num_blocks is not None \
        else torch.zeros_like(partial)
    d = partial.to(torch.uint8) + 2 * full.to(torch.uint8)
    return d.numpy()


def compare(bm, fbm, heads: int):
    """(flex partial, flex full, check text, mismatch?)"""
    fp = int(fbm.kv_num_blocks.sum())
    ff = int(fbm.full_kv_num_blocks.sum()) if fbm.full_kv_num_blocks is not None else 0
    c = bm.counts()
    ours_nonempty, flex_nonempty = c["PARTIAL"] + c["FULL"], fp + ff
    theirs = flex_dense(fbm, heads)
    ours = bm.to_dense(batch=0)
    if ours.ndim == 2:
        ours = ours[None]
    ours = np.broadcast_to(ours, theirs.shape) if ours.shape != theirs.shape else ours
    missing = int(((theirs > 0) & (ours == 0)).sum())     # a tile with allowed pairs that ours skips
    bad_full = int(((ours == 2) & (theirs != 2)).sum())    # ours FULL where Flex sees masked pairs
    extra = int(((ours > 0) & (theirs == 0)).sum())        # ours keeps an empty tile
    loose = int(((ours == 1) & (theirs == 2)).sum())       # ours PARTIAL where Flex proves FULL
    problems = []
    if ours_nonempty > flex_nonempty:
        problems.append(f"ours non-empty {ours_nonempty} > flex non-empty {flex_nonempty}")
    if missing:
        problems.append(f"{missing} tiles non-empty in Flex but EMPTY in ours (unsound)")
    if bad_full:
        problems.append(f"{bad_full} tiles FULL in ours but not in Flex (unsound)")
    if extra and ours_nonempty <= flex_nonempty:
        problems.append(f"{extra} tiles non-empty in ours but EMPTY in Flex")
    if problems:
        return fp, ff, "MISMATCH", problems
    if loose:
        return fp, ff, f"ok, {loose} loose", []
    return fp, ff, "exact", []


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def fmt_n(n: int) -> str:
    if n % ONE_MILLION == 0:
        return f"{n // ONE_MILLION}M"
    if n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def fmt_ms(s) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_kib(b) -> str:
    return f"{b / 1024:,.1f}" if b < 100 * 1024 else f"{b / 1024:,.0f}"


def fmt_mib(b) -> str:
    if b is None:
        return "n/a"
    return f"{b / MIB:.2f}" if b < 10 * MIB else f"{b / MIB:.0f}"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w) if i > 0 else str(v).ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths)))
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def print_header(args, flex_mode):
    print("=" * 100)
    print("attnpat block masks (closed form) vs torch FlexAttention create_block_mask (all N^2 points)")
    print(f"attnpat {attnpat.__version__} | torch {torch.__version__} | numpy {np.__version__} | "
          f"python {platform.python_version()} | {platform.machine()}")
    print(f"CPU count: {os.cpu_count()} (torch threads: {torch.get_num_threads()}) | "
          f"block size: {BLOCK}x{BLOCK} (attnpat block_q=block_k={BLOCK}, Flex BLOCK_SIZE={BLOCK}) | "
          f"B=1, q_len = kv_len = N")
    mode = {"compile": "torch.compile(create_block_mask), warm (timed calls never compile)",
            "eager": "EAGER create_block_mask (dense N^2 mask in memory)"}[flex_mode]
    print(f"Flex mode: {mode}")
    print("ours ms: best of repeats after a warm-up | ours MiB: tracemalloc peak of one call (numpy + Python)")
    print("flex MiB: RSS high-water growth during the timed call (VmHWM reset via /proc/self/clear_refs)")
    print("tiles F/P: FULL/PARTIAL summed over heads (Flex: full_kv_num_blocks / kv_num_blocks sums)")
    print(f"load average at start: {_loadavg()} (the machine may be shared; timings are wall-clock)")
    print("=" * 100)


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help="comma-separated token counts (default 16384,65536,131072; "
                                                  "--quick: 2048,4096)")
    ap.add_argument("--quick", action="store_true", help="small sizes, two patterns, no 1M section, Flex eager")
    ap.add_argument("--patterns", default=None, help="comma-separated: " + ",".join(BY_KEY))
    ap.add_argument("--all", action="store_true", help="every pattern with a Flex mask_mod")
    ap.add_argument("--million", action="store_true", help="run the 1M-token section (default on unless --quick)")
    ap.add_argument("--no-million", action="store_true", help="skip the 1M-token section")
    ap.add_argument("--million-only", action="store_true", help="only the 1M-token section")
    ap.add_argument("--flex-mode", choices=["compile", "eager"], default=None,
                    help="default: compile (eager with --quick)")
    ap.add_argument("--repeats", type=int, default=5, help="attnpat repeats (best of)")
    ap.add_argument("--flex-repeats", type=int, default=3, help="Flex repeats at N <= 16K (1 above)")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([2048, 4096] if args.quick else [16384, 65536, 131072])
    if args.patterns:
        keys = [k.strip() for k in args.patterns.split(",") if k.strip()]
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            ap.error(f"unknown pattern(s) {unknown}; choose from {list(BY_KEY)}")
    elif args.all:
        keys = list(BY_KEY)
    else:
        keys = QUICK_PATTERNS if args.quick else DEFAULT_PATTERNS
    flex_mode = args.flex_mode or ("eager" if args.quick else "compile")
    run_million = (args.million or not args.quick) and not args.no_million
    if args.million_only:
        run_million, keys = True, []

    print_header(args, flex_mode)
    t_start = time.perf_counter()
    flex = Flex(flex_mode) if keys else None
    rows, mismatches, headline = [], [], {}
    notes = []
    for key in keys:
        case = BY_KEY[key]
        if case.flex is None:
            notes.append(f"{key}: no FlexAttention mask_mod ({case.note}); attnpat only")
        elif case.note:
            notes.append(f"{key}: {case.note}")
        flex.reset()
        for n in sizes:
            try:
                t_ours, bm, ours_peak = run_ours(case, n, args.repeats)
            except Exception as e:
                msg = f"{case.label(n)} N={n}: attnpat FAILED: {type(e).__name__}: {e}"
                print("ERROR", msg, flush=True)
                mismatches.append(msg)
                rows.append([key, case.heads, fmt_n(n), "FAILED", "-", "-", "-", "-", "-", "-", "-", "FAILED"])
                continue
            c = bm.counts()
            ours_tiles = f"{c['FULL']}/{c['PARTIAL']}"
            if case.flex is None:
                rows.append([key, case.heads, fmt_n(n), fmt_ms(t_ours), "-", "-", fmt_mib(ours_peak), "-",
                             ours_tiles, "-", fmt_kib(blockmask_bytes(bm)), "-", "no flex"])
                continue
            inputs = case.make_inputs(n)
            mask_mod = case.flex(n, inputs)
            repeats = args.flex_repeats if n <= 16384 else 1
            try:
                t_flex, fbm, flex_peak, status = flex.run(mask_mod, n, case.heads, repeats)
            except Exception as e:   # anything else: report, keep going
                t_flex, fbm, flex_peak, status = None, None, None, f"failed: {type(e).__name__}: {str(e)[:60]}"
            if fbm is None:
                rows.append([key, case.heads, fmt_n(n), fmt_ms(t_ours), status, "-", fmt_mib(ours_peak), "-",
                             ours_tiles, "-", fmt_kib(blockmask_bytes(bm)), "-", "-"])
                print(f"  {key:<16} N={fmt_n(n):>5}: ours {fmt_ms(t_ours)} ms, flex {status}", flush=True)
                continue
            fp, ff, check, problems = compare(bm, fbm, case.heads)
            ratio = t_flex / t_ours
            if key == "sliding_window":
                headline[n] = (t_ours, t_flex, ratio)
            for prob in problems:
                msg = f"MISMATCH {case.label(n)} N={n} heads={case.heads}: {prob}"
                print(msg, flush=True)
                mismatches.append(msg)
            rows.append([key, case.heads, fmt_n(n), fmt_ms(t_ours), fmt_ms(t_flex), f"{ratio:,.0f}x",
                         fmt_mib(ours_peak), fmt_mib(flex_peak), ours_tiles, f"{ff}/{fp}",
                         fmt_kib(blockmask_bytes(bm)), fmt_kib(flex_blockmask_bytes(fbm)), check])
            print(f"  {key:<16} N={fmt_n(n):>5}: ours {fmt_ms(t_ours)} ms, flex {fmt_ms(t_flex)} ms "
                  f"({ratio:,.0f}x), tiles ours {ours_tiles} flex {ff}/{fp}: {check}", flush=True)
            del fbm, bm
            gc.collect()

    if rows:
        print()
        print("Patterns (parameters):")
        for key in keys:
            print(f"  {key:<16} {BY_KEY[key].label()}" + (f"  heads={BY_KEY[key].heads}"
                                                              if BY_KEY[key].heads > 1 else ""))
        print("  document inputs: doc ids of packed documents with lengths uniform in [256, 4096), seed 0")
        print()
        hdr = ["pattern", "H", "N", "ours ms", "flex ms", "speedup", "ours MiB", "flex MiB",
               "ours tiles F/P", "flex tiles F/P", "ours mask KiB", "flex mask KiB", "check"]
        print(table(rows, hdr))
        for note in notes + (flex.notes if flex else []):
            print("note:", note)

    million = {}
    if run_million:
        print()
        print(f"attnpat alone at N = {ONE_MILLION:,} tokens (1M), block {BLOCK}x{BLOCK}, B=1")
        print("mask bytes: every array of the BlockMask (CSR rows for the forward + CSR columns for the "
              "backward); bytes/tile = mask bytes / non-empty tiles")
        n = ONE_MILLION
        qb = kb = n // BLOCK
        mrows = []
        for case in MILLION_CASES:
            try:
                t, bm, peak = run_ours(case, n, max(3, args.repeats // 2))
            except Exception as e:
                msg = f"{case.label(n)} N={n}: attnpat FAILED: {type(e).__name__}: {e}"
                print("ERROR", msg, flush=True)
                mismatches.append(msg)
                continue
            c = bm.counts()
            nonempty = c["FULL"] + c["PARTIAL"]
            nbytes = blockmask_bytes(bm)
            # What Flex's BlockMask layout would hold at this size: kv/q indices (full + partial) as int32
            # [B, H, QB, KB] plus the per-row counts -- computed, not measured.
            flex_layout = case.heads * (4 * qb * kb * 4 + 4 * qb * 4)
            million[case.key] = t
            mrows.append([case.key, case.heads, fmt_ms(t), fmt_mib(peak), f"{c['FULL']}/{c['PARTIAL']}",
                          f"{nonempty:,}", f"{bm.stats.get('candidate_tiles', 0):,}", fmt_mib(nbytes),
                          f"{nbytes / max(nonempty, 1):.1f}", f"{flex_layout / MIB:,.0f}"])
            print(f"  {case.key:<24} {fmt_ms(t)} ms", flush=True)
            del bm
            gc.collect()
        print()
        print(table(mrows, ["pattern (1M tokens)", "H", "ours ms", "peak MiB", "tiles F/P", "non-empty",
                            "candidates", "mask MiB", "bytes/tile", "Flex layout MiB (est.)"]))

    print()
    print(f"total benchmark time: {time.perf_counter() - t_start:.0f} s (load average at end: {_loadavg()})")
    parts = []
    if headline:
        n_big = max(headline)
        t_o, t_f, r = headline[n_big]
        tag = "compiled" if flex and flex.mode == "compile" else "EAGER"
        met = ("MET" if r >= 1000 else "NOT MET") if n_big >= 131072 else "set for 128K, not run"
        parts.append(f"sliding_window(W=256) at {fmt_n(n_big)}: ours {fmt_ms(t_o)} ms vs Flex ({tag}) "
                     f"{fmt_ms(t_f)} ms = {r:,.0f}x (target >= 1000x: {met})")
    for k in ("sliding_window W=4096", "sliding_window W=256"):
        if k in million:
            met = "MET" if million[k] < 0.1 else "NOT MET"
            parts.append(f"1M-token {k}: {fmt_ms(million[k])} ms (target < 100 ms: {met})")
    if mismatches:
        parts.append(f"{len(mismatches)} MISMATCH/ERROR line(s) above")
    else:
        parts.append("no tile mismatches")
    print("SUMMARY: " + " | ".join(parts))
    return 1 if any("FAILED" in m for m in mismatches) else 0


if __name__ == "__main__":
    sys.exit(main())
