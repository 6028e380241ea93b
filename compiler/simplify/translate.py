"""AST -> IR: a checked boolean expression as (normalised) IR atoms joined by and/or.

Comparisons that are linear in q and k (read through the sympy column of the semantics table) become
windows; ``(linear) % m op c`` becomes a residue class; membership in a constant set or range becomes a
union of windows; abs/min/max are split by cases where the cases come out linear; anything else stays an
opaque condition, evaluated as written.
"""

from __future__ import annotations

import functools

from .. import nodes as N
from ..ir import FALSE, IR, TRUE, Opaque
from ..semantics import OPERATORS, fold, length, operator_of, runs
from .forms import residue_class, window
from .logic import conj, disj, negate

__all__ = ["to_ir", "MAX_SET_EXPANSION", "MAX_MODULUS"]

MAX_SET_EXPANSION = 256  # `x in S` becomes a union of intervals when S has at most this many elements
# A residue class is stored as its residues, and every rule on it (negation, merging, tile counting) costs
# time in the modulus: a larger modulus keeps the condition opaque (evaluated as written, in O(1) per tile).
MAX_MODULUS = 4096


def _operands(e: N.Expr) -> tuple[N.Expr, ...]:
    return (e.operand,) if isinstance(e, N.Unary) else (e.left, e.right)


@functools.lru_cache(maxsize=None)
def _sympy():
    """sympy and the symbols q, k, h, b, imported on first use: `import attnpat` (and the CLI's --help,
    --version and list) need not pay for sympy."""
    import sympy
    return sympy, dict(zip("qkhb", sympy.symbols("q k h b", integer=True)))


def _sym(e: N.Expr):
    """The sympy expression of a linear integer AST, or None if it is not linear in q, k, h, b."""
    sympy, symbols = _sympy()
    if isinstance(e, N.Num):
        return sympy.Integer(e.value)
    if isinstance(e, N.Name) and e.id in symbols:
        return symbols[e.id]
    op = operator_of(e)
    if op is None or not op.polynomial:
        return None
    args = [_sym(x) for x in _operands(e)]
    return None if any(a is None for a in args) else op.sympy(*args)


def _lin(e: N.Expr) -> tuple[int, int, int] | None:
    """(cq, ck, c0) of an AST that is plainly linear in q and k (no product of two variables), read through
    the table's python column without sympy; None otherwise (then sympy decides)."""
    if isinstance(e, N.Num):
        return (0, 0, e.value)
    if isinstance(e, N.Name):
        return {"q": (1, 0, 0), "k": (0, 1, 0)}.get(e.id)
    op = operator_of(e)
    if op is None or not op.polynomial:
        return None
    args = [_lin(x) for x in _operands(e)]
    if any(a is None for a in args):
        return None
    if isinstance(e, N.BinOp) and e.op == "*":
        (a, b), const = args, [x for x in args if x[:2] == (0, 0)]
        if not const:
            return None
        c, v = (a[2], b) if a[:2] == (0, 0) else (b[2], a)
        return tuple(op.python(c, x) for x in v)
    return tuple(op.python(*xs) for xs in zip(*args))


def _linear_qk(expr) -> tuple[int, int, int] | None:
    """(cq, ck, c0) when `expr` is cq*q + ck*k + c0 with integer coefficients, else None."""
    sympy, symbols = _sympy()
    q, k = symbols["q"], symbols["k"]
    expr = sympy.expand(expr)
    if expr.free_symbols - {q, k}:
        return None
    poly = sympy.Poly(expr, q, k)
    if poly.total_degree() > 1:
        return None
    cq, ck, c0 = (poly.coeff_monomial(m) for m in (q, k, 1))
    if not all(c.is_integer for c in (cq, ck, c0)):
        return None
    return int(cq), int(ck), int(c0)


def _linear_compare(op: str, lin: tuple[int, int, int] | None, span) -> IR | None:
    """IR for ``cq*q + ck*k + c0 op 0`` given (cq, ck, c0), or None."""
    if lin is None:
        return None
    cq, ck, c0 = lin
    # cq*q + ck*k + c0 op 0  <=>  cq*q + ck*k op -c0
    t = -c0
    if op == "<":
        return window(cq, ck, None, t - 1, span)
    if op == "<=":
        return window(cq, ck, None, t, span)
    if op == ">":
        return window(cq, ck, t + 1, None, span)
    if op == ">=":
        return window(cq, ck, t, None, span)
    if op == "==":
        return window(cq, ck, t, t, span)
    if op == "!=":
        return disj([window(cq, ck, None, t - 1, span), window(cq, ck, t + 1, None, span)])
    return None


def _mod_compare(op: str, left: N.Expr, right: N.Expr, span) -> IR | None:
    """IR for ``(linear) % m op c`` (either side), else None."""
    if isinstance(right, N.BinOp) and right.op == "%" and isinstance(left, N.Num):
        left, right, op = right, left, OPERATORS[op].converse
    if not (isinstance(left, N.BinOp) and left.op == "%" and isinstance(left.right, N.Num)
            and isinstance(right, N.Num)):
        return None
    lin = _lin(left.left)
    if lin is None:
        s = _sym(left.left)
        lin = None if s is None else _linear_qk(s)
    if lin is None:
        return None
    m = left.right.value
    if abs(m) > MAX_MODULUS:
        return None
    cq, ck, c0 = lin
    # x % m lies in [0, m) for m > 0 and in (m, 0] for m < 0 (the sign of the divisor, as in Python)
    candidates = range(0, m) if m > 0 else range(m + 1, 1)
    values = [r for r in candidates if OPERATORS[op].python(r, right.value)]
    if m < 0:  # x % m == r  <=>  x % -m == r % -m  (both say x - r is a multiple of m)
        values = [v % -m for v in values]
        m = -m
    return residue_class(cq, ck, c0, m, values, span)


def _membership(x: N.Expr, container: N.Expr, span) -> IR:
    if isinstance(container, N.Call):   # range(start, stop, step), all constant
        start, stop, step = (a.value for a in container.args)
        r = range(start, stop, step)
        if length(r) == 0:
            return FALSE
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
        parts = [_compare_ir(N.Compare(x, (">=",), (N.Num(lo),), span)),
                 _compare_ir(N.Compare(x, ("<=",), (N.Num(hi),), span))]
        if abs(step) > 1 and length(r) > 1:
            parts.append(_compare_ir(N.Compare(N.BinOp("%", N.BinOp("-", x, N.Num(lo)), N.Num(abs(step))),
                                               ("==",), (N.Num(0),), span)))
        return conj(parts)
    values = sorted({e.value for e in container.elts})
    if not values:
        return FALSE
    if len(values) > MAX_SET_EXPANSION:
        return Opaque(N.Compare(x, ("in",), (container,), span), span)
    parts = []
    for lo, hi in runs(values):
        if lo == hi:
            parts.append(_compare_ir(N.Compare(x, ("==",), (N.Num(lo),), span)))
        else:
            parts.append(conj([_compare_ir(N.Compare(x, (">=",), (N.Num(lo),), span)),
                               _compare_ir(N.Compare(x, ("<=",), (N.Num(hi),), span))]))
    return disj(parts)


def _compare_ir(e: N.Compare) -> IR:
    if len(e.ops) > 1:  # checked expressions have single links, but stay general
        links, left = [], e.left
        for op, right in zip(e.ops, e.comparators):
            links.append(_compare_ir(N.Compare(left, (op,), (right,), e.span)))
            left = right
        return conj(links)
    op, right = e.ops[0], e.comparators[0]
    if op in ("in", "not in"):
        ir = _membership(e.left, right, e.span)
        return negate(ir) if op == "not in" else ir
    fast = _lin(N.BinOp("-", e.left, right, e.span))
    if fast is not None:
        return _linear_compare(op, fast, e.span)
    a, b = _sym(e.left), _sym(right)
    if a is not None and b is not None:
        ir = _linear_compare(op, _linear_qk(a - b), e.span)
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
        replaced = fold(_replace(e, target, value))
        out.append(conj([_compare_ir(cond), to_ir(replaced)]))
    return disj(out)


def to_ir(expr: N.Expr) -> IR:
    """Translate a checked boolean expression into (unsimplified-but-normalised) IR."""
    if isinstance(expr, N.BoolLit):
        return TRUE if expr.value else FALSE
    if isinstance(expr, N.BoolOp):
        parts = [to_ir(v) for v in expr.values]
        return conj(parts) if expr.op == "and" else disj(parts)
    if isinstance(expr, N.Unary) and expr.op == "not":
        return negate(to_ir(expr.operand))
    if isinstance(expr, N.Compare):
        return _compare_ir(expr)
    return Opaque(expr, getattr(expr, "span", None))



def _find_minmax(e) -> N.Call | None:
    """The first abs/min/max call on a polynomial path from the top of a comparison."""
    if isinstance(e, N.Call) and e.func in ("abs", "min", "max"):
        return e
    op = operator_of(e)
    if isinstance(e, N.Compare) or (op is not None and op.polynomial):
        for x in N.children(e):
            found = _find_minmax(x)
            if found is not None:
                return found
    return None


def _replace(e, target, value):
    """`e` with the node `target` (by identity) replaced by `value`, inside comparisons and arithmetic."""
    if e is target:
        return value
    if not isinstance(e, (N.Compare, N.BinOp, N.Unary)):
        return e
    return N.map_children(e, lambda x: _replace(x, target, value))
