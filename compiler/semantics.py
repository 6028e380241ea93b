"""The meaning of every operator and builtin of the pattern language, in one table.

Each entry says what one operator or builtin computes in every place the compiler evaluates or emits it:
on Python values (the constant folder below, the checker), element-wise on int64/bool numpy arrays (block
masks) and torch tensors, as Triton source text (kernels, with the @triton.jit helpers it calls), as sympy
(the simplifier's linear forms), as a sound rule on per-tile interval bounds (block classification), and its
binding strength for printing. Adding a builtin means adding one entry here (and its type rule in the
checker). The float64 dense reference (attnpat/reference.py) deliberately does not use this table: it is
the independent oracle the table's users are tested against.

Interval rules work on per-tile numpy bounds: an integer operand is a ``(lo, hi)`` pair of int64 arrays (or
scalars), a condition a trit array (``ALL``: true on the whole tile, ``SOME``, ``NONE``). For ``//`` and
``%`` the divisor is a constant passed as ``(m, m)``; for ``in`` the right operand is the container value
(a set, list or range of ints).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ArgumentError, PatternTypeError
from . import nodes as N
from .hashing import HASH_INIT, hash32
from .interval_rules import (
    ALL, NONE, SOME, iv_abs, iv_eq, iv_floordiv, iv_hash, iv_member, iv_mod, iv_mul, iv_not, trit,
)
from .values import MAX_BITS, length

__all__ = [
    "Operator", "Builtin", "OPERATORS", "BUILTINS", "ALL", "SOME", "NONE",
    "PREC_OR", "PREC_AND", "PREC_NOT", "PREC_CMP", "PREC_ADD", "PREC_MUL", "PREC_UNARY", "PREC_ATOM",
    "INT_BITS", "INT_MIN", "INT_MAX", "FOLD_BITS", "operator_of", "precedence", "evaluate", "literal", "fold",
    "constant", "length", "runs", "HELPERS",
]

# -- the integers -------------------------------------------------------------------------------------------
# The language's arithmetic is exact (Python integers). Every evaluator must either compute it exactly or
# refuse: constants fold exactly up to FOLD_BITS bits; a checked mask's constants fit in INT_BITS bits; and
# compiler/ranges.py refuses, with the span, a sub-expression whose range over a shape exceeds the width
# an evaluator computes in (INT_BITS for block masks and the reference, the kernel's for kernels).
INT_BITS = 64
INT_MIN, INT_MAX = -(1 << (INT_BITS - 1)), (1 << (INT_BITS - 1)) - 1
FOLD_BITS = MAX_BITS

# -- trits and binding strengths -----------------------------------------------------------------------


# Binding strength, loosest first (unparse puts parentheses around an operand printed below what it needs).
PREC_OR, PREC_AND, PREC_NOT, PREC_CMP, PREC_ADD, PREC_MUL, PREC_UNARY, PREC_ATOM = range(1, 9)

# The @triton.jit helpers kernels may call, in the order the templates define them.
HELPERS = ("_floordiv", "_pymod", "_hash_step")


@dataclass(frozen=True, slots=True)
class Operator:
    """One operator of the language and its meaning everywhere it is evaluated or emitted.

    Attributes:
        symbol: the operator as written ('+', 'not in', 'and'; '-' for unary minus, keyed 'neg').
        kind: 'arith', 'unary', 'compare', 'member' or 'bool'.
        precedence: binding strength (PREC_*), used by unparse.
        arity: operand count; None for the variadic `and` / `or`.
        python: the meaning on Python values (ints, bools; for `in`, a set, tuple or range on the right).
        numpy: element-wise on int64/bool arrays (for `in`: a container value on the right).
        torch: element-wise on int64/bool tensors (for `in`: a container value on the right).
        triton: operand code strings -> a Triton expression string (for `in`: code, container value).
        helpers: the @triton.jit helpers the emitted code calls.
        sympy: the sympy meaning, or None.
        interval: the sound rule on per-tile bounds (see the module docstring).
        polynomial: the sympy form of a polynomial is a polynomial again (+ - * and negation), so the
            simplifier may read it as a linear form.
        negation: the comparison that holds exactly where this one fails ('<' -> '>=', 'in' -> 'not in').
        converse: the comparison with its operands swapped ('<' -> '>'; '==' -> '==').
    """

    symbol: str
    kind: str
    precedence: int
    arity: int | None
    python: Callable
    numpy: Callable
    torch: Callable
    triton: Callable[..., str]
    helpers: tuple[str, ...] = ()
    sympy: Callable | None = None
    interval: Callable | None = None
    polynomial: bool = False
    negation: str | None = None
    converse: str | None = None


@dataclass(frozen=True, slots=True)
class Builtin:
    """One builtin function; run-time builtins have every column, compile-time ones (len, range) only python.

    Attributes:
        symbol: the function name.
        precedence: PREC_ATOM (a call binds tightest).
        arity: the argument count when fixed, None when it varies (see min_args / max_args).
        min_args, max_args: how many arguments it takes (max_args None: no limit).
        runtime: whether it can be computed per (q, k) at run time (else its arguments must be constants).
        python, numpy, torch, triton, helpers, sympy, interval: as for :class:`Operator` (numpy, torch,
            triton and interval are None for compile-time builtins; interval takes one (lo, hi) per argument).
    """

    symbol: str
    precedence: int
    arity: int | None
    min_args: int
    max_args: int | None
    runtime: bool
    python: Callable
    numpy: Callable | None = None
    torch: Callable | None = None
    triton: Callable[..., str] | None = None
    helpers: tuple[str, ...] = ()
    sympy: Callable | None = None
    interval: Callable | None = None


# -- integer helpers -------------------------------------------------------------------------------------


def runs(values) -> list[tuple[int, int]]:
    """Sorted distinct values as maximal runs of consecutive integers: {1, 2, 3, 7} -> [(1, 3), (7, 7)]."""
    out: list[list[int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return [(a, b) for a, b in out]


def _torch():
    import torch   # torch only where a torch column is used: the compiler itself never needs it
    return torch


def _np_values(container) -> np.ndarray:
    # distinct values: the interval rule counts values inside a tile, so a list's repeats must not count twice
    return np.array(sorted(set(container)), np.int64)


def _range_member(x, r: range, mod: Callable):
    """`x in r` element-wise without materialising a long range (`mod`: numpy's or torch's floor modulo)."""
    inside = (x >= r.start) & (x < r.stop) if r.step > 0 else (x <= r.start) & (x > r.stop)
    return inside & (mod(x - r.start, r.step) == 0)


def _np_member(x, container):
    if isinstance(container, range):
        return _range_member(x, container, np.mod)
    return np.isin(x, _np_values(container))


def _torch_member(x, container):
    t = _torch()
    if isinstance(container, range):
        return _range_member(x, container, t.remainder)
    return t.isin(x, t.tensor(sorted(container), dtype=t.int64))


# -- Triton text ------------------------------------------------------------------------------------------


def _tt_member(x: str, container) -> str:
    """The Triton test of `x in container`: bounds and a stride for a range, runs of values for a set."""
    if isinstance(container, range):
        if length(container) == 0:
            return "False"
        r = container
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
        test = f"(({x} >= {lo}) & ({x} <= {hi})"
        return test + (f" & (_pymod({x} - {lo}, {abs(r.step)}) == 0))" if abs(r.step) > 1 else ")")
    tests = [f"({x} == {a})" if a == b else f"(({x} >= {a}) & ({x} <= {b}))" for a, b in runs(container)]
    return "(" + " | ".join(tests) + ")" if tests else "False"


def _tt_literal(code: str) -> bool:
    """Whether emitted code is an integer literal (`5`, `(-5)`), which Triton must not widen."""
    return code.lstrip("(-").rstrip(")").isdigit()


def _tt_hash(*codes: str) -> str:
    h = str(HASH_INIT)
    for a in codes:
        # tensors are widened to int64 first so the 32-bit mask is not taken as an int32 constant
        h = f"_hash_step({h}, {a if _tt_literal(a) else f'({a}).to(tl.int64)'})"
    return h


def _tt_chain(fn: str) -> Callable[..., str]:
    def emit(*codes: str) -> str:
        return functools.reduce(lambda out, a: f"tl.{fn}({out}, {a})", codes)
    return emit


# -- the table ---------------------------------------------------------------------------------------------


def _sympy():
    import sympy   # as torch: only the simplifier needs it
    return sympy


def _compare(symbol: str, name: str, interval: Callable) -> Operator:
    """A comparison: the same-named function of operator (Python), numpy, torch and sympy."""
    numpy_names = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal", "eq": "equal",
                   "ne": "not_equal"}
    return Operator(
        symbol, "compare", PREC_CMP, 2, python=getattr(operator, name), numpy=getattr(np, numpy_names[name]),
        torch=lambda a, b: getattr(_torch(), name)(a, b), triton=lambda a, b: f"({a} {symbol} {b})",
        sympy=lambda a, b: getattr(_sympy(), name.capitalize())(a, b), interval=interval,
        negation={"<": ">=", ">=": "<", "<=": ">", ">": "<=", "==": "!=", "!=": "=="}[symbol],
        converse={"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}[symbol])


def _reduce(fn: Callable) -> Callable:
    return lambda *xs: functools.reduce(fn, xs)


OPERATORS: dict[str, Operator] = {
    "+": Operator("+", "arith", PREC_ADD, 2, python=operator.add, numpy=np.add, torch=operator.add,
                  triton=lambda a, b: f"({a} + {b})", sympy=operator.add, polynomial=True,
                  interval=lambda a, b: (a[0] + b[0], a[1] + b[1])),
    "-": Operator("-", "arith", PREC_ADD, 2, python=operator.sub, numpy=np.subtract, torch=operator.sub,
                  triton=lambda a, b: f"({a} - {b})", sympy=operator.sub, polynomial=True,
                  interval=lambda a, b: (a[0] - b[1], a[1] - b[0])),
    "*": Operator("*", "arith", PREC_MUL, 2, python=operator.mul, numpy=np.multiply, torch=operator.mul,
                  triton=lambda a, b: f"({a} * {b})", sympy=operator.mul, polynomial=True, interval=iv_mul),
    "//": Operator("//", "arith", PREC_MUL, 2, python=operator.floordiv, numpy=np.floor_divide,
                   torch=lambda a, b: _torch().div(a, b, rounding_mode="floor"),
                   triton=lambda a, b: f"_floordiv({a}, {b})", helpers=("_floordiv",),
                   sympy=lambda a, b: _sympy().floor(a / b), interval=iv_floordiv),
    "%": Operator("%", "arith", PREC_MUL, 2, python=operator.mod, numpy=np.mod,
                  torch=lambda a, b: _torch().remainder(a, b),
                  triton=lambda a, b: f"_pymod({a}, {b})", helpers=("_floordiv", "_pymod"),
                  sympy=lambda a, b: _sympy().Mod(a, b), interval=iv_mod),
    "neg": Operator("-", "unary", PREC_UNARY, 1, python=operator.neg, numpy=np.negative, torch=operator.neg,
                    triton=lambda a: f"(-{a})", sympy=operator.neg, polynomial=True,
                    interval=lambda a: (-a[1], -a[0])),
    "<": _compare("<", "lt", lambda a, b: trit(a[1] < b[0], a[0] >= b[1])),
    "<=": _compare("<=", "le", lambda a, b: trit(a[1] <= b[0], a[0] > b[1])),
    ">": _compare(">", "gt", lambda a, b: trit(a[0] > b[1], a[1] <= b[0])),
    ">=": _compare(">=", "ge", lambda a, b: trit(a[0] >= b[1], a[1] < b[0])),
    "==": _compare("==", "eq", iv_eq),
    "!=": _compare("!=", "ne", lambda a, b: iv_not(iv_eq(a, b))),
    "in": Operator("in", "member", PREC_CMP, 2, python=lambda a, b: a in b,
                   numpy=_np_member, torch=_torch_member,
                   triton=_tt_member, helpers=("_floordiv", "_pymod"), interval=iv_member, negation="not in"),
    "not in": Operator("not in", "member", PREC_CMP, 2, python=lambda a, b: a not in b,
                       numpy=lambda a, b: ~_np_member(a, b), torch=lambda a, b: ~_torch_member(a, b),
                       triton=lambda a, b: f"(~{_tt_member(a, b)})", helpers=("_floordiv", "_pymod"),
                       interval=lambda a, b: iv_not(iv_member(a, b)), negation="in"),
    "and": Operator("and", "bool", PREC_AND, None, python=lambda *xs: all(xs), numpy=_reduce(np.logical_and),
                    torch=_reduce(operator.and_), triton=lambda *xs: "(" + " & ".join(xs) + ")",
                    sympy=lambda *xs: _sympy().And(*xs),
                    interval=lambda *ts: np.minimum.reduce([np.asarray(t) for t in ts]).astype(np.int8)),
    "or": Operator("or", "bool", PREC_OR, None, python=lambda *xs: any(xs), numpy=_reduce(np.logical_or),
                   torch=_reduce(operator.or_), triton=lambda *xs: "(" + " | ".join(xs) + ")",
                   sympy=lambda *xs: _sympy().Or(*xs),
                   interval=lambda *ts: np.maximum.reduce([np.asarray(t) for t in ts]).astype(np.int8)),
    "not": Operator("not", "unary", PREC_NOT, 1, python=operator.not_, numpy=np.logical_not,
                    torch=lambda a: _torch().logical_not(a), triton=lambda a: f"(~{a})",
                    sympy=lambda a: _sympy().Not(a), interval=iv_not),
}

# In the order the language documents them (error messages list them so).
BUILTINS: dict[str, Builtin] = {
    "abs": Builtin("abs", PREC_ATOM, 1, 1, 1, True, python=abs, numpy=np.abs, torch=lambda a: _torch().abs(a),
                   triton=lambda a: f"tl.abs({a})", sympy=lambda a: _sympy().Abs(a), interval=iv_abs),
    "min": Builtin("min", PREC_ATOM, None, 2, None, True, python=lambda *xs: min(xs),
                   numpy=lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
                   torch=_reduce(lambda a, b: _torch().minimum(a, b)), triton=_tt_chain("minimum"),
                   sympy=lambda *xs: _sympy().Min(*xs),
                   interval=lambda *xs: (np.minimum.reduce([a for a, _ in xs]), np.minimum.reduce([b for _, b in xs]))),
    "max": Builtin("max", PREC_ATOM, None, 2, None, True, python=lambda *xs: max(xs),
                   numpy=lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
                   torch=_reduce(lambda a, b: _torch().maximum(a, b)), triton=_tt_chain("maximum"),
                   sympy=lambda *xs: _sympy().Max(*xs),
                   interval=lambda *xs: (np.maximum.reduce([a for a, _ in xs]), np.maximum.reduce([b for _, b in xs]))),
    "len": Builtin("len", PREC_ATOM, 1, 1, 1, False, python=length),
    "range": Builtin("range", PREC_ATOM, None, 1, 3, False, python=lambda *xs: range(*xs)),
    "hash": Builtin("hash", PREC_ATOM, None, 1, 16, True, python=hash32, numpy=lambda *xs: _np_hash(*xs),
                    torch=hash32, triton=_tt_hash, helpers=("_hash_step",), interval=iv_hash),
}


def _np_hash(*xs):
    with np.errstate(over="ignore"):   # 64-bit wrap-around is part of the definition
        return hash32(*[np.asarray(a, np.int64) for a in xs])


def operator_of(e: N.Expr) -> Operator | None:
    """The table entry of a Unary, BinOp or BoolOp node (None for other nodes)."""
    if isinstance(e, N.Unary):
        return OPERATORS["neg" if e.op == "-" else e.op]
    if isinstance(e, (N.BinOp, N.BoolOp)):
        return OPERATORS[e.op]
    return None


def precedence(e: N.Expr) -> int:
    """How tightly an expression binds when printed (PREC_*), from the table."""
    op = operator_of(e)
    if op is not None:
        return op.precedence
    if isinstance(e, N.Compare):
        return PREC_CMP
    if isinstance(e, (N.Num, N.Float)) and e.value < 0:
        return PREC_UNARY
    return PREC_ATOM


# -- evaluation through one column -----------------------------------------------------------------------


def evaluate(expr: N.Expr, column: str, leaf: Callable[[N.Expr], object]):
    """Evaluate a checked expression through one column ('python', 'numpy', 'torch' or 'triton').

    `leaf` gives the value (or, for 'triton', the code) of every Num, BoolLit, Name and Subscript; the
    container of `in` is passed as its constant value; a chain is the `and` of its links.
    """
    def go(e: N.Expr):
        op = operator_of(e)
        if isinstance(e, N.Unary):
            return getattr(op, column)(go(e.operand))
        if isinstance(e, (N.BinOp, N.BoolOp)):
            return getattr(op, column)(*map(go, (e.left, e.right) if isinstance(e, N.BinOp) else e.values))
        if isinstance(e, N.Compare):
            links, left = [], go(e.left)
            for name, right in zip(e.ops, e.comparators):
                entry = OPERATORS[name]
                if entry.kind == "member":
                    links.append(getattr(entry, column)(left, _value(right)))
                else:
                    value = go(right)
                    links.append(getattr(entry, column)(left, value))
                    left = value
            return links[0] if len(links) == 1 else getattr(OPERATORS["and"], column)(*links)
        if isinstance(e, N.Call) and e.func in BUILTINS:
            return getattr(BUILTINS[e.func], column)(*map(go, e.args))
        return leaf(e)

    return go(expr)


# -- the constant folder ------------------------------------------------------------------------------------


def literal(value, span=None) -> N.Expr:
    """The AST literal of a constant value (int, bool, frozenset, tuple, range)."""
    if isinstance(value, bool):
        return N.BoolLit(value, span)
    if isinstance(value, int):
        return N.Num(value, span)
    if isinstance(value, float):
        return N.Float(value, span)
    if isinstance(value, frozenset):
        return N.SetLit(tuple(N.Num(v, span) for v in sorted(value)), span)
    if isinstance(value, tuple):
        return N.ListLit(tuple(literal(v, span) for v in value), span)
    if isinstance(value, range):
        return N.Call("range", tuple(N.Num(v, span) for v in (value.start, value.stop, value.step)), (), span)
    raise TypeError(value)


def _value(e: N.Expr):
    """The Python value of a literal node, or None when it is not one."""
    if isinstance(e, (N.Num, N.BoolLit)):
        return e.value
    if isinstance(e, (N.SetLit, N.ListLit)) and all(isinstance(x, N.Num) for x in e.elts):
        values = [x.value for x in e.elts]
        return frozenset(values) if isinstance(e, N.SetLit) else tuple(values)
    if (isinstance(e, N.Call) and e.func == "range" and not e.kwargs
            and all(isinstance(a, N.Num) for a in e.args)):
        return range(*[a.value for a in e.args])
    return None


def _scalar(e: N.Expr) -> bool:
    return isinstance(e, (N.Num, N.BoolLit))


def _fold_bool(e: N.BoolOp, go: Callable[[N.Expr], N.Expr]) -> N.Expr:
    """An and/or with its operands folded left to right, stopping at the first that decides it (as Python
    does: `h >= 2 or q - k < windows[h]` never reads past the list for h >= 2)."""
    absorbing = e.op == "or"   # True absorbs `or`, False absorbs `and`
    kept = []
    for v in map(go, e.values):
        if isinstance(v, N.BoolLit):
            if v.value == absorbing:
                return N.BoolLit(absorbing, e.span)
            continue
        kept.append(v)
    if not kept:
        return N.BoolLit(not absorbing, e.span)
    if len(kept) == len(e.values) and all(a is b for a, b in zip(kept, e.values)):
        return e
    return kept[0] if len(kept) == 1 else N.BoolOp(e.op, tuple(kept), e.span)


def fold(expr: N.Expr, env: dict[str, int] | None = None) -> N.Expr:
    """Substitute integer values for variables (e.g. {"h": 3}) and fold every constant sub-expression."""
    env = env or {}

    def go(e: N.Expr) -> N.Expr:
        if isinstance(e, N.Name):
            return N.Num(env[e.id], e.span) if e.id in env else e
        if isinstance(e, N.Subscript) and isinstance(e.value, N.Name):
            return e   # runtime inputs are read at positions, never specialised
        if isinstance(e, N.BoolOp):
            return _fold_bool(e, go)
        e = N.map_children(e, go)
        if isinstance(e, (N.Unary, N.BinOp)):
            operands = (e.operand,) if isinstance(e, N.Unary) else (e.left, e.right)
            if all(map(_scalar, operands)):
                if isinstance(e, N.BinOp) and e.op in ("//", "%") and e.right.value == 0:
                    raise PatternTypeError("division by zero", e.right.span)
                value = operator_of(e).python(*(x.value for x in operands))
                if abs(value).bit_length() > FOLD_BITS:   # keeps folding cheap and every message short
                    raise PatternTypeError(f"this constant exceeds 2**{FOLD_BITS} in magnitude", e.span)
                return literal(value, e.span)
            return e
        if isinstance(e, N.Compare):
            values = [_value(x) for x in (e.left,) + e.comparators]
            if any(v is None for v in values):
                return e
            ok = all(OPERATORS[op].python(a, b) for op, a, b in zip(e.ops, values, values[1:]))
            return N.BoolLit(ok, e.span)
        if isinstance(e, N.Call) and e.func in BUILTINS and e.func != "range" and not e.kwargs:
            values = [_value(a) for a in e.args]
            if any(v is None for v in values):
                return e
            return literal(BUILTINS[e.func].python(*values), e.span)
        if isinstance(e, N.Subscript) and isinstance(e.value, N.ListLit) and isinstance(e.index, N.Num):
            elts, i = e.value.elts, e.index.value
            if not 0 <= i < len(elts):
                raise ArgumentError(f"list index {i} is out of range (the list has {len(elts)} elements); "
                                    f"check the number of heads")
            return N.Num(elts[i].value, e.span) if isinstance(elts[i], N.Num) else e
        return e

    return go(expr)


def constant(expr: N.Expr):
    """The Python value of a constant expression (int, bool, frozenset, tuple, range); raises if not one."""
    value = _value(fold(expr))
    if value is None:
        raise PatternTypeError("not a constant expression", getattr(expr, "span", None))
    return value
