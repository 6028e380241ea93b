"""Drawing masks: a terminal view (one character per element, or per cell when downsampled) and PNG figures.

Everything here works on a :class:`CellGrid`: the number of allowed (query, key) pairs in every cell of a
grid laid over one (batch, head) slice of the mask. A cell is one element when the mask is small enough
to draw element by element, otherwise a `row_step x col_step` tile (steps are powers of two, so tiles line
up with kernel blocks). There are two ways to fill one:

* :func:`mask_cells` evaluates the checked mask element-wise with numpy (through the semantics table's
  numpy column), in chunks of rows (exact, but it visits every pair, so it is capped at ``MAX_ELEMENTS``);
* :func:`tile_cells` reads the closed-form block mask (:meth:`attnpat.Pattern.block_mask`) with the cells
  as its tiles: EMPTY and FULL tiles cost nothing, PARTIAL tiles are counted point by point when that
  is affordable, and otherwise drawn as "some" without counting. It has no size cap.

Nothing here imports torch (so `attnpat show` starts quickly); PNG figures are drawn with matplotlib, an
optional dependency (``pip install 'attnpat[plot]'``) imported only by :func:`write_png`. The drawing is
checked against the float64 dense reference in tests/test_draw.py.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .compiler import nodes as N
from .compiler.ranges import LOWER_BITS, check_ranges
from .compiler.semantics import evaluate
from .errors import ArgumentError, InputError, PatternError
from .reference import prepare_inputs, query_positions

if TYPE_CHECKING:
    from .pattern import Pattern

__all__ = [
    "CellGrid", "mask_cells", "tile_cells", "pool", "steps_for", "render_text", "legend", "SYMBOLS",
    "png_layout", "write_png", "MAX_ELEMENTS", "PLOT_HINT",
]

# Cell symbols: none / some / all of the cell's pairs allowed.
SYMBOLS = {"unicode": ("·", "▒", "█"), "ascii": (".", "+", "x")}

# The most (query, key) pairs a drawing evaluates element by element (a few seconds at the limit).
MAX_ELEMENTS = 1 << 26
_CHUNK_ELEMENTS = 1 << 22

PLOT_HINT = "--png draws with matplotlib, an optional dependency: pip install 'attnpat[plot]' (or matplotlib)"


@dataclass(frozen=True)
class CellGrid:
    """Allowed-pair counts of one (batch, head) slice of a mask, pooled into cells.

    Attributes:
        counts: int64 numpy array [rows, cols], allowed pairs per cell.
        sizes: int64 numpy array [rows, cols], pairs per cell (edge cells may be smaller than the steps).
        q_len, kv_len: the mask's shape.
        q_start: absolute query position of row 0 (kv_len - q_len unless a q_offset was given).
        row_step, col_step: queries and keys per cell (1 and 1 = element level).
        exact: whether counts are exact pair counts. A tile-level grid whose PARTIAL tiles were too many to
            count holds 0 (EMPTY), 1 (PARTIAL) or the cell size (FULL) instead: the levels, and the levels
            of any coarsening, are still right, and :attr:`allowed_range` bounds the allowed pairs.
    """

    counts: np.ndarray
    sizes: np.ndarray
    q_len: int
    kv_len: int
    q_start: int
    row_step: int = 1
    col_step: int = 1
    exact: bool = True
    bounds: tuple[int, int] | None = None   # (fewest, most) allowed pairs, from the finest grid (not exact)

    @property
    def allowed(self) -> int:
        """Allowed pairs (only meaningful when `exact`; see allowed_range)."""
        return int(self.counts.sum())

    @property
    def allowed_range(self) -> tuple[int, int]:
        """(fewest, most) allowed pairs: equal when exact, else FULL cells to non-empty cells."""
        if self.exact:
            return self.allowed, self.allowed
        if self.bounds is not None:
            return self.bounds
        return int(self.sizes[self.counts == self.sizes].sum()), int(self.sizes[self.counts > 0].sum())

    @property
    def total(self) -> int:
        return self.q_len * self.kv_len

    @property
    def density(self) -> float:
        return self.allowed / self.total if self.total else 0.0

    @property
    def downsampled(self) -> bool:
        return self.row_step > 1 or self.col_step > 1

    @property
    def levels(self) -> np.ndarray:
        """uint8 [rows, cols]: 0 = no pair allowed (EMPTY), 1 = some (PARTIAL), 2 = all (FULL)."""
        out = np.ones(self.counts.shape, dtype=np.uint8)
        out[self.counts == 0] = 0
        out[self.counts == self.sizes] = 2
        return out

    def coarsen(self, row_step: int, col_step: int) -> "CellGrid":
        """The same mask pooled into larger cells; the new steps must be multiples of the current ones."""
        if row_step % self.row_step or col_step % self.col_step:
            raise ArgumentError(f"cannot pool {self.row_step} x {self.col_step} cells into "
                                f"{row_step} x {col_step} cells")
        fr, fc = row_step // self.row_step, col_step // self.col_step
        bounds = None if self.exact else self.allowed_range
        return CellGrid(_sum_tiles(self.counts, fr, fc), _sum_tiles(self.sizes, fr, fc), self.q_len, self.kv_len,
                        self.q_start, row_step, col_step, self.exact, bounds)

    def row_position(self, r: int) -> int:
        """Absolute query position of the first query in cell row r."""
        return self.q_start + r * self.row_step

    def col_position(self, c: int) -> int:
        """Key position of the first key in cell column c."""
        return c * self.col_step


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def steps_for(length: int, cap: int) -> int:
    """Positions per cell so that `length` positions fit in `cap` cells: 1, or a power of two."""
    if cap < 1:
        raise ArgumentError(f"the drawing needs room for at least one cell, got {cap}")
    return 1 if length <= cap else _next_pow2(math.ceil(length / cap))


def _sum_tiles(m, row_step: int, col_step: int) -> np.ndarray:
    m = np.asarray(m).astype(np.int64)
    rows, cols = m.shape
    r, c = -(-rows // row_step), -(-cols // col_step)
    if r * row_step != rows or c * col_step != cols:
        m = np.pad(m, ((0, r * row_step - rows), (0, c * col_step - cols)))
    return m.reshape(r, row_step, c, col_step).sum(axis=(1, 3))


def pool(mask, row_step: int, col_step: int) -> np.ndarray:
    """Count the allowed pairs of a bool [Q, K] mask (numpy array or CPU tensor) per row_step x col_step tile.

    Returns int64 [ceil(Q / row_step), ceil(K / col_step)] (edge tiles may be smaller).
    """
    return _sum_tiles(mask, row_step, col_step)


def _sizes(length: int, step: int) -> np.ndarray:
    n = -(-length // step)
    s = np.full((n,), step, dtype=np.int64)
    if n:
        s[-1] = length - (n - 1) * step
    return s


def _check_slice(sizes: tuple, batch_index: int, batch: int | None) -> int:
    for name, v, lo in sizes:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
    batch = batch_index + 1 if batch is None else batch
    if batch_index >= batch:
        raise ArgumentError(f"batch index {batch_index} is out of range: the inputs are given for "
                            f"{batch} batch element{'s' if batch != 1 else ''}")
    return batch


def _slice_mask(checked, rows: np.ndarray, kv_len: int, q_start: int, b: int, h: int,
                tables: dict[str, tuple[str, np.ndarray]]) -> np.ndarray:
    """The mask of query rows `rows` (row indices) x every key, for batch element b and head h: bool [R, K]."""
    if len(rows) and kv_len:   # numpy computes in int64: refuse (RangeError) rather than wrap
        inputs = {n: (int(v.min()), int(v.max())) for n, (_, v) in tables.items() if len(v)}
        check_ranges(checked.expr, (int(rows.min()) + q_start, int(rows.max()) + q_start), (0, kv_len - 1), inputs,
                     bits=LOWER_BITS, h_range=(h, h), b_range=(b, b), what="the drawing")
    env = {"q": (rows + q_start)[:, None], "k": np.arange(kv_len, dtype=np.int64)[None, :],
           "h": np.int64(h), "b": np.int64(b)}

    def leaf(e: N.Expr):
        if isinstance(e, N.Num):
            return np.int64(e.value)
        if isinstance(e, N.BoolLit):
            return np.bool_(e.value)
        if isinstance(e, N.Name):
            return env[e.id]
        if isinstance(e, N.Subscript) and isinstance(e.value, N.ListLit):
            values = np.array([v.value for v in e.value.elts], dtype=np.int64)
            idx = np.asarray(evaluate(e.index, "numpy", leaf))
            bad = (idx < 0) | (idx >= len(values))
            if bad.any():
                raise ArgumentError(f"pattern '{checked.name}': list index {int(idx[bad].flat[0])} is out of "
                                    f"range (the list has {len(values)} elements); check the number of heads")
            return values[idx]
        if isinstance(e, N.Subscript):
            axis, row = tables[e.value.id]
            if axis == "b":                      # an int[b] input: one value for the drawn sequence
                return row[0]
            if axis == "q":                      # an int[q] input has one value per query row
                return row[rows][:, None]
            if e.index.id == "k":
                return row[None, :]
            pos = rows + q_start                 # an int[k] input read at query positions
            if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= kv_len):
                raise InputError(f"'{e.value.id}[q]' reads query positions {int(pos.min())}..{int(pos.max())}, "
                                 f"outside the {kv_len} values of int[k] input '{e.value.id}'")
            return row[pos][:, None]
        raise PatternError(f"internal error: unchecked node {type(e).__name__}")   # the checker admits no other

    out = evaluate(checked.expr, "numpy", leaf)
    return np.broadcast_to(np.asarray(out, dtype=bool), (len(rows), kv_len))


def mask_cells(pattern: Pattern, q_len: int, kv_len: int, *, row_step: int = 1, col_step: int = 1,
               batch_index: int = 0, head: int = 0, batch: int | None = None, q_offset: int | None = None,
               inputs: dict[str, object] | None = None) -> CellGrid:
    """Evaluate `pattern` (a :class:`attnpat.Pattern`) for one batch element and head, pooled into cells.

    Args:
        q_len, kv_len: the mask's shape; query row i sits at i + (kv_len - q_len) unless q_offset is given.
        row_step, col_step: queries and keys per cell.
        batch_index, head: which slice to draw (b and h in the pattern).
        batch: the batch size the runtime inputs are given for (default batch_index + 1).
        inputs: runtime inputs, as for :meth:`attnpat.Pattern.dense_mask`.
    """
    batch = _check_slice((("q_len", q_len, 1), ("kv_len", kv_len, 1), ("row_step", row_step, 1),
                          ("col_step", col_step, 1), ("batch_index", batch_index, 0), ("head", head, 0)),
                         batch_index, batch)
    if q_len * kv_len > MAX_ELEMENTS:
        raise ArgumentError(f"{q_len} x {kv_len} is too large to draw: a drawing evaluates every (query, key) "
                            f"pair, at most {MAX_ELEMENTS} of them (e.g. 8192 x 8192); draw a smaller shape")
    checked = pattern.checked
    tensors = prepare_inputs(checked, q_len, kv_len, batch, dict(inputs or {}))
    axes = {d.name: d.axis for d in checked.inputs}
    tables = {n: (axes[n], t[min(batch_index, t.shape[0] - 1)].numpy()) for n, t in tensors.items()}
    q_start = query_positions(q_len, kv_len, q_offset)
    chunk = max(row_step, (_CHUNK_ELEMENTS // max(kv_len, 1)) // row_step * row_step)
    parts = [pool(_slice_mask(checked, np.arange(r0, min(r0 + chunk, q_len)), kv_len, q_start, batch_index,
                              head, tables), row_step, col_step)
             for r0 in range(0, q_len, chunk)]
    sizes = np.outer(_sizes(q_len, row_step), _sizes(kv_len, col_step))
    return CellGrid(np.concatenate(parts, axis=0), sizes, q_len, kv_len, q_start, row_step, col_step)


def _fine_step(length: int, step: int, cells: int) -> int:
    """The smallest power-of-two divisor of `step` with at most `cells` cells over `length` positions."""
    while step > 1 and -(-length // (step // 2)) <= cells:
        step //= 2
    return step


def tile_cells(pattern: Pattern, q_len: int, kv_len: int, *, row_step: int, col_step: int, batch_index: int = 0,
               head: int = 0, batch: int | None = None, q_offset: int | None = None,
               inputs: dict[str, object] | None = None, count_budget: int = 1 << 25,
               fine_cells: int = 512) -> CellGrid:
    """Like :func:`mask_cells`, from the pattern's closed-form block mask: no N^2 work, no size cap.

    The block mask is lowered with tiles as fine as `fine_cells` per axis allows (down to the cell size),
    its FULL and EMPTY tiles taken as they are, and its PARTIAL tiles counted point by point when that
    evaluates at most `count_budget` points -- otherwise the grid is not exact (see :class:`CellGrid`) but
    its levels are. The fine grid is then pooled into row_step x col_step cells.
    """
    from .compiler.analysis import tile_grid
    batch = _check_slice((("q_len", q_len, 1), ("kv_len", kv_len, 1), ("row_step", row_step, 1),
                          ("col_step", col_step, 1), ("batch_index", batch_index, 0), ("head", head, 0)),
                         batch_index, batch)
    fine_row, fine_col = row_step, col_step
    if not (row_step & (row_step - 1) or col_step & (col_step - 1)):   # powers of two: pool a finer grid
        fine_row, fine_col = _fine_step(q_len, row_step, fine_cells), _fine_step(kv_len, col_step, fine_cells)
    kinds, counts, q_start = tile_grid(pattern, q_len, kv_len, block_q=fine_row, block_k=fine_col,
                                       batch_index=batch_index, head=head, batch=batch, q_offset=q_offset,
                                       inputs=inputs, count_budget=count_budget)
    sizes = np.outer(_sizes(q_len, fine_row), _sizes(kv_len, fine_col))
    if counts is not None:
        grid = CellGrid(np.asarray(counts, np.int64), sizes, q_len, kv_len, q_start, fine_row, fine_col)
    else:
        kinds = np.asarray(kinds, np.int64)
        marks = np.where(kinds == 2, sizes, (kinds == 1).astype(np.int64))
        bounds = (int(sizes[kinds == 2].sum()), int(sizes[kinds > 0].sum()))
        grid = CellGrid(marks, sizes, q_len, kv_len, q_start, fine_row, fine_col, exact=False, bounds=bounds)
    return grid if (fine_row, fine_col) == (row_step, col_step) else grid.coarsen(row_step, col_step)


# -- terminal -------------------------------------------------------------------------------------------

def _label_interval(cols: int, widest: int) -> int:
    interval = 4 if cols <= 32 else 8
    while interval <= widest:
        interval *= 2
    return interval


def _axis_line(grid: CellGrid, cols: int) -> str:
    widest = len(str(grid.col_position(max(cols - 1, 0))))
    interval = _label_interval(cols, widest)
    line = [" "] * cols
    for c in range(0, cols, interval):
        text = str(grid.col_position(c))
        for i, ch in enumerate(text):
            if c + i < cols:
                line[c + i] = ch
    return "".join(line).rstrip()


def render_text(grid: CellGrid, *, ascii: bool = False) -> list[str]:
    """The grid as text lines: a key-axis line, then one line per cell row labelled with its query position.

    Rows are queries (labelled with the absolute position q of their first query), columns are keys
    (labelled every few columns with the position k of their first key).
    """
    symbols = SYMBOLS["ascii" if ascii else "unicode"]
    levels = grid.levels
    rows, cols = levels.shape
    label_w = max(len(str(grid.row_position(max(rows - 1, 0)))), 5)
    axis = _axis_line(grid, cols)
    corner = "q \\ k"
    lines = [f"{corner:>{label_w}}  {axis}"]
    table = [symbols[0], symbols[1], symbols[2]]
    for r in range(rows):
        cells = "".join(table[v] for v in levels[r].tolist())
        lines.append(f"{grid.row_position(r):>{label_w}}  {cells}")
    if rows > 32:
        lines.append(f"{'':>{label_w}}  {axis}")
    return lines


def legend(grid: CellGrid, *, ascii: bool = False) -> str:
    """One line saying what a character stands for."""
    none, some, full = SYMBOLS["ascii" if ascii else "unicode"]
    if not grid.downsampled:
        return f"{full} attends, {none} masked; rows: queries q (absolute position), columns: keys k"
    return (f"downsampled: each cell is {grid.row_step} quer{'ies' if grid.row_step != 1 else 'y'} x "
            f"{grid.col_step} key{'s' if grid.col_step != 1 else ''}; "
            f"{full} all pairs attend, {some} some, {none} none")


# -- PNG ------------------------------------------------------------------------------------------------

# EMPTY, PARTIAL, FULL: white-ish, a warm orange that stands out at one pixel, a dark blue.
_COLOURS = ("#f4f4f4", "#f28e2b", "#1f4e79")


def png_layout(q_len: int, kv_len: int, *, max_cells: int = 1024, target: int = 128) -> tuple[int, int]:
    """Choose (row_step, col_step) for a PNG: element level up to `max_cells` positions, else square tiles.

    Tiles are power-of-two squares so that at most `target` of them lie along the longer side: each tile is
    then a few pixels wide in the figure, so PARTIAL tiles show as cells rather than as a hairline.
    """
    longest = max(q_len, kv_len)
    step = 1 if longest <= max_cells else _next_pow2(math.ceil(longest / target))
    return step, step


def _figure_modules():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import BoundaryNorm, ListedColormap
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter, MultipleLocator
    except ImportError:
        raise ModuleNotFoundError(PLOT_HINT, name="matplotlib") from None
    return FigureCanvasAgg, BoundaryNorm, ListedColormap, Figure, Patch, FuncFormatter, MultipleLocator


def _tick_step(length: int, ticks: int) -> int:
    """A power-of-two tick spacing giving about `ticks` ticks: positions line up with kernel blocks."""
    return max(1, _next_pow2(max(1, length // ticks)))


def _position_labels(step: int):
    """Tick labels: 16K for 16384 when every tick is a multiple of 1024, else the plain number."""
    def label(x: float, _pos=None) -> str:
        v = int(round(x))
        return f"{v // 1024}K" if step % 1024 == 0 and v else str(v)
    return label


def write_png(path: str, grids: list[tuple[str, CellGrid]], title: str, *, dpi: int = 110) -> tuple[int, int]:
    """Draw one panel per (label, grid) -- e.g. one per head -- into a PNG; return its (width, height) in pixels.

    Axes are key position k (x) and absolute query position q (y, downwards, as in the terminal); the
    title says the pattern and shape; the legend says what the colours mean: at element level attends /
    masked, at tile level FULL / PARTIAL / EMPTY tiles (with the tile size).
    """
    Canvas, BoundaryNorm, ListedColormap, Figure, Patch, FuncFormatter, MultipleLocator = _figure_modules()
    first = grids[0][1]
    n = len(grids)
    cols = min(n, 4)
    rows = -(-n // cols)
    aspect = first.q_len / first.kv_len
    panel = 4.6 if n == 1 else 3.4
    height = min(max(panel * aspect, 1.6), 2.5 * panel)
    fig = Figure(figsize=(cols * panel + 0.6, rows * (height + 0.55) + 1.25), dpi=dpi)
    Canvas(fig)
    cmap = ListedColormap(_COLOURS)
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        label, grid = grids[i]
        # element level: a cell is centred on its position; tile level: a tile spans its positions
        half = 0.0 if grid.downsampled else 0.5
        extent = (-half, grid.kv_len - half, grid.q_start + grid.q_len - half, grid.q_start - half)
        ax.imshow(grid.levels, cmap=cmap, norm=norm, extent=extent, interpolation="nearest", aspect="auto")
        rows_n, cols_n = grid.levels.shape
        if max(rows_n, cols_n) <= 64:   # few cells: outline each one
            ax.set_xticks(np.arange(1, cols_n) * grid.col_step - half, minor=True)
            ax.set_yticks(grid.q_start + np.arange(1, rows_n) * grid.row_step - half, minor=True)
            ax.grid(which="minor", color="white", linewidth=0.6)
            ax.tick_params(which="minor", length=0)
        for axis, length in ((ax.xaxis, grid.kv_len), (ax.yaxis, grid.q_len)):
            step = _tick_step(length, 8 if n == 1 or axis is ax.yaxis else 4)
            axis.set_major_locator(MultipleLocator(step))
            axis.set_major_formatter(FuncFormatter(_position_labels(step)))
        if n > 1 or label:
            ax.set_title(label, fontsize=10)
        if i + cols >= n:
            ax.set_xlabel("key position k")
        if i % cols == 0:
            ax.set_ylabel("query position q")
    if first.downsampled:
        title += f"\none cell per {first.row_step}x{first.col_step} tile (queries x keys)"
        handles = [Patch(facecolor=_COLOURS[2], edgecolor="#888", label="FULL: all pairs attend"),
                   Patch(facecolor=_COLOURS[1], edgecolor="#888", label="PARTIAL: some pairs"),
                   Patch(facecolor=_COLOURS[0], edgecolor="#888", label="EMPTY: none")]
    else:
        handles = [Patch(facecolor=_COLOURS[2], edgecolor="#888", label="query q attends to key k"),
                   Patch(facecolor=_COLOURS[0], edgecolor="#888", label="masked")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    # wrap each title line to the figure's width (a long parameter list would be cut off at its edges)
    chars = max(20, int(fig.get_figwidth() * 72 / (11 * 0.6)))
    fig.suptitle("\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in title.split("\n")),
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
    try:
        fig.savefig(path, format="png")
    finally:
        fig.clear()
    w, h = fig.canvas.get_width_height()
    return w, h
