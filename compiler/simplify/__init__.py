"""Stage 3 -- simplify: a checked pattern -> canonical IR, canonical text and a stable key.

Linear comparisons are normalised with sympy into interval atoms over a linear form in q and k
(``q - k < w`` and ``not (k > q)`` become ``lo <= q - k <= hi``); negations are pushed into the atoms;
conjunctions intersect intervals and residue sets of the same form, disjunctions merge them; clauses implied
by a sibling are absorbed; operands are sorted by their text. Two spellings of the same pattern --
reordered clauses, negated comparisons, chained comparisons, redundant intersections -- reach the same
canonical text and so the same key, and so share one kernel.

Common operands are factored out: ``(a and b) or (a and c)`` becomes ``a and (b or c)``, also with more
disjuncts, with a group of them (``(a and b) or (a and c) or d``), and when ``a`` was merged into a window
of one disjunct (``(k <= q and k < 4) or (k <= q and q - k < 1020)`` is streaming_llm's ``q - k >= 0 and
(k <= 3 or q - k <= 1019)``); dually ``(a or b) and (a or c)`` becomes ``a or (b and c)``. Inside ``f and
X`` (``f or X``) X is simplified where f holds (fails): windows drop bounds f imposes or grow over f, and
what f decides becomes True or False. So the distributed and the factored spellings of a mask share a key
whenever their operands are single conditions -- a window (``q - k < 8``), a residue condition, an
opaque one (``doc[q] == doc[k]``, a hash) -- however those overlap or contradict.

Not canonical (both forms stay correct, they just keep different keys): this is factoring, not a normal
form. Which common operand is pulled out first is a greedy choice, so two different factorings of one
mask (``(a and (b or c)) or (b and d)`` against ``(b and (a or d)) or (a and c)``) keep their own texts;
operands that are themselves and/or of conditions -- including ``q - k != 2``, ``abs(q - k) >= 4`` or
``k not in {1, 5}``, which are two windows, and the case splits of abs/min/max -- may stay apart; a window
end that a residue condition on the same form excludes is not moved (``(q - k) % 2 == 1 and q - k <= 0``
against ``... and q - k <= -1``); and opaque conditions are only compared as text (``doc[q] == doc[k]``
against its negation), never by what they compute.
"""

from .canonical import Canonical, simplify, specialize, uses
from .logic import negate, normalize
from .translate import to_ir

__all__ = ["Canonical", "simplify", "to_ir", "specialize", "normalize", "uses", "negate"]
