"""Stage 7 -- launch: compiled attention kernels callable from PyTorch.

``attnpat.compile(pattern)`` returns a :class:`Kernel`; calling it on [B, H, N, D] tensors runs the
pattern's generated Triton kernel -- compiled on CUDA tensors, under Triton's interpreter on CPU tensors
(a testing aid, announced once with a warning).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
import weakref
from dataclasses import astuple, dataclass

import torch

from ..compiler import pipeline
from ..compiler.codegen import KernelPlan, signature
from ..errors import ArgumentError
from ..compiler.values import format_value
from . import cache
from . import scores as _scores
from .backend import interpreting, target_name
from .blockmask import PreparedMask, check_q_offset, prepare
from .shardmask import ShardMask
from .checks import check_kernel_head_dims, check_qkv, check_scale
from .decode import run as decode_run, should_decode
from .launch import (LOG2E, aot_request as _aot_request, device_arch, dot_precision, input_args, nonfinite_rows,
                     pow2)
from .op import autocast_inputs, check_transforms, input_grads, register_kernel, register_mask, sdpa_keywords

__all__ = ["Kernel", "compile", "attention", "prepared_mask", "KernelConfig", "default_config"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_BLOCK = 512    # tile sides beyond this overflow shared memory on every target (and Triton's block limits)
MAX_STAGES = 8     # software-pipelining depth; deeper only multiplies shared memory
_warned_interpreter = False


def _caller_stacklevel() -> int:
    """The warnings stack level of the first frame outside attnpat and torch (autograd calls us too), so a
    warning points at the user's line, however deep the call came in."""
    import sys
    front, compiler = (sys.modules[name].__file__ for name in ("attnpat", "attnpat.compiler"))
    dirs = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, front, compiler, torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(dirs):
        frame, level = frame.f_back, level + 1
    return level


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Launch parameters of the forward kernel. The defaults (default_config) compile every library kernel
    without spills on sm_80 and sm_90a, with tensor-core MMA in fp16 / bf16 (tests/test_aot.py; fp32 and head
    dim 256 in tests/test_aot_backward.py)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def default_config(head_dim: int, dtype: torch.dtype) -> KernelConfig:
    """The forward launch configuration for a head dimension and dtype."""
    if dtype == torch.float32:
        # IEEE fp32 products on CUDA cores. With 4 warps every fp32 tile spilled (up to ~9 KB of stack), and ptxas
        # is erratic here: these are the largest tiles that compiled spill-free for every library kernel on sm_80
        # and sm_90a at the power-of-two head dims; since PARTIAL tiles flag non-finite v rows (issue 11), 2 stages
        # spilled 8-40 bytes for some library kernels, and a few still spill 8-16 bytes at the padded head dims
        # 48, 96 and 192 (docs/kernels.md lists them).
        if head_dim <= 64:
            return KernelConfig(32, 16, 8, 1)
        if head_dim <= 128:
            return KernelConfig(16, 16, 8, 1)
        return KernelConfig(16, 32, 8, 1)
    if head_dim <= 64:
        return KernelConfig(128, 64, 8, 3)
    if head_dim <= 128:
        return KernelConfig(128, 64, 8, 2)
    return KernelConfig(64, 16, 8, 2)   # 4 warps spilled at head dim 256, and 64 x 32 since the non-finite-v flag


class Kernel:
    """A pattern's attention kernel.

    Call it as ``kernel(q, k, v, *, scale=None, return_lse=False, q_offset=None, **inputs)`` with q
    [B, Hq, N, D] and k, v [B, Hkv, M, D] (Hq a multiple of Hkv: GQA / MQA) in fp16, bf16 or fp32, all on one
    device. Returns the output [B, Hq, N, D] in q's dtype, and with ``return_lse`` also the natural-log
    log-sum-exp [B, Hq, N] in fp32 (-inf for a query with no allowed key, whose output is 0).
    """

    def __init__(self, compiled, /, *, block_m: int | None = None, block_n: int | None = None,
                 num_warps: int | None = None, num_stages: int | None = None, **backward: int | None):
        # the compiled value only: a kernel never holds the front-end Pattern (attention()'s cache of kernels
        # keyed by Patterns needs no weak reference back)
        self.compiled: pipeline.Compiled = getattr(compiled, "compiled", compiled)
        self._stored = False
        self.canonical = self.compiled.canonical
        self.plan: KernelPlan = self.compiled.plan
        unknown = sorted(set(backward) - set(_BWD_OPTIONS))
        if unknown:
            raise ArgumentError(f"unknown option '{unknown[0]}'; the options are block_m, block_n, num_warps, "
                                f"num_stages and {', '.join(_BWD_OPTIONS)} (pattern parameters go to attnpat.load)")
        self._override = {"block_m": block_m, "block_n": block_n, "num_warps": num_warps,
                          "num_stages": num_stages}
        given = {**self._override, **{name: backward.get(name) for name in _BWD_OPTIONS}}
        for name, v in given.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ArgumentError(f"'{name}' must be a positive int, got {v!r}")
            if v is not None and name.endswith(("block_m", "block_n")) and (v < 16 or v > MAX_BLOCK or v & (v - 1)):
                raise ArgumentError(f"'{name}' must be a power of two from 16 to {MAX_BLOCK}, got {v}")
            if v is not None and name.endswith("num_warps") and (v > 32 or v & (v - 1)):
                raise ArgumentError(f"'{name}' must be 1, 2, 4, 8, 16 or 32 (a block has at most 1024 threads), "
                                    f"got {v}")
            if v is not None and name.endswith("num_stages") and v > MAX_STAGES:
                raise ArgumentError(f"'{name}' must be from 1 to {MAX_STAGES}, got {v}")
        # per kernel: a dkdv_* / dq_* option wins over the bwd_* one for both kernels
        self._bwd_override = {
            which: {f: given[f"{which}_{f}"] if given[f"{which}_{f}"] is not None else given[f"bwd_{f}"]
                    for f in _TILE_FIELDS}
            for which in ("dkdv", "dq")}
        self._static_masks: dict = {}   # masks of patterns without runtime inputs, per shape and device
        # how the custom ops find this kernel, and what a call checks before them: constants only (runtime/op.py)
        checked = self.compiled.checked
        floats = tuple(d.name for d in checked.scores.inputs) if checked.scores is not None else ()
        self.info = (register_kernel(self, given), self.compiled.name,
                     (tuple(d.name for d in checked.inputs), checked.unused_inputs + floats),
                     tuple(n for n, _ in checked.params))

    @property
    def key(self) -> str:
        """The canonical pattern key (shared by equivalent spellings)."""
        return self.canonical.key

    def source(self) -> str:
        """The generated Triton module (the forward kernel)."""
        return pipeline.forward_source(self.compiled)

    def config(self, head_dim: int, dtype: torch.dtype) -> KernelConfig:
        """The launch configuration used for this head dimension and dtype."""
        base = default_config(head_dim, dtype)
        o = self._override
        return KernelConfig(o["block_m"] or base.block_m, o["block_n"] or base.block_n,
                            o["num_warps"] or base.num_warps, o["num_stages"] or base.num_stages)

    def bwd_config(self, head_dim: int, dtype: torch.dtype, arch: int | None = None):
        """The backward launch configuration (a runtime.autograd.BwdConfig) for this head dimension, dtype and
        GPU architecture (None: the interpreter): the default with this kernel's backward options applied."""
        from .autograd import base_bwd_config
        base = base_bwd_config(head_dim, dtype, arch)
        tiles = {}
        for which, o in self._bwd_override.items():
            t = getattr(base, which)
            tiles[which] = type(t)(*(o[f] or getattr(t, f) for f in _TILE_FIELDS))
        return type(base)(**tiles)

    def module(self, device: torch.device):
        """The imported kernel module for a device (interpreter on CPU)."""
        key = cache.entry_key(self.key, {"plan": self.plan.mode, "kernel": "fwd"}, target_name(device))
        module, _ = cache.get_module(key, self.source, interpret=interpreting())
        if not self._stored:   # beside the kernel, so the next process's first call skips the simplifier
            cache.store_compiled(self.compiled)
            self._stored = True
        return module

    def mask(self, N: int, M: int, B: int, H: int, q_offset, device, block_mask=None,
             inputs: dict | None = None, kv_start: int = 0) -> PreparedMask:
        """The block mask of a call: `block_mask` checked against the call (ArgumentError), else one made for
        it -- its runtime inputs validated once and kept on `device` (cached per shape when there are none).
        With `kv_start`, the keys sit at positions kv_start..: the mask of keys from 0, cut (ShardMask)."""
        inputs = inputs or {}
        if kv_start:
            if block_mask is not None:
                raise ArgumentError("'kv_start' with 'block_mask' is not supported: pass the runtime inputs")
            whole = prepare(self.compiled, N, kv_start + M, batch=B, heads=H if self.plan.uses_h else None,
                            q_offset=q_offset, device=device, inputs=inputs)
            return ShardMask(whole, whole.q_start, N, kv_start, M)
        if block_mask is not None:
            if not isinstance(block_mask, PreparedMask):
                raise ArgumentError(f"'block_mask' must be made by attnpat.block_mask, got "
                                    f"{type(block_mask).__name__}")
            if inputs:
                raise ArgumentError(f"runtime input '{sorted(inputs)[0]}' given with 'block_mask': the mask "
                                    f"holds its inputs; pass them to attnpat.block_mask")
            block_mask.check(self.compiled, B, H, N, M, device, q_offset)
            return block_mask
        if self.compiled.checked.inputs or inputs:
            return prepare(self.compiled, N, M, batch=B, heads=H if self.plan.uses_h else None, q_offset=q_offset,
                           device=device, inputs=inputs)
        key = (N, M, q_offset, H if self.plan.uses_h else None, B if self.plan.uses_b else None, str(device))
        found = self._static_masks.get(key)
        if found is None:
            if len(self._static_masks) >= 32:   # a few shapes are typical; stay bounded regardless
                self._static_masks.clear()
            found = self._static_masks[key] = prepare(
                self.compiled, N, M, batch=key[4], heads=key[3], q_offset=q_offset, device=device)
        return found

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                 return_lse: bool = False, q_offset: int | None = None, block_mask: PreparedMask | None = None,
                 kv_start: int = 0, **inputs):
        return launch(self.info, q, k, v, scale=scale, return_lse=return_lse, q_offset=q_offset,
                      block_mask=block_mask, kv_start=kv_start, **inputs)

    def run(self, q, k, v, scale: float, write_lse: bool, mask: PreparedMask, training: bool,
            floats: dict | None = None):
        """The forward on checked arguments and the call's mask, its tables built for the backward too when
        training: (out, lse), lse being `out` itself unless write_lse."""
        B, Hq, N, D = q.shape
        M = k.shape[2]
        if not training and not floats and not mask.kv_start and not any(self._override.values()) \
                and should_decode(N, compiled=self.compiled):
            # a few queries (decoding, speculative drafts): the split-KV kernel keeps the GPU busy (runtime/decode.py)
            out, lse = decode_run(self.compiled, q, k, v, scale, mask)
            return out, (lse if write_lse else out)
        if self.plan.mode == "table" and not mask.builds and N and M and B * Hq:
            # the first use of a mask: build it once, at tiles that divide every tile shape this call's kernels
            # use, and coarsen those from it (runtime/tiles.py) -- one build serves the forward and the backward
            shapes = [astuple(self.config(D, q.dtype))[:2]]
            if training:
                bwd = self.bwd_config(D, q.dtype, device_arch(q.device))
                shapes += [(bwd.dkdv.block_m, bwd.dkdv.block_n), (bwd.dq.block_m, bwd.dq.block_n)]
            mask.tables(math.gcd(*(s[0] for s in shapes)), math.gcd(*(s[1] for s in shapes)), B, Hq)
        return self.forward(q, k, v, scale, write_lse, mask, floats)

    @staticmethod
    def _check_backend(device) -> None:
        if interpreting():
            global _warned_interpreter
            if not _warned_interpreter:
                warnings.warn("attnpat: kernels run under Triton's interpreter (no CUDA device, or "
                              "TRITON_INTERPRET=1) -- slow, meant for tests", RuntimeWarning,
                              stacklevel=_caller_stacklevel())
                _warned_interpreter = True
        elif device.type != "cuda":
            raise ArgumentError(f"tensors are on {device}, but this process compiles kernels for CUDA; move them "
                                f"to a CUDA device, or set TRITON_INTERPRET=1 before importing attnpat to test on "
                                f"the CPU")

    def forward(self, q, k, v, scale: float, return_lse: bool, mask: PreparedMask, floats: dict | None = None):
        """Run the forward kernel on checked arguments (and the score terms' float inputs, runtime/scores.py):
        (out, lse), lse being `out` itself unless return_lse."""
        B, Hq, N, D = q.shape
        Hkv, M = k.shape[1], k.shape[2]
        device = q.device
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((B, Hq, N), dtype=torch.float32, device=device) if return_lse else out
        if N == 0 or B * Hq == 0:
            return out, lse
        cfg = self.config(D, q.dtype)
        tables = mask.tables(cfg.block_m, cfg.block_n, B, Hq)
        args = signature.forward(self.plan).bind(
            Q=q, K=k, V=v, Out=out, Lse=lse, VBad=nonfinite_rows(v), **tables,
            **input_args(self.plan.inputs, mask.kernel_inputs(), device),
            **_scores.kernel_args(self.plan, floats, device),
            H=Hq, GROUP=Hq // Hkv, Q_LEN=N, KV_LEN=M, Q_START=mask.q_start, KV_START=mask.kv_start,
            IN_LEN=mask.in_len,
            qk_scale=scale * LOG2E, HEAD_DIM=D, HEAD_DIM_P=pow2(D), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
            EVEN_N=(M % cfg.block_n == 0), WRITE_LSE=return_lse, DOT_PRECISION=dot_precision(q.dtype))
        grid = (triton_cdiv(N, cfg.block_m), B * Hq)
        self.module(device).attn_fwd[grid](**args, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        return out, lse

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in self.compiled.checked.params)
        return f"Kernel({self.compiled.name}({params}), plan={self.plan.mode}, key={self.key})"


def launch(kernel: tuple, q, k, v, *, scale=None, return_lse=False, q_offset=None, block_mask=None, kv_start=0,
           **inputs):
    """A kernel call (Kernel.__call__, attention) given `kernel`, its Kernel.info (constants only): checks, the autocast
    cast and SDPA's keywords in plain Python that Dynamo traces, then one custom op (runtime/op.py), inside which
    everything that reads the mask or launches a kernel runs."""
    if not torch.compiler.is_compiling():
        check_transforms()   # torch.func's grad and jvp: one clear error (Dynamo needs no check: constant False)
    inputs = sdpa_keywords(kernel, inputs)
    q, k, v = autocast_inputs(q, k, v)
    B, Hq, N, D, Hkv, M = check_qkv(q, k, v, dtypes=_DTYPES)
    check_kernel_head_dims(v, D)
    if q.device.type not in ("cuda", "cpu"):
        raise ArgumentError(f"tensors must be on a CUDA device or the CPU, got {q.device}")
    q_offset = check_q_offset(q_offset)
    if isinstance(kv_start, bool) or not hasattr(kv_start, "__index__") or kv_start.__index__() < 0:
        raise ArgumentError(f"'kv_start' (the absolute position of key row 0) must be an int >= 0, got {kv_start!r}")
    kv_start = int(kv_start.__index__())
    scale = check_scale(scale, D)
    handle = None
    if block_mask is not None:
        if not isinstance(block_mask, PreparedMask):
            raise ArgumentError(f"'block_mask' must be made by attnpat.block_mask, got "
                                f"{type(block_mask).__name__}")
        handle = block_mask.handle
        if handle is None:   # a PreparedMask made by hand (runtime.blockmask.prepare): the ops cannot name it
            raise ArgumentError("'block_mask' must be made by attnpat.block_mask")
    names = sorted(inputs)
    wants = tuple(n for n in names if inputs[n].requires_grad)   # only float inputs (score terms) can
    # the inputs first: one that requires a gradient attnpat does not compute is refused before the forward
    training = torch.is_grad_enabled() and ((bool(wants) and input_grads(kernel[0], wants))
                                            or q.requires_grad or k.requires_grad or v.requires_grad)
    out, lse, _ = torch.ops.attnpat.fwd(q, k, v, [inputs[n] for n in names], ",".join(names), handle, kernel[0],
                                        scale, q_offset, bool(return_lse), training, kv_start)
    return (out, lse) if return_lse else out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


_TILE_FIELDS = ("block_m", "block_n", "num_warps", "num_stages")
_BWD_OPTIONS = tuple(f"{which}_{f}" for which in ("bwd", "dkdv", "dq") for f in _TILE_FIELDS)


def compile(pattern, /, **options) -> Kernel:
    """Compile a pattern (a Pattern, or a name/path for attnpat.load) into a Kernel.

    Args:
        pattern: a Pattern or a FILE_OR_NAME[:PATTERN] string.
        **options: launch parameters overriding the defaults (each None or left out keeps the default for the
            head dim, dtype and GPU; block sizes must be powers of two >= 16, the others positive ints).
            Forward kernel: block_m (query rows per program), block_n (keys per tile), num_warps, num_stages.
            Backward kernels: bwd_block_m (query rows per tile), bwd_block_n (keys per tile), bwd_num_warps,
            bwd_num_stages for both the dK/dV kernel (one program per bwd_block_n keys) and the dQ kernel (one
            program per bwd_block_m queries); dkdv_block_m, ..., dkdv_num_stages and dq_block_m, ...,
            dq_num_stages set one kernel and win over the bwd_* value.
    """
    if isinstance(pattern, str):
        from .. import pattern as pattern_module
        pattern = pattern_module.load(pattern)
    _check_pattern(pattern)
    return Kernel(pattern.compiled, **options)


def _check_pattern(pattern) -> None:
    from ..pattern import Pattern
    if not isinstance(pattern, Pattern):
        raise ArgumentError(f"'pattern' must be a Pattern or a FILE_OR_NAME[:PATTERN] string, got "
                            f"{type(pattern).__name__}")


def attention(q, k, v, pattern, *, scale=None, return_lse=False, q_offset=None, block_mask=None, kv_start=0,
              **inputs):
    """One call: compile (cached) and run `pattern` on q, k, v (with a prepared `block_mask`, or inputs); keys at
    absolute positions kv_start.. (int[k] inputs then cover positions 0..kv_start + kv_len - 1)."""
    return launch(_info_of(pattern), q, k, v, scale=scale, return_lse=return_lse, q_offset=q_offset,
                  block_mask=block_mask, kv_start=kv_start, **inputs)


@torch._dynamo.assume_constant_result
def _info_of(pattern) -> tuple:
    """Kernel.info of a Pattern's or spec's cached Kernel. Under torch.compile this runs once, while Dynamo
    traces, and its result is a constant of the graph (guarded on the pattern): Dynamo never traces the
    compiler, sympy or the caches."""
    return kernel_of(pattern).info


def kernel_of(pattern) -> Kernel:
    """The cached Kernel of a Pattern (while it lives) or of a FILE_OR_NAME[:PATTERN] string."""
    if isinstance(pattern, str):
        return _spec_kernel(pattern)
    _check_pattern(pattern)
    kernel = _compiled.get(pattern)
    if kernel is None:
        kernel = _compiled[pattern] = Kernel(pattern.compiled)   # holds no reference to its key
    return kernel


def prepared_mask(pattern, q_len, kv_len, *, batch=None, heads=None, q_offset=None, device=None, **inputs):
    """attnpat.block_mask: a pattern's (a Pattern or a FILE_OR_NAME[:PATTERN] string) PreparedMask."""
    if isinstance(pattern, str):
        compiled = _spec_kernel(pattern).compiled
    else:
        _check_pattern(pattern)
        compiled = pattern.compiled
    mask = prepare(compiled, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, device=device,
                   inputs=inputs)
    mask.handle = register_mask(mask)
    return mask


_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # Pattern -> Kernel, while it lives


@functools.lru_cache(maxsize=64)
def _spec_kernel(spec: str) -> Kernel:
    """The kernel of a FILE_OR_NAME[:PATTERN] string: loaded and compiled once per spec (the 64 most recent)."""
    return compile(spec)


def aot_request(kernel: Kernel, *, target: str = "sm_80", dtype: torch.dtype = torch.float16,
                head_dim: int = 64) -> dict:
    """The request that compiles the forward kernel ahead of time (see attnpat.runtime.aot)."""
    cfg = kernel.config(head_dim, dtype)
    key = cache.entry_key(kernel.key, {"plan": kernel.plan.mode, "kernel": "fwd"}, "aot")
    cache.get_module(key, kernel.source, interpret=interpreting())   # makes sure the file exists
    return _aot_request(signature.forward(kernel.plan), str(cache.cache_dir() / f"k_{key[:40]}.py"),
                        target=target, dtype=dtype, head_dim=head_dim, tile=cfg,
                        constants={"HEAD_DIM": head_dim, "HEAD_DIM_P": pow2(head_dim), "BLOCK_M": cfg.block_m,
                                   "BLOCK_N": cfg.block_n, "EVEN_N": False, "WRITE_LSE": True,
                                   "DOT_PRECISION": dot_precision(dtype)})


def aot_report(kernel: Kernel, *, target: str = "sm_80", dtype: torch.dtype = torch.float16, head_dim: int = 64):
    """Compile the forward kernel ahead of time for `target` (no GPU needed) and report its resources."""
    from .aot import compile_many
    return compile_many([aot_request(kernel, target=target, dtype=dtype, head_dim=head_dim)])[0]
