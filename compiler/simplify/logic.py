"""The rules of the canonical form: negation, conjunction, disjunction, factoring, context.

`conj` and `disj` are the smart constructors every IR goes through: they flatten, merge windows and residue
classes of one form, absorb implied operands, factor common operands out and simplify each compound operand
in the context of its siblings (`given` the facts of an `and`, `unless` the alternatives of an `or`).
`normalize` re-runs them bottom-up. They call each other, so they live in one module.
"""

from __future__ import annotations

from functools import lru_cache

from ...errors import Span
from .. import nodes as N
from ..ir import FALSE, IR, TRUE, And, Const, Lin, Mod, Opaque, Or
from ..semantics import OPERATORS
from .forms import (
    conjuncts, implies, interval_set, is_atomic, meet, residue_class, sort_key, spans_of, window,
)

__all__ = ["negate", "conj", "disj", "normalize", "given", "unless"]


def negate(node: IR) -> IR:
    """The negation of `node`, pushed down to the atoms."""
    if isinstance(node, Const):
        return Const(not node.value)
    if isinstance(node, Lin):
        parts = []
        if node.lo is not None:
            parts.append(window(node.cq, node.ck, None, node.lo - 1, node.span))
        if node.hi is not None:
            parts.append(window(node.cq, node.ck, node.hi + 1, None, node.span))
        return disj(parts)
    if isinstance(node, Mod):
        rest = [r for r in range(node.m) if r not in node.residues]
        return residue_class(node.cq, node.ck, node.c0, node.m, rest, node.span)
    if isinstance(node, Opaque):
        e = node.expr
        if isinstance(e, N.Unary) and e.op == "not":
            return Opaque(e.operand, node.span)
        if isinstance(e, N.Compare) and len(e.ops) == 1:
            flipped = OPERATORS[e.ops[0]].negation
            return Opaque(N.Compare(e.left, (flipped,), e.comparators, e.span), node.span)
        return Opaque(N.Unary("not", e, node.span), node.span)
    if isinstance(node, And):
        return disj([negate(a) for a in node.args])
    return conj([negate(a) for a in node.args])


@lru_cache(maxsize=1 << 14)
def negated(node: IR) -> IR:
    """negate(node), memoised (the context rules ask for the same negations over and over)."""
    return negate(node)


# -- simplification in context ----------------------------------------------------------------------
#
# Inside `f and X`, X only matters where f holds; inside `f or X`, only where f fails. X may then be replaced
# by any X' that agrees with it there. The IR is in negation normal form (every atom occurs positively), so
# this is done atom by atom, each atom replaced by a canonical choice that depends only on the part of it
# that matters: given f, a window keeps only the bounds f does not already impose (`q - k >= 0 and
# (k <= 3 or 0 <= q - k <= 1019)` -> `q - k >= 0 and (k <= 3 or q - k <= 1019)`), becomes False when f
# contradicts it and True when f implies it; unless f, a window grows over an overlapping or adjacent f
# (`k <= 3 or (4 <= k <= 10 and x)` -> `k <= 3 or (k <= 10 and x)`) and becomes False when f covers it.
# Both keep `f and X` (resp. `f or X`) exactly equal.


def set_ir(form: tuple[int, int], intervals: list[tuple[float, float]], span: Span | None = None) -> IR:
    """The union of windows on `form` covering `intervals` (open ends -inf / inf)."""
    inf = float("inf")
    return disj([window(form[0], form[1], None if a == -inf else int(a), None if b == inf else int(b), span)
                 for a, b in intervals])


def given(node: IR, facts: list[IR], negs: list[IR] | None = None) -> IR:
    """`node` simplified where every fact holds (`facts and node` == `facts and result`)."""
    return _in(node, facts, negs, True)


def unless(node: IR, alts: list[IR], negs: list[IR] | None = None) -> IR:
    """`node` simplified where no alternative holds (`alts or node` == `alts or result`)."""
    return _in(node, alts, negs, False)


def _in(node: IR, facts: list[IR], negs: list[IR] | None, holding: bool) -> IR:
    """`node` simplified where the facts all hold (`holding`) or all fail; negs: the facts' negations."""
    negs = [negated(f) for f in facts] if negs is None else negs
    # decided outright: where the facts hold, a fact implying `node` makes it True; where they all fail,
    # `node` implying a fact makes it False; `node` being a fact's negation decides it the other way
    if any(implies(f, node) if holding else implies(node, f) for f in facts):
        return TRUE if holding else FALSE
    if node in negs:
        return FALSE if holding else TRUE
    if isinstance(node, Lin):
        return _window_given(node, facts) if holding else _window_unless(node, facts)
    if isinstance(node, Mod):
        return _residues_given(node, facts) if holding else _residues_unless(node, facts)
    if isinstance(node, And):
        return conj([_in(a, facts, negs, holding) for a in node.args])
    if isinstance(node, Or):
        args = [_in(a, facts, negs, holding) for a in node.args]
        return _drop_covered(args, facts) if holding else disj(args)
    return node


def _window_given(node: Lin, facts: list[IR]) -> IR:
    """A window where the facts hold: the bounds they already impose dropped."""
    if node.lo is not None and node.lo == node.hi and any(
            isinstance(f, Mod) and (f.cq, f.ck) == node.form and (node.lo + f.c0) % f.m not in f.residues
            for f in facts):
        return FALSE   # a single value the residue condition excludes
    allowed = meet([s for s in map(interval_set, facts) if s is not None and s[0] == node.form])
    if allowed is None:
        return node
    inf = float("inf")
    lo = -inf if node.lo is None else node.lo
    hi = inf if node.hi is None else node.hi
    if not any(a <= hi and lo <= b for a, b in allowed):
        return FALSE
    # the widest window that meets the allowed set where `node` does: a bound stays only where the
    # allowed set goes on past it
    below = [min(b, lo - 1) for a, b in allowed if a < lo]
    above = [max(a, hi + 1) for a, b in allowed if b > hi]
    lo = max(below) + 1 if below else -inf
    hi = min(above) - 1 if above else inf
    return window(node.cq, node.ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), node.span)


def _window_unless(node: Lin, alts: list[IR]) -> IR:
    """A window where the alternatives fail: grown over every overlapping or adjacent one on its form."""
    inf = float("inf")
    lo = -inf if node.lo is None else node.lo
    hi = inf if node.hi is None else node.hi
    grown = True
    while grown:
        grown = False
        for f in alts:
            if isinstance(f, Lin) and f.form == node.form:
                flo = -inf if f.lo is None else f.lo
                fhi = inf if f.hi is None else f.hi
                if flo <= hi + 1 and lo <= fhi + 1 and (flo < lo or fhi > hi):
                    lo, hi, grown = min(lo, flo), max(hi, fhi), True
    if (lo, hi) == ((-inf if node.lo is None else node.lo), (inf if node.hi is None else node.hi)):
        return node
    return window(node.cq, node.ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), node.span)


def _residues_given(node: Mod, facts: list[IR]) -> IR:
    """A residue class where the facts hold: decided by a single value of its form, or cut to the residues
    the facts' classes on the same key leave open."""
    for f in facts:
        if isinstance(f, Lin) and f.form == (node.cq, node.ck) and f.lo is not None and f.lo == f.hi:
            return TRUE if (f.lo + node.c0) % node.m in node.residues else FALSE
    same = [f for f in facts if isinstance(f, Mod) and f.key == node.key]
    if not same:
        return node
    allowed = set.intersection(*(set(f.residues) for f in same))
    kept = set(node.residues) & allowed
    if kept == allowed:
        return TRUE
    return residue_class(node.cq, node.ck, node.c0, node.m, sorted(kept), node.span)


def _residues_unless(node: Mod, alts: list[IR]) -> IR:
    """A residue class where the alternatives fail: grown over their residues on the same key."""
    same = [f for f in alts if isinstance(f, Mod) and f.key == node.key]
    if not same:
        return node
    covered = set().union(*(f.residues for f in same))
    if set(node.residues) <= covered:
        return FALSE
    return residue_class(node.cq, node.ck, node.c0, node.m, sorted(covered | set(node.residues)), node.span)


def _drop_covered(args: list[IR], facts: list[IR]) -> IR:
    """The disjunction of `args`, less each one that, where the facts hold, lies inside another (the widened
    window `q - k <= 0` given `q - k >= 0` is the single value 0, which `(q - k) % 5 == 0` covers)."""
    inside = [meet_window(a, facts) for a in args]
    order = sorted(range(len(args)), key=lambda i: sort_key(args[i]))
    dropped: set[int] = set()
    for i in order:
        if any(j != i and j not in dropped and implies(inside[i], args[j]) for j in order):
            dropped.add(i)
    return disj([a for i, a in enumerate(args) if i not in dropped])


def meet_window(node: IR, facts: list[IR]) -> IR:
    """A window cut down to the facts' set on its form (other nodes as they are)."""
    if not isinstance(node, Lin):
        return node
    allowed = meet([s for s in map(interval_set, facts) if s is not None and s[0] == node.form])
    if allowed is None:
        return node
    return conj([node, set_ir(node.form, allowed)])


def in_context(items: list[IR], simplify_one) -> list[IR] | None:
    """Each compound item simplified against its siblings, or None when nothing changes.

    One item at a time (in canonical order), each against the others as they stand by then, so that no two
    items are simplified by leaning on each other's old form."""
    out = list(items)
    for i in sorted(range(len(items)), key=lambda i: sort_key(items[i])):
        if not is_atomic(out[i]):
            out[i] = simplify_one(out[i], out[:i] + out[i + 1:])
    return None if out == items else out


# -- factoring ---------------------------------------------------------------------------------------
#
# `(a and b) or (a and c)` -> `a and (b or c)`; `(a or b) and (a or c)` -> `a or (b and c)`. A disjunction
# pulls out the conjuncts implied by the most of its disjuncts (at least two; ties go to the first conjunct
# in canonical order), which also covers a conjunct merged into a window (`(k <= q and k < 4) or 0 <= q - k
# <= 1019` pulls out `k <= q`); the remainders are simplified given it. A conjunction pulls out only
# disjuncts that occur literally in at least two of its disjunctions: pulling out implied ones would undo
# the first rule (`a or (b and c)` with a => b is `b and (a or c)`), and could add key intervals to a band
# plan. So the canonical form leans to `a and (b or c)`, which is what codegen's band plans read (the
# streaming_llm shape); factoring never gives codegen.plan more key intervals than the distributed form.


def _pick(candidates: list[IR], groups: list[frozenset]) -> frozenset | None:
    """The largest group (ties: the one of the first candidate in canonical order), if it has two members."""
    if not candidates:
        return None
    _, group = min(zip(candidates, groups), key=lambda t: (-len(t[1]), sort_key(t[0])))
    return group if len(group) >= 2 else None


# The pairwise rules (redundancy, factoring) cost the square of an and/or's operand count; past this many
# operands they are skipped -- the result stays equivalent, only less reduced (documented in language.md).
MAX_PAIRWISE = 128


def _factor_or(items: list[IR]) -> IR | None:
    if len(items) > MAX_PAIRWISE:
        return None
    candidates: list[IR] = []
    for d in items:
        candidates.extend(c for c in conjuncts(d) if c not in candidates)
    groups = [frozenset(i for i, d in enumerate(items) if implies(d, c)) for c in candidates]
    group = _pick(candidates, groups)
    if group is None:
        return None
    common = [c for c, g in zip(candidates, groups) if g == group]
    rests = disj([given(items[i], common) for i in sorted(group)])
    return disj([d for i, d in enumerate(items) if i not in group] + [conj(common + [rests])])


def _factor_and(items: list[IR]) -> IR | None:
    if len(items) > MAX_PAIRWISE:
        return None
    candidates: list[IR] = []
    for c in items:
        if isinstance(c, Or):
            candidates.extend(d for d in c.args if d not in candidates)
    groups = [frozenset(i for i, c in enumerate(items) if isinstance(c, Or) and d in c.args) for d in candidates]
    group = _pick(candidates, groups)
    if group is None:
        return None
    common = [d for d, g in zip(candidates, groups) if g == group]
    rests = conj([disj([d for d in items[i].args if d not in common]) for i in sorted(group)])
    return conj([c for i, c in enumerate(items) if i not in group] + [disj(common + [rests])])


# -- conjunction and disjunction ---------------------------------------------------------------------


def _flatten(parts: list[IR], cls: type) -> list[IR] | None:
    """The operands of nested `cls` (And or Or) nodes in one list, without the neutral constant; None when
    the absorbing constant (False in an `and`, True in an `or`) is among them."""
    absorbing = Const(cls is Or)
    flat: list[IR] = []
    for p in parts:
        flat.extend(p.args if isinstance(p, cls) else (p,))
    if absorbing in flat:
        return None
    return [p for p in flat if not isinstance(p, Const)]


def _drop_redundant(items: list[IR], in_and: bool) -> list[IR] | Const:
    """The operands none of the others makes redundant -- in an `and` one implied by another, in an `or` one
    implying another (of two equivalent ones the first stays) -- or the constant the whole is when a
    condition stands next to its own negation."""
    def covers(y: IR, x: IR) -> bool:
        return implies(y, x) if in_and else implies(x, y)
    if len(items) > MAX_PAIRWISE:
        kept = list(dict.fromkeys(items))
        present = set(kept)
        if any(isinstance(x, Opaque) and negate(x) in present for x in kept):
            return Const(not in_and)
        return kept
    kept = [x for i, x in enumerate(items)
            if not any(j != i and covers(y, x) and not (covers(x, y) and j > i) for j, y in enumerate(items))]
    if any(isinstance(x, Opaque) and negate(x) in kept for x in kept):
        return Const(not in_and)
    return kept


def conj(parts: list[IR]) -> IR:
    """The canonical conjunction of `parts`."""
    flat = _flatten(parts, And)
    if flat is None:
        return FALSE
    # Unions of windows on one form meet the other windows and unions on that form: one set per form.
    for form in sorted({s[0] for s in map(interval_set, flat) if s is not None}):
        sets = [(p, s) for p, s in ((p, interval_set(p)) for p in flat) if s is not None and s[0] == form]
        if len(sets) > 1 and any(isinstance(p, Or) for p, _ in sets):
            met = set_ir(form, meet([s for _, s in sets]), next(iter(spans_of(sets[0][0])), None))
            used = {id(q) for q, _ in sets}
            return conj([p for p in flat if id(p) not in used] + [met])
    lins: dict[tuple[int, int], Lin] = {}
    mods: dict[tuple, Mod] = {}
    others: list[IR] = []
    for p in flat:
        if isinstance(p, Lin):
            cur = lins.get(p.form)
            if cur is not None:
                lo = p.lo if cur.lo is None else cur.lo if p.lo is None else max(cur.lo, p.lo)
                hi = p.hi if cur.hi is None else cur.hi if p.hi is None else min(cur.hi, p.hi)
                merged = window(p.cq, p.ck, lo, hi, cur.span or p.span)
                if merged == FALSE:
                    return FALSE
                p = merged
            lins[p.form] = p
        elif isinstance(p, Mod):
            cur = mods.get(p.key)
            if cur is not None:
                merged = residue_class(p.cq, p.ck, p.c0, p.m, sorted(set(cur.residues) & set(p.residues)), cur.span)
                if merged == FALSE:
                    return FALSE
                p = merged
            mods[p.key] = p
        else:
            others.append(p)
    items = list(lins.values()) + list(mods.values()) + list(dict.fromkeys(others))
    # A Mod on the same form as a single-valued Lin is decided.
    for lin in list(lins.values()):
        if lin.lo is not None and lin.lo == lin.hi:
            for key, mod in list(mods.items()):
                if (mod.cq, mod.ck) == lin.form:
                    if (lin.lo + mod.c0) % mod.m not in mod.residues:
                        return FALSE
                    items.remove(mod)
    kept = _drop_redundant(items, True)
    if isinstance(kept, Const):
        return kept
    factored = _factor_and(kept)
    if factored is not None:
        return factored
    again = in_context(kept, given)
    if again is not None:
        return conj(again)
    if not kept:
        return TRUE
    if len(kept) == 1:
        return kept[0]
    return And(tuple(sorted(kept, key=sort_key)))


def disj(parts: list[IR]) -> IR:
    """The canonical disjunction of `parts`."""
    flat = _flatten(parts, Or)
    if flat is None:
        return TRUE
    by_form: dict[tuple[int, int], list[Lin]] = {}
    mods: dict[tuple, Mod] = {}
    others: list[IR] = []
    for p in flat:
        if isinstance(p, Lin):
            by_form.setdefault(p.form, []).append(p)
        elif isinstance(p, Mod):
            cur = mods.get(p.key)
            if cur is not None:
                p = residue_class(p.cq, p.ck, p.c0, p.m, sorted(set(cur.residues) | set(p.residues)), cur.span)
                if p == TRUE:
                    return TRUE
            mods[p.key] = p
        else:
            others.append(p)
    items: list[IR] = []
    for form, lins in by_form.items():
        merged = _union_intervals(lins)
        if merged == TRUE:
            return TRUE
        items.extend(merged)
    items += list(mods.values()) + list(dict.fromkeys(others))
    kept = _drop_redundant(items, False)
    if isinstance(kept, Const):
        return kept
    again = in_context(kept, unless)
    if again is not None:
        return disj(again)
    factored = _factor_or(kept)
    if factored is not None:
        return factored
    if not kept:
        return FALSE
    if len(kept) == 1:
        return kept[0]
    return Or(tuple(sorted(kept, key=sort_key)))


def _union_intervals(lins: list[Lin]):
    inf = float("inf")
    spans = sorted((((-inf if a.lo is None else a.lo), (inf if a.hi is None else a.hi), a.span) for a in lins),
                   key=lambda t: (t[0], t[1]))
    out: list[list] = []
    for lo, hi, span in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi, span])
    cq, ck = lins[0].form
    result = []
    for lo, hi, span in out:
        node = window(cq, ck, None if lo == -inf else int(lo), None if hi == inf else int(hi), span)
        if node == TRUE:
            return TRUE
        result.append(node)
    return result


def normalize(node: IR) -> IR:
    """Re-simplify an IR bottom-up (idempotent on canonical IR)."""
    if isinstance(node, And):
        return conj([normalize(a) for a in node.args])
    if isinstance(node, Or):
        return disj([normalize(a) for a in node.args])
    return node
