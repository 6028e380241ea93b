"""Autograd for attnpat kernels: the generated backward kernels, launched by the custom op of runtime/op.py.

``Kernel.__call__`` (and so ``attnpat.attention``) calls the custom op ``torch.ops.attnpat.fwd``, whose
autograd formula (runtime/op.py) calls ``torch.ops.attnpat.bwd``, which runs :func:`attention_backward`; so a
pattern kernel is a drop-in for ``torch.nn.functional.scaled_dot_product_attention`` in training:
``out.sum().backward()`` fills ``q.grad``, ``k.grad`` and ``v.grad``.

* The forward runs the pattern's forward kernel with the log-sum-exp written and saves q, k, v, out, lse.
* The backward computes ``delta = rowsum(dO * O)`` with torch, converts the natural-log LSE to base 2 (rows
  with no allowed key get +inf, so their recomputed probabilities are exactly 0 and their gradients 0), and
  launches the generated ``attn_bwd_dkdv`` and ``attn_bwd_dq`` kernels (compiler/codegen/backward.py), their
  arguments bound by name to the signatures of compiler/codegen/signature.py.
* Runtime inputs (document ids, ...) get no gradient. With ``return_lse=True`` the LSE is returned but is
  non-differentiable (``mark_non_differentiable``): gradients flow through the output only.
* Deterministic: no atomics; with GQA / MQA each dK/dV program sums its group's query heads in a fixed order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..compiler import pipeline
from ..compiler.codegen import signature
from . import cache
from .backend import interpreting, target_name
from .launch import LOG2E, aot_request, device_arch, dot_precision, input_args, nonfinite_rows, pow2
from .scores import grad_buffers as score_grad_buffers, grad_sums as score_grad_sums, kernel_args as score_args

__all__ = ["BwdConfig", "TileConfig", "default_bwd_config", "override_bwd_config", "attention_with_grad",
           "attention_backward", "bwd_module",
           "bwd_source", "bwd_aot_requests"]


@dataclass(frozen=True, slots=True)
class TileConfig:
    """Launch parameters of one backward kernel (block_m query rows x block_n keys per tile)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True, slots=True)
class BwdConfig:
    """Launch parameters of the two backward kernels.

    dkdv: one program per block_n keys, walking tiles of block_m queries.
    dq: one program per block_m queries, walking tiles of block_n keys.
    The defaults (default_bwd_config) compile every library kernel without spills on sm_80 and sm_90a at head
    dims up to 256 in fp16, bf16 and fp32, with tensor-core MMA in fp16 / bf16 (tests/test_aot_backward.py;
    docs/backward.md has the table).
    """

    dkdv: TileConfig
    dq: TileConfig


_OVERRIDE: list[BwdConfig] = []


@contextlib.contextmanager
def override_bwd_config(config: BwdConfig):
    """Use `config` for every backward launch inside the block (a testing aid: small tiles on small inputs)."""
    _OVERRIDE.append(config)
    try:
        yield config
    finally:
        _OVERRIDE.pop()


def default_bwd_config(head_dim: int, dtype: torch.dtype, arch: int | None = None) -> BwdConfig:
    """The backward launch configuration for a head dimension, dtype and GPU architecture (80 for sm_80,
    90 for sm_90 / sm_90a; None: Triton's interpreter, which has no registers to spare and runs fastest on few,
    large tiles)."""
    if arch is None:
        return BwdConfig(TileConfig(64, 64, 4, 1), TileConfig(64, 64, 4, 1))
    hopper = arch >= 90
    if dtype == torch.float32:
        # IEEE fp32 products run on CUDA cores (FMA), and ptxas treats these kernels erratically: a tile that fits
        # one target, head dim or pattern spills a few registers on another with as few as 64 in use. Each entry
        # is the largest tile that compiled spill-free for every library kernel on its target at the power-of-two
        # head dim and at a padded one (docs/backward.md).
        if head_dim <= 64:   # 2 stages spilled 40-56 bytes on sm_90a with the masked-pair select (issue 11)
            return BwdConfig(TileConfig(32, 32, 8, 1) if hopper else TileConfig(64, 16, 8, 2), TileConfig(64, 32, 8, 1))
        if head_dim <= 128:
            return BwdConfig(TileConfig(32, 16, 4, 1) if hopper else TileConfig(64, 16, 8, 2),
                             TileConfig(32, 32, 8, 2) if hopper else TileConfig(64, 32, 8, 1))
        return BwdConfig(TileConfig(16, 32, 8, 2), TileConfig(16, 16, 4, 1) if hopper else TileConfig(16, 32, 8, 2))
    if head_dim <= 64:
        if hopper:
            # 64 keys per program: the dK/dV products have M = 64, as Hopper's warpgroup MMA needs
            return BwdConfig(TileConfig(32, 64, 4, 2), TileConfig(64, 32, 4, 2))
        # on sm_80, 64 keys per program needs 255 registers or spills; 32 keys keeps it near 230
        return BwdConfig(TileConfig(64, 32, 4, 2), TileConfig(64, 32, 4, 2))
    if head_dim <= 128:
        return BwdConfig(TileConfig(32, 64, 8, 2), TileConfig(64, 32, 8, 2))
    # the 256-wide K, V, dK, dV (dK/dV) or Q, dO, dQ (dQ) tiles need 8 warps to stay below 255 registers
    return BwdConfig(TileConfig(32, 32, 8, 2), TileConfig(64, 16, 8, 2))


def base_bwd_config(head_dim: int, dtype: torch.dtype, arch: int | None = None) -> BwdConfig:
    """What a kernel's backward options are applied to: override_bwd_config's config inside its block, else
    default_bwd_config's."""
    return _OVERRIDE[-1] if _OVERRIDE else default_bwd_config(head_dim, dtype, arch)


# -- the generated module ---------------------------------------------------------------------------


def bwd_source(kernel) -> str:
    """The generated backward Triton module of a Kernel."""
    return pipeline.backward_source(kernel.compiled)


def _entry_key(kernel, target: str) -> str:
    return cache.entry_key(kernel.key, {"plan": kernel.plan.mode, "kernel": "bwd"}, target)


def bwd_module(kernel, device: torch.device):
    """The imported backward module for a device (interpreter on CPU)."""
    module, _ = cache.get_module(_entry_key(kernel, target_name(device)), lambda: bwd_source(kernel),
                                 interpret=interpreting())
    return module


# -- the backward pass ------------------------------------------------------------------------------


def attention_backward(kernel, q, k, v, out, lse, dout, *, scale: float, mask, needs=(True, True, True),
                       floats: dict | None = None, bias_grads: dict | None = None):
    """Gradients (dq, dk, dv) of ``out = kernel(q, k, v)`` given dout, from the saved out and natural-log lse and
    the forward's block mask (a runtime.blockmask.PreparedMask: its inputs and tables are reused).

    Entries of the result whose `needs` flag is False are None (their kernel is not launched). `floats`: the
    score terms' float inputs; a dict `bias_grads` receives the gradients of those a bias reads (the dQ
    kernel's parts, summed here), {name: [Hq] fp32}.
    """
    B, Hq, N, D = q.shape
    Hkv, M = k.shape[1], k.shape[2]
    device = q.device
    want_bias = bias_grads is not None and bool(kernel.plan.bias_inputs)   # the dQ kernel computes them
    dq = torch.zeros(q.shape, dtype=q.dtype, device=device) if needs[0] or want_bias else None
    dk = torch.zeros(k.shape, dtype=k.dtype, device=device) if needs[1] or needs[2] else None
    dv = torch.zeros(v.shape, dtype=v.dtype, device=device) if needs[1] or needs[2] else None
    if N == 0 or M == 0 or B * Hq == 0:
        if want_bias:
            bias_grads.update(score_grad_sums(kernel.plan, {}, B, Hq, device))
        return (dq if needs[0] else None), (dk if needs[1] else None), (dv if needs[2] else None)
    do = dout.to(q.dtype).contiguous()
    # delta = rowsum(dO * O) [B, Hq, N], with dO = 0 taken as exact: a row the loss ignores adds 0 even where
    # its output is NaN (it attends a key whose v row is not finite), so padding stays exact; a row the loss
    # reads with a non-finite output gets a non-finite delta and gradients, as in the reference (docs/backward.md)
    delta = torch.where(do == 0, 0.0, do.float() * out.float()).sum(-1).contiguous()
    lse2 = torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse * LOG2E).contiguous()
    cfg = kernel.bwd_config(D, q.dtype, device_arch(device))
    module = bwd_module(kernel, device)
    parts: dict = {}
    common = dict(Q=q, K=k, V=v, DO=do, Lse=lse2, Delta=delta, VBad=nonfinite_rows(v),
                  **input_args(kernel.plan.inputs, mask.kernel_inputs(), device),
                  **score_args(kernel.plan, floats, device),   # float[h] inputs of score terms (runtime/scores.py)
                  H=Hq, GROUP=Hq // Hkv, Q_LEN=N, KV_LEN=M, Q_START=mask.q_start, KV_START=mask.kv_start,
                  IN_LEN=mask.in_len,
                  qk_scale=scale * LOG2E, sm_scale=scale, HEAD_DIM=D, HEAD_DIM_P=pow2(D),
                  DOT_PRECISION=dot_precision(q.dtype))
    for sig, c, grid, outputs in (
            (signature.dkdv(kernel.plan), cfg.dkdv, (-(-M // cfg.dkdv.block_n), B * Hkv), dict(DK=dk, DV=dv)),
            (signature.dq(kernel.plan), cfg.dq, (-(-N // cfg.dq.block_m), B * Hq), dict(DQ=dq))):
        if any(t is None for t in outputs.values()):
            continue   # that gradient is not needed
        tables = mask.tables(c.block_m, c.block_n, B, Hq, transposed=sig.kernel == "attn_bwd_dkdv")
        extra = {"HKV": Hkv} if sig.kernel == "attn_bwd_dkdv" else parts
        if sig.kernel == "attn_bwd_dq":   # one partial sum per program of each bias input's gradient
            parts.update(score_grad_buffers(kernel.plan, B * Hq, grid[0], device))
        args = sig.bind(**common, **outputs, **tables, **extra, BLOCK_M=c.block_m, BLOCK_N=c.block_n,
                        EVEN_N=(M % c.block_n == 0))
        getattr(module, sig.kernel)[grid](**args, num_warps=c.num_warps, num_stages=c.num_stages)
    if want_bias:
        bias_grads.update(score_grad_sums(kernel.plan, parts, B, Hq, device))
    return (dq if needs[0] else None), (dk if needs[1] else None), (dv if needs[2] else None)


def attention_with_grad(kernel, q, k, v, *, scale=None, return_lse=False, q_offset=None, block_mask=None, **inputs):
    """``kernel(q, k, v, ...)`` with grad mode on: recorded for autograd when q, k or v requires grad."""
    with torch.enable_grad():
        return kernel(q, k, v, scale=scale, return_lse=return_lse, q_offset=q_offset, block_mask=block_mask,
                      **inputs)


# -- ahead-of-time compile requests -------------------------------------------------------------------

def bwd_aot_requests(kernel, *, target: str = "sm_80", dtype: torch.dtype = torch.float16,
                     head_dim: int = 64) -> list[dict]:
    """Requests (for attnpat.runtime.aot.compile_many) that compile the dK/dV and dQ kernels ahead of time,
    specialised as Triton's JIT specialises them for contiguous tensors: unit head-dim strides constant,
    other strides and pointers divisible by 16. The launch configuration is the kernel's (kernel.bwd_config:
    the default for the target, with the kernel's backward options applied)."""
    from .aot import TARGETS
    cfg = kernel.bwd_config(head_dim, dtype, TARGETS[target])
    key = _entry_key(kernel, "aot")
    cache.get_module(key, lambda: bwd_source(kernel), interpret=interpreting())   # makes sure the file exists
    path = str(cache.cache_dir() / f"k_{key[:40]}.py")
    return [aot_request(sig, path, target=target, dtype=dtype, head_dim=head_dim, tile=tile,
                        constants={"HEAD_DIM": head_dim, "HEAD_DIM_P": pow2(head_dim), "BLOCK_M": tile.block_m,
                                   "BLOCK_N": tile.block_n, "EVEN_N": False, "DOT_PRECISION": dot_precision(dtype)})
            for sig, tile in ((signature.dkdv(kernel.plan), cfg.dkdv), (signature.dq(kernel.plan), cfg.dq))]
