"""compiler/analysis.py: every number of `analyze` against brute force on the dense mask (small shapes),
the closed forms, and a timing guard against O(N^2) work at 64K tokens; counting PARTIAL tiles cell by
cell (masks on q // c and k // c) against counting them point by point, and bigbird at 128K tokens."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import attnpat
from attnpat import EmptyPatternError
from attnpat.compiler import analysis
from attnpat.compiler.analysis import analyze, causal_pairs, receptive_field
from attnpat.compiler.lower import cells as lower_cells
from attnpat.compiler.lower import chunk_split
from strategies import chunk_patterns

DOC = [0] * 9 + [1] * 3 + [2] * 14 + [3] * 1 + [4] * 14   # 41 keys

# (id, pattern, params, q_len, kv_len, heads, batch, block_q, block_k, inputs, receptive field exact?)
CASES = [
    ("causal", "causal", {}, 37, 37, 1, 1, 8, 4, {}, True),
    ("causal-decode", "causal", {}, 13, 41, 1, 1, 8, 8, {}, True),
    ("sliding", "sliding_window", {"window": 5}, 37, 37, 1, 1, 8, 4, {}, True),
    ("sliding-decode", "sliding_window", {"window": 6}, 9, 41, 1, 1, 4, 8, {}, True),
    ("local", "local", {"radius": 3}, 33, 33, 1, 1, 8, 8, {}, True),
    ("chunked", "chunked_causal", {"chunk": 7}, 37, 37, 1, 1, 8, 4, {}, True),
    ("prefix_lm", "prefix_lm", {"prefix": 5}, 30, 30, 1, 1, 8, 8, {}, True),
    ("full", "full", {}, 20, 27, 1, 1, 8, 8, {}, True),
    ("dilated", "dilated", {"window": 4, "dilation": 3}, 37, 37, 1, 1, 8, 8, {}, False),
    ("dilated_local", "dilated_local", {"radius": 2, "dilation": 2}, 25, 30, 1, 1, 4, 8, {}, False),
    ("streaming", "streaming_llm", {"sinks": 2, "window": 4}, 37, 37, 1, 1, 8, 4, {}, False),
    ("longformer", "longformer", {"window": 4, "globals": frozenset({0, 9})}, 33, 33, 1, 1, 8, 8, {}, False),
    ("bigbird", "bigbird", {"block": 2, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2,
                            "key_blocks": 8, "seed": 0}, 24, 24, 2, 1, 4, 4, {}, False),
    ("per_head", "per_head", {"windows": [1, 3, 6]}, 29, 29, 5, 1, 8, 4, {}, True),
    ("per_head-decode", "per_head", {"windows": [2, 7]}, 11, 29, 3, 2, 4, 8, {}, True),
    ("document", "document", {}, 41, 41, 1, 1, 8, 4, {"doc": DOC}, True),
    ("document-decode", "document", {}, 17, 41, 2, 1, 8, 8, {"doc": DOC}, True),
    ("document-batch", "document", {}, 41, 41, 1, 2, 16, 8,
     {"doc": [DOC, sorted(i // 5 for i in range(41))]}, True),
    ("doc_window", "document_sliding_window", {"window": 4}, 41, 41, 1, 1, 8, 8, {"doc": DOC}, True),
    ("doc_full", "document_full", {}, 41, 41, 1, 1, 8, 8, {"doc": DOC}, True),
    ("prefix_dynamic", "prefix_lm_dynamic", {}, 24, 24, 1, 2, 8, 8,
     {"prefix_len": [[3] * 24, [9] * 24]}, True),
    ("flags", "longformer_flags", {"window": 4}, 30, 30, 1, 1, 8, 8,
     {"is_global": [1 if i in (4, 17) else 0 for i in range(30)]}, False),
]


def _tensor_inputs(inputs):
    return {k: torch.tensor(v) for k, v in inputs.items()}


def _load(name, params):
    return attnpat.load(name, **params)


def brute(pattern, q_len, kv_len, heads, batch, block_q, block_k, inputs, layers):
    """Every number of the analysis, from the dense [B, H, Q, K] mask."""
    dense = pattern.dense_mask(q_len, kv_len, batch=batch, heads=heads, **inputs).numpy()
    q_start = kv_len - q_len
    qpos = q_start + np.arange(q_len)
    allowed = int(dense.sum())
    counts = dense.sum(-1)                                   # [B, H, Q]
    lookback = lookahead = None
    max_keys = int(counts.max()) if counts.size else 0
    for b in range(batch):
        for h in range(heads):
            for i in range(q_len):
                ks = np.nonzero(dense[b, h, i])[0]
                if len(ks):
                    back, ahead = qpos[i] - ks.min(), ks.max() - qpos[i]
                    lookback = max(back, 0) if lookback is None else max(lookback, back)
                    lookahead = max(ahead, 0) if lookahead is None else max(lookahead, ahead)
    # tiles: pool the dense mask
    kinds = {"EMPTY": 0, "PARTIAL": 0, "FULL": 0}
    tile_pairs = 0
    for i in range(0, q_len, block_q):
        for j in range(0, kv_len, block_k):
            t = dense[:, :, i:i + block_q, j:j + block_k]
            n = t.sum(axis=(2, 3))
            area = t.shape[2] * t.shape[3]
            kinds["EMPTY"] += int((n == 0).sum())
            kinds["FULL"] += int((n == area).sum())
            kinds["PARTIAL"] += int(((n > 0) & (n < area)).sum())
            tile_pairs += int((n > 0).sum()) * area
    # receptive field: the exact reachable sets, heads merged, the layers below on the square mask
    square = dense if q_start == 0 else pattern.dense_mask(kv_len, kv_len, batch=batch, heads=heads,
                                                           q_offset=0, **inputs).numpy()
    field = 0
    last = q_start + q_len - 1
    for b in range(batch):
        reach = {last} | set(np.nonzero(dense[b, :, -1].any(0))[0].tolist())
        for _ in range(layers - 1):
            new = set(reach)
            for p in reach:
                if 0 <= p < kv_len:
                    new |= set(np.nonzero(square[b, :, p].any(0))[0].tolist())
            reach = new
        field = max(field, last - min(reach))
    return dict(allowed=allowed, total=dense.size, lookback=lookback, lookahead=lookahead, max_keys=max_keys,
                empty_rows=int((counts == 0).sum()), kinds=kinds, tile_pairs_tight=tile_pairs, field=field)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layers", [1, 3])
def test_against_dense(case, layers):
    _, name, params, q_len, kv_len, heads, batch, bq, bk, raw_inputs, exact_field = case
    pattern = _load(name, params)
    inputs = _tensor_inputs(raw_inputs)
    a = analyze(pattern, q_len, kv_len, heads=heads, batch=batch, block_q=bq, block_k=bk, layers=layers,
                **inputs)
    ref = brute(pattern, q_len, kv_len, heads, batch, bq, bk, inputs, layers)

    assert a.allowed == ref["allowed"] and a.total == ref["total"]
    assert a.density == Fraction(ref["allowed"], ref["total"])
    assert a.density_float == pytest.approx(ref["allowed"] / ref["total"])
    assert (a.lookback, a.lookahead) == (ref["lookback"], ref["lookahead"])
    assert a.max_keys == ref["max_keys"]
    assert a.empty_rows == ref["empty_rows"] and a.all_rows_attend == (ref["empty_rows"] == 0)
    assert a.rows == batch * heads * q_len

    # Tiles are the block mask's; a PARTIAL tile that is in fact all or nothing is counted as loose.
    bm = pattern.block_mask(q_len, kv_len, block_q=bq, block_k=bk, heads=heads, batch=batch, **inputs)
    assert a.tiles == bm.counts()
    assert a.tiles["PARTIAL"] - a.loose_partial == ref["kinds"]["PARTIAL"]
    assert a.tiles["FULL"] <= ref["kinds"]["FULL"]
    assert a.tile_pairs >= ref["tile_pairs_tight"] >= a.allowed
    if a.loose_partial == 0:
        assert a.tiles == ref["kinds"] and a.tile_pairs == ref["tile_pairs_tight"]
    assert a.tile_efficiency == pytest.approx(a.allowed / a.tile_pairs)

    # FLOPs against full causal attention, counted exactly.
    causal = attnpat.load("causal").dense_mask(q_len, kv_len).numpy().sum() * batch * heads
    assert a.causal_pairs == causal
    assert a.flops_kernel == 4 * a.head_dim * a.tile_pairs
    assert a.kernel_vs_causal == pytest.approx(a.tile_pairs / causal)
    assert a.ideal_vs_causal == pytest.approx(a.allowed / causal)

    # The receptive field: exact for interval patterns, an upper bound otherwise.
    if exact_field:
        assert a.receptive_field == ref["field"]
    else:
        assert a.receptive_field >= ref["field"]


def test_receptive_field_of_a_sliding_window():
    """A window of W keys reaches W - 1 further back per layer: min(q, L * (W - 1)) after L layers."""
    for n, w in ((200, 5), (257, 16), (64, 64), (100, 1)):
        p = attnpat.load("sliding_window", window=w)
        for layers in (1, 2, 3, 7, 50):
            assert analyze(p, n, layers=layers, block_q=16, block_k=8).receptive_field == \
                min(n - 1, layers * (w - 1))
            # decoding one token with a cache: the layers below are the full self-attention
            assert analyze(p, 1, n, layers=layers, block_q=16, block_k=8).receptive_field == \
                min(n - 1, layers * (w - 1))


def test_receptive_field_helper():
    earliest = np.array([0, 0, 1, 2, 3, 4])
    latest = np.array([0, 1, 2, 3, 4, 5])
    assert receptive_field(5, 4, 5, earliest, latest, 1) == 1
    assert receptive_field(5, 4, 5, earliest, latest, 3) == 3
    assert receptive_field(5, 4, 5, earliest, latest, 100) == 5
    # the last query sees nothing (in every layer): nothing reaches it
    assert receptive_field(5, 1, 0, np.array([0, 0, 1, 2, 3, 9]), np.array([0, 1, 2, 3, 4, -1]), 4) == 0
    # a query below the last one that looks ahead of it widens the interval upwards, then back
    earliest = np.array([0, 0, 0, 3, 1, 4, 5])
    latest = np.array([0, 1, 2, 6, 4, 5, 6])
    assert receptive_field(6, 5, 6, earliest, latest, 2) == 2    # [5, 6] -> [4, 6]
    assert receptive_field(6, 5, 6, earliest, latest, 3) == 5    # [4, 6] -> [1, 6]


@pytest.mark.parametrize("q_len, kv_len, q_start", [
    (5, 5, 0), (3, 10, 7), (10, 3, -7), (4, 6, 0), (6, 4, 3), (4, 4, -10), (4, 4, 10), (1, 1, 0), (0, 4, 0),
])
def test_causal_pairs_closed_form(q_len, kv_len, q_start):
    brute_count = sum(min(max(q_start + i + 1, 0), kv_len) for i in range(q_len))
    assert causal_pairs(q_len, kv_len, q_start) == brute_count


def test_q_offset_and_empty_rows():
    p = attnpat.load("sliding_window", window=3)
    a = analyze(p, 6, 10, q_offset=-2, block_q=4, block_k=4)
    dense = p.dense_mask(6, 10, q_offset=-2).numpy()
    assert a.q_start == -2
    assert a.allowed == dense.sum()
    assert a.empty_rows == 2 and not a.all_rows_attend     # queries at positions -2 and -1 see no key
    assert a.causal_pairs == causal_pairs(6, 10, -2)


def test_report_and_json():
    a = analyze(attnpat.load("sliding_window", window=64), 1024, layers=2)
    text = str(a)
    assert text.splitlines()[0] == "sliding_window(window=64)  q_len=1024 kv_len=1024"
    for word in ("canonical", "0 <= q - k <= 63", "density", "tiles", "efficiency", "FLOPs", "look-back",
                 "63 positions: a decoder's KV cache needs 64 entries", "empty rows", "receptive",
                 "after 2 layers: 126 positions back"):
        assert word in text, word
    d = json.loads(json.dumps(a.to_dict()))
    assert d["allowed"] == a.allowed and d["density_exact"] == f"{a.density.numerator}/{a.density.denominator}"
    assert d["kv_cache"] == 64 and d["receptive_field"] == 126 and d["tiles"]["FULL"] == a.tiles["FULL"]
    assert d["flops"]["kernel"] == a.flops_kernel


def test_string_pattern_and_errors():
    a = analyze("causal", 16, block_q=4, block_k=4)
    assert a.allowed == 16 * 17 // 2 and a.lookback == 15 and a.lookahead == 0
    with pytest.raises(attnpat.ArgumentError):
        analyze("causal", 16, layers=0)
    with pytest.raises(attnpat.ArgumentError):
        analyze("causal", 16, block_q=0)
    with pytest.raises(attnpat.InputError):
        analyze("document", 16)
    # int[q] inputs exist only for the analysed rows: no receptive field below a decode step
    a = analyze("prefix_lm_dynamic", 4, 16, layers=2, prefix_len=torch.tensor([3, 3, 3, 3]))
    assert a.receptive_field is None and "int[q]" in a.receptive_note
    assert "unknown" in str(a)


def test_64k_sliding_window_is_fast():
    """Not a benchmark: a guard against work growing like N^2 (64K^2 points would take minutes)."""
    p = attnpat.load("sliding_window", window=4096)
    p.canonical   # the one-off sympy simplification is not what is timed
    start = time.perf_counter()
    a = analyze(p, 65536, layers=8)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    assert a.allowed == 4096 * 4097 // 2 + (65536 - 4096) * 4096
    assert a.receptive_field == 8 * 4095 and a.lookback == 4095
    # decoding: one query over a 64K cache analyses the layers below as a 64K self-attention
    start = time.perf_counter()
    a = analyze(p, 1, 65536, layers=4)
    assert time.perf_counter() - start < 2.0
    assert a.allowed == 4096 and a.receptive_field == 4 * 4095


def test_chunking_does_not_change_anything(monkeypatch):
    """Several tiles per numpy call, and tiles larger than one call (split by rows), give the same numbers."""
    from attnpat.compiler import analysis
    p = attnpat.load("document_sliding_window", window=9)
    doc = torch.tensor([i // 23 for i in range(150)])
    whole = analyze(p, 150, block_q=32, block_k=16, layers=3, doc=doc)
    for elements in (600, 100, 7):      # 1 tile per call; then 6 and 1 row(s) of a tile per call
        monkeypatch.setattr(analysis, "_CHUNK_ELEMENTS", elements)
        assert analyze(p, 150, block_q=32, block_k=16, layers=3, doc=doc) == whole
    assert whole.allowed == int(p.dense_mask(150, 150, doc=doc).sum())


# -- PARTIAL tiles counted cell by cell (conditions on q // c and k // c) ----------------------------


@contextlib.contextmanager
def _cell_gain(gain):
    """analysis._CELL_GAIN for the block: 0 counts cell by cell whenever a mask allows it, None never."""
    old = analysis._CELL_GAIN
    analysis._CELL_GAIN = gain
    try:
        yield
    finally:
        analysis._CELL_GAIN = old


def _without_cost(a):
    return dataclasses.replace(a, evaluated=0)


tile_sizes = st.integers(1, 128) | st.sampled_from([1, 2, 16, 32, 64, 128])


@given(gen=chunk_patterns(), q_len=st.integers(1, 160), kv_len=st.integers(1, 160), heads=st.integers(1, 3),
       q_offset=st.none() | st.integers(-20, 170), bq=tile_sizes, bk=tile_sizes, layers=st.integers(1, 3))
def test_cells_count_exactly_like_points(gen, q_len, kv_len, heads, q_offset, bq, bk, layers):
    """Random masks on q // c and k // c (alone, or joined with one linear or modular condition): every field
    of the analysis is the same counted per chunk cell as point by point, and the dense mask agrees."""
    pattern = gen.load()
    try:
        pattern.canonical
    except EmptyPatternError:
        assume(False)
    kw = dict(heads=heads, q_offset=q_offset, block_q=bq, block_k=bk, layers=layers)
    with _cell_gain(0):
        cells = analyze(pattern, q_len, kv_len, **kw)
    with _cell_gain(None):
        points = analyze(pattern, q_len, kv_len, **kw)
    assert _without_cost(cells) == _without_cost(points), pattern.canonical.text

    _, sources = pattern.lowering(q_len, kv_len, block_q=bq, block_k=bk, heads=heads, q_offset=q_offset)
    splits = [chunk_split(ir) for ir, _ in sources]
    if layers == 1 and all(sp is not None and sp[2] is None for sp in splits):
        assert cells.evaluated == 0          # wholly constant on cells: no point evaluated
    if all(sp is not None for sp in splits):
        assert cells.evaluated <= points.evaluated

    dense = pattern.dense_mask(q_len, kv_len, heads=heads, q_offset=q_offset)[0].numpy()   # [H, Q, K]
    qpos = cells.q_start + np.arange(q_len)
    counts = dense.sum(-1)
    assert cells.allowed == int(dense.sum()) and cells.max_keys == int(counts.max())
    assert cells.empty_rows == int((counts == 0).sum())
    some = counts > 0
    if some.any():
        first = np.where(some, dense.argmax(-1), 0)
        last = np.where(some, kv_len - 1 - dense[..., ::-1].argmax(-1), 0)
        assert cells.lookback == max(int((qpos - first)[some].max()), 0)
        assert cells.lookahead == max(int((last - qpos)[some].max()), 0)
    else:
        assert cells.lookback is None and cells.lookahead is None


def test_cells_count_in_slices(monkeypatch):
    """Tiles taken a few cells at a time, and open cells evaluated a few points at a time, change nothing."""
    p = attnpat.parse("pattern main():\n    mask hash(3, q // 6, k // 10) % 4 < 1 or q - k in range(0, 9)\n",
                      "main")
    whole = analyze(p, 150, 170, block_q=32, block_k=16, layers=2)
    with _cell_gain(None):
        points = analyze(p, 150, 170, block_q=32, block_k=16, layers=2)
    assert _without_cost(points) == _without_cost(whole) and 0 < whole.evaluated < points.evaluated
    for cells, elements in ((1, 1 << 22), (5, 7), (37, 100)):
        monkeypatch.setattr(lower_cells, "CELL_SLICE", cells)   # the lowering's and the analysis's slices
        monkeypatch.setattr(analysis, "_CHUNK_ELEMENTS", elements)
        assert analyze(p, 150, 170, block_q=32, block_k=16, layers=2) == whole
    assert whole.allowed == int(p.dense_mask(150, 170).sum())


def test_bigbird_at_128k_tokens_analyses_fast_without_points(capsys):
    """BigBird is constant on its 64 x 64 blocks: its 2 x 190K PARTIAL tiles at 128K tokens are counted two
    cells each, no point one by one (point by point that was 3.1G points and over 100 s). Checked against
    the cells themselves, from the dense reference of the same pattern with block=1 at 2048 positions."""
    import re

    from attnpat.cli import main

    n, heads, block = 1 << 17, 2, 64
    assert main(["explain", "bigbird", "--q-len", str(n), "--heads", str(heads)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(r"\(analysed in ([0-9.]+) s; 0 points evaluated one by one, inside partial tiles\)",
                         line)
    assert found, line
    assert float(found.group(1)) < 6.0, line    # a guard against point-wise work, not a benchmark (~1.5 s)

    pattern = attnpat.load("bigbird", block=block)
    a = analyze(pattern, n, heads=heads)
    assert a.evaluated == 0
    m = n // block
    cells = attnpat.load("bigbird", block=1).dense_mask(m, m, heads=heads)[0].numpy()   # [H, m, m]
    per_row = cells.sum(-1) * block                       # keys of every query of a block
    assert a.allowed == int(cells.sum()) * block * block
    assert a.max_keys == int(per_row.max()) and a.empty_rows == int((per_row == 0).sum()) * block
    i = np.arange(m)
    first, last = cells.argmax(-1), m - 1 - cells[..., ::-1].argmax(-1)
    assert a.lookback == int((i * block + block - 1 - first * block).max())
    assert a.lookahead == int((last * block + block - 1 - i * block).max())
    assert a.receptive_field == n - 1 - int(first[:, -1].min()) * block
    assert a.tiles["PARTIAL"] == int((cells.reshape(heads, m // 2, 2, m).sum(2) == 1).sum())
    assert a.loose_partial == 0


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cells_and_points_agree_on_the_library(case):
    """Every library case of test_against_dense, counted cell by cell wherever a part of the mask allows it
    (runtime inputs in the rest included) and point by point: the same analysis."""
    _, name, params, q_len, kv_len, heads, batch, bq, bk, raw_inputs, _ = case
    pattern = _load(name, params)
    kw = dict(heads=heads, batch=batch, block_q=bq, block_k=bk, layers=2, **_tensor_inputs(raw_inputs))
    with _cell_gain(0):
        cells = analyze(pattern, q_len, kv_len, **kw)
    with _cell_gain(None):
        points = analyze(pattern, q_len, kv_len, **kw)
    assert _without_cost(cells) == _without_cost(points)
    assert cells.evaluated <= points.evaluated


def test_cells_with_runtime_inputs_in_the_rest():
    """A chunk-constant group joined with a condition on a runtime input: the open cells are classified with
    the input's per-block bounds, then evaluated point by point where that proves nothing."""
    text = ("pattern main():\n    input doc: int[k]\n"
            "    mask (doc[q] == doc[k] and k <= q) {op} hash(5, q // 8, k // 12) % 3 == 0\n")
    doc = torch.tensor(DOC + [5] * 30)
    for op in ("and", "or"):
        p = attnpat.parse(text.format(op=op), "main")
        for q_len, bq, bk in ((71, 16, 8), (40, 7, 24)):
            with _cell_gain(0):
                cells = analyze(p, q_len, 71, block_q=bq, block_k=bk, layers=3, doc=doc)
            with _cell_gain(None):
                points = analyze(p, q_len, 71, block_q=bq, block_k=bk, layers=3, doc=doc)
            assert _without_cost(cells) == _without_cost(points)
            assert cells.allowed == int(p.dense_mask(q_len, 71, doc=doc).sum())
