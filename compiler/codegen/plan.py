"""Stage plan: how a pattern's kernels find their tiles.

* **band plan** -- when every allowed key of a query lies in at most two intervals with linear bounds
  (causal, sliding and symmetric windows, dilation, sinks + window, prefix-LM) and no opaque condition cuts the
  support further, the kernels compute their blocks arithmetically (bands.py), with no block tables, and
  decide per tile whether it is FULL (no predicate) or needs the predicate;
* **table plan** -- otherwise the kernels walk the compressed rows (or, for dK/dV, columns) of a block mask:
  PARTIAL tiles with the predicate, FULL tiles without.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import nodes as N
from ..ir import IR, And, Const, Lin, Opaque, Or
from ..simplify import Canonical, uses

__all__ = ["KernelPlan", "Bound", "plan", "key_families", "bound_code"]


@dataclass(frozen=True, slots=True)
class KernelPlan:
    """What the code generator decided for one canonical pattern.

    Attributes:
        key: the canonical key.
        text: the canonical mask text (printed in the generated module's docstring).
        mode: 'band' (arithmetic loop bounds) or 'table' (block-mask tables).
        inputs: runtime inputs as (name, axis) in kernel argument order (in0, in1, ...).
        families: for 'band', the key intervals of a query block [q_lo, q_hi]: tuples of (lower bounds,
            upper bounds) as code.
        bounds: the same intervals as data (see :func:`key_families`), which the backward inverts.
        uses_h, uses_b: whether the predicate reads the head or batch index.
        float_inputs: the score terms' float[h] inputs in kernel argument order (FIn0, FIn1, ...).
        bias_inputs: those a bias reads (the dQ kernel sums their gradients' parts into DFin0, DFin1, ...).
    """

    key: str
    text: str
    mode: str
    inputs: tuple[tuple[str, str], ...]
    families: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    bounds: tuple[tuple[tuple[Bound, ...], tuple[Bound, ...]], ...]
    uses_h: bool
    uses_b: bool
    float_inputs: tuple[str, ...] = ()
    bias_inputs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"KernelPlan({self.mode}, {self.text})"


# -- planning -------------------------------------------------------------------------------------


# A bound on k: ("q", c) is q + c, ("c", c) the constant c.
Bound = tuple[str, int]


def key_families(node: IR):
    """A query's allowed keys as intervals max(lower bounds) <= k <= min(upper bounds), or None when some
    alternative does not bound k linearly.

    Returns a list of families (lower bounds, upper bounds), each bound a :data:`Bound`. The forward renders
    them per query block (q = q_lo for lower bounds, q = q_hi for upper ones); the backward inverts them.
    """
    if isinstance(node, Lin):
        if node.form == (1, -1):    # lo <= q - k <= hi  ->  q - hi <= k <= q - lo
            los = () if node.hi is None else (("q", -node.hi),)
            his = () if node.lo is None else (("q", -node.lo),)
            return [(los, his)]
        if node.form == (0, 1):
            return [(() if node.lo is None else (("c", node.lo),), () if node.hi is None else (("c", node.hi),))]
        return None
    if isinstance(node, Or):
        out = []
        for a in node.args:
            f = key_families(a)
            if f is None:
                return None
            out += f
        return out
    if isinstance(node, And):
        acc = [((), ())]
        bounded = False
        for a in node.args:
            f = key_families(a)
            if f is None:
                continue   # a condition that does not bound k: the predicate handles it
            bounded = True
            acc = [(l1 + l2, h1 + h2) for l1, h1 in acc for l2, h2 in f]
        return acc if bounded else None
    return None


def bound_code(bound: Bound, q_var: str) -> str:
    """A bound as code, with the query position named `q_var` (`q_var`, `q_var + 3`, `q_var - 3`, `7`)."""
    kind, c = bound
    if kind == "c":
        return str(c)
    return q_var if c == 0 else f"{q_var} - {-c}" if c < 0 else f"{q_var} + {c}"


def _family_code(family) -> tuple[tuple[str, ...], tuple[str, ...]]:
    los, his = family
    return tuple(bound_code(b, "q_lo") for b in los), tuple(bound_code(b, "q_hi") for b in his)


def _conditions(node: IR):
    """The atoms of an IR condition."""
    if isinstance(node, (And, Or)):
        for a in node.args:
            yield from _conditions(a)
    else:
        yield node


def _reads(node: IR, name: str) -> bool:
    """Whether an opaque condition of `node` reads the variable `name` (h or b)."""
    # an input's index is its axis (an int[b] input is loaded per program at off_b), not a read of the variable
    return any(isinstance(c, Opaque) and uses(c.expr, name) for c in _conditions(node))


def plan(canonical: Canonical) -> KernelPlan:
    """Choose the kernel's strategy for a canonical pattern."""
    ir = canonical.ir
    fams = key_families(ir)
    # Opaque conditions (per-head bounds, chunks, runtime inputs) may cut the support far below the
    # linear band, which only a block mask sees: those patterns walk tables.
    opaque = any(isinstance(c, Opaque) for c in _conditions(ir))
    band = fams is not None and 1 <= len(fams) <= 2 and all(lo or hi for lo, hi in fams) and not opaque
    if ir == Const(True):   # full attention: every key block, no tables, no predicate
        band, fams = True, [((), ())]
    bounds = tuple(fams) if band else ()
    floats = tuple(d.name for d in canonical.scores.inputs) if canonical.scores is not None else ()
    read = {x.id for e in canonical.scores.bias for x in N.walk(e) if isinstance(x, N.Name)} if floats else set()
    return KernelPlan(canonical.key, canonical.text, "band" if band else "table", canonical.inputs,
                      tuple(_family_code(f) for f in bounds), bounds, _reads(ir, "h"), _reads(ir, "b"), floats,
                      tuple(n for n in floats if n in read))


