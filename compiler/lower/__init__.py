"""Stage 4 -- lower: canonical IR -> a :class:`BlockMask`, in closed form.

The query axis is cut into blocks of ``block_q`` rows and the key axis into blocks of ``block_k`` columns;
every tile (query block x key block) is EMPTY (no allowed pair), PARTIAL (some) or FULL (all). The lowering
never looks at the N^2 points:

1. *support*: from the IR, each query block gets a few intervals of key blocks that may hold an allowed
   pair -- solved in closed form for linear atoms (bands in q - k, ranges of k or q), by binary search over
   an O(N) table for ``f(q) == g(k)`` with ``g`` monotone (chunks ``q // c == k // c``, sorted document
   ids); everything else keeps the whole row (a set of global columns stays a set of runs);
2. *classify*: each candidate tile is classified with three-valued logic; linear and modular atoms are
   exact on a tile, conjunctions with ranges of q or k cut the tile to a sub-rectangle first, conditions
   that read q and k only through ``q // c`` and ``k // c`` (BigBird's hashed random blocks, block windows)
   are constant on every chunk cell and are evaluated once per cell the tile overlaps, exactly, and any
   other condition is bounded with interval arithmetic (runtime inputs through per-block min/max);
3. *refine*: the few tiles whose PARTIAL verdict is not proven exact are evaluated point by point, within
   a budget, so the masks of the library patterns are tight, and every mask is sound.

Work and memory grow with the number of candidate tiles, not with q_len * kv_len.

The modules, in the order a lowering uses them: :mod:`.geometry` (block boundaries, boxes of tiles),
:mod:`.support` (1), :mod:`.classify` (2) with :mod:`.cells` (chunk cells) and :mod:`.interval` (interval
arithmetic), :mod:`.points` (point evaluation and 3), and :mod:`.blockmask` (the result and :func:`lower`).
"""

from .blockmask import CHUNK_TILES, BlockMask, TileKind, lower
from .cells import chunk_cells, chunk_split
from .classify import classify_rects
from .geometry import CELL_BUDGET
from .points import REFINE_BUDGET, evaluate_points

__all__ = ["TileKind", "BlockMask", "lower", "evaluate_points", "REFINE_BUDGET", "CELL_BUDGET", "CHUNK_TILES",
           "chunk_split", "chunk_cells", "classify_rects"]
