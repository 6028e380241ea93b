"""Block masks of row-interval patterns lowered on the inputs' device with torch operations.

Handled exactly: a mask whose allowed keys are, for each query row, one interval ``[lo(q), hi(q)]`` --
computed element-wise from the row's position, int[q] inputs, int[k] inputs read at ``q``, int[b] inputs
and constants -- joined by ``or`` with conditions on the key alone (flags read at ``k``). The interval comes
from an and/or tree of linear conditions (``causal``, windows, ranges of k or q), bounds of ``k`` against a
row value (``k < prefix_len[q]``, ``k < seq_len[b]``, ``k >= start[q]``) and conditions on the row alone
(``is_global[q] != 0``): `and` intersects intervals, `or` joins them. Conditions on the key alone may
instead be joined by `and` with the rest (key padding: ``causal and is_real[k] != 0``). So prefix_lm_dynamic,
prefix_lm_lengths, causal_padded, longformer_flags and patterns over document starts are handled. Anything
else returns None and takes the closed-form lowering (compiler/lower/); so do shapes where an `or` of two
intervals leaves a hole in some row, or the rows of a query block leave a hole between their intervals
(both checked on the device, read with the one synchronisation).

Per tile, with U the keys some row of the query block allows and C the flagged keys: the tile is EMPTY when
its keys meet neither U nor C; U is one interval (no hole, checked), so the non-empty tiles of a query block
are one range of key blocks plus the flagged ones, and nothing else is a candidate. A tile is FULL when
every unflagged key of it lies in every row's interval: max lo <= the least unflagged key and min hi >= the
greatest -- per-block minima and maxima, exact. Key conditions joined by `and` keep a hull tile when a kept
key lies in the hull's part of it (prefix counts of the kept keys), and it is FULL when every key of it is
kept and every row covers it. Work: O(q_len + kv_len) element-wise, a sort of the rows
(the hole check), and O(non-empty tiles); one device->host synchronisation, for the tile count and the
checks.
"""

from __future__ import annotations

import torch

from ..compiler import nodes as N
from ..compiler.ir import And, Const, Lin, Opaque, Or
from ..compiler.semantics import BUILTINS, OPERATORS, constant, operator_of
from .tiles import Tiles

__all__ = ["row_form", "row_tiles"]

_BIG = 1 << 62
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "=="}


def _vars(e: N.Expr) -> set[str]:
    """The positions an AST expression reads: bare q/k/h/b and the index of q- or k-indexed inputs (an
    int[b] input's `[b]` is a constant per sequence, not a read)."""
    reads = [x for x in N.walk(e) if isinstance(x, N.Subscript) and isinstance(x.value, N.Name)]
    index = {id(x.index) for x in reads}
    out = {x.index.id for x in reads if x.index.id in ("q", "k")}
    return out | {x.id for x in N.walk(e) if isinstance(x, N.Name) and x.id in ("q", "k", "h", "b")
                  and id(x) not in index}


def _alternatives(ir) -> list:
    """The top-level `or` of the mask, opaque disjunctions opened."""
    out = []
    for a in (ir.args if isinstance(ir, Or) else (ir,)):
        if isinstance(a, Opaque) and isinstance(a.expr, N.BoolOp) and a.expr.op == "or":
            out += [Opaque(v) for v in a.expr.values]
        else:
            out.append(a)
    return out


def _k_bound(e: N.Expr):
    """(op, row expression) for ``k op X`` (either side first) with X not reading k; None otherwise."""
    if not (isinstance(e, N.Compare) and len(e.ops) == 1 and e.ops[0] in _FLIP):
        return None
    left, right, op = e.left, e.comparators[0], e.ops[0]
    if isinstance(right, N.Name) and right.id == "k":
        left, right, op = right, left, _FLIP[op]
    if isinstance(left, N.Name) and left.id == "k" and "k" not in _vars(right):
        return op, right
    return None


def _row_ok(node) -> bool:
    """Whether a node is an interval of keys per row (see the module docstring)."""
    if isinstance(node, (Const, Lin)):
        return True
    if isinstance(node, (And, Or)):
        return all(_row_ok(a) for a in node.args)
    e = node.expr if isinstance(node, Opaque) else node
    if isinstance(e, N.BoolOp):
        return all(_row_ok(v) for v in e.values)
    if _k_bound(e) is not None:
        return True
    return _vars(e) <= {"q"}


def _key_only(e: N.Expr) -> bool:
    return "k" in _vars(e) and _vars(e) <= {"k"} and _k_bound(e) is None


def row_form(ir):
    """(row alternatives, key-only alternatives, key-only conditions joined by `and`) when the IR is one this
    module lowers; None otherwise."""
    if isinstance(ir, And) and any(isinstance(a, Opaque) and _key_only(a.expr) for a in ir.args):
        keys = tuple(a.expr for a in ir.args if isinstance(a, Opaque) and _key_only(a.expr))
        rest = [a for a in ir.args if not (isinstance(a, Opaque) and _key_only(a.expr))]
        node = And(tuple(rest)) if len(rest) > 1 else rest[0] if rest else Const(True)
        return ((node,), (), keys) if _row_ok(node) else None
    rows, cols = [], []
    for a in _alternatives(ir):
        if isinstance(a, Opaque) and _key_only(a.expr):
            cols.append(a.expr)
        elif _row_ok(a):
            rows.append(a)
        else:
            return None
    return (tuple(rows), tuple(cols), ()) if rows or cols else None


class _Eval:
    """Element-wise values of AST expressions at positions q (rows) or k (keys), per stored variant."""

    def __init__(self, inputs, axes, pos: dict, device):
        self.inputs, self.axes, self.pos, self.device = inputs, axes, pos, device

    def int(self, e):
        if isinstance(e, N.Num):
            return torch.tensor(e.value, dtype=torch.int64, device=self.device)
        if isinstance(e, N.Name):
            return self.pos[e.id]
        if isinstance(e, N.Subscript):
            t = self.inputs[e.value.id]
            if e.index.id == "b":
                return t[:, :1]
            if self.axes[e.value.id] == "q":
                return t
            return t if e.index.id == "k" else t.index_select(1, self.pos["q"].reshape(-1))   # int[k] at q
        if isinstance(e, (N.Unary, N.BinOp)):
            return operator_of(e).torch(*map(self.int, (e.operand,) if isinstance(e, N.Unary) else (e.left, e.right)))
        if isinstance(e, N.Call) and BUILTINS[e.func].torch is not None:
            return BUILTINS[e.func].torch(*map(self.int, e.args))
        raise LookupError(type(e).__name__)

    def bool(self, e):
        if isinstance(e, N.BoolLit):
            return torch.tensor(e.value, device=self.device)
        if isinstance(e, N.BoolOp):
            return OPERATORS[e.op].torch(*map(self.bool, e.values))
        if isinstance(e, N.Unary):
            return ~self.bool(e.operand)
        if isinstance(e, N.Compare):
            out, left = torch.tensor(True, device=self.device), self.int(e.left)
            for op, right in zip(e.ops, e.comparators):
                if op in ("in", "not in"):   # the table's torch column keeps a set's values on the CPU
                    c = constant(right)
                    hit = OPERATORS["in"].torch(left, c) if isinstance(c, range) else \
                        torch.isin(left, torch.tensor(sorted(c), dtype=torch.int64, device=self.device))
                    out = out & (hit if op == "in" else ~hit)
                else:
                    r = self.int(right)
                    out, left = out & OPERATORS[op].torch(left, r), r
            return out
        return self.int(e) != 0


class _Rows:
    """Each row's interval of keys [lo, hi] (clipped to the keys; empty when lo > hi) and whether every `or`
    joined touching intervals (`ok`)."""

    def __init__(self, ev: _Eval, kv_len: int):
        self.ev, self.n = ev, kv_len
        self.ok = torch.tensor(True, device=ev.device)

    def _clip(self, lo, hi):
        return torch.clamp(lo, min=0), torch.clamp(hi, max=self.n - 1)

    def _when(self, cond):
        return torch.where(cond, 0, self.n), torch.where(cond, self.n - 1, -1)

    def of(self, node):
        if isinstance(node, Const):
            return self._when(torch.tensor(node.value, device=self.ev.device))
        if isinstance(node, Lin):
            return self._lin(node)
        if isinstance(node, (And, Or)):
            return self._join(isinstance(node, And), [self.of(a) for a in node.args])
        e = node.expr if isinstance(node, Opaque) else node
        if isinstance(e, N.BoolOp):
            return self._join(e.op == "and", [self.of(v) for v in e.values])
        bound = _k_bound(e)
        if bound is None:
            return self._when(self.ev.bool(e))
        op, x = bound
        x = self.ev.int(x)
        lo, hi = {"<": (-_BIG, x - 1), "<=": (-_BIG, x), ">": (x + 1, _BIG), ">=": (x, _BIG), "==": (x, x)}[op]
        return self._clip(torch.as_tensor(lo, device=x.device), torch.as_tensor(hi, device=x.device))

    def _lin(self, a: Lin):
        v = a.cq * self.ev.pos["q"]
        lo = -_BIG if a.lo is None else a.lo
        hi = _BIG if a.hi is None else a.hi
        if a.ck == 0:
            return self._when((v >= lo) & (v <= hi))
        t_lo, t_hi = lo - v, hi - v          # ck * k in [t_lo, t_hi]
        if a.ck < 0:
            t_lo, t_hi = -t_hi, -t_lo
        c = abs(a.ck)
        k_lo = -torch.div(-t_lo, c, rounding_mode="floor")
        k_hi = torch.div(t_hi, c, rounding_mode="floor")
        return self._clip(k_lo, k_hi)

    def _join(self, conj: bool, parts):
        lo, hi = parts[0]
        for lo2, hi2 in parts[1:]:
            if conj:
                lo, hi = torch.maximum(lo, lo2), torch.minimum(hi, hi2)
                continue
            e1, e2 = lo > hi, lo2 > hi2
            self.ok = self.ok & (e1 | e2 | (torch.maximum(lo, lo2) <= torch.minimum(hi, hi2) + 1)).all()
            lo, hi = (torch.where(e1, lo2, torch.where(e2, lo, torch.minimum(lo, lo2))),
                      torch.where(e1, hi2, torch.where(e2, hi, torch.maximum(hi, hi2))))
        return lo, hi


def _at(a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    return a.index_select(0, i)   # a gather along one axis: cheaper than general indexing


def _blocks(x, n: int, block: int, fill: int, reduce):
    """Per-block reduction of x [V, n] along its last axis (the last block padded with `fill`)."""
    nb = -(-n // block)
    pad = nb * block - n
    if pad:
        x = torch.cat([x, x.new_full((x.shape[0], pad), fill)], 1)
    return reduce(x.reshape(x.shape[0], nb, block), 2)


def row_tiles(form, inputs: dict, axes: dict, q_len: int, kv_len: int, q_start: int, block_q: int,
              block_k: int):
    """The Tiles (runtime/tiles.py) of a row-interval pattern (`form` from row_form) on the inputs' device:
    inputs int64 [V' (1 or batch), length] by name ([V', 1] for int[b]); None when the caller must lower in
    closed form (a hole found, query positions outside an int[k] input read at q, an empty shape)."""
    rows_alt, cols_alt, cols_and = form
    if q_len == 0 or kv_len == 0 or not inputs:
        return None
    reads_k_at_q = any(axes[x.value.id] == "k" and x.index.id == "q" for a in rows_alt
                       for x in N.walk(a.expr if isinstance(a, Opaque) else a) if isinstance(x, N.Subscript)
                       and isinstance(x.value, N.Name))
    if reads_k_at_q and (q_start < 0 or q_start + q_len > kv_len):
        return None
    device = next(iter(inputs.values())).device
    V = max(t.shape[0] for t in inputs.values())
    nqb, nkb = -(-q_len // block_q), -(-kv_len // block_k)
    p = (q_start + torch.arange(q_len, device=device)).view(1, -1)
    k = torch.arange(kv_len, device=device).view(1, -1)
    try:
        rows = _Rows(_Eval(inputs, axes, {"q": p}, device), kv_len)
        if rows_alt:
            lo, hi = rows._join(False, [rows.of(a) for a in rows_alt])
        else:
            lo, hi = rows._when(torch.tensor(False, device=device))
        ev_k = _Eval(inputs, axes, {"k": k}, device)
        col = torch.zeros(1, kv_len, dtype=torch.bool, device=device)
        for e in cols_alt:
            col = col | ev_k.bool(e)
        keep = torch.ones(1, kv_len, dtype=torch.bool, device=device)
        for e in cols_and:
            keep = keep & ev_k.bool(e)
    except LookupError:
        return None
    lo = torch.broadcast_to(torch.as_tensor(lo, device=device), (V, q_len)).to(torch.int64)
    hi = torch.broadcast_to(torch.as_tensor(hi, device=device), (V, q_len)).to(torch.int64)
    col = torch.broadcast_to(col, (V, kv_len))
    ne = lo <= hi

    # per query block: the hull of its rows' intervals, and the least upper / greatest lower end
    h_lo = _blocks(torch.where(ne, lo, _BIG), q_len, block_q, _BIG, torch.amin)
    h_hi = _blocks(torch.where(ne, hi, -1), q_len, block_q, -1, torch.amax)
    max_lo = _blocks(lo, q_len, block_q, -_BIG, torch.amax)
    min_hi = _blocks(hi, q_len, block_q, _BIG, torch.amin)
    # no hole between the rows of a block: sorted by lo, each row starts at most one past the ends before it
    S = kv_len + 2
    bid = (torch.arange(V, device=device).view(-1, 1) * nqb
           + torch.div(torch.arange(q_len, device=device), block_q, rounding_mode="floor").view(1, -1))
    key = (bid * S + torch.where(ne, lo, kv_len + 1)).reshape(-1)
    order = torch.sort(key).indices
    lo_s, hi_s, ne_s, bid_s = (x.reshape(-1)[order] for x in (lo, hi, ne, bid))
    reach = torch.cummax(torch.where(ne_s, bid_s * S + hi_s + 1, bid_s * S), 0).values
    hole = (ne_s[1:] & (bid_s[1:] == bid_s[:-1]) & (lo_s[1:] > reach[:-1] - bid_s[1:] * S)).any()

    # per key block: flagged keys, and the least and greatest unflagged key
    kk = torch.broadcast_to(k, (V, kv_len))
    any_c = _blocks(col, kv_len, block_k, False, torch.any)
    kn_lo = _blocks(torch.where(col, _BIG, kk), kv_len, block_k, _BIG, torch.amin)
    kn_hi = _blocks(torch.where(col, -1, kk), kv_len, block_k, -1, torch.amax)
    kbs = torch.arange(nkb, device=device)
    flagged = torch.sort(torch.where(any_c, kbs.view(1, -1), nkb), 1).values      # [V, nkb], nkb pads
    n_flag = any_c.sum(1, keepdim=True)

    has = h_lo <= h_hi
    hb_lo = torch.where(has, torch.div(h_lo, block_k, rounding_mode="floor"), nkb)
    hb_hi = torch.where(has, torch.div(h_hi, block_k, rounding_mode="floor"), nkb - 1)
    before = torch.searchsorted(flagged, hb_lo.contiguous())
    after = torch.searchsorted(flagged, hb_hi.contiguous(), right=True)
    counts = torch.stack([before, hb_hi - hb_lo + 1, n_flag - after], -1).reshape(-1)
    total, ok = torch.stack([counts.sum(), (rows.ok & ~hole).to(torch.int64)]).tolist()   # the one sync
    if not ok:
        return None

    if cols_alt:   # per query block: flagged blocks before the hull, the hull, flagged blocks after it
        seg = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts, output_size=total)
        j = torch.arange(total, device=device) - _at(torch.cumsum(counts, 0) - counts, seg)
        row, part = torch.div(seg, 3, rounding_mode="floor"), seg % 3
        v = torch.div(row, nqb, rounding_mode="floor")
        at = torch.where(part == 0, j, _at(after.reshape(-1), row) + j).clamp(max=nkb - 1)
        kb = torch.where(part == 1, _at(hb_lo.reshape(-1), row) + j, _at(flagged.reshape(-1), v * nkb + at))
    else:          # the hull alone
        counts = counts.view(-1, 3)[:, 1].contiguous()
        row = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts, output_size=total)
        kb = torch.arange(total, device=device) - _at(torch.cumsum(counts, 0) - counts - hb_lo.reshape(-1), row)
        v = torch.div(row, nqb, rounding_mode="floor")
    qb = row - v * nqb
    col_at = v * nkb + kb
    lo_k, hi_k = _at(kn_lo.reshape(-1), col_at), _at(kn_hi.reshape(-1), col_at)
    full = (lo_k > hi_k) | ((_at(max_lo.reshape(-1), row) <= lo_k) & (_at(min_hi.reshape(-1), row) >= hi_k))
    kind = full.to(torch.int64) + 1
    if cols_and:   # keys kept by `and`: a hull tile is non-empty when a kept key lies in the hull's part of it
        keep = torch.broadcast_to(keep, (V, kv_len))
        cum = torch.cat([keep.new_zeros(V, 1, dtype=torch.int64), torch.cumsum(keep.to(torch.int64), 1)], 1)
        a = torch.maximum(_at(h_lo.reshape(-1), row), kb * block_k)
        b = torch.minimum(_at(h_hi.reshape(-1), row), torch.clamp((kb + 1) * block_k, max=kv_len) - 1)
        flat = cum.reshape(-1)
        hit = _at(flat, v * (kv_len + 1) + b + 1) > _at(flat, v * (kv_len + 1) + a)
        every = _at(_blocks(keep, kv_len, block_k, True, torch.all).reshape(-1), col_at)
        kind = torch.where(hit, (full & every).to(torch.int64) + 1, 0)
    return Tiles(v, qb, kb, kind, V, nqb, nkb, block_q, block_k)
