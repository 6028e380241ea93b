"""The semantics table: every column of every operator and builtin agrees with the others.

Python is the definition; numpy and torch must compute the same element-wise, interval rules must be sound
(every point of a tile lies within its bounds / agrees with its trit), sympy must agree where defined, and
the constant folder must fold exactly what the python column computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnpat.compiler import nodes as N
from attnpat.compiler import semantics as S
from attnpat.compiler.parse import parse_module
from attnpat.errors import ArgumentError, PatternTypeError

ARITH = [k for k, op in S.OPERATORS.items() if op.kind == "arith"]
COMPARE = [k for k, op in S.OPERATORS.items() if op.kind == "compare"]
RUNTIME_BUILTINS = [k for k, b in S.BUILTINS.items() if b.runtime]
ints = st.integers(-1000, 1000)
divisors = st.integers(-12, 12).filter(bool)
containers = st.one_of(
    st.frozensets(st.integers(-20, 20), max_size=8),
    st.lists(st.integers(-20, 20), max_size=8).map(tuple),
    st.builds(range, st.integers(-20, 20), st.integers(-20, 20), st.integers(-5, 5).filter(bool)),
)


def _args(draw, name):
    if name in ("//", "%"):
        return [draw(ints), draw(divisors)]
    n = {"neg": 1, "not": 1}.get(name, 2)
    return [draw(ints) for _ in range(n)]


def test_table_covers_the_language():
    assert set(ARITH) == set(N.ARITH_OPS)
    assert {k for k, op in S.OPERATORS.items() if op.kind in ("compare", "member")} == set(N.COMPARE_OPS)
    assert set(S.BUILTINS) == {"abs", "min", "max", "hash", "len", "range"}
    for entry in list(S.OPERATORS.values()) + list(S.BUILTINS.values()):
        assert set(entry.helpers) <= set(S.HELPERS)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_arithmetic_columns_agree(data):
    name = data.draw(st.sampled_from(ARITH + ["neg"]))
    op = S.OPERATORS[name]
    args = _args(data.draw, name)
    want = op.python(*args)
    assert int(op.numpy(*[np.int64(a) for a in args])) == want
    assert int(op.torch(*[torch.tensor(a, dtype=torch.int64) for a in args])) == want
    if op.polynomial:
        assert op.sympy(*map(sympy.Integer, args)) == want


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_comparison_columns_agree(data):
    op = S.OPERATORS[data.draw(st.sampled_from(COMPARE))]
    a, b = data.draw(ints), data.draw(st.integers(-3, 3)) if data.draw(st.booleans()) else data.draw(ints)
    want = op.python(a, b)
    assert bool(op.numpy(np.int64(a), np.int64(b))) == want
    assert bool(op.torch(torch.tensor(a), torch.tensor(b))) == want
    assert bool(op.sympy(sympy.Integer(a), sympy.Integer(b))) == want


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["in", "not in"]), st.integers(-25, 25), containers)
def test_membership_columns_agree(name, x, container):
    op = S.OPERATORS[name]
    want = op.python(x, container)
    assert bool(op.numpy(np.int64(x), container)) == want
    assert bool(op.torch(torch.tensor(x, dtype=torch.int64), container)) == want


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["and", "or"]), st.lists(st.booleans(), min_size=1, max_size=4))
def test_boolean_columns_agree(name, values):
    op = S.OPERATORS[name]
    want = op.python(*values)
    assert bool(op.numpy(*[np.bool_(v) for v in values])) == want
    assert bool(op.torch(*[torch.tensor(v) for v in values])) == want
    trits = [S.ALL if v else S.NONE for v in values]
    assert op.interval(*trits) == (S.ALL if want else S.NONE)
    assert S.OPERATORS["not"].python(values[0]) == bool(S.OPERATORS["not"].numpy(np.bool_(values[0])))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_builtin_columns_agree(data):
    name = data.draw(st.sampled_from(RUNTIME_BUILTINS))
    b = S.BUILTINS[name]
    n = data.draw(st.integers(b.min_args, min(b.max_args or 4, 4)))
    args = [data.draw(st.integers(-(1 << 40), 1 << 40)) for _ in range(n)]
    want = b.python(*args)
    assert int(b.numpy(*[np.array([a], np.int64) for a in args])[0]) == want
    assert int(b.torch(*[torch.tensor([a], dtype=torch.int64) for a in args])[0]) == want
    if b.sympy is not None:
        assert b.sympy(*map(sympy.Integer, args)) == want


def _tile(draw):
    lo = draw(st.integers(-60, 60))
    return lo, lo + draw(st.integers(0, 12))


def _points(tile):
    return range(tile[0], tile[1] + 1)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_interval_rules_are_sound(data):
    name = data.draw(st.sampled_from(ARITH + ["neg"] + COMPARE + ["in", "not in"] + RUNTIME_BUILTINS))
    entry = S.OPERATORS.get(name) or S.BUILTINS[name]
    if name in ("//", "%"):
        m = data.draw(divisors)
        tiles = [_tile(data.draw), (m, m)]
    elif name in ("in", "not in"):
        tiles = [_tile(data.draw), data.draw(containers)]
    else:
        n = entry.arity or data.draw(st.integers(entry.min_args, min(entry.max_args or 3, 3)))
        tiles = [_tile(data.draw) for _ in range(n)]
    if name == "hash" and data.draw(st.booleans()):
        tiles = [(t[0], t[0]) for t in tiles]   # single points: the rule is exact there
    bounds = [t if name in ("in", "not in") and i == 1 else (np.array([t[0]], np.int64), np.array([t[1]], np.int64))
              for i, t in enumerate(tiles)]
    out = entry.interval(*bounds)
    grids = [[t] if name in ("in", "not in") and i == 1 else _points(t) for i, t in enumerate(tiles)]
    values = {entry.python(*combo) for combo in _product(grids)}
    if isinstance(out, tuple):
        lo, hi = int(out[0][0]), int(out[1][0])
        assert lo <= min(values) and max(values) <= hi
    else:
        trit = int(out[0])
        if trit == S.ALL:
            assert values == {True}
        elif trit == S.NONE:
            assert values == {False}


def _product(grids):
    import itertools
    return itertools.product(*grids)


def _expr(text: str) -> N.Expr:
    return parse_module(f"pattern p():\n    mask {text}\n").patterns[0].body[0].expr


@pytest.mark.parametrize("text, env, want", [
    ("q - k < 3 + 4", None, "q - k < 7"),
    ("-7 // 2 == -4 and -7 % 3 == 2", None, "True"),
    ("k in {1, 2} or h in range(0, 4, 2)", {"h": 2}, "True"),
    ("min(h, 4) <= q and abs(-h) < k", {"h": 5}, "4 <= q and 5 < k"),
    ("[8, 16, 32][h % 3] >= q - k", {"h": 4}, "16 >= q - k"),
    ("hash(h, 1) % 2 == 0 or doc[q] == doc[k]", {"h": 1}, "doc[q] == doc[k]"),
    ("not (h > 1)", {"h": 2}, "False"),
    ("len({1, 2, 3}) < q", None, "3 < q"),
])
def test_fold(text, env, want):
    from attnpat.compiler.unparse import unparse_expr
    assert unparse_expr(S.fold(_expr(text), env)) == want


def test_fold_keeps_spans_and_identity():
    e = _expr("q - k < 3")
    assert S.fold(e) is e
    folded = S.fold(_expr("q < 1 + 2"))
    assert folded.comparators[0].span is not None


def test_fold_stops_at_the_operand_that_decides():
    assert S.fold(_expr("h >= 2 or q - k < [4, 8][h]"), {"h": 5}) == N.BoolLit(True)
    assert S.fold(_expr("h < 2 and q - k < [4, 8][h]"), {"h": 5}) == N.BoolLit(False)


def test_fold_errors():
    with pytest.raises(ArgumentError, match="list index 3 is out of range"):
        S.fold(_expr("[1, 2][h] < q"), {"h": 3})
    with pytest.raises(PatternTypeError, match="division by zero"):
        S.fold(_expr("7 // (2 - 2) < q"))


def test_constant():
    assert S.constant(_expr("3 * 4 - 2 < 100 and 3 in range(5)")) is True
    assert S.constant(_expr("{3, 1, 1 + 1}")) == frozenset({1, 2, 3})
    assert S.constant(_expr("[2, -1]")) == (2, -1)
    assert S.constant(_expr("range(8)")) == range(8)
    with pytest.raises(PatternTypeError):
        S.constant(_expr("q + 1"))


def test_triton_text():
    ops = S.OPERATORS
    assert ops["//"].triton("a", "4") == "_floordiv(a, 4)" and ops["//"].helpers == ("_floordiv",)
    assert ops["%"].triton("a", "4") == "_pymod(a, 4)"
    assert ops["<"].triton("qp", "kp") == "(qp < kp)"
    assert ops["in"].triton("x", frozenset({1, 2, 3, 7})) == "(((x >= 1) & (x <= 3)) | (x == 7))"
    assert ops["not in"].triton("x", range(0, 10, 3)) == "(~((x >= 0) & (x <= 9) & (_pymod(x - 0, 3) == 0)))"
    assert ops["in"].triton("x", range(5, 5)) == "False"
    assert S.BUILTINS["max"].triton("a", "b", "c") == "tl.maximum(tl.maximum(a, b), c)"
    assert S.BUILTINS["hash"].triton("(-3)", "qp") == \
        "_hash_step(_hash_step(2654435769, (-3)), (qp).to(tl.int64))"


def test_map_children_rebuilds_only_what_changed():
    e = _expr("f(1, w=q) < 2")
    assert N.map_children(e, lambda x: x) is e
    bumped = N.map_children(e.left, lambda x: N.Num(x.value + 1) if isinstance(x, N.Num) else x)
    assert bumped.args == (N.Num(2),) and bumped.kwargs == e.left.kwargs and bumped.span == e.left.span


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_evaluate_agrees_across_columns(data):
    """Whole checked masks: python (point by point), numpy and torch (whole grids) give the same mask."""
    import attnpat
    from strategies import patterns
    gen = data.draw(patterns(inputs=False, calls=False))
    expr = attnpat.parse(gen.text, gen.name, **gen.params).checked.expr
    h, n = data.draw(st.integers(0, 3)), 8

    def leaf(values, const):
        def value(e):
            if isinstance(e, (N.Num, N.BoolLit)):
                return const(e.value)
            if isinstance(e, N.Name):
                return values[e.id]
            if isinstance(e, N.Subscript):   # a per-head list
                return const([x.value for x in e.value.elts][int(S.evaluate(e.index, "python", leaf(values, int)))])
            raise AssertionError(e)
        return value

    points = np.array([[bool(S.evaluate(expr, "python", leaf({"q": i, "k": j, "h": h, "b": 0}, lambda v: v)))
                        for j in range(n)] for i in range(n)])
    q, k = np.arange(n).reshape(n, 1), np.arange(n).reshape(1, n)
    grid = S.evaluate(expr, "numpy", leaf({"q": q, "k": k, "h": np.int64(h), "b": np.int64(0)}, np.asarray))
    tq, tk = torch.arange(n).view(n, 1), torch.arange(n).view(1, n)
    tgrid = S.evaluate(expr, "torch", leaf({"q": tq, "k": tk, "h": torch.tensor(h), "b": torch.tensor(0)},
                                            torch.tensor))
    assert np.array_equal(points, np.broadcast_to(grid, (n, n)))
    assert np.array_equal(points, np.broadcast_to(tgrid.numpy(), (n, n)))


def test_membership_interval_counts_a_repeated_value_once():
    # `x in [0, 0]` on the tile x in [0, 1]: only x = 0 is inside, so the tile is SOME, not ALL (a list with
    # repeats once counted 0 twice and called the whole tile inside)
    tile = (np.array([0]), np.array([1]))
    assert S.OPERATORS["in"].interval(tile, (0, 0))[0] == S.SOME
    assert S.OPERATORS["not in"].interval(tile, (0, 0))[0] == S.SOME
