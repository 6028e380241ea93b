"""Block masks in closed form: sound for every pattern, tight for the library, work ∝ non-empty tiles."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import attnpat
from attnpat import EmptyPatternError
from attnpat.compiler.ir import And, Lin, Mod, Or
from attnpat.compiler.lower import TileKind
from attnpat.compiler.lower.cells import cell_sizes
from strategies import cases, chunk_patterns


def _dense_tiles(mask: np.ndarray, bq: int, bk: int) -> np.ndarray:
    """Tile kinds from a dense mask [B, H, Q, K] (the brute-force oracle); the last tiles may be ragged."""
    B, H, Q, K = mask.shape
    nqb, nkb = -(-Q // bq), -(-K // bk)
    grid = np.zeros((B, H, nqb * bq, nkb * bk), np.int8)        # padding: -1, neither allowed nor masked
    grid[...] = -1
    grid[:, :, :Q, :K] = mask
    tiles = grid.reshape(B, H, nqb, bq, nkb, bk)
    some = (tiles == 1).any((3, 5))
    every = ~(tiles == 0).any((3, 5))
    return np.where(every, TileKind.FULL, np.where(some, TileKind.PARTIAL, TileKind.EMPTY)).astype(np.uint8)


def _per_batch_tiles(bm, batch: int) -> np.ndarray:
    return np.stack([bm.to_dense(batch=b) for b in range(batch)])


def _check_transpose(bm) -> None:
    for v in range(bm.num_variants):
        for ptr, idx, tptr, tidx in ((bm.partial_ptr, bm.partial_idx, bm.t_partial_ptr, bm.t_partial_idx),
                                     (bm.full_ptr, bm.full_idx, bm.t_full_ptr, bm.t_full_idx)):
            rows = {(i, int(j)) for i in range(bm.num_q_blocks) for j in idx[ptr[v, i]:ptr[v, i + 1]]}
            cols = {(int(i), j) for j in range(bm.num_k_blocks) for i in tidx[tptr[v, j]:tptr[v, j + 1]]}
            assert rows == cols
            for i in range(bm.num_q_blocks):
                seg = idx[ptr[v, i]:ptr[v, i + 1]]
                assert (np.diff(seg) > 0).all(), "key blocks of a row are sorted and distinct"


blocks = st.sampled_from([16, 32, 48, 64, 128]) | st.integers(1, 24)


@given(case=cases(max_len=150, max_heads=3), bq=blocks, bk=blocks)
def test_block_masks_are_sound_for_random_patterns(case, bq, bk):
    s = case.shape
    try:
        case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    bm = case.pattern.block_mask(s.q_len, s.kv_len, block_q=bq, block_k=bk, heads=s.heads, batch=s.batch,
                                 q_offset=s.q_offset, **case.inputs)
    got = _per_batch_tiles(bm, s.batch)
    want = _dense_tiles(case.dense().numpy(), bq, bk)
    assert got.shape == want.shape
    # sound: an EMPTY tile has no allowed pair, a FULL tile only allowed pairs
    assert not ((got == TileKind.EMPTY) & (want != TileKind.EMPTY)).any(), case.pattern.canonical.text
    assert not ((got == TileKind.FULL) & (want != TileKind.FULL)).any(), case.pattern.canonical.text
    # and with the point-wise refinement the small grids drawn here come out exact
    assert (got == want).all(), case.pattern.canonical.text
    _check_transpose(bm)


LIBRARY_CASES = [
    ("sliding_window", dict(window=37)), ("sliding_window", {}), ("causal", {}), ("full", {}),
    ("local", dict(radius=21)), ("longformer", dict(window=20, globals={0, 1, 70, 200})),
    ("dilated", dict(window=10, dilation=3)), ("dilated_local", dict(radius=8, dilation=4)),
    ("streaming_llm", dict(sinks=4, window=50)), ("prefix_lm", dict(prefix=90)),
    ("chunked_causal", dict(chunk=48)), ("per_head", dict(windows=[16, 40, 16, 100])),
    ("bigbird", dict(block=32, random_blocks=2, key_blocks=8)),
    ("document", {}), ("document_full", {}), ("document_sliding_window", dict(window=30)),
    ("longformer_flags", dict(window=12)), ("prefix_lm_dynamic", {}),
]


def _inputs(pattern, q_len, kv_len, batch):
    rng = np.random.default_rng(0)
    out = {}
    for name, axis in pattern.inputs.items():
        n = kv_len if axis == "k" else q_len
        if name == "doc":
            out[name] = torch.tensor(np.sort(rng.integers(0, 6, size=(batch, n)), axis=1))
        elif name == "is_global":
            out[name] = torch.tensor((rng.random(n) < 0.03).astype(np.int64))
        else:
            out[name] = torch.tensor(rng.integers(0, n, size=n))
    return out


@pytest.mark.parametrize("name, params", LIBRARY_CASES, ids=lambda x: x if isinstance(x, str) else "")
@pytest.mark.parametrize("q_len, kv_len, bq, bk", [(300, 300, 64, 32), (250, 333, 128, 64), (77, 300, 16, 48)])
def test_library_block_masks_are_exact(name, params, q_len, kv_len, bq, bk):
    pattern = attnpat.load(name, **params)
    heads, batch = 4, 2
    inputs = _inputs(pattern, q_len, kv_len, batch)
    bm = pattern.block_mask(q_len, kv_len, block_q=bq, block_k=bk, heads=heads, batch=batch, **inputs)
    want = _dense_tiles(pattern.dense_mask(q_len, kv_len, heads=heads, batch=batch, **inputs).numpy(), bq, bk)
    assert (_per_batch_tiles(bm, batch) == want).all()
    _check_transpose(bm)
    counts = bm.counts()
    assert counts["FULL"] == int((want == TileKind.FULL).sum())
    assert counts["PARTIAL"] == int((want == TileKind.PARTIAL).sum())


def test_equal_heads_share_storage():
    pattern = attnpat.load("per_head", windows=[16, 40, 16, 40])
    bm = pattern.block_mask(256, 256, heads=8)
    assert bm.num_variants == 2 and bm.variant.shape == (1, 8)
    assert list(bm.variant[0]) == [0, 1, 0, 1, 0, 1, 0, 1]
    assert attnpat.load("sliding_window").block_mask(256, 256, heads=16, batch=3).num_variants == 1
    docs = torch.tensor([[0] * 100 + [1] * 156, [0] * 200 + [1] * 56])
    assert attnpat.load("document").block_mask(256, 256, heads=4, batch=2, doc=docs).num_variants == 2


def test_work_grows_with_non_empty_tiles_not_n_squared():
    pattern = attnpat.load("sliding_window", window=256)
    for n in (1 << 14, 1 << 17, 1 << 20):
        bm = pattern.block_mask(n, n, block_q=128, block_k=128)
        c = bm.counts()
        nonempty = c["FULL"] + c["PARTIAL"]
        assert bm.stats["candidate_tiles"] <= nonempty + n // 128     # at most one spare tile per row
        stored = sum(a.nbytes for a in (bm.partial_idx, bm.full_idx, bm.t_partial_idx, bm.t_full_idx))
        assert stored <= 16 * nonempty
    start = time.perf_counter()
    pattern.block_mask(1 << 20, 1 << 20, block_q=128, block_k=128)
    assert time.perf_counter() - start < 2.0     # a guard against N^2 regressions, not a benchmark


def test_document_masks_from_ids_are_linear_time():
    n = 1 << 18
    ids = torch.repeat_interleave(torch.arange(64), n // 64)
    start = time.perf_counter()
    bm = attnpat.load("document").block_mask(n, n, block_q=128, block_k=128, doc=ids)
    assert time.perf_counter() - start < 3.0
    c = bm.counts()
    blocks_per_doc = n // 64 // 128
    assert c["FULL"] + c["PARTIAL"] == 64 * blocks_per_doc * (blocks_per_doc + 1) // 2


def test_to_dense_layout_and_bad_block_sizes():
    bm = attnpat.load("causal").block_mask(100, 100, block_q=32, block_k=16, heads=2)
    grid = bm.to_dense()
    assert grid.shape == (2, 4, 7) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == TileKind.PARTIAL and grid[0, 3, 0] == TileKind.FULL and grid[0, 0, 6] == TileKind.EMPTY
    with pytest.raises(attnpat.ArgumentError, match="block_q must be a positive int"):
        attnpat.load("causal").block_mask(100, 100, block_q=0)


# -- conditions constant on chunk cells (q // c, k // c: BigBird's random blocks) -------------------


def _exact_without_points(ir) -> bool:
    """Whether the lowering must decide every tile of `ir` without evaluating points: the IR is constant on
    chunk cells, or an and/or of such conditions with one linear or modular atom exact on any rectangle."""
    if cell_sizes(ir) is not None:
        return True
    if not isinstance(ir, (And, Or)):
        return False
    others = [a for a in ir.args if cell_sizes(a) is None]
    return len(others) == 1 and isinstance(others[0], (Lin, Mod)) and abs(others[0].cq) <= 1 \
        and abs(others[0].ck) <= 1


tile_sizes = st.integers(1, 128) | st.sampled_from([1, 2, 16, 32, 64, 128])


@given(gen=chunk_patterns(), q_len=st.integers(1, 160), kv_len=st.integers(1, 160), heads=st.integers(1, 3),
       q_offset=st.none() | st.integers(-20, 170), bq=tile_sizes, bk=tile_sizes)
def test_chunk_constant_patterns_lower_exactly(gen, q_len, kv_len, heads, q_offset, bq, bk):
    pattern = gen.load()
    try:
        pattern.canonical
    except EmptyPatternError:
        assume(False)
    bm, sources = pattern.lowering(q_len, kv_len, block_q=bq, block_k=bk, heads=heads, q_offset=q_offset)
    want = _dense_tiles(pattern.dense_mask(q_len, kv_len, heads=heads, q_offset=q_offset).numpy(), bq, bk)
    assert (_per_batch_tiles(bm, 1) == want).all(), pattern.canonical.text
    _check_transpose(bm)
    if all(_exact_without_points(ir) for ir, _ in sources):
        # exact from one evaluation per chunk cell (and the closed form), not from point-wise refinement
        assert bm.stats["points_refined"] == 0, pattern.canonical.text


@pytest.mark.parametrize("q_len, kv_len, q_offset, bq, bk", [
    (1024, 1024, None, 128, 64),      # tiles a multiple of the chunk (32)
    (700, 1100, None, 16, 24),        # tiles dividing / not dividing the chunk, ragged, bottom-right aligned
    (600, 900, 77, 48, 80),           # chunk boundaries inside tiles, an offset that is no multiple of 32
    (300, 200, None, 100, 7),         # more queries than keys: positions from -100
])
def test_bigbird_is_exact_without_refinement(q_len, kv_len, q_offset, bq, bk):
    pattern = attnpat.load("bigbird", block=32, random_blocks=3, key_blocks=16, seed=7)
    bm = pattern.block_mask(q_len, kv_len, block_q=bq, block_k=bk, heads=2, q_offset=q_offset)
    want = _dense_tiles(pattern.dense_mask(q_len, kv_len, heads=2, q_offset=q_offset).numpy(), bq, bk)
    assert (_per_batch_tiles(bm, 1) == want).all()
    assert bm.stats["points_refined"] == 0
    _check_transpose(bm)


@pytest.mark.parametrize("q_len, bq, bk", [(150, 64, 60), (30, 7, 60), (300, 64, 60), (200, 50, 200)])
def test_chunk_cells_are_evaluated_only_inside_the_sequence(q_len, bq, bk):
    # The list has one entry per key chunk: a point past the last key (k = 200) would index it out of range.
    mask = "[1, 0, 1, 0][k // 50] == 1 or hash(q // 50, k // 50) % 3 == 0"
    pattern = attnpat.parse(f"pattern main():\n    mask {mask}\n", "main")
    bm = pattern.block_mask(q_len, 200, block_q=bq, block_k=bk)
    assert (_per_batch_tiles(bm, 1) == _dense_tiles(pattern.dense_mask(q_len, 200).numpy(), bq, bk)).all()
    assert bm.stats["points_refined"] == 0


def test_bigbird_at_128k_tokens_is_exact_and_fast():
    n, heads, block = 1 << 17, 2, 64
    pattern = attnpat.load("bigbird", block=block)
    pattern.block_mask(1024, 1024, heads=heads)          # simplification and per-head variants, off the clock
    start = time.perf_counter()
    bm = pattern.block_mask(n, n, block_q=128, block_k=64, heads=heads)
    elapsed = time.perf_counter() - start
    # The same pattern with block=1 is, point for point, the 64 x 64 cells of this one: its dense mask at
    # n / 64 = 2048 gives each cell's value, from the dense reference evaluator (torch), not the lowering.
    cells = attnpat.load("bigbird", block=1).dense_mask(n // block, n // block, heads=heads)[0].numpy()
    cells = cells.reshape(heads, n // 128, 2, n // 64)    # a 128 x 64 tile is 2 x 1 cells
    want = np.where(cells.all(2), TileKind.FULL, np.where(cells.any(2), TileKind.PARTIAL, TileKind.EMPTY))
    assert bm.to_dense(batch=0).shape == want.shape and (bm.to_dense(batch=0) == want).all()
    assert bm.stats["points_refined"] == 0
    assert bm.stats["cells_evaluated"] == heads * (n // 128) * (n // 64) * 2    # one per cell per head
    assert elapsed < 4.0      # a guard against point-wise work (2 x 2M tiles, 2 x 4M cells), not a benchmark

