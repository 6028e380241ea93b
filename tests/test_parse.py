"""Stage 1, parse: text -> AST. Shapes of trees, precedence, layout (comments, blank lines, continuations),
spans, and the round trip through the unparser for random modules."""

from __future__ import annotations

import pytest
from hypothesis import given

import attnpat
from attnpat.compiler import nodes as N
from attnpat.compiler.parse import parse_expr, parse_module
from attnpat.compiler.unparse import unparse
from strategies import identifiers, modules

SLIDING = """pattern sliding_window(window: int = 4096):
    require window >= 1
    mask causal and q - k < window
"""


def n(id_: str) -> N.Name:
    return N.Name(id_)


def num(v: int) -> N.Num:
    return N.Num(v)


def body_of(text: str) -> tuple:
    return parse_module(text).patterns[0].body


# -- whole files ------------------------------------------------------------------------------------

def test_example_file():
    m = parse_module(SLIDING, "sw.attn")
    assert m == N.Module((N.PatternDef(
        "sliding_window",
        (N.Param("window", "int", num(4096)),),
        (N.Require(N.Compare(n("window"), (">=",), (num(1),))),
         N.Mask(N.BoolOp("and", (n("causal"), N.Compare(N.BinOp("-", n("q"), n("k")), ("<",), (n("window"),)))))),
    ),))


def test_every_statement_and_param_type():
    text = ("pattern p(a: int, b2: bool = True, s: set = {1, 2}, l: list = [3,], ):\n"
            "    input doc: int[k]\n"
            "    input seg: int[q]\n"
            "    x = doc[q]\n"
            "    require a > 0\n"
            "    mask x == doc[k] and seg[q] in s\n")
    (p,) = parse_module(text).patterns
    assert [(x.name, x.type) for x in p.params] == [("a", "int"), ("b2", "bool"), ("s", "set"), ("l", "list")]
    assert p.params[0].default is None
    assert p.params[3].default == N.ListLit((num(3),))
    assert [type(s).__name__ for s in p.body] == ["InputDecl", "InputDecl", "Let", "Require", "Mask"]
    assert p.body[0] == N.InputDecl("doc", "k") and p.body[1] == N.InputDecl("seg", "q")
    assert p.body[2] == N.Let("x", N.Subscript(n("doc"), n("q")))


@pytest.mark.parametrize("text", ["", "\n", "\n\n   \n", "# only a comment\n", "# c1\n\n# c2"])
def test_empty_files(text):
    assert parse_module(text) == N.Module(())


def test_several_patterns_in_order():
    text = "pattern a():\n    mask causal\npattern b():\n    mask True\n\n\npattern c():\n    mask False"
    assert [p.name for p in parse_module(text).patterns] == ["a", "b", "c"]


def test_comments_blank_lines_and_continuations():
    text = ("# header comment\n"
            "\n"
            "pattern p(w: int = 3,  # trailing comment inside the header brackets\n"
            "          ws: list = [1,\n"
            "                      2]):   # after the colon\n"
            "\n"
            "    # a comment line inside the body\n"
            "        # indented differently: still just a comment\n"
            "    require w >= 1\n"
            "\n"
            "    mask (causal and\n"
            "  q - k < w) or \\\n"
            "          k in {0,\n"
            "# a comment inside brackets\n"
            "                3}\n"
            "\n"
            "# between patterns\n"
            "pattern r():\n"
            "\tmask k <= q  # tab-indented body\n")
    compact = ("pattern p(w: int = 3, ws: list = [1, 2]):\n"
               "    require w >= 1\n"
               "    mask (causal and q - k < w) or k in {0, 3}\n"
               "pattern r():\n"
               "    mask k <= q\n")
    assert parse_module(text) == parse_module(compact)


def test_crlf_line_endings():
    assert parse_module(SLIDING.replace("\n", "\r\n")) == parse_module(SLIDING)


def test_file_without_final_newline():
    assert parse_module(SLIDING.rstrip("\n")) == parse_module(SLIDING)


def test_names_that_look_like_other_tokens():
    # TYPE and AXIS words, builtins and keyword prefixes are ordinary names where a name is expected.
    text = ("pattern int(set: int = 1, q_: bool = True):\n"
            "    input list: int[k]\n"
            "    bool = list[q] + set\n"
            "    inx = notx + andy + pattern_ + True_\n"
            "    mask bool < inx\n")
    (p,) = parse_module(text).patterns
    assert p.name == "int" and p.params[0].name == "set"
    assert p.body[1] == N.Let("bool", N.BinOp("+", N.Subscript(n("list"), n("q")), n("set")))
    assert p.body[2].value == N.BinOp("+", N.BinOp("+", N.BinOp("+", n("notx"), n("andy")),
                                                    n("pattern_")), n("True_"))


@pytest.mark.parametrize("kw", ["pattern", "require", "input", "mask", "and", "or", "not", "in", "True", "False"])
def test_keywords_are_not_names(kw):
    with pytest.raises(attnpat.PatternSyntaxError):
        parse_module(f"pattern p():\n    {kw} = 1\n    mask True\n")


# -- expressions: precedence and shapes --------------------------------------------------------------

@pytest.mark.parametrize("text, tree", [
    ("not a == b", N.Unary("not", N.Compare(n("a"), ("==",), (n("b"),)))),
    ("-q % 3", N.BinOp("%", N.Unary("-", n("q")), num(3))),
    ("-(q % 3)", N.Unary("-", N.BinOp("%", n("q"), num(3)))),
    ("a - (b - c)", N.BinOp("-", n("a"), N.BinOp("-", n("b"), n("c")))),
    ("a - b - c", N.BinOp("-", N.BinOp("-", n("a"), n("b")), n("c"))),
    ("a + b * c", N.BinOp("+", n("a"), N.BinOp("*", n("b"), n("c")))),
    ("a // b % c", N.BinOp("%", N.BinOp("//", n("a"), n("b")), n("c"))),
    ("a or b and c", N.BoolOp("or", (n("a"), N.BoolOp("and", (n("b"), n("c")))))),
    ("a and b and c", N.BoolOp("and", (n("a"), n("b"), n("c")))),
    ("a and (b and c)", N.BoolOp("and", (n("a"), N.BoolOp("and", (n("b"), n("c")))))),
    ("not a and b", N.BoolOp("and", (N.Unary("not", n("a")), n("b")))),
    ("not not a", N.Unary("not", N.Unary("not", n("a")))),
    ("a < b + 1", N.Compare(n("a"), ("<",), (N.BinOp("+", n("b"), num(1)),))),
    ("0 <= q - k < w", N.Compare(num(0), ("<=", "<"), (N.BinOp("-", n("q"), n("k")), n("w")))),
    ("a < b <= c > d >= e == f != g",
     N.Compare(n("a"), ("<", "<=", ">", ">=", "==", "!="), tuple(n(x) for x in "bcdefg"))),
    ("k in {0, 3}", N.Compare(n("k"), ("in",), (N.SetLit((num(0), num(3))),))),
    ("k not in range(0, 4)", N.Compare(n("k"), ("not in",), (N.Call("range", (num(0), num(4))),))),
    ("not k in s", N.Unary("not", N.Compare(n("k"), ("in",), (n("s"),)))),
    ("(a < b) == c", N.Compare(N.Compare(n("a"), ("<",), (n("b"),)), ("==",), (n("c"),))),
    ("-a[0]", N.Unary("-", N.Subscript(n("a"), num(0)))),
    ("a[0][1]", N.Subscript(N.Subscript(n("a"), num(0)), num(1))),
    ("(q + 1)[0]", N.Subscript(N.BinOp("+", n("q"), num(1)), num(0))),
    ("ws[h % 4]", N.Subscript(n("ws"), N.BinOp("%", n("h"), num(4)))),
    ("--q", N.Unary("-", N.Unary("-", n("q")))),
    ("+q", n("q")),
    ("- +q", N.Unary("-", n("q"))),
    ("f()", N.Call("f", ())),
    ("f(1, x, w=2, s={},)", N.Call("f", (num(1), n("x")), (("w", num(2)), ("s", N.SetLit(()))))),
    ("hash(q, k) % 4 < 1", N.Compare(N.BinOp("%", N.Call("hash", (n("q"), n("k"))), num(4)), ("<",), (num(1),))),
    ("[]", N.ListLit(())),
    ("[1, [2], {3}]", N.ListLit((num(1), N.ListLit((num(2),)), N.SetLit((num(3),))))),
    ("True or False", N.BoolOp("or", (N.BoolLit(True), N.BoolLit(False)))),
    ("0", num(0)),
    ("123456789012345678901234567890", num(123456789012345678901234567890)),
])
def test_expression_trees(text, tree):
    assert parse_expr(text) == tree
    assert parse_module(f"pattern p():\n    mask {text}\n").patterns[0].body[0].expr == tree


@pytest.mark.parametrize("text", ["a < b and c", "(a < b) and c", "((a < b) and c)"])
def test_redundant_parentheses_vanish(text):
    assert parse_expr(text) == N.BoolOp("and", (N.Compare(n("a"), ("<",), (n("b"),)), n("c")))


def test_chained_comparison_is_one_node():
    e = parse_expr("0 <= q - k < w")
    assert isinstance(e, N.Compare) and len(e.ops) == 2 and len(e.comparators) == 2


@pytest.mark.parametrize("text", ["007", "1_000", "0x10", "1.", ".5", "q ** 2", "q / 2", "a = b", "f(x=1, 2)",
                                  "q < < k", "{1, 2", "not", "k not k", "q in in s", "", "a\nb"])
def test_bad_expressions(text):
    with pytest.raises(attnpat.PatternSyntaxError):
        parse_expr(text)


def test_positional_after_keyword_is_reported_at_the_argument():
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_module("pattern p():\n    mask band(lo=1, 2)\n", "f.attn")
    assert str(info.value).startswith("f.attn:2:21: error: positional argument follows keyword argument")


def test_input_must_be_int():
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_module("pattern p():\n    input doc: bool[k]\n    mask True\n")
    assert "write 'int[k]', not 'bool[k]'" in str(info.value)


def test_parse_expr_points_at_the_users_text():
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_expr("q < < k", name="--set")
    assert str(info.value).splitlines() == ["--set:1:5: error: unexpected '<', expected an expression",
                                            "    q < < k", "        ^"]


# -- spans -----------------------------------------------------------------------------------------------

def test_spans_are_recorded():
    m = parse_module(SLIDING, "sw.attn")
    (p,) = m.patterns
    assert (p.span.line, p.span.column) == (1, 1)
    assert p.span.source.name == "sw.attn"
    assert (p.params[0].span.line, p.params[0].span.column) == (1, 24)
    mask = p.body[1]
    assert (mask.span.line, mask.span.column) == (3, 5)
    window = mask.expr.values[1].comparators[0]
    assert window == N.Name("window")
    assert (window.span.line, window.span.column, window.span.end_column) == (3, 29, 35)
    diff = mask.expr.values[1].left
    assert (diff.span.column, diff.span.end_column) == (21, 26)


def test_binop_spans_cover_both_operands():
    e = parse_expr("a - b + c")
    assert (e.span.column, e.span.end_column) == (1, 10)
    assert (e.left.span.column, e.left.span.end_column) == (1, 6)


def test_spans_are_excluded_from_equality_and_hash():
    a = parse_module(SLIDING, "one.attn")
    b = parse_module("\n\n# moved\n" + SLIDING.replace("q - k", "q-k").replace("    ", "\t"), "two.attn")
    assert a.patterns[0].body[1].span.line != b.patterns[0].body[1].span.line
    assert a == b and hash(a) == hash(b)
    assert parse_expr("  q  ") == N.Name("q") and N.Name("q", None) == parse_expr("q")
    assert len({parse_expr("q - k"), parse_expr("(q)-(k)"), N.BinOp("-", n("q"), n("k"))}) == 1


def test_nodes_are_frozen():
    e = parse_expr("q")
    with pytest.raises(AttributeError):
        e.id = "k"


# -- properties --------------------------------------------------------------------------------------

@given(modules())
def test_round_trip_random_modules(m):
    assert parse_module(unparse(m)) == m


@given(identifiers())
def test_identifiers_parse_as_names(name):
    assert parse_expr(name) == N.Name(name)


@pytest.mark.parametrize("text", ["pattern p():\n    mask q > k if True else q == k\n",
                                  "pattern p(w: int = 3):\n    mask q - k < (w if w > 2 else 2)\n"])
def test_conditional_expression_says_how_to_write_it(text):
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_module(text, "x.attn")
    message = str(info.value)
    assert "unexpected 'if'" in message and "(c and a) or (not c and b)" in message
    assert "a list indexed by h" in message
