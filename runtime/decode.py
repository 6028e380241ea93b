"""The split-KV decode launcher: attention of a few new queries (1 to 16 per head) over a long KV cache.

``decode_attention(q, k, v, pattern, ...)`` takes the arguments of ``attnpat.attention`` (same meaning: q
[B, Hq, N, D] with N <= 16, k and v [B, Hkv, M, D], query row i at position q_start + i with q_start =
M - N unless q_offset is given) and returns the same output and log-sum-exp, through the generated decode
kernel (compiler/codegen/decode.py) instead of the prefill kernel: the query heads of a KV group share one
program and each row's key tiles are split across NUM_SPLITS programs, whose partial results are combined
here by log-sum-exp. It is inference only: nothing is recorded for autograd.

:func:`launch` is the lower level the KV cache (runtime/kvcache.py) shares: per-sequence query starts and
key lengths, and keys stored in a ring buffer (``ring``) instead of position p in slot p.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..compiler.codegen import decode as decode_codegen
from ..compiler.codegen import signature
from ..errors import ArgumentError
from . import cache
from .backend import interpreting, target_name
from .blockmask import PreparedMask, check_q_offset, prepare
from .checks import check_kernel_head_dims, check_qkv, check_scale
from .launch import LOG2E, aot_request as _aot_request, dot_precision, input_args, pow2

__all__ = ["MAX_Q_LEN", "DecodeConfig", "decode_config", "should_decode", "decode_attention", "run", "launch",
           "decode_source", "aot_request", "Ring", "compiled_of", "check_num_splits"]

MAX_Q_LEN = 16      # queries per head the decode kernel takes (token-by-token and speculative decoding)
BLOCK_Q = 16        # the block mask's query block for table plans: one block covers every decode query
MAX_ROWS = 64       # query rows (heads x queries) one program holds in fp16 / bf16
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Launch parameters of the decode kernel (block_m: query rows per program, from the call's layout)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True, slots=True)
class Ring:
    """Where a KV cache stores positions: the first `sink` in slots of their own, position p >= sink in slot
    sink + (p - sink) % size."""

    sink: int
    size: int


def layout(plan, group: int, q_len: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(heads per program, rows per head Q_ROWS, BLOCK_M): as many query heads of one KV group as fit in the
    row budget (64 rows; 16 in fp32, whose CUDA-core products spilled at 64); one head per program when a
    table plan's mask differs per head."""
    q_rows = 1 << (max(q_len, 1) - 1).bit_length()
    budget = 16 if dtype == torch.float32 else MAX_ROWS
    hpp = 1
    if not (plan.mode == "table" and plan.uses_h):
        hpp = max(d for d in range(1, group + 1) if group % d == 0 and d * q_rows <= budget)
    return hpp, q_rows, max(16, 1 << (hpp * q_rows - 1).bit_length())


def decode_config(head_dim: int, dtype: torch.dtype, block_m: int) -> DecodeConfig:
    """The decode launch configuration (checked spill-free on sm_80 and sm_90a by tests/test_decode_aot.py)."""
    if dtype == torch.float32:   # IEEE products: 4 warps spilled at head dim 128 on sm_90a
        return DecodeConfig(block_m, 32 if head_dim <= 128 else 16, 8, 2)
    if head_dim <= 128:
        return DecodeConfig(block_m, 64, 4, 2)
    return DecodeConfig(block_m, 32, 4, 2)


def should_decode(q_len: int, *, requires_grad: bool = False, compiled=None) -> bool:
    """Whether attnpat.attention should run the decode kernel: 1 to MAX_Q_LEN queries, no gradient, and (given
    the pattern's compiled value) a pattern the decode kernel supports."""
    if compiled is not None and not decode_codegen.supported(compiled.canonical, compiled.plan):
        return False
    return 1 <= q_len <= MAX_Q_LEN and not requires_grad


def decode_source(compiled) -> str:
    """The generated decode module of a compiled pattern."""
    return decode_codegen.generate(compiled.canonical, compiled.plan)


def _module(compiled, device):
    key = cache.entry_key(compiled.key, {"plan": compiled.plan.mode, "kernel": "decode"}, target_name(device))
    module, _ = cache.get_module(key, lambda: decode_source(compiled), interpret=interpreting())
    return module


def _default_splits(programs: int, tiles: int, device) -> int:
    """Enough splits to give the GPU about two programs per multiprocessor (under the interpreter, two, so the
    combine is exercised), never more than the tiles a row may visit."""
    if device.type == "cuda" and not interpreting():
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = math.ceil(2 * sms / max(programs, 1))
    else:
        want = 2
    return max(1, min(want, tiles))


def launch(compiled, q, k, v, q_start: torch.Tensor, kv_len: torch.Tensor, scale: float, *, tables: dict,
           inputs: dict, ring: Ring | None = None, span: int | None = None, num_splits: int | None = None):
    """Run the decode kernel on checked arguments and combine its splits: (out in q's dtype, lse fp32).

    q_start, kv_len: int32 [B] on q's device (sequence b's queries sit at q_start[b] + i, its keys are the
    positions [0, kv_len[b])); k, v hold position p in slot p, or as `ring` says; span: the most key positions
    a row may visit (default k's slots), which sizes the default number of splits.
    """
    B, Hq, N, D = q.shape
    Hkv = k.shape[1]
    plan = compiled.plan
    hpp, q_rows, block_m = layout(plan, Hq // Hkv, N, q.dtype)
    cfg = decode_config(D, q.dtype, block_m)
    programs = B * Hq // hpp
    tiles = max(1, -(-(span if span is not None else k.shape[2]) // cfg.block_n))
    if N == 0 or programs == 0:
        return torch.zeros_like(q), torch.full((B, Hq, N), float("-inf"), device=q.device)
    splits = num_splits or _default_splits(programs, tiles, q.device)
    out_p = torch.empty((splits, B, Hq, N, D), dtype=torch.float32, device=q.device)
    lse_p = torch.empty((splits, B, Hq, N), dtype=torch.float32, device=q.device)
    args = signature.decode(plan).bind(
        Q=q, K=k, V=v, OutP=out_p, LseP=lse_p, QStart=q_start, KvLen=kv_len, **tables,
        **input_args(plan.inputs, inputs, q.device), H=Hq, GROUP=Hq // Hkv, Q_LEN=N,
        SINK=ring.sink if ring else 0, RING=ring.size if ring else 1, NUM_SPLITS=splits, ROWS=B * Hq * N,
        qk_scale=scale * LOG2E, HEAD_DIM=D, HEAD_DIM_P=pow2(D), BLOCK_M=block_m, BLOCK_N=cfg.block_n,
        Q_ROWS=q_rows, HEADS_PER_PROG=hpp, RING_BUF=ring is not None, DOT_PRECISION=dot_precision(q.dtype))
    _module(compiled, q.device).attn_decode[(splits, programs)](**args, num_warps=cfg.num_warps,
                                                                num_stages=cfg.num_stages)
    if splits == 1:
        return out_p[0].to(q.dtype), lse_p[0]
    # -- combine the splits by log-sum-exp; a split (or a row) with no allowed key weighs 0 --
    m = lse_p.amax(0)
    m_safe = torch.where(m == float("-inf"), 0.0, m)
    w = torch.exp(lse_p - m_safe)
    total = w.sum(0)
    out = (w.unsqueeze(-1) * out_p).sum(0) / torch.where(total == 0, 1.0, total).unsqueeze(-1)
    lse = torch.where(total == 0, float("-inf"), m_safe + torch.log(total))
    return out.to(q.dtype), lse


def check_num_splits(num_splits) -> None:
    """ArgumentError unless `num_splits` is None or a positive int."""
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                   or num_splits < 1):
        raise ArgumentError(f"'num_splits' must be a positive int or None, got {num_splits!r}")


@functools.lru_cache(maxsize=64)
def _spec_compiled(spec: str):
    from ..pattern import load
    return load(spec).compiled


def compiled_of(pattern):
    """The compiled value of a Pattern or a FILE_OR_NAME[:PATTERN] string (loaded once per string)."""
    if isinstance(pattern, str):
        return _spec_compiled(pattern)
    compiled = getattr(pattern, "compiled", None)
    if compiled is None or not hasattr(compiled, "plan"):
        raise ArgumentError(f"'pattern' must be a Pattern or a FILE_OR_NAME[:PATTERN] string, got "
                            f"{type(pattern).__name__}")
    return compiled


def run(compiled, q, k, v, scale: float, mask, *, num_splits: int | None = None):
    """The decode kernel on checked arguments with a PreparedMask (what attnpat.attention has at launch):
    (out in q's dtype, lse fp32 [B, Hq, N])."""
    B, Hq, N, D = q.shape
    M = k.shape[2]
    if N == 0 or B * Hq == 0:
        return torch.zeros_like(q), torch.full((B, Hq, N), float("-inf"), device=q.device)
    tables = mask.tables(BLOCK_Q, decode_config(D, q.dtype, 16).block_n, B, Hq)
    starts = torch.full((B,), mask.q_start, dtype=torch.int32, device=q.device)
    lengths = torch.full((B,), M, dtype=torch.int32, device=q.device)
    with torch.no_grad():
        return launch(compiled, q, k, v, starts, lengths, scale, tables=tables, inputs=mask.kernel_inputs(),
                      num_splits=num_splits)


def decode_attention(q, k, v, pattern, *, scale=None, return_lse=False, q_offset=None, block_mask=None,
                     num_splits=None, **inputs):
    """attnpat.attention for 1 to 16 queries per head through the split-KV decode kernel (inference only)."""
    B, Hq, N, D, Hkv, M = check_qkv(q, k, v, dtypes=_DTYPES)
    check_kernel_head_dims(v, D)
    if N > MAX_Q_LEN:
        raise ArgumentError(f"decode_attention takes at most {MAX_Q_LEN} queries per head, got {N}; use "
                            f"attnpat.attention")
    check_num_splits(num_splits)
    if q.device.type != "cuda" and not (q.device.type == "cpu" and interpreting()):
        raise ArgumentError(f"tensors are on {q.device}; the decode kernel runs on a CUDA device (or on the CPU "
                            f"under TRITON_INTERPRET=1)")
    compiled = compiled_of(pattern)
    scale = check_scale(scale, D)
    if block_mask is None:
        mask = prepare(compiled, N, M, batch=B, heads=Hq if compiled.plan.uses_h else None, q_offset=q_offset,
                       device=q.device, inputs=inputs)
    elif inputs:
        raise ArgumentError(f"runtime input '{sorted(inputs)[0]}' given with 'block_mask': the mask holds its "
                            f"inputs; pass them to attnpat.block_mask")
    else:
        if not isinstance(block_mask, PreparedMask):
            raise ArgumentError(f"'block_mask' must be made by attnpat.block_mask, got {type(block_mask).__name__}")
        block_mask.check(compiled, B, Hq, N, M, q.device, check_q_offset(q_offset))
        mask = block_mask
    out, lse = run(compiled, q, k, v, float(scale), mask, num_splits=num_splits)
    return (out, lse) if return_lse else out


def aot_request(compiled, *, target: str = "sm_80", dtype: torch.dtype = torch.float16, head_dim: int = 64,
                q_len: int = 1, group: int = 1, ring: bool = False) -> dict:
    """The request that compiles the decode kernel ahead of time (see attnpat.runtime.aot)."""
    hpp, q_rows, block_m = layout(compiled.plan, group, q_len, dtype)
    cfg = decode_config(head_dim, dtype, block_m)
    key = cache.entry_key(compiled.key, {"plan": compiled.plan.mode, "kernel": "decode"}, "aot")
    cache.get_module(key, lambda: decode_source(compiled), interpret=interpreting())
    return _aot_request(signature.decode(compiled.plan), str(cache.cache_dir() / f"k_{key[:40]}.py"),
                        target=target, dtype=dtype, head_dim=head_dim, tile=cfg,
                        constants={"HEAD_DIM": head_dim, "HEAD_DIM_P": pow2(head_dim), "BLOCK_M": block_m,
                                   "BLOCK_N": cfg.block_n, "Q_ROWS": q_rows, "HEADS_PER_PROG": hpp,
                                   "RING_BUF": ring, "DOT_PRECISION": dot_precision(dtype)})
