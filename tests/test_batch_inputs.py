"""Per-sequence runtime inputs (`input x: int[b]`, read as `x[b]`) through every stage: the checker's rules,
the reference's shapes, the closed-form lowering, the kernels (forward and backward, under the interpreter)
and the command line. Expected masks are built here, loop by loop, from the documented meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnpat
from attnpat.cli import main
from attnpat.reference import reference_attention

PREFIX = "pattern p():\n    input n: int[b]\n    mask causal or k < n[b]\n"


def _expected(lengths, q_len, kv_len, *, padded: bool, q_offset=None):
    """[B, 1, q_len, kv_len]: causal or k < n (prefix LM), or causal and k < n (padding), per sequence."""
    q0 = kv_len - q_len if q_offset is None else q_offset
    out = np.zeros((len(lengths), 1, q_len, kv_len), bool)
    for b, n in enumerate(lengths):
        for i in range(q_len):
            for k in range(kv_len):
                causal = k <= q0 + i
                out[b, 0, i, k] = (causal and k < n) if padded else (causal or k < n)
    return out


def _exact_tiles(dense: np.ndarray, bq: int, bk: int) -> np.ndarray:
    """Tile kinds (0 EMPTY, 1 PARTIAL, 2 FULL) of a dense [B, H, Q, K] mask, tile by tile."""
    B, H, Q, K = dense.shape
    nq, nk = -(-Q // bq), -(-K // bk)
    out = np.zeros((B, H, nq, nk), np.uint8)
    for i in range(nq):
        for j in range(nk):
            t = dense[:, :, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
            out[:, :, i, j] = np.where(t.all((2, 3)), 2, np.where(t.any((2, 3)), 1, 0))
    return out


# -- the checker ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("decl, index, message", [
    ("n: int[b]", "n[q]", "'n' is int[b] (one value per sequence); index it by b: 'n[b]'"),
    ("n: int[b]", "n[k - 1]", "index it by b"),
    ("n: int[k]", "n[b]", "'n' is int[k] (one value per key); only an int[b] input can be indexed by b"),
    ("n: int[q]", "n[b]", "only an int[b] input can be indexed by b"),
])
def test_b_indexes_exactly_the_per_sequence_inputs(decl, index, message):
    text, column = f"pattern p():\n    input {decl}\n    mask k < {index}\n", 16
    with pytest.raises(attnpat.PatternTypeError) as info:
        attnpat.parse(text, name="p.attn")
    err = info.value
    assert message in err.message
    assert (err.span.source.name, err.span.line, err.span.column) == ("p.attn", 3, column)
    assert "p.attn:3:16" in str(err) and "^" in str(err)


def test_a_per_sequence_input_is_not_a_read_of_b():
    p = attnpat.parse(PREFIX)
    assert p.inputs == {"n": "b"}
    assert not p.compiled.plan.uses_b and p.compiled.plan.mode == "table"
    # a bare b still reads the batch index
    q = attnpat.parse("pattern p():\n    input n: int[b]\n    mask causal or k < n[b] + b\n")
    assert q.compiled.plan.uses_b
    # one axis, one key: int[q] and int[b] inputs of the same text are different patterns
    r = attnpat.parse("pattern p():\n    input n: int[q]\n    mask causal or k < n[q]\n")
    assert p.compiled.key != r.compiled.key


# -- shapes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [[3, 4, 5], [[3, 4]], torch.tensor([[1, 2], [3, 4]])])
def test_a_wrong_shape_says_one_value_per_sequence(value):
    with pytest.raises(attnpat.InputError, match=r"input 'n' is int\[b\]: give one value per sequence, "
                                                 r"shape \[batch\] \(\[2\] here"):
        attnpat.parse(PREFIX).dense_mask(4, 4, batch=2, n=value)


def test_missing_and_float_inputs_are_clear_errors():
    p = attnpat.parse(PREFIX)
    with pytest.raises(attnpat.InputError, match=r"needs runtime input 'n' \(int\[b\]: one integer per sequence"):
        p.dense_mask(4, 4)
    with pytest.raises(attnpat.InputError, match="integer"):
        p.dense_mask(4, 4, n=torch.tensor([1.5]))


@pytest.mark.parametrize("given", [3, torch.tensor(3), torch.tensor([3]), [3]])
def test_one_value_is_shared_by_the_batch(given):
    got = attnpat.parse(PREFIX).dense_mask(6, 9, batch=3, n=given).numpy()
    assert np.array_equal(got, _expected([3, 3, 3], 6, 9, padded=False))


def test_dense_mask_per_sequence_and_with_an_offset():
    lengths = [0, 2, 7, 12]
    got = attnpat.load("causal_padded").dense_mask(5, 10, batch=4, q_offset=1, seq_len=torch.tensor(lengths))
    assert np.array_equal(got.numpy(), _expected(lengths, 5, 10, padded=True, q_offset=1))


# -- the closed-form lowering --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, padded", [("prefix_lm_lengths", False), ("causal_padded", True)])
def test_closed_form_tiles_are_the_exact_tiles(name, padded):
    rng = np.random.default_rng(5)
    p = attnpat.load(name)
    key = next(iter(p.inputs))
    for q_len, kv_len, bq, bk in ((13, 13, 4, 4), (7, 20, 2, 8), (32, 32, 8, 4)):
        lengths = rng.integers(-2, kv_len + 3, 3).tolist()
        bm = p.block_mask(q_len, kv_len, block_q=bq, block_k=bk, batch=3, **{key: torch.tensor(lengths)})
        want = _exact_tiles(_expected(lengths, q_len, kv_len, padded=padded), bq, bk)
        assert np.array_equal(np.stack([bm.to_dense(batch=b) for b in range(3)]), want)


# -- kernels ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["prefix_lm_lengths", "causal_padded"])
def test_kernels_match_the_reference_forward_and_backward(name):
    torch.manual_seed(0)
    p = attnpat.load(name)
    key = next(iter(p.inputs))
    lengths = torch.tensor([0, 9, 24])
    q, k, v = (torch.randn(3, 2, 24, 16, requires_grad=True) for _ in range(3))
    out = attnpat.attention(q, k, v, p, **{key: lengths})
    out.backward(torch.ones_like(out))
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference_attention(qd, kd, vd, p, **{key: lengths})
    ref.backward(torch.ones_like(ref))
    assert torch.allclose(out.double(), ref, atol=1e-4)
    for got, want in ((q.grad, qd.grad), (k.grad, kd.grad), (v.grad, vd.grad)):
        assert torch.allclose(got.double(), want, atol=1e-4)
    # a prepared mask takes its batch from the [batch] input, and gives the same output
    m = attnpat.block_mask(p, 24, 24, **{key: lengths})
    assert torch.equal(attnpat.attention(q, k, v, p, block_mask=m), out)


def test_generated_kernels_load_the_value_once_per_program():
    from attnpat.compiler.codegen.backward import generate_bwd
    from attnpat.compiler.codegen.forward import generate
    c = attnpat.load("causal_padded").compiled
    fwd, bwd = generate(c.canonical, c.plan), generate_bwd(c.canonical, c.plan)
    assert fwd.count("tl.load(In0 + off_b * stride_in0)") == 1
    assert bwd.count("tl.load(In0 + off_b * stride_in0)") == 2        # dK/dV and dQ, one each
    assert "in0_q[:, None]" not in fwd + bwd                          # a scalar, never broadcast per row


# -- the command line ------------------------------------------------------------------------------------

def test_show_and_explain_take_one_value_per_sequence(capsys):
    assert main(["show", "prefix_lm_lengths", "--q-len", "6", "--kv-len", "6", "--input", "prefix_len=2,4",
                 "--batch-index", "1", "--ascii"]) == 0
    out = capsys.readouterr().out
    assert "xxxx.." in out and "input prefix_len=2,4" in out
    assert main(["explain", "causal_padded", "--q-len", "32", "--kv-len", "32", "--input", "seq_len=5,32"]) == 0
    assert "batch=2" in capsys.readouterr().out
    assert main(["show", "causal_padded", "--q-len", "6", "--kv-len", "6"]) == 1
    assert "pass one value per sequence with --input seq_len=" in capsys.readouterr().err


def test_values_at_the_int32_bounds_keep_their_meaning_and_beyond_are_input_errors():
    p = attnpat.load("causal_padded")
    lengths = torch.tensor([2 ** 31 - 1, -2 ** 31])
    q, k, v = (torch.randn(2, 1, 12, 16) for _ in range(3))
    out = attnpat.attention(q, k, v, p, seq_len=lengths)
    ref = reference_attention(q.double(), k.double(), v.double(), p, seq_len=lengths)
    assert torch.allclose(out.double(), ref, atol=1e-4) and not out[1].any()   # no key: output 0
    with pytest.raises(attnpat.InputError, match=r"'seq_len' holds 2147483648 at \[1\]"):
        attnpat.block_mask(p, 12, 12, seq_len=torch.tensor([3, 2 ** 31]))


def test_a_training_step_builds_once_on_the_device():
    from attnpat.runtime.blockmask import BUILD_COUNTS
    p = attnpat.load("prefix_lm_lengths")
    m = attnpat.block_mask(p, 32, 32, prefix_len=torch.tensor([5, 20]))
    before = dict(BUILD_COUNTS)
    x = torch.randn(2, 2, 32, 16, requires_grad=True)
    h = x
    for _ in range(3):
        h = attnpat.attention(h, h, h, p, block_mask=m)
    h.sum().backward()
    assert BUILD_COUNTS["device"] - before["device"] == 1
    assert BUILD_COUNTS["closed_form"] == before["closed_form"]


@pytest.mark.parametrize("name, inputs", [
    ("prefix_lm_lengths", {"prefix_len": torch.tensor([3, 40])}),
    ("longformer_flags", {"is_global": (torch.arange(64) % 17 == 0).long()}),
])
def test_a_device_build_reads_the_device_once(name, inputs, monkeypatch):
    m = attnpat.block_mask(attnpat.load(name), 64, 64, batch=2, **inputs)
    reads = []
    for method in ("tolist", "item", "__bool__", "__int__", "__index__", "cpu", "numpy"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _f=original, _n=method, **k: (reads.append(_n), _f(self, *a, **k))[1])
    m.tables(16, 16, 2, 1)
    m.tables(32, 64, 2, 1, transposed=True)   # coarsened: no read
    monkeypatch.undo()
    assert m.builds == {(16, 16): "device", (32, 64): "derived from 16x16"}
    assert reads == ["tolist"]


def test_a_bare_b_next_to_a_per_sequence_input_reads_the_batch_index():
    p = attnpat.parse("pattern p():\n    input n: int[b]\n    mask causal and k < n[b] + 3 * b\n")
    q, k, v = (torch.randn(3, 2, 20, 16) for _ in range(3))
    n = torch.tensor([2, 5, 1])
    want = _expected([2, 8, 7], 20, 20, padded=True)
    assert np.array_equal(p.dense_mask(20, 20, batch=3, n=n).numpy(), want)
    out = attnpat.attention(q, k, v, p, n=n)
    ref = reference_attention(q.double(), k.double(), v.double(), p, n=n)
    assert torch.allclose(out.double(), ref, atol=1e-4)
    m = attnpat.block_mask(p, 20, 20, batch=3, n=n)
    assert np.array_equal(m.tile_kinds(4, 4, 3, 1), _exact_tiles(want, 4, 4))
    assert m.builds == {(4, 4): "closed_form"}   # the pattern reads b itself: per-batch conditions
