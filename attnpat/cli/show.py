"""`attnpat show`: draw a pattern's mask in the terminal (rows: queries, columns: keys), or as a PNG."""

from __future__ import annotations

import argparse
import shutil
import sys

from ..compiler import nodes as N
from ..errors import ArgumentError, InputError
from ..pattern import Pattern
from .arguments import (
    INPUT_HELP, Command, add_spec_arguments, collect_inputs, heading, integer, non_negative, pattern_from_args,
    positive, unicode_ok,
)

DEFAULT_WIDTH = 96     # terminal columns for the cells of a drawing (not counting the row labels)
DEFAULT_HEIGHT = 64    # terminal rows for the cells of a drawing
DEFAULT_LEN = 32

# Up to this many (query, key) pairs a downsampled drawing evaluates the dense mask; above it, it reads the
# closed-form block mask with the drawing's cells as tiles (no N^2 work, no size cap).
_DENSE_DRAW_LIMIT = 1 << 20


def _configure(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p)
    p.add_argument("--q-len", type=positive, metavar="N",
                   help=f"queries (rows); default: kv_len, or {DEFAULT_LEN}")
    p.add_argument("--kv-len", type=positive, metavar="N",
                   help=f"keys (columns); default: q_len, or {DEFAULT_LEN}")
    p.add_argument("--q-offset", type=integer, metavar="N",
                   help="absolute position of query row 0 (default: kv_len - q_len, i.e. bottom-right aligned)")
    p.add_argument("--batch-index", type=non_negative, default=0, metavar="B", help="batch element b (default 0)")
    p.add_argument("--head", type=non_negative, default=0, metavar="H", help="head h (default 0)")
    p.add_argument("--input", action="append", metavar="NAME=V1,V2,...", default=[], help=INPUT_HELP)
    p.add_argument("--ascii", action="store_true", help="draw with x . + instead of █ · ▒")
    p.add_argument("--width", type=positive, metavar="COLS",
                   help=f"at most this many key columns before downsampling (default {DEFAULT_WIDTH}, "
                        "or less on a narrow terminal)")
    p.add_argument("--height", type=positive, default=DEFAULT_HEIGHT, metavar="ROWS",
                   help=f"at most this many query rows before downsampling (default {DEFAULT_HEIGHT})")
    p.add_argument("--png", metavar="OUT",
                   help="also draw the mask as a PNG figure in OUT (needs matplotlib: pip install "
                        "'attnpat[plot]'): labelled axes, title, legend; element by element up to 1024 "
                        "positions, else EMPTY / PARTIAL / FULL tiles read from the closed-form block mask "
                        "(any length)")
    p.add_argument("--heads", type=positive, metavar="N",
                   help="with --png: one panel per head 0..N-1 (default: up to 4 when the pattern reads h, "
                        "else the --head one)")


def _cells(pattern: Pattern, q_len: int, kv_len: int, row_step: int, col_step: int, common: dict):
    from .. import draw
    if (row_step == 1 and col_step == 1) or q_len * kv_len <= _DENSE_DRAW_LIMIT:
        return draw.mask_cells(pattern, q_len, kv_len, row_step=row_step, col_step=col_step, **common)
    return draw.tile_cells(pattern, q_len, kv_len, row_step=row_step, col_step=col_step, **common)


def _png_grids(args, pattern: Pattern, q_len: int, kv_len: int, common: dict):
    """The PNG's panels: (label, grid) per head drawn, at the image's resolution."""
    from .. import draw
    row_step, col_step = draw.png_layout(q_len, kv_len)
    reads_h = "h" in {x.id for x in N.walk(pattern.checked.expr) if isinstance(x, N.Name)}
    if args.heads is not None:
        heads, optional = list(range(args.heads)), False
    elif reads_h and args.head < 4:
        heads, optional = list(range(4)), True     # stop quietly where a per-head list runs out
    else:
        heads, optional = [args.head], False
    panels: list = []
    for h in heads:
        try:
            grid = _cells(pattern, q_len, kv_len, row_step, col_step, {**common, "head": h})
        except ArgumentError:
            if optional and panels:
                break
            raise
        panels.append((f"head h={h}" if reads_h or len(heads) > 1 else "", grid))
    return panels


def _header(args: argparse.Namespace, pattern: Pattern, grid, q_len: int, kv_len: int, input_batch: int) -> str:
    used = {x.id for x in N.walk(pattern.checked.expr) if isinstance(x, N.Name)}
    where = []
    if "b" in used or args.batch_index or input_batch > 1:
        where.append(f"b={args.batch_index}")
    if "h" in used or args.head:
        where.append(f"h={args.head}")
    header = f"{heading(pattern)}  q_len={q_len} kv_len={kv_len}"
    if where:
        header += "  " + " ".join(where)
    if grid.exact:
        header += f"  density {100 * grid.density:.1f}% ({grid.allowed} of {grid.total} pairs)"
    else:
        lo, hi = grid.allowed_range
        header += (f"  density {100 * lo / grid.total:.1f}% to {100 * hi / grid.total:.1f}% (tile level: too "
                   f"many partial tiles to count; 'attnpat explain' gives the exact value)")
    return header


def _run(args: argparse.Namespace) -> int:
    from .. import draw

    pattern = pattern_from_args(args)
    q_len = args.q_len or args.kv_len or DEFAULT_LEN
    kv_len = args.kv_len or args.q_len or DEFAULT_LEN
    inputs, input_batch = collect_inputs(pattern, args.input, q_len, kv_len)
    if input_batch > 1 and args.batch_index >= input_batch:
        raise InputError(f"--batch-index {args.batch_index} is out of range: the runtime inputs have "
                         f"{input_batch} rows (batch elements)")
    batch = input_batch if input_batch > 1 else args.batch_index + 1

    ascii_only = args.ascii or not unicode_ok(sys.stdout)
    width = args.width
    if width is None:
        width = DEFAULT_WIDTH
        if sys.stdout.isatty():
            columns = shutil.get_terminal_size((DEFAULT_WIDTH + 10, 24)).columns
            width = max(16, min(width, columns - 10))
    row_step = draw.steps_for(q_len, args.height)
    col_step = draw.steps_for(kv_len, width)
    common = dict(batch_index=args.batch_index, head=args.head, batch=batch, q_offset=args.q_offset,
                  inputs=inputs)
    if args.heads is not None and not args.png:
        raise ArgumentError("--heads sets the panels of the PNG figure: use it with --png")
    panels, png_grid = [], None
    if args.png:
        from ..draw import PLOT_HINT
        try:
            import matplotlib   # noqa: F401 -- fail before the work, not after it
        except ImportError:
            raise ModuleNotFoundError(PLOT_HINT, name="matplotlib") from None
        # The image is at least as fine as the terminal (all steps are powers of two): compute it once, at
        # the image's resolution, and pool that for the terminal.
        panels = _png_grids(args, pattern, q_len, kv_len, common)
        png_grid = next((g for label, g in panels if label in ("", f"head h={args.head}")), None)
    if png_grid is not None and row_step % png_grid.row_step == 0 and col_step % png_grid.col_step == 0:
        grid = png_grid.coarsen(row_step, col_step)
    else:
        grid = _cells(pattern, q_len, kv_len, row_step, col_step, common)

    print(_header(args, pattern, grid, q_len, kv_len, input_batch))
    expr = pattern.expression()
    print(f"mask {expr if len(expr) <= 300 else expr[:297] + '...'}")
    for text in args.input:
        print(f"input {text.strip()}")
    if args.q_offset is not None:
        print(f"query row i is at position q = i + {args.q_offset} (--q-offset)")
    elif q_len != kv_len:
        print(f"query row i is at position q = i + {grid.q_start} (kv_len - q_len: aligned bottom-right)")
    print(draw.legend(grid, ascii=ascii_only))
    for line in draw.render_text(grid, ascii=ascii_only):
        print(line)

    if panels:
        first = panels[0][1]
        shape = _header(args, pattern, first, q_len, kv_len, input_batch).split("  density")[0]
        shape = shape[len(heading(pattern)):].strip()
        title = f"{heading(pattern)}\n{shape.replace(f'  h={args.head}', '') if len(panels) > 1 else shape}"
        try:
            w, h = draw.write_png(args.png, panels, title)
        except OSError as exc:
            raise ArgumentError(f"cannot write '{args.png}': {exc.strerror or exc}") from None
        unit = ("one cell per element" if not first.downsampled else
                f"one cell per {first.row_step}x{first.col_step} tile (EMPTY / PARTIAL / FULL)")
        heads = "" if len(panels) == 1 else f", {len(panels)} panels (heads 0..{len(panels) - 1})"
        print(f"wrote {args.png}: {w}x{h} pixels, {unit}{heads}")
    return 0


COMMAND = Command("show", "draw a pattern's mask in the terminal (rows: queries, columns: keys)", _configure, _run)
