"""Print an AST (or a checked expression) back as canonical pattern text.

`parse_module(unparse(module)) == module` for every module the parser can produce: parentheses are
emitted exactly where precedence needs them, including around a nested `and`/`or` of the same kind.
"""

from __future__ import annotations

from functools import singledispatch

from . import nodes as N

__all__ = ["unparse", "unparse_expr"]

# Binding strength, loosest first; an operand printed at a lower strength than required gets parentheses.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _ATOM = range(1, 9)
_BINOP_PREC = {"+": _ADD, "-": _ADD, "*": _MUL, "//": _MUL, "%": _MUL}


def _prec(e: N.Expr) -> int:
    if isinstance(e, N.BoolOp):
        return _OR if e.op == "or" else _AND
    if isinstance(e, N.Unary):
        return _NOT if e.op == "not" else _UNARY
    if isinstance(e, N.Compare):
        return _CMP
    if isinstance(e, N.BinOp):
        return _BINOP_PREC[e.op]
    if isinstance(e, N.Num) and e.value < 0:
        return _UNARY
    return _ATOM


def _wrap(e: N.Expr, minimum: int) -> str:
    text = unparse_expr(e)
    return f"({text})" if _prec(e) < minimum else text


def unparse_expr(e: N.Expr) -> str:
    """Return the canonical text of one expression."""
    if isinstance(e, N.Num):
        return str(e.value)
    if isinstance(e, N.BoolLit):
        return "True" if e.value else "False"
    if isinstance(e, N.Name):
        return e.id
    if isinstance(e, N.Unary):
        if e.op == "not":
            return f"not {_wrap(e.operand, _NOT)}"
        return f"-{_wrap(e.operand, _UNARY)}"
    if isinstance(e, N.BinOp):
        p = _BINOP_PREC[e.op]
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    if isinstance(e, N.BoolOp):
        p = _prec(e)
        return f" {e.op} ".join(_wrap(v, p + 1) for v in e.values)
    if isinstance(e, N.Compare):
        parts = [_wrap(e.left, _ADD)]
        for op, right in zip(e.ops, e.comparators):
            parts += [op, _wrap(right, _ADD)]
        return " ".join(parts)
    if isinstance(e, N.Call):
        args = [unparse_expr(a) for a in e.args] + [f"{k}={unparse_expr(v)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, N.Subscript):
        return f"{_wrap(e.value, _ATOM)}[{unparse_expr(e.index)}]"
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
    if isinstance(s, N.InputDecl):
        return f"input {s.name}: int[{s.axis}]"
    if isinstance(s, N.Let):
        return f"{s.name} = {unparse_expr(s.value)}"
    if isinstance(s, N.Mask):
        return f"mask {unparse_expr(s.expr)}"
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


for _cls in (N.Require, N.InputDecl, N.Let, N.Mask):
    unparse.register(_cls, _stmt)
