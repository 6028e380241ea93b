"""Forward kernels against the float64 dense reference, under Triton's interpreter."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import attnpat
from attnpat import ArgumentError, EmptyPatternError, InputError, reference_attention
from attnpat.reference import dense_score_terms
from kernel_util import assert_close_to_reference, eager_attention
from strategies import cases

pytestmark = pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SMALL_BLOCKS = [dict(block_m=16, block_n=16), dict(block_m=32, block_n=16), dict(block_m=16, block_n=32)]


def _qkv(batch, heads, kv_heads, q_len, kv_len, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, d, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, d, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, d, generator=g).to(dtype)
    return q, k, v


def _check(pattern, q, k, v, *, q_offset=None, scale=None, what="", **options_and_inputs):
    options = {n: options_and_inputs.pop(n) for n in list(options_and_inputs) if n.startswith(("block_", "num_"))}
    inputs = options_and_inputs
    kernel = attnpat.compile(pattern, **options)
    out, lse = kernel(q, k, v, q_offset=q_offset, scale=scale, return_lse=True, **inputs)
    ref, ref_lse = reference_attention(q, k, v, pattern, q_offset=q_offset, scale=scale, return_lse=True, **inputs)
    mask = pattern.dense_mask(q.shape[2], k.shape[2], batch=q.shape[0], heads=q.shape[1], q_offset=q_offset,
                              **inputs)
    terms = dense_score_terms(pattern, q.shape[2], k.shape[2], q.shape[0], q.shape[1], q_offset, inputs)
    eager = eager_attention(q, k, v, mask, scale, terms)   # score terms (softcap, bias, sink) in q's dtype
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close_to_reference(out, ref, eager, what)
    # log-sum-exp: -inf exactly where a row has no allowed key (and no sink: then it is the sink), else close
    # to the reference
    empty = ~mask.any(-1)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), f"{what}: lse -inf rows differ"
    assert torch.equal(torch.isneginf(ref_lse), empty & (terms[2] is None)), f"{what}: reference lse"
    assert not torch.isnan(lse).any()
    finite = ~torch.isneginf(ref_lse)
    if finite.any():
        lse_err = (lse.double()[finite] - ref_lse[finite]).abs().max().item()
        tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[q.dtype]
        assert lse_err <= tol * max(1.0, ref_lse[finite].abs().max().item()), f"{what}: lse error {lse_err}"
    assert (out[empty] == 0).all(), f"{what}: a query with no allowed key must output 0"
    return kernel


@settings(max_examples=max(10, settings.default.max_examples // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(max_len=40, max_heads=3), dtype=st.sampled_from(DTYPES), d=st.sampled_from([16, 32, 48]),
       gqa=st.booleans(), blocks=st.sampled_from(SMALL_BLOCKS), data=st.data())
def test_random_patterns_match_reference(case, dtype, d, gqa, blocks, data):
    s = case.shape
    try:
        case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    kv_heads = s.heads
    if gqa and s.heads > 1:
        kv_heads = data.draw(st.sampled_from([h for h in range(1, s.heads) if s.heads % h == 0]))
    q, k, v = _qkv(s.batch, s.heads, kv_heads, s.q_len, s.kv_len, d, dtype, seed=s.q_len * 31 + s.kv_len)
    _check(case.pattern, q, k, v, q_offset=s.q_offset, what=case.gen.text, **blocks, **case.inputs)


def _library_inputs(name, n_q, n_kv, heads=3):
    p = attnpat.load(name)
    terms = p.compiled.checked.scores   # float[h] inputs of score terms: sinks, slopes
    out = {d.name: torch.linspace(-1.0, 1.5, heads) for d in (terms.inputs if terms is not None else ())}
    for inp, axis in p.inputs.items():
        length = n_kv if axis == "k" else n_q
        if axis == "b":   # one value per sequence: a prefix or sequence length inside the keys
            out[inp] = torch.tensor(n_kv * 2 // 3)
        elif inp == "doc":
            out[inp] = torch.tensor([i * 3 // length for i in range(length)])          # three documents
        elif inp == "is_global":
            out[inp] = torch.tensor([1 if i in (0, 7) else 0 for i in range(length)])
        elif inp == "prefix_len":
            out[inp] = torch.full((length,), 11)
        else:
            raise AssertionError(f"no test input for {name}.{inp}")
    return out


SMALL_PARAMS = {
    "sliding_window": dict(window=13), "local": dict(radius=9), "longformer": dict(window=10, globals={0, 5, 40}),
    "longformer_flags": dict(window=10), "dilated": dict(window=8, dilation=3), "dilated_local": dict(radius=4, dilation=2),
    "streaming_llm": dict(sinks=3, window=10), "prefix_lm": dict(prefix=20), "chunked_causal": dict(chunk=16),
    "document_sliding_window": dict(window=9), "per_head": dict(windows=[4, 9, 33]),
    "bigbird": dict(block=8, window_blocks=3, global_blocks=1, random_blocks=2, key_blocks=8),
}


@pytest.mark.parametrize("name, small", [(n, False) for n in attnpat.library_names()]
                         + [(n, True) for n in sorted(SMALL_PARAMS)])
def test_library_patterns(name, small):
    params = SMALL_PARAMS[name] if small else {}
    pattern = attnpat.load(name, **params)
    n_q, n_kv = (70, 70) if small else (50, 77)
    q, k, v = _qkv(2, 3, 3, n_q, n_kv, 32, torch.float16, seed=len(name))
    _check(pattern, q, k, v, what=name, block_m=32, block_n=16, **_library_inputs(name, n_q, n_kv))


@pytest.mark.parametrize("name", ["sliding_window", "document", "bigbird", "streaming_llm"])
def test_library_patterns_default_blocks_gqa(name):
    """The default launch configuration (128 x 64 tiles), GQA, several query blocks."""
    pattern = attnpat.load(name, **SMALL_PARAMS.get(name, {}))
    q, k, v = _qkv(1, 4, 2, 200, 200, 64, torch.bfloat16, seed=3)
    _check(pattern, q, k, v, what=name, **_library_inputs(name, 200, 200))


@pytest.mark.parametrize("d", [16, 80, 96, 128, 256])
def test_head_dims(d):
    pattern = attnpat.load("sliding_window", window=7)
    q, k, v = _qkv(1, 2, 1, 40, 40, d, torch.float16, seed=d)
    _check(pattern, q, k, v, what=f"d={d}", block_m=16, block_n=16)


def test_mqa_q_offset_scale_and_decoding():
    pattern = attnpat.load("streaming_llm", sinks=2, window=6)
    q, k, v = _qkv(2, 4, 1, 5, 60, 32, torch.float32, seed=1)          # decoding: 5 queries, 60 keys (MQA)
    _check(pattern, q, k, v, what="decode", block_m=16, block_n=16)
    _check(pattern, q, k, v, q_offset=20, scale=0.3, what="q_offset", block_m=16, block_n=16)


def test_rows_with_no_allowed_key_output_zero_and_lse_neg_inf():
    pattern = attnpat.parse("pattern late():\n    mask causal and q >= 20\n")
    q, k, v = _qkv(1, 2, 2, 48, 48, 16, torch.float16)
    out, lse = attnpat.compile(pattern, block_m=16, block_n=16)(q, k, v, return_lse=True)
    assert (out[:, :, :20] == 0).all() and torch.isneginf(lse[:, :, :20]).all()
    assert torch.isfinite(lse[:, :, 20:]).all() and not torch.isnan(out).any()


def test_runtime_inputs_change_without_recompiling():
    pattern = attnpat.load("document")
    kernel = attnpat.compile(pattern, block_m=16, block_n=16)
    q, k, v = _qkv(2, 2, 2, 40, 40, 16, torch.float32)
    module = kernel.module(q.device)
    for ids in ([0] * 10 + [1] * 30, [0] * 25 + [1] * 5 + [2] * 10):
        docs = torch.tensor([ids, list(reversed(sorted(ids)))])          # per-batch ids, [B, L]
        _check(pattern, q, k, v, what="doc", block_m=16, block_n=16, doc=docs)
        assert kernel.module(q.device) is module


def test_attention_one_call_and_equivalent_spellings_share_a_key():
    a = attnpat.parse("pattern a():\n    mask causal and q - k < 8\n")
    b = attnpat.parse("pattern b2():\n    mask 0 <= q - k < 8 and not (k > q)\n")
    assert attnpat.compile(a).key == attnpat.compile(b).key
    q, k, v = _qkv(1, 1, 1, 20, 20, 16, torch.float32)
    torch.testing.assert_close(attnpat.attention(q, k, v, a), attnpat.attention(q, k, v, b))


def test_attention_caches_specs_and_lets_patterns_go(monkeypatch):
    from attnpat import pattern as pattern_module
    from attnpat.runtime import kernel as kernel_module
    kernel_module._spec_kernel.cache_clear()
    loads = []
    real_load = pattern_module.load
    monkeypatch.setattr(pattern_module, "load", lambda *a, **kw: loads.append(a) or real_load(*a, **kw))
    q, k, v = _qkv(1, 1, 1, 20, 20, 16, torch.float32)
    first = attnpat.attention(q, k, v, "sliding_window")
    second = attnpat.attention(q, k, v, "sliding_window")
    assert loads == [("sliding_window",)]          # loaded and compiled once, not on every call
    assert torch.equal(first, second)
    assert kernel_module._spec_kernel("sliding_window") is kernel_module._spec_kernel("sliding_window")
    # a Pattern's kernel is cached while the pattern lives, and does not keep it alive
    p = attnpat.load("sliding_window", window=3)
    attnpat.attention(q, k, v, p)
    kernel = kernel_module._compiled[p]
    attnpat.attention(q, k, v, p)
    assert kernel_module._compiled[p] is kernel
    dropped = weakref.ref(p)
    del p
    gc.collect()
    assert dropped() is None
    assert all(not hasattr(kept, "pattern") for kept in kernel_module._compiled.values())   # holds no Pattern


@pytest.mark.parametrize("bad", [None, 3, b"causal", attnpat.compile])
def test_pattern_must_be_a_pattern_or_a_spec(bad):
    q, k, v = _qkv(1, 1, 1, 8, 8, 16, torch.float32)
    for call in (lambda: attnpat.attention(q, k, v, bad), lambda: attnpat.compile(bad)):
        with pytest.raises(ArgumentError, match=f"^error: 'pattern' must be a Pattern or a FILE_OR_NAME\\[:PATTERN\\] "
                                                f"string, got {type(bad).__name__}$"):
            call()


@pytest.mark.parametrize("bad, message", [
    (lambda q, k, v: (q[0], k, v), "'q' must have 4 dimensions"),
    (lambda q, k, v: (q.to(torch.int32), k, v), "'q' must be a floating-point tensor"),
    (lambda q, k, v: (q.double(), k.double(), v.double()), "'q' has dtype float64; supported"),
    (lambda q, k, v: (q, k.half(), v), "must share a dtype"),
    (lambda q, k, v: (q[:, :3], k[:, :2], v[:, :2]), "heads must be a multiple"),
    (lambda q, k, v: (q, k[..., :8], v), "'k' head_dim 8 must equal"),
    (lambda q, k, v: (q[..., :8], k[..., :8], v[..., :8]), "head_dim must be between 16 and 256"),
    (lambda q, k, v: (q, k, v[:, :, :5]), "'v' must have shape"),
    (lambda q, k, v: (q, k[:1], v[:1]), "batch sizes differ"),
])
def test_argument_errors_name_the_argument(bad, message):
    q, k, v = _qkv(2, 4, 4, 16, 16, 16, torch.float32)
    kernel = attnpat.compile("sliding_window")
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace("[", r"\[")):
        kernel(*bad(q, k, v))


def test_runtime_input_errors():
    kernel = attnpat.compile("document")
    q, k, v = _qkv(1, 1, 1, 16, 16, 16, torch.float32)
    with pytest.raises(InputError, match="needs runtime input 'doc'"):
        kernel(q, k, v)
    with pytest.raises(InputError, match=r"shape \[16\] or \[1, 16\]"):
        kernel(q, k, v, doc=torch.zeros(15, dtype=torch.int64))
    with pytest.raises(InputError, match="integer"):
        kernel(q, k, v, doc=torch.zeros(16))
    with pytest.raises(InputError, match="no runtime input 'docs'"):
        kernel(q, k, v, doc=torch.zeros(16, dtype=torch.int64), docs=1)


def test_option_errors():
    with pytest.raises(ArgumentError, match="block_m"):
        attnpat.compile("causal", block_m=24)
    with pytest.raises(ArgumentError, match="scale"):
        attnpat.compile("causal")(*_qkv(1, 1, 1, 16, 16, 16, torch.float32), scale=float("nan"))



def test_an_unknown_input_names_the_callers_pattern_even_when_an_equivalent_one_compiled_first():
    q, k, v = _qkv(1, 1, 1, 8, 8, 16, torch.float32)
    attnpat.attention(q, k, v, attnpat.load("sliding_window", window=3))
    mine = attnpat.parse("pattern mine():\n    mask q >= k and q - k < 3\n")
    assert mine.key == attnpat.load("sliding_window", window=3).key   # one kernel serves both
    with pytest.raises(attnpat.InputError, match=r"^error: pattern 'mine' has no runtime input 'doc' "
                                                 r"\(its inputs: none\)$"):
        attnpat.attention(q, k, v, mine, doc=torch.zeros(8, dtype=torch.int64))
