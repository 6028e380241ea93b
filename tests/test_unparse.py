"""The unparser: canonical text for ASTs and checked expressions; parse(unparse(m)) == m."""

from __future__ import annotations

import pytest
from hypothesis import given

import attnpat
from attnpat.compiler import nodes as N
from attnpat.compiler.parse import parse_expr, parse_module
from attnpat.compiler.unparse import unparse, unparse_expr
from strategies import bool_exprs, exprs, int_exprs, modules, patterns


# -- properties --------------------------------------------------------------------------------------

@given(modules())
def test_round_trip(m):
    assert parse_module(unparse(m)) == m


@given(modules())
def test_unparse_is_stable(m):
    text = unparse(m)
    assert unparse(parse_module(text)) == text


@given(exprs())
def test_round_trip_expressions(e):
    assert parse_expr(unparse_expr(e)) == e


@given(int_exprs())
def test_round_trip_int_expressions(e):
    assert parse_expr(unparse(e)) == e


@given(bool_exprs())
def test_round_trip_bool_expressions(e):
    assert parse_expr(unparse(e)) == e


@given(patterns())
def test_canonical_text_of_generated_patterns_is_a_fixed_point(gen):
    m = parse_module(gen.text)
    assert parse_module(unparse(m)) == m
    assert unparse(parse_module(unparse(m))) == unparse(m)


@given(patterns())
def test_checked_expressions_print_as_checkable_text(gen):
    """str(checked) is valid source: checking it again gives the same expression text."""
    p = gen.load()
    decls = "".join(f"    input {name}: int[{axis}]\n" for name, axis in p.inputs.items())
    again = attnpat.parse(f"pattern again():\n{decls}    mask {p.expression()}\n")
    assert again.expression() == p.expression()
    assert again.inputs == p.inputs


# -- canonical forms ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("a-(b-c)", "a - (b - c)"),
    ("(a-b)-c", "a - b - c"),
    ("a+(b+c)", "a + (b + c)"),
    ("a*(b+c)", "a * (b + c)"),
    ("(a*b)+c", "a * b + c"),
    ("(-q)%3", "-q % 3"),
    ("-(q%3)", "-(q % 3)"),
    ("-(-q)", "--q"),
    ("not (a == b)", "not a == b"),
    ("(not a) == b", "(not a) == b"),
    ("not (a and b)", "not (a and b)"),
    ("(a and b) and c", "(a and b) and c"),
    ("a and (b or c)", "a and (b or c)"),
    ("(a and b) or c", "a and b or c"),
    ("(a < b) < c", "(a < b) < c"),
    ("a < (b < c)", "a < (b < c)"),
    ("0<=q-k<w", "0 <= q - k < w"),
    ("k  not   in{0,3}", "k not in {0, 3}"),
    ("(q+1)[0]", "(q + 1)[0]"),
    ("(ws)[h%4]", "ws[h % 4]"),
    ("-a[0]", "-a[0]"),
    ("(-a)[0]", "(-a)[0]"),
    ("f( 1 ,x=2 , )", "f(1, x=2)"),
    ("[1,2,]", "[1, 2]"),
    ("{}", "{}"),
    ("+q", "q"),
    ("True or False", "True or False"),
])
def test_canonical_text(text, canonical):
    assert unparse(parse_expr(text)) == canonical


def test_module_layout():
    text = ("# comment\npattern a( w:int=3 ,s :set={1} ):\n  require w>=1\n  mask k<=q\n\n\n"
            "pattern b():\n\tinput doc :int[ k ]\n\tx=doc[q]\n\tmask x==doc[k]\n")
    assert unparse(parse_module(text)) == (
        "pattern a(w: int = 3, s: set = {1}):\n"
        "    require w >= 1\n"
        "    mask k <= q\n"
        "\n"
        "pattern b():\n"
        "    input doc: int[k]\n"
        "    x = doc[q]\n"
        "    mask x == doc[k]\n")


def test_statements_and_definitions_unparse_alone():
    (p,) = parse_module("pattern p(w: int):\n    d = q - k\n    mask d < w\n").patterns
    assert unparse(p) == "pattern p(w: int):\n    d = q - k\n    mask d < w\n"
    assert unparse(p.body[0]) == "d = q - k"
    assert unparse(p.body[1]) == "mask d < w"
    assert unparse(N.Require(N.BoolLit(True))) == "require True"
    assert unparse(N.InputDecl("doc", "q")) == "input doc: int[q]"
    assert unparse(N.Module(())) == ""


# -- checked expressions contain negative literals ------------------------------------------------------

@pytest.mark.parametrize("node, text", [
    (N.Num(-3), "-3"),
    (N.BinOp("-", N.Name("q"), N.Num(-3)), "q - -3"),
    (N.BinOp("%", N.Num(-3), N.Num(2)), "-3 % 2"),
    (N.BinOp("*", N.Num(-1), N.Name("k")), "-1 * k"),
    (N.Subscript(N.ListLit((N.Num(-1), N.Num(2))), N.Name("h")), "[-1, 2][h]"),
    (N.Call("range", (N.Num(4), N.Num(-2), N.Num(-2))), "range(4, -2, -2)"),
])
def test_negative_literals(node, text):
    assert unparse_expr(node) == text
    # and the text means the same: -3 % 2 is (-3) % 2 in the language as in Python
    assert unparse(parse_expr(text)) == text


def test_unparse_rejects_non_nodes():
    with pytest.raises(TypeError):
        unparse_expr(object())
