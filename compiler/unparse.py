"""Print an AST (or a checked expression) back as canonical pattern text.

`parse_module(unparse(module)) == module` for every module the parser can produce: parentheses are
emitted exactly where precedence needs them, including around a nested `and`/`or` of the same kind.
"""

from __future__ import annotations

from functools import singledispatch

from . import nodes as N
from .semantics import PREC_ADD, PREC_ATOM, precedence

__all__ = ["unparse", "unparse_expr"]


def _wrap(e: N.Expr, minimum: int) -> str:
    """An operand's text, in parentheses when it binds looser than `minimum` (precedences: the semantics table)."""
    text = unparse_expr(e)
    return f"({text})" if precedence(e) < minimum else text


def unparse_expr(e: N.Expr) -> str:
    """Return the canonical text of one expression."""
    if isinstance(e, N.Num):
        return str(e.value)
    if isinstance(e, N.Float):
        return repr(e.value)
    if isinstance(e, N.BoolLit):
        return "True" if e.value else "False"
    if isinstance(e, N.Name):
        return e.id
    if isinstance(e, N.Unary):
        space = " " if e.op == "not" else ""
        return f"{e.op}{space}{_wrap(e.operand, precedence(e))}"
    if isinstance(e, N.BinOp):
        p = precedence(e)
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    if isinstance(e, N.BoolOp):
        p = precedence(e)
        return f" {e.op} ".join(_wrap(v, p + 1) for v in e.values)
    if isinstance(e, N.Compare):
        parts = [_wrap(e.left, PREC_ADD)]
        for op, right in zip(e.ops, e.comparators):
            parts += [op, _wrap(right, PREC_ADD)]
        return " ".join(parts)
    if isinstance(e, N.Call):
        args = [unparse_expr(a) for a in e.args] + [f"{k}={unparse_expr(v)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, N.Subscript):
        return f"{_wrap(e.value, PREC_ATOM)}[{unparse_expr(e.index)}]"
    if isinstance(e, N.SetLit):
        return "{" + ", ".join(unparse_expr(x) for x in e.elts) + "}"
    if isinstance(e, N.ListLit):
        return "[" + ", ".join(unparse_expr(x) for x in e.elts) + "]"
    raise TypeError(f"not an expression node: {e!r}")


def _param(p: N.Param) -> str:
    head = f"{p.name}: {p.type}"
    return head if p.default is None else f"{head} = {unparse_expr(p.default)}"


def _stmt(s: N.Stmt) -> str:
    if isinstance(s, N.Require):
        return f"require {unparse_expr(s.cond)}"
    if isinstance(s, (N.InputDecl, N.FloatInputDecl)):
        return f"input {s.name}: {'int' if isinstance(s, N.InputDecl) else 'float'}[{s.axis}]"
    if isinstance(s, N.Let):
        return f"{s.name} = {unparse_expr(s.value)}"
    if isinstance(s, N.Mask):
        return f"mask {unparse_expr(s.expr)}"
    if isinstance(s, N.Score):
        return f"score {s.kind}({unparse_expr(s.expr)})"
    raise TypeError(f"not a statement node: {s!r}")


@singledispatch
def unparse(node) -> str:
    """Return canonical text for a Module, PatternDef, statement or expression."""
    return unparse_expr(node)


@unparse.register
def _(node: N.PatternDef) -> str:
    header = f"pattern {node.name}({', '.join(_param(p) for p in node.params)}):"
    return "\n".join([header] + [f"    {_stmt(s)}" for s in node.body]) + "\n"


@unparse.register
def _(node: N.Module) -> str:
    return "\n".join(unparse(p) for p in node.patterns)


for _cls in (N.Require, N.InputDecl, N.Let, N.Mask, N.FloatInputDecl, N.Score):
    unparse.register(_cls, _stmt)
