"""AST nodes of the pattern language: frozen, slotted value objects.

Source spans are carried in every node but kept out of equality and hashing, so two spellings that parse
to the same tree compare equal wherever they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import Span

__all__ = [
    "Num", "Float", "BoolLit", "Name", "Unary", "BinOp", "BoolOp", "Compare", "Call", "Subscript",
    "SetLit", "ListLit", "Expr", "Param", "Require", "InputDecl", "Let", "Mask", "FloatInputDecl", "Score", "SCORE_KINDS", "Stmt",
    "PatternDef", "Module", "TYPES", "AXES", "ARITH_OPS", "COMPARE_OPS", "walk", "map_children", "children",
]

TYPES = ("int", "bool", "set", "list", "float")
SCORE_KINDS = ("softcap", "bias", "sink")   # the forms of `score KIND(EXPR)`, in the order they apply
AXES = ("q", "k")
ARITH_OPS = ("+", "-", "*", "//", "%")
COMPARE_OPS = ("<", "<=", ">", ">=", "==", "!=", "in", "not in")


def _span() -> Span | None:
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class Num:
    """A non-negative integer literal (negative numbers are Unary('-', Num))."""

    value: int
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Float:
    """A finite float literal (`0.5`, `1e-05`), allowed in score terms and float parameters only."""

    value: float
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class BoolLit:
    """`True` or `False`."""

    value: bool
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Name:
    """A reference to a variable (q, k, h, b), parameter, local, input or builtin constant."""

    id: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Unary:
    """`-x` or `not x`."""

    op: str
    operand: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class BinOp:
    """Integer arithmetic: + - * // % (floor division and modulo as in Python)."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class BoolOp:
    """`a and b and ...` or `a or b or ...` (two or more operands)."""

    op: str
    values: tuple["Expr", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Compare:
    """A (possibly chained) comparison: `0 <= q - k < w`, `k in globals`."""

    left: "Expr"
    ops: tuple[str, ...]
    comparators: tuple["Expr", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Call:
    """A builtin (abs, min, max, len, range, hash) or another pattern with keyword overrides."""

    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Subscript:
    """`windows[h % 4]` (a list) or `doc[q]` (a runtime input)."""

    value: "Expr"
    index: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SetLit:
    """`{0, 1, 2}` (the empty set is `set()` is not supported; use `{}` for it)."""

    elts: tuple["Expr", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ListLit:
    """`[128, 256]`."""

    elts: tuple["Expr", ...]
    span: Span | None = _span()


Expr = Union[Num, Float, BoolLit, Name, Unary, BinOp, BoolOp, Compare, Call, Subscript, SetLit, ListLit]


@dataclass(frozen=True, slots=True)
class Param:
    """`name: type = default` in a pattern header; default may be None (then a value is required)."""

    name: str
    type: str
    default: Expr | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Require:
    """`require cond` -- a check on parameter values."""

    cond: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class InputDecl:
    """`input doc: int[k]` -- an integer tensor supplied at call time, one value per key (or query)."""

    name: str
    axis: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Let:
    """`name = expr` -- a named local definition."""

    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Mask:
    """`mask expr` -- the pattern's predicate; exactly one per pattern."""

    expr: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class FloatInputDecl:
    """`input sinks: float[h]` -- a float tensor supplied at call time, one value per head (score terms only)."""

    name: str
    axis: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Score:
    """`score softcap(cap)`, `score bias(expr)` or `score sink(expr)` -- a term that changes the scores."""

    kind: str
    expr: Expr
    span: Span | None = _span()


Stmt = Union[Require, InputDecl, Let, Mask, FloatInputDecl, Score]


@dataclass(frozen=True, slots=True)
class PatternDef:
    """`pattern name(params): body`."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Module:
    """A whole `.attn` file: its patterns in order."""

    patterns: tuple[PatternDef, ...]
    span: Span | None = _span()


def walk(node):
    """Yield `node` and every node below it, depth first (spans and keyword-argument names skipped)."""
    stack = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple):
            stack.extend(reversed(x))
        elif hasattr(x, "__dataclass_fields__"):
            yield x
            stack.extend(getattr(x, f) for f in reversed(x.__dataclass_fields__) if f != "span")



def _map_field(value, fn):
    if hasattr(value, "__dataclass_fields__"):
        return fn(value)
    if isinstance(value, tuple):   # children, or keyword arguments as (name, expr) pairs
        out = tuple(_map_field(x, fn) for x in value)
        return value if all(a is b for a, b in zip(out, value)) else out
    return value   # an operator, a name, a number


def map_children(node, fn):
    """`node` rebuilt with `fn` applied to each child node, span kept (`node` itself when none changed)."""
    new = {f: _map_field(getattr(node, f), fn) for f in node.__dataclass_fields__ if f != "span"}
    if all(v is getattr(node, f) for f, v in new.items()):
        return node
    return type(node)(**new, span=node.span)


def children(node) -> list:
    """The direct child nodes of `node`, in field order."""
    out: list = []
    map_children(node, lambda c: out.append(c) or c)
    return out
