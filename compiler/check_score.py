"""Stage 2 (check), score terms: `score softcap(CAP)`, `score bias(EXPR)` and `score sink(EXPR)`.

A mask says which pairs attend; score terms change the scores of the pairs that do. Their expressions are
numbers, not conditions: integers and floats over q, k, h, b, parameters (a `float`, or a `list` of floats
indexed per head) and float runtime inputs (`input sinks: float[h]`, read as `sinks[h]`), with `+`, `-`,
`*`, unary `-`, `abs`, `min` and `max`. Unlike a mask, a product needs no constant side
(`slopes[h] * (q - k)`), since nothing is lowered to block masks. Kernels evaluate these terms in fp32.

The order in which the terms apply is written once, here and in docs/language.md: the scaled score
``s = scale * q.k``, then softcap ``cap * tanh(s / cap)``, then the sum of the biases, then the mask, and
last the sink, one more logit in the softmax's denominator that attends to nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import PatternNameError, PatternTypeError, Span
from . import nodes as N
from .check_expr import BUILTINS, VARIABLES, Scope, Typed
from .semantics import BUILTINS as TABLE, literal

__all__ = ["ScoreTerms", "check_scores", "ORDER"]

ORDER = "scale, softcap, bias, mask, sink"   # the order the terms apply in (docs/language.md)

_NUMERIC = ("int", "float")
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True, slots=True)
class ScoreTerms:
    """A pattern's checked score terms.

    Attributes:
        softcap: the cap (a positive constant), or None.
        bias: the bias terms (checked numeric expressions), summed, in source order.
        sink: the per-head sink logit (an expression of h, b, constants and float inputs), or None.
        inputs: the float[h] inputs the terms read, in name order.
    """

    softcap: float | None
    bias: tuple[N.Expr, ...]
    sink: N.Expr | None
    inputs: tuple[N.FloatInputDecl, ...]


class _ScoreChecker:
    """The type rules of a score expression; names, parameters and integer forms from the pattern's checker."""

    def __init__(self, checker, scope: Scope):
        self.checker, self.scope = checker, scope
        self.lets = {s.name: s for s in scope.pattern.body if isinstance(s, N.Let)}
        self.visiting: set[str] = set()

    def number(self, e: N.Expr, what: str) -> Typed:
        t = self.expr(e)
        if t.type not in _NUMERIC:
            raise PatternTypeError(f"{what} must be a number (int or float), not {t.type}", e.span)
        return t

    def expr(self, e: N.Expr) -> Typed:
        if isinstance(e, N.Num):
            return Typed(e, "int", e.value)
        if isinstance(e, N.Float):
            return Typed(e, "float", e.value)
        if isinstance(e, N.Name):
            return self.name(e)
        if isinstance(e, N.Unary) and e.op == "-":
            t = self.number(e.operand, "the operand of '-'")
            return _const(-t.value, e.span) if t.const else Typed(N.Unary("-", t.expr, e.span), t.type)
        if isinstance(e, N.BinOp) and e.op in _ARITH:
            a = self.number(e.left, f"the left operand of '{e.op}'")
            b = self.number(e.right, f"the right operand of '{e.op}'")
            type_ = "float" if "float" in (a.type, b.type) else "int"
            if a.const and b.const:
                return _const(_ARITH[e.op](a.value, b.value), e.span)
            return Typed(N.BinOp(e.op, a.expr, b.expr, e.span), type_)
        if isinstance(e, N.Call) and e.func in ("abs", "min", "max"):
            return self.call(e)
        if isinstance(e, N.Subscript):
            return self.subscript(e)
        if isinstance(e, (N.BinOp, N.Call)) and (not isinstance(e, N.Call) or e.func in BUILTINS):
            t = self.checker.expr(e, self.scope)   # // % len hash: integer forms, the mask's rules
            if t.type != "int":
                raise PatternTypeError(f"a score term must be a number, not {t.type}", e.span)
            if not t.const:
                raise PatternTypeError(f"'{_head(e)}' may only take constants in a score term (kernels compute "
                                       f"score terms in fp32)", e.span)
            return t
        if isinstance(e, N.Call):
            raise PatternTypeError(f"a score term is a number; '{e.func}()' calls a pattern, which is a "
                                   f"condition", e.span)
        what = {N.BoolLit: "a condition", N.Compare: "a condition", N.BoolOp: "a condition", N.Unary: "a condition",
                N.SetLit: "a set", N.ListLit: "a list"}.get(type(e), type(e).__name__)
        raise PatternTypeError(f"a score term must be a number, not {what}", e.span)

    def name(self, e: N.Name) -> Typed:
        scope = self.scope
        if e.id in VARIABLES:
            return Typed(e, "int")
        if e.id in self.lets and e.id in scope.lets:
            if e.id in self.visiting:
                raise PatternNameError(f"'{e.id}' is used before it is defined", e.span)
            self.visiting.add(e.id)
            try:
                return self.expr(self.lets[e.id].value)
            finally:
                self.visiting.discard(e.id)
        if e.id in scope.floats:
            raise PatternTypeError(f"float input '{e.id}' holds one value per head: write '{e.id}[h]'", e.span)
        if e.id in scope.inputs:
            raise PatternTypeError(f"runtime input '{e.id}' must be indexed: '{e.id}[q]' or '{e.id}[k]'", e.span)
        return self.checker.e_Name(e, scope)

    def call(self, e: N.Call) -> Typed:
        if e.kwargs:
            raise PatternTypeError(f"{e.func}() takes no keyword arguments", e.span)
        entry = TABLE[e.func]
        n = len(e.args)
        if n < entry.min_args or (entry.max_args is not None and n > entry.max_args):
            want = "1" if e.func == "abs" else f"at least {entry.min_args}"
            raise PatternTypeError(f"{e.func}() takes {want} arguments, {n} given", e.span)
        ts = [self.number(a, f"an argument of {e.func}()") for a in e.args]
        type_ = "float" if any(t.type == "float" for t in ts) else "int"
        if all(t.const for t in ts):
            fn = {"abs": abs, "min": min, "max": max}[e.func]
            return _const(fn(*(t.value for t in ts)), e.span)
        return Typed(N.Call(e.func, tuple(t.expr for t in ts), (), e.span), type_)

    def subscript(self, e: N.Subscript) -> Typed:
        scope = self.scope
        if isinstance(e.value, N.Name) and e.value.id in scope.floats:
            if not (isinstance(e.index, N.Name) and e.index.id == "h"):
                raise PatternTypeError(f"float input '{e.value.id}' is float[h] (one value per head): index it "
                                       f"by h", e.index.span)
            return Typed(N.Subscript(N.Name(e.value.id, e.value.span), N.Name("h", e.index.span), e.span), "float")
        if isinstance(e.value, N.Name) and e.value.id in scope.inputs:
            raise PatternTypeError(f"score terms cannot read integer runtime inputs such as '{e.value.id}' (not "
                                   f"supported yet); only float[h] inputs", e.span)
        container = self.checker.expr(e.value, scope)
        if container.type != "list":
            raise PatternTypeError(f"only lists and runtime inputs can be indexed, not {container.type}",
                                   e.value.span)
        values = container.value
        if not values:
            raise PatternTypeError("cannot index an empty list", e.value.span)
        index = self.checker._int(e.index, scope, "a list index")   # an integer: the mask's rules (h % 4)
        if index.const:
            if not 0 <= index.value < len(values):
                raise PatternTypeError(
                    f"list index {index.value} is out of range (the list has {len(values)} elements)", e.index.span)
            return _const(values[index.value], e.span)
        type_ = "float" if any(isinstance(x, float) for x in values) else "int"
        return Typed(N.Subscript(container.expr, index.expr, e.span), type_)


def _head(e: N.Expr) -> str:
    return e.func + "()" if isinstance(e, N.Call) else e.op


def _const(value, span: Span | None) -> Typed:
    if isinstance(value, float) and not math.isfinite(value):
        raise PatternTypeError("this constant is not a finite number", span)
    if isinstance(value, int) and abs(value).bit_length() > 64:
        raise PatternTypeError("this constant is too large for a score term", span)
    return Typed(literal(value, span), "float" if isinstance(value, float) else "int", value)


def _reads(e: N.Expr, names: tuple[str, ...]) -> N.Name | None:
    return next((x for x in N.walk(e) if isinstance(x, N.Name) and x.id in names), None)


def check_scores(checker, scope: Scope, stmts: list[N.Score]) -> ScoreTerms | None:
    """Check a pattern's score statements in `scope` (after its mask): the terms, or None when it has none."""
    if not stmts:
        return None
    seen: dict[str, N.Score] = {}
    softcap = sink = None
    bias: list[N.Expr] = []
    sc = _ScoreChecker(checker, scope)
    for stmt in stmts:
        first = seen.setdefault(stmt.kind, stmt)
        if first is not stmt and stmt.kind != "bias":
            where = f"{first.span.source.name}:{first.span.line}:{first.span.column}" if first.span else "above"
            raise PatternNameError(f"pattern '{scope.pattern.name}' has more than one 'score {stmt.kind}'",
                                   stmt.span, (f"the first is at {where}",))
        t = sc.number(stmt.expr, f"the argument of {stmt.kind}()")
        if stmt.kind == "softcap":
            if not t.const:
                raise PatternTypeError("the cap of softcap() must be a constant (parameters and numbers only)",
                                       stmt.expr.span)
            if not t.value > 0:
                raise PatternTypeError(f"the cap of softcap() must be positive, got {t.value}", stmt.expr.span)
            softcap = float(t.value)
        elif stmt.kind == "sink":
            bad = _reads(t.expr, ("q", "k"))
            if bad is not None:
                raise PatternTypeError(f"a sink is one logit per head (and batch element); it cannot read "
                                       f"'{bad.id}'", bad.span or stmt.expr.span)
            sink = t.expr
        elif not (t.const and t.value == 0):   # a zero bias changes nothing
            bias.append(t.expr)
    used = {x.id for e in bias + [sink] if e is not None for x in N.walk(e) if isinstance(x, N.Name)}
    inputs = tuple(sorted((d for n, d in scope.floats.items() if n in used), key=lambda d: d.name))
    return ScoreTerms(softcap, tuple(bias), sink, inputs)
