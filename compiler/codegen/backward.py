"""Stage codegen, backward: canonical IR -> a Triton module with a dK/dV and a dQ kernel.

FlashAttention-2's backward, specialised for one canonical pattern like the forward (templates/backward.py.txt):

* ``attn_bwd_dkdv`` -- one program per (key block, batch x kv head). It recomputes the transposed scores
  ``S^T = K Q^T`` of every query block whose tile is not EMPTY, ``P^T = exp2(S^T log2(e) - LSE_2)`` from the
  forward's saved log-sum-exp, and accumulates ``dV += P^T dO`` and ``dK += dS^T Q`` with
  ``dS = P * (dP - delta)``, ``delta = rowsum(dO * O)``. With GQA / MQA it walks the query heads of its group
  one after the other, so dK and dV are summed in a fixed order, without atomics;
* ``attn_bwd_dq`` -- one program per (query block, batch x query head), walking the forward's key blocks and
  accumulating ``dQ += dS K``.

Which tiles are walked:

* **table plan** -- dK/dV walks the block mask's transposed rows (``t_partial`` with the predicate, then
  ``t_full`` without); dQ walks the rows as the forward does. Both in one loop with a runtime ``full`` flag,
  so the tile's matrix products stand once in each kernel;
* **band plan** -- bands.py: dQ walks the forward's key blocks; dK/dV inverts the same key intervals per key
  block into query blocks. A tile is FULL (no predicate) when the closed-form test proves it.

The dK/dV tile is transposed (keys down, queries across), so it calls the predicate printed for that layout
(``_predicate_t``), printed from the same IR as the forward's.
"""

from __future__ import annotations

from ..simplify import Canonical
from . import bands, inputs, scores, signature
from .plan import KernelPlan, plan
from .predicate import functions
from .template import fill, render

__all__ = ["generate_bwd"]

_DQ_STEP = "k_lo = kb * BLOCK_N\n${corner}\nfull = ${full}\n${tile}"
_DQ_CORNER = "k_hi = tl.minimum(k_lo + BLOCK_N, KV_LEN) - 1"
# a dQ tile's first and last key at absolute positions (k_lo, k_hi count rows from key row 0)
_KEYS = ("(KV_START + k_lo)", "(KV_START + k_hi)")
_DKDV_STEP = "${corner}\nfull = ${full}\n${tile}"
_DKDV_CORNER = "q_lo = Q_START + qb * BLOCK_M\nq_hi = Q_START + tl.minimum(qb * BLOCK_M + BLOCK_M, Q_LEN) - 1"
_BAND = "# -- the band: ${what} computed from the bounds, no tables --\n${code}"


def generate_bwd(canonical: Canonical, kplan: KernelPlan | None = None) -> str:
    """Return the source of the backward kernel module for a canonical pattern."""
    kplan = kplan or plan(canonical)
    n, terms = len(kplan.inputs), canonical.scores
    # the tiles read float inputs only when scores change (a sink acts through the forward's lse alone)
    fl = kplan.float_inputs if scores.has_mod(terms) else ()

    grads = scores.bias_grad_parts(kplan)

    def dq_tile(start: str) -> str:
        return render("dq_tile", start=start, input_args=inputs.tile_args(n, "q"), score_args=scores.args(fl),
                      bias_grad_ret=grads["bias_grad_ret"], bias_grad_args=grads["bias_grad_args"])

    def dkdv_tile(start: str) -> str:
        return render("dkdv_tile", start=start, input_args=inputs.tile_args(n, "k"), score_args=scores.args(fl))

    dkdv_ranges = ""
    if kplan.mode == "table":
        dq_body = render("backward_table", what="this query block's row", count="NUM_QB", pid="pid_m",
                         tile=dq_tile("blk * BLOCK_N"))
        dkdv_body = render("backward_table", what="this key block's column", count="NUM_KB", pid="pid_n",
                           tile=dkdv_tile("blk * BLOCK_M"))
    else:
        full = bands.full_test(canonical.ir)
        static = isinstance(full, bool)   # then the tiles' corners are not needed
        step = fill(_DQ_STEP, corner="" if static else _DQ_CORNER, full=bands.full_test(canonical.ir, _KEYS),
                    tile=dq_tile("k_lo"))
        dq_body = fill(_BAND, what="key blocks of this query block",
                       code=bands.walk(bands.key_ranges(kplan, True), "BLOCK_N", "kb", step))
        ranges = bands.query_ranges(kplan)
        step = fill(_DKDV_STEP, corner="" if static else _DKDV_CORNER, full=full, tile=dkdv_tile("qb * BLOCK_M"))
        dkdv_ranges = fill(_BAND, what="query blocks of this key block", code=bands.block_ranges(ranges, "BLOCK_M"))
        dkdv_body = bands.loop(len(ranges), "qb", step)
    pred_args = inputs.predicate_args(n)
    fns = functions(canonical.ir, kplan.inputs, ("rows", "columns"))
    score_fns = "\n\n\n".join(x for x in (scores.functions(terms, fl, ("rows", "columns"), True, fns),
                                          scores.bias_grad_function(terms, kplan)) if x)
    capped = terms is not None and terms.softcap is not None   # dS takes the softcap's derivative
    return render(
        "backward", key=kplan.key, text=inputs.renamed_text(canonical.ir, kplan.inputs), mode=kplan.mode,
        functions=fns + "\n\n\n" + score_fns if score_fns else fns,
        score_params=scores.params(fl), score_params_dq=scores.params(fl),
        score_apply_t=scores.apply_d(terms, fl, "columns", "qkT", "Q_START + offs_m", "k_pos"),
        score_apply=scores.apply_d(terms, fl, "rows", "qk", "q_pos", "KV_START + offs_n"),
        score_ds_t="dsT = dsT * dcap" if capped else "", score_ds="ds = ds * dcap" if capped else "",
        score_loads_dkdv=scores.loads(fl), score_loads_dq=scores.loads(fl),
        **{k: v for k, v in grads.items() if k not in ("bias_grad_ret", "bias_grad_args")},
        bias_grad_ret=grads["bias_grad_ret"],
        input_params=inputs.tile_args(n, "k"), input_params_dq=inputs.tile_args(n, "q"),
        predicate_args=f", {pred_args}" if pred_args else "",
        q_loads=inputs.loads(kplan.inputs, "q", "k", "IN_LEN"), k_loads=inputs.loads(kplan.inputs, "k", "k"),
        k_loads_dq=inputs.loads(kplan.inputs, "k", "q"), q_loads_dq=inputs.loads(kplan.inputs, "q", "q", "IN_LEN"),
        dkdv_params=signature.dkdv(kplan).code(len("def attn_bwd_dkdv(")), dkdv_ranges=dkdv_ranges,
        dkdv_body=dkdv_body, dq_params=signature.dq(kplan).code(len("def attn_bwd_dq(")), dq_body=dq_body) + "\n"
