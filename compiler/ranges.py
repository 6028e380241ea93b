"""Integer ranges over a shape: whether an evaluator computes a mask exactly, and the mask cut to a shape.

The language's integers are exact (compiler/semantics.py). An evaluator that computes in fixed-width
integers -- the block-mask lowering and the reference in int64, the kernels in int32 -- is exact only if
every value it computes fits. :func:`check_ranges` bounds every sub-expression over the given position
ranges with exact (Python integer) interval arithmetic, read from the semantics table's ``python`` column
at the corners of the argument box (every arithmetic operator is monotone in each argument or bilinear),
and raises a :class:`~attnpat.errors.PatternError` naming the first sub-expression (with its span) whose
range does not fit in ``bits`` bits. :func:`fit_to_shape` drops the bounds of windows that no position of
a shape reaches, so that a constant at the int64 edge never enters the lowering's arithmetic.
"""

from __future__ import annotations

import itertools

from ..errors import PatternError, RangeError, Span
from . import nodes as N
from .ir import FALSE, IR, TRUE, And, Const, Lin, Mod, Opaque, Or, form_text
from .semantics import BUILTINS, OPERATORS, constant, operator_of
from .unparse import unparse_expr
from .values import format_value, length

__all__ = ["check_ranges", "fit_to_shape", "expr_range", "RangeError", "KERNEL_BITS", "LOWER_BITS",
           "CHECK_POSITIONS"]

KERNEL_BITS = 32   # the kernels compute positions, inputs and the predicate in int32
LOWER_BITS = 62    # the lowering computes in int64; a factor 2 of margin for its sums of two bounds
CHECK_POSITIONS = (-(1 << 31), (1 << 31) - 1)   # positions any launch may have (int32): the check-time test

Range = tuple[int, int]


def _corners(fn, ranges: list[Range]) -> Range:
    values = [fn(*c) for c in itertools.product(*ranges)]
    return min(values), max(values)


class _Ranges:
    def __init__(self, env: dict[str, Range], inputs: dict[str, Range], bits: int, what: str,
                 where: str = "at this shape"):
        self.env, self.inputs, self.what, self.where = env, inputs, what, where
        self.bits = bits

    def fit(self, r: Range | None, text: str, span: Span | None, wide: bool = False) -> Range | None:
        bits = max(self.bits, 64) if wide else self.bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if r is not None and (r[0] < lo or r[1] > hi):
            worst = r[0] if r[0] < lo else r[1]
            head = (f"{text} does not fit in" if r[0] == r[1]
                    else f"{text} reaches {format_value(worst)} {self.where}, beyond")
            raise RangeError(f"{head} the {bits}-bit integers {self.what} computes with "
                             f"({format_value(lo)} to {format_value(hi)})", span)
        return r

    def int(self, e: N.Expr, wide: bool = False) -> Range | None:
        """The exact range of an integer (or, as 0 / 1, boolean) expression; None when an input's is unknown.
        `wide`: the value is computed in 64 bits whatever the width (what hash() computes, and what is
        computed from it: the kernels' hash widens to int64)."""
        span = getattr(e, "span", None)
        if isinstance(e, (N.BoolLit, N.BoolOp, N.Compare)) or isinstance(e, N.Unary) and e.op == "not":
            self.cond(e)
            return (0, 1)
        if isinstance(e, N.Num):
            return self.fit((e.value, e.value), f"the constant {format_value(e.value)}", span, wide)
        if isinstance(e, N.Name):
            return self.env[e.id]
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.ListLit):
                self.int(e.index)
                vals = [x.value for x in e.value.elts]
                return self.fit((min(vals), max(vals)), "a list element", span)
            r = self.inputs.get(e.value.id)
            return self.fit(r, f"input '{e.value.id}'", span)
        args = [e.operand] if isinstance(e, N.Unary) else [e.left, e.right] if isinstance(e, N.BinOp) else \
            list(e.args) if isinstance(e, N.Call) else None
        if args is None:
            raise PatternError(f"internal error: no range rule for {type(e).__name__}", span)
        wide = _wide(e)
        ranges = [self.int(a, wide and not (isinstance(e, N.Call) and e.func == "hash")) for a in args]
        if any(r is None for r in ranges):
            return None
        return self.fit(self._apply(e, ranges), f"'{unparse_expr(e)}'", span, wide)

    def _apply(self, e: N.Expr, ranges: list[Range]) -> Range:
        if isinstance(e, N.Call):
            if e.func == "hash":
                return (0, (1 << 32) - 1)
            if e.func == "abs":
                lo, hi = ranges[0]
                return (0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
            fn = BUILTINS[e.func].python   # min, max: monotone in every argument
            return fn(*(r[0] for r in ranges)), fn(*(r[1] for r in ranges))
        op = operator_of(e)
        if isinstance(e, N.BinOp) and e.op == "%":
            (lo, hi), m = ranges[0], ranges[1][0]
            if lo // m == hi // m:   # one period: % is increasing there
                return lo % m, hi % m
            return (0, m - 1) if m > 0 else (m + 1, 0)
        return _corners(op.python, ranges)   # + - * neg, and // by a constant: monotone or bilinear

    def cond(self, e: N.Expr) -> None:
        """Check every integer inside a condition."""
        if isinstance(e, N.BoolLit):
            return
        if isinstance(e, N.Unary):
            return self.cond(e.operand)
        if isinstance(e, N.BoolOp):
            for v in e.values:
                self.cond(v)
            return
        if isinstance(e, N.Compare):
            x = self.int(e.left)
            operands = (e.left,) + e.comparators
            for left, op, right in zip(operands, e.ops, operands[1:]):
                if op in ("in", "not in"):
                    self._member(x, constant(right), getattr(right, "span", None), _wide(left))
                else:   # compared with a 64-bit value, a constant is 64-bit too
                    self.int(right, _wide(left) or _wide(right))
            return
        self.int(e)

    def _member(self, x: Range | None, c, span: Span | None, wide: bool) -> None:
        """A member test compares with the container's smallest and largest values; a range's stride test
        computes x - smallest."""
        if length(c) == 0:
            return
        if isinstance(c, range):
            first, last = c.start, c.start + (length(c) - 1) * c.step
            lo, hi = min(first, last), max(first, last)
        else:
            lo, hi = min(c), max(c)
        for v in (lo, hi):
            self.fit((v, v), f"the constant {format_value(v)}", span, wide)
        if isinstance(c, range) and abs(c.step) > 1 and x is not None:
            self.fit((x[0] - lo, x[1] - lo), f"the offset into {format_value(c)}", span, wide)

    def form(self, cq: int, ck: int, c0: int, span: Span | None) -> Range:
        terms = [(cq * self.env["q"][0], cq * self.env["q"][1]), (ck * self.env["k"][0], ck * self.env["k"][1])]
        text = form_text(cq, ck, c0)
        for (a, b), var, c in zip(terms, "qk", (cq, ck)):
            self.fit((min(a, b), max(a, b)), f"'{form_text(c if var == 'q' else 0, c if var == 'k' else 0)}'", span)
        lo = min(terms[0]) + min(terms[1]) + c0
        hi = max(terms[0]) + max(terms[1]) + c0
        return self.fit((lo, hi), f"'{text}'", span)

    def ir(self, node: IR, bands: bool) -> None:
        if isinstance(node, Const):
            return
        if isinstance(node, Lin):
            self.form(node.cq, node.ck, 0, node.span)
            for c in (node.lo, node.hi):
                if c is None:
                    continue
                self.fit((c, c), f"the constant {format_value(c)}", node.span)
                if bands:   # a band loop computes the bounds q - c and k + c of the window
                    self.form(node.cq, 0, -c, node.span)
                    self.form(0, node.ck, -c, node.span)
            return
        if isinstance(node, Mod):
            self.fit((node.m, node.m), f"the modulus {node.m}", node.span)
            self.form(node.cq, node.ck, node.c0, node.span)
            return
        if isinstance(node, Opaque):
            return self.cond(node.expr)
        for a in node.args:
            self.ir(a, bands)


def _wide(e: N.Expr) -> bool:
    """Whether an integer expression is computed in 64 bits whatever the evaluator's width: hash() and what
    is computed from it (the kernels' hash widens its arguments to int64)."""
    if isinstance(e, N.Call):
        return e.func == "hash" or any(map(_wide, e.args))
    if isinstance(e, (N.BinOp, N.Unary)) and not (isinstance(e, N.Unary) and e.op == "not"):
        return any(map(_wide, N.children(e)))
    return False


def _target(target):
    """IR, an AST condition, or what holds one: a Compiled, a Canonical or a CheckedPattern."""
    for attr in ("canonical", "ir", "expr"):
        if hasattr(target, attr) and not isinstance(target, (Lin, Mod, Opaque, And, Or, Const, N.Expr)):
            return _target(getattr(target, attr))
    return target


def check_ranges(target, q_range: Range, k_range: Range, input_ranges: dict[str, Range] | None = None, *,
                 bits: int = KERNEL_BITS, h_range: Range = (0, 0), b_range: Range = (0, 0),
                 bands: bool = False, what: str = "the kernel", where: str = "at this shape") -> None:
    """Raise a RangeError (a PatternError, with the span) unless every value of the mask fits in `bits` bits.

    Args:
        target: a Compiled, Canonical, CheckedPattern, IR or checked AST condition.
        q_range, k_range: the smallest and largest absolute query and key positions (inclusive); an empty
            range (lo > hi) checks nothing.
        input_ranges: the smallest and largest value of each runtime input; an input not given is not
            bounded, and what is computed from it is not checked.
        bits: the width of the evaluator's signed integers (KERNEL_BITS, LOWER_BITS, 64).
        h_range, b_range: the head and batch indices, for masks that still read h or b.
        bands: also check the window bounds q - c, k + c that a band loop computes.
        what: how to name the evaluator in the message; where: how to name the positions.
    """
    if q_range[0] > q_range[1] or k_range[0] > k_range[1]:
        return
    env = {"q": q_range, "k": k_range, "h": h_range, "b": b_range}
    r = _Ranges(env, dict(input_ranges or {}), bits, what, where)
    node = _target(target)
    if isinstance(node, N.Expr):
        r.cond(node)
    else:
        r.ir(node, bands)


def expr_range(e: N.Expr, env: dict[str, Range], inputs: dict[str, Range] | None = None) -> Range | None:
    """The exact range of an integer expression over the ranges of its variables (unbounded width)."""
    return _Ranges(env, dict(inputs or {}), 4096, "").int(e)


def fit_to_shape(ir: IR, q_range: Range, k_range: Range) -> IR:
    """The IR with every window bound that no position of the shape reaches dropped, and windows no position
    satisfies decided False: equal on the shape, and its constants within the values of their forms."""
    if q_range[0] > q_range[1] or k_range[0] > k_range[1]:
        return ir
    if isinstance(ir, Lin):
        a, b = ir.cq * q_range[0], ir.cq * q_range[1]
        c, d = ir.ck * k_range[0], ir.ck * k_range[1]
        fmin, fmax = min(a, b) + min(c, d), max(a, b) + max(c, d)
        if (ir.lo is not None and ir.lo > fmax) or (ir.hi is not None and ir.hi < fmin):
            return FALSE
        lo = None if ir.lo is None or ir.lo <= fmin else ir.lo
        hi = None if ir.hi is None or ir.hi >= fmax else ir.hi
        if lo is None and hi is None:
            return TRUE
        return ir if (lo, hi) == (ir.lo, ir.hi) else Lin(ir.cq, ir.ck, lo, hi, ir.span)
    if isinstance(ir, (And, Or)):
        absorbing = isinstance(ir, Or)
        kept = []
        for a in ir.args:
            a = fit_to_shape(a, q_range, k_range)
            if isinstance(a, Const):
                if a.value == absorbing:
                    return a
                continue
            kept.append(a)
        if not kept:
            return Const(not absorbing)
        return kept[0] if len(kept) == 1 else type(ir)(tuple(kept))
    return ir
