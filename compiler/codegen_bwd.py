"""Stage 5b -- codegen of the backward pass: canonical IR -> a Triton module with a dK/dV and a dQ kernel.

FlashAttention-2's backward, specialised for one canonical pattern like the forward (see codegen.py):

* ``attn_bwd_dkdv`` -- one program per (key block, batch x kv head). It recomputes the transposed scores
  ``S^T = K Q^T`` of every query block whose tile is not EMPTY, ``P^T = exp2(S^T log2(e) - LSE_2)`` from the
  forward's saved log-sum-exp, and accumulates ``dV += P^T dO`` and ``dK += dS^T Q`` with
  ``dS = P * (dP - delta)``, ``delta = rowsum(dO * O)``. With GQA / MQA it walks the query heads of its group
  one after the other, so dK and dV are summed in a fixed order, without atomics;
* ``attn_bwd_dq`` -- one program per (query block, batch x query head), walking the forward's key blocks and
  accumulating ``dQ += dS K``.

Which tiles are walked:

* **table plan** -- dK/dV walks the block mask's transposed rows (``t_partial`` with the predicate, then
  ``t_full`` without); dQ walks the rows as the forward does;
* **band plan** -- the forward's key intervals ``max(lower bounds) <= k <= min(upper bounds)`` (bounds are
  ``q + c`` or a constant) are inverted per key block ``[k_lo, k_hi]``: the queries whose interval meets the
  block form an interval of q (every lower bound of the family <= every upper bound, with ``k_lo`` and ``k_hi``
  as extra bounds, is linear in q), hence an interval of query blocks. With two families the second one's
  query blocks are visited only outside the first one's, so each tile is visited once. A tile is FULL (no
  predicate) when the forward's closed-form ``_full_tile`` test proves it.

As in the forward, identifiers in the source are generated (runtime inputs are ``in0``, ``in1``, ...) and
numbers are printed from validated integers; no user text reaches the code.
"""

from __future__ import annotations

from .codegen import Bound, KernelPlan, _bound, _fill, _full_tile, _Pred, _rename_inputs, input_loads, plan
from .hashing import HASH_INIT, HASH_M1, HASH_M2, MASK32
from .ir import IR, And, Lin, Or, to_text
from .simplify import Canonical

__all__ = ["generate_bwd"]

_TEMPLATE_PATH = "kernel_bwd_template.py.txt"

def _plus(var: str, c: int) -> str:
    if c == 0:
        return f"({var})"
    return f"({var} + {c})" if c > 0 else f"({var} - {-c})"


def _query_interval(los: tuple[Bound, ...], his: tuple[Bound, ...]):
    """Invert one family for a key block [k_lo, k_hi] (code names): the query positions q for which
    max(los(q)) <= k <= min(his(q)) has a solution k in the block.

    Returns (q lower bounds, q upper bounds, runtime conditions) as code, or None if the family is empty
    for every key block. Every lower bound must be <= every upper bound (1-D Helly), the block's k_lo and
    k_hi counting as one more of each.
    """
    q_ge: list[str] = []
    q_le: list[str] = []
    conds: list[str] = []
    for kind, c in los:
        if kind == "q":
            q_le.append(_plus("k_hi", -c))                   # q + c <= k_hi
        else:
            conds.append(f"({c} <= k_hi)")                  # c <= k_hi
    for kind, c in his:
        if kind == "q":
            q_ge.append(_plus("k_lo", -c))                   # k_lo <= q + c
        else:
            conds.append(f"(k_lo <= {c})")                  # k_lo <= c
    for lkind, lc in los:
        for hkind, hc in his:
            if lkind == "q" and hkind == "q":
                if lc > hc:                                  # q + lc <= q + hc never holds
                    return None
            elif lkind == "q":
                q_le.append(str(hc - lc))                    # q + lc <= hc
            elif hkind == "q":
                q_ge.append(str(lc - hc))                    # lc <= q + hc
            elif lc > hc:
                return None
    return q_ge, q_le, conds


_DKDV_CALL = ("_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, qT_off, do_off, stride_qm, "
              "stride_dom, {start}, {full}, k_pos, k_valid, d_valid, off_b, off_h, Q_LEN, Q_START, KV_LEN, "
              "qk_scale{in_args}, BLOCK_M, EVEN_N, DOT_PRECISION)")

_DQ_CALL = ("_dq_tile(dq, q, do, lse, delta, k_base, v_base, kT_off, vT_off, stride_kn, stride_vn, "
            "{start}, {full}, q_pos, d_valid, off_b, off_h, KV_LEN, qk_scale{in_args}, BLOCK_N, "
            "EVEN_N, DOT_PRECISION)")

# One loop over a row's PARTIAL blocks, then its FULL blocks: a single copy of the tile in the kernel keeps
# the code small and the register allocation tight.
_TABLE_BODY = """variant = tl.load(Variant + off_bh)
row = variant * ({num} + 1) + {pid}
start_p = tl.load(RowPtrP + row)
num_p = tl.load(RowPtrP + row + 1) - start_p
start_f = tl.load(RowPtrF + row)
num_f = tl.load(RowPtrF + row + 1) - start_f
for t in range(0, num_p + num_f):
    full = t >= num_p
    blk = tl.load(tl.where(full, ColIdxF + start_f + (t - num_p), ColIdxP + start_p + t))
    {acc} = {call}"""


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _band_loop(lines: list[str], n_ranges: int, var: str, head: str, full_test, acc: str,
               call) -> str:
    """One loop over the block ranges of one or two families (the second one only outside the first one,
    so every block once), with the closed-form FULL test per tile. An empty range has b == a - 1, so
    with family 0 empty the two parts of family 1 meet at a0 and cover it once."""
    if n_ranges == 0:
        return ""
    if n_ranges == 1:
        text = f"for {var} in range(a0, b0 + 1):\n"
    else:
        lines += ["c1 = tl.minimum(b1, a0 - 1)",          # family 1 below family 0
                  "d1 = tl.maximum(a1, b0 + 1)",          # family 1 above family 0
                  "n0 = tl.maximum(b0 - a0 + 1, 0)",
                  "n1 = tl.maximum(c1 - a1 + 1, 0)",
                  "n2 = tl.maximum(b1 - d1 + 1, 0)"]
        text = (f"for t in range(0, n0 + n1 + n2):\n"
                f"    {var} = tl.where(t < n0, a0 + t, tl.where(t < n0 + n1, a1 + (t - n0), d1 + (t - n0 - n1)))\n")
    if head:
        text += _indent(head, 4) + "\n"
    full = full_test if isinstance(full_test, bool) else "full"
    if not isinstance(full_test, bool):
        text += f"    full = {full_test}\n"
    return text + f"    {acc} = {call(full)}"


def _template() -> str:
    from importlib import resources
    return resources.files(__package__).joinpath(_TEMPLATE_PATH).read_text()


def _transpose_pred(code: str) -> str:
    # the predicate indexes inputs as in{i}_q[:, None] and in{i}_k[None, :] (nothing else is subscripted
    # that way); the transposed tile swaps the two broadcasts
    return code.replace("[:, None]", "\0").replace("[None, :]", "[:, None]").replace("\0", "[None, :]")


def generate_bwd(canonical: Canonical, kplan: KernelPlan | None = None) -> str:
    """Return the source of the backward kernel module for a canonical pattern."""
    kplan = kplan or plan(canonical)
    n_in = len(kplan.inputs)
    pred_params = "".join(f", in{i}_q, in{i}_k" for i in range(n_in))
    kernel_params = "".join(f"In{i}, stride_in{i}, " for i in range(n_in))
    dq_tile_params = "".join(f", in{i}_q, In{i}, stride_in{i}" for i in range(n_in))
    dkdv_tile_params = "".join(f", in{i}_k, In{i}, stride_in{i}" for i in range(n_in))

    dq_k_loads, dq_q_loads = input_loads(kplan.inputs)   # dQ reads them as the forward does
    dkdv_q_loads, dkdv_k_loads = "", ""
    for i, (_, axis) in enumerate(kplan.inputs):
        base = f"In{i} + off_b * stride_in{i}"
        if axis == "k":   # one value per key position: read at absolute positions
            dkdv_k_loads += f"    in{i}_k = tl.load({base} + k_pos, mask=k_valid, other=0)\n"
            dkdv_q_loads += (f"        in{i}_q = tl.load({base} + q_pos, mask=m_valid & (q_pos >= 0) & "
                             f"(q_pos < KV_LEN), other=0)\n")
        else:             # one value per query row; never read at k (the checker forbids it)
            dkdv_k_loads += f"    in{i}_k = k_pos\n"
            dkdv_q_loads += f"        in{i}_q = tl.load({base} + offs_m, mask=m_valid, other=0)\n"

    def dq_call(full, start: str) -> str:
        return _DQ_CALL.format(start=start, full=full, in_args=dq_tile_params)

    def dkdv_call(full, start: str) -> str:
        return _DKDV_CALL.format(start=start, full=full, in_args=dkdv_tile_params)

    if kplan.mode == "table":
        dq_body = _indent(_TABLE_BODY.format(num="NUM_QB", pid="pid_m", acc="dq",
                                             call=dq_call("full", "blk * BLOCK_N")), 4)
        dkdv_body = _indent(_TABLE_BODY.format(num="NUM_KB", pid="pid_n", acc="dk, dv",
                                               call=dkdv_call("full", "blk * BLOCK_M")), 8)
        dkdv_ranges = ""
    else:
        full_test = _full_tile(canonical.ir)
        # dQ: the forward's key-block ranges per query block
        lines = []
        for j, (lo_terms, hi_terms) in enumerate(kplan.families):
            lines.append(f"lk{j} = tl.maximum({_bound(lo_terms, 'maximum', '0')}, 0)")
            lines.append(f"hk{j} = {_bound(hi_terms, 'minimum', 'KV_LEN - 1')}")
            lines.append(f"a{j} = lk{j} // BLOCK_N")
            lines.append(f"b{j} = tl.where(hk{j} < lk{j}, a{j} - 1, hk{j} // BLOCK_N)")
        head = "k_lo = kb * BLOCK_N\nk_hi = tl.minimum(k_lo + BLOCK_N, KV_LEN) - 1"
        loop = _band_loop(lines, len(kplan.families), "kb", head, full_test,
                          "dq", lambda f: dq_call(f, "k_lo"))
        dq_body = _indent("\n".join(lines) + "\n" + loop, 4)

        # dK/dV: the query-block ranges of each family, inverted per key block
        inverted = [inv for inv in (_query_interval(lo, hi) for lo, hi in kplan.bounds) if inv is not None]
        lines = []
        for j, (q_ge, q_le, conds) in enumerate(inverted):
            lines.append(f"lq{j} = {_bound(q_ge, 'maximum', 'Q_START')}")
            hi = _bound(q_le, "minimum", "Q_START + Q_LEN - 1")
            if conds:
                hi = f"tl.where({' & '.join(conds)}, {hi}, lq{j} - 1)"
            lines.append(f"hq{j} = {hi}")
            lines.append(f"ra{j} = lq{j} - Q_START")
            lines.append(f"rb{j} = hq{j} - Q_START")
            lines.append(f"a{j} = ra{j} // BLOCK_M")
            lines.append(f"b{j} = tl.where(rb{j} < ra{j}, a{j} - 1, rb{j} // BLOCK_M)")
        head = "" if isinstance(full_test, bool) else \
            "q_lo = Q_START + qb * BLOCK_M\nq_hi = Q_START + tl.minimum(qb * BLOCK_M + BLOCK_M, Q_LEN) - 1"
        loop = _band_loop(lines, len(inverted), "qb", head, full_test,
                          "dk, dv", lambda f: dkdv_call(f, "qb * BLOCK_M"))
        dkdv_ranges = _indent("\n".join(lines), 4) + "\n" if lines else ""
        dkdv_body = _indent(loop, 8) if loop else "        pass"

    pred = _Pred(kplan.inputs).ir(canonical.ir)
    return _fill(_template(), {
        # the canonical mask with runtime inputs under their generated names: no user identifier in the module
        "KEY": kplan.key, "TEXT": to_text(_rename_inputs(canonical.ir, {n: f"in{i}" for i, (n, _) in
                                                                         enumerate(kplan.inputs)})),
        "MODE": kplan.mode, "MASK": str(MASK32),
        "M1": str(HASH_M1), "M2": str(HASH_M2), "INIT": str(HASH_INIT), "PRED": pred,
        "PRED_T": _transpose_pred(pred), "PRED_PARAMS": pred_params, "PRED_ARGS": pred_params,
        "KERNEL_PARAMS": kernel_params, "DQ_TILE_PARAMS": dq_tile_params, "DKDV_TILE_PARAMS": dkdv_tile_params,
        "DQ_K_LOADS": dq_k_loads, "DQ_Q_LOADS": dq_q_loads, "DKDV_K_LOADS": dkdv_k_loads,
        "DKDV_Q_LOADS": dkdv_q_loads, "DKDV_RANGES": dkdv_ranges, "DKDV_BODY": dkdv_body, "DQ_BODY": dq_body,
    })
