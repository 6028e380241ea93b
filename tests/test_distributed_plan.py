"""The context-parallel plan alone (attnpat/distributed/plan.py), no processes: fetched runs trimmed to exact
rows (checked against the float64 reference's dense mask), key ranges aligned to RANGE_ALIGN, the even
split and the automatic layout choice, and `attnpat explain --ranks --layout auto`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import attnpat
from attnpat import EmptyPatternError
from attnpat.distributed import plan as P
from attnpat.distributed.plan import (RANGE_ALIGN, choose_layout, even_lengths, layout_chunks, make_plan,
                                      rank_rows, transfers)
from tests.strategies import make_inputs, pattern_objects


def _tables(inputs: dict, total: int) -> dict:
    return {n: t.reshape(-1, total).to(torch.int64).numpy() for n, t in inputs.items()}


def _check_exact(pattern, lengths, *, heads=1, batch=1, inputs=None, grain=None) -> P.ContextPlan:
    """Every run of the plan lies in its owner's rows, and its first and last rows are attended by some query
    of the receiving chunk (any batch element or head) under the reference's dense mask, which attends no row
    outside the runs."""
    inputs = inputs or {}
    total = sum(lengths)
    cplan = make_plan(pattern.compiled, lengths, heads=heads, batch=batch, tables=_tables(inputs, total),
                      grain=grain)
    dense = pattern.dense_mask(total, total, batch=batch, heads=heads, q_offset=0, **inputs).numpy()
    offs = cplan.offsets
    for i, n in enumerate(lengths):
        seen = dense[:, :, offs[i]:offs[i] + n].any((0, 1, 2))
        fetched = np.zeros(total, bool)
        for j, m in enumerate(lengths):
            runs = cplan.fetch[i][j]
            assert all(offs[j] <= a < b <= offs[j] + m for a, b in runs), (i, j, runs)
            assert all(b0 < a1 for (_, b0), (a1, _) in zip(runs, runs[1:])), runs   # ascending, apart
            for a, b in runs:
                assert seen[a] and seen[b - 1], (i, j, (a, b), np.flatnonzero(seen))
                fetched[a:b] = True
        assert not (seen & ~fetched).any(), (i, np.flatnonzero(seen & ~fetched))
    return cplan


def _check_ranges(cplan: P.ContextPlan) -> None:
    """ranges(): aligned starts, pieces in order inside their range, ranges RANGE_ALIGN apart, every run
    placed once."""
    for i in range(len(cplan.lengths)):
        ranges = cplan.ranges(i)
        for start, end, pieces in ranges:
            first = pieces[0][1]
            assert start % RANGE_ALIGN == 0 and first - RANGE_ALIGN < start <= first and end == pieces[-1][2]
            assert all(0 <= a1 - b0 < RANGE_ALIGN for (_, _, b0), (_, a1, _) in zip(pieces, pieces[1:]))
        for (_, end, _), (start, _, pieces) in zip(ranges, ranges[1:]):
            assert pieces[0][1] - end >= RANGE_ALIGN and start >= end
        placed = sorted(p for _, _, pieces in ranges for p in pieces)
        assert placed == sorted((j, a, b) for j, runs in enumerate(cplan.fetch[i]) for a, b in runs)


@pytest.mark.parametrize("name,kw,lengths,heads,doc", [
    ("sliding_window", {"window": 20}, [50, 50, 28], 1, None),
    ("streaming_llm", {"sinks": 3, "window": 10}, [64, 64], 2, None),
    ("causal", {}, [40, 40, 40], 1, None),
    ("document", {}, [48, 48, 32], 1, [0] * 10 + [1] * 50 + [2] * 45 + [3] * 23),
    ("bigbird", {"block": 4, "random_blocks": 2, "key_blocks": 8}, [40, 40], 3, None),
])
def test_exact_rows_library(name, kw, lengths, heads, doc):
    pattern = attnpat.load(name, **kw)
    inputs = {} if doc is None else {"doc": torch.tensor(doc)}
    _check_ranges(_check_exact(pattern, lengths, heads=heads, inputs=inputs))


@settings(max_examples=max(10, settings.default.max_examples // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=pattern_objects(), data=st.data())
def test_exact_rows_generated(pattern, data):
    """Generated patterns (windows, hashes, per-head lists, int[k] and int[q] inputs) over random shard
    lengths, grains and batch/head counts."""
    try:
        pattern.canonical
    except EmptyPatternError:
        assume(False)
    lengths = data.draw(st.lists(st.integers(0, 30), min_size=1, max_size=4).filter(lambda x: sum(x) > 0))
    batch, heads = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    inputs = make_inputs(pattern, sum(lengths), sum(lengths), batch, data.draw)
    _check_ranges(_check_exact(pattern, lengths, heads=heads, batch=batch, inputs=inputs,
                               grain=data.draw(st.sampled_from([4, 8, 16]))))


def test_sliding_window_halo_is_window_minus_one():
    """q - k < window: a shard at least the window reads its left neighbour's last window - 1 rows only."""
    cplan = make_plan(attnpat.load("sliding_window", window=32).compiled, [64] * 4)
    for r in range(4):
        assert cplan.peers(r) == ((r - 1,) if r else ())
        assert cplan.fetch[r][r - 1] == (((64 * r - 31, 64 * r),) if r else ())
    # long sequences: coarse blocks (256 rows at 128K), still exact rows
    cplan = make_plan(attnpat.load("sliding_window", window=4096).compiled, [16384] * 8)
    assert cplan.grain == 256 and [cplan.received_rows(r) for r in range(8)] == [0] + [4095] * 7


def test_streaming_llm_two_exact_runs():
    cplan = make_plan(attnpat.load("streaming_llm", sinks=4, window=16).compiled, [64, 64])
    assert cplan.fetch[1][0] == ((0, 4), (49, 64))
    assert cplan.ranges(1) == [(0, 128, ((0, 0, 4), (0, 49, 64), (1, 64, 128)))]


def test_ranges_split_when_far_apart():
    """Pieces RANGE_ALIGN or more rows apart are separate ranges, each starting at a multiple of RANGE_ALIGN."""
    cplan = make_plan(attnpat.load("streaming_llm", sinks=4, window=16).compiled, [512, 512])
    assert cplan.fetch[1][0] == ((0, 4), (497, 512))
    assert cplan.ranges(1) == [(0, 4, ((0, 0, 4),)), (384, 1024, ((0, 497, 512), (1, 512, 1024)))]


def test_trim_budget_exhausted_stays_sound(monkeypatch):
    """With no budget to evaluate points, runs keep whole-block edges: more rows, never fewer."""
    monkeypatch.setattr(P, "TRIM_BUDGET", 0)
    pattern = attnpat.load("sliding_window", window=20)
    coarse = make_plan(pattern.compiled, [50, 50, 28])
    assert coarse.fetch[1][0] == ((16, 50),)   # whole 16-row blocks, cut at the shard's edge
    _check_ranges(coarse)


def test_zigzag_transfers_hold_every_run():
    """Under zigzag a pair exchanges the union of its chunks' runs: each run a chunk computes over lies in one
    received run (what context.py looks up), and the received rows are what rank_rows reports."""
    chunks = layout_chunks("zigzag", [48] * 3)
    cplan = _check_exact(attnpat.load("streaming_llm", sinks=2, window=9), list(chunks.lengths))
    for rank, row in enumerate(rank_rows(cplan, 1, chunks)):
        _, recvs = transfers(cplan, chunks, rank)
        assert row["received_rows"] == sum(b - a for runs in recvs.values() for a, b in runs)
        for ci in chunks.of(rank):
            for cj, runs in enumerate(cplan.fetch[ci]):
                j = chunks.owner[cj]
                if j != rank:
                    assert all(any(a0 <= a and b <= b0 for a0, b0 in recvs[j]) for a, b in runs)


def test_even_lengths():
    assert even_lengths(256, 4) == (64,) * 4
    assert even_lengths(10, 4) == (3, 3, 3, 1)
    assert even_lengths(9, 4) == (3, 3, 3, 0)
    assert even_lengths(5, 1) == (5,)
    with pytest.raises(attnpat.ArgumentError, match="world"):
        even_lengths(8, 0)


def test_choose_layout():
    causal = attnpat.load("causal").compiled
    assert choose_layout(causal, 256, 4) == "zigzag"          # the busiest rank: 58 -> 34 tiles
    assert choose_layout(causal, 250, 4) == "contiguous"      # 250 rows do not cut into 8 equal chunks
    assert choose_layout(causal, 256, 1) == "contiguous"
    window = attnpat.load("sliding_window", window=64).compiled
    assert choose_layout(window, 1024, 4, heads=2) == "contiguous"   # even work, half the halo rows
    doc = np.repeat(np.arange(4), 64)[None]
    assert choose_layout(attnpat.load("document").compiled, 256, 4, tables={"doc": doc}) == "contiguous"
    layout, why, plans = P.layout_choice(causal, 256, 4)
    assert layout == "zigzag" and "58 to 34 tiles" in why and set(plans) == {"contiguous", "zigzag"}


def test_explain_layout_auto(capsys):
    from attnpat.cli import main
    assert main(["explain", "causal", "--q-len", "256", "--ranks", "4", "--layout", "auto"]) == 0
    out = capsys.readouterr().out
    assert "(contiguous layout;" in out and "(zigzag layout;" in out
    assert "layout auto: zigzag, because it lowers the busiest rank's work from 58 to 34 tiles" in out
    assert main(["explain", "sliding_window", "--set", "window=64", "--q-len", "512", "--ranks", "4",
                 "--layout", "auto", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["layout"] == "contiguous" and "63 rows against zigzag's 126" in got["layout_reason"]
    assert got["ranks"] == got["ranks_by_layout"]["contiguous"]
    assert [r["received_rows"] for r in got["ranks"]] == [0, 63, 63, 63]
