"""Stage 2 -- check: a parsed pattern + parameter values -> a closed, typed expression.

The checker resolves every name (variables q, k, h, b; parameters; local definitions; runtime inputs;
builtins; other patterns), checks types, binds parameter values (defaults, overrides from Python or the
CLI), evaluates `require` clauses, inlines local definitions and calls of other patterns, and folds every
constant sub-expression. What comes out -- a :class:`CheckedPattern` -- mentions only the index variables,
runtime inputs and literals, so every later stage (dense reference, simplifier, code generator) works on
one small, closed language.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable, Union

from ..errors import (
    ParameterError, PatternError, PatternNameError, PatternTypeError, RequirementError, Span,
)
from . import nodes as N
from .hashing import hash32
from .unparse import unparse_expr

__all__ = [
    "CheckedPattern", "check_pattern", "python_value", "type_of_value", "VARIABLES", "BUILTINS", "CONSTANTS",
    "BUILTIN_NAMES", "RESERVED_PATTERN_NAMES", "RESERVED_INPUT_NAMES", "RESERVED_PARAMETER_NAMES", "Value",
]

VARIABLES = ("q", "k", "h", "b")
BUILTINS = ("abs", "min", "max", "len", "range", "hash")
CONSTANTS = ("causal",)

# -- reserved names: defined here once, documented in docs/language.md ("Reserved names") ---------------

# Built in to the language: no parameter, runtime input or local definition may take one of these names.
BUILTIN_NAMES = VARIABLES + CONSTANTS + BUILTINS

# Names no pattern may take: a call NAME(...) could never reach it (a variable is not callable, a builtin
# function is called instead). `causal` is not among them: `causal()` does call a pattern named so (the
# library's `causal`), while the bare name `causal` is the built-in condition k <= q.
RESERVED_PATTERN_NAMES = VARIABLES + BUILTINS

# Runtime inputs are passed as keyword arguments (`kernel(q, k, v, doc=ids)`), next to the named arguments
# of every call that takes them: Kernel.__call__, attnpat.attention, runtime.autograd.attention_with_grad,
# reference_attention, Pattern.dense_mask / block_mask / lowering and compiler.analysis.analyze. An input
# named like one of those arguments could never be passed, so it cannot be declared (tests/test_check.py
# checks that this list covers every public function that takes **inputs).
RESERVED_INPUT_NAMES = (
    "batch", "block_k", "block_q", "head_dim", "heads", "k", "kernel", "kv_len", "layers", "pattern", "q",
    "q_len", "q_offset", "return_lse", "scale", "self", "v",
)

# Parameters are passed as keyword arguments of attnpat.load(path_or_name, pattern, **params),
# attnpat.parse(text, pattern, *, name, **params) and Pattern.with_params(self, **params); a parameter
# named like one of their own arguments could never be given a value there, so it cannot be declared.
RESERVED_PARAMETER_NAMES = ("name", "path_or_name", "pattern", "self", "text")

MAX_CALL_DEPTH = 32
MAX_COLLECTION = 1 << 16  # elements in one set/list/range constant; keeps a typo from eating memory
MAX_INT = (1 << 63) - 1   # constants in a checked mask must fit in int64 (the dense reference, the kernels)

Value = Union[int, bool, frozenset, tuple, range]

# Resolver: pattern name -> (module that holds it, its definition), or None if unknown. A resolver may also
# have a `names` attribute, a function returning every name it knows: an unknown pattern's "did you mean"
# then searches those too (attnpat.library.resolve_library has one: the library's pattern names).
Resolver = Callable[[str], "tuple[N.Module, N.PatternDef] | None"]


@dataclass(frozen=True, slots=True)
class CheckedPattern:
    """A pattern with all parameters bound: a closed boolean expression plus what it needs at run time.

    Attributes:
        name: the pattern's name.
        params: the bound parameter values, in declaration order.
        inputs: the runtime inputs the expression reads (its own and those of patterns it calls).
        expr: the mask, over q, k, h, b, input subscripts and literals only.
        unused_inputs: names of declared inputs that the bound parameters fold away; accepted at call time
            (so callers need not know which parameter values use them) and ignored.
    """

    name: str
    params: tuple[tuple[str, Value], ...]
    inputs: tuple[N.InputDecl, ...]
    expr: N.Expr
    unused_inputs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return unparse_expr(self.expr)


class _NotConst:
    def __repr__(self):
        return "<not constant>"


NOT_CONST = _NotConst()


@dataclass(frozen=True, slots=True)
class _Typed:
    expr: N.Expr
    type: str            # int, bool, set, list, range, input
    value: object = NOT_CONST   # the Python value when the expression is constant

    @property
    def const(self) -> bool:
        return self.value is not NOT_CONST


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, frozenset):
        return "{" + ", ".join(map(str, sorted(value))) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, range):
        return f"range({value.start}, {value.stop}, {value.step})"
    return repr(value)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def literal(value: Value, span: Span | None = None) -> N.Expr:
    """Return the AST literal for a constant value."""
    if isinstance(value, bool):
        return N.BoolLit(value, span)
    if isinstance(value, int):
        return N.Num(value, span)
    if isinstance(value, frozenset):
        return N.SetLit(tuple(N.Num(v, span) for v in sorted(value)), span)
    if isinstance(value, tuple):
        return N.ListLit(tuple(N.Num(v, span) for v in value), span)
    if isinstance(value, range):
        return N.Call("range", tuple(N.Num(v, span) for v in (value.start, value.stop, value.step)), (), span)
    raise TypeError(value)


def type_of_value(value: object) -> str:
    """The language type of a constant: int, bool, set, list or range."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, frozenset):
        return "set"
    if isinstance(value, tuple):
        return "list"
    if isinstance(value, range):
        return "range"
    raise TypeError(value)


def python_value(value: object, type_: str, where: str) -> Value:
    """Validate and normalise a parameter value given from Python.

    Args:
        value: what the user passed.
        type_: the declared parameter type (int, bool, set, list).
        where: how to name the parameter in an error, e.g. "parameter 'window' of 'sliding_window'".
    """
    def bad(expected: str) -> ParameterError:
        return ParameterError(f"{where} expects {expected}, got {value!r} ({type(value).__name__})")

    def as_int(x) -> int:
        # A bool is not an int here -- nor a numpy bool or a bool tensor (torch.tensor(True).__index__() is 1).
        if (isinstance(x, bool) or not hasattr(x, "__index__")
                or str(getattr(x, "dtype", "")) in ("bool", "torch.bool")):
            raise bad(f"{type_} of integers" if type_ in ("set", "list") else "an int")
        return int(x.__index__())

    if type_ == "int":
        return as_int(value)
    if type_ == "bool":
        # numpy's bool scalar is numpy.bool_ before numpy 2 and numpy.bool from numpy 2 on.
        if isinstance(value, bool) or (type(value).__module__ == "numpy"
                                       and type(value).__name__ in ("bool_", "bool")):
            return bool(value)
        raise bad("a bool (True or False)")
    if type_ in ("set", "list"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise bad(f"a {type_} of integers")
        if hasattr(value, "__len__") and _length(value) > MAX_COLLECTION:   # before iterating range(10**12)
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        items = [as_int(x) for x in value]
        if len(items) > MAX_COLLECTION:
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        return frozenset(items) if type_ == "set" else tuple(items)
    raise ParameterError(f"{where}: unknown type {type_!r}")


@dataclass
class _Scope:
    module: N.Module
    pattern: N.PatternDef
    params: dict[str, Value]
    lets: dict[str, _Typed]
    inputs: dict[str, N.InputDecl]


class _Checker:
    def __init__(self, resolver: Resolver):
        self.resolver = resolver
        self.stack: list[str] = []
        self.inputs: dict[str, N.InputDecl] = {}

    # -- patterns ---------------------------------------------------------------------------------

    def find(self, module: N.Module, name: str, span: Span | None) -> tuple[N.Module, N.PatternDef]:
        for p in module.patterns:
            if p.name == name:
                return module, p
        found = self.resolver(name) if self.resolver else None
        if found is None:
            raise PatternNameError(f"unknown pattern '{name}'{_suggest(name, self.pattern_names(module))}", span)
        return found

    def pattern_names(self, module: N.Module) -> list[str]:
        """Every name a call can reach: the file's patterns, the resolver's (the library) and the builtins."""
        known = [p.name for p in module.patterns]
        names = getattr(self.resolver, "names", None)
        if callable(names):
            known += [n for n in names() if n not in known]
        return known + list(BUILTINS)

    def check(self, module: N.Module, pattern: N.PatternDef, overrides: dict[str, tuple[Value, Span | None]],
              call_span: Span | None) -> _Typed:
        _check_pattern_name(pattern)
        if pattern.name in self.stack:
            chain = " -> ".join(self.stack + [pattern.name])
            raise PatternNameError(f"pattern '{pattern.name}' uses itself ({chain})", call_span)
        if len(self.stack) >= MAX_CALL_DEPTH:
            raise PatternNameError("patterns call each other too deeply", call_span)
        self.stack.append(pattern.name)
        try:
            scope = _Scope(module, pattern, self.bind_params(pattern, overrides, call_span), {}, {})
            # Requirements are judged before the mask, so a bad value reports the failed `require`
            # rather than what it breaks further down (a division by zero, say). A definition that fails
            # is kept as its error and raised only where it is used.
            masks = [s for s in pattern.body if isinstance(s, N.Mask)]
            if len(masks) > 1:
                raise PatternNameError(f"pattern '{pattern.name}' has more than one 'mask'", masks[1].span)
            if not masks:
                raise PatternNameError(f"pattern '{pattern.name}' has no 'mask' statement", pattern.span)
            for stmt in pattern.body:
                if isinstance(stmt, N.Require):
                    self.require(stmt, scope)
                elif isinstance(stmt, N.InputDecl):
                    self.declare_input(stmt, scope)
                elif isinstance(stmt, N.Let):
                    self.declare_name(stmt.name, stmt.span, scope)
                    try:
                        scope.lets[stmt.name] = self.expr(stmt.value, scope)
                    except PatternError as exc:
                        scope.lets[stmt.name] = exc
            mask = self.expr(masks[0].expr, scope)
            if mask.type != "bool":
                raise PatternTypeError(f"a mask must be a condition (bool), not {mask.type}", masks[0].expr.span)
            self.params_out = scope.params
            return mask
        finally:
            self.stack.pop()

    def bind_params(self, pattern: N.PatternDef, overrides: dict[str, tuple[Value, Span | None]],
                    call_span: Span | None) -> dict[str, Value]:
        names = [p.name for p in pattern.params]
        for p in pattern.params:
            if p.name in BUILTIN_NAMES:
                raise PatternNameError(f"'{p.name}' is a built-in name and cannot be a parameter", p.span)
            if p.name in RESERVED_PARAMETER_NAMES:
                raise _reserved(p.name, "parameter", "parameter values", "attnpat.load(FILE, window=8)",
                                "attnpat.load, attnpat.parse or Pattern.with_params", RESERVED_PARAMETER_NAMES,
                                p.span)
            if names.count(p.name) > 1:
                raise PatternNameError(f"parameter '{p.name}' is declared twice", p.span)
        for name, (_, span) in overrides.items():
            if name not in names:
                hint = _suggest(name, names)
                have = f"; it has {', '.join(names)}" if names and not hint else ""
                raise ParameterError(f"pattern '{pattern.name}' has no parameter '{name}'{hint}{have}",
                                     span or call_span)
        bound: dict[str, Value] = {}
        for p in pattern.params:
            where = f"parameter '{p.name}' of pattern '{pattern.name}'"
            if p.name in overrides:
                value, span = overrides[p.name]
                got = type_of_value(value)
                if got != p.type and not (p.type == "set" and got in ("list", "range")):
                    raise ParameterError(f"{where} is {p.type}, got {got} {_describe(value)}",
                                         span or call_span)
                if p.type == "set" and _length(value) > MAX_COLLECTION:
                    raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported",
                                         span or call_span)
                bound[p.name] = frozenset(value) if p.type == "set" else value
                continue
            if p.default is None:
                raise ParameterError(f"{where} has no default; give a value", call_span or p.span)
            scope = _Scope(N.Module(()), pattern, dict(bound), {}, {})
            typed = self.expr(p.default, scope)
            if not typed.const:
                raise PatternTypeError(f"the default of '{p.name}' must be a constant", p.default.span)
            ok = typed.type == p.type or (p.type == "set" and typed.type in ("list", "range"))
            if not ok:
                raise PatternTypeError(f"the default of '{p.name}' is {typed.type}, but it is declared {p.type}",
                                       p.default.span)
            if p.type == "set" and _length(typed.value) > MAX_COLLECTION:
                raise PatternTypeError(f"a set may hold at most {MAX_COLLECTION} elements", p.default.span)
            bound[p.name] = frozenset(typed.value) if p.type == "set" else typed.value
        return bound

    def declare_name(self, name: str, span: Span | None, scope: _Scope) -> None:
        if name in BUILTIN_NAMES:
            raise PatternNameError(f"'{name}' is a built-in name and cannot be redefined", span)
        if name in scope.params or name in scope.lets or name in scope.inputs:
            raise PatternNameError(f"'{name}' is already defined in pattern '{scope.pattern.name}'", span)

    def declare_input(self, decl: N.InputDecl, scope: _Scope) -> None:
        self.declare_name(decl.name, decl.span, scope)
        if decl.name in RESERVED_INPUT_NAMES:
            raise _reserved(decl.name, "runtime input", "inputs", "kernel(q, k, v, doc=ids)",
                            "the calls that take them", RESERVED_INPUT_NAMES, decl.span)
        scope.inputs[decl.name] = decl
        other = self.inputs.get(decl.name)
        if other is not None and other.axis != decl.axis:
            raise PatternTypeError(
                f"runtime input '{decl.name}' is int[{decl.axis}] here but int[{other.axis}] in another pattern",
                decl.span)
        self.inputs.setdefault(decl.name, decl)

    def require(self, req: N.Require, scope: _Scope) -> None:
        typed = self.expr(req.cond, scope)
        if typed.type != "bool":
            raise PatternTypeError(f"'require' needs a condition, not {typed.type}", req.cond.span)
        if not typed.const:
            raise PatternTypeError("'require' may only use parameters, not q, k, h, b or inputs", req.cond.span)
        if not typed.value:
            used = sorted(n for n in _names(req.cond) if n in scope.params)
            values = ", ".join(f"{n} = {_describe(scope.params[n])}" for n in used)
            detail = f" ({values})" if values else ""
            raise RequirementError(
                f"requirement of '{scope.pattern.name}' failed: {unparse_expr(req.cond)}{detail}", req.cond.span)

    # -- expressions ------------------------------------------------------------------------------

    def expr(self, e: N.Expr, scope: _Scope) -> _Typed:
        method = getattr(self, "e_" + type(e).__name__)
        return method(e, scope)

    def e_Num(self, e: N.Num, scope) -> _Typed:
        return _Typed(e, "int", e.value)

    def e_BoolLit(self, e: N.BoolLit, scope) -> _Typed:
        return _Typed(e, "bool", e.value)

    def e_Name(self, e: N.Name, scope: _Scope) -> _Typed:
        if e.id in VARIABLES:
            return _Typed(e, "int")
        if e.id == "causal":
            return _Typed(N.Compare(N.Name("k", e.span), ("<=",), (N.Name("q", e.span),), e.span), "bool")
        if e.id in scope.lets:
            value = scope.lets[e.id]
            if isinstance(value, PatternError):
                raise value
            return value
        if e.id in scope.params:
            value = scope.params[e.id]
            return _Typed(literal(value, e.span), type_of_value(value), value)
        if e.id in scope.inputs:
            return _Typed(e, "input")
        if e.id in BUILTINS:
            raise PatternTypeError(f"'{e.id}' is a function; call it, e.g. {e.id}(...)", e.span)
        known = list(VARIABLES) + list(CONSTANTS) + list(scope.params) + list(scope.lets) + list(scope.inputs)
        later = [s for s in scope.pattern.body if isinstance(s, N.Let) and s.name == e.id]
        if later:
            raise PatternNameError(f"'{e.id}' is used before it is defined", e.span)
        if e.id in self.pattern_names(scope.module):
            raise PatternTypeError(f"'{e.id}' is a pattern; call it, e.g. {e.id}()", e.span)
        raise PatternNameError(f"unknown name '{e.id}'{_suggest(e.id, known)}", e.span)

    def _int(self, e: N.Expr, scope: _Scope, what: str) -> _Typed:
        t = self.expr(e, scope)
        if t.type != "int":
            raise PatternTypeError(f"{what} must be an integer, not {t.type}", e.span)
        return t

    def _bool(self, e: N.Expr, scope: _Scope, what: str) -> _Typed:
        t = self.expr(e, scope)
        if t.type != "bool":
            raise PatternTypeError(f"{what} must be a condition (bool), not {t.type}", e.span)
        return t

    def e_Unary(self, e: N.Unary, scope) -> _Typed:
        if e.op == "not":
            t = self._bool(e.operand, scope, "the operand of 'not'")
            if t.const:
                return _Typed(literal(not t.value, e.span), "bool", not t.value)
            return _Typed(N.Unary("not", t.expr, e.span), "bool")
        t = self._int(e.operand, scope, "the operand of '-'")
        if t.const:
            return _Typed(literal(-t.value, e.span), "int", -t.value)
        return _Typed(N.Unary("-", t.expr, e.span), "int")

    def e_BinOp(self, e: N.BinOp, scope) -> _Typed:
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
            value = _ARITH[e.op](left.value, right.value)
            return _Typed(literal(value, e.span), "int", value)
        return _Typed(N.BinOp(e.op, left.expr, right.expr, e.span), "int")

    def e_BoolOp(self, e: N.BoolOp, scope) -> _Typed:
        parts = [self._bool(v, scope, f"an operand of '{e.op}'") for v in e.values]
        absorbing = e.op == "or"   # True absorbs `or`, False absorbs `and`
        kept = []
        for p in parts:
            if p.const:
                if p.value == absorbing:
                    return _Typed(literal(absorbing, e.span), "bool", absorbing)
                continue
            kept.append(p.expr)
        if not kept:
            return _Typed(literal(not absorbing, e.span), "bool", not absorbing)
        if len(kept) == 1:
            return _Typed(kept[0], "bool")
        return _Typed(N.BoolOp(e.op, tuple(kept), e.span), "bool")

    def e_Compare(self, e: N.Compare, scope) -> _Typed:
        operands = [self.expr(e.left, scope)] + [self.expr(c, scope) for c in e.comparators]
        nodes = [e.left] + list(e.comparators)
        links: list[_Typed] = []
        for i, op in enumerate(e.ops):
            a, b = operands[i], operands[i + 1]
            if op in ("in", "not in"):
                if a.type != "int":
                    raise PatternTypeError(f"the left side of '{op}' must be an integer, not {a.type}", nodes[i].span)
                if b.type not in ("set", "list", "range"):
                    raise PatternTypeError(f"the right side of '{op}' must be a set, list or range, not {b.type}",
                                           nodes[i + 1].span)
            elif op in ("==", "!="):
                if a.type != b.type or a.type not in ("int", "bool"):
                    raise PatternTypeError(f"cannot compare {a.type} with {b.type} using '{op}'",
                                           _join_spans(nodes[i].span, nodes[i + 1].span))
            else:
                for t, n in ((a, nodes[i]), (b, nodes[i + 1])):
                    if t.type != "int":
                        raise PatternTypeError(f"'{op}' compares integers, not {t.type}", n.span)
            if a.const and b.const:
                value = _compare(op, a.value, b.value)
                links.append(_Typed(literal(value, e.span), "bool", value))
            else:
                links.append(_Typed(N.Compare(a.expr, (op,), (b.expr,), e.span), "bool"))
        if len(links) == 1:
            return links[0]
        # A chain is the conjunction of its links (each middle operand is pure, so repeating it is exact).
        return self.e_BoolOp(N.BoolOp("and", tuple(_Pre(t) for t in links), e.span), scope)

    def e__Pre(self, e: "_Pre", scope) -> _Typed:
        return e.typed

    def e_SetLit(self, e: N.SetLit, scope) -> _Typed:
        values = self._constants(e.elts, scope, "set")
        value = frozenset(values)
        return _Typed(literal(value, e.span), "set", value)

    def e_ListLit(self, e: N.ListLit, scope) -> _Typed:
        value = tuple(self._constants(e.elts, scope, "list"))
        return _Typed(literal(value, e.span), "list", value)

    def _constants(self, elts, scope, kind: str) -> list[int]:
        if len(elts) > MAX_COLLECTION:
            raise PatternTypeError(f"a {kind} may hold at most {MAX_COLLECTION} elements", elts[0].span)
        out = []
        for x in elts:
            t = self._int(x, scope, f"a {kind} element")
            if not t.const:
                raise PatternTypeError(f"{kind} elements must be constants", x.span)
            out.append(t.value)
        return out

    def e_Subscript(self, e: N.Subscript, scope: _Scope) -> _Typed:
        if isinstance(e.value, N.Name) and e.value.id in scope.inputs:
            decl = scope.inputs[e.value.id]
            if not (isinstance(e.index, N.Name) and e.index.id in ("q", "k")):
                raise PatternTypeError(f"runtime input '{decl.name}' can only be indexed by q or k", e.index.span)
            if decl.axis == "q" and e.index.id == "k":
                raise PatternTypeError(
                    f"'{decl.name}' is int[q] (one value per query); it cannot be indexed by k", e.index.span)
            return _Typed(N.Subscript(N.Name(decl.name, e.value.span), N.Name(e.index.id, e.index.span), e.span),
                          "int")
        container = self.expr(e.value, scope)
        if container.type != "list":
            raise PatternTypeError(f"only lists and runtime inputs can be indexed, not {container.type}",
                                   e.value.span)
        index = self._int(e.index, scope, "a list index")
        values = container.value
        if not values:
            raise PatternTypeError("cannot index an empty list", e.value.span)
        if index.const:
            if not 0 <= index.value < len(values):
                raise PatternTypeError(
                    f"list index {index.value} is out of range (the list has {len(values)} elements)", e.index.span)
            return _Typed(literal(values[index.value], e.span), "int", values[index.value])
        return _Typed(N.Subscript(container.expr, index.expr, e.span), "int")

    def e_Call(self, e: N.Call, scope: _Scope) -> _Typed:
        if e.func in VARIABLES:
            for p in scope.module.patterns:
                if p.name == e.func:
                    _check_pattern_name(p)   # the call can only mean that pattern: report its definition
        if e.func in BUILTINS:
            if e.kwargs:
                raise PatternTypeError(f"{e.func}() takes no keyword arguments", e.span)
            return getattr(self, "b_" + e.func)(e, scope)
        if e.func in VARIABLES or e.func in scope.params or e.func in scope.lets or e.func in scope.inputs:
            raise PatternTypeError(f"'{e.func}' is not a function or pattern", e.span)
        module, pattern = self.find(scope.module, e.func, e.span)
        if len(e.args) > len(pattern.params):
            raise ParameterError(f"pattern '{pattern.name}' takes {len(pattern.params)} parameters, "
                                 f"{len(e.args)} given", e.span)
        overrides: dict[str, tuple[Value, Span | None]] = {}
        given = [(p.name, a) for p, a in zip(pattern.params, e.args)] + list(e.kwargs)
        for name, arg in given:
            if name in overrides:
                raise ParameterError(f"parameter '{name}' given twice", arg.span)
            t = self.expr(arg, scope)
            if not t.const:
                raise PatternTypeError(f"the value of '{name}' must be a constant (parameters and numbers only)",
                                       arg.span)
            overrides[name] = (t.value, arg.span)
        saved = self.params_out if hasattr(self, "params_out") else None
        result = self.check(module, pattern, overrides, e.span)
        self.params_out = saved
        return result

    def _args(self, e: N.Call, lo: int, hi: int | None) -> None:
        n = len(e.args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi else f"at least {lo}")
            raise PatternTypeError(f"{e.func}() takes {want} arguments, {n} given", e.span)

    def b_abs(self, e: N.Call, scope) -> _Typed:
        self._args(e, 1, 1)
        t = self._int(e.args[0], scope, "the argument of abs()")
        if t.const:
            return _Typed(literal(abs(t.value), e.span), "int", abs(t.value))
        return _Typed(N.Call("abs", (t.expr,), (), e.span), "int")

    def _minmax(self, e: N.Call, scope, fn) -> _Typed:
        self._args(e, 2, None)
        ts = [self._int(a, scope, f"an argument of {e.func}()") for a in e.args]
        consts = [t.value for t in ts if t.const]
        rest = [t.expr for t in ts if not t.const]
        if not rest:
            value = fn(consts)
            return _Typed(literal(value, e.span), "int", value)
        args = tuple(rest) + ((literal(fn(consts), e.span),) if consts else ())
        if len(args) == 1:
            return _Typed(args[0], "int")
        return _Typed(N.Call(e.func, args, (), e.span), "int")

    def b_min(self, e, scope) -> _Typed:
        return self._minmax(e, scope, min)

    def b_max(self, e, scope) -> _Typed:
        return self._minmax(e, scope, max)

    def b_len(self, e: N.Call, scope) -> _Typed:
        self._args(e, 1, 1)
        t = self.expr(e.args[0], scope)
        if t.type not in ("set", "list", "range"):
            raise PatternTypeError(f"len() takes a set, list or range, not {t.type}", e.args[0].span)
        n = _length(t.value)
        return _Typed(literal(n, e.span), "int", n)

    def b_range(self, e: N.Call, scope) -> _Typed:
        self._args(e, 1, 3)
        ts = [self._int(a, scope, "a range() argument") for a in e.args]
        bad = [a for a, t in zip(e.args, ts) if not t.const]
        if bad:
            raise PatternTypeError("range() arguments must be constants (parameters and numbers only)", bad[0].span)
        values = [t.value for t in ts]
        if len(values) == 3 and values[2] == 0:
            raise PatternTypeError("range() step must not be zero", e.args[2].span)
        value = range(*values)
        return _Typed(literal(value, e.span), "range", value)

    def b_hash(self, e: N.Call, scope) -> _Typed:
        self._args(e, 1, 16)
        ts = [self._int(a, scope, "a hash() argument") for a in e.args]
        if all(t.const for t in ts):
            value = hash32(*[t.value for t in ts])
            return _Typed(literal(value, e.span), "int", value)
        return _Typed(N.Call("hash", tuple(t.expr for t in ts), (), e.span), "int")


@dataclass(frozen=True, slots=True)
class _Pre:
    """An already-checked operand smuggled through e_BoolOp (never escapes the checker)."""

    typed: _Typed

    @property
    def span(self):
        return self.typed.expr.span


def _reserved(name: str, what: str, values: str, example: str, owners: str, reserved: tuple[str, ...],
              span: Span | None) -> PatternNameError:
    """The error for a declaration whose name a keyword argument of the API already takes."""
    return PatternNameError(
        f"'{name}' is reserved and cannot name a {what}: {values} are passed as keyword arguments ({example}), "
        f"and '{name}' is already an argument of {owners}", span,
        (f"reserved {what.split()[-1]} names: {', '.join(reserved)}",))


def _name_span(pattern: N.PatternDef) -> Span | None:
    span = pattern.span   # the header `pattern NAME`, which ends with the name: point at the name
    if span is not None and span.end_column > len(pattern.name):
        span = Span(span.source, span.end_line, span.end_column - len(pattern.name), span.end_line, span.end_column)
    return span


def _check_unique_names(module: N.Module) -> None:
    """Two patterns of one file may not share a name: which one a call meant would be a guess."""
    first: dict[str, N.PatternDef] = {}
    for pattern in module.patterns:
        earlier = first.setdefault(pattern.name, pattern)
        if earlier is not pattern:
            span = _name_span(earlier)
            where = f"{span.source.name}:{span.line}:{span.column}" if span is not None else "earlier"
            raise PatternNameError(f"pattern '{pattern.name}' is defined twice in this file",
                                   _name_span(pattern), (f"the first definition is at {where}",))


def _check_pattern_name(pattern: N.PatternDef) -> None:
    """A pattern may not take a name that a call could never reach (RESERVED_PATTERN_NAMES)."""
    name = pattern.name
    if name in RESERVED_PATTERN_NAMES:
        why = (f"a call {name}(...) calls the built-in function" if name in BUILTINS
               else f"a call {name}() could never reach it")
        kind = "function" if name in BUILTINS else "variable"
        raise PatternNameError(f"'{name}' is a built-in {kind} and cannot name a pattern: {why}", _name_span(pattern),
                               (f"names no pattern may take: {', '.join(RESERVED_PATTERN_NAMES)}",))


def _floordiv(a: int, b: int) -> int:
    return a // b


_ARITH = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "//": _floordiv, "%": lambda a, b: a % b,
}


def _compare(op: str, a, b) -> bool:
    if op == "in":
        return a in b
    if op == "not in":
        return a not in b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]


def _length(value) -> int:
    """len() of a set, list or range -- also of a range longer than sys.maxsize (len() overflows there)."""
    try:
        return len(value)
    except OverflowError:
        r = value
        return max(0, (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step)


def _check_int_range(e: N.Expr) -> None:
    """Every constant left in a checked mask must fit in int64, as every evaluator computes in int64."""
    for node in _walk(e):
        if isinstance(node, N.Num) and not -MAX_INT - 1 <= node.value <= MAX_INT:
            raise PatternTypeError(f"the constant {node.value} is too large: constants in a mask must lie "
                                   f"between -2**63 and 2**63 - 1", node.span)


def _walk(e):
    yield e
    if isinstance(e, tuple):
        for x in e:
            yield from _walk(x)
    elif hasattr(e, "__dataclass_fields__"):
        for f in e.__dataclass_fields__:
            if f != "span":
                yield from _walk(getattr(e, f))


def _join_spans(a: Span | None, b: Span | None) -> Span | None:
    if a is None or b is None:
        return a or b
    return Span(a.source, a.line, a.column, b.end_line, b.end_column)


def _names(e) -> set[str]:
    return {x.id for x in N.walk(e) if isinstance(x, N.Name)}


def check_pattern(module: N.Module, name: str, params: dict[str, object] | None = None,
                  resolver: Resolver | None = None) -> CheckedPattern:
    """Check pattern `name` of `module` with parameter overrides `params` (Python values).

    Args:
        module: the parsed file.
        name: which pattern of the file.
        params: parameter overrides; values are validated against the declared types.
        resolver: finds patterns that are not in `module` (the library).
    Returns:
        the closed, typed mask expression with its inputs and bound parameters.
    """
    _check_unique_names(module)
    checker = _Checker(resolver)
    pattern = next((p for p in module.patterns if p.name == name), None)
    if pattern is None:
        known = [p.name for p in module.patterns]
        raise PatternNameError(f"no pattern '{name}' here{_suggest(name, known)}; "
                               f"patterns: {', '.join(known) or '(none)'}")
    declared = {p.name: p.type for p in pattern.params}
    overrides: dict[str, tuple[Value, Span | None]] = {}
    for key, value in (params or {}).items():
        if key in declared:
            value = python_value(value, declared[key], f"parameter '{key}' of pattern '{name}'")
        overrides[key] = (value, None)
    try:
        mask = checker.check(module, pattern, overrides, None)
        _check_int_range(mask.expr)
    except RecursionError:
        raise PatternTypeError("expression nested too deeply", pattern.span) from None
    bound = tuple((p.name, checker.params_out[p.name]) for p in pattern.params)
    used = _names(mask.expr)
    inputs = tuple(d for n, d in checker.inputs.items() if n in used)
    unused = tuple(sorted(n for n in checker.inputs if n not in used))
    return CheckedPattern(name, bound, inputs, mask.expr, unused)
