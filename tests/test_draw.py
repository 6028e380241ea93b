"""Drawings: the numpy mask evaluation against the float64 reference, and the PNG figures of `attnpat show`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import attnpat
from attnpat import draw
from attnpat.cli import main

PER_HEAD = """\
pattern heads(ws: list = [1, 2]):
    mask causal and q - k < ws[h]
"""


def _inputs(pattern, q_len: int, kv_len: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, axis in pattern.inputs.items():
        if axis == "b":   # one value per sequence: a length
            out[name] = int(rng.integers(0, kv_len + 1))
            continue
        n = kv_len if axis == "k" else q_len
        out[name] = np.sort(rng.integers(0, 4, n)) if axis == "k" else rng.integers(0, n, n)
    return out


@pytest.mark.parametrize("name", attnpat.library_names())
@pytest.mark.parametrize("q_len, kv_len, head", [(37, 53, 1), (64, 64, 0)])
def test_mask_cells_match_the_reference(name, q_len, kv_len, head):
    """mask_cells evaluates through the semantics table's numpy column; the reference is the oracle."""
    p = attnpat.load(name)
    inputs = _inputs(p, q_len, kv_len)
    dense = p.dense_mask(q_len, kv_len, heads=head + 1, **inputs)[0, head].numpy()
    grid = draw.mask_cells(p, q_len, kv_len, head=head, inputs=inputs)
    assert (grid.counts.astype(bool) == dense).all()
    coarse = draw.mask_cells(p, q_len, kv_len, row_step=8, col_step=4, head=head, inputs=inputs)
    assert (coarse.counts == draw.pool(dense, 8, 4)).all()


def test_mask_cells_bad_list_index_and_input_read():
    p = attnpat.parse(PER_HEAD)
    with pytest.raises(attnpat.ArgumentError, match="list index 2 is out of range"):
        draw.mask_cells(p, 4, 4, head=2)
    p = attnpat.parse("pattern p():\n    input doc: int[k]\n    mask doc[q] == doc[k]\n")
    with pytest.raises(attnpat.InputError, match=r"'doc\[q\]' reads query positions"):
        draw.mask_cells(p, 4, 3, q_offset=1, inputs={"doc": [0, 0, 1]})


def _png_size(path) -> tuple[int, int]:
    import struct
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _colours(path) -> set[tuple[int, int, int]]:
    from matplotlib.image import imread
    rgb = (imread(str(path))[..., :3] * 255).round().astype(int)
    return {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_png_element_level(tmp_path, capsys):
    out = tmp_path / "sw.png"
    assert main(["show", "sliding_window", "--set", "window=6", "--q-len", "24", "--png", str(out)]) == 0
    text = capsys.readouterr().out
    w, h = _png_size(out)
    assert f"wrote {out}: {w}x{h} pixels, one cell per element" in text
    colours = _colours(out)
    empty, partial, full = (_hex(c) for c in draw._COLOURS)
    assert full in colours and empty in colours and partial not in colours   # elements are all or nothing


def test_png_tile_level_shows_partial_tiles(tmp_path, capsys):
    out = tmp_path / "big.png"
    assert main(["show", "sliding_window", "--q-len", "65536", "--png", str(out), "--width", "16",
                 "--height", "8"]) == 0
    text = capsys.readouterr().out
    assert "one cell per 512x512 tile (EMPTY / PARTIAL / FULL)" in text
    colours = _colours(out)
    assert {_hex(c) for c in draw._COLOURS} <= colours


def test_png_per_head_panels(tmp_path, capsys):
    path = tmp_path / "h.attn"
    path.write_text(PER_HEAD)
    out = tmp_path / "heads.png"
    # the pattern reads h: one panel per head, stopping where its list runs out
    assert main(["show", str(path), "--q-len", "8", "--png", str(out)]) == 0
    assert "2 panels (heads 0..1)" in capsys.readouterr().out
    one_w, _ = _png_size(out)
    assert main(["show", "per_head", "--q-len", "4096", "--png", str(out), "--width", "16", "--height", "8"]) == 0
    assert "4 panels (heads 0..3)" in capsys.readouterr().out
    assert _png_size(out)[0] > one_w
    # --heads asks for panels explicitly; past the list it is an error
    assert main(["show", str(path), "--q-len", "8", "--png", str(out), "--heads", "3"]) == 1
    assert "list index 2 is out of range" in capsys.readouterr().err
    assert main(["show", "causal", "--heads", "2"]) == 1
    assert "use it with --png" in capsys.readouterr().err


def test_png_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "x.png"
    assert main(["show", "causal", "--png", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'attnpat[plot]'" in err and not out.exists()


def test_png_layout_and_ticks():
    assert draw.png_layout(24, 24) == (1, 1)
    assert draw.png_layout(1024, 512) == (1, 1)
    assert draw.png_layout(65536, 65536) == (512, 512)
    assert draw._tick_step(65536, 8) == 8192 and draw._tick_step(24, 8) == 4
    assert draw._position_labels(8192)(16384) == "16K" and draw._position_labels(512)(1536) == "1536"
