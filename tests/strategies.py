"""Shared hypothesis strategies for the attnpat test suite -- the ONE place they live.

Front end (syntax only, for round trips):
    identifiers()             names the grammar accepts (never a keyword)
    exprs() / int_exprs() / bool_exprs()
                              random AST expressions (spans None, Num values >= 0)
    modules()                 random whole Modules (params of every type, requires, lets, inputs, masks)

Valid patterns (for property tests of every later stage against the dense reference):
    patterns()                GenPattern(text, name, params): a VALID, CHECKABLE pattern file, the pattern
                              to pick and Python parameter overrides; `.load()` returns the attnpat.Pattern
    pattern_objects()         the same, already loaded
    shapes()                  (q_len, kv_len, batch, heads, q_offset) with ragged sizes 1..48
    make_inputs(...)          valid runtime input tensors for a pattern (sorted doc ids mostly)
    cases()                   Case: a pattern + shape + inputs, drawn coherently; `.dense()` evaluates it

Distributivity (spellings that differ only by factoring out a common operand):
    FACTORINGS                (distributed, factored) mask templates over operands {a}, {b}, {c}, {d}
    operands()                Operands: a pattern header and four random operands (atoms or small and/or/not
                              expressions) written over its parameters and inputs
    factored_cases()          Case whose mask is one side of a FACTORINGS pair (for pointwise checks)
    raw_irs()                 un-normalised IR: nested and/or over a small pool of atoms that repeat

Fuzzing:
    resolving_texts()         random masks over declared names of every type (gets past name resolution)
    mutated_texts()           valid pattern files with characters dropped, swapped, duplicated or inserted
    noise_texts()             arbitrary text over the same pool of interesting characters

Chunk-constant patterns (block masks decided once per chunk cell):
    chunk_patterns()          GenPattern whose mask reads q and k only through q // c and k // c' (BigBird-like
                              hashed random blocks, block windows, global blocks), sometimes joined with one
                              linear or modular condition
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from hypothesis import strategies as st

import attnpat
from attnpat.compiler import nodes as N
from attnpat.compiler.unparse import unparse

__all__ = [
    "KEYWORDS", "identifiers", "exprs", "int_exprs", "bool_exprs", "any_exprs", "params", "statements", "pattern_defs",
    "modules", "GenPattern", "patterns", "pattern_objects", "shapes", "Shape", "make_inputs",
    "needs_q_inside_kv", "Case", "cases", "SEED_TEXTS", "mutated_texts", "noise_texts",
    "MUTATION_POOL", "resolving_texts", "FACTORINGS", "Operands", "operands", "factored_cases",
    "raw_irs",
]

# Reserved words of the pattern language (the NAME terminal rejects exactly these).
KEYWORDS = frozenset({"pattern", "require", "input", "mask", "score", "and", "or", "not", "in", "True", "False"})

# Names that are legal identifiers but collide with something interesting: other terminals (TYPE, AXIS),
# builtins, variables, or keywords as a prefix.
_TRICKY_NAMES = ["q", "k", "h", "b", "int", "bool", "set", "list", "causal", "abs", "min", "max", "len",
                 "range", "hash", "pattern_", "inx", "notes", "andy", "orb", "True_", "masks", "_", "x1"]


def identifiers() -> st.SearchStrategy[str]:
    """Identifiers accepted by the grammar's NAME terminal (ASCII, not a keyword)."""
    plain = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
    return st.one_of(st.sampled_from(_TRICKY_NAMES), plain)


# -- random expressions (syntax only) ------------------------------------------------------------------

def _nums() -> st.SearchStrategy[N.Num]:
    return st.one_of(st.integers(0, 20), st.integers(0, 2**70)).map(N.Num)


def _leaves(names) -> st.SearchStrategy[N.Expr]:
    return st.one_of(_nums(), st.booleans().map(N.BoolLit), names.map(N.Name))


def _compare(left: st.SearchStrategy, right: st.SearchStrategy, ops=N.COMPARE_OPS) -> st.SearchStrategy:
    links = st.lists(st.tuples(st.sampled_from(ops), right), min_size=1, max_size=3)
    return st.builds(lambda l, ls: N.Compare(l, tuple(o for o, _ in ls), tuple(c for _, c in ls)), left, links)


def _tuple_of(s: st.SearchStrategy, lo: int, hi: int) -> st.SearchStrategy[tuple]:
    return st.lists(s, min_size=lo, max_size=hi).map(tuple)


_BUILTIN_CALLS = ["abs", "min", "max", "len", "range", "hash"]


def exprs(max_leaves: int = 12, names: st.SearchStrategy[str] | None = None,
          funcs: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[N.Expr]:
    """Any expression node the parser can produce (not necessarily well typed).

    names / funcs: where Name ids and called function names come from (default: any identifier);
    pass a small pool to get expressions that mostly resolve, e.g. to fuzz the checker.
    """
    names = identifiers() if names is None else names
    funcs = st.one_of(st.sampled_from(_BUILTIN_CALLS), identifiers()) if funcs is None else funcs

    def extend(sub):
        return st.one_of(
            st.builds(N.Unary, st.sampled_from(["-", "not"]), sub),
            st.builds(N.BinOp, st.sampled_from(N.ARITH_OPS), sub, sub),
            st.builds(N.BoolOp, st.sampled_from(["and", "or"]), _tuple_of(sub, 2, 3)),
            _compare(sub, sub),
            st.builds(N.Call, funcs, _tuple_of(sub, 0, 3), _tuple_of(st.tuples(names, sub), 0, 2)),
            st.builds(N.Subscript, sub, sub),
            st.builds(N.SetLit, _tuple_of(sub, 0, 3)),
            st.builds(N.ListLit, _tuple_of(sub, 0, 3)),
        )

    return st.recursive(_leaves(names), extend, max_leaves=max_leaves)


def int_exprs(max_leaves: int = 10, names: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[N.Expr]:
    """Integer-shaped expressions: arithmetic, abs/min/max/hash/len calls, subscripts."""
    names = identifiers() if names is None else names
    leaves = st.one_of(_nums(), names.map(N.Name))

    def extend(sub):
        return st.one_of(
            st.builds(N.Unary, st.just("-"), sub),
            st.builds(N.BinOp, st.sampled_from(N.ARITH_OPS), sub, sub),
            st.builds(N.Call, st.sampled_from(["abs", "hash", "len"]), _tuple_of(sub, 1, 1)),
            st.builds(N.Call, st.sampled_from(["min", "max", "hash"]), _tuple_of(sub, 2, 3)),
            st.builds(N.Subscript, names.map(N.Name), sub),
            st.builds(N.Subscript, st.builds(N.ListLit, _tuple_of(sub, 1, 3)), sub),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def _containers(ints: st.SearchStrategy, names) -> st.SearchStrategy[N.Expr]:
    return st.one_of(
        st.builds(N.SetLit, _tuple_of(ints, 0, 3)),
        st.builds(N.ListLit, _tuple_of(ints, 0, 3)),
        st.builds(N.Call, st.just("range"), _tuple_of(ints, 1, 3)),
        names.map(N.Name),
    )


def bool_exprs(max_leaves: int = 8, names: st.SearchStrategy[str] | None = None,
               funcs: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[N.Expr]:
    """Condition-shaped expressions: (chained) comparisons, membership, not/and/or, pattern calls."""
    names = identifiers() if names is None else names
    funcs = identifiers() if funcs is None else funcs
    ints = int_exprs(max_leaves=4, names=names)
    order_ops = ("<", "<=", ">", ">=", "==", "!=")
    leaves = st.one_of(
        st.booleans().map(N.BoolLit),
        names.map(N.Name),
        _compare(ints, ints, order_ops),
        st.builds(lambda x, op, c: N.Compare(x, (op,), (c,)), ints, st.sampled_from(["in", "not in"]),
                  _containers(ints, names)),
        st.builds(N.Call, funcs, st.just(()), _tuple_of(st.tuples(names, ints), 0, 2)),
    )

    def extend(sub):
        return st.one_of(
            st.builds(N.Unary, st.just("not"), sub),
            st.builds(N.BoolOp, st.sampled_from(["and", "or"]), _tuple_of(sub, 2, 3)),
            # a comparison of conditions: `(a < b) == c` -- legal syntax, needs parentheses on the left
            st.builds(lambda a, c: N.Compare(a, ("==",), (c,)), sub, sub),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def any_exprs(max_leaves: int = 8, names: st.SearchStrategy[str] | None = None,
              funcs: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[N.Expr]:
    """exprs(), int_exprs() or bool_exprs()."""
    return st.one_of(exprs(max_leaves, names, funcs), int_exprs(max_leaves, names),
                     bool_exprs(max_leaves, names, funcs))


# -- random modules (syntax only) ----------------------------------------------------------------------

def params(max_leaves: int = 5) -> st.SearchStrategy[N.Param]:
    return st.builds(N.Param, identifiers(), st.sampled_from(N.TYPES), st.none() | any_exprs(max_leaves))


def statements(max_leaves: int = 8) -> st.SearchStrategy[N.Stmt]:
    return st.one_of(
        st.builds(N.Require, any_exprs(max_leaves)),
        st.builds(N.InputDecl, identifiers(), st.sampled_from(N.AXES)),
        st.builds(N.Let, identifiers(), any_exprs(max_leaves)),
        st.builds(N.Mask, any_exprs(max_leaves)),
    )


def pattern_defs(max_leaves: int = 8) -> st.SearchStrategy[N.PatternDef]:
    return st.builds(N.PatternDef, identifiers(), _tuple_of(params(max(1, max_leaves // 2)), 0, 3),
                     _tuple_of(statements(max_leaves), 1, 4))


def modules(max_patterns: int = 2, max_leaves: int = 8) -> st.SearchStrategy[N.Module]:
    """Random Modules: any syntax the parser accepts (types and names need not make sense)."""
    return st.builds(N.Module, _tuple_of(pattern_defs(max_leaves), 0, max_patterns))


# -- valid, checkable patterns -------------------------------------------------------------------------

class GenPattern(NamedTuple):
    """A generated pattern file, which pattern of it to use, and Python parameter overrides."""

    text: str
    name: str
    params: dict

    def load(self) -> "attnpat.Pattern":
        return attnpat.parse(self.text, self.name, name="<generated>", **self.params)


def _n(v: int) -> N.Expr:
    return N.Num(v) if v >= 0 else N.Unary("-", N.Num(-v))


def _name(s: str) -> N.Name:
    return N.Name(s)


def _bin(op: str, a: N.Expr, b: N.Expr) -> N.BinOp:
    return N.BinOp(op, a, b)


def _cmp(a: N.Expr, op: str, b: N.Expr) -> N.Compare:
    return N.Compare(a, (op,), (b,))


def _call(f: str, *args: N.Expr, **kw: N.Expr) -> N.Call:
    return N.Call(f, tuple(args), tuple(kw.items()))


Q, K, H, B = _name("q"), _name("k"), _name("h"), _name("b")
_DIFF = _bin("-", Q, K)


class _Ctx:
    """What a generated pattern has declared: which names its expressions may use."""

    def __init__(self):
        self.int_params: list[str] = []      # int parameters, all >= 1
        self.list_param: str | None = None   # a non-empty list of small ints
        self.set_param: str | None = None
        self.bool_param: str | None = None
        self.k_inputs: list[str] = []        # int[k] inputs
        self.q_inputs: list[str] = []        # int[q] inputs
        self.int_lets: list[str] = []
        self.bool_lets: list[str] = []
        self.calls: list[st.SearchStrategy] = []   # strategies for calls of helper patterns


_ORDER = ("<", "<=", ">", ">=", "==", "!=")


@st.composite
def _const(draw, ctx: _Ctx, lo: int = 0, hi: int = 8) -> N.Expr:
    """A small constant expression (folds to an int): a number, an int parameter, len(list), -n."""
    choices = ["num", "num", "num"]
    if ctx.int_params:
        choices.append("param")
    if ctx.list_param:
        choices.append("len")
    kind = draw(st.sampled_from(choices))
    if kind == "param":
        return _name(draw(st.sampled_from(ctx.int_params)))
    if kind == "len":
        return _call("len", _name(ctx.list_param))
    return _n(draw(st.integers(lo, hi)))


@st.composite
def _pos_const(draw, ctx: _Ctx) -> N.Expr:
    """A constant that folds to a positive int: a divisor for // and %."""
    choices = ["num", "num"]
    if ctx.int_params:
        choices.append("param")
    if ctx.list_param:
        choices.append("len")
    kind = draw(st.sampled_from(choices))
    if kind == "param":
        return _name(draw(st.sampled_from(ctx.int_params)))
    if kind == "len":
        return _call("len", _name(ctx.list_param))
    return N.Num(draw(st.integers(1, 6)))


@st.composite
def _int_leaf(draw, ctx: _Ctx) -> N.Expr:
    options = [Q, K, _DIFF, _bin("-", K, Q), Q, K, _DIFF, H, B]
    options += [_name(n) for n in ctx.int_lets]
    for name in ctx.k_inputs:
        options += [N.Subscript(_name(name), K), N.Subscript(_name(name), Q)]
    for name in ctx.q_inputs:
        options.append(N.Subscript(_name(name), Q))
    if ctx.list_param:
        lst = _name(ctx.list_param)
        options.append(N.Subscript(lst, _bin("%", H, _call("len", lst))))
        options.append(N.Subscript(lst, _bin("%", B, _call("len", lst))))
    if draw(st.integers(0, 5)) == 0:
        return draw(_const(ctx))
    return draw(st.sampled_from(options))


@st.composite
def _int_term(draw, ctx: _Ctx, depth: int = 2) -> N.Expr:
    """An integer expression over q, k, h, b, inputs, params and lets; linear but for //, %, abs, min, max."""
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(_int_leaf(ctx))
    sub = _int_term(ctx, depth - 1)
    kind = draw(st.sampled_from(["+c", "-c", "+", "-", "*c", "//", "%", "abs", "min", "max", "neg", "hash"]))
    if kind == "+c":
        return _bin("+", draw(sub), draw(_const(ctx)))
    if kind == "-c":
        return _bin("-", draw(sub), draw(_const(ctx)))
    if kind in ("+", "-"):
        return _bin(kind, draw(sub), draw(sub))
    if kind == "*c":
        c, x = draw(_const(ctx, 0, 3)), draw(sub)
        return _bin("*", c, x) if draw(st.booleans()) else _bin("*", x, c)
    if kind in ("//", "%"):
        return _bin(kind, draw(sub), draw(_pos_const(ctx)))
    if kind == "abs":
        return _call("abs", draw(sub))
    if kind in ("min", "max"):
        return _call(kind, *draw(st.lists(sub, min_size=2, max_size=3)))
    if kind == "neg":
        return N.Unary("-", draw(sub))
    return _bin("%", _call("hash", *draw(st.lists(sub, min_size=1, max_size=3))), N.Num(draw(st.integers(1, 5))))


@st.composite
def _bool_atom(draw, ctx: _Ctx) -> N.Expr:
    kinds = ["causal", "window", "window", "chain", "abs", "dilated", "chunk", "global", "member", "range",
             "hash", "random_cmp", "random_cmp", "head"]
    if ctx.k_inputs:
        kinds += ["doc", "doc"]
    if ctx.q_inputs:
        kinds.append("qdoc")
    if ctx.set_param:
        kinds.append("set_param")
    if ctx.bool_param:
        kinds.append("bool_param")
    if ctx.bool_lets:
        kinds.append("bool_let")
    if ctx.calls:
        kinds += ["call", "call"]
    kind = draw(st.sampled_from(kinds))
    c = lambda lo=0, hi=8: draw(_const(ctx, lo, hi))  # noqa: E731
    if kind == "causal":
        return _name("causal")
    if kind == "window":
        d = draw(st.sampled_from([_DIFF, _bin("-", K, Q), _call("abs", _DIFF)]))
        return _cmp(d, draw(st.sampled_from(_ORDER[:4])), c())
    if kind == "chain":
        ops = draw(st.sampled_from([("<=", "<"), ("<", "<="), ("<=", "<="), ("<", "<"), (">=", ">"),
                                    ("<=", "<", "<=")]))
        operands = [draw(_int_term(ctx, 1)) if i == 1 else c() for i in range(len(ops) + 1)]
        return N.Compare(operands[0], ops, tuple(operands[1:]))
    if kind == "abs":
        return _cmp(_call("abs", _bin("-", draw(_int_term(ctx, 1)), draw(_int_term(ctx, 1)))), "<=", c())
    if kind == "dilated":
        return _cmp(_bin("%", _DIFF, draw(_pos_const(ctx))), "==", _n(0))
    if kind == "chunk":
        size = draw(_pos_const(ctx))
        return _cmp(_bin("//", Q, size), draw(st.sampled_from(["==", ">", ">="])), _bin("//", K, size))
    if kind == "global":
        x = draw(st.sampled_from([Q, K]))
        return _cmp(x, draw(st.sampled_from(["<", "<="])), c(0, 3))
    if kind == "member":
        elems = tuple(draw(st.lists(st.builds(_n, st.integers(-2, 8)), max_size=4)))
        container = N.SetLit(elems) if draw(st.booleans()) else N.ListLit(elems)
        return _cmp(draw(_int_term(ctx, 1)), draw(st.sampled_from(["in", "not in"])), container)
    if kind == "range":
        args = draw(st.sampled_from([(0, 4), (2, 9, 3), (8, 0, -2), (5,), (1, 30, 4), (3, 3)]))
        return _cmp(draw(_int_term(ctx, 1)), draw(st.sampled_from(["in", "not in"])),
                    _call("range", *[_n(a) for a in args]))
    if kind == "hash":
        args = draw(st.sampled_from([(Q, K), (H, K), (B, H, _bin("//", Q, N.Num(4)), _bin("//", K, N.Num(4))),
                                     (K,), (_DIFF,)]))
        mod = draw(st.integers(1, 5))
        return _cmp(_bin("%", _call("hash", *args), N.Num(mod)), "<", N.Num(draw(st.integers(0, mod))))
    if kind == "head":
        return _cmp(_DIFF, "<", N.Subscript(_name(ctx.list_param), _bin("%", H, _call("len", _name(ctx.list_param))))) \
            if ctx.list_param else _cmp(_bin("%", _bin("+", H, K), N.Num(2)), "==", N.Num(0))
    if kind == "doc":
        name = _name(draw(st.sampled_from(ctx.k_inputs)))
        return _cmp(N.Subscript(name, Q), draw(st.sampled_from(["==", "==", ">=", "!="])), N.Subscript(name, K))
    if kind == "qdoc":
        name = _name(draw(st.sampled_from(ctx.q_inputs)))
        return _cmp(N.Subscript(name, Q), draw(st.sampled_from(_ORDER)), draw(_int_term(ctx, 1)))
    if kind == "set_param":
        return _cmp(draw(st.sampled_from([K, Q, _DIFF, _bin("%", K, N.Num(4))])),
                    draw(st.sampled_from(["in", "not in"])), _name(ctx.set_param))
    if kind == "bool_param":
        return _name(ctx.bool_param)
    if kind == "bool_let":
        return _name(draw(st.sampled_from(ctx.bool_lets)))
    if kind == "call":
        return draw(draw(st.sampled_from(ctx.calls)))
    # random comparison of two integer terms
    return _cmp(draw(_int_term(ctx)), draw(st.sampled_from(_ORDER)), draw(_int_term(ctx)))


@st.composite
def _bool_expr(draw, ctx: _Ctx, depth: int = 2) -> N.Expr:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        atom = draw(_bool_atom(ctx))
        return N.Unary("not", atom) if draw(st.integers(0, 7)) == 0 else atom
    kind = draw(st.sampled_from(["and", "and", "and", "or", "or", "not"]))
    if kind == "not":
        return N.Unary("not", draw(_bool_expr(ctx, depth - 1)))
    return N.BoolOp(kind, tuple(draw(st.lists(_bool_expr(ctx, depth - 1), min_size=2, max_size=3))))


# Helper patterns a generated pattern may call (same file).
_HELPERS = {
    "band": (
        "pattern band(lo: int = 0, hi: int = 2):\n"
        "    # keys between lo and hi positions behind the query\n"
        "    require lo <= hi\n"
        "    mask lo <= q - k <= hi\n"),
    "same_doc": (
        "pattern same_doc():\n"
        "    input doc: int[k]\n"
        "    mask doc[q] == doc[k]\n"),
    "strided": (
        "pattern strided(stride: int = 3, sinks: set = {0}):\n"
        "    require stride >= 1\n"
        "    mask (q - k) % stride == 0 or k in sinks\n"),
}


@st.composite
def _helper_call(draw, helper: str) -> N.Expr:
    if helper == "band":
        lo = draw(st.integers(-2, 4))
        hi = lo + draw(st.integers(0, 6))
        form = draw(st.sampled_from(["kw", "pos", "default", "hi"]))
        if form == "kw":
            return _call("band", lo=_n(lo), hi=_n(hi))
        if form == "pos":
            return _call("band", _n(lo), _n(hi))
        if form == "hi":
            return _call("band", hi=N.Num(max(hi, 0)))
        return _call("band")
    if helper == "same_doc":
        return _call("same_doc")
    sinks = N.SetLit(tuple(N.Num(v) for v in draw(st.lists(st.integers(0, 5), max_size=3))))
    stride = N.Num(draw(st.integers(1, 5)))
    return draw(st.sampled_from([_call("strided"), _call("strided", stride), _call("strided", stride=stride,
                                                                                       sinks=sinks)]))


def _decorate(draw, text: str) -> str:
    """Sprinkle comments, blank lines and bracket line continuations over a valid text."""
    if not draw(st.integers(0, 2)) == 0:
        return text
    out = []
    for line in text.split("\n"):
        if line.startswith("    ") and draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(["", "    # note", "\t# tab comment", "  "])))
        if line and draw(st.integers(0, 4)) == 0:
            line += "  # trailing"
        out.append(line)
    return "\n".join(out)


@st.composite
def patterns(draw, *, inputs: bool = True, calls: bool = True, depth: int = 2) -> GenPattern:
    """A valid, checkable pattern file plus Python overrides: `attnpat.parse(text, name, **params)` works.

    Exercises windows, causal, chained comparisons, abs/min/max, // and % by positive constants,
    membership in sets/lists/ranges, not/and/or nesting, per-head lists, runtime inputs (int[k] and
    int[q]), hash(...) % c < r, local definitions, and calls of helper patterns in the same file.
    Constants are small so masks on 1..48 grids are interesting.
    """
    ctx = _Ctx()
    header: list[N.Param] = []
    requires: list[N.Require] = []
    overrides: dict = {}
    body: list[N.Stmt] = []

    # parameters (defaults always valid; overrides drawn to satisfy the requires)
    if draw(st.integers(0, 3)) > 0:
        ctx.int_params.append("w")
        header.append(N.Param("w", "int", N.Num(draw(st.integers(1, 8)))))
        requires.append(N.Require(_cmp(_name("w"), ">=", N.Num(1))))
        if draw(st.booleans()):
            overrides["w"] = draw(st.integers(1, 10))
    if draw(st.integers(0, 2)) == 0:
        ctx.int_params.append("s")
        header.append(N.Param("s", "int", N.Num(draw(st.integers(1, 4)))))
        requires.append(N.Require(N.Compare(N.Num(1), ("<=", "<="), (_name("s"), N.Num(16)))))
        if draw(st.booleans()):
            overrides["s"] = draw(st.integers(1, 5))
    if draw(st.integers(0, 2)) == 0:
        ctx.list_param = "ws"
        default = draw(st.lists(st.integers(0, 8), min_size=1, max_size=4))
        header.append(N.Param("ws", "list", N.ListLit(tuple(N.Num(v) for v in default))))
        requires.append(N.Require(_cmp(_call("len", _name("ws")), ">=", N.Num(1))))
        if draw(st.booleans()):
            overrides["ws"] = draw(st.lists(st.integers(0, 8), min_size=1, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        ctx.set_param = "g"
        default_set = draw(st.lists(st.integers(0, 6), max_size=3))
        header.append(N.Param("g", "set", N.SetLit(tuple(N.Num(v) for v in default_set))))
        if draw(st.booleans()):
            values = draw(st.lists(st.integers(0, 8), max_size=4))
            overrides["g"] = draw(st.sampled_from([set(values), list(values), frozenset(values), range(0, 3, 2)]))
    if draw(st.integers(0, 4)) == 0:
        ctx.bool_param = "flag"
        header.append(N.Param("flag", "bool", N.BoolLit(draw(st.booleans()))))
        if draw(st.booleans()):
            overrides["flag"] = draw(st.booleans())

    # runtime inputs
    if inputs and draw(st.integers(0, 2)) == 0:
        ctx.k_inputs.append("doc")
        body.append(N.InputDecl("doc", "k"))
    if inputs and draw(st.integers(0, 5)) == 0:
        ctx.q_inputs.append("seg")
        body.append(N.InputDecl("seg", "q"))

    # helper patterns called from the mask
    helpers: list[str] = []
    if calls and draw(st.integers(0, 3)) == 0:
        pool = ["band", "strided"] + (["same_doc"] if inputs else [])
        helpers = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
        ctx.calls = [_helper_call(h) for h in helpers]

    # local definitions
    if draw(st.integers(0, 3)) == 0:
        body.append(N.Let("d", _DIFF))
        ctx.int_lets.append("d")
    if draw(st.integers(0, 3)) == 0:
        body.append(N.Let("near", draw(_bool_atom(ctx))))
        ctx.bool_lets.append("near")

    body.append(N.Mask(draw(_bool_expr(ctx, depth))))
    # requires may sit anywhere in the body
    for req in requires:
        body.insert(draw(st.integers(0, len(body))), req)

    main = N.PatternDef("main", tuple(header), tuple(body))
    text = "".join(_HELPERS[h] + "\n" for h in helpers) + unparse(main)
    return GenPattern(_decorate(draw, text), "main", overrides)


def pattern_objects(**kwargs) -> st.SearchStrategy["attnpat.Pattern"]:
    """Loaded attnpat.Pattern objects for `patterns(**kwargs)`."""
    return patterns(**kwargs).map(GenPattern.load)


# -- shapes and runtime inputs -------------------------------------------------------------------------

class Shape(NamedTuple):
    q_len: int
    kv_len: int
    batch: int
    heads: int
    q_offset: int | None


def _lengths(max_len: int) -> st.SearchStrategy[int]:
    edges = [v for v in (1, 2, 15, 16, 17, 31, 32, 33, 47, 48) if v <= max_len]
    return st.one_of(st.integers(1, min(8, max_len)), st.integers(1, max_len), st.sampled_from(edges))


@st.composite
def shapes(draw, max_len: int = 48, max_batch: int = 2, max_heads: int = 4,
           q_inside_kv: bool = False) -> Shape:
    """(q_len, kv_len, batch, heads, q_offset): ragged sizes in 1..max_len, q_len <= kv_len mostly.

    q_offset is None (bottom-right alignment) mostly. With q_inside_kv=True every query position
    q_offset .. q_offset + q_len - 1 (or the bottom-right ones) lies in 0 .. kv_len - 1, as an int[k]
    input read at q (`doc[q]`) needs.
    """
    kv_len = draw(_lengths(max_len))
    if q_inside_kv or draw(st.integers(0, 9)) < 8:
        q_len = draw(st.integers(1, kv_len)) if draw(st.booleans()) else kv_len
    else:
        q_len = draw(_lengths(max_len))
    batch = draw(st.integers(1, max_batch))
    heads = draw(st.integers(1, max_heads))
    q_offset = None
    if draw(st.integers(0, 3)) == 0:
        if q_len <= kv_len:
            q_offset = draw(st.integers(0, kv_len - q_len))
        elif not q_inside_kv:
            q_offset = draw(st.integers(0, 8))
    return Shape(q_len, kv_len, batch, heads, q_offset)


def needs_q_inside_kv(pattern: "attnpat.Pattern") -> bool:
    """True if the pattern reads an int[k] input at a query position (`doc[q]`), so every query
    position must be a valid key position."""
    axes = pattern.inputs
    return any(isinstance(n, N.Subscript) and isinstance(n.value, N.Name) and axes.get(n.value.id) == "k"
               and isinstance(n.index, N.Name) and n.index.id == "q" for n in N.walk(pattern.checked.expr))


@st.composite
def _input_row(draw, length: int, sorted_ids: bool) -> list[int]:
    if sorted_ids:
        cuts = draw(st.lists(st.integers(0, length), max_size=4))
        start = draw(st.integers(0, 2))
        return [start + sum(c <= i for c in cuts) for i in range(length)]
    if draw(st.booleans()):
        return [draw(st.integers(-2, 2))] * length
    return draw(st.lists(st.integers(-3, 5), min_size=length, max_size=length))


def make_inputs(pattern: "attnpat.Pattern", q_len: int, kv_len: int, batch: int, draw) -> dict:
    """Draw valid runtime inputs for `pattern`: one int tensor per declared input.

    int[k] inputs get kv_len values, int[q] ones q_len; mostly sorted document ids (the usual packing),
    sometimes arbitrary integers; shape [L] (shared by the batch) or [batch, L]; int64 or int32.
    `draw` is hypothesis's draw function (from @st.composite or st.data()).
    """
    out = {}
    for name, axis in sorted(pattern.inputs.items()):
        length = kv_len if axis == "k" else q_len
        sorted_ids = draw(st.integers(0, 3)) > 0
        per_batch = batch > 1 and draw(st.booleans())
        rows = [draw(_input_row(length, sorted_ids)) for _ in range(batch if per_batch else 1)]
        dtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int32]))
        t = torch.tensor(rows, dtype=dtype)
        out[name] = t if per_batch else t[0]
    return out


class Case(NamedTuple):
    """A pattern with a shape and runtime inputs, ready to evaluate."""

    gen: GenPattern
    pattern: "attnpat.Pattern"
    shape: Shape
    inputs: dict

    def dense(self) -> torch.Tensor:
        s = self.shape
        return self.pattern.dense_mask(s.q_len, s.kv_len, batch=s.batch, heads=s.heads, q_offset=s.q_offset,
                                       **self.inputs)


@st.composite
def cases(draw, max_len: int = 48, max_batch: int = 2, max_heads: int = 4, **pattern_kwargs) -> Case:
    """A generated pattern, a shape that suits it and valid runtime inputs for it."""
    gen = draw(patterns(**pattern_kwargs))
    pattern = gen.load()
    shape = draw(shapes(max_len, max_batch, max_heads, q_inside_kv=needs_q_inside_kv(pattern)))
    inputs = make_inputs(pattern, shape.q_len, shape.kv_len, shape.batch, draw)
    return Case(gen, pattern, shape, inputs)


# -- spellings that differ by distributivity ---------------------------------------------------------

# (distributed, factored): two spellings of one mask that differ only by a common operand factored out.
FACTORINGS = {
    "or_of_ands": ("({a} and {b}) or ({a} and {c})", "{a} and ({b} or {c})"),
    "and_of_ors": ("({a} or {b}) and ({a} or {c})", "{a} or ({b} and {c})"),
    "three_or": ("({a} and {b}) or ({c} and {a}) or ({a} and {d})", "{a} and ({b} or {c} or {d})"),
    "three_and": ("({a} or {b}) and ({c} or {a}) and ({a} or {d})", "{a} or ({b} and {c} and {d})"),
    "two_common": ("({a} and {b} and {c}) or ({b} and {d} and {a})", "{b} and {a} and ({c} or {d})"),
    "two_common_dual": ("({a} or {b} or {c}) and ({b} or {d} or {a})", "{b} or {a} or ({c} and {d})"),
}


class Operands(NamedTuple):
    """A pattern header (everything but the mask line) and four operand texts over its names."""

    header: str
    ops: tuple[str, str, str, str]

    def text(self, template: str) -> str:
        """The whole pattern file with the mask `template` filled in (each operand parenthesised)."""
        a, b, c, d = (f"({o})" for o in self.ops)
        return self.header + "    mask " + template.format(a=a, b=b, c=c, d=d) + "\n"

    def load(self, template: str) -> "attnpat.Pattern":
        return attnpat.parse(self.text(template), "p", name="<factoring>")


@st.composite
def operands(draw, depth: int = 1, single: bool = False) -> Operands:
    """Four random operands for FACTORINGS: the atoms of patterns() (windows, causal, sinks, dilation,
    chunks, hashes, per-head lists, set membership, runtime inputs, ...) and, up to `depth`, and/or/not of
    them. They are drawn independently, so they may overlap, imply or contradict one another.

    single=True: only operands the simplifier keeps as one condition (a window on one linear form, a
    residue condition, an opaque condition, True or False), not an and/or of several -- `q - k != 2` and
    `abs(q - k) >= 4` are two windows -- and never a window and a residue condition on the same linear form
    (`q - k <= 0` and `q - k <= -1` are the same given `(q - k) % 2 == 1`, and the canonical form does not
    move window ends onto allowed residues: that would rewrite the library's `dilated`).
    """
    from attnpat.compiler.unparse import unparse_expr

    ctx = _Ctx()
    ctx.int_params = ["w"]
    ctx.list_param = "ws"
    ctx.set_param = "g"
    ctx.k_inputs = ["doc"]
    ctx.q_inputs = ["seg"]
    w = draw(st.integers(1, 8))
    ws = draw(st.lists(st.integers(0, 8), min_size=1, max_size=3))
    g = draw(st.lists(st.integers(0, 6), max_size=3))
    header = (f"pattern p(w: int = {w}, ws: list = [{', '.join(map(str, ws))}], "
              f"g: set = {{{', '.join(map(str, g))}}}):\n"
              "    input doc: int[k]\n"
              "    input seg: int[q]\n")
    op = st.integers(0, depth).flatmap(lambda d: _bool_expr(ctx, d)).map(unparse_expr)
    if not single:
        return Operands(header, tuple(draw(op) for _ in range(4)))
    from attnpat.compiler.ir import Const, Lin, Mod, Opaque
    from attnpat.compiler.simplify import to_ir

    ir_of = lambda text: to_ir(attnpat.parse(header + f"    mask {text}\n", "p").checked.expr)  # noqa: E731
    texts, lin_forms, mod_forms = [], set(), set()
    while len(texts) < 4:
        text = draw(op)
        ir = ir_of(text)
        if not isinstance(ir, (Const, Lin, Mod, Opaque)):
            continue
        if isinstance(ir, Lin) and ir.form in mod_forms or isinstance(ir, Mod) and (ir.cq, ir.ck) in lin_forms:
            continue
        if isinstance(ir, Lin):
            lin_forms.add(ir.form)
        if isinstance(ir, Mod):
            mod_forms.add((ir.cq, ir.ck))
        texts.append(text)
    return Operands(header, tuple(texts))


@st.composite
def factored_cases(draw, max_len: int = 24, max_batch: int = 2, max_heads: int = 3) -> Case:
    """A Case whose mask is the distributed or the factored side of a random FACTORINGS pair."""
    ops = draw(operands())
    template = draw(st.sampled_from([t for pair in FACTORINGS.values() for t in pair]))
    gen = GenPattern(ops.text(template), "p", {})
    pattern = gen.load()
    shape = draw(shapes(max_len, max_batch, max_heads, q_inside_kv=needs_q_inside_kv(pattern)))
    inputs = make_inputs(pattern, shape.q_len, shape.kv_len, shape.batch, draw)
    return Case(gen, pattern, shape, inputs)


@st.composite
def _raw_atom(draw):
    from attnpat.compiler.ir import Lin, Mod, Opaque

    kind = draw(st.sampled_from(["diff", "diff", "key", "query", "mod", "doc", "hash"]))
    if kind in ("diff", "key", "query"):
        cq, ck = {"diff": (1, -1), "key": (0, 1), "query": (1, 0)}[kind]
        lo = draw(st.none() | st.integers(1 if kind == "key" else -6, 8))
        hi = draw(st.none() | st.integers(lo if lo is not None else -6 if kind != "key" else 0, 10))
        if lo is None and hi is None:
            hi = 3
        return Lin(cq, ck, lo, hi)
    if kind == "mod":
        cq, ck = draw(st.sampled_from([(1, -1), (0, 1)]))
        m = draw(st.integers(2, 3))
        residues = draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=m - 1, unique=True))
        return Mod(cq, ck, 0, m, tuple(sorted(residues)))
    if kind == "doc":
        op = draw(st.sampled_from(["==", "!="]))
        return Opaque(_cmp(N.Subscript(_name("doc"), Q), op, N.Subscript(_name("doc"), K)))
    op = draw(st.sampled_from(["<", ">="]))
    return Opaque(_cmp(_bin("%", _call("hash", Q, K), N.Num(3)), op, N.Num(1)))


def raw_irs(max_leaves: int = 10) -> st.SearchStrategy:
    """Un-normalised IR for the simplifier: nested And/Or over a small pool of atoms (windows on q - k,
    k and q; residues; `doc[q] == doc[k]` with an int[k] input `doc`; a hash), so operands repeat, overlap
    and contradict. Atoms obey the IR's own invariants; evaluate with lower.evaluate_points."""
    from attnpat.compiler.ir import FALSE, TRUE, And, Or

    leaves = st.one_of(_raw_atom(), _raw_atom(), _raw_atom(), st.sampled_from([TRUE, FALSE]))
    return st.recursive(leaves, lambda sub: st.one_of(
        st.lists(sub, min_size=2, max_size=4).map(lambda xs: And(tuple(xs))),
        st.lists(sub, min_size=2, max_size=4).map(lambda xs: Or(tuple(xs)))), max_leaves=max_leaves)


# -- near-valid texts: random expressions over names that resolve --------------------------------------

_FUZZ_HEADER = """pattern helper(r: int = 2):
    mask abs(q - k) <= r

pattern main(w: int = 3, on: bool = True, g: set = {0, 2}, ws: list = [1, 4]):
    input doc: int[k]
    input seg: int[q]
    d = q - k
    near = d < w
"""
_FUZZ_NAMES = ["q", "k", "h", "b", "w", "on", "g", "ws", "doc", "seg", "d", "near", "causal", "helper",
               "r", "abs", "len", "range", "e", "x"]
_FUZZ_FUNCS = ["abs", "min", "max", "len", "range", "hash", "helper", "main", "w", "q", "doc", "nope"]


@st.composite
def resolving_texts(draw) -> str:
    """A file whose pattern `main` declares params of every type, inputs and lets, with a random local
    definition `e`, a random require and a random mask over names that (mostly) resolve: the checker
    and the dense reference get past name resolution and meet odd types and values."""
    let_s, require_s, mask_s = _resolving_parts()
    lines = [_FUZZ_HEADER.rstrip("\n")]
    if draw(st.booleans()):
        lines.append("    e = " + unparse(draw(let_s)))
    if draw(st.integers(0, 3)) == 0:
        lines.append("    require " + unparse(draw(require_s)))
    lines.append("    mask " + unparse(draw(mask_s)))
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def _resolving_parts():
    # Built once: constructing recursive strategies inside every draw costs far more than drawing.
    names, funcs = st.sampled_from(_FUZZ_NAMES), st.sampled_from(_FUZZ_FUNCS)
    return (any_exprs(names=names, funcs=funcs), exprs(max_leaves=4, names=names, funcs=funcs),
            st.one_of(bool_exprs(names=names, funcs=funcs), exprs(names=names, funcs=funcs)))


# -- fuzzing -------------------------------------------------------------------------------------------

SEED_TEXTS = [
    "pattern sliding_window(window: int = 4096):\n"
    "    require window >= 1\n"
    "    mask causal and q - k < window\n",

    "# documents packed into one sequence\n"
    "pattern doc_causal(sinks: set = {0, 3}, ws: list = [2, 4]):\n"
    "    input doc: int[k]\n"
    "    local = 0 <= q - k < ws[h % len(ws)]\n"
    "    mask (doc[q] == doc[k] and local) or k in sinks\n",

    "pattern dilated(rate: int = 2, chunk: int = 8, on: bool = True):\n"
    "    require rate >= 1 and chunk >= 1\n"
    "    d = abs(q - k)\n"
    "    mask on and (d % rate == 0 or q // chunk == k // chunk) and not k in range(1, 4)\n"
    "\n"
    "pattern mixed():\n"
    "    mask dilated(rate=3) or (hash(q, k) % 4 < 1 and min(q, 7) >= max(k, 2))\n",

    "pattern prefix(p: int = 3):\n"
    "    input seg: int[q]\n"
    "    mask k < p or (k <= q and seg[q] != -1)  # prefix LM\n",
]

MUTATION_POOL = list("()[]{}:,=<>!+-*/%#\n\t \\") + list("qkhbxw_09") + list("abcimnoprst") + [
    "é", "λ", "\u00a0", "\u2028", "\x0c", "\r", "→", "𝑞", "\x00",
]


@st.composite
def mutated_texts(draw) -> str:
    """A valid pattern file with a few characters dropped, swapped, duplicated or inserted."""
    if draw(st.integers(0, 2)) == 0:
        text = draw(patterns()).text
    else:
        text = draw(st.sampled_from(SEED_TEXTS))
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        if not chars:
            chars = [draw(st.sampled_from(MUTATION_POOL))]
            continue
        i = draw(st.integers(0, len(chars) - 1))
        op = draw(st.sampled_from(["drop", "swap", "dup", "insert", "insert", "replace"]))
        if op == "drop":
            del chars[i]
        elif op == "swap" and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "dup":
            chars.insert(i, chars[i])
        elif op == "insert":
            chars.insert(i, draw(st.sampled_from(MUTATION_POOL)))
        else:
            chars[i] = draw(st.sampled_from(MUTATION_POOL))
    return "".join(chars)


def noise_texts() -> st.SearchStrategy[str]:
    """Arbitrary text: pool characters and keyword-ish fragments, often starting like a pattern."""
    fragments = st.sampled_from(MUTATION_POOL + ["pattern ", "mask ", "require ", "input ", " and ", " or ",
                                                 "not ", " in ", "int", "[k]", "True", "    ", "\n    "])
    body = st.lists(fragments, max_size=30).map("".join)
    return st.one_of(body, st.builds(lambda b: "pattern p():\n    mask " + b, body))



# -- chunk-constant patterns (BigBird-like) ------------------------------------------------------------

__all__ += ["chunk_patterns"]


@st.composite
def _chunk_atom(draw, qb: str, kb: str) -> str:
    """One condition that reads q and k only through the chunk indices qb = `q // cq`, kb = `k // ck`."""
    kind = draw(st.sampled_from(["rand", "rand", "rand", "window", "global", "list", "other_chunks", "parity"]))
    if kind == "rand":
        m = draw(st.integers(1, 8))
        seed = draw(st.integers(0, 10**6))
        args = draw(st.sampled_from([f"{seed}, h, {qb}, {kb}", f"{qb}, {kb}", f"h, {kb}, {qb}",
                                     f"{qb} * 7 + h, {kb}", f"{seed}, {kb}"]))
        return f"hash({args}) % {m} < {draw(st.integers(0, m))}"
    if kind == "window":
        w = draw(st.integers(0, 3))
        return draw(st.sampled_from([f"abs({qb} - {kb}) <= {w}", f"{qb} - {kb} in {{0, {w + 1}}}",
                                     f"{kb} <= {qb}"]))
    if kind == "global":
        return f"{draw(st.sampled_from([qb, kb]))} < {draw(st.integers(0, 3))}"
    if kind == "list":
        return f"{kb} % 3 < [0, 1, 2, 3][h % 4]"
    if kind == "other_chunks":   # more divisors: the cells shrink to the gcd of each variable's divisors
        return f"(q // {draw(st.integers(1, 50))} + k // {draw(st.integers(1, 50))}) % 3 != 1"
    return f"({qb} + {kb} + h) % 2 == 0"


@st.composite
def _chunk_expr(draw, qb: str, kb: str, depth: int = 2) -> str:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        atom = draw(_chunk_atom(qb, kb))
        return f"not ({atom})" if draw(st.integers(0, 6)) == 0 else atom
    op = draw(st.sampled_from(["and", "or", "or"]))
    return "(" + f" {op} ".join(draw(st.lists(_chunk_expr(qb, kb, depth - 1), min_size=2, max_size=3))) + ")"


@st.composite
def chunk_patterns(draw) -> GenPattern:
    """A pattern whose mask reads q and k only through `q // cq` and `k // ck` (cq, ck >= 1, equal or not;
    h freely), like BigBird's `hash(seed, h, q // block, k // block) % n < r` random blocks with block
    windows and global blocks: constant on every cq x ck cell. A third of them are joined (and / or) with
    one linear or modular condition (causal, a window, a key range, a dilation) that cuts through cells."""
    cq = draw(st.one_of(st.integers(1, 12), st.integers(1, 70)))
    ck = cq if draw(st.booleans()) else draw(st.integers(1, 70))
    expr = draw(_chunk_expr(f"q // {cq}", f"k // {ck}"))
    if draw(st.integers(0, 2)) == 0:
        w = draw(st.integers(0, 40))
        linear = draw(st.sampled_from(["k <= q", f"q - k < {w}", f"k >= {w}", f"abs(q - k) <= {w}",
                                       f"(q - k) % {w % 5 + 2} == 0"]))
        expr = f"({expr}) {draw(st.sampled_from(['and', 'or']))} {linear}"
    return GenPattern(f"pattern main():\n    mask {expr}\n", "main", {})


# -- integer corners (the fuzz test of tests/test_fuzz.py) ----------------------------------------------

__all__ += ["EDGE_CONSTANTS", "edge_masks"]

# Constants where fixed-width arithmetic breaks: the int32 and int64 edges and their neighbours.
EDGE_CONSTANTS = [2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 100000007]


@st.composite
def _edge_const(draw, divisor: bool = False) -> str:
    v = draw(st.one_of(st.integers(1 if divisor else 0, 9), st.sampled_from(EDGE_CONSTANTS)))
    return f"-{v}" if draw(st.booleans()) else str(v)


@st.composite
def _edge_int(draw, depth: int = 2) -> str:
    """An integer expression over q and k: + - * // % with negative and huge constants, abs/min/max."""
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(st.sampled_from(["q", "k", "q - k", "k - q"]), _edge_const()))
    kind = draw(st.sampled_from(["+", "-", "*", "//", "%", "%", "abs", "min", "max", "neg"]))
    a = draw(_edge_int(depth - 1))
    if kind in ("//", "%"):
        return f"({a}) {kind} ({draw(_edge_const(divisor=True))})"
    if kind == "*":   # the language multiplies by a constant only
        return f"({a}) * ({draw(_edge_const())})"
    if kind == "neg":
        return f"-({a})"
    b = draw(_edge_int(depth - 1))
    return f"{kind}({a}, {b})" if kind in ("min", "max") else f"abs({a})" if kind == "abs" else f"({a}) {kind} ({b})"


@st.composite
def _edge_cond(draw, depth: int = 2) -> str:
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "in", "boolcmp", "and", "or", "not"]))
    if depth <= 0 or kind == "cmp":
        return f"{draw(_edge_int())} {draw(st.sampled_from(_ORDER))} {draw(_edge_int(1))}"
    if kind == "in":
        lo, step = draw(st.integers(-8, 8)), draw(st.sampled_from([1, 2, 3, -1, -4, 2**31, 2**62]))
        container = draw(st.sampled_from([f"range({lo}, {lo + 40}, {step})" if step > 0 else
                                          f"range({lo + 40}, {lo}, {step})", "{0, 3, 5}", "[-1, 2, 2]", "{}"]))
        return f"{draw(_edge_int(1))} {draw(st.sampled_from(['in', 'not in']))} {container}"
    if kind == "boolcmp":   # conditions compared with each other, as in docs/language.md
        return f"({draw(_edge_cond(0))}) {draw(st.sampled_from(['==', '!=']))} ({draw(_edge_cond(0))})"
    if kind == "not":
        return f"not ({draw(_edge_cond(depth - 1))})"
    return f"({draw(_edge_cond(depth - 1))}) {kind} ({draw(_edge_cond(depth - 1))})"


@st.composite
def edge_masks(draw) -> str:
    """A pattern file whose mask meets the integer corners: negative divisors, constants at the int32 and
    int64 edges, products that overflow, comparisons of conditions, ranges with huge or negative steps."""
    return f"pattern main():\n    mask {draw(_edge_cond())}\n"
