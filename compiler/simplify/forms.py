"""Atoms of the canonical IR and cheap facts about them: normalised windows and residue classes.

`window` and `residue_class` build the normal form of a linear window ``lo <= cq*q + ck*k <= hi`` and of a
residue condition ``(cq*q + ck*k + c0) % m in R`` (or decide them True/False); `implies` is the sound, cheap
implication test every rule leans on; `sort_key` orders operands canonically (by their text).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

from ...errors import Span
from ..ir import FALSE, IR, TRUE, And, Const, Lin, Mod, Opaque, Or, to_text

__all__ = ["window", "residue_class", "implies", "sort_key", "conjuncts", "interval_set", "meet", "spans_of",
           "is_atomic", "ATOMS"]


def window(cq: int, ck: int, lo: int | None, hi: int | None, span: Span | None) -> IR:
    """Normalise ``lo <= cq*q + ck*k <= hi`` (gcd 1, leading coefficient positive, k >= 0 folded in)."""
    if cq == 0 and ck == 0:
        return TRUE if (lo is None or lo <= 0) and (hi is None or 0 <= hi) else FALSE
    g = gcd(cq, ck)
    cq, ck = cq // g, ck // g
    lo = None if lo is None else -((-lo) // g)   # ceil
    hi = None if hi is None else hi // g
    if cq < 0 or (cq == 0 and ck < 0):
        cq, ck, lo, hi = -cq, -ck, (None if hi is None else -hi), (None if lo is None else -lo)
    if (cq, ck) == (0, 1):   # keys are never negative
        if hi is not None and hi < 0:
            return FALSE
        if lo is not None and lo <= 0:
            lo = None
    if lo is not None and hi is not None and lo > hi:
        return FALSE
    if lo is None and hi is None:
        return TRUE
    return Lin(cq, ck, lo, hi, span)


def residue_class(cq: int, ck: int, c0: int, m: int, residues, span: Span | None) -> IR:
    """Normalise ``(cq*q + ck*k + c0) % m in residues`` (common factors divided out, leading coefficient
    positive, c0 reduced), or decide it when no residue or every residue is allowed."""
    g = gcd(gcd(cq, ck), m)
    if g > 1:  # (g*x + c0) % (g*m') == r  <=>  c0 % g == r % g and (x + c0 // g) % m' == r // g
        keep = [r for r in residues if (r - c0) % g == 0]
        residues = sorted({((r - c0) // g) % (m // g) for r in keep})
        cq, ck, c0, m = cq // g, ck // g, 0, m // g
    if cq < 0 or (cq == 0 and ck < 0):
        cq, ck, c0 = -cq, -ck, -c0
        residues = [(-r) % m for r in residues]
    c0 %= m
    residues = tuple(sorted(set(r % m for r in residues)))
    if not residues:
        return FALSE
    if len(residues) == m:
        return TRUE
    return Mod(cq, ck, c0, m, residues, span)


def implies(a: IR, b: IR) -> bool:
    """A cheap, sound test of a => b."""
    if a == b or isinstance(b, Const) and b.value or isinstance(a, Const) and not a.value:
        return True
    if isinstance(a, Lin) and isinstance(b, Lin) and a.form == b.form:
        lo_ok = b.lo is None or (a.lo is not None and a.lo >= b.lo)
        hi_ok = b.hi is None or (a.hi is not None and a.hi <= b.hi)
        return lo_ok and hi_ok
    if isinstance(a, Mod) and isinstance(b, Mod) and a.key == b.key:
        return set(a.residues) <= set(b.residues)
    if isinstance(a, Lin) and isinstance(b, Mod) and a.form == (b.cq, b.ck) and a.lo is not None and a.lo == a.hi:
        return (a.lo + b.c0) % b.m in b.residues
    # exact decompositions first, then sufficient ones (each tried, none cutting the others short)
    if isinstance(a, Or):
        return all(implies(x, b) for x in a.args)
    if isinstance(b, And):
        return all(implies(a, x) for x in b.args)
    if isinstance(a, And) and any(implies(x, b) for x in a.args):
        return True
    return isinstance(b, Or) and any(implies(a, x) for x in b.args)


@lru_cache(maxsize=1 << 14)
def sort_key(node: IR) -> tuple:
    """The canonical order of operands: constants, windows, residue classes, opaque, compound; then text."""
    rank = {Const: 0, Lin: 1, Mod: 2, Opaque: 3, And: 4, Or: 4}[type(node)]
    return (rank, to_text(node))


ATOMS = (Lin, Mod, Opaque)


def conjuncts(node: IR) -> tuple[IR, ...]:
    """The operands of an `and`, or the node itself."""
    return node.args if isinstance(node, And) else (node,)


def interval_set(node: IR) -> tuple[tuple[int, int], list[tuple[float, float]]] | None:
    """(form, intervals) when `node` is a window or a union of windows on one form (a set of that form's
    values), else None. Open ends are -inf / inf."""
    inf = float("inf")
    lins = (node,) if isinstance(node, Lin) else node.args if isinstance(node, Or) else ()
    if not lins or not all(isinstance(a, Lin) and a.form == lins[0].form for a in lins):
        return None
    return lins[0].form, [(-inf if a.lo is None else a.lo, inf if a.hi is None else a.hi) for a in lins]


def meet(sets: list[tuple[tuple[int, int], list[tuple[float, float]]]]) -> list[tuple[float, float]] | None:
    """The intersection of sets of one form as sorted disjoint intervals, or None for no sets."""
    if not sets:
        return None
    # one sweep over the endpoints (n log n, not n**2): a value is in the meet where every set covers it
    events = []
    for _, intervals in sets:
        for a, b in _disjoint(intervals):
            events += [(a, 0, 1), (b, 1, -1)]   # at equal values, openings before closings: closed ends
    events.sort()
    out, depth, start = [], 0, None
    for x, _, d in events:
        depth += d
        if d > 0 and depth == len(sets):
            start = x
        elif d < 0 and depth == len(sets) - 1 and start is not None:
            out.append((start, x))
            start = None
    return out


def _disjoint(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, overlapping or touching integer intervals merged (a set counts once where it covers)."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def spans_of(node: IR) -> list[Span]:
    """The source spans of a window or of the windows of a union."""
    return [a.span for a in ((node,) if isinstance(node, Lin) else node.args) if a.span is not None]


def is_atomic(node: IR) -> bool:
    """An atom, or a union of windows on one form (which no sibling of a normalised `and` can narrow)."""
    return isinstance(node, ATOMS) or interval_set(node) is not None
