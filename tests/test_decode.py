"""The split-KV decode kernel (runtime/decode.py) against the float64 reference: output and log-sum-exp for
library and generated patterns, 1 to 16 queries, GQA, q_offset, batch and any number of splits."""

from __future__ import annotations

import ast

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import attnpat
from attnpat.errors import ArgumentError, EmptyPatternError
from attnpat.runtime.decode import decode_attention, decode_source, should_decode
from attnpat.compiler.codegen import signature
from kernel_util import assert_close_to_reference, eager_attention
from strategies import cases, make_inputs, needs_q_inside_kv

SMALL = {
    "sliding_window": dict(window=13), "local": dict(radius=9), "longformer": dict(window=10, globals={0, 5, 40}),
    "longformer_flags": dict(window=10), "dilated": dict(window=8, dilation=3),
    "dilated_local": dict(radius=4, dilation=2), "streaming_llm": dict(sinks=3, window=10),
    "prefix_lm": dict(prefix=20), "chunked_causal": dict(chunk=16), "document_sliding_window": dict(window=9),
    "per_head": dict(windows=[4, 9, 33]),
    "bigbird": dict(block=8, window_blocks=3, global_blocks=1, random_blocks=2, key_blocks=8),
}


def _qkv(B, Hq, Hkv, N, M, D, dtype, gen):
    return (torch.randn(B, Hq, N, D, generator=gen).to(dtype), torch.randn(B, Hkv, M, D, generator=gen).to(dtype),
            torch.randn(B, Hkv, M, D, generator=gen).to(dtype))


def _check(pattern, q, k, v, *, q_offset=None, num_splits=None, what="", **inputs):
    out, lse = decode_attention(q, k, v, pattern, return_lse=True, q_offset=q_offset, num_splits=num_splits,
                                **inputs)
    ref, ref_lse = attnpat.reference_attention(q, k, v, pattern, q_offset=q_offset, return_lse=True, **inputs)
    assert out.dtype == q.dtype and out.shape == q.shape and lse.shape == q.shape[:3]
    mask = pattern.dense_mask(q.shape[2], k.shape[2], batch=q.shape[0], heads=q.shape[1], q_offset=q_offset,
                              **inputs)
    assert_close_to_reference(out, ref, eager_attention(q, k, v, mask), what)
    empty = ref_lse == float("-inf")
    assert torch.equal(lse == float("-inf"), empty), f"{what}: rows with no key differ"
    assert (out[empty] == 0).all(), f"{what}: a row with no allowed key is not 0"
    tol = 1e-4 if q.dtype == torch.float32 else 2e-2
    assert torch.allclose(lse[~empty].double(), ref_lse[~empty], atol=tol, rtol=0), f"{what}: lse"


@settings(max_examples=max(4, settings.default.max_examples // 3))
@given(name=st.sampled_from(sorted(attnpat.library_names())), small=st.booleans(), n=st.integers(1, 16),
       m=st.integers(0, 150), heads=st.sampled_from([(1, 1), (4, 2), (6, 2), (4, 1), (3, 3)]),
       batch=st.integers(1, 2), offset=st.one_of(st.none(), st.integers(-4, 160)),
       splits=st.one_of(st.none(), st.integers(1, 5)), dtype=st.sampled_from([torch.float32, torch.float16]),
       seed=st.integers(0, 2**16), data=st.data())
def test_library_patterns_match_reference(name, small, n, m, heads, batch, offset, splits, dtype, seed, data):
    pattern = attnpat.load(name, **(SMALL.get(name, {}) if small else {}))
    assume(should_decode(n, compiled=pattern.compiled))   # score terms: not in the decode kernel yet
    if needs_q_inside_kv(pattern):   # an int[k] input read at q: every query position must be a key position
        assume(n <= m)
        offset = None if offset is None else min(max(offset, 0), m - n)
    axes = set(pattern.inputs.values())
    if "b" in axes:   # int[b] inputs (one value per sequence): strategies.make_inputs draws q and k axes only
        assume(axes == {"b"})
        inputs = {name: torch.tensor(data.draw(st.lists(st.integers(-2, m + n + 2), min_size=batch,
                                                        max_size=batch))) for name in pattern.inputs}
    else:
        inputs = make_inputs(pattern, n, m, batch, data.draw)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(batch, heads[0], heads[1], n, m, 32, dtype, gen)
    _check(pattern, q, k, v, q_offset=offset, num_splits=splits, what=f"{name} n={n} m={m} off={offset}",
           **inputs)


@settings(max_examples=max(3, settings.default.max_examples // 5))
@given(case=cases(max_len=16), splits=st.integers(1, 3))
def test_generated_patterns_match_reference(case, splits):
    s = case.shape
    try:
        case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    gen = torch.Generator().manual_seed(s.q_len * 31 + s.kv_len)
    q, k, v = _qkv(s.batch, s.heads, s.heads, s.q_len, s.kv_len, 16, torch.float32, gen)
    _check(case.pattern, q, k, v, q_offset=s.q_offset, num_splits=splits, what=case.gen.text, **case.inputs)


def test_long_cache_many_splits_and_gqa_in_bf16():
    gen = torch.Generator().manual_seed(7)
    pattern = attnpat.load("streaming_llm", sinks=4, window=100)
    q, k, v = _qkv(2, 8, 2, 1, 400, 64, torch.bfloat16, gen)
    for splits in (1, 3, 8):
        _check(pattern, q, k, v, num_splits=splits, what=f"splits={splits}")


def test_rows_with_no_key_give_zero_and_minus_inf():
    gen = torch.Generator().manual_seed(1)
    q, k, v = _qkv(1, 2, 1, 4, 20, 16, torch.float32, gen)
    out, lse = decode_attention(q, k, v, "causal", q_offset=-2, return_lse=True, num_splits=2)
    assert (out[:, :, :2] == 0).all() and (lse[:, :, :2] == float("-inf")).all()
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :, 2:]).all()
    empty_k = torch.zeros(1, 1, 0, 16)
    out = decode_attention(q, empty_k, empty_k, "causal")
    assert (out == 0).all()


def test_bad_arguments_raise_argument_errors():
    q = torch.randn(1, 2, 17, 16)
    k = torch.randn(1, 2, 30, 16)
    with pytest.raises(ArgumentError, match="at most 16"):
        decode_attention(q, k, k, "causal")
    with pytest.raises(ArgumentError, match="num_splits"):
        decode_attention(q[:, :, :1], k, k, "causal", num_splits=0)
    with pytest.raises(ArgumentError):
        decode_attention(q[:, :, :1], k[:, :1, :, :8], k[:, :1, :, :8], "causal")


def test_should_decode():
    assert should_decode(1) and should_decode(16)
    assert not should_decode(17) and not should_decode(0) and not should_decode(4, requires_grad=True)


def test_patterns_with_score_terms_are_refused_clearly():
    q = torch.randn(1, 1, 1, 16)
    for name in attnpat.library_names():
        compiled = attnpat.load(name).compiled
        if not should_decode(1, compiled=compiled):
            with pytest.raises(attnpat.PatternError, match="score terms"):
                decode_attention(q, q, q, name)


@pytest.mark.parametrize("name", ["sliding_window", "streaming_llm", "document", "per_head", "full"])
def test_kernel_definition_follows_the_signature_module(name):
    compiled = attnpat.load(name).compiled
    defs = {f.name: [a.arg for a in f.args.args] for f in ast.parse(decode_source(compiled)).body
            if isinstance(f, ast.FunctionDef)}
    assert defs["attn_decode"] == [p.name for p in signature.decode(compiled.plan).params]
    tables = {"Variant", "RowPtrP", "ColIdxP", "RowPtrF", "ColIdxF"} & set(defs["attn_decode"])
    assert bool(tables) == (compiled.plan.mode == "table")


def test_prepared_mask_and_strided_cache_views():
    gen = torch.Generator().manual_seed(5)
    pattern = attnpat.load("document_sliding_window", window=9)
    q, k, v = _qkv(2, 4, 2, 3, 90, 32, torch.float16, gen)
    doc = torch.tensor([[0] * 40 + [1] * 50, [0] * 10 + [1] * 80])
    bm = attnpat.block_mask(pattern, 3, 60, batch=2, doc=doc[:, :60])
    big_k, big_v = k, v   # a cache longer than the call: the kernel reads a strided view of its first 60 keys
    out = decode_attention(q, big_k[:, :, :60], big_v[:, :, :60], pattern, block_mask=bm, num_splits=2)
    ref = attnpat.reference_attention(q, k[:, :, :60], v[:, :, :60], pattern, doc=doc[:, :60])
    assert (out.double() - ref).abs().max().item() < 2e-3
    with pytest.raises(ArgumentError, match="block_mask"):
        decode_attention(q, k[:, :, :60], v[:, :, :60], pattern, block_mask=bm, doc=doc[:, :60])


def test_attention_chooses_the_decode_kernel_for_a_few_queries_without_grad(monkeypatch):
    from attnpat.runtime import kernel as kernel_module
    calls = []
    real = kernel_module.decode_run
    monkeypatch.setattr(kernel_module, "decode_run", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    gen = torch.Generator().manual_seed(5)
    q, k, v = _qkv(2, 4, 2, 3, 70, 16, torch.float32, gen)
    pattern = attnpat.load("sliding_window", window=13)
    out, lse = attnpat.attention(q, k, v, pattern, return_lse=True)
    assert calls == [1]
    ref, ref_lse = attnpat.reference_attention(q, k, v, pattern, return_lse=True)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=0)
    # training keeps the prefill kernel, whose backward exists; so do many queries
    attnpat.attention(q.requires_grad_(), k, v, pattern).sum().backward()
    q2, k2, v2 = _qkv(1, 2, 2, 17, 40, 16, torch.float32, gen)
    attnpat.attention(q2, k2, v2, pattern)
    assert calls == [1] and q.grad is not None
