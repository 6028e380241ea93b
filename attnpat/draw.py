"""Drawing masks: a terminal view (one character per element, or per cell when downsampled) and PNG files.

Everything here works on a :class:`CellGrid`: the number of allowed (query, key) pairs in every cell of a
grid laid over one (batch, head) slice of the mask. A cell is one element when the mask is small enough
to draw element by element, otherwise a `row_step x col_step` tile (steps are powers of two, so tiles line
up with kernel blocks). There are two ways to fill one:

* :func:`mask_cells` evaluates the mask with the dense reference, in chunks of rows (exact, but it visits
  every pair, so it is capped at ``MAX_ELEMENTS`` pairs);
* :func:`tile_cells` reads the closed-form block mask (:meth:`attnpat.Pattern.block_mask`) with the cells
  as its tiles: EMPTY and FULL tiles cost nothing, PARTIAL tiles are counted point by point when that
  is affordable, and otherwise drawn as "some" without counting. It has no size cap: a 64K x 64K sliding
  window is drawn in well under a second.

The PNG writer is pure Python (zlib + struct): a palette image, no extra dependency.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import torch

from .errors import ArgumentError
from .reference import prepare_inputs, query_positions

__all__ = [
    "CellGrid", "mask_cells", "tile_cells", "pool", "steps_for", "render_text", "legend", "SYMBOLS",
    "png_bytes", "png_layout", "write_png", "MAX_ELEMENTS",
]

# Cell symbols: none / some / all of the cell's pairs allowed.
SYMBOLS = {"unicode": ("·", "▒", "█"), "ascii": (".", "+", "x")}

# The most (query, key) pairs a drawing evaluates (with the dense reference: a few seconds at the limit).
MAX_ELEMENTS = 1 << 26
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class CellGrid:
    """Allowed-pair counts of one (batch, head) slice of a mask, pooled into cells.

    Attributes:
        counts: int64 [rows, cols], allowed pairs per cell.
        sizes: int64 [rows, cols], pairs per cell (edge cells may be smaller than row_step x col_step).
        q_len, kv_len: the mask's shape.
        q_start: absolute query position of row 0 (kv_len - q_len unless a q_offset was given).
        row_step, col_step: queries and keys per cell (1 and 1 = element level).
        exact: whether counts are exact pair counts. A tile-level grid whose PARTIAL tiles were too many to
            count holds 0 (EMPTY), 1 (PARTIAL) or the cell size (FULL) instead: the levels, and the levels
            of any coarsening, are still right, and :attr:`allowed_range` bounds the allowed pairs.
    """

    counts: torch.Tensor
    sizes: torch.Tensor
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
    def levels(self) -> torch.Tensor:
        """uint8 [rows, cols]: 0 = no pair allowed, 1 = some, 2 = all."""
        out = torch.ones_like(self.counts, dtype=torch.uint8)
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


def _sum_tiles(m: torch.Tensor, row_step: int, col_step: int) -> torch.Tensor:
    rows, cols = m.shape
    r, c = -(-rows // row_step), -(-cols // col_step)
    m = m.to(torch.int64)
    if r * row_step != rows or c * col_step != cols:
        m = torch.nn.functional.pad(m, (0, c * col_step - cols, 0, r * row_step - rows))
    return m.view(r, row_step, c, col_step).sum(dim=(1, 3))


def pool(mask: torch.Tensor, row_step: int, col_step: int) -> torch.Tensor:
    """Count the allowed pairs of a bool [Q, K] mask per row_step x col_step tile (edge tiles may be smaller).

    Returns int64 [ceil(Q / row_step), ceil(K / col_step)].
    """
    return _sum_tiles(mask, row_step, col_step)


def _sizes(length: int, step: int) -> torch.Tensor:
    n = -(-length // step)
    s = torch.full((n,), step, dtype=torch.int64)
    if n:
        s[-1] = length - (n - 1) * step
    return s


def mask_cells(pattern, q_len: int, kv_len: int, *, row_step: int = 1, col_step: int = 1,
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
    for name, v, lo in (("q_len", q_len, 1), ("kv_len", kv_len, 1), ("row_step", row_step, 1),
                        ("col_step", col_step, 1), ("batch_index", batch_index, 0), ("head", head, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
    if q_len * kv_len > MAX_ELEMENTS:
        raise ArgumentError(f"{q_len} x {kv_len} is too large to draw: a drawing evaluates every (query, key) "
                            f"pair, at most {MAX_ELEMENTS} of them (e.g. 8192 x 8192); draw a smaller shape")
    batch = batch_index + 1 if batch is None else batch
    if batch_index >= batch:
        raise ArgumentError(f"batch index {batch_index} is out of range: the inputs are given for "
                            f"{batch} batch element{'s' if batch != 1 else ''}")
    checked = pattern.checked
    tensors = prepare_inputs(checked, q_len, kv_len, batch, dict(inputs or {}))
    axes = {d.name: d.axis for d in checked.inputs}
    q_start = query_positions(q_len, kv_len, q_offset)
    chunk = max(row_step, (_CHUNK_ELEMENTS // max(kv_len * (head + 1) * batch, 1)) // row_step * row_step)
    parts = []
    for r0 in range(0, q_len, chunk):
        r1 = min(r0 + chunk, q_len)
        sliced = {n: (t[:, r0:r1] if axes[n] == "q" else t) for n, t in tensors.items()}
        dense = pattern.dense_mask(r1 - r0, kv_len, batch=batch, heads=head + 1, q_offset=q_start + r0,
                                   **sliced)
        parts.append(pool(dense[batch_index, head], row_step, col_step))
    counts = torch.cat(parts, dim=0)
    sizes = torch.outer(_sizes(q_len, row_step), _sizes(kv_len, col_step))
    return CellGrid(counts, sizes, q_len, kv_len, q_start, row_step, col_step)


def _fine_step(length: int, step: int, cells: int) -> int:
    """The smallest power-of-two divisor of `step` with at most `cells` cells over `length` positions."""
    while step > 1 and -(-length // (step // 2)) <= cells:
        step //= 2
    return step


def tile_cells(pattern, q_len: int, kv_len: int, *, row_step: int, col_step: int, batch_index: int = 0,
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
    for name, v, lo in (("q_len", q_len, 1), ("kv_len", kv_len, 1), ("row_step", row_step, 1),
                        ("col_step", col_step, 1), ("batch_index", batch_index, 0), ("head", head, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ArgumentError(f"{name} must be an int >= {lo}, got {v!r}")
    batch = batch_index + 1 if batch is None else batch
    if batch_index >= batch:
        raise ArgumentError(f"batch index {batch_index} is out of range: the inputs are given for "
                            f"{batch} batch element{'s' if batch != 1 else ''}")
    fine_row, fine_col = row_step, col_step
    if not (row_step & (row_step - 1) or col_step & (col_step - 1)):   # powers of two: pool a finer grid
        fine_row, fine_col = _fine_step(q_len, row_step, fine_cells), _fine_step(kv_len, col_step, fine_cells)
    kinds, counts, q_start = tile_grid(pattern, q_len, kv_len, block_q=fine_row, block_k=fine_col,
                                       batch_index=batch_index, head=head, batch=batch, q_offset=q_offset,
                                       inputs=inputs, count_budget=count_budget)
    sizes = torch.outer(_sizes(q_len, fine_row), _sizes(kv_len, fine_col))
    if counts is not None:
        grid = CellGrid(torch.from_numpy(counts), sizes, q_len, kv_len, q_start, fine_row, fine_col)
    else:
        kinds = torch.from_numpy(kinds.astype("int64"))
        marks = torch.where(kinds == 2, sizes, (kinds == 1).to(torch.int64))
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

# Palette: masked, partial, allowed, grid line.
_PALETTE = ((0xF7, 0xF7, 0xF7), (0x9E, 0xC0, 0xE0), (0x1F, 0x4E, 0x79), (0xD4, 0xD4, 0xD4))


def png_bytes(levels: list[list[int]], scale: int = 1, *, gridlines: bool = False,
              palette: tuple[tuple[int, int, int], ...] = _PALETTE) -> bytes:
    """Encode a grid of palette indices as a PNG, each cell a `scale` x `scale` square.

    With gridlines, the last pixel row and column of every cell is drawn in palette colour 3.
    """
    if scale < 1:
        raise ArgumentError(f"scale must be >= 1, got {scale}")
    rows = len(levels)
    cols = len(levels[0]) if rows else 0
    if rows == 0 or cols == 0:
        raise ArgumentError("cannot write an empty image")
    width, height = cols * scale, rows * scale
    sep = bytes([3])
    raw = bytearray()
    for row in levels:
        if gridlines and scale > 1:
            line = b"".join(bytes([v]) * (scale - 1) + sep for v in row)
            edge = sep * width
        else:
            line = b"".join(bytes([v]) * scale for v in row)
            edge = line
        body = b"\x00" + line
        raw += body * (scale - 1 if gridlines and scale > 1 else scale)
        if gridlines and scale > 1:
            raw += b"\x00" + edge

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)   # 8-bit palette, no interlace
    plte = b"".join(bytes(c) for c in palette)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


def png_layout(q_len: int, kv_len: int, *, max_cells: int = 1024, target: int = 512) -> tuple[int, int, int]:
    """Choose (row_step, col_step, scale) for a PNG: element level up to `max_cells` positions, else tiles.

    Tiles are power-of-two squares so that at most `target` of them fit across the longer side; each cell
    is drawn as a square of `scale` pixels so that the image is about `target` pixels (at most 16 per cell).
    """
    longest = max(q_len, kv_len)
    step = 1 if longest <= max_cells else _next_pow2(math.ceil(longest / target))
    cells = -(-longest // step)
    scale = max(1, min(16, target // cells))
    return step, step, scale


def write_png(path: str, grid: CellGrid, scale: int) -> tuple[int, int]:
    """Write `grid` as a PNG (dark: all pairs attend, light: some, white: none); return (width, height)."""
    levels = grid.levels.tolist()
    data = png_bytes(levels, scale, gridlines=scale >= 4)
    with open(path, "wb") as f:
        f.write(data)
    return len(levels[0]) * scale, len(levels) * scale
