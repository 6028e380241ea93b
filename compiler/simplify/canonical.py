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
from ..check_score import ScoreTerms
from ..semantics import fold, literal
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
        key: a hex digest of text and inputs (and of the score terms, when there are any): equal for
            equivalent spellings.
        scores: the score terms (compiler/check_score.py), or None.
        score_text: their canonical statements, one per line ('' without score terms).
    """

    ir: IR
    text: str
    inputs: tuple[tuple[str, str], ...]
    key: str
    scores: ScoreTerms | None = None
    score_text: str = ""

    def source(self, name: str = "canonical") -> str:
        """The canonical form as a complete pattern file."""
        lines = [f"pattern {name}():"]
        lines += [f"    input {n}: int[{a}]" for n, a in self.inputs]
        if self.scores is not None:
            lines += [f"    input {d.name}: float[{d.axis}]" for d in self.scores.inputs]
            lines += [f"    {line}" for line in self.score_text.split("\n")]
        lines.append(f"    mask {self.text}")
        return "\n".join(lines) + "\n"


def score_statements(terms: ScoreTerms) -> str:
    """The canonical score statements: softcap, then one bias, then the sink. The bias is the sum of every
    bias term's summands (through + and -, and unary minus), the constant ones added up, the others sorted by
    their text -- so reordered, split or merged biases share a key."""
    lines = [] if terms.softcap is None else [f"score softcap({terms.softcap!r})"]
    parts: list[tuple[N.Expr, int]] = []
    for e in terms.bias:
        parts += _summands(e, 1)
    const = sum(sign * e.value for e, sign in parts if isinstance(e, (N.Num, N.Float)))
    rest = sorted(((unparse_expr(e), sign, e) for e, sign in parts if not isinstance(e, (N.Num, N.Float))),
                  key=lambda x: (x[0], x[1]))
    acc = None
    for _, sign, e in rest:
        acc = (e if sign > 0 else N.Unary("-", e)) if acc is None else N.BinOp("+" if sign > 0 else "-", acc, e)
    if const:
        c = literal(abs(const))
        acc = literal(const) if acc is None else N.BinOp("+" if const > 0 else "-", acc, c)
    if acc is not None:
        lines.append(f"score bias({unparse_expr(acc)})")
    if terms.sink is not None:
        lines.append(f"score sink({unparse_expr(terms.sink)})")
    return "\n".join(lines)


def _summands(e: N.Expr, sign: int) -> list[tuple[N.Expr, int]]:
    """A sum as its summands with their signs, products distributed over sums and their factors in text
    order: a - (b + c) -> [(a, 1), (b, -1), (c, -1)]; -s[h] * (q - k) -> [(q * s[h], -1), (k * s[h], 1)]."""
    if isinstance(e, N.BinOp) and e.op in "+-":
        return _summands(e.left, sign) + _summands(e.right, sign if e.op == "+" else -sign)
    if isinstance(e, N.Unary) and e.op == "-":
        return _summands(e.operand, -sign)
    if isinstance(e, N.BinOp) and e.op == "*":
        return [(_product(a, b), sign * sa * sb) for a, sa in _summands(e.left, 1) for b, sb in _summands(e.right, 1)]
    return [(e, sign)]


def _factors(e: N.Expr) -> list[N.Expr]:
    if isinstance(e, N.BinOp) and e.op == "*":
        return _factors(e.left) + _factors(e.right)
    return [e]


def _product(a: N.Expr, b: N.Expr) -> N.Expr:
    """a * b with the factors of both in text order (multiplication commutes, so spellings meet)."""
    factors = sorted(_factors(a) + _factors(b), key=unparse_expr)
    out = factors[0]
    for f in factors[1:]:
        out = N.BinOp("*", out, f)
    return out


def uses(expr: N.Expr, name: str) -> bool:
    """Whether the variable `name` occurs in `expr` (an int[b] input's `[b]` is its own axis, not a read)."""
    skip = {id(x.index) for x in N.walk(expr) if isinstance(x, N.Subscript) and isinstance(x.value, N.Name)
            and isinstance(x.index, N.Name) and x.index.id == "b"}
    return any(isinstance(x, N.Name) and x.id == name and id(x) not in skip for x in N.walk(expr))


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
    if checked.scores is None:   # the key of a plain mask is what it always was
        digest = hashlib.sha256(repr((text, inputs)).encode()).hexdigest()[:20]
        return Canonical(ir, text, inputs, digest)
    scores = score_statements(checked.scores)
    floats = tuple((d.name, d.axis) for d in checked.scores.inputs)
    digest = hashlib.sha256(repr((text, inputs, scores, floats)).encode()).hexdigest()[:20]
    return Canonical(ir, text, inputs, digest, checked.scores, scores)
