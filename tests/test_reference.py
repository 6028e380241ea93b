"""The dense reference: mask evaluation (shapes, alignment, Python integer semantics, hash, inputs) and
reference_attention against a naive float64 loop."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnpat
from attnpat.compiler.hashing import hash32
from strategies import cases, shapes

CAUSAL = attnpat.parse("pattern c():\n    mask causal\n")
FULL = attnpat.parse("pattern f():\n    mask True\n")
DOC = attnpat.parse("pattern d():\n    input doc: int[k]\n    mask causal and doc[q] == doc[k]\n")


def positions(q_len, kv_len, q_offset=None):
    return [i + (kv_len - q_len if q_offset is None else q_offset) for i in range(q_len)]


# -- dense_mask ----------------------------------------------------------------------------------------

@given(shapes())
def test_shape_dtype_and_alignment(shape):
    q_len, kv_len, batch, heads, q_offset = shape
    m = CAUSAL.dense_mask(q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset)
    assert m.shape == (batch, heads, q_len, kv_len) and m.dtype == torch.bool and m.is_contiguous()
    want = torch.tensor([[k <= pos for k in range(kv_len)] for pos in positions(q_len, kv_len, q_offset)])
    assert torch.equal(m, want.expand(batch, heads, q_len, kv_len))


def test_bottom_right_alignment():
    # 2 queries against 5 keys: the queries are the last two positions, 3 and 4
    assert CAUSAL.dense_mask(2, 5)[0, 0].int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    # an explicit offset puts row 0 at that position
    assert CAUSAL.dense_mask(2, 5, q_offset=0)[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    # more queries than keys: the first rows sit at negative positions and see nothing
    assert CAUSAL.dense_mask(3, 2)[0, 0].int().tolist() == [[0, 0], [1, 0], [1, 1]]


def test_variables_h_and_b():
    p = attnpat.parse("pattern p():\n    mask (h + b) % 2 == 0 and k == h\n")
    m = p.dense_mask(1, 3, batch=2, heads=3)
    for b in range(2):
        for h in range(3):
            assert m[b, h, 0].tolist() == [(h + b) % 2 == 0 and k == h for k in range(3)]


def test_empty_lengths():
    assert CAUSAL.dense_mask(0, 4, heads=2).shape == (1, 2, 0, 4)
    assert CAUSAL.dense_mask(3, 0).shape == (1, 1, 3, 0)
    assert DOC.dense_mask(0, 3, doc=torch.tensor([0, 0, 1])).shape == (1, 1, 0, 3)


@pytest.mark.parametrize("kwargs, name", [
    ({"q_len": -1}, "q_len"), ({"kv_len": 2.0}, "kv_len"), ({"q_len": True}, "q_len"),
    ({"batch": 0}, "batch"), ({"heads": 0}, "heads"), ({"heads": "2"}, "heads"),
])
def test_bad_sizes(kwargs, name):
    args = {"q_len": 2, "kv_len": 2, **kwargs}
    q_len, kv_len = args.pop("q_len"), args.pop("kv_len")
    with pytest.raises(attnpat.ArgumentError, match=name):
        CAUSAL.dense_mask(q_len, kv_len, **args)


@pytest.mark.parametrize("d", [1, 2, 3, 5, -2, -3])
def test_floor_division_and_modulo_match_python(d):
    p = attnpat.parse(f"pattern p():\n    mask (q - k) // {d} == (k - 2 * q) % {d} - 1\n")
    # build the expected mask with Python's own // and %
    text = f"(q - k) // {d} == (k - 2 * q) % {d} - 1"
    m = p.dense_mask(7, 9, q_offset=0)[0, 0]
    for i in range(7):
        for k in range(9):
            assert bool(m[i, k]) == ((i - k) // d == (k - 2 * i) % d - 1), (text, i, k)


@given(st.integers(-50, 50), st.integers(1, 9), st.integers(-9, -1))
def test_division_of_negative_numbers_per_point(shift, pos, neg):
    p = attnpat.parse(f"pattern p(s: int = 0, a: int = 1, b2: int = -1):\n"
                      f"    mask (q - k + s) // a == (q - k + s) // a and (k - q - s) % b2 <= 0 and "
                      f"(q - k + s) % a >= 0\n", s=shift, a=pos, b2=neg)
    # the three conjuncts are true in Python for every value: floor semantics (not truncation)
    assert bool(p.dense_mask(6, 6).all())
    q = attnpat.parse("pattern p(s: int = 0, a: int = 1):\n    mask (q - k + s) % a == r\n    r = 0\n", s=shift, a=pos)
    m = q.dense_mask(5, 8, q_offset=0)[0, 0]
    assert [[bool(m[i, k]) for k in range(8)] for i in range(5)] == \
        [[(i - k + shift) % pos == 0 for k in range(8)] for i in range(5)]


def test_hash_matches_hash32_on_python_ints():
    p = attnpat.parse("pattern p():\n    mask hash(q, k - q, h) % 7 < 3\n")
    m = p.dense_mask(6, 8, heads=2, q_offset=0)
    for h in range(2):
        for i in range(6):
            for k in range(8):
                assert bool(m[0, h, i, k]) == (hash32(i, k - i, h) % 7 < 3)


def test_hash_of_constants_folds_to_the_same_value():
    folded = attnpat.parse("pattern p():\n    mask hash(3, -4) % 1000 == k\n").expression()
    assert folded == f"{hash32(3, -4) % 1000} == k"
    p = attnpat.parse(f"pattern p():\n    mask hash(q, k - 7) == {hash32(3, -4)}\n")
    m = p.dense_mask(6, 6, q_offset=0)[0, 0]
    assert m.nonzero().tolist() == [[3, 3]]


@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=4))
def test_hash32_is_the_same_on_ints_and_tensors(xs):
    want = hash32(*xs)
    assert 0 <= want < 2**32
    assert int(hash32(*[torch.tensor(x, dtype=torch.int64) for x in xs])) == want


def test_per_head_lists():
    p = attnpat.parse("pattern p(ws: list = [1, 3]):\n    mask 0 <= q - k < ws[h % len(ws)]\n")
    m = p.dense_mask(5, 5, heads=3)[0]
    for h, w in enumerate([1, 3, 1]):
        assert m[h].sum(-1).tolist() == [min(i + 1, w) for i in range(5)]
    bad = attnpat.parse("pattern p():\n    mask q - k < [1, 2][h]\n")
    with pytest.raises(attnpat.ArgumentError, match="list index 2 is out of range.*number of heads"):
        bad.dense_mask(2, 2, heads=3)


def test_membership_in_ranges_and_sets():
    p = attnpat.parse("pattern p():\n    mask k in range(8, 0, -3) or k in {0, 1} or k - q in range(-1, 1)\n")
    m = p.dense_mask(1, 10, q_offset=5)[0, 0, 0]
    want = [k in range(8, 0, -3) or k in {0, 1} or (k - 5) in range(-1, 1) for k in range(10)]
    assert m.tolist() == want
    empty = attnpat.parse("pattern p():\n    mask k in {} or k in range(3, 3)\n")
    assert not empty.dense_mask(2, 4).any()


# -- runtime inputs ------------------------------------------------------------------------------------

def test_document_ids():
    doc = torch.tensor([0, 0, 1, 1, 1, 2])
    m = DOC.dense_mask(6, 6, doc=doc)[0, 0]
    assert m.tolist() == [[k <= i and doc[i] == doc[k] for k in range(6)] for i in range(6)]


def test_inputs_per_batch_shared_and_dtypes():
    rows = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    per_batch = DOC.dense_mask(4, 4, batch=2, doc=rows)
    for b in range(2):
        assert torch.equal(per_batch[b, 0], DOC.dense_mask(4, 4, doc=rows[b])[0, 0])
    shared = DOC.dense_mask(4, 4, batch=2, doc=rows[0])
    assert torch.equal(shared[0], shared[1])
    for dtype in (torch.int32, torch.int16, torch.uint8, torch.bool):
        assert torch.equal(DOC.dense_mask(4, 4, doc=rows[1].to(dtype)), DOC.dense_mask(4, 4, doc=rows[1]))
    assert torch.equal(DOC.dense_mask(4, 4, doc=[0, 1, 1, 1]), DOC.dense_mask(4, 4, doc=rows[1]))
    assert torch.equal(DOC.dense_mask(4, 4, doc=rows[:1]), DOC.dense_mask(4, 4, doc=rows[0]))


def test_int_q_inputs_are_indexed_by_query_row():
    # one value per query row (q_len of them), whatever the rows' absolute positions
    p = attnpat.parse("pattern p():\n    input seg: int[q]\n    mask k < seg[q]\n")
    m = p.dense_mask(2, 5, seg=torch.tensor([1, 4]))[0, 0]
    assert m.tolist() == [[k < 1 for k in range(5)], [k < 4 for k in range(5)]]
    with pytest.raises(attnpat.InputError, match=r"shape \[2\] or \[1, 2\]"):
        p.dense_mask(2, 5, seg=torch.tensor([1, 4, 5, 6, 7]))


def test_int_k_input_read_at_q_uses_absolute_positions():
    p = attnpat.parse("pattern p():\n    input doc: int[k]\n    mask doc[q] == k\n")
    m = p.dense_mask(2, 4, doc=torch.tensor([3, 2, 1, 0]))[0, 0]   # rows at positions 2 and 3
    assert m.int().tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(cases())
def test_generated_cases_evaluate(case):
    m = case.dense()
    s = case.shape
    assert m.shape == (s.batch, s.heads, s.q_len, s.kv_len) and m.dtype == torch.bool
    # evaluating twice, or with the inputs as int64 lists, gives the same mask
    lists = {n: t.to(torch.int64).tolist() for n, t in case.inputs.items()}
    again = case.pattern.dense_mask(s.q_len, s.kv_len, batch=s.batch, heads=s.heads, q_offset=s.q_offset, **lists)
    assert torch.equal(m, again)


# -- reference_attention -------------------------------------------------------------------------------

def naive_attention(q, k, v, mask, scale):
    """Loop-by-loop float64 softmax attention; empty rows give 0 and lse -inf."""
    B, Hq, N, D = q.shape
    Hkv, M, Dv = k.shape[1], k.shape[2], v.shape[3]
    group = Hq // Hkv
    out = torch.zeros(B, Hq, N, Dv, dtype=torch.float64)
    lse = torch.full((B, Hq, N), -math.inf, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            kvh = h // group
            for i in range(N):
                allowed = [j for j in range(M) if mask[b, h, i, j]]
                if not allowed:
                    continue
                s = [scale * sum(float(q[b, h, i, d]) * float(k[b, kvh, j, d]) for d in range(D)) for j in allowed]
                top = max(s)
                w = [math.exp(x - top) for x in s]
                total = sum(w)
                lse[b, h, i] = top + math.log(total)
                for j, wj in zip(allowed, w):
                    out[b, h, i] += (wj / total) * v[b, kvh, j].double()
    return out, lse


PATTERNS = {
    "causal": CAUSAL,
    "window": attnpat.parse("pattern w():\n    mask causal and q - k < 2\n"),
    "sparse": attnpat.parse("pattern s():\n    mask k % 3 == 0 and k > 2\n"),   # some rows have no key
    "per_head": attnpat.parse("pattern p():\n    mask (k + h) % 2 == 0 or k == q\n"),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("B, Hq, Hkv, N, M, D, Dv", [(1, 1, 1, 4, 4, 3, 3), (2, 4, 2, 3, 6, 4, 2),
                                                     (1, 3, 1, 5, 5, 2, 5), (1, 2, 2, 6, 3, 3, 3)])
def test_reference_matches_naive_loops(name, B, Hq, Hkv, N, M, D, Dv):
    gen = torch.Generator().manual_seed(B * 1000 + Hq * 100 + N * 10 + M)
    q = torch.randn(B, Hq, N, D, generator=gen)
    k = torch.randn(B, Hkv, M, D, generator=gen)
    v = torch.randn(B, Hkv, M, Dv, generator=gen)
    pattern = PATTERNS[name]
    out, lse = attnpat.reference_attention(q, k, v, pattern, return_lse=True)
    mask = pattern.dense_mask(N, M, batch=B, heads=Hq)
    want_out, want_lse = naive_attention(q, k, v, mask, 1 / math.sqrt(D))
    assert out.dtype == torch.float64 and out.shape == (B, Hq, N, Dv) and lse.shape == (B, Hq, N)
    assert torch.allclose(out, want_out, atol=1e-10)
    assert torch.equal(torch.isinf(lse), torch.isinf(want_lse))
    finite = torch.isfinite(want_lse)
    assert torch.allclose(lse[finite], want_lse[finite], atol=1e-10)
    assert torch.equal(attnpat.reference_attention(q, k, v, pattern), out)


def test_gqa_is_the_same_as_repeating_kv_heads():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 5, 4, generator=gen)
    k = torch.randn(2, 2, 7, 4, generator=gen)
    v = torch.randn(2, 2, 7, 4, generator=gen)
    p = PATTERNS["per_head"]
    grouped = attnpat.reference_attention(q, k, v, p)
    full = attnpat.reference_attention(q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1), p)
    assert torch.allclose(grouped, full, atol=1e-12)
    # MQA: one kv head for all query heads
    mqa = attnpat.reference_attention(q, k[:, :1], v[:, :1], p)
    expanded = attnpat.reference_attention(q, k[:, :1].expand(2, 6, 7, 4), v[:, :1].expand(2, 6, 7, 4), p)
    assert torch.allclose(mqa, expanded, atol=1e-12)


def test_rows_without_keys_give_zero_and_minus_infinity():
    q = torch.randn(1, 2, 4, 3)
    k = torch.randn(1, 2, 4, 3)
    v = torch.randn(1, 2, 4, 3)
    nothing = attnpat.parse("pattern n():\n    mask False\n")
    out, lse = attnpat.reference_attention(q, k, v, nothing, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and bool(torch.isneginf(lse).all())
    # q_len > kv_len with causal: the first rows sit before every key
    out, lse = attnpat.reference_attention(torch.randn(1, 1, 5, 2), torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2),
                                           CAUSAL, return_lse=True)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert out[0, 0, :2].abs().sum() == 0 and bool(torch.isneginf(lse[0, 0, :2]).all())
    assert bool(torch.isfinite(lse[0, 0, 2:]).all())
    # even with huge scores the masked entries never produce NaN
    out = attnpat.reference_attention(q * 1e30, k * 1e30, v, PATTERNS["sparse"])
    assert not torch.isnan(out).any()


def test_scale():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen) for _ in range(3))
    default = attnpat.reference_attention(q, k, v, CAUSAL)
    explicit = attnpat.reference_attention(q, k, v, CAUSAL, scale=1 / math.sqrt(8))
    assert torch.allclose(default, explicit, atol=1e-14)
    doubled = attnpat.reference_attention(q, k, v, CAUSAL, scale=0.5)
    assert torch.allclose(doubled, attnpat.reference_attention(q * 0.5 * math.sqrt(8), k, v, CAUSAL), atol=1e-12)
    uniform = attnpat.reference_attention(q, k, v, CAUSAL, scale=0.0)   # equal weights over the allowed keys
    want = torch.cumsum(v.double(), dim=2) / torch.arange(1, 5, dtype=torch.float64).view(1, 1, 4, 1)
    assert torch.allclose(uniform, want, atol=1e-12)


def test_inputs_and_q_offset_reach_the_mask():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 1, 3, 4, generator=gen)
    k = torch.randn(2, 1, 6, 4, generator=gen)
    v = torch.randn(2, 1, 6, 4, generator=gen)
    doc = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 2]])
    out, lse = attnpat.reference_attention(q, k, v, DOC, q_offset=1, return_lse=True, doc=doc)
    mask = DOC.dense_mask(3, 6, batch=2, q_offset=1, doc=doc)
    want, want_lse = naive_attention(q, k, v, mask, 0.5)
    assert torch.allclose(out, want, atol=1e-10)
    with pytest.raises(attnpat.InputError):
        attnpat.reference_attention(q, k, v, DOC)


def test_low_precision_inputs_give_float64():
    q, k, v = (torch.randn(1, 1, 3, 4).to(dt) for dt in (torch.float16, torch.bfloat16, torch.float32))
    out = attnpat.reference_attention(q, k, v, CAUSAL)
    assert out.dtype == torch.float64
    want = attnpat.reference_attention(q.float(), k.float(), v.float(), CAUSAL)
    assert torch.allclose(out, want, atol=1e-12)


@pytest.mark.parametrize("shapes_, arg", [
    (((1, 4, 3), (1, 1, 4, 3), (1, 1, 4, 3)), "'q'"),
    (((1, 1, 4, 3), (1, 4, 3), (1, 1, 4, 3)), "'k'"),
    (((1, 1, 4, 3), (1, 1, 4, 3), (1, 1, 1, 4, 3)), "'v'"),
    (((1, 3, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3)), "heads"),
    (((1, 2, 4, 3), (1, 2, 4, 5), (1, 2, 4, 3)), "'k' head_dim"),
    (((1, 2, 4, 3), (1, 2, 4, 3), (1, 2, 5, 3)), "'v'"),
    (((2, 2, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3)), "batch"),
])
def test_argument_errors(shapes_, arg):
    q, k, v = (torch.randn(*s) for s in shapes_)
    with pytest.raises(attnpat.ArgumentError) as info:
        attnpat.reference_attention(q, k, v, CAUSAL)
    assert arg in str(info.value)
    assert isinstance(info.value, ValueError)


def test_argument_types():
    t = torch.randn(1, 1, 2, 2)
    with pytest.raises(attnpat.ArgumentError, match="'q' must be a torch.Tensor, got list"):
        attnpat.reference_attention([[1.0]], t, t, CAUSAL)
    with pytest.raises(attnpat.ArgumentError, match="'v' must be a floating-point tensor"):
        attnpat.reference_attention(t, t, torch.ones(1, 1, 2, 2, dtype=torch.int64), CAUSAL)
