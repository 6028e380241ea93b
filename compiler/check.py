"""Stage 2 -- check: a parsed pattern + parameter values -> a closed, typed expression.

The checker resolves every name (variables q, k, h, b; parameters; local definitions; runtime inputs;
builtins; other patterns), checks types, binds parameter values (defaults, overrides from Python or the
CLI), evaluates `require` clauses, inlines local definitions and calls of other patterns, and folds every
constant sub-expression. What comes out -- a :class:`CheckedPattern` -- mentions only the index variables,
runtime inputs and literals, so every later stage (dense reference, simplifier, code generator) works on
one small, closed language. This module holds the pattern level (names, parameters, calls);
compiler/check_expr.py the type rules of expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ParameterError, PatternError, PatternNameError, PatternTypeError, RequirementError, Span
from . import nodes as N
from .check_expr import BUILTINS, CONSTANTS, VARIABLES, ExprChecker, Scope, Typed
from .check_score import ScoreTerms, check_scores
from .ranges import CHECK_POSITIONS, check_ranges
from .semantics import INT_MAX, INT_MIN, literal
from .unparse import unparse_expr
from .values import MAX_COLLECTION, Value, did_you_mean, format_value, length, python_value, type_of_value

__all__ = [
    "CheckedPattern", "check_pattern", "python_value", "type_of_value", "VARIABLES", "BUILTINS", "CONSTANTS",
    "BUILTIN_NAMES", "RESERVED_PATTERN_NAMES", "RESERVED_INPUT_NAMES", "RESERVED_PARAMETER_NAMES", "Value",
    "literal",
]


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
    "batch", "block_k", "block_mask", "block_q", "device", "group", "head_dim", "heads", "k", "kernel", "kv_len",
    "kv_start", "layers", "layout", "lengths", "num_splits", "pattern", "q", "q_len", "q_offset", "return_lse",
    "scale", "self", "v",
)

# Parameters are passed as keyword arguments of attnpat.load(path_or_name, pattern, **params),
# attnpat.parse(text, pattern, *, name, **params) and Pattern.with_params(self, **params); a parameter
# named like one of their own arguments could never be given a value there, so it cannot be declared.
RESERVED_PARAMETER_NAMES = ("name", "path_or_name", "pattern", "self", "text")

MAX_CALL_DEPTH = 32


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
        scores: the score terms (softcap, biases, sink; compiler/check_score.py), or None for plain attention.
    """

    name: str
    params: tuple[tuple[str, Value], ...]
    inputs: tuple[N.InputDecl, ...]
    expr: N.Expr
    unused_inputs: tuple[str, ...] = ()
    scores: ScoreTerms | None = None

    def __str__(self) -> str:
        return unparse_expr(self.expr)


class _Checker(ExprChecker):
    def __init__(self, resolver: Resolver):
        self.resolver = resolver
        self.stack: list[str] = []
        self.inputs: dict[str, N.InputDecl] = {}
        self.input_owners: dict[str, str] = {}   # input name -> the pattern that declared it first
        self.float_decls: list[str] = []   # the float inputs the checked pattern declares

    # -- patterns ---------------------------------------------------------------------------------

    def find(self, module: N.Module, name: str, span: Span | None) -> tuple[N.Module, N.PatternDef]:
        for p in module.patterns:
            if p.name == name:
                return module, p
        found = self.resolver(name) if self.resolver else None
        if found is None:
            raise PatternNameError(f"unknown pattern '{name}'{did_you_mean(name, self.pattern_names(module))}", span)
        return found

    def pattern_names(self, module: N.Module) -> list[str]:
        """Every name a call can reach: the file's patterns, the resolver's (the library) and the builtins."""
        known = [p.name for p in module.patterns]
        names = getattr(self.resolver, "names", None)
        if callable(names):
            known += [n for n in names() if n not in known]
        return known + list(BUILTINS)

    def check(self, module: N.Module, pattern: N.PatternDef, overrides: dict[str, tuple[Value, Span | None]],
              call_span: Span | None) -> Typed:
        _check_pattern_name(pattern)
        if pattern.name in self.stack:
            chain = " -> ".join(self.stack + [pattern.name])
            raise PatternNameError(f"pattern '{pattern.name}' uses itself ({chain})", call_span)
        if len(self.stack) >= MAX_CALL_DEPTH:
            raise PatternNameError("patterns call each other too deeply", call_span)
        self.stack.append(pattern.name)
        try:
            scope = Scope(module, pattern, self.bind_params(pattern, overrides, call_span), {}, {})
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
                elif isinstance(stmt, N.FloatInputDecl):
                    self.declare_float_input(stmt, scope)
                elif isinstance(stmt, N.Let):
                    self.declare_name(stmt.name, stmt.span, scope)
                    try:
                        scope.lets[stmt.name] = self.expr(stmt.value, scope)
                    except PatternError as exc:
                        scope.lets[stmt.name] = exc
            mask = self.expr(masks[0].expr, scope)
            if mask.type != "bool":
                raise PatternTypeError(f"a mask must be a condition (bool), not {mask.type}", masks[0].expr.span)
            scores = [s for s in pattern.body if isinstance(s, N.Score)]
            if scores and len(self.stack) > 1:
                # silently dropping a callee's softcap or sink would be a wrong answer; inheriting them would
                # make `a() and b()` ambiguous: the caller states its own terms
                raise PatternNameError(f"pattern '{pattern.name}' has score terms, and a call uses only a "
                                       f"pattern's mask: repeat its 'score' statements in the calling pattern",
                                       call_span, (f"its first 'score' is at {_where(scores[0].span)}",))
            self.scores_out = check_scores(self, scope, scores)
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
                hint = did_you_mean(name, names)
                have = f"; it has {', '.join(names)}" if names and not hint else ""
                raise ParameterError(f"pattern '{pattern.name}' has no parameter '{name}'{hint}{have}",
                                     span or call_span)
        bound: dict[str, Value] = {}
        for p in pattern.params:
            where = f"parameter '{p.name}' of pattern '{pattern.name}'"
            if p.name in overrides:
                value, span = overrides[p.name]
                if p.type == "float" and type_of_value(value) == "int":
                    value = _as_float(value, f"{where}: {format_value(value)} is too large for a float",
                                      span or call_span)
                got = type_of_value(value)
                if got != p.type and not (p.type == "set" and got in ("list", "range")):
                    raise ParameterError(f"{where} is {p.type}, got {got} {format_value(value)}",
                                         span or call_span)
                if p.type == "set" and not isinstance(value, range) and length(value) > MAX_COLLECTION:
                    raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported",
                                         span or call_span)
                bound[p.name] = _as_set(value) if p.type == "set" else value
                continue
            if p.default is None:
                raise ParameterError(f"{where} has no default; give a value", call_span or p.span)
            scope = Scope(N.Module(()), pattern, dict(bound), {}, {})
            typed = self.expr(p.default, scope)
            if not typed.const:
                raise PatternTypeError(f"the value of parameter '{p.name}' must be a constant", p.default.span)
            if p.type == "float" and typed.type == "int":
                typed = Typed(typed.expr, "float", _as_float(typed.value, "this number is too large for a float",
                                                             p.default.span))
            ok = typed.type == p.type or (p.type == "set" and typed.type in ("list", "range"))
            if not ok:
                raise PatternTypeError(f"the value of parameter '{p.name}' is {typed.type}, but it is declared {p.type}",
                                       p.default.span)
            if p.type == "set" and not isinstance(typed.value, range) and length(typed.value) > MAX_COLLECTION:
                raise PatternTypeError(f"a set may hold at most {MAX_COLLECTION} elements", p.default.span)
            bound[p.name] = _as_set(typed.value) if p.type == "set" else typed.value
        return bound

    def declare_name(self, name: str, span: Span | None, scope: Scope) -> None:
        if name in BUILTIN_NAMES:
            raise PatternNameError(f"'{name}' is a built-in name and cannot be redefined", span)
        if name in scope.params or name in scope.lets or name in scope.inputs or name in scope.floats:
            raise PatternNameError(f"'{name}' is already defined in pattern '{scope.pattern.name}'", span)

    def declare_runtime_name(self, decl, scope: Scope) -> None:
        """A runtime input's name (int or float): free in the pattern, and not an argument of the calls."""
        self.declare_name(decl.name, decl.span, scope)
        if decl.name in RESERVED_INPUT_NAMES:
            raise _reserved(decl.name, "runtime input", "inputs", "kernel(q, k, v, doc=ids)",
                            "the calls that take them", RESERVED_INPUT_NAMES, decl.span)

    def declare_input(self, decl: N.InputDecl, scope: Scope) -> None:
        self.declare_runtime_name(decl, scope)
        scope.inputs[decl.name] = decl
        other = self.inputs.get(decl.name)
        if other is not None and other.axis != decl.axis:
            # point at the first declaration (the caller's, as inputs are declared before the mask that calls
            # another pattern) and name the pattern that declares it differently
            owner = self.input_owners[decl.name]
            raise PatternTypeError(
                f"runtime input '{decl.name}' is int[{other.axis}] in pattern '{owner}' but int[{decl.axis}] in "
                f"pattern '{scope.pattern.name}', which it uses; one input has one axis: rename one of them",
                other.span or decl.span, (f"pattern '{scope.pattern.name}' declares it at {_where(decl.span)}",))
        if decl.name not in self.inputs:
            self.inputs[decl.name] = decl
            self.input_owners[decl.name] = scope.pattern.name

    def declare_float_input(self, decl: N.FloatInputDecl, scope: Scope) -> None:
        self.declare_runtime_name(decl, scope)
        scope.floats[decl.name] = decl
        if len(self.stack) == 1:
            self.float_decls.append(decl.name)

    def require(self, req: N.Require, scope: Scope) -> None:
        typed = self.expr(req.cond, scope)
        if typed.type != "bool":
            raise PatternTypeError(f"'require' needs a condition, not {typed.type}", req.cond.span)
        if not typed.const:
            raise PatternTypeError("'require' may only use parameters, not q, k, h, b or inputs", req.cond.span)
        if not typed.value:
            used = sorted(n for n in _names(req.cond) if n in scope.params)
            values = ", ".join(f"{n} = {format_value(scope.params[n])}" for n in used)
            detail = f" ({values})" if values else ""
            raise RequirementError(
                f"requirement of '{scope.pattern.name}' failed: {unparse_expr(req.cond)}{detail}", req.cond.span)

    # -- expressions ------------------------------------------------------------------------------

    def e_Call(self, e: N.Call, scope: Scope) -> Typed:
        if e.func in VARIABLES:
            for p in scope.module.patterns:
                if p.name == e.func:
                    _check_pattern_name(p)   # the call can only mean that pattern: report its definition
        if e.func in BUILTINS:
            return self.builtin(e, scope)
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


def _as_set(value: Value) -> Value:
    """A set parameter's value as a frozenset -- but a range longer than MAX_COLLECTION stays a range
    (symbolic: `range(10**12)` is three numbers, and every evaluator tests membership in it arithmetically)."""
    return value if isinstance(value, range) and length(value) > MAX_COLLECTION else frozenset(value)


def _check_int_range(e: N.Expr) -> None:
    """Every constant left in a checked mask must fit in INT_BITS (64) bits (compiler/semantics.py)."""
    for node in N.walk(e):
        if isinstance(node, N.Num) and not INT_MIN <= node.value <= INT_MAX:
            raise PatternTypeError(f"the constant {format_value(node.value)} is too large: constants in a mask "
                                   f"must lie between -2**63 and 2**63 - 1", node.span)


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
        raise PatternNameError(f"no pattern '{name}' here{did_you_mean(name, known)}; "
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
        # what no launch could compute exactly, whatever its shape: a value beyond int64 at int32 positions
        check_ranges(mask.expr, CHECK_POSITIONS, (0, CHECK_POSITIONS[1]), bits=64, h_range=(0, CHECK_POSITIONS[1]),
                     b_range=(0, CHECK_POSITIONS[1]), what="attnpat", where="at positions below 2**31")
    except RecursionError:
        raise PatternTypeError("expression nested too deeply", pattern.span) from None
    bound = tuple((p.name, checker.params_out[p.name]) for p in pattern.params)
    used = _names(mask.expr)
    inputs = tuple(d for n, d in checker.inputs.items() if n in used)
    unused = tuple(sorted(n for n in checker.inputs if n not in used))
    read = {d.name for d in checker.scores_out.inputs} if checker.scores_out is not None else set()
    unused = tuple(sorted(unused + tuple(n for n in checker.float_decls if n not in read)))
    return CheckedPattern(name, bound, inputs, mask.expr, unused, checker.scores_out)


def _as_float(value: int, message: str, span: Span | None) -> float:
    """An int parameter value given for a float parameter, as a float (ParameterError beyond the floats)."""
    try:
        return float(value)
    except OverflowError:
        raise ParameterError(message, span) from None


def _where(span: Span | None) -> str:
    return f"{span.source.name}:{span.line}:{span.column}" if span is not None else "an unknown place"
