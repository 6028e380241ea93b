"""Prepared block masks (runtime/blockmask.py) and the device lowerings of document patterns
(runtime/devlower.py, unsorted ids: runtime/devids.py) and of row-interval patterns (runtime/devrows.py):
tile by tile against the dense reference and the closed-form lowering, the prepared mask against the
per-call path, its checks against q and k, and the int32 range of runtime inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnpat
from attnpat import ArgumentError, InputError, packing
from attnpat.runtime import blockmask

DOC_PATTERNS = [
    ("document", {}), ("document_full", {}), ("document_sliding_window", {"window": 7}),
    ("document_sliding_window", {"window": 1}),
]
USER_PATTERNS = [
    "pattern p(c: int = 5):\n    input doc: int[k]\n    mask doc[k] == doc[q] and k >= c\n",
    "pattern p(w: int = 9):\n    input doc: int[k]\n"
    "    mask doc[q] == doc[k] and q - k < w and q - k > -3 and q >= 11\n",
    "pattern p():\n    input doc: int[k]\n    mask k <= q and doc[q] == doc[k] and k < 30\n",
]


def exact_tiles(dense: torch.Tensor, bq: int, bk: int) -> np.ndarray:
    """Tile kinds [B, H, QB, KB] straight from the dense mask: 0 no allowed pair, 2 all, 1 some."""
    B, H, N, M = dense.shape
    nqb, nkb = -(-N // bq), -(-M // bk)
    some = torch.zeros(B, H, nqb * bq, nkb * bk, dtype=torch.bool)
    some[..., :N, :M] = dense
    every = torch.ones_like(some)
    every[..., :N, :M] = dense
    some = some.view(B, H, nqb, bq, nkb, bk).any(5).any(3)
    every = every.view(B, H, nqb, bq, nkb, bk).all(5).all(3)
    return (some.to(torch.uint8) + every.to(torch.uint8)).numpy()


def _pattern(data):
    if data.draw(st.booleans()):
        name, params = data.draw(st.sampled_from(DOC_PATTERNS))
        return attnpat.load(name, **params)
    text = data.draw(st.sampled_from(USER_PATTERNS))
    return attnpat.parse(text)


@st.composite
def document_ids(draw, length: int):
    """Monotone document ids of `length` positions: runs of 1..24 equal ids, ascending or descending."""
    ids, d = [], draw(st.integers(-5, 5))
    step = draw(st.sampled_from([1, -1, 3]))
    while len(ids) < length:
        ids += [d] * draw(st.integers(1, 24))
        d += step * draw(st.integers(1, 2))
    return ids[:length]


@settings(deadline=None)
@given(st.data())
def test_device_lowering_is_exact_and_equals_the_closed_form(data):
    p = _pattern(data)
    kv_len = data.draw(st.integers(1, 90), label="kv_len")
    q_len = data.draw(st.integers(1, kv_len), label="q_len")
    q_offset = data.draw(st.one_of(st.none(), st.integers(0, kv_len - q_len)), label="q_offset")
    batch = data.draw(st.integers(1, 3), label="batch")
    per_batch = batch > 1 and data.draw(st.booleans())
    rows = [data.draw(document_ids(kv_len)) for _ in range(batch if per_batch else 1)]
    doc = torch.tensor(rows) if per_batch else torch.tensor(rows[0])
    bq, bk = data.draw(st.sampled_from([4, 8, 16, 32])), data.draw(st.sampled_from([4, 8, 16, 32]))
    heads = data.draw(st.integers(1, 2))
    m = attnpat.block_mask(p, q_len, kv_len, q_offset=q_offset, doc=doc)
    got = m.tile_kinds(bq, bk, batch, heads)
    assert m.builds == {(bq, bk): "device"}
    dense = p.dense_mask(q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, doc=doc)
    want = exact_tiles(dense, bq, bk)
    assert np.array_equal(got, want), (p.expression(), rows, q_len, q_offset, bq, bk)
    closed = p.block_mask(q_len, kv_len, block_q=bq, block_k=bk, batch=batch, heads=heads, q_offset=q_offset,
                          doc=doc)
    for b in range(batch):
        assert np.array_equal(got[b], closed.to_dense(batch=b))
    # coarser tiles come from these by coarsening, exactly
    fq, fk = data.draw(st.sampled_from([1, 2, 4])), data.draw(st.sampled_from([1, 2, 4]))
    coarse = m.tile_kinds(bq * fq, bk * fk, batch, heads)
    assert m.builds[(bq * fq, bk * fk)] == ("device" if fq == fk == 1 else f"derived from {bq}x{bk}")
    assert np.array_equal(coarse, exact_tiles(dense, bq * fq, bk * fk))


@pytest.mark.parametrize("name, inputs, how", [
    ("document", {"doc": torch.tensor([0, 1, 0, 1] * 10)}, "device"),                 # not monotone: ids joined
    ("document_sliding_window", {"doc": torch.tensor([0, 1, 0, 1] * 10)}, "closed_form"),   # and a 2-sided band
    ("document", {"doc": torch.arange(40) // 7}, "device"),
    ("prefix_lm_dynamic", {"prefix_len": torch.full((40,), 9)}, "device"),
    ("longformer_flags", {"is_global": (torch.arange(40) % 13 == 0).long()}, "device"),
    ("prefix_lm_lengths", {"prefix_len": torch.tensor([9])}, "device"),
    ("causal_padded", {"seq_len": torch.tensor(17)}, "device"),
    # key padding: a key flag joined by `and`
    ("pattern p():\n    input f: int[k]\n    mask causal and f[k] != 0\n", {"f": torch.arange(40) % 3},
     "device"),
    # a key flag inside one alternative of an `or`: no row interval
    ("pattern p():\n    input f: int[k]\n    mask causal and f[k] != 0 or q - k > 30\n",
     {"f": torch.arange(40) % 3}, "closed_form"),
    # two intervals per row with a hole between them
    ("pattern p():\n    input x: int[q]\n    mask abs(q - k) <= 1 or k == x[q]\n",
     {"x": torch.zeros(40, dtype=torch.long)}, "closed_form"),
])
def test_which_patterns_lower_on_the_device(name, inputs, how):
    p = attnpat.parse(name) if name.startswith("pattern") else attnpat.load(name)
    m = attnpat.block_mask(p, 40, 40, **inputs)
    dense = p.dense_mask(40, 40, **inputs)
    for shape in ((8, 8), (16, 32)):
        got = m.tile_kinds(*shape)
        want = exact_tiles(dense, *shape)
        assert not ((got == 0) & (want != 0)).any() and not ((got == 2) & (want != 2)).any()   # sound
        if how == "device":
            assert np.array_equal(got, want)
    assert m.builds == {(8, 8): how, (16, 32): "derived from 8x8"}


def _draw_shape(data, specs):
    """A pattern from `specs` (text, or (library name, params)) and a shape: q_len, kv_len, q_offset, batch."""
    spec = data.draw(st.sampled_from(specs))
    p = attnpat.parse(spec) if isinstance(spec, str) else attnpat.load(spec[0], **spec[1])
    kv_len = data.draw(st.integers(1, 70), label="kv_len")
    q_len = data.draw(st.integers(1, kv_len), label="q_len")
    q_offset = data.draw(st.one_of(st.none(), st.integers(0, kv_len - q_len)), label="q_offset")
    batch = data.draw(st.integers(1, 3), label="batch")
    return p, q_len, kv_len, q_offset, batch


UNSORTED_PATTERNS = [
    ("document", {}), ("document_full", {}),
    "pattern p(c: int = 5):\n    input doc: int[k]\n    mask doc[k] == doc[q] and k >= c and q < 30\n",
    "pattern p():\n    input doc: int[k]\n    mask doc[k] == doc[q] and q - k <= 2\n",
]


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_unsorted_ids_lower_on_the_device_exactly(data):
    p, q_len, kv_len, q_offset, batch = _draw_shape(data, UNSORTED_PATTERNS)
    rows = batch if batch > 1 and data.draw(st.booleans()) else 1
    top = data.draw(st.integers(0, 6))
    ids = torch.tensor(data.draw(st.lists(st.integers(-2, top), min_size=rows * kv_len, max_size=rows * kv_len)))
    doc = ids.view(rows, kv_len) if rows > 1 else ids
    bq, bk = data.draw(st.sampled_from([1, 4, 8, 16])), data.draw(st.sampled_from([1, 4, 8, 16]))
    m = attnpat.block_mask(p, q_len, kv_len, batch=batch, q_offset=q_offset, doc=doc)
    got = m.tile_kinds(bq, bk, batch, 1)
    dense = p.dense_mask(q_len, kv_len, batch=batch, q_offset=q_offset, doc=doc)
    assert np.array_equal(got, exact_tiles(dense, bq, bk)), (p.expression(), doc, q_len, q_offset, bq, bk)
    closed = p.block_mask(q_len, kv_len, block_q=bq, block_k=bk, batch=batch, q_offset=q_offset, doc=doc)
    for b in range(batch):
        assert np.array_equal(got[b], closed.to_dense(batch=b))
    assert m.builds == {(bq, bk): "device"}


def test_ids_spread_over_too_many_pairs_take_the_closed_form(monkeypatch):
    from attnpat.runtime import devids
    monkeypatch.setattr(devids, "PAIR_SLACK", 0)
    monkeypatch.setattr(devids, "PAIR_FACTOR", 2)
    p = attnpat.load("document_full")
    doc = torch.arange(64) % 16                 # 8 ids in each block, each in every other block
    m = attnpat.block_mask(p, 64, 64, doc=doc)
    got = m.tile_kinds(8, 8)
    assert m.builds == {(8, 8): "closed_form"}
    assert np.array_equal(got, exact_tiles(p.dense_mask(64, 64, doc=doc), 8, 8))


ROW_PATTERNS = [
    ("prefix_lm_dynamic", {}), ("prefix_lm_lengths", {}), ("causal_padded", {}), ("longformer_flags", {"window": 1}),
    ("longformer_flags", {"window": 6}),
    "pattern p():\n    input start: int[q]\n    mask k <= q and k >= start[q]\n",
    "pattern p(w: int = 6):\n    input start: int[k]\n    mask k >= start[q] and 0 <= q - k < w\n",
    "pattern p():\n    input n: int[b]\n    input g: int[k]\n    mask causal and k < n[b] or g[q] != 0 or g[k] == 2\n",
    "pattern p():\n    input a: int[q]\n    input n: int[b]\n    mask a[q] <= k and k < a[q] + n[b] or k == q\n",
    "pattern p():\n    input x: int[q]\n    mask abs(q - k) <= 2 or k < x[q] // 2\n",
    "pattern p():\n    input g: int[k]\n    mask causal and g[k] != 0\n",
    "pattern p():\n    input n: int[b]\n    input g: int[k]\n    mask k < n[b] and g[k] != 2 and q - k < 9\n",
]


def _row_inputs(data, p, q_len: int, kv_len: int, batch: int) -> dict:
    """Random inputs for a row-interval pattern: lengths, flags, document starts (as packing makes them)."""
    out = {}
    for name, axis in sorted(p.inputs.items()):
        rows = batch if batch > 1 and data.draw(st.booleans()) else 1
        if axis == "b":
            values = data.draw(st.lists(st.integers(-2, kv_len + 2), min_size=rows, max_size=rows))
            out[name] = torch.tensor(values) if rows > 1 or data.draw(st.booleans()) else values[0]
        elif name == "start":
            length = q_len if axis == "q" else kv_len
            tables = []
            for _ in range(rows):
                lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=12))
                tables.append(packing.document_starts(lengths, total=max(length, sum(lengths)))[:length])
            out[name] = torch.stack(tables) if rows > 1 else tables[0]
        else:
            length = q_len if axis == "q" else kv_len
            top = 3 if name == "g" or name == "is_global" else kv_len + 2
            t = torch.tensor(data.draw(st.lists(st.integers(-1, top), min_size=rows * length,
                                                max_size=rows * length)))
            out[name] = t.view(rows, length) if rows > 1 else t
    return out


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_row_interval_lowering_is_exact_and_equals_the_closed_form(data):
    p, q_len, kv_len, q_offset, batch = _draw_shape(data, ROW_PATTERNS)
    inputs = _row_inputs(data, p, q_len, kv_len, batch)
    bq, bk = data.draw(st.sampled_from([1, 4, 8, 16])), data.draw(st.sampled_from([1, 4, 8, 16]))
    heads = data.draw(st.integers(1, 2))
    m = attnpat.block_mask(p, q_len, kv_len, batch=batch, q_offset=q_offset, **inputs)
    got = m.tile_kinds(bq, bk, batch, heads)
    dense = p.dense_mask(q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, **inputs)
    want = exact_tiles(dense, bq, bk)
    assert np.array_equal(got, want), (p.expression(), inputs, q_len, q_offset, bq, bk, m.builds)
    closed = p.block_mask(q_len, kv_len, block_q=bq, block_k=bk, batch=batch, heads=heads, q_offset=q_offset,
                          **inputs)
    for b in range(batch):
        assert np.array_equal(got[b], closed.to_dense(batch=b))
    if not {"x", "a"} & set(p.inputs):   # the patterns here whose rows may hold two intervals
        assert m.builds == {(bq, bk): "device"}


def test_queries_beyond_the_ids_take_the_closed_form():
    p = attnpat.load("document_full")
    doc = torch.arange(30) // 10
    m = attnpat.block_mask(p, 10, 30, q_offset=0, doc=doc)
    m.tile_kinds(8, 8)
    assert m.builds == {(8, 8): "device"}
    assert attnpat.block_mask(p, 40, 30, doc=doc).q_start == -10   # rows at negative positions: not on device


# -- the prepared mask in attention() ---------------------------------------------------------------------

def _qkv(B, H, N, M, D=16, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (N, M, M))
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def test_prepared_mask_gives_the_per_call_output_and_gradients():
    p = attnpat.load("document_sliding_window", window=11)
    doc = torch.tensor([[0] * 20 + [1] * 27 + [2] * 13, [4] * 7 + [3] * 50 + [1] * 3])
    per_call, prepared = _qkv(2, 2, 60, 60, grad=True), _qkv(2, 2, 60, 60, grad=True)
    do = torch.randn(2, 2, 60, 16)
    out1 = attnpat.attention(*per_call, p, doc=doc)
    out1.backward(do)
    m = attnpat.block_mask(p, 60, 60, batch=2, doc=doc)
    out2 = attnpat.attention(*prepared, p, block_mask=m)
    out2.backward(do)
    assert torch.equal(out1, out2)
    for a, b in zip(per_call, prepared):
        assert torch.equal(a.grad, b.grad)
    ref = attnpat.reference_attention(*(t.detach().double() for t in per_call), p, doc=doc)
    torch.testing.assert_close(out2.detach().double(), ref, atol=1e-5, rtol=1e-4)
    assert list(m.builds.values())[0] == "device"
    assert all(how.startswith("derived from") for how in list(m.builds.values())[1:])


def test_one_mask_serves_every_layer_and_the_backward_without_rebuilding():
    p = attnpat.load("document")
    doc = torch.arange(48) // 17

    def step(layers, prepared=True):
        m = attnpat.block_mask(p, 48, 48, doc=doc)
        before = dict(blockmask.BUILD_COUNTS)
        x = _qkv(1, 2, 48, 48, grad=True)
        out = x[0]
        for _ in range(layers):
            out = attnpat.attention(out, x[1], x[2], p, **({"block_mask": m} if prepared else {"doc": doc}))
        out.sum().backward()
        return {k: blockmask.BUILD_COUNTS[k] - before[k] for k in before}, dict(m.builds)

    one, shapes = step(1)
    many, _ = step(4)
    assert one == many                       # builds do not grow with depth
    # one build reads the inputs; the other tile shapes the kernels use are coarsened from it
    assert one == {"device": 1, "closed_form": 0, "derived": len(shapes) - 1}
    # without a prepared mask: one build per call, which that call's backward shares
    per_call, _ = step(3, prepared=False)
    assert per_call == {"device": 3, "closed_form": 0, "derived": 3 * (len(shapes) - 1)}


def test_static_masks_are_built_once_per_shape():
    kernel = attnpat.compile(attnpat.parse("pattern p():\n    mask q % 8 == k % 8 or k < 3\n"))
    q, k, v = _qkv(1, 1, 40, 40)
    before = blockmask.BUILD_COUNTS["closed_form"]
    for _ in range(3):
        kernel(q, k, v)
    assert blockmask.BUILD_COUNTS["closed_form"] - before == 1


@pytest.mark.parametrize("change, message", [
    (dict(N=32), "built for q_len=40, kv_len=40, but q has 32 queries"),
    (dict(M=48), "but q has 40 queries and k has 48 keys"),
    (dict(B=3), "built for batch=2, but q has batch 3"),
    (dict(H=3), "built for heads=2, but q has heads 3"),
    (dict(q_offset=3), "'q_offset' 3 differs from the block mask's"),
    (dict(doc=torch.zeros(40, dtype=torch.long)), "runtime input 'doc' given with 'block_mask'"),
    (dict(pattern="document_full"), "built for pattern 'document'"),
    (dict(mask="not a mask"), "'block_mask' must be made by attnpat.block_mask, got str"),
])
def test_prepared_mask_mismatches_are_argument_errors(change, message):
    m = attnpat.block_mask("document", 40, 40, batch=2, heads=2, doc=torch.arange(40) // 9)
    q, k, v = _qkv(change.get("B", 2), change.get("H", 2), change.get("N", 40), change.get("M", 40))
    extra = {key: change[key] for key in ("q_offset", "doc") if key in change}
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(")):
        attnpat.attention(q, k, v, change.get("pattern", "document"), block_mask=change.get("mask", m), **extra)


def test_prepared_mask_without_batch_serves_any_batch_and_heads_when_shared():
    p = attnpat.load("document")
    m = attnpat.block_mask(p, 40, 40, doc=torch.arange(40) // 9)
    for B, H in ((1, 1), (3, 2)):
        q, k, v = _qkv(B, H, 40, 40)
        out = attnpat.attention(q, k, v, p, block_mask=m)
        ref = attnpat.reference_attention(q.double(), k.double(), v.double(), p, doc=torch.arange(40) // 9)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)


def test_block_mask_arguments_are_checked():
    with pytest.raises(ArgumentError, match="reads the head index h: pass heads="):
        attnpat.block_mask(attnpat.load("per_head", windows=[4, 8]), 16, 16)
    with pytest.raises(ArgumentError, match="'batch' must be"):
        attnpat.block_mask("causal", 16, 16, batch=-1)
    with pytest.raises(ArgumentError, match="'q_offset' must be an int"):
        attnpat.block_mask("causal", 16, 16, q_offset=1.5)
    with pytest.raises(InputError, match="needs runtime input 'doc'"):
        attnpat.block_mask("document", 16, 16)


# -- runtime inputs keep their integer meaning --------------------------------------------------------------

@pytest.mark.parametrize("value", [2 ** 31, -2 ** 31 - 1, 2 ** 32, 2 ** 40])
def test_inputs_outside_int32_are_input_errors_naming_the_value(value):
    doc = torch.zeros(24, dtype=torch.int64)
    doc[13] = value
    q, k, v = _qkv(1, 1, 24, 24)
    for call in (lambda: attnpat.attention(q, k, v, "document", doc=doc),
                 lambda: attnpat.block_mask("document", 24, 24, doc=doc),
                 lambda: attnpat.attention(q, k, v, "document", doc=doc.view(1, 24)),
                 lambda: attnpat.attention(q, k, v, "prefix_lm_dynamic", prefix_len=doc)):
        with pytest.raises(InputError, match=rf"holds {value} at \[(0, )?13\], outside the 32-bit integer range"):
            call()


def test_inputs_at_the_int32_bounds_keep_their_meaning():
    # documents numbered at both ends of int32: the kernel keeps them apart exactly as the reference does
    lo, hi = -2 ** 31, 2 ** 31 - 1
    doc = torch.tensor([hi] * 9 + [lo] * 14 + [hi - 1] * 7 + [0] * 10)
    q, k, v = _qkv(1, 2, 40, 40)
    ref = attnpat.reference_attention(q.double(), k.double(), v.double(), attnpat.load("document_full"), doc=doc)
    for out in (attnpat.attention(q, k, v, "document_full", doc=doc),
                attnpat.attention(q, k, v, "document_full", block_mask=attnpat.block_mask("document_full", 40, 40,
                                                                                          doc=doc))):
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    flags = torch.tensor([0, hi, lo] + [0] * 37)
    ref = attnpat.reference_attention(q.double(), k.double(), v.double(), attnpat.load("longformer_flags"),
                                      is_global=flags)
    out = attnpat.attention(q, k, v, "longformer_flags", is_global=flags)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)


# -- launch-time integer ranges (the kernels compute in int32) ----------------------------------------------

@pytest.mark.parametrize("pattern, kwargs, message", [
    ("causal", dict(q_offset=2 ** 40), "'q' reaches 1099511627791 at this shape, beyond the 32-bit integers"),
    ("causal", dict(q_offset=-2 ** 31 - 5), "'q' reaches -2147483653 at this shape"),
    ("pattern p():\n    mask q - k < 3000000000 and k >= 0\n", {}, "does not fit in the 32-bit integers"),
    ("pattern p():\n    input doc: int[k]\n    mask doc[q] * 4 == doc[k]\n",
     dict(doc=torch.full((16,), 2 ** 30)), r"'doc\[q\] \* 4' .*32-bit integers"),
])
def test_values_beyond_int32_at_launch_are_range_errors(pattern, kwargs, message):
    p = attnpat.load(pattern) if "\n" not in pattern else attnpat.parse(pattern)
    q, k, v = _qkv(1, 1, 16, 16)
    with pytest.raises(attnpat.PatternError, match=message):
        attnpat.attention(q, k, v, p, **kwargs)


def test_offsets_at_the_int32_edge_numpy_offsets_tensor_scales_and_empty_batches():
    p = attnpat.load("sliding_window", window=5)
    q, k, v = _qkv(1, 2, 16, 24)
    edge = 2 ** 31 - 16
    out = attnpat.attention(q, k, v, "sliding_window", q_offset=np.int64(edge), scale=torch.tensor(0.25))
    ref = attnpat.reference_attention(q.double(), k.double(), v.double(), attnpat.load("sliding_window"),
                                      q_offset=edge, scale=0.25)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    out = attnpat.attention(q, k, v, p, q_offset=torch.tensor(20))
    ref = attnpat.reference_attention(q.double(), k.double(), v.double(), p, q_offset=20)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    empty = torch.randn(0, 2, 16, 16)
    assert attnpat.attention(empty, empty, empty, "document", doc=torch.arange(16)).shape == (0, 2, 16, 16)
    with pytest.raises(ArgumentError, match="'scale' must be a finite number"):
        attnpat.attention(q, k, v, p, scale=torch.tensor([0.5, 0.5]))
