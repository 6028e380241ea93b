"""Stage 2 (check), expressions: the type rules of every expression form, and constant folding.

:class:`ExprChecker` holds one method per AST node (``e_<Node>``) and per builtin; compiler/check.py's
checker adds names, parameters and pattern calls on top. A checked sub-expression is a :class:`Typed`: its
type, and its Python value when it is constant. Constant values come from the one semantics table
(compiler/semantics.py), so the checker folds exactly what every evaluator computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PatternError, PatternNameError, PatternTypeError, Span
from . import nodes as N
from .semantics import BUILTINS as TABLE, FOLD_BITS, OPERATORS, literal
from .unparse import unparse_expr
from .values import MAX_COLLECTION, Value, did_you_mean, length, type_of_value

__all__ = ["VARIABLES", "BUILTINS", "CONSTANTS", "Typed", "Scope", "ExprChecker", "join_spans"]

VARIABLES = ("q", "k", "h", "b")
BUILTINS = tuple(TABLE)
CONSTANTS = ("causal",)

# How an argument of each builtin is named in a type error (default: "an argument of NAME()").
_ARGUMENT = {"abs": "the argument of abs()", "range": "a range() argument", "hash": "a hash() argument"}


class _NotConst:
    def __repr__(self):
        return "<not constant>"


NOT_CONST = _NotConst()


@dataclass(frozen=True, slots=True)
class Typed:
    """A checked expression: the (folded) node, its type (int, bool, set, list, range, input) and its value."""

    expr: N.Expr
    type: str
    value: object = NOT_CONST   # the Python value when the expression is constant

    @property
    def const(self) -> bool:
        """Whether the expression is a constant."""
        return self.value is not NOT_CONST


def _const(value, span: Span | None, type_: str | None = None) -> Typed:
    if isinstance(value, int) and abs(value).bit_length() > FOLD_BITS:   # folding stays cheap, messages short
        raise PatternTypeError(f"this constant exceeds 2**{FOLD_BITS} in magnitude", span)
    return Typed(literal(value, span), type_ or type_of_value(value), value)


@dataclass
class Scope:
    """What names mean inside one pattern: its module, parameter values, local definitions and inputs."""

    module: N.Module
    pattern: N.PatternDef
    params: dict[str, Value]
    lets: dict[str, Typed]
    inputs: dict[str, N.InputDecl]
    floats: dict[str, N.FloatInputDecl] = field(default_factory=dict)   # float[h] inputs (score terms)


@dataclass(frozen=True, slots=True)
class _Pre:
    """An already-checked operand smuggled through e_BoolOp (never escapes the checker)."""

    typed: Typed

    @property
    def span(self):
        return self.typed.expr.span


def join_spans(a: Span | None, b: Span | None) -> Span | None:
    """The span from the start of `a` to the end of `b`."""
    if a is None or b is None:
        return a or b
    return Span(a.source, a.line, a.column, b.end_line, b.end_column)


class ExprChecker:
    """The expression half of the checker; the subclass supplies `pattern_names`, `find` and `check`."""

    def expr(self, e: N.Expr, scope: Scope) -> Typed:
        """Check one expression in `scope`."""
        return getattr(self, "e_" + type(e).__name__)(e, scope)

    def e_Num(self, e: N.Num, scope) -> Typed:
        return Typed(e, "int", e.value)

    def e_Float(self, e: N.Float, scope) -> Typed:
        return Typed(e, "float", e.value)

    def e_BoolLit(self, e: N.BoolLit, scope) -> Typed:
        return Typed(e, "bool", e.value)

    def e_Name(self, e: N.Name, scope: Scope) -> Typed:
        if e.id in VARIABLES:
            return Typed(e, "int")
        if e.id == "causal":
            return Typed(N.Compare(N.Name("k", e.span), ("<=",), (N.Name("q", e.span),), e.span), "bool")
        if e.id in scope.lets:
            value = scope.lets[e.id]
            if isinstance(value, PatternError):
                raise value
            return value
        if e.id in scope.params:
            return _const(scope.params[e.id], e.span)
        if e.id in scope.inputs:
            return Typed(e, "input")
        if e.id in scope.floats:
            raise PatternTypeError(f"'{e.id}' is a float input: it can only be read as '{e.id}[h]' in a score "
                                   f"term", e.span)
        if e.id in BUILTINS:
            raise PatternTypeError(f"'{e.id}' is a function; call it, e.g. {e.id}(...)", e.span)
        known = list(VARIABLES) + list(CONSTANTS) + list(scope.params) + list(scope.lets) + list(scope.inputs)
        later = [s for s in scope.pattern.body if isinstance(s, N.Let) and s.name == e.id]
        if later:
            raise PatternNameError(f"'{e.id}' is used before it is defined", e.span)
        if e.id in self.pattern_names(scope.module):
            raise PatternTypeError(f"'{e.id}' is a pattern; call it, e.g. {e.id}()", e.span)
        raise PatternNameError(f"unknown name '{e.id}'{did_you_mean(e.id, known)}", e.span)

    def _typed(self, e: N.Expr, scope: Scope, type_: str, what: str) -> Typed:
        return _expect(self.expr(e, scope), e, type_, what)

    def _int(self, e: N.Expr, scope: Scope, what: str) -> Typed:
        return self._typed(e, scope, "int", what)

    def e_Unary(self, e: N.Unary, scope) -> Typed:
        key, type_ = ("not", "bool") if e.op == "not" else ("neg", "int")
        t = self.expr(e.operand, scope)
        if e.op == "-" and t.type == "float" and t.const:   # a negative float constant (a list element)
            return _const(-t.value, e.span, "float")
        t = _expect(t, e.operand, type_, f"the operand of '{e.op}'")
        if t.const:
            return _const(OPERATORS[key].python(t.value), e.span, type_)
        return Typed(N.Unary(e.op, t.expr, e.span), type_)

    def e_BinOp(self, e: N.BinOp, scope) -> Typed:
        left = self._int(e.left, scope, f"the left operand of '{e.op}'")
        right = self._int(e.right, scope, f"the right operand of '{e.op}'")
        if e.op in ("//", "%"):
            if not right.const:
                raise PatternTypeError(
                    f"the right operand of '{e.op}' must be a constant (parameters and numbers only)", e.right.span)
            if right.value == 0:
                raise PatternTypeError(f"division by zero: '{unparse_expr(e.right)}' is 0", e.right.span)
        if e.op == "*" and not (left.const or right.const):
            raise PatternTypeError("'*' needs a constant on one side (q * k is not a linear pattern)", e.span)
        if left.const and right.const:
            return _const(OPERATORS[e.op].python(left.value, right.value), e.span, "int")
        return Typed(N.BinOp(e.op, left.expr, right.expr, e.span), "int")

    def e_BoolOp(self, e: N.BoolOp, scope) -> Typed:
        parts = [self._typed(v, scope, "bool", f"an operand of '{e.op}'") for v in e.values]
        absorbing = e.op == "or"   # True absorbs `or`, False absorbs `and`
        if any(p.const and p.value == absorbing for p in parts):
            return _const(absorbing, e.span)
        kept = [p.expr for p in parts if not p.const]
        if not kept:
            return _const(OPERATORS[e.op].python(*(p.value for p in parts)), e.span)
        if len(kept) == 1:
            return Typed(kept[0], "bool")
        return Typed(N.BoolOp(e.op, tuple(kept), e.span), "bool")

    def e_Compare(self, e: N.Compare, scope) -> Typed:
        operands = [self.expr(e.left, scope)] + [self.expr(c, scope) for c in e.comparators]
        nodes = [e.left] + list(e.comparators)
        links: list[Typed] = []
        for i, op in enumerate(e.ops):
            a, b = operands[i], operands[i + 1]
            _check_link(op, a, b, nodes[i], nodes[i + 1])
            if a.const and b.const:
                links.append(_const(OPERATORS[op].python(a.value, b.value), e.span))
            else:
                links.append(Typed(N.Compare(a.expr, (op,), (b.expr,), e.span), "bool"))
        if len(links) == 1:
            return links[0]
        # A chain is the conjunction of its links (each middle operand is pure, so repeating it is exact).
        return self.e_BoolOp(N.BoolOp("and", tuple(_Pre(t) for t in links), e.span), scope)

    def e__Pre(self, e: _Pre, scope) -> Typed:
        return e.typed

    def e_SetLit(self, e: N.SetLit, scope) -> Typed:
        return _const(frozenset(self._constants(e.elts, scope, "set")), e.span)

    def e_ListLit(self, e: N.ListLit, scope) -> Typed:
        return _const(tuple(self._constants(e.elts, scope, "list")), e.span)

    def _constants(self, elts, scope, kind: str) -> list[int]:
        if len(elts) > MAX_COLLECTION:
            raise PatternTypeError(f"a {kind} may hold at most {MAX_COLLECTION} elements", elts[0].span)
        out = []
        for x in elts:
            t = self.expr(x, scope)
            if not (kind == "list" and t.type == "float"):   # a list may hold per-head floats (score terms)
                _expect(t, x, "int", f"a {kind} element")
            if not t.const:
                raise PatternTypeError(f"{kind} elements must be constants", x.span)
            out.append(t.value)
        return out

    def e_Subscript(self, e: N.Subscript, scope: Scope) -> Typed:
        if isinstance(e.value, N.Name) and e.value.id in scope.inputs:
            decl = scope.inputs[e.value.id]
            _check_input_axis(decl, e.index)
            if not (isinstance(e.index, N.Name) and e.index.id in ("q", "k", "b")):
                raise PatternTypeError(f"runtime input '{decl.name}' can only be indexed by q or k", e.index.span,
                                       _neighbour_hint(decl, e.index))
            if decl.axis == "q" and e.index.id == "k":
                raise PatternTypeError(
                    f"'{decl.name}' is int[q] (one value per query); it cannot be indexed by k", e.index.span)
            return Typed(N.Subscript(N.Name(decl.name, e.value.span), N.Name(e.index.id, e.index.span), e.span),
                         "int")
        container = self.expr(e.value, scope)
        if container.type != "list":
            raise PatternTypeError(f"only lists and runtime inputs can be indexed, not {container.type}",
                                   e.value.span)
        index = self._int(e.index, scope, "a list index")
        values = container.value
        element = "float" if any(isinstance(x, float) for x in values) else "int"
        if not values:
            raise PatternTypeError("cannot index an empty list", e.value.span)
        if index.const:
            if not 0 <= index.value < len(values):
                raise PatternTypeError(
                    f"list index {index.value} is out of range (the list has {len(values)} elements)", e.index.span)
            return _const(values[index.value], e.span)
        return Typed(N.Subscript(container.expr, index.expr, e.span), element)

    # -- builtins ---------------------------------------------------------------------------------

    def builtin(self, e: N.Call, scope: Scope) -> Typed:
        """Check a call of a builtin function (its arity from the semantics table)."""
        if e.kwargs:
            raise PatternTypeError(f"{e.func}() takes no keyword arguments", e.span)
        entry = TABLE[e.func]
        lo, hi, n = entry.min_args, entry.max_args, len(e.args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi else f"at least {lo}")
            raise PatternTypeError(f"{e.func}() takes {want} arguments, {n} given", e.span)
        if e.func == "len":
            return self.b_len(e, scope)
        ts = [self._int(a, scope, _ARGUMENT.get(e.func, f"an argument of {e.func}()")) for a in e.args]
        if not entry.runtime:
            return self.b_range(e, ts)
        if all(t.const for t in ts):
            return _const(entry.python(*(t.value for t in ts)), e.span, "int")
        if e.func not in ("min", "max"):
            return Typed(N.Call(e.func, tuple(t.expr for t in ts), (), e.span), "int")
        # min/max: the constant arguments fold into one, after the others
        consts = [t.value for t in ts if t.const]
        args = tuple(t.expr for t in ts if not t.const) + ((literal(entry.python(*consts), e.span),) if consts else ())
        return Typed(args[0], "int") if len(args) == 1 else Typed(N.Call(e.func, args, (), e.span), "int")

    def b_len(self, e: N.Call, scope) -> Typed:
        t = self.expr(e.args[0], scope)
        if t.type not in ("set", "list", "range"):
            raise PatternTypeError(f"len() takes a set, list or range, not {t.type}", e.args[0].span)
        return _const(length(t.value), e.span)

    def b_range(self, e: N.Call, ts: list[Typed]) -> Typed:
        bad = [a for a, t in zip(e.args, ts) if not t.const]
        if bad:
            raise PatternTypeError("range() arguments must be constants (parameters and numbers only)", bad[0].span)
        values = [t.value for t in ts]
        if len(values) == 3 and values[2] == 0:
            raise PatternTypeError("range() step must not be zero", e.args[2].span)
        return _const(TABLE["range"].python(*values), e.span)


def _expect(t: Typed, e: N.Expr, type_: str, what: str) -> Typed:
    """`t` (the checked `e`) when it has type `type_`, else the type error naming `what`."""
    if t.type != type_:
        want = "an integer" if type_ == "int" else "a condition (bool)"
        raise PatternTypeError(f"{what} must be {want}, not {t.type}", e.span)
    return t


def _check_link(op: str, a: Typed, b: Typed, left: N.Expr, right: N.Expr) -> None:
    """The type rule of one comparison link `left op right`."""
    if op in ("in", "not in"):
        if a.type != "int":
            raise PatternTypeError(f"the left side of '{op}' must be an integer, not {a.type}", left.span)
        if b.type not in ("set", "list", "range"):
            raise PatternTypeError(f"the right side of '{op}' must be a set, list or range, not {b.type}",
                                   right.span)
        if b.type == "list" and any(isinstance(x, float) for x in b.value):
            raise PatternTypeError(f"the right side of '{op}' must hold integers, not floats", right.span)
    elif a.const and b.const and {a.type, b.type} <= {"int", "float"} and "float" in (a.type, b.type):
        pass   # constants may compare as numbers (`require cap > 0`); floats never reach a mask
    elif op in ("==", "!="):
        if a.type != b.type or a.type not in ("int", "bool"):
            raise PatternTypeError(f"cannot compare {a.type} with {b.type} using '{op}'",
                                   join_spans(left.span, right.span))
    else:
        for t, n in ((a, left), (b, right)):
            if t.type != "int":
                raise PatternTypeError(f"'{op}' compares integers, not {t.type}", n.span)


def _check_input_axis(decl: N.InputDecl, index: N.Expr) -> None:
    """`b` indexes exactly the int[b] inputs (one value per sequence), and an int[b] input only `b`."""
    is_b = isinstance(index, N.Name) and index.id == "b"
    if decl.axis == "b" and not is_b:
        raise PatternTypeError(f"'{decl.name}' is int[b] (one value per sequence); index it by b: "
                               f"'{decl.name}[b]'", index.span)
    if decl.axis != "b" and is_b:
        raise PatternTypeError(f"'{decl.name}' is int[{decl.axis}] (one value per "
                               f"{'key' if decl.axis == 'k' else 'query'}); only an int[b] input can be "
                               f"indexed by b", index.span)


def _neighbour_hint(decl: N.InputDecl, index: N.Expr) -> tuple[str, ...]:
    """A note for `doc[k - 1]` and the like: a value at another position is passed as an input of its own."""
    names = {x.id for x in N.walk(index) if isinstance(x, N.Name)}
    if not names & {"q", "k"}:
        return ()
    return (f"to use a value at another position, compute it outside and pass it as an input of its own: "
            f"e.g. for '{decl.name}[k - 1] != {decl.name}[k]' (k starts a document) pass document starts as "
            f"'input start: int[k]' and write 'start[k] == 1'",)
