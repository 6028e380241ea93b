"""Issue 11: a NaN or an inf in a key's v row reaches only the rows the pattern lets attend that key.

docs/kernels.md ("Non-finite values") and docs/backward.md say what the kernels give. Here the forward, the
decode kernel and the gradients are compared with the float64 reference computed with the poisoned v rows
replaced by 0 (a masked-out key cannot matter), on the rows and keys no poisoned row touches; the poisoned
rows must be non-finite wherever the reference with the real v is, and the log-sum-exp and dV never change.
With dO = 0 on the poisoned rows (a loss that ignores them) every gradient is the clean reference's.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import attnpat
from attnpat.errors import EmptyPatternError
from attnpat.reference import dense_score_terms, reference_attention
from attnpat.runtime.decode import decode_attention, should_decode
from kernel_util import FLOOR, FUDGE, eager_attention, own_cache  # noqa: F401  (autouse: a temporary cache)
from strategies import cases

pytestmark = [pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

POISONS = (float("nan"), float("inf"), float("-inf"))
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRAD_FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}   # as tests/test_backward.py
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _examples(divisor: int) -> int:
    """A share of the profile's example count (the interpreter is slow): 40 // divisor under 'ci'."""
    return max(4, settings.default.max_examples // divisor)


# -- helpers ------------------------------------------------------------------------------------------


def _qkv(B, Hq, Hkv, N, M, D, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Hq, N, D, generator=g), torch.randn(B, Hkv, M, D, generator=g),
            torch.randn(B, Hkv, M, D, generator=g), torch.randn(B, Hq, N, D, generator=g))


def _poison(v: torch.Tensor, data, most: int = 3) -> torch.Tensor:
    """Put NaN / +inf / -inf into 1 or 2 columns of up to `most` drawn key rows of v (in place); the rows'
    flags [B, Hkv, M]."""
    B, H, M, D = v.shape
    bad = torch.zeros(B, H, M, dtype=torch.bool)
    for _ in range(data.draw(st.integers(1, most), label="poisoned rows")):
        b, h, j = (data.draw(st.integers(0, n - 1)) for n in (B, H, M))
        for c in data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=2), label="columns"):
            v[b, h, j, c] = data.draw(st.sampled_from(POISONS))
        bad[b, h, j] = True
    return bad


def _poisoned(mask: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """Rows [B, Hq, N] that attend at least one key whose v row is poisoned."""
    group = mask.shape[1] // bad.shape[1]
    return (mask & bad.repeat_interleave(group, 1)[:, :, None, :]).any(-1)


def _untouched_keys(mask: torch.Tensor, rows: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Keys [B, Hkv, M] that no poisoned row of their group's query heads attends."""
    B, Hq, _, M = mask.shape
    seen = (mask & rows[..., None]).any(2).view(B, kv_heads, Hq // kv_heads, M).any(2)
    return ~seen


def _within(got, ref, base, floor, what):
    """|got - ref| <= FUDGE x |base - ref| + floor (max-abs, floor scaled by the reference's size)."""
    if not got.numel():
        return
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got.double() - ref).abs().max().item()
    base_err = (base.double() - ref).abs().max().item()
    bound = FUDGE * base_err + floor * (1.0 + ref.abs().max().item())
    assert err <= bound, f"{what}: error {err:.3g} > {bound:.3g} (eager {base_err:.3g})"


def _check_forward(out, lse, q, k, v, bad, pattern, *, q_offset=None, what="", **inputs):
    """Rows that attend no poisoned key equal the clean reference; the others are non-finite at least where
    the reference is; the log-sum-exp is the clean one everywhere. Returns the poisoned rows."""
    B, Hq, N, _ = q.shape
    M = k.shape[2]
    clean_v = v.masked_fill(bad[..., None], 0.0)
    ref, ref_lse = reference_attention(q, k, clean_v, pattern, q_offset=q_offset, return_lse=True, **inputs)
    real = reference_attention(q, k, v, pattern, q_offset=q_offset, **inputs)
    mask = pattern.dense_mask(N, M, batch=B, heads=Hq, q_offset=q_offset, **inputs)
    rows = _poisoned(mask, bad)
    assert torch.equal((~torch.isfinite(real)).any(-1), rows), f"{what}: the reference's poisoned rows"
    terms = dense_score_terms(pattern, N, M, B, Hq, q_offset, inputs)
    eager = eager_attention(q, k, clean_v, mask, None, terms)
    _within(out[~rows], ref[~rows], eager[~rows], FLOOR[q.dtype], f"{what}: clean rows")
    assert (~torch.isfinite(out[rows]) >= ~torch.isfinite(real[rows])).all(), f"{what}: poisoned rows"
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)) and not torch.isnan(lse).any(), what
    finite = ~torch.isneginf(ref_lse)
    if finite.any():
        tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[q.dtype]
        err = (lse.double()[finite] - ref_lse[finite]).abs().max().item()
        assert err <= tol * max(1.0, ref_lse[finite].abs().max().item()), f"{what}: lse error {err}"
    return rows


def _check_backward(pattern, q, k, v, do, bad, *, q_offset=None, what="", **inputs):
    """Gradients: dq of clean rows, dk of keys only clean rows attend and dv of every key equal the clean
    reference's; with dO = 0 on the poisoned rows (a loss that ignores them, as for padding) every gradient
    does, and all are finite."""
    B, Hq, N, _ = q.shape
    Hkv, M = k.shape[1], k.shape[2]
    dtype = q.dtype
    mask = pattern.dense_mask(N, M, batch=B, heads=Hq, q_offset=q_offset, **inputs)
    rows = _poisoned(mask, bad)
    keys = _untouched_keys(mask, rows, Hkv)
    terms = dense_score_terms(pattern, N, M, B, Hq, q_offset, inputs)
    clean_v = v.masked_fill(bad[..., None], 0.0)
    for ignored in (False, True):
        grad_out = do.masked_fill(rows[..., None], 0.0) if ignored else do

        def grads(fn, tensors, out_dtype):
            leaves = [t.detach().to(out_dtype).clone().requires_grad_() for t in tensors]
            out = fn(*leaves)
            out.backward(grad_out.to(out_dtype))
            return [out.detach()] + [t.grad for t in leaves]

        out, dq, dk, dv = grads(lambda a, b, c: attnpat.attention(a, b, c, pattern, q_offset=q_offset, **inputs),
                                (q, k, v), dtype)
        _, rq, rk, rv = grads(lambda a, b, c: reference_attention(a, b, c, pattern, q_offset=q_offset, **inputs),
                              (q, k, clean_v), torch.float64)
        _, eq, ek, ev = grads(lambda a, b, c: eager_attention(a, b, c, mask, None, terms), (q, k, clean_v), dtype)
        assert (~torch.isfinite(out[rows])).any(-1).all(), f"{what}: a poisoned row's output is finite"
        sel_q, sel_k = (slice(None), slice(None)) if ignored else (~rows, keys)
        _within(dq[sel_q], rq[sel_q], eq[sel_q], GRAD_FLOOR[dtype], f"{what}: dq (ignored={ignored})")
        _within(dk[sel_k], rk[sel_k], ek[sel_k], GRAD_FLOOR[dtype], f"{what}: dk (ignored={ignored})")
        _within(dv, rv, ev, GRAD_FLOOR[dtype], f"{what}: dv (ignored={ignored})")
        if not ignored:   # the loss reads a non-finite output: that row's dq is not finite, as in float64
            assert (~torch.isfinite(dq[rows])).any(-1).all(), f"{what}: a poisoned row's dq is finite"


def _kv_heads(case, data, gqa: bool) -> int:
    """The KV heads of a generated case (a divisor of its heads with GQA); assume(False) for an empty
    pattern."""
    try:
        case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    s = case.shape
    kv_heads = s.heads
    if gqa and s.heads > 1:
        kv_heads = data.draw(st.sampled_from([h for h in range(1, s.heads) if s.heads % h == 0]))
    return kv_heads


def _library_inputs(pattern, N, M, heads):
    """Runtime inputs of a library pattern for small shapes (documents of 9 keys, flags, lengths, sinks)."""
    out = {}
    terms = pattern.compiled.checked.scores
    for d in (terms.inputs if terms is not None else ()):
        out[d.name] = torch.linspace(-1.0, 1.0, heads)
    for name, axis in pattern.inputs.items():
        if axis == "b":
            out[name] = torch.tensor(M * 2 // 3)
        elif name == "is_global":
            out[name] = (torch.arange(M) % 7 == 0).long()
        else:
            out[name] = torch.arange(N if axis == "q" else M) // 9 + (3 if name == "prefix_len" else 0)
    return out


LIBRARY = attnpat.library_names()
SMALL = {"sliding_window": dict(window=9), "local": dict(radius=5), "longformer": dict(window=6, globals={0, 5}),
         "longformer_flags": dict(window=6), "dilated": dict(window=8, dilation=3), "prefix_lm": dict(prefix=9),
         "streaming_llm": dict(sinks=2, window=8), "chunked_causal": dict(chunk=16), "dilated_local": dict(radius=4)}


# -- the case ---------------------------------------------------------------------------------


def test_causal_nan_in_v_at_key_j_poisons_no_row_before_j():
    """The issue's case: causal, NaN in v at key 21 (a PARTIAL tile of 16 x 16 blocks): rows < 21 are the
    clean reference's, rows 21..31 (its PARTIAL tile) are NaN in every column, rows 32.. (a FULL tile) are NaN
    in the poisoned column only, as in the reference; lse is the clean one; gradients per docs/backward.md."""
    q, k, v, do = _qkv(1, 2, 1, 40, 40, 16, seed=3)
    j, c = 21, 5
    v[0, 0, j, c] = float("nan")
    p = attnpat.load("causal")
    kernel = attnpat.compile(p, block_m=16, block_n=16)
    out, lse = kernel(q, k, v, return_lse=True)
    bad = torch.zeros(1, 1, 40, dtype=torch.bool)
    bad[0, 0, j] = True
    rows = _check_forward(out, lse, q, k, v, bad, p, what="causal")
    assert rows[0, :, :j].logical_not().all() and rows[0, :, j:].all()
    assert torch.isnan(out[0, :, j:32]).all()
    assert torch.isnan(out[0, :, 32:, c]).all() and torch.isfinite(out[0, :, 32:, :c]).all()
    _check_backward(p, q, k, v, do, bad, what="causal backward")
    # decode: rows 37..39 attend key 21; rows 19 and 20 do not, though their key tile holds it
    dec, dec_lse = decode_attention(q[:, :, -3:], k, v, p, return_lse=True)
    assert _check_forward(dec, dec_lse, q[:, :, -3:], k, v, bad, p, what="decode").all()
    dec, dec_lse = decode_attention(q[:, :, 19:21], k, v, p, return_lse=True, q_offset=19)
    assert not _check_forward(dec, dec_lse, q[:, :, 19:21], k, v, bad, p, q_offset=19, what="decode").any()
    assert torch.isfinite(dec).all()


def test_padding_keys_with_garbage_v_do_not_reach_the_valid_rows():
    """causal_padded: keys past a sequence's length are masked for every row, so a NaN or an inf in their v
    rows changes no output, lse or gradient (the rows past the length attend nothing)."""
    B, H, N, D = 2, 2, 24, 16
    q, k, v, do = _qkv(B, H, H, N, N, D, seed=5)
    lengths = torch.tensor([17, 9])
    v[0, :, 17:] = float("nan")
    v[1, :, 9:, 3] = float("-inf")
    bad = ~torch.isfinite(v).all(-1)
    p = attnpat.load("causal_padded")
    out, lse = attnpat.attention(q, k, v, p, return_lse=True, seq_len=lengths)
    rows = _check_forward(out, lse, q, k, v, bad, p, what="causal_padded", seq_len=lengths)
    assert not rows.any() and torch.isfinite(out).all()
    _check_backward(p, q, k, v, do, bad, what="causal_padded backward", seq_len=lengths)


# -- properties ---------------------------------------------------------------------------------------


@settings(max_examples=_examples(4), **SETTINGS)
@given(case=cases(max_len=64, max_heads=4), dtype=st.sampled_from(DTYPES), d=st.sampled_from([16, 32]),
       gqa=st.booleans(), data=st.data())
def test_forward_of_generated_patterns_with_poisoned_v_rows(case, dtype, d, gqa, data):
    s = case.shape
    kv_heads = _kv_heads(case, data, gqa)
    q, k, v, _ = _qkv(s.batch, s.heads, kv_heads, s.q_len, s.kv_len, d, seed=s.q_len * 31 + s.kv_len)
    bad = _poison(v, data)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    blocks = data.draw(st.sampled_from([dict(block_m=16, block_n=16), dict(block_m=32, block_n=16), {}]))
    out, lse = attnpat.compile(case.pattern, **blocks)(q, k, v, q_offset=s.q_offset, return_lse=True,
                                                       **case.inputs)
    _check_forward(out, lse, q, k, v, bad, case.pattern, q_offset=s.q_offset, what=case.gen.text, **case.inputs)


@pytest.mark.parametrize("name", LIBRARY)
def test_forward_of_library_patterns_with_poisoned_v_rows(name):
    B, Hq, Hkv, N, M, D = 1, 4, 2, 40, 48, 16
    p = attnpat.load(name, **SMALL.get(name, {}))
    q, k, v, _ = _qkv(B, Hq, Hkv, N, M, D, seed=len(name))
    g = torch.Generator().manual_seed(len(name))
    bad = torch.rand(B, Hkv, M, generator=g) < 0.08
    bad[0, 0, 30] = True
    for i, (h, j) in enumerate(bad[0].nonzero().tolist()):
        v[0, h, j, (7 * i) % D] = POISONS[i % 3]
    inputs = _library_inputs(p, N, M, Hq)
    out, lse = attnpat.compile(p, block_m=16, block_n=16)(q, k, v, return_lse=True, **inputs)
    _check_forward(out, lse, q, k, v, bad, p, what=name, **inputs)


@settings(max_examples=_examples(6), **SETTINGS)
@given(case=cases(max_len=48, max_heads=4), dtype=st.sampled_from(DTYPES), gqa=st.booleans(), data=st.data())
def test_gradients_of_generated_patterns_with_poisoned_v_rows(case, dtype, gqa, data):
    s = case.shape
    kv_heads = _kv_heads(case, data, gqa)
    q, k, v, do = _qkv(s.batch, s.heads, kv_heads, s.q_len, s.kv_len, 16, seed=s.q_len * 7 + s.kv_len)
    bad = _poison(v, data)
    q, k, v, do = (t.to(dtype) for t in (q, k, v, do))
    _check_backward(case.pattern, q, k, v, do, bad, q_offset=s.q_offset, what=case.gen.text, **case.inputs)


@pytest.mark.parametrize("name", ["causal", "sliding_window", "bigbird", "document", "gpt_oss_local", "prefix_lm"])
def test_gradients_of_library_patterns_with_poisoned_v_rows(name):
    B, Hq, Hkv, N, M, D = 1, 4, 2, 40, 40, 16
    p = attnpat.load(name, **SMALL.get(name, {}))
    q, k, v, do = _qkv(B, Hq, Hkv, N, M, D, seed=len(name) + 1)
    bad = torch.zeros(B, Hkv, M, dtype=torch.bool)
    for i, (h, j) in enumerate(((0, 3), (1, 20), (0, 33))):
        v[0, h, j, i] = POISONS[i]
        bad[0, h, j] = True
    _check_backward(p, q, k, v, do, bad, what=name, **_library_inputs(p, N, M, Hq))


@settings(max_examples=_examples(5), **SETTINGS)
@given(case=cases(max_len=80, max_heads=4), n=st.integers(1, 16), dtype=st.sampled_from(DTYPES),
       gqa=st.booleans(), data=st.data())
def test_decode_with_poisoned_v_rows(case, n, dtype, gqa, data):
    s = case.shape
    try:
        supported = should_decode(1, compiled=case.pattern.compiled)
    except EmptyPatternError:
        supported = False
    assume(supported and s.q_offset is None)
    assume(all(axis == "k" for axis in case.pattern.inputs.values()))   # others were drawn for q_len
    kv_heads = _kv_heads(case, data, gqa)
    n = min(n, s.kv_len)
    q, k, v, _ = _qkv(s.batch, s.heads, kv_heads, n, s.kv_len, 16, seed=s.kv_len * 13 + n)
    bad = _poison(v, data)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out, lse = decode_attention(q, k, v, case.pattern, return_lse=True, **case.inputs)
    _check_forward(out, lse, q, k, v, bad, case.pattern, what=case.gen.text, **case.inputs)


def test_kv_cache_ring_slot_of_a_poisoned_position_stops_mattering():
    """streaming_llm through attnpat.KVCache: a NaN v at position 5 poisons the queries whose window holds
    it; once the window has moved past it (its ring slot still holding the NaN until overwritten), the
    outputs are finite again and equal the reference's."""
    p = attnpat.load("streaming_llm", sinks=2, window=6)
    cache = attnpat.KVCache(p, batch=1, kv_heads=1, head_dim=16, dtype=torch.float32)
    q, k, v, _ = _qkv(1, 2, 1, 20, 20, 16, seed=9)
    v[0, 0, 5, 2] = float("nan")
    outs = torch.cat([cache.attend(q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1]) for i in range(20)], 2)
    bad = ~torch.isfinite(v).all(-1)
    rows = _poisoned(p.dense_mask(20, 20, heads=2), bad)
    assert rows[0, 0, 5] and rows[0, 0, -1].logical_not()   # the window moves past position 5
    clean = reference_attention(q, k, v.masked_fill(bad[..., None], 0.0), p)
    assert (~torch.isfinite(outs[rows])).any(-1).all()
    assert torch.allclose(outs[~rows].double(), clean[~rows], atol=1e-5)


def test_nonfinite_rows_flags_each_key_row_and_leaves_v_alone():
    """runtime.launch.nonfinite_rows: one int8 flag per key row of v (NaN, +inf or -inf anywhere in it)."""
    from attnpat.runtime.launch import nonfinite_rows
    v = torch.randn(2, 3, 7, 16, dtype=torch.float16)
    v[1, 2, 4, 9], v[0, 1, 0, 0], v[0, 0, 6, 15] = float("nan"), float("inf"), float("-inf")
    before = v.clone()
    flags = nonfinite_rows(v)
    assert flags.dtype == torch.int8 and flags.shape == (2, 3, 7)
    assert flags.nonzero().tolist() == [[0, 0, 6], [0, 1, 0], [1, 2, 4]]
    assert torch.equal(v.isnan(), before.isnan()) and torch.equal(v.nan_to_num(), before.nan_to_num())
    assert math.isnan(float(v[1, 2, 4, 9]))
