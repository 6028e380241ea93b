"""attnpat.KVCache (runtime/kvcache.py): the ring cache gives the full-cache result (the float64 reference over
every position) for windowed and sink patterns over hundreds to a thousand positions (the ring wrapping dozens
of times), with per-sequence lengths and chunks of every size; its capacity is the analysis' figure; unbounded
patterns and table plans grow."""

from __future__ import annotations

import pytest
import torch

import attnpat
from attnpat.compiler.analysis import analyze
from attnpat.errors import ArgumentError


def _run(pattern, total, *, seed, chunks, heads=(2, 1), D=16, batch=2, ragged=True, num_splits=None):
    """Feed `total` positions per sequence in the given chunk sizes, sequence 1 lagging sequence 0 (ragged
    lengths), and compare every output with the reference over that sequence's whole history."""
    gen = torch.Generator().manual_seed(seed)
    Hq, Hkv = heads
    cache = attnpat.KVCache(pattern, batch=batch, kv_heads=Hkv, head_dim=D, dtype=torch.float32,
                            num_splits=num_splits)
    Q = torch.randn(batch, Hq, total, D, generator=gen)
    K = torch.randn(batch, Hkv, total, D, generator=gen)
    V = torch.randn(batch, Hkv, total, D, generator=gen)
    got = torch.zeros(batch, Hq, total, D)
    done = [0] * batch
    slots = []
    for i, n in enumerate(chunks):
        # sequence b appends its next `take[b]` positions; the lagging one takes fewer every third step
        lag = 1 if ragged and i % 3 == 0 and n > 1 else 0
        take = [min(n - (lag if b else 0), total - done[b]) for b in range(batch)]
        if max(take) == 0:
            break
        q = torch.zeros(batch, Hq, n, D)
        k = torch.zeros(batch, Hkv, n, D)
        v = torch.zeros(batch, Hkv, n, D)
        for b in range(batch):
            q[b, :, :take[b]] = Q[b, :, done[b]:done[b] + take[b]]
            k[b, :, :take[b]] = K[b, :, done[b]:done[b] + take[b]]
            v[b, :, :take[b]] = V[b, :, done[b]:done[b] + take[b]]
        out = cache.attend(q, k, v, lengths=take)
        for b in range(batch):
            got[b, :, done[b]:done[b] + take[b]] = out[b, :, :take[b]]
            assert (out[b, :, take[b]:] == 0).all()
            done[b] += take[b]
        slots.append(cache.slots)
    assert cache.lengths.tolist() == done
    for b in range(batch):
        n = done[b]
        ref = attnpat.reference_attention(Q[b:b + 1, :, :n], K[b:b + 1, :, :n], V[b:b + 1, :, :n], pattern)
        err = (got[b:b + 1, :, :n].double() - ref).abs().max().item()
        assert err < 2e-5, f"sequence {b}: ring cache differs from the full-cache result by {err}"
    return cache, slots


def _chunks(seed, count, first=40):
    gen = torch.Generator().manual_seed(seed)
    return [first] + [int(x) for x in torch.randint(1, 17, (count,), generator=gen)] + [1] * 60


def test_sliding_window_ring_equals_full_cache_over_a_thousand_positions():
    pattern = attnpat.load("sliding_window", window=24)
    cache, slots = _run(pattern, 1200, seed=1, chunks=_chunks(1, 120), num_splits=1)
    assert cache.capacity == 24 and cache.bounded
    assert set(slots) == {cache.slots}, "memory must stay flat"
    assert cache.slots == 24 + 15


def test_streaming_llm_ring_equals_full_cache_with_gqa_and_sinks():
    pattern = attnpat.load("streaming_llm", sinks=4, window=20)
    cache, slots = _run(pattern, 600, seed=2, chunks=_chunks(2, 60, first=50), heads=(2, 1), num_splits=1)
    assert (cache.sinks, cache.lookback, cache.capacity) == (4, 19, 24)
    assert set(slots) == {cache.slots}


def test_single_token_decoding_wraps_the_ring_many_times():
    pattern = attnpat.load("streaming_llm", sinks=2, window=5)
    _run(pattern, 100, seed=3, chunks=[1] * 100, batch=1)


def test_unbounded_patterns_grow_and_say_so():
    pattern = attnpat.load("causal")
    cache, slots = _run(pattern, 150, seed=4, chunks=[30] + [7] * 20, batch=2)
    assert not cache.bounded and cache.capacity is None and cache.lookback is None
    assert slots[-1] >= 150 and slots[0] < slots[-1]
    assert "unbounded" in repr(cache)


CAUSAL_GLOBALS = """
pattern causal_globals():
    mask causal and (q - k < 10 or k in {0, 5, 40})
"""


@pytest.mark.parametrize("name, params", [
    ("chunked_causal", dict(chunk=16)), ("per_head", dict(windows=[4, 9, 33])), ("causal_globals", None),
])
def test_table_plan_patterns_grow_and_match_the_reference(name, params):
    # causal patterns only: a decoder's cache holds no future keys, which a bidirectional pattern would see
    pattern = attnpat.parse(CAUSAL_GLOBALS) if params is None else attnpat.load(name, **params)
    assert pattern.compiled.plan.mode == "table"
    cache, _ = _run(pattern, 90, seed=6, chunks=[20, 16, 1, 1, 5] + [7] * 10, heads=(3, 1), ragged=False)
    assert not cache.bounded and cache.capacity is None
    x = torch.zeros(2, 3, 2, 16)
    cache.attend(x, x[:, :1], x[:, :1], lengths=[2, 1])   # from one position, ragged appends are fine
    with pytest.raises(ArgumentError, match="same position"):   # one block mask per step
        cache.attend(x, x[:, :1], x[:, :1])
    assert cache.lengths.tolist() == [92, 91]   # the refused step wrote nothing


@pytest.mark.parametrize("name, params, expected", [
    ("sliding_window", dict(window=4096), 4096), ("sliding_window", dict(window=1), 1),
    ("streaming_llm", dict(sinks=4, window=1020), 1024), ("streaming_llm", {}, None),
])
def test_capacity_is_the_analysis_figure(name, params, expected):
    pattern = attnpat.load(name, **params)
    cache = attnpat.KVCache(pattern, batch=1, kv_heads=1, head_dim=16, dtype=torch.float16)
    probe = 3 * (cache.capacity or 0) + 100
    a = analyze(pattern, 1, probe)   # one query far from the start
    if cache.sinks == 0:
        assert cache.capacity == a.kv_cache   # look-back + 1
    else:
        # sinks: the look-back reaches the first column, but the query sees only the sinks and its window
        assert a.kv_cache == probe and cache.capacity == a.max_keys
    if expected is not None:
        assert cache.capacity == expected


def test_unbounded_look_back_grows_in_the_analysis_too():
    cache = attnpat.KVCache("causal", batch=1, kv_heads=1, head_dim=16, dtype=torch.float16)
    assert cache.capacity is None
    assert analyze("causal", 1, 100).kv_cache == 100 and analyze("causal", 1, 1000).kv_cache == 1000


def test_layer_caches_size_each_layer_by_its_own_pattern():
    local = attnpat.load("sliding_window", window=64)
    caches = attnpat.layer_caches([local] * 5 + ["causal"], batch=2, kv_heads=2, head_dim=32,
                                  dtype=torch.bfloat16)
    assert [c.capacity for c in caches] == [64] * 5 + [None]
    assert caches[0].nbytes == 2 * 2 * 2 * (64 + 15) * 32 * 2


def test_bad_arguments():
    with pytest.raises(ArgumentError, match="runtime inputs"):
        attnpat.KVCache("document", batch=1, kv_heads=1, head_dim=16, dtype=torch.float16)
    with pytest.raises(ArgumentError, match="dtype"):
        attnpat.KVCache("causal", batch=1, kv_heads=1, head_dim=16, dtype=torch.int32)
    cache = attnpat.KVCache("sliding_window", batch=1, kv_heads=1, head_dim=16, dtype=torch.float32)
    x = torch.zeros(1, 1, 2, 16)
    with pytest.raises(ArgumentError, match="lengths"):
        cache.attend(x, x, x, lengths=[3])
    with pytest.raises(ArgumentError, match="float32"):
        cache.attend(x.half(), x.half(), x.half())
    with pytest.raises(ArgumentError, match="expected"):
        cache.attend(x, x[:, :, :1], x[:, :, :1])
