"""The simplifier: canonical forms agree with the checked AST everywhere; equivalent spellings share a key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import attnpat
from attnpat import EmptyPatternError
from attnpat.compiler.codegen import plan
from attnpat.compiler.ir import And, Lin, Or, to_text
from attnpat.compiler.lower import evaluate_points
from attnpat.compiler.parse import parse_module
from attnpat.compiler.simplify import normalize
from attnpat.reference import prepare_inputs, query_positions
from strategies import FACTORINGS, cases, factored_cases, operands, raw_irs


def _ir_dense(pattern, shape, inputs):
    """Evaluate the simplified IR of every (b, h) variant point by point (numpy)."""
    s = shape
    tensors = prepare_inputs(pattern.checked, s.q_len, s.kv_len, s.batch, inputs)
    variants, assignment = pattern._variants(s.heads, s.batch)
    q0 = query_positions(s.q_len, s.kv_len, s.q_offset)
    q = (q0 + np.arange(s.q_len, dtype=np.int64))[:, None]
    k = np.arange(s.kv_len, dtype=np.int64)[None, :]
    out = np.zeros((s.batch, s.heads, s.q_len, s.kv_len), bool)
    for b in range(s.batch):
        table = {n: (pattern.inputs[n], t[min(b, t.shape[0] - 1)].numpy()) for n, t in tensors.items()}
        for h in range(s.heads):
            ir = variants[assignment[b, h, 0]]
            out[b, h] = np.broadcast_to(evaluate_points(ir, q, k, table, q0), (s.q_len, s.kv_len))
    return out


@given(cases(max_len=24, max_heads=3))
def test_simplified_ir_agrees_with_the_ast_everywhere(case):
    try:
        canonical = case.pattern.canonical
    except EmptyPatternError:
        # then the pattern really allows nothing, on any grid
        assert not case.dense().any()
        return
    assert normalize(canonical.ir) == canonical.ir, "simplification is idempotent"
    dense = case.dense().numpy()
    assert (_ir_dense(case.pattern, case.shape, case.inputs) == dense).all(), canonical.text


@given(cases(max_len=16, max_heads=2, inputs=False))
def test_canonical_text_round_trips_through_the_parser(case):
    try:
        canonical = case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    again = attnpat.parse(canonical.source())
    assert again.canonical.text == canonical.text
    assert again.key == canonical.key


EQUIVALENT = [
    ["causal and q - k < 8", "q - k < 8 and k <= q", "not (k > q) and q - k <= 7", "0 <= q - k < 8",
     "k <= q and q - k < 8 and q - k < 100 and k <= q + 5", "q - k >= 0 and not (q - k >= 8)",
     "max(q - k, -1) < 8 and k - q <= 0"],
    ["abs(q - k) <= 3", "-3 <= q - k <= 3", "q - k <= 3 and k - q <= 3", "not (abs(k - q) > 3)"],
    ["causal and (k < 4 or q - k < 16)", "(q - k < 16 or k < 4) and k <= q", "(k <= 3 or 15 >= q - k) and causal"],
    ["k in {0, 1, 2, 3}", "k < 4", "k in range(0, 4)", "k <= 3 or k == 2"],
    ["(q - k) % 3 == 0 and causal", "causal and (k - q) % 3 == 0", "causal and (q - k + 3) % 3 == 0"],
    ["q - k < 4 or q - k >= 4", "True", "k >= 0"],
]


@pytest.mark.parametrize("group", EQUIVALENT, ids=lambda g: g[0])
def test_equivalent_spellings_reach_one_canonical_text_and_key(group):
    patterns = [attnpat.parse(f"pattern p():\n    mask {text}\n") for text in group]
    texts = {p.canonical.text for p in patterns}
    keys = {p.key for p in patterns}
    assert len(texts) == 1 and len(keys) == 1, texts
    # and they really are equal
    first = patterns[0].dense_mask(30, 40)
    for p in patterns[1:]:
        assert (p.dense_mask(30, 40) == first).all()


def test_library_reuse_shares_a_key_with_the_library_pattern():
    mine = attnpat.parse("pattern mine():\n    mask 0 <= q - k < 4096\n")
    assert mine.key == attnpat.load("sliding_window").key
    assert attnpat.load("sliding_window", window=8).key != mine.key


def test_windows_merge_into_one_interval_atom():
    ir = attnpat.parse("pattern p():\n    mask causal and q - k < 8 and q - k < 20\n").canonical.ir
    assert ir == Lin(1, -1, 0, 7)
    ir = attnpat.parse("pattern p():\n    mask causal and (k < 4 or q - k < 16)\n").canonical.ir
    assert isinstance(ir, And) and isinstance(ir.args[1], Or)


def test_a_pattern_that_allows_nothing_names_the_contradicting_clauses():
    text = "pattern never(w: int = 4):\n    mask causal and k > q + w\n"
    with pytest.raises(EmptyPatternError) as exc:
        attnpat.parse(text, name="never.attn").canonical
    message = str(exc.value)
    assert message.startswith("never.attn:2:10: error: pattern 'never' allows no (query, key) pair")
    assert "'k <= q' contradicts 'k > q + 4'" in message
    assert "note: 'k > q + 4' is at never.attn:2:21" in message
    with pytest.raises(EmptyPatternError, match="'k < 0' is never true"):
        attnpat.parse("pattern p():\n    mask k < 0 and q > 3\n").canonical


def test_canonical_text_is_pattern_text():
    for name in attnpat.library_names():
        c = attnpat.load(name).canonical
        module = parse_module(c.source(name))
        assert module.patterns[0].name == name


# -- distributivity: factoring common operands -------------------------------------------------------

# Every library pattern's canonical text, key and kernel plan mode, as computed before the simplifier
# learnt to factor: equivalent spellings must converge on these forms, not move the library's forms (the
# keys name cached kernels; the plans are what codegen recognises).
LIBRARY_CANONICAL = {
    "bigbird": ("abs(q // 64 - k // 64) <= 1 or hash(0, h, q // 64, k // 64) % 64 < 3 or k // 64 < 2 "
                "or q // 64 < 2", "e223e3b746eeb8089370", "table"),
    "causal": ("q - k >= 0", "af57a5e280509c94237c", "band"),
    "chunked_causal": ("q - k >= 0 and q // 8192 == k // 8192", "14b3e7990a86b6249867", "table"),
    "dilated": ("0 <= q - k <= 2047 and (q - k) % 2 == 0", "7e8997828746e4bfe24b", "band"),
    "dilated_local": ("-1024 <= q - k <= 1024 and (q - k) % 2 == 0", "8cec81f4b9188e1e45b1", "band"),
    "document": ("q - k >= 0 and doc[q] == doc[k]", "5fbd6cbc695a8383694c", "table"),
    "document_full": ("doc[q] == doc[k]", "5952113d44f206ebcd56", "table"),
    "document_sliding_window": ("0 <= q - k <= 4095 and doc[q] == doc[k]", "8992ab166f58ac30af18", "table"),
    "full": ("True", "93e19b97f864f377f701", "band"),
    "local": ("-256 <= q - k <= 256", "f554de2678d51a31ce92", "band"),
    "longformer": ("-256 <= q - k <= 256 or k <= 0 or q == 0", "d9935643263c9bb3cddd", "table"),
    "longformer_flags": ("-256 <= q - k <= 256 or is_global[k] != 0 or is_global[q] != 0", "adbd08f05411bba33c4a",
                         "table"),
    "per_head": ("q - k >= 0 and q - k < [128, 256, 512, 1024][h % 4]", "acb9c5c24f97278a0ed1", "table"),
    "prefix_lm": ("k <= 255 or q - k >= 0", "2c19d61248bbac8fa985", "band"),
    "prefix_lm_dynamic": ("q - k >= 0 or k < prefix_len[q]", "8215476bc026245e566c", "table"),
    "sliding_window": ("0 <= q - k <= 4095", "5fdbe5f9806025a929d2", "band"),
    "streaming_llm": ("q - k >= 0 and (k <= 3 or q - k <= 1019)", "6f29b2cb902db3d527ed", "band"),
}


@pytest.mark.parametrize("name", sorted(LIBRARY_CANONICAL))
def test_library_canonical_forms_and_plans_are_pinned(name):
    text, key, mode = LIBRARY_CANONICAL[name]
    canonical = attnpat.load(name).canonical
    assert (canonical.text, canonical.key, plan(canonical).mode) == (text, key, mode)
    assert normalize(canonical.ir) == canonical.ir


def _canonical(pattern: attnpat.Pattern):
    try:
        c = pattern.canonical
    except EmptyPatternError:
        return None
    return c.text, c.inputs, c.key


@given(operands(single=True), st.sampled_from(sorted(FACTORINGS)))
def test_distributed_and_factored_spellings_share_a_key(ops, name):
    distributed, factored = (_canonical(ops.load(t)) for t in FACTORINGS[name])
    if distributed is None or factored is None:
        assert distributed == factored, (ops.ops, FACTORINGS[name])
        return
    assert distributed[0] == factored[0], (ops.ops, FACTORINGS[name])
    # The key also hashes the runtime inputs the checked mask reads: one spelling may read an input that
    # the checker's constant folding removes from the other (`(a or doc[q] == doc[k]) and (a or False)`).
    if distributed[1] == factored[1]:
        assert distributed[2] == factored[2]


@given(factored_cases())
def test_factored_spellings_agree_with_the_ast_everywhere(case):
    try:
        canonical = case.pattern.canonical
    except EmptyPatternError:
        assert not case.dense().any()
        return
    assert normalize(canonical.ir) == canonical.ir, "simplification is idempotent"
    assert (_ir_dense(case.pattern, case.shape, case.inputs) == case.dense().numpy()).all(), canonical.text


@given(raw_irs(), st.lists(st.integers(0, 2), min_size=24, max_size=24).map(sorted))
def test_normalize_is_idempotent_and_exact_on_raw_ir(ir, doc):
    once = normalize(ir)
    assert normalize(once) == once
    q = np.arange(24, dtype=np.int64)[:, None]
    k = np.arange(24, dtype=np.int64)[None, :]
    table = {"doc": ("k", np.array(doc, np.int64))}
    want = np.broadcast_to(evaluate_points(ir, q, k, table, 0), (24, 24))
    got = np.broadcast_to(evaluate_points(once, q, k, table, 0), (24, 24))
    assert (want == got).all(), to_text(once)


def _mask(text: str, inputs: str = "") -> attnpat.Pattern:
    return attnpat.parse(f"pattern p(sinks: int = 4, window: int = 1020):\n{inputs}    mask {text}\n")


def test_streaming_llm_spelled_out_shares_the_library_key():
    library = attnpat.load("streaming_llm")
    spellings = ["(k <= q and k < sinks) or (k <= q and q - k < window)",
                 "k <= q and (k < sinks or q - k < window)",
                 "(q - k < window and causal) or (k < sinks and k <= q)",
                 "k <= q and (k < sinks or 0 <= q - k < window)"]
    for text in spellings:
        p = _mask(text)
        assert (p.canonical.text, p.key) == (library.canonical.text, library.key), text
        assert plan(p.canonical).mode == "band"


def test_factoring_a_runtime_input_comparison():
    doc = "    input doc: int[k]\n"
    a = _mask("(k <= q and doc[q] == doc[k]) or (k <= q and k < sinks)", doc)
    b = _mask("k <= q and (doc[q] == doc[k] or k < sinks)", doc)
    assert a.key == b.key
    assert a.canonical.text == "q - k >= 0 and (k <= 3 or doc[q] == doc[k])"
    # the dual, and three disjuncts sharing the input comparison
    c = _mask("(doc[q] == doc[k] or k < sinks) and (doc[q] == doc[k] or k <= q)", doc)
    d = _mask("doc[q] == doc[k] or (k < sinks and k <= q)", doc)
    assert c.key == d.key and c.canonical.text == "doc[q] == doc[k] or k <= 3 and q - k >= 0"
    e = _mask("(doc[q] == doc[k] and k < 4) or (doc[q] == doc[k] and q - k < 8) or (k % 2 == 0 and "
              "doc[q] == doc[k])", doc)
    f = _mask("doc[q] == doc[k] and (k < 4 or q - k < 8 or k % 2 == 0)", doc)
    assert e.key == f.key
    # factoring is pure boolean algebra, so the masks agree (here on a packed batch)
    ids = torch.tensor([0] * 5 + [1] * 9 + [2] * 6)
    for x, y in ((a, b), (c, d), (e, f)):
        assert (x.dense_mask(20, 20, doc=ids) == y.dense_mask(20, 20, doc=ids)).all()
