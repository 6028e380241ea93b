"""Regression tests of issue 11, one per case: integer semantics, crashes turned into PatternErrors, bounded work.

The language's integers are exact; every evaluator computes them exactly or refuses with a RangeError (a
PatternError) that points at the sub-expression (docs/language.md, "Integer arithmetic").
"""

from __future__ import annotations

import os
import re
import stat

import pytest
import torch

import attnpat
from attnpat.cli import main, parse_set
from attnpat.compiler.ranges import KERNEL_BITS, check_ranges, expr_range, fit_to_shape
from attnpat.compiler.values import format_value
from attnpat.errors import RangeError

pytestmark = pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter")


def mask(text: str, **params) -> attnpat.Pattern:
    return attnpat.parse(f"pattern p():\n    mask {text}\n", "p", name="r.attn", **params)


def assert_block_mask_sound(p: attnpat.Pattern, q_len: int, kv_len: int, bq: int = 4, bk: int = 4, **kw):
    dense = p.dense_mask(q_len, kv_len, **kw)[0, 0].numpy()
    kinds = p.block_mask(q_len, kv_len, block_q=bq, block_k=bk, **kw).to_dense()[0]
    for i in range(kinds.shape[0]):
        for j in range(kinds.shape[1]):
            tile = dense[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
            assert not (kinds[i, j] == 0 and tile.any()) and not (kinds[i, j] == 2 and not tile.all()), (i, j)
    return dense


def kernel_error(p: attnpat.Pattern, n: int = 16, m: int = 16) -> float:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, x, 16, generator=g) for x in (n, m, m))
    out = attnpat.attention(q, k, v, p)
    return float((out.double() - attnpat.reference_attention(q, k, v, p)).abs().max())


# -- negative divisors ---------------------------------------------------------------------------------


def test_negative_divisor_keeps_residue_zero():
    p = mask("causal and k % -4 == 0")   # was: EmptyPatternError (residue 0 of a negative divisor dropped)
    dense = assert_block_mask_sound(p, 16, 16)
    assert int(dense.sum()) == sum(1 for q in range(16) for k in range(q + 1) if k % -4 == 0) == 40


def test_negative_divisor_in_a_union():
    p = mask("causal and (k % -4 == 0 or k == 1)")   # was reduced to `k == 1`
    assert "k % 4 == 0" in p.canonical.text
    assert_block_mask_sound(p, 16, 16)


@pytest.mark.parametrize("text", ["q // -4 == k // -4", "min(q, k) % -4 == -2", "(q - k) % -3 != -1"])
def test_kernel_floor_division_by_a_negative_divisor(text):
    p = mask(text)
    assert_block_mask_sound(p, 16, 16)
    assert kernel_error(p) < 1e-5


# -- integer width -------------------------------------------------------------------------------------


def test_int64_edge_constant_does_not_empty_a_tile():
    p = mask("q - k < 9223372036854775807")
    for kw in ({}, {"q_offset": 1 << 39}, {"q_offset": -(1 << 39)}):
        assert assert_block_mask_sound(p, 12, 12, **kw).all()
    assert fit_to_shape(p.canonical.ir, (0, 11), (0, 11)).value is True


def test_overflowing_products_are_refused_at_check_time_with_the_position():
    with pytest.raises(RangeError) as e:
        mask("q * 4611686018427387904 + k * 4611686018427387904 >= 0").checked
    assert e.value.span is not None and e.value.span.column == 10
    assert "64-bit" in str(e.value)


def test_reference_refuses_rather_than_wraps():
    p = mask("q * 1073741824 >= k")   # fits int64 at every int32 position, not at 2**35
    assert p.dense_mask(4, 4, q_offset=1 << 31).all()
    with pytest.raises(RangeError):
        p.dense_mask(4, 4, q_offset=1 << 35)
    # the block mask reads the canonical window, cut to the shape: exact, every tile FULL
    assert p.block_mask(4, 4, q_offset=1 << 35, block_q=2, block_k=2).counts()["FULL"] == 4


def test_kernel_ranges_name_what_overflows_int32():
    p = mask("q * 100000007 % 11 == k * 100000007 % 11")
    check_ranges(p.compiled, (0, 15), (0, 15), bits=KERNEL_BITS)   # 15 * 100000007 fits
    with pytest.raises(RangeError, match=r"'q \* 100000007' reaches") as e:
        check_ranges(p.compiled, (0, 4095), (0, 4095), bits=KERNEL_BITS)
    assert e.value.span is not None
    check_ranges(p.compiled, (0, 4095), (0, 4095), bits=64)


@pytest.mark.parametrize("text", ["q - k > -2147483647", "abs(q - k) <= 2147483647"])
def test_kernel_ranges_check_the_band_bounds(text):
    p = mask(text)
    check_ranges(p.compiled, (0, 15), (0, 15), bits=KERNEL_BITS)
    with pytest.raises(RangeError):
        check_ranges(p.compiled, (0, 15), (0, 15), bits=KERNEL_BITS, bands=True)


def test_hash_values_are_64_bit_in_the_kernel():
    p = mask("hash(q, k) % 4294967296 < 5 or not hash(q, k) % 1 < 0")   # hash() is computed in int64
    check_ranges(p.compiled, (0, 4095), (0, 4095), bits=KERNEL_BITS)
    with pytest.raises(RangeError, match="'q \\* 100000007'"):   # its arguments are computed in int32 first
        check_ranges(mask("hash(q * 100000007, k) % 3 == 0").compiled, (0, 4095), (0, 4095), bits=KERNEL_BITS)


def test_local_with_the_largest_int32_radius_is_refused_for_the_kernel():
    p = attnpat.load("local", radius=2147483647)
    with pytest.raises(RangeError):
        check_ranges(p.compiled, (0, 15), (0, 15), bits=KERNEL_BITS, bands=True)
    assert_block_mask_sound(p, 16, 16)


def test_expr_range_is_exact():
    e = mask("q * -3 + k // -2 < 0").checked.expr.left
    assert expr_range(e, {"q": (0, 10), "k": (0, 5)}) == (-30 + -3, 0)


def test_canonical_text_at_the_int64_edge_reparses():
    for text in ("q - k < -9223372036854775807 - 1", "q - k > 9223372036854775807"):
        canon = mask(text).canonical.text
        assert mask(canon).canonical.text == canon


# -- crashes that are PatternErrors now ------------------------------------------------------------------


def test_conditions_compared_lower_and_run():
    p = mask("(q < 8) == (k < 8)")   # the example of docs/language.md: was AssertionError in the lowering
    assert_block_mask_sound(p, 16, 16)
    assert kernel_error(p) < 1e-5


def test_no_assert_guards_the_compiler():
    root = os.path.join(os.path.dirname(attnpat.__file__), "compiler")
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                assert "AssertionError" not in text and not re.search(r"^\s*assert\b", text, re.M), f


@pytest.mark.parametrize("digits", [400, 5000])
def test_long_literals_are_syntax_errors(digits):
    with pytest.raises(attnpat.PatternSyntaxError, match=f"{digits} digits"):
        mask("q < " + "9" * digits)
    with pytest.raises(attnpat.PatternSyntaxError, match=f"{digits} digits"):
        parse_set("window=" + "9" * digits)


def test_huge_folded_values_are_refused_with_short_messages():
    text = "pattern p(w: int = 1):\n    mask q < w * w * w * w * w * w * w * w * w\n"
    with pytest.raises(attnpat.PatternTypeError, match=r"exceeds 2\*\*1024") as e:
        attnpat.parse(text, "p", w=10**200)
    assert len(str(e.value)) < 400
    assert format_value(10**5000) == "<a number of about 5001 digits>"
    assert format_value(frozenset({-(10**300)})) == "{-<a number of about 301 digits>}"


@pytest.mark.parametrize("argv", [["explain", "causal", "--heads", str(10**30)],
                                  ["explain", "causal", "--q-len", "16", "--q-offset", str(-10**20)],
                                  ["explain", "causal", "--q-len", str(10**30)],
                                  ["show", "causal", "--q-len", "8", "--head", str(10**30)]])
def test_cli_huge_numbers_are_usage_errors(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "too large" in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_check_does_not_block_on_a_fifo(tmp_path, capsys):
    path = tmp_path / "x.attn"
    os.mkfifo(path)
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert main(["check", str(path)]) == 1   # returns instead of blocking on open()
    assert "not a regular file" in capsys.readouterr().err


def test_a_keyword_needs_a_word_boundary():
    with pytest.raises(attnpat.PatternSyntaxError, match="'patternp'"):
        attnpat.parse("patternp():\n    mask q >= k\n")
    with pytest.raises(attnpat.PatternSyntaxError):
        attnpat.parse("pattern p():\n    maskq >= k\n")


# -- bounded work ----------------------------------------------------------------------------------------


def test_a_huge_range_stays_symbolic():
    p = attnpat.load("longformer", window=4, globals=range(0, 10**12, 7))
    assert p.params["globals"] == range(0, 10**12, 7)
    assert_block_mask_sound(p, 24, 24)


def test_a_huge_modulus_stays_opaque():
    from attnpat.compiler.ir import Opaque
    from attnpat.compiler.simplify.translate import MAX_MODULUS
    p = mask(f"(q - k) % {10**8} == 3")
    assert isinstance(p.canonical.ir, Opaque) and 10**8 > MAX_MODULUS
    assert_block_mask_sound(p, 16, 16)


def test_dilated_at_the_int32_edge_simplifies():
    p = attnpat.load("dilated", window=2**31, dilation=2**31)   # was: a hang enumerating 2**31 residues
    assert "% 2147483648" in p.canonical.text
    assert_block_mask_sound(p, 16, 16)


def test_long_chains_simplify():
    # or-chains of chunk windows (1000 terms) and and-chains of windows (2000 terms): the pairwise rules
    # stop at MAX_PAIRWISE operands, the windows of one form meet in one sweep
    p = mask(" or ".join(f"q // {c} == k // {c}" for c in range(2, 1002)))
    assert_block_mask_sound(p, 12, 12)
    p = mask(" and ".join(f"q - k != {c}" for c in range(2000)))
    assert p.canonical.text == "q - k <= -1 or q - k >= 2000"


def test_oversized_literals_are_refused_before_parsing():
    from attnpat.compiler.parse import _precheck
    from attnpat.errors import Source
    text = "pattern p():\n    mask k in [" + ", ".join(["1"] * 65537) + "]\n"
    with pytest.raises(attnpat.PatternSyntaxError, match="at most 65536 elements"):
        _precheck(text, Source("x", text))
    ok = "pattern p():\n    mask k in [" + ", ".join(["1"] * 65536) + ",]\n"
    _precheck(ok, Source("x", ok))


def test_block_masks_refuse_sizes_they_cannot_hold():
    with pytest.raises(attnpat.ArgumentError, match="blocks"):
        attnpat.load("causal").block_mask(1 << 30, 1 << 30, block_q=16, block_k=16)
    with pytest.raises(attnpat.ArgumentError, match="too large"):
        attnpat.load("causal").block_mask(16, 16, q_offset=1 << 50)


@pytest.mark.parametrize("name, kw", [("causal", {}), ("sliding_window", {"window": 7}),
                                      ("bigbird", {}), ("document", {})])
@pytest.mark.parametrize("layers, q_len, kv_len", [(1, 40, 40), (3, 40, 40), (2, 24, 40)])
def test_explain_in_slabs_equals_explain_at_once(monkeypatch, name, kw, layers, q_len, kv_len):
    """explain lowers a slab of query blocks at a time (bounded memory on long sequences): the numbers are
    those of one lowering."""
    from attnpat.compiler import analysis
    p = attnpat.load(name, **kw)
    inputs = {n: torch.arange(kv_len) // 9 for n in p.inputs}
    whole = analysis.analyze(p, q_len, kv_len, layers=layers, heads=2, block_q=8, block_k=8, **inputs)
    monkeypatch.setattr(analysis, "SLAB_TILES", 3)   # one query block (of 8 rows) per slab
    slabs = analysis.analyze(p, q_len, kv_len, layers=layers, heads=2, block_q=8, block_k=8, **inputs)
    a, b = whole.to_dict(), slabs.to_dict()
    a.pop("variants"), b.pop("variants")
    assert a == b


# -- non-finite values in the reference (the kernels' side is runtime/'s) ------------------------------------


def test_reference_masked_out_nan_values_do_not_contribute():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 8, 16, generator=g) for _ in range(3))
    v[0, 0, 5] = float("nan")   # key 5: allowed for queries 5..7 only (causal)
    out = attnpat.reference_attention(q, k, v, attnpat.load("causal"))
    assert torch.isnan(out[0, 0]).any(-1).tolist() == [False] * 5 + [True] * 3


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the NaN is the point
def test_an_infinite_score_makes_its_row_nan_in_the_reference_and_the_kernel():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 8, 16, generator=g) for _ in range(3))
    k[0, 0, 3, 0] = float("inf")   # score +inf for queries >= 3 with q[..., 0] > 0, -inf (weight 0) for the others
    p = attnpat.load("causal")
    ref = attnpat.reference_attention(q, k, v, p)
    expected = [(i >= 3 and bool(q[0, 0, i, 0] > 0)) for i in range(8)]
    assert torch.isnan(ref[0, 0]).any(-1).tolist() == expected and any(expected)
    out = attnpat.attention(q, k, v, p)
    assert torch.isnan(out[0, 0]).any(-1).tolist() == expected
    assert torch.allclose(out[0, 0][~torch.tensor(expected)].double(), ref[0, 0][~torch.tensor(expected)], atol=1e-5)


def test_launch_options_out_of_any_targets_range_are_refused():
    import attnpat
    for option, value, message in [("block_n", 2 ** 40, "power of two from 16 to 512"),
                                   ("bwd_block_m", 1024, "power of two from 16 to 512"),
                                   ("num_warps", 64, "1, 2, 4, 8, 16 or 32"),
                                   ("dq_num_warps", 3, "1, 2, 4, 8, 16 or 32"),
                                   ("num_stages", 100, "from 1 to 8")]:
        with pytest.raises(attnpat.ArgumentError, match=message):
            attnpat.compile("causal", **{option: value})
