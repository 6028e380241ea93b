"""Stage 3 -- simplify: a checked pattern -> canonical IR, canonical text and a stable key.

Linear comparisons are normalised with sympy into interval atoms over a linear form in q and k
(``q - k < w`` and ``not (k > q)`` become ``lo <= q - k <= hi``); negations are pushed into the atoms;
conjunctions intersect intervals and residue sets of the same form, disjunctions merge them; clauses implied
by a sibling are absorbed; operands are sorted by their text. Two spellings of the same pattern --
reordered clauses, negated comparisons, chained comparisons, redundant intersections -- reach the same
canonical text and so the same key, and so share one kernel.

Common operands are factored out: ``(a and b) or (a and c)`` becomes ``a and (b or c)``, also with more
disjuncts, with a group of them (``(a and b) or (a and c) or d``), and when ``a`` was merged into a window
of one disjunct (``(k <= q and k < 4) or (k <= q and q - k < 1020)`` is streaming_llm's ``q - k >= 0 and
(k <= 3 or q - k <= 1019)``); dually ``(a or b) and (a or c)`` becomes ``a or (b and c)``. Inside ``f and
X`` (``f or X``) X is simplified where f holds (fails): windows drop bounds f imposes or grow over f, and
what f decides becomes True or False. So the distributed and the factored spellings of a mask share a key
whenever their operands are single conditions -- a window (``q - k < 8``), a residue condition, an
opaque one (``doc[q] == doc[k]``, a hash) -- however those overlap or contradict.

Not canonical (both forms stay correct, they just keep different keys): this is factoring, not a normal
form. Which common operand is pulled out first is a greedy choice, so two different factorings of one
mask (``(a and (b or c)) or (b and d)`` against ``(b and (a or d)) or (a and c)``) keep their own texts;
operands that are themselves and/or of conditions -- including ``q - k != 2``, ``abs(q - k) >= 4`` or
``k not in {1, 5}``, which are two windows, and the case splits of abs/min/max -- may stay apart; a window
end that a residue condition on the same form excludes is not moved (``(q - k) % 2 == 1 and q - k <= 0``
against ``... and q - k <= -1``); and opaque conditions are only compared as text (``doc[q] == doc[k]``
against its negation), never by what they compute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
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
        # fold what the substitution made constant (`min(0, q) * 0` -> `0 * 0` -> `0`), as the checker would
        replaced = specialize(_replace(e, target, value), {})
        out.append(_and([_compare_ir(cond), to_ir(replaced)]))
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
    if isinstance(a, Lin) and isinstance(b, Mod) and a.form == (b.cq, b.ck) and a.lo is not None and a.lo == a.hi:
        return (a.lo + b.c0) % b.m in b.residues
    # exact decompositions first, then sufficient ones (each tried, none cutting the others short)
    if isinstance(a, Or):
        return all(_implies(x, b) for x in a.args)
    if isinstance(b, And):
        return all(_implies(a, x) for x in b.args)
    if isinstance(a, And) and any(_implies(x, b) for x in a.args):
        return True
    return isinstance(b, Or) and any(_implies(a, x) for x in b.args)


@lru_cache(maxsize=1 << 14)
def _sort_key(node: IR) -> tuple:
    rank = {Const: 0, Lin: 1, Mod: 2, Opaque: 3, And: 4, Or: 4}[type(node)]
    return (rank, to_text(node))


@lru_cache(maxsize=1 << 14)
def _negated(node: IR) -> IR:
    return negate(node)


_ATOMS = (Lin, Mod, Opaque)


def _conjuncts(node: IR) -> tuple[IR, ...]:
    return node.args if isinstance(node, And) else (node,)


# -- simplification in context ----------------------------------------------------------------------
#
# Inside `f and X`, X only matters where f holds; inside `f or X`, only where f fails. X may then be replaced
# by any X' that agrees with it there. The IR is in negation normal form (every atom occurs positively), so
# this is done atom by atom, each atom replaced by a canonical choice that depends only on the part of it
# that matters: given f, a window keeps only the bounds f does not already impose (`q - k >= 0 and
# (k <= 3 or 0 <= q - k <= 1019)` -> `q - k >= 0 and (k <= 3 or q - k <= 1019)`), becomes False when f
# contradicts it and True when f implies it; unless f, a window grows over an overlapping or adjacent f
# (`k <= 3 or (4 <= k <= 10 and x)` -> `k <= 3 or (k <= 10 and x)`) and becomes False when f covers it.
# Both keep `f and X` (resp. `f or X`) exactly equal.


def _interval_set(node: IR) -> tuple[tuple[int, int], list[tuple[float, float]]] | None:
    """(form, intervals) when `node` is a window or a union of windows on one form (a set of that form's
    values), else None. Open ends are -inf / inf."""
    inf = float("inf")
    lins = (node,) if isinstance(node, Lin) else node.args if isinstance(node, Or) else ()
    if not lins or not all(isinstance(a, Lin) and a.form == lins[0].form for a in lins):
        return None
    return lins[0].form, [(-inf if a.lo is None else a.lo, inf if a.hi is None else a.hi) for a in lins]


def _meet(sets: list[tuple[tuple[int, int], list[tuple[float, float]]]]) -> list[tuple[float, float]] | None:
    """The intersection of sets of one form as sorted disjoint intervals, or None for no sets."""
    if not sets:
        return None
    out = sorted(sets[0][1])
    for _, intervals in sets[1:]:
        out = sorted((max(a, c), min(b, d)) for a, b in out for c, d in intervals if max(a, c) <= min(b, d))
    return out


def _set_ir(form: tuple[int, int], intervals: list[tuple[float, float]], span: Span | None = None) -> IR:
    inf = float("inf")
    return _or([_lin(form[0], form[1], None if a == -inf else int(a), None if b == inf else int(b), span)
                for a, b in intervals])


def _spans(node: IR) -> list[Span]:
    return [a.span for a in ((node,) if isinstance(node, Lin) else node.args) if a.span is not None]


def _is_atomic(node: IR) -> bool:
    """An atom, or a union of windows on one form (which no sibling of a normalised `and` can narrow)."""
    return isinstance(node, _ATOMS) or _interval_set(node) is not None


def _given(node: IR, facts: list[IR], negs: list[IR] | None = None) -> IR:
    """`node` simplified where every fact holds (`facts and node` == `facts and result`)."""
    negs = [_negated(f) for f in facts] if negs is None else negs
    if any(_implies(f, node) for f in facts):
        return TRUE
    if node in negs:
        return FALSE
    if isinstance(node, Lin):
        if node.lo is not None and node.lo == node.hi and any(
                isinstance(f, Mod) and (f.cq, f.ck) == node.form and (node.lo + f.c0) % f.m not in f.residues
                for f in facts):
            return FALSE   # a single value the residue condition excludes
        allowed = _meet([s for s in map(_interval_set, facts) if s is not None and s[0] == node.form])
        if allowed is None:
            return node
        inf = float("inf")
        lo = -inf if node.lo is None else node.lo
        hi = inf if node.hi is None else node.hi
        if not any(a <= hi and lo <= b for a, b in allowed):
            return FALSE
        # the widest window that meets the allowed set where `node` does: a bound stays only where the
        # allowed set goes on past it
        below = [min(b, lo - 1) for a, b in allowed if a < lo]
        above = [max(a, hi + 1) for a, b in allowed if b > hi]
        lo = max(below) + 1 if below else -inf
        hi = min(above) - 1 if above else inf
        return _lin(node.cq, node.ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), node.span)
    if isinstance(node, Mod):
        for f in facts:   # a single value of the form decides it
            if isinstance(f, Lin) and f.form == (node.cq, node.ck) and f.lo is not None and f.lo == f.hi:
                return TRUE if (f.lo + node.c0) % node.m in node.residues else FALSE
        same = [f for f in facts if isinstance(f, Mod) and f.key == node.key]
        if not same:
            return node
        allowed = set.intersection(*(set(f.residues) for f in same))
        kept = set(node.residues) & allowed
        if kept == allowed:
            return TRUE
        return _mod(node.cq, node.ck, node.c0, node.m, sorted(kept), node.span)
    if isinstance(node, And):
        return _and([_given(a, facts, negs) for a in node.args])
    if isinstance(node, Or):
        args = [_given(a, facts, negs) for a in node.args]
        # A disjunct that, where the facts hold, lies inside another is dropped (the widened window
        # `q - k <= 0` given `q - k >= 0` is the single value 0, which `(q - k) % 5 == 0` covers).
        inside = [_meet_window(a, facts) for a in args]
        order = sorted(range(len(args)), key=lambda i: _sort_key(args[i]))
        dropped: set[int] = set()
        for i in order:
            if any(j != i and j not in dropped and _implies(inside[i], args[j]) for j in order):
                dropped.add(i)
        return _or([a for i, a in enumerate(args) if i not in dropped])
    return node


def _meet_window(node: IR, facts: list[IR]) -> IR:
    """A window cut down to the facts' set on its form (other nodes as they are)."""
    if not isinstance(node, Lin):
        return node
    allowed = _meet([s for s in map(_interval_set, facts) if s is not None and s[0] == node.form])
    if allowed is None:
        return node
    return _and([node, _set_ir(node.form, allowed)])


def _unless(node: IR, alts: list[IR], negs: list[IR] | None = None) -> IR:
    """`node` simplified where no alternative holds (`alts or node` == `alts or result`)."""
    negs = [_negated(f) for f in alts] if negs is None else negs
    if any(_implies(node, f) for f in alts):
        return FALSE
    if node in negs:
        return TRUE
    if isinstance(node, Lin):
        inf = float("inf")
        lo = -inf if node.lo is None else node.lo
        hi = inf if node.hi is None else node.hi
        grown = True
        while grown:   # grow over every overlapping or adjacent alternative on the same form
            grown = False
            for f in alts:
                if isinstance(f, Lin) and f.form == node.form:
                    flo = -inf if f.lo is None else f.lo
                    fhi = inf if f.hi is None else f.hi
                    if flo <= hi + 1 and lo <= fhi + 1 and (flo < lo or fhi > hi):
                        lo, hi, grown = min(lo, flo), max(hi, fhi), True
        if (lo, hi) == ((-inf if node.lo is None else node.lo), (inf if node.hi is None else node.hi)):
            return node
        return _lin(node.cq, node.ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), node.span)
    if isinstance(node, Mod):
        same = [f for f in alts if isinstance(f, Mod) and f.key == node.key]
        if not same:
            return node
        covered = set().union(*(f.residues for f in same))
        if set(node.residues) <= covered:
            return FALSE
        return _mod(node.cq, node.ck, node.c0, node.m, sorted(covered | set(node.residues)), node.span)
    if isinstance(node, And):
        return _and([_unless(a, alts, negs) for a in node.args])
    if isinstance(node, Or):
        return _or([_unless(a, alts, negs) for a in node.args])
    return node


def _in_context(items: list[IR], simplify_one) -> list[IR] | None:
    """Each compound item simplified against its siblings, or None when nothing changes.

    One item at a time (in canonical order), each against the others as they stand by then, so that no two
    items are simplified by leaning on each other's old form."""
    out = list(items)
    for i in sorted(range(len(items)), key=lambda i: _sort_key(items[i])):
        if not _is_atomic(out[i]):
            out[i] = simplify_one(out[i], out[:i] + out[i + 1:])
    return None if out == items else out


# -- factoring ---------------------------------------------------------------------------------------
#
# `(a and b) or (a and c)` -> `a and (b or c)`; `(a or b) and (a or c)` -> `a or (b and c)`. A disjunction
# pulls out the conjuncts implied by the most of its disjuncts (at least two; ties go to the first conjunct
# in canonical order), which also covers a conjunct merged into a window (`(k <= q and k < 4) or 0 <= q - k
# <= 1019` pulls out `k <= q`); the remainders are simplified given it. A conjunction pulls out only
# disjuncts that occur literally in at least two of its disjunctions: pulling out implied ones would undo
# the first rule (`a or (b and c)` with a => b is `b and (a or c)`), and could add key intervals to a band
# plan. So the canonical form leans to `a and (b or c)`, which is what codegen's band plans read (the
# streaming_llm shape); factoring never gives codegen.plan more key intervals than the distributed form.


def _pick(candidates: list[IR], groups: list[frozenset]) -> frozenset | None:
    """The largest group (ties: the one of the first candidate in canonical order), if it has two members."""
    if not candidates:
        return None
    _, group = min(zip(candidates, groups), key=lambda t: (-len(t[1]), _sort_key(t[0])))
    return group if len(group) >= 2 else None


def _factor_or(items: list[IR]) -> IR | None:
    candidates: list[IR] = []
    for d in items:
        candidates.extend(c for c in _conjuncts(d) if c not in candidates)
    groups = [frozenset(i for i, d in enumerate(items) if _implies(d, c)) for c in candidates]
    group = _pick(candidates, groups)
    if group is None:
        return None
    common = [c for c, g in zip(candidates, groups) if g == group]
    rests = _or([_given(items[i], common) for i in sorted(group)])
    return _or([d for i, d in enumerate(items) if i not in group] + [_and(common + [rests])])


def _factor_and(items: list[IR]) -> IR | None:
    candidates: list[IR] = []
    for c in items:
        if isinstance(c, Or):
            candidates.extend(d for d in c.args if d not in candidates)
    groups = [frozenset(i for i, c in enumerate(items) if isinstance(c, Or) and d in c.args) for d in candidates]
    group = _pick(candidates, groups)
    if group is None:
        return None
    common = [d for d, g in zip(candidates, groups) if g == group]
    rests = _and([_or([d for d in items[i].args if d not in common]) for i in sorted(group)])
    return _and([c for i, c in enumerate(items) if i not in group] + [_or(common + [rests])])


# -- conjunction and disjunction ---------------------------------------------------------------------


def _and(parts: list[IR]) -> IR:
    flat: list[IR] = []
    for p in parts:
        flat.extend(p.args if isinstance(p, And) else (p,))
    # Unions of windows on one form meet the other windows and unions on that form: one set per form.
    for form in sorted({s[0] for s in map(_interval_set, flat) if s is not None}):
        sets = [(p, s) for p, s in ((p, _interval_set(p)) for p in flat) if s is not None and s[0] == form]
        if len(sets) > 1 and any(isinstance(p, Or) for p, _ in sets):
            met = _set_ir(form, _meet([s for _, s in sets]), next(iter(_spans(sets[0][0])), None))
            return _and([p for p in flat if all(p is not q for q, _ in sets)] + [met])
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
    factored = _factor_and(kept)
    if factored is not None:
        return factored
    again = _in_context(kept, _given)
    if again is not None:
        return _and(again)
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
    again = _in_context(kept, _unless)
    if again is not None:
        return _or(again)
    factored = _factor_or(kept)
    if factored is not None:
        return factored
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
