"""The fuzz test of issue 11: no silent wrong answer, no crash.

Every generated program either raises a PatternError (at parse, check, compile, block-mask or reference
time: an evaluator refuses what it cannot compute exactly) or its block mask is sound against the dense
float64 reference on small shapes -- no allowed pair in an EMPTY tile, no masked pair in a FULL tile -- and,
for a few programs, the kernel's output agrees with the reference. The programs come from the grammar-aware
strategies of tests/strategies.py: masks over declared names of every type (resolving_texts), valid
patterns (patterns) and masks built to meet the integer corners (edge_masks: negative divisors, int32 and
int64 edges, overflowing products, compared conditions, huge range steps).

Exceptions other than PatternError fail the test: they are crashes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnpat
from attnpat.compiler.ranges import KERNEL_BITS, check_ranges
from strategies import edge_masks, patterns, resolving_texts

pytestmark = pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter")

SHAPES = [(8, 8, 4, 4, None), (5, 12, 4, 8, None), (7, 9, 2, 4, 3)]   # q_len, kv_len, block_q, block_k, q_offset


def _inputs(pattern: attnpat.Pattern, q_len: int, kv_len: int) -> dict:
    return {n: torch.arange(kv_len if a == "k" else q_len) // 3 for n, a in pattern.inputs.items()}


def _assert_sound(pattern: attnpat.Pattern, q_len, kv_len, bq, bk, q_offset, heads=2):
    """The block mask of `pattern` at one shape against the dense reference, tile by tile (a PatternError
    from either side is a refusal, which is allowed)."""
    inputs = _inputs(pattern, q_len, kv_len)
    try:
        dense = pattern.dense_mask(q_len, kv_len, heads=heads, q_offset=q_offset, **inputs)[0].numpy()
        bm = pattern.block_mask(q_len, kv_len, block_q=bq, block_k=bk, heads=heads, q_offset=q_offset, **inputs)
    except attnpat.PatternError:
        return "refused"
    kinds = bm.to_dense(batch=0)
    for h in range(heads):
        for i in range(bm.num_q_blocks):
            for j in range(bm.num_k_blocks):
                tile = dense[h, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
                kind = int(kinds[h, i, j])
                assert not (kind == 0 and tile.any()), f"EMPTY tile ({h}, {i}, {j}) has allowed pairs"
                assert not (kind == 2 and not tile.all()), f"FULL tile ({h}, {i}, {j}) has masked pairs"
    return "agreed"


def _run(text: str, name: str = "main", params: dict | None = None):
    try:
        pattern = attnpat.parse(text, name, name="fz.attn", **(params or {}))
        pattern.canonical
    except attnpat.PatternError:
        return
    for shape in SHAPES:
        _assert_sound(pattern, *shape)


@settings(max_examples=3 * settings.default.max_examples)
@given(edge_masks())
def test_fuzz_integer_corners(text):
    _run(text)


@settings(max_examples=2 * settings.default.max_examples)
@given(resolving_texts())
def test_fuzz_masks_over_declared_names(text):
    _run(text)


@given(patterns())
def test_fuzz_valid_patterns(gen):
    _run(gen.text, gen.name, gen.params)


@settings(max_examples=8, deadline=None)
@given(edge_masks(), st.sampled_from([(8, 8, None), (6, 10, 2)]))
def test_fuzz_kernel_agrees_or_refuses(text, shape):
    """A few programs through the kernel (the interpreter is slow): where the range check for the kernel's
    32-bit integers accepts the shape, the kernel must agree with the float64 reference."""
    q_len, kv_len, q_offset = shape
    try:
        pattern = attnpat.parse(text, "main", name="fz.attn")
        ref_mask = pattern.dense_mask(q_len, kv_len, q_offset=q_offset)
        q0 = kv_len - q_len if q_offset is None else q_offset
        check_ranges(pattern.compiled, (q0, q0 + q_len - 1), (0, kv_len - 1), bits=KERNEL_BITS, bands=True)
    except attnpat.PatternError:
        return
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 16, generator=g) for n in (q_len, kv_len, kv_len))
    out = attnpat.attention(q, k, v, pattern, q_offset=q_offset)
    ref = attnpat.reference_attention(q, k, v, pattern, q_offset=q_offset)
    assert ref_mask.any() or float(out.abs().max()) == 0.0
    assert float((out.double() - ref).abs().max()) < 1e-4, text


@given(edge_masks(), st.integers(-40, 40), st.integers(0, 6), st.integers(0, 6))
def test_fuzz_ranges_contain_every_value(text, q0, nq, nk):
    """compiler/ranges.py: the exact range of every integer sub-expression over a box holds the value of
    that sub-expression at every point of the box (the python column of the semantics table)."""
    from attnpat.compiler import nodes as N
    from attnpat.compiler import semantics as S
    from attnpat.compiler.ranges import expr_range
    try:
        expr = attnpat.parse(text, "main", name="fz.attn").checked.expr
    except attnpat.PatternError:
        return
    env = {"q": (q0, q0 + nq), "k": (0, nk), "h": (0, 0), "b": (0, 0)}
    ints = [e for e in N.walk(expr) if isinstance(e, (N.BinOp, N.Unary, N.Call))
            and not (isinstance(e, N.Unary) and e.op == "not") and not (isinstance(e, N.Call) and e.func == "range")]
    for e in ints:
        lo, hi = expr_range(e, env)
        for q in range(q0, q0 + nq + 1):
            for k in range(nk + 1):
                v = S.evaluate(e, "python", lambda x: {"q": q, "k": k}.get(getattr(x, "id", None),
                                                                            getattr(x, "value", None)))
                assert lo <= v <= hi, (e, q, k, v, lo, hi)
