"""The middle end's IR: boolean structure over a few kinds of integer atoms in q and k.

* :class:`Lin`  -- ``lo <= cq*q + ck*k <= hi`` (a band in q - k, a range of k, a range of q, ...);
* :class:`Mod`  -- ``(cq*q + ck*k + c0) % m in residues`` (dilation, strides);
* :class:`Opaque` -- any other condition, kept as a checked AST expression (runtime inputs, hash, chunks
  via floor division, per-head list look-ups);
* :class:`And`, :class:`Or`, :class:`Const`.

Negations are pushed into the atoms (negation normal form). Every node is a frozen value object; source
spans are carried for error messages but kept out of equality and hashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import Span
from . import nodes as N
from .unparse import unparse_expr

__all__ = ["Lin", "Mod", "Opaque", "And", "Or", "Const", "TRUE", "FALSE", "IR", "form_text", "to_text"]


def _span():
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class Lin:
    """``lo <= cq*q + ck*k <= hi``; None is an open end. Normalised: gcd(cq, ck) == 1, first non-zero > 0."""

    cq: int
    ck: int
    lo: int | None
    hi: int | None
    span: Span | None = _span()

    @property
    def form(self) -> tuple[int, int]:
        return (self.cq, self.ck)


@dataclass(frozen=True, slots=True)
class Mod:
    """``(cq*q + ck*k + c0) % m in residues`` with 0 <= c0 < m and residues a sorted proper subset."""

    cq: int
    ck: int
    c0: int
    m: int
    residues: tuple[int, ...]
    span: Span | None = _span()

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.cq, self.ck, self.c0, self.m)


@dataclass(frozen=True, slots=True)
class Opaque:
    """A condition the algebra does not model, as a checked (closed) boolean AST expression."""

    expr: N.Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class And:
    args: tuple["IR", ...]


@dataclass(frozen=True, slots=True)
class Or:
    args: tuple["IR", ...]


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


TRUE = Const(True)
FALSE = Const(False)

IR = Union[Lin, Mod, Opaque, And, Or, Const]


def form_text(cq: int, ck: int, c0: int = 0) -> str:
    """Print ``cq*q + ck*k + c0`` as pattern text ('q - k', 'k', '2 * q - k + 3')."""
    parts: list[str] = []
    for coef, var in ((cq, "q"), (ck, "k")):
        if coef == 0:
            continue
        mag = abs(coef)
        term = var if mag == 1 else f"{mag} * {var}"
        if not parts:
            parts.append(term if coef > 0 else f"-{term}")
        else:
            parts.append(f"+ {term}" if coef > 0 else f"- {term}")
    if c0 or not parts:
        if not parts:
            parts.append(str(c0))
        else:
            parts.append(f"+ {c0}" if c0 > 0 else f"- {-c0}")
    return " ".join(parts)


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _lin_text(a: Lin) -> str:
    f = form_text(a.cq, a.ck)
    # a bound just past the int64 edge (from `x < -2**63`) is printed strictly, so the text re-parses
    lo = None if a.lo is None else (f"{a.lo - 1} <", f"{f} > {a.lo - 1}") if a.lo - 1 == _INT64[1] else \
        (f"{a.lo} <=", f"{f} >= {a.lo}")
    hi = None if a.hi is None else ("<", f"{f} < {a.hi + 1}", a.hi + 1) if a.hi + 1 == _INT64[0] else \
        ("<=", f"{f} <= {a.hi}", a.hi)
    if lo is not None and hi is not None:
        return f"{f} == {a.lo}" if a.lo == a.hi else f"{lo[0]} {f} {hi[0]} {hi[2]}"
    if lo is not None:
        return lo[1]
    if hi is not None:
        return hi[1]
    return "True"


def _mod_text(a: Mod) -> str:
    f = form_text(a.cq, a.ck, a.c0)
    lhs = f"({f}) % {a.m}" if (" " in f) else f"{f} % {a.m}"
    if len(a.residues) == 1:
        return f"{lhs} == {a.residues[0]}"
    return f"{lhs} in {{{', '.join(map(str, a.residues))}}}"


def to_text(node: IR, _parent: str = "") -> str:
    """Print IR as a pattern expression (the canonical text when the IR is canonical)."""
    if isinstance(node, Const):
        return "True" if node.value else "False"
    if isinstance(node, Lin):
        return _lin_text(node)
    if isinstance(node, Mod):
        return _mod_text(node)
    if isinstance(node, Opaque):
        text = unparse_expr(node.expr)
        needs = isinstance(node.expr, N.BoolOp) or (isinstance(node.expr, N.Unary) and _parent)
        return f"({text})" if needs and _parent else text
    op = "and" if isinstance(node, And) else "or"
    inner = f" {op} ".join(to_text(a, op) for a in node.args)
    # `and` binds tighter than `or`: only an `or` inside an `and` needs parentheses.
    return f"({inner})" if (_parent == "and" and op == "or") else inner
