"""The simplifier: canonical forms agree with the checked AST everywhere; equivalent spellings share a key."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import attnpat
from attnpat import EmptyPatternError
from attnpat.compiler.ir import And, Lin, Or
from attnpat.compiler.lower import evaluate_points
from attnpat.compiler.parse import parse_module
from attnpat.compiler.simplify import normalize
from attnpat.reference import prepare_inputs, query_positions
from strategies import cases


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
