"""The simplify stage: a checked pattern -> its canonical IR, canonical text and a stable key.

The pieces, in the order a mask goes through them: translate.py (AST -> IR atoms), logic.py (the rules
of the canonical form, on top of forms.py's normalised atoms), and this module (the stage's output value).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...errors import EmptyPatternError, Span
from .. import nodes as N
from ..check import CheckedPattern
from ..ir import FALSE, IR, to_text
from ..semantics import fold
from ..unparse import unparse_expr
from .logic import conj, normalize
from .translate import to_ir

__all__ = ["Canonical", "simplify", "specialize", "uses"]


@dataclass(frozen=True, slots=True)
class Canonical:
    """The canonical form of a pattern (stage 3's output).

    Attributes:
        ir: the simplified IR.
        text: the canonical mask as pattern text.
        inputs: the runtime inputs it reads, as (name, axis) pairs.
        key: a hex digest of text and inputs: equal for equivalent spellings.
    """

    ir: IR
    text: str
    inputs: tuple[tuple[str, str], ...]
    key: str

    def source(self, name: str = "canonical") -> str:
        """The canonical form as a complete pattern file."""
        lines = [f"pattern {name}():"]
        lines += [f"    input {n}: int[{a}]" for n, a in self.inputs]
        lines.append(f"    mask {self.text}")
        return "\n".join(lines) + "\n"


def uses(expr: N.Expr, name: str) -> bool:
    """Whether the variable `name` occurs in `expr`."""
    return any(isinstance(x, N.Name) and x.id == name for x in N.walk(expr))


def specialize(expr: N.Expr, env: dict[str, int]) -> N.Expr:
    """Substitute integer values for variables (e.g. h=3) and fold what becomes constant (semantics.fold)."""
    return fold(expr, env)


def _explain_empty(expr: N.Expr) -> tuple[str, Span | None, tuple[str, ...]]:
    clauses = list(expr.values) if isinstance(expr, N.BoolOp) and expr.op == "and" else [expr]
    for i, a in enumerate(clauses):
        if to_ir(a) == FALSE:
            return f"'{unparse_expr(a)}' is never true", a.span, ()
        for b in clauses[i + 1:]:
            if conj([to_ir(a), to_ir(b)]) == FALSE:
                where = f"{b.span.source.name}:{b.span.line}:{b.span.column}" if b.span else "elsewhere"
                return (f"'{unparse_expr(a)}' contradicts '{unparse_expr(b)}'", a.span,
                        (f"'{unparse_expr(b)}' is at {where}",))
    return f"the mask '{unparse_expr(expr)}' is never true", expr.span, ()


def simplify(checked: CheckedPattern) -> Canonical:
    """Simplify a checked pattern into its canonical form.

    Raises:
        EmptyPatternError: the pattern allows no (query, key) pair at all, naming the contradicting clauses.
    """
    ir = normalize(to_ir(checked.expr))
    if ir == FALSE:
        msg, span, notes = _explain_empty(checked.expr)
        raise EmptyPatternError(f"pattern '{checked.name}' allows no (query, key) pair: {msg}", span, notes)
    text = to_text(ir)
    inputs = tuple(sorted((d.name, d.axis) for d in checked.inputs))
    digest = hashlib.sha256(repr((text, inputs)).encode()).hexdigest()[:20]
    return Canonical(ir, text, inputs, digest)
