"""Context parallelism (attnpat.distributed): spawned gloo processes on the CPU, under the interpreter.

Each process holds one contiguous shard; its output and gradients must equal the same rows of the
single-process kernel and of the float64 reference, and the bytes it received (counted from the transfer
buffers) must equal the plan's.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attnpat
from attnpat.distributed import make_plan

D = 16


def _case(name, kw, lengths, *, hq=2, hkv=2, inputs=None, seed=0, floats=()):
    return dict(name=name, kw=kw, lengths=lengths, hq=hq, hkv=hkv, inputs=inputs or {}, seed=seed, floats=floats)


def _pattern(case):
    return attnpat.parse(case["text"]) if "text" in case else attnpat.load(case["name"], **case["kw"])


def _run_case(rank: int, case: dict) -> None:
    from attnpat import distributed as cp
    pat = _pattern(case)
    lengths = case["lengths"]
    total, B = sum(lengths), case.get("batch", 1)
    g = torch.Generator().manual_seed(case["seed"])
    q = torch.randn(B, case["hq"], total, D, generator=g)
    k = torch.randn(B, case["hkv"], total, D, generator=g)
    v = torch.randn(B, case["hkv"], total, D, generator=g)
    dout = torch.randn(B, case["hq"], total, D, generator=g)
    inputs = case["inputs"]
    floats = {n: torch.randn(case["hq"], generator=g) for n in case["floats"]}   # float[h]: slopes, sinks
    cm = None
    if "prepared" in case:   # a ContextMask; its layout ('auto': from the plan) says which rows this rank holds
        cm = cp.block_mask(pat, lengths, layout=case["prepared"], heads=case["hq"], **inputs)
        assert cm.layout == case.get("layout", cm.layout), cm
        rows = cm.rows()
    elif case.get("layout") == "zigzag":   # chunks rank and 2P-1-rank of 2P equal chunks
        c, P = lengths[rank] // 2, len(lengths)
        rows = torch.cat([torch.arange(rank * c, (rank + 1) * c),
                          torch.arange((2 * P - 1 - rank) * c, (2 * P - rank) * c)])
    else:
        off = sum(lengths[:rank])
        rows = torch.arange(off, off + lengths[rank])
    # the float64 reference and the single-process kernel on the whole sequence
    leaves64 = [t.double().requires_grad_() for t in (q, k, v, *floats.values())]
    f64 = dict(zip(floats, leaves64[3:]))
    rep = 1 if case["hq"] == case["hkv"] else case["hq"] // case["hkv"]
    k64, v64 = (t.repeat_interleave(rep, dim=1) for t in leaves64[1:3])
    ref = attnpat.reference_attention(leaves64[0], k64, v64, pat, **inputs, **f64)
    ref.backward(dout.double())
    leaves = [t.clone().requires_grad_() for t in (q, k, v, *floats.values())]
    one = attnpat.attention(*leaves[:3], pat, **inputs, **dict(zip(floats, leaves[3:])))
    one.backward(dout)
    # this rank's shard
    mine = [t[:, :, rows].clone().requires_grad_() for t in (q, k, v)] + [
        t.clone().requires_grad_() for t in floats.values()]
    cp.TRANSFER_BYTES["forward"] = cp.TRANSFER_BYTES["backward"] = 0
    given = dict(block_mask=cm) if cm is not None else dict(layout=case.get("layout", "contiguous"), **inputs)
    out = cp.attention(*mine[:3], pat, **given, **dict(zip(floats, mine[3:])))
    out.backward(dout[:, :, rows])
    for what, got, single, r64 in (("out", out, one, ref), *(
            (n, m.grad, l.grad, l64.grad) for n, m, l, l64 in zip("qkv", mine, leaves, leaves64))):
        torch.testing.assert_close(got, single[:, :, rows], atol=2e-5, rtol=1e-4, msg=f"{what} vs kernel")
        torch.testing.assert_close(got.double(), r64[:, :, rows], atol=1e-4, rtol=1e-4, msg=f"{what} vs reference")
    for name, m, l, l64 in zip(floats, mine[3:], leaves[3:], leaves64[3:]):
        summed = m.grad.clone()   # this rank's queries' part: the ranks' parts sum to the whole gradient
        dist.all_reduce(summed)
        torch.testing.assert_close(summed, l.grad, atol=1e-4, rtol=1e-4, msg=f"{name} vs kernel")
        torch.testing.assert_close(summed.double(), l64.grad, atol=1e-4, rtol=1e-4, msg=f"{name} vs reference")
    if "ranges" in case:   # key ranges this rank computes over (a sink must be counted once across them)
        assert sum(len(w.ranges) for w in cm.work) == case["ranges"][rank], cm.work
    if cm is not None:   # the prepared mask's helpers: this rank's rows of the whole, and back
        torch.testing.assert_close(cm.gather(out.detach()), one.detach(), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(cm.shard(q), q[:, :, rows])
    per_row = 2 * B * case["hkv"] * D * 4
    if "expect_rows" in case:   # rows received, measured: (forward K/V, backward dK/dV)
        assert cp.TRANSFER_BYTES["forward"] == case["expect_rows"][rank] * per_row
        assert cp.TRANSFER_BYTES["backward"] == case["expect_back"][rank] * per_row
    if case.get("layout") == "zigzag" or cm is not None:
        return
    # measured bytes equal the plan's: K and V rows of fp32, forward and (dK, dV) back
    cplan = make_plan(pat.compiled, lengths, heads=case["hq"], tables={
        n: t.reshape(-1, t.shape[-1]).numpy() for n, t in inputs.items()}, batch=B)
    assert cp.TRANSFER_BYTES["forward"] == cplan.received_rows(rank) * per_row
    sent = sum(b - a for i in range(len(lengths)) if i != rank for a, b in cplan.fetch[i][rank])
    assert cp.TRANSFER_BYTES["backward"] == sent * per_row
    if case.get("one_neighbour"):
        assert cplan.peers(rank) == ((rank - 1,) if rank else ()), cplan.fetch
        assert cp.TRANSFER_BYTES["forward"] == (case["window_rows"] * per_row if rank else 0)


SINK_STREAM = """
pattern sink_stream():
    input sinks: float[h]
    score sink(sinks[h])
    mask causal and (k < 4 or q - k < 16)
"""


def _check_prepared_layers(rank: int, case: dict) -> None:
    """Three layers and one backward on one ContextMask: one plan and one table build for all of them; the
    same outputs and gradients as three calls without it (which build one plan each); a second backward
    with retain_graph."""
    from attnpat import distributed as cp
    from attnpat.runtime.blockmask import BUILD_COUNTS
    pat, doc = attnpat.load("document"), case["doc"]
    total = len(doc)
    g = torch.Generator().manual_seed(12)
    layers = [[torch.randn(1, 2, total, D, generator=g) for _ in range(3)] for _ in range(3)]
    dout = torch.randn(1, 2, total, D, generator=g)
    plans, tables = cp.BUILDS["plans"], BUILD_COUNTS["device"] + BUILD_COUNTS["closed_form"]
    cm = cp.block_mask(pat, total, doc=doc)
    rows = cm.rows()

    def run(**given):
        leaves = [[t[:, :, rows].clone().requires_grad_() for t in layer] for layer in layers]
        out = sum(cp.attention(*qkv, pat, **given) for qkv in leaves)
        out.backward(dout[:, :, rows])
        return [out, *(t.grad for qkv in leaves for t in qkv)]

    prepared = run(block_mask=cm)
    assert cp.BUILDS["plans"] - plans == 1
    assert BUILD_COUNTS["device"] + BUILD_COUNTS["closed_form"] - tables == 1, BUILD_COUNTS
    for got, want in zip(prepared, run(layout=cm.layout, doc=doc)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert cp.BUILDS["plans"] - plans == 4   # without a prepared mask: one plan per call
    # retain_graph: a second backward of the same graph reads the same held K/V rows and doubles the grads
    qkv = [t[:, :, rows].clone().requires_grad_() for t in layers[0]]
    out = cp.attention(*qkv, pat, block_mask=cm)
    out.backward(dout[:, :, rows], retain_graph=True)
    once = [t.grad.clone() for t in qkv]
    out.backward(dout[:, :, rows])
    for t, g in zip(qkv, once):
        torch.testing.assert_close(t.grad, 2 * g)


def _check_mask_errors(rank: int, case: dict) -> None:
    """A prepared mask that does not fit the call, and what block_mask refuses: ArgumentErrors naming the
    argument; 'auto' picks zigzag for causal and contiguous shards for a sliding window."""
    from attnpat import distributed as cp
    doc = torch.tensor([0] * 40 + [1] * 24)
    cm = cp.block_mask("causal", 64)
    assert cm.layout == "zigzag" and cp.block_mask(attnpat.load("sliding_window", window=8), 64).layout == "contiguous"
    q = torch.randn(1, 2, 32, D)
    for call, match in (
            (lambda: cp.attention(q, q, q, "sliding_window", block_mask=cm), "built for pattern"),
            (lambda: cp.attention(q, q, q, "causal", block_mask=cm, layout="contiguous"), "'layout'"),
            (lambda: cp.attention(q, q, q, "causal", block_mask=cm, lengths=[16, 48]), "'lengths'"),
            (lambda: cp.attention(q[:, :, :16], q[:, :, :16], q[:, :, :16], "causal", block_mask=cm), "rows"),
            (lambda: cp.attention(q, q, q, "causal", block_mask=attnpat.block_mask("causal", 64, 64)),
             "attnpat.distributed.block_mask"),
            (lambda: cp.attention(q, q, q, "document", block_mask=cp.block_mask("document", 64, doc=doc), doc=doc),
             "runtime input 'doc' given with 'block_mask'"),
            (lambda: cp.block_mask("gpt_oss_global", 64, sinks=torch.zeros(2)), "float input 'sinks'"),
            (lambda: cp.block_mask("causal", 62, layout="zigzag"), "multiple of 4"),
            (lambda: cp.block_mask("causal", 64, layout="ring"), "layout"),
            (lambda: cp.block_mask(attnpat.load("per_head", windows=[4, 8]), 64), "pass heads=")):
        with pytest.raises(attnpat.ArgumentError, match=match):
            call()


def _check_compile(rank: int, case: dict) -> None:
    """torch.compile(fullgraph=True) over attention with a prepared mask and a float[h] input: one graph, no
    break (the call is one custom op); outputs and gradients equal eager's."""
    from attnpat import distributed as cp
    pat = attnpat.load("gpt_oss_local", window=16)
    cm = cp.block_mask(pat, 64, heads=2)
    g = torch.Generator().manual_seed(18)
    q, k, v, dout = (t[:, :, cm.rows()] for t in (torch.randn(1, 2, 64, D, generator=g) for _ in range(4)))
    sinks = torch.randn(2, generator=g)

    def step(q, k, v, sinks):
        return cp.attention(q, k, v, pat, block_mask=cm, sinks=sinks)

    torch._dynamo.reset()
    assert torch._dynamo.explain(step)(q, k, v, sinks).graph_break_count == 0
    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, sinks)]
        out = fn(*leaves)
        out.backward(dout)
        results.append([out, *(t.grad for t in leaves)])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, atol=0, rtol=0)


def _worker(rank: int, world: int, init: str, cases: list) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for case in cases:
            (case["check"] if "check" in case else _run_case)(rank, case)
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, world: int, cases: list) -> None:
    mp.spawn(_worker, args=(world, f"file://{tmp_path / 'init'}", cases), nprocs=world, join=True)


def test_world_two(tmp_path):
    """Sliding window with GQA (one halo from the left neighbour), causal, streaming_llm (two runs from one
    peer), a document spanning both shards."""
    doc = torch.tensor([0] * 20 + [1] * 30 + [2] * 14)
    _spawn(tmp_path, 2, [
        _case("sliding_window", {"window": 16}, [32, 32], hq=4, hkv=2, seed=1) | {"one_neighbour": True,
                                                                                     "window_rows": 15},
        _case("causal", {}, [32, 32], seed=2),
        # rank 1 reads two runs of rank 0's rows: the 4 sinks and the window's 15-row halo, not the rows between
        _case("streaming_llm", {"sinks": 4, "window": 16}, [64, 64], seed=7) | {"expect_rows": [0, 19],
                                                                                     "expect_back": [19, 0]},
        # zigzag: rank 0 holds chunks 0 and 3 (needs 1 and 2 from rank 1), rank 1 chunks 1 and 2 (needs 0)
        _case("causal", {}, [32, 32], seed=8) | {"layout": "zigzag", "expect_rows": [32, 16],
                                                 "expect_back": [16, 32]},
        _case("document", {}, [32, 32], inputs={"doc": doc}, seed=3),
    ])


def test_world_four_uneven(tmp_path):
    """Four ranks, the last shard shorter: a sliding window needing one neighbour only, documents spanning
    shards, streaming_llm (sink keys from rank 0 for everyone), zigzag with MQA, a window per head, an int[q]
    input per sequence of a batch of 2."""
    doc = torch.tensor([0] * 10 + [1] * 50 + [2] * 20 + [3] * 16)
    _spawn(tmp_path, 4, [
        _case("sliding_window", {"window": 16}, [32, 32, 32, 16], seed=4) | {"one_neighbour": True,
                                                                             "window_rows": 15},
        _case("document", {}, [32, 32, 24, 8], inputs={"doc": doc}, seed=5),
        _case("streaming_llm", {"sinks": 4, "window": 16}, [32, 32, 32, 16], seed=6),
        _case("causal", {}, [32] * 4, hq=4, hkv=1, seed=9) | {"layout": "zigzag"},
        # a window per head: the plan covers every head's keys
        _case("per_head", {"windows": [4, 40]}, [32, 32, 32, 16], seed=10),
        # an int[q] input given per sequence of a batch of 2: each rank reads its rows of it
        _case("prefix_lm_dynamic", {}, [32, 32, 32, 16], seed=11, inputs={"prefix_len": torch.tensor(
            [[40] * 112, [0] * 100 + [100] * 12])}) | {"batch": 2},
    ])


def test_world_two_prepared_and_scores(tmp_path):
    """A prepared ContextMask shared by layers and the backward, its checks and 'auto' layout; score terms:
    sinks counted once (also across two key ranges), float[h] slopes and sinks whose per-rank gradients sum
    to the single-process one, a softcap."""
    _spawn(tmp_path, 2, [
        dict(check=_check_prepared_layers, doc=torch.tensor([0] * 50 + [1] * 60 + [2] * 18)),
        dict(check=_check_mask_errors),
        dict(check=_check_compile),
        _case("gpt_oss_local", {"window": 16}, [32, 32], floats=("sinks",), seed=13),
        _case("gpt_oss_global", {}, [32, 32], floats=("sinks",), seed=14) | {"prepared": "auto", "layout": "zigzag"},
        _case("alibi_learned", {}, [32, 32], floats=("slopes",), seed=15) | {"prepared": "auto", "layout": "zigzag"},
        _case("gemma2_local", {"window": 16, "cap": 5.0}, [32, 32], seed=16) | {"prepared": "auto"},
        # rank 1 computes over two key ranges (the sink rows, then the window's): one carries the sink
        _case("sink_stream", {}, [192, 192], hq=1, hkv=1, floats=("sinks",), seed=17) | {
            "text": SINK_STREAM, "prepared": "contiguous", "ranges": [1, 2]},
    ])


def test_plan_sliding_window_halo_only():
    """The plan alone: a shard at least the window reads only the rows of its left neighbour the window reaches."""
    pat = attnpat.load("sliding_window", window=32)
    cplan = make_plan(pat.compiled, [64] * 4)
    for r in range(4):
        assert cplan.peers(r) == ((r - 1,) if r else ())
        assert cplan.received_rows(r) == (31 if r else 0)   # q - k < 32: the 31 rows before the shard


def test_not_initialised_is_a_clear_error():
    from attnpat.distributed import attention
    q = torch.randn(1, 1, 16, D)
    with pytest.raises(attnpat.ArgumentError, match="init_process_group"):
        attention(q, q, q, "causal")


def test_explain_ranks(capsys):
    """`attnpat explain --ranks`: a window's halo per rank against all-gather, in text and JSON."""
    import json

    from attnpat.cli import main
    assert main(["explain", "sliding_window", "--set", "window=64", "--q-len", "512", "--ranks", "4", "--heads", "2",
                 "--head-dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "context parallel over 4 ranks" in out
    assert main(["explain", "sliding_window", "--set", "window=64", "--q-len", "512", "--ranks", "4", "--heads", "2",
                 "--head-dim", "16", "--json"]) == 0
    ranks = json.loads(capsys.readouterr().out)["ranks"]
    row = 2 * 2 * 16 * 2   # K and V, 2 kv heads, head dim 16, 2-byte elements
    assert [r["bytes"] for r in ranks] == [0] + [63 * row] * 3   # q - k < 64: 63 rows of halo
    assert [r["peers"] for r in ranks] == [[], [0], [1], [2]]
    assert all(r["all_gather_bytes"] == 384 * row for r in ranks)
    # causal: contiguous shards' work grows with the rank; zigzag gives every rank the same
    tiles = {}
    for layout in ("contiguous", "zigzag"):
        assert main(["explain", "causal", "--q-len", "256", "--ranks", "4", "--layout", layout, "--json"]) == 0
        tiles[layout] = [r["tiles"] for r in json.loads(capsys.readouterr().out)["ranks"]]
    assert tiles["contiguous"] == sorted(tiles["contiguous"]) and tiles["contiguous"][0] < tiles["contiguous"][3]
    assert len(set(tiles["zigzag"])) == 1 and sum(tiles["zigzag"]) == sum(tiles["contiguous"])
    assert main(["explain", "causal", "--q-len", "64", "--kv-len", "32", "--ranks", "2"]) == 1
    assert "--kv-len 32 must equal --q-len" in capsys.readouterr().err


@pytest.mark.parametrize("name,kw,inputs", [
    ("sliding_window", {"window": 24}, {}),                                   # band plan
    ("document", {}, {"doc": torch.tensor([0] * 30 + [1] * 50 + [2] * 16)}),  # table plan, runtime input
])
def test_kv_start(name, kw, inputs):
    """One process, keys [a, N) passed with kv_start=a (the kernels' KV_START): output, lse and gradients equal
    float64 attention over those keys under the reference's dense mask (rows with no key there: 0)."""
    from attnpat.reference import evaluate_dense
    pat = attnpat.load(name, **kw)
    N, a = 96, 40
    g = torch.Generator().manual_seed(11)
    q, k, v, dout = (torch.randn(1, 2, N, D, generator=g) for _ in range(4))
    leaves = [q.clone().requires_grad_(), k[:, :, a:].clone().requires_grad_(), v[:, :, a:].clone().requires_grad_()]
    out, lse = attnpat.attention(*leaves, pat, q_offset=0, kv_start=a, return_lse=True, **inputs)
    out.backward(dout)
    allowed = torch.as_tensor(evaluate_dense(pat.checked, N, N, inputs=inputs)).reshape(N, N)[:, a:]
    l64 = [t.detach().double().requires_grad_() for t in leaves]
    s = (l64[0] @ l64[1].transpose(-1, -2) / D ** 0.5).masked_fill(~allowed, float("-inf"))
    lse64 = torch.logsumexp(s, -1)
    empty = ~allowed.any(-1)[:, None]                  # rows with no key: a softmax over zeros, then zeroed
    p = torch.softmax(torch.where(empty, 0.0, s), -1) * ~empty
    ref = p @ l64[2]
    ref.backward(dout.double())
    assert torch.isneginf(lse64).any() or name == "document"   # some rows see no key past a: output 0 there
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse.double(), lse64.detach(), atol=1e-5, rtol=1e-4)
    for mine, theirs in zip(leaves, l64):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, atol=1e-4, rtol=1e-4)


def test_kv_start_errors():
    q = torch.randn(1, 1, 16, D)
    with pytest.raises(attnpat.ArgumentError, match="kv_start"):
        attnpat.compile("causal")(q, q, q, kv_start=-1)
    with pytest.raises(attnpat.ArgumentError, match="kv_start"):
        attnpat.compile("causal")(q, q, q, kv_start=1.5)
