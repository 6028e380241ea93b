"""Band plans: the one derivation of the block loops of the forward, dQ and dK/dV kernels.

A band plan's allowed keys of a query q are one or two families of intervals max(lower bounds) <= k <=
min(upper bounds), each bound ``q + c`` or a constant (plan.key_families). Every kernel walks blocks the same
way:

1. per family j, the positions [lo_j, hi_j] its program's block may meet -- keys of a query block
   [q_lo, q_hi] (forward, dQ: :func:`key_ranges`), or query rows of a key block [k_lo, k_hi] (dK/dV:
   :func:`query_ranges`, the families inverted) -- and from them the block range [a_j, b_j], empty as
   b_j = a_j - 1;
2. one loop over the union (:func:`walk`): family 0's blocks, then family 1's below and above them, so every
   block is visited once and the tile code stands once in the kernel.

Per tile, :func:`full_test` is the closed-form proof that every pair of the tile is allowed (then the
predicate is skipped).
"""

from __future__ import annotations

from .. import semantics as S
from ..ir import IR, And, Const, Lin, Or
from .plan import Bound, KernelPlan, bound_code
from .template import render

__all__ = ["key_ranges", "query_ranges", "block_ranges", "loop", "walk", "full_test"]


def _chain(terms, fn: str, default: str) -> str:
    """`default` combined with `terms` by the language's min or max, as Triton code (the semantics table's)."""
    return S.BUILTINS[fn].triton(default, *terms)


def key_ranges(kplan: KernelPlan, kv_start: bool = False) -> list[tuple[str, str]]:
    """Per family, the keys [lo, hi] that queries of the block [q_lo, q_hi] may attend (forward, dQ);
    constant bounds are folded into one. With `kv_start`, key row 0 sits at absolute position KV_START: the
    ranges are returned as rows (positions minus KV_START) cut to [0, KV_LEN)."""
    out = []
    for los, his in kplan.bounds:
        lo_c = [c for kind, c in los if kind == "c"]
        hi_c = [c for kind, c in his if kind == "c"]
        floor = max([0, *lo_c])
        if kv_start:   # rows: every bound minus KV_START (the same positions; subtracting inside the bounds,
            # not from their max / min, kept the fp32 band kernels spill-free on sm_80)
            q_los = [bound_code(b, "q_lo - KV_START") for b in los if b[0] == "q"]
            q_his = [bound_code(b, "q_hi - KV_START") for b in his if b[0] == "q"]
            lo = _chain(q_los + ([f"{floor} - KV_START"] if floor else []), "max", "0")
            hi = _chain(q_his + ([f"{min(hi_c)} - KV_START"] if hi_c else []), "min", "KV_LEN - 1")
        else:
            lo = _chain([bound_code(b, "q_lo") for b in los if b[0] == "q"], "max", str(floor))
            hi = _chain([bound_code(b, "q_hi") for b in his if b[0] == "q"] + ([str(min(hi_c))] if hi_c else []),
                        "min", "KV_LEN - 1")
        out.append((lo, hi))
    return out


def _invert(los: tuple[Bound, ...], his: tuple[Bound, ...]):
    """One family inverted for a key block [k_lo, k_hi]: the queries q for which max(los(q)) <= k <=
    min(his(q)) has a solution k in the block -- every lower bound <= every upper bound (1-D Helly), k_lo and
    k_hi counting as one more of each. Returns (q lower bounds, q upper bounds, conditions on the block) as
    code, or None if the family is empty for every key block."""
    q_ge: list[str] = []
    q_le: list[str] = []
    conds: list[str] = []
    for kind, c in los:
        if kind == "q":
            q_le.append(bound_code(("q", -c), "k_hi"))      # q + c <= k_hi
        else:
            conds.append(f"({c} <= k_hi)")
    for kind, c in his:
        if kind == "q":
            q_ge.append(bound_code(("q", -c), "k_lo"))      # k_lo <= q + c
        else:
            conds.append(f"(k_lo <= {c})")
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


def query_ranges(kplan: KernelPlan) -> list[tuple[str, str]]:
    """Per family, the query rows [lo, hi] (counted from Q_START) that may attend the key block [k_lo, k_hi]
    (dK/dV); families empty for every key block are left out."""
    out = []
    for inverted in (_invert(los, his) for los, his in kplan.bounds):
        if inverted is None:
            continue
        q_ge, q_le, conds = inverted
        lo = f"{_chain(q_ge, 'max', 'Q_START')} - Q_START" if q_ge else "0"
        hi = f"{_chain(q_le, 'min', 'Q_START + Q_LEN - 1')} - Q_START" if q_le else "Q_LEN - 1"
        if conds:   # a constant bound the block misses: no rows (hi = -1 < lo)
            hi = f"tl.where({' & '.join(conds)}, {hi}, -1)"
        out.append((lo, hi))
    return out


def block_ranges(ranges: list[tuple[str, str]], block: str) -> str:
    """Per family j of `ranges` (positions [lo, hi] as code), the block range [a_j, b_j] for blocks of
    `block` positions (an empty range has b_j = a_j - 1); with two families, the parts of family 1 outside
    family 0 that :func:`loop` walks after it."""
    parts = [render("band_range", j=j, lo=lo, hi=hi, BLOCK=block) for j, (lo, hi) in enumerate(ranges)]
    return "\n".join(parts + ([render("band_union")] if len(ranges) == 2 else []))


def loop(n_ranges: int, var: str, body: str) -> str:
    """One loop binding `var` to every block of the union of the `n_ranges` block ranges once, running
    `body`; '' when there is no range."""
    if n_ranges == 0:
        return ""
    return render("band_loop" if n_ranges == 1 else "band_loop2", var=var, body=body)


def walk(ranges: list[tuple[str, str]], block: str, var: str, body: str) -> str:
    """The block ranges of `ranges`, then the loop over their union."""
    return block_ranges(ranges, block) + "\n" + loop(len(ranges), var, body)


def full_test(node: IR, keys: tuple[str, str] = ("k_lo", "k_hi")):
    """Scalar code over (q_lo, q_hi) and the tile's first and last key position `keys` (code; k_lo, k_hi by
    default) proving every pair of a tile allowed, or True / False when that is known for every tile."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Lin):
        parts = []
        if node.lo is not None:
            parts.append(f"({_extreme(node, 'min', keys)} >= {node.lo})")
        if node.hi is not None:
            parts.append(f"({_extreme(node, 'max', keys)} <= {node.hi})")
        return parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")" if parts else True
    if isinstance(node, (And, Or)):
        is_and = isinstance(node, And)
        parts = []
        for a in node.args:
            t = full_test(a, keys)
            if t is (not is_and):        # False in an `and`, True in an `or` decides it
                return not is_and
            if t is is_and:
                continue
            parts.append(t)
        if not parts:
            return is_and
        return "(" + (" & " if is_and else " | ").join(parts) + ")"
    return False   # modular and opaque conditions: the predicate decides element-wise


def _extreme(node: Lin, which: str, keys: tuple[str, str]) -> str:
    """cq*q + ck*k at its minimum or maximum over the tile, as code."""
    terms = []
    for coef, lo, hi in ((node.cq, "q_lo", "q_hi"), (node.ck, *keys)):
        if coef == 0:
            continue
        var = (lo if coef > 0 else hi) if which == "min" else (hi if coef > 0 else lo)
        mag = "" if abs(coef) == 1 else f"{abs(coef)} * "
        terms.append(("- " if coef < 0 else "+ ") + mag + var)
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]

