"""Stage 3 -- simplify: a checked pattern -> canonical IR, canonical text and a stable key.

Linear comparisons are normalised with sympy into interval atoms over a linear form in q and k
(``q - k < w`` and ``not (k > q)`` become ``lo <= q - k <= hi``); negations are pushed into the atoms;
conjunctions intersect intervals and residue sets of the same form, disjunctions merge them; clauses implied
by a sibling are absorbed; operands are sorted by their text. Two spellings of the same pattern --
reordered clauses, negated comparisons, chained comparisons, redundant intersections -- reach the same
canonical text and so the same key, and so share one kernel.

Known limit: distributivity is not applied (``(a and b) or (a and c)`` and ``a and (b or c)`` keep
different texts); both are still simplified and both are correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import gcd

import sympy

from ..errors import EmptyPatternError, Span
from . import nodes as N
from .check import CheckedPattern, _ARITH, _compare, literal
from .hashing import hash32
from .ir import FALSE, IR, TRUE, And, Const, Lin, Mod, Opaque, Or, to_text
from .unparse import unparse_expr

__all__ = ["Canonical", "simplify", "to_ir", "specialize", "normalize", "uses"]

_Q, _K, _H, _B = sympy.symbols("q k h b", integer=True)
_SYMBOLS = {"q": _Q, "k": _K, "h": _H, "b": _B}
MAX_SET_EXPANSION = 256  # `x in S` becomes a union of intervals when S has at most this many elements


@dataclass(frozen=True, slots=True)
class Canonical:
    """The canonical form of a pattern (stage 3's output).

    Attributes:
        ir: the simplified IR.
        text: the canonical mask as pattern text.
        inputs: the runtime inputs it reads, as (name, axis) pairs.
        key: a hex digest of text and inputs: equal for equivalent spellings.
    """

    ir: IR
    text: str
    inputs: tuple[tuple[str, str], ...]
    key: str

    def source(self, name: str = "canonical") -> str:
        """The canonical form as a complete pattern file."""
        lines = [f"pattern {name}():"]
        lines += [f"    input {n}: int[{a}]" for n, a in self.inputs]
        lines.append(f"    mask {self.text}")
        return "\n".join(lines) + "\n"


# -- folding with some variables fixed (per-head and per-batch specialisation) -----------------------


def uses(expr: N.Expr, name: str) -> bool:
    """Whether the variable `name` occurs in `expr`."""
    return any(isinstance(x, N.Name) and x.id == name for x in N.walk(expr))


def _const(e: N.Expr):
    if isinstance(e, (N.Num, N.BoolLit)):
        return e.value
    if isinstance(e, (N.SetLit, N.ListLit)):
        return e
    return None


def specialize(expr: N.Expr, env: dict[str, int]) -> N.Expr:
    """Substitute integer values for variables (e.g. h=3) and fold what becomes constant."""
    def go(e):
        if isinstance(e, N.Name):
            return N.Num(env[e.id], e.span) if e.id in env else e
        if isinstance(e, (N.Num, N.BoolLit, N.SetLit, N.ListLit)):
            return e
        if isinstance(e, N.Unary):
            x = go(e.operand)
            if isinstance(x, (N.Num, N.BoolLit)):
                return literal((not x.value) if e.op == "not" else -x.value, e.span)
            return N.Unary(e.op, x, e.span)
        if isinstance(e, N.BinOp):
            a, b = go(e.left), go(e.right)
            if isinstance(a, N.Num) and isinstance(b, N.Num):
                return N.Num(_ARITH[e.op](a.value, b.value), e.span)
            return N.BinOp(e.op, a, b, e.span)
        if isinstance(e, N.BoolOp):
            absorbing = e.op == "or"
            kept = []
            for v in (go(x) for x in e.values):
                if isinstance(v, N.BoolLit):
                    if v.value == absorbing:
                        return N.BoolLit(absorbing, e.span)
                    continue
                kept.append(v)
            if not kept:
                return N.BoolLit(not absorbing, e.span)
            return kept[0] if len(kept) == 1 else N.BoolOp(e.op, tuple(kept), e.span)
        if isinstance(e, N.Compare):
            left = go(e.left)
            rights = tuple(go(c) for c in e.comparators)
            if len(e.ops) == 1 and isinstance(left, N.Num):
                r = rights[0]
                if isinstance(r, N.Num):
                    return N.BoolLit(_compare(e.ops[0], left.value, r.value), e.span)
                if isinstance(r, (N.SetLit, N.ListLit)):
                    return N.BoolLit(_compare(e.ops[0], left.value, [x.value for x in r.elts]), e.span)
                if isinstance(r, N.Call) and r.func == "range":
                    return N.BoolLit(_compare(e.ops[0], left.value, range(*[a.value for a in r.args])), e.span)
            return N.Compare(left, e.ops, rights, e.span)
        if isinstance(e, N.Call):
            if e.func == "range":
                return e
            args = tuple(go(a) for a in e.args)
            if all(isinstance(a, N.Num) for a in args):
                vals = [a.value for a in args]
                fn = {"abs": lambda v: abs(v[0]), "min": min, "max": max, "hash": lambda v: hash32(*v)}[e.func]
                return N.Num(fn(vals), e.span)
            return N.Call(e.func, args, e.kwargs, e.span)
        if isinstance(e, N.Subscript):
            idx = go(e.index)
            if isinstance(e.value, N.ListLit) and isinstance(idx, N.Num):
                elts = e.value.elts
                if not 0 <= idx.value < len(elts):
                    from ..errors import ArgumentError
                    raise ArgumentError(f"list index {idx.value} is out of range (the list has {len(elts)} "
                                        f"elements); check the number of heads")
                return N.Num(elts[idx.value].value, e.span)
            if isinstance(e.value, N.Name) and e.index.id in ("q", "k"):
                return e  # runtime inputs are indexed by positions, never specialised
            return N.Subscript(e.value, idx, e.span)
        raise TypeError(e)
    return go(expr)


# -- AST -> IR ------------------------------------------------------------------------------------


def _sym(e: N.Expr):
    """The sympy expression of a linear integer AST, or None if it is not linear in q, k, h, b."""
    if isinstance(e, N.Num):
        return sympy.Integer(e.value)
    if isinstance(e, N.Name) and e.id in _SYMBOLS:
        return _SYMBOLS[e.id]
    if isinstance(e, N.Unary) and e.op == "-":
        x = _sym(e.operand)
        return None if x is None else -x
    if isinstance(e, N.BinOp) and e.op in "+-*":
        a, b = _sym(e.left), _sym(e.right)
        if a is None or b is None:
            return None
        return a + b if e.op == "+" else a - b if e.op == "-" else a * b
    return None


def _linear_qk(expr) -> tuple[int, int, int] | None:
    """(cq, ck, c0) when `expr` is cq*q + ck*k + c0 with integer coefficients, else None."""
    expr = sympy.expand(expr)
    if expr.free_symbols - {_Q, _K}:
        return None
    poly = sympy.Poly(expr, _Q, _K)
    if poly.total_degree() > 1:
        return None
    cq, ck, c0 = (poly.coeff_monomial(m) for m in (_Q, _K, 1))
    if not all(c.is_integer for c in (cq, ck, c0)):
        return None
    return int(cq), int(ck), int(c0)


def _lin(cq: int, ck: int, lo: int | None, hi: int | None, span: Span | None) -> IR:
    """Normalise ``lo <= cq*q + ck*k <= hi`` (gcd 1, leading coefficient positive, k >= 0 folded in)."""
    if cq == 0 and ck == 0:
        return TRUE if (lo is None or lo <= 0) and (hi is None or 0 <= hi) else FALSE
    g = gcd(cq, ck)
    cq, ck = cq // g, ck // g
    lo = None if lo is None else -((-lo) // g)   # ceil
    hi = None if hi is None else hi // g
    if cq < 0 or (cq == 0 and ck < 0):
        cq, ck, lo, hi = -cq, -ck, (None if hi is None else -hi), (None if lo is None else -lo)
    if (cq, ck) == (0, 1):   # keys are never negative
        if hi is not None and hi < 0:
            return FALSE
        if lo is not None and lo <= 0:
            lo = None
    if lo is not None and hi is not None and lo > hi:
        return FALSE
    if lo is None and hi is None:
        return TRUE
    return Lin(cq, ck, lo, hi, span)


def _linear_compare(op: str, diff, span) -> IR | None:
    """IR for ``diff op 0`` when diff is linear in q and k."""
    lin = _linear_qk(diff)
    if lin is None:
        return None
    cq, ck, c0 = lin
    # cq*q + ck*k + c0 op 0  <=>  cq*q + ck*k op -c0
    t = -c0
    if op == "<":
        return _lin(cq, ck, None, t - 1, span)
    if op == "<=":
        return _lin(cq, ck, None, t, span)
    if op == ">":
        return _lin(cq, ck, t + 1, None, span)
    if op == ">=":
        return _lin(cq, ck, t, None, span)
    if op == "==":
        return _lin(cq, ck, t, t, span)
    if op == "!=":
        return _or([_lin(cq, ck, None, t - 1, span), _lin(cq, ck, t + 1, None, span)])
    return None


def _mod_compare(op: str, left: N.Expr, right: N.Expr, span) -> IR | None:
    """IR for ``(linear) % m op c`` (either side), else None."""
    if isinstance(right, N.BinOp) and right.op == "%" and isinstance(left, N.Num):
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
        left, right, op = right, left, flip[op]
    if not (isinstance(left, N.BinOp) and left.op == "%" and isinstance(left.right, N.Num)
            and isinstance(right, N.Num)):
        return None
    s = _sym(left.left)
    lin = None if s is None else _linear_qk(s)
    if lin is None:
        return None
    m = left.right.value
    cq, ck, c0 = lin
    values = [r for r in range(min(m, 0) + (1 if m < 0 else 0), max(m, 0)) if _compare(op, r, right.value)]
    if m < 0:  # Python: x % m is in (m, 0]; map to residues of -m via x % m == r  <=>  x % -m == r % -m
        values = [v % -m for v in values]
        m = -m
    return _mod(cq, ck, c0, m, values, span)


def _mod(cq, ck, c0, m, residues, span) -> IR:
    g = gcd(gcd(cq, ck), m)
    if g > 1:  # (g*x + c0) % (g*m') == r  <=>  c0 % g == r % g and (x + c0 // g) % m' == r // g
        keep = [r for r in residues if (r - c0) % g == 0]
        residues = sorted({((r - c0) // g) % (m // g) for r in keep})
        cq, ck, c0, m = cq // g, ck // g, 0, m // g
    if cq < 0 or (cq == 0 and ck < 0):
        cq, ck, c0 = -cq, -ck, -c0
        residues = [(-r) % m for r in residues]
    c0 %= m
    residues = tuple(sorted(set(r % m for r in residues)))
    if not residues:
        return FALSE
    if len(residues) == m:
        return TRUE
    return Mod(cq, ck, c0, m, residues, span)


def _membership(x: N.Expr, container: N.Expr, span) -> IR:
    if isinstance(container, N.Call):   # range(start, stop, step), all constant
        start, stop, step = (a.value for a in container.args)
        r = range(start, stop, step)
        if len(r) == 0:
            return FALSE
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
        parts = [_compare_ir(N.Compare(x, (">=",), (N.Num(lo),), span)),
                 _compare_ir(N.Compare(x, ("<=",), (N.Num(hi),), span))]
        if abs(step) > 1 and len(r) > 1:
            parts.append(_compare_ir(N.Compare(N.BinOp("%", N.BinOp("-", x, N.Num(lo)), N.Num(abs(step))),
                                               ("==",), (N.Num(0),), span)))
        return _and(parts)
    values = sorted({e.value for e in container.elts})
    if not values:
        return FALSE
    if len(values) > MAX_SET_EXPANSION:
        return Opaque(N.Compare(x, ("in",), (container,), span), span)
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    parts = []
    for lo, hi in runs:
        if lo == hi:
            parts.append(_compare_ir(N.Compare(x, ("==",), (N.Num(lo),), span)))
        else:
            parts.append(_and([_compare_ir(N.Compare(x, (">=",), (N.Num(lo),), span)),
                               _compare_ir(N.Compare(x, ("<=",), (N.Num(hi),), span))]))
    return _or(parts)


def _compare_ir(e: N.Compare) -> IR:
    if len(e.ops) > 1:  # checked expressions have single links, but stay general
        links, left = [], e.left
        for op, right in zip(e.ops, e.comparators):
            links.append(_compare_ir(N.Compare(left, (op,), (right,), e.span)))
            left = right
        return _and(links)
    op, right = e.ops[0], e.comparators[0]
    if op in ("in", "not in"):
        ir = _membership(e.left, right, e.span)
        return negate(ir) if op == "not in" else ir
    a, b = _sym(e.left), _sym(right)
    if a is not None and b is not None:
        ir = _linear_compare(op, a - b, e.span)
        if ir is not None:
            return ir
    ir = _mod_compare(op, e.left, right, e.span)
    if ir is not None:
        return ir
    minmax = _split_minmax(e)
    if minmax is not None:
        return minmax
    return Opaque(e, e.span)


def _split_minmax(e: N.Compare) -> IR | None:
    """Eliminate abs/min/max from a comparison by cases: A(max(x, y)) op B  <=> (x >= y and A(x) op B) or ..."""
    target = _find_minmax(e)
    # Only where the cases come out linear: splitting `abs(q // 64 - k // 64)` would just bloat the text.
    if target is None or any(_sym(a) is None for a in target.args):
        return None
    if target.func == "abs":
        x = target.args[0]
        cases = [(N.Compare(x, (">=",), (N.Num(0),), e.span), x),
                 (N.Compare(x, ("<",), (N.Num(0),), e.span), N.Unary("-", x, target.span))]
    else:
        x, rest = target.args[0], target.args[1:]
        y = rest[0] if len(rest) == 1 else N.Call(target.func, rest, (), target.span)
        first = "<=" if target.func == "min" else ">="
        second = ">" if target.func == "min" else "<"
        cases = [(N.Compare(x, (first,), (y,), e.span), x), (N.Compare(x, (second,), (y,), e.span), y)]
    out = []
    for cond, value in cases:
        replaced = _replace(e, target, value)
        out.append(_and([_compare_ir(cond), _compare_ir(replaced)]))
    return _or(out)


def _find_minmax(e) -> N.Call | None:
    if isinstance(e, N.Call) and e.func in ("abs", "min", "max"):
        return e
    if isinstance(e, N.Compare):
        for x in (e.left,) + e.comparators:
            r = _find_minmax(x)
            if r is not None:
                return r
    if isinstance(e, N.BinOp) and e.op in "+-*":
        return _find_minmax(e.left) or _find_minmax(e.right)
    if isinstance(e, N.Unary) and e.op == "-":
        return _find_minmax(e.operand)
    return None


def _replace(e, target, value):
    if e is target:
        return value
    if isinstance(e, N.Compare):
        return N.Compare(_replace(e.left, target, value), e.ops,
                         tuple(_replace(c, target, value) for c in e.comparators), e.span)
    if isinstance(e, N.BinOp):
        return N.BinOp(e.op, _replace(e.left, target, value), _replace(e.right, target, value), e.span)
    if isinstance(e, N.Unary):
        return N.Unary(e.op, _replace(e.operand, target, value), e.span)
    return e


def to_ir(expr: N.Expr) -> IR:
    """Translate a checked boolean expression into (unsimplified-but-normalised) IR."""
    if isinstance(expr, N.BoolLit):
        return TRUE if expr.value else FALSE
    if isinstance(expr, N.BoolOp):
        parts = [to_ir(v) for v in expr.values]
        return _and(parts) if expr.op == "and" else _or(parts)
    if isinstance(expr, N.Unary) and expr.op == "not":
        return negate(to_ir(expr.operand))
    if isinstance(expr, N.Compare):
        return _compare_ir(expr)
    return Opaque(expr, getattr(expr, "span", None))


# -- negation and normalisation -------------------------------------------------------------------


def negate(node: IR) -> IR:
    """The negation of `node`, pushed down to the atoms."""
    if isinstance(node, Const):
        return Const(not node.value)
    if isinstance(node, Lin):
        parts = []
        if node.lo is not None:
            parts.append(_lin(node.cq, node.ck, None, node.lo - 1, node.span))
        if node.hi is not None:
            parts.append(_lin(node.cq, node.ck, node.hi + 1, None, node.span))
        return _or(parts)
    if isinstance(node, Mod):
        rest = [r for r in range(node.m) if r not in node.residues]
        return _mod(node.cq, node.ck, node.c0, node.m, rest, node.span)
    if isinstance(node, Opaque):
        e = node.expr
        if isinstance(e, N.Unary) and e.op == "not":
            return Opaque(e.operand, node.span)
        if isinstance(e, N.Compare) and len(e.ops) == 1:
            flip = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "==", "in": "not in",
                    "not in": "in"}
            return Opaque(N.Compare(e.left, (flip[e.ops[0]],), e.comparators, e.span), node.span)
        return Opaque(N.Unary("not", e, node.span), node.span)
    if isinstance(node, And):
        return _or([negate(a) for a in node.args])
    return _and([negate(a) for a in node.args])


def _implies(a: IR, b: IR) -> bool:
    """A cheap, sound test of a => b."""
    if a == b or isinstance(b, Const) and b.value or isinstance(a, Const) and not a.value:
        return True
    if isinstance(a, Lin) and isinstance(b, Lin) and a.form == b.form:
        lo_ok = b.lo is None or (a.lo is not None and a.lo >= b.lo)
        hi_ok = b.hi is None or (a.hi is not None and a.hi <= b.hi)
        return lo_ok and hi_ok
    if isinstance(a, Mod) and isinstance(b, Mod) and a.key == b.key:
        return set(a.residues) <= set(b.residues)
    if isinstance(b, Or):
        return any(_implies(a, x) for x in b.args)
    if isinstance(a, And):
        return any(_implies(x, b) for x in a.args)
    if isinstance(a, Or):
        return all(_implies(x, b) for x in a.args)
    if isinstance(b, And):
        return all(_implies(a, x) for x in b.args)
    return False


def _sort_key(node: IR) -> tuple:
    rank = {Const: 0, Lin: 1, Mod: 2, Opaque: 3, And: 4, Or: 4}[type(node)]
    return (rank, to_text(node))


def _and(parts: list[IR]) -> IR:
    flat: list[IR] = []
    for p in parts:
        flat.extend(p.args if isinstance(p, And) else (p,))
    lins: dict[tuple[int, int], Lin] = {}
    mods: dict[tuple, Mod] = {}
    others: list[IR] = []
    for p in flat:
        if p == FALSE:
            return FALSE
        if p == TRUE:
            continue
        if isinstance(p, Lin):
            cur = lins.get(p.form)
            if cur is not None:
                lo = p.lo if cur.lo is None else cur.lo if p.lo is None else max(cur.lo, p.lo)
                hi = p.hi if cur.hi is None else cur.hi if p.hi is None else min(cur.hi, p.hi)
                merged = _lin(p.cq, p.ck, lo, hi, cur.span or p.span)
                if merged == FALSE:
                    return FALSE
                p = merged
            lins[p.form] = p
        elif isinstance(p, Mod):
            cur = mods.get(p.key)
            if cur is not None:
                merged = _mod(p.cq, p.ck, p.c0, p.m, sorted(set(cur.residues) & set(p.residues)), cur.span)
                if merged == FALSE:
                    return FALSE
                p = merged
            mods[p.key] = p
        elif p not in others:
            others.append(p)
    items = list(lins.values()) + list(mods.values()) + others
    # A Mod on the same form as a single-valued Lin is decided.
    for lin in list(lins.values()):
        if lin.lo is not None and lin.lo == lin.hi:
            for key, mod in list(mods.items()):
                if (mod.cq, mod.ck) == lin.form:
                    if (lin.lo + mod.c0) % mod.m not in mod.residues:
                        return FALSE
                    items.remove(mod)
    kept = [x for i, x in enumerate(items)
            if not any(j != i and _implies(y, x) and not (_implies(x, y) and j > i) for j, y in enumerate(items))]
    for x in kept:   # a clause and its own negation
        if isinstance(x, Opaque) and negate(x) in kept:
            return FALSE
    if not kept:
        return TRUE
    if len(kept) == 1:
        return kept[0]
    return And(tuple(sorted(kept, key=_sort_key)))


def _or(parts: list[IR]) -> IR:
    flat: list[IR] = []
    for p in parts:
        flat.extend(p.args if isinstance(p, Or) else (p,))
    by_form: dict[tuple[int, int], list[Lin]] = {}
    mods: dict[tuple, Mod] = {}
    others: list[IR] = []
    for p in flat:
        if p == TRUE:
            return TRUE
        if p == FALSE:
            continue
        if isinstance(p, Lin):
            by_form.setdefault(p.form, []).append(p)
        elif isinstance(p, Mod):
            cur = mods.get(p.key)
            if cur is not None:
                p = _mod(p.cq, p.ck, p.c0, p.m, sorted(set(cur.residues) | set(p.residues)), cur.span)
                if p == TRUE:
                    return TRUE
            mods[p.key] = p
        elif p not in others:
            others.append(p)
    items: list[IR] = []
    for form, lins in by_form.items():
        merged = _union_intervals(lins)
        if merged == TRUE:
            return TRUE
        items.extend(merged)
    items += list(mods.values()) + others
    kept = [x for i, x in enumerate(items)
            if not any(j != i and _implies(x, y) and not (_implies(y, x) and j > i) for j, y in enumerate(items))]
    for x in kept:
        if isinstance(x, Opaque) and negate(x) in kept:
            return TRUE
    if not kept:
        return FALSE
    if len(kept) == 1:
        return kept[0]
    return Or(tuple(sorted(kept, key=_sort_key)))


def _union_intervals(lins: list[Lin]):
    inf = float("inf")
    spans = sorted((((-inf if a.lo is None else a.lo), (inf if a.hi is None else a.hi), a.span) for a in lins),
                   key=lambda t: (t[0], t[1]))
    out: list[list] = []
    for lo, hi, span in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi, span])
    cq, ck = lins[0].form
    result = []
    for lo, hi, span in out:
        node = _lin(cq, ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), span)
        if node == TRUE:
            return TRUE
        result.append(node)
    return result


def normalize(node: IR) -> IR:
    """Re-simplify an IR bottom-up (idempotent on canonical IR)."""
    if isinstance(node, And):
        return _and([normalize(a) for a in node.args])
    if isinstance(node, Or):
        return _or([normalize(a) for a in node.args])
    return node


# -- the stage ------------------------------------------------------------------------------------


def _explain_empty(expr: N.Expr) -> tuple[str, Span | None, tuple[str, ...]]:
    clauses = list(expr.values) if isinstance(expr, N.BoolOp) and expr.op == "and" else [expr]
    for i, a in enumerate(clauses):
        if to_ir(a) == FALSE:
            return f"'{unparse_expr(a)}' is never true", a.span, ()
        for b in clauses[i + 1:]:
            if _and([to_ir(a), to_ir(b)]) == FALSE:
                where = f"{b.span.source.name}:{b.span.line}:{b.span.column}" if b.span else "elsewhere"
                return (f"'{unparse_expr(a)}' contradicts '{unparse_expr(b)}'", a.span,
                        (f"'{unparse_expr(b)}' is at {where}",))
    return f"the mask '{unparse_expr(expr)}' is never true", expr.span, ()


def simplify(checked: CheckedPattern) -> Canonical:
    """Simplify a checked pattern into its canonical form.

    Raises:
        EmptyPatternError: the pattern allows no (query, key) pair at all, naming the contradicting clauses.
    """
    ir = normalize(to_ir(checked.expr))
    if ir == FALSE:
        msg, span, notes = _explain_empty(checked.expr)
        raise EmptyPatternError(f"pattern '{checked.name}' allows no (query, key) pair: {msg}", span, notes)
    text = to_text(ir)
    inputs = tuple(sorted((d.name, d.axis) for d in checked.inputs))
    digest = hashlib.sha256(repr((text, inputs)).encode()).hexdigest()[:20]
    return Canonical(ir, text, inputs, digest)
