"""Stage 2, check: parameter binding, Python value validation, folding, inlining, pattern calls, inputs --
and the whole front end against an independent, naive interpreter of the *unchecked* source."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import attnpat
from attnpat.compiler import nodes as N
from attnpat.compiler.check import (
    BUILTIN_NAMES, RESERVED_INPUT_NAMES, RESERVED_PARAMETER_NAMES, RESERVED_PATTERN_NAMES, VARIABLES, check_pattern,
    python_value,
)
from attnpat.compiler.hashing import hash32
from attnpat.compiler.parse import parse_module
from attnpat.library import resolve_library
from strategies import KEYWORDS, cases, patterns

SLIDING = """pattern sliding_window(window: int = 4096):
    require window >= 1
    mask causal and q - k < window
"""


def expr_of(body: str, header: str = "", **params) -> str:
    """The checked expression text of a one-pattern file with the given mask/body lines."""
    lines = body if "\n" in body else f"mask {body}"
    text = f"pattern p({header}):\n" + "".join(f"    {line}\n" for line in lines.strip("\n").split("\n"))
    return attnpat.parse(text, **params).expression()


# -- parameters -------------------------------------------------------------------------------------

def test_defaults_and_overrides():
    p = attnpat.parse(SLIDING)
    assert p.name == "sliding_window" and p.params == {"window": 4096}
    assert p.expression() == "k <= q and q - k < 4096"
    p3 = attnpat.parse(SLIDING, window=3)
    assert p3.params == {"window": 3} and p3.expression() == "k <= q and q - k < 3"
    assert p3.with_params(window=5).params == {"window": 5}
    assert p.with_params().params == {"window": 4096}
    assert repr(p3) == "Pattern(sliding_window(window=3))"


def test_parameters_see_earlier_parameters():
    p = attnpat.parse("pattern p(a: int = 2, b2: int = a * 3, s: set = range(0, b2, a)):\n    mask k in s\n")
    assert p.params == {"a": 2, "b2": 6, "s": frozenset({0, 2, 4})}
    assert attnpat.parse(p.source(), a=1).params == {"a": 1, "b2": 3, "s": frozenset({0, 1, 2})}


def test_parameter_without_default_must_be_given():
    text = "pattern p(w: int):\n    mask q - k < w\n"
    with pytest.raises(attnpat.ParameterError, match="parameter 'w' of pattern 'p' has no default"):
        attnpat.parse(text)
    assert attnpat.parse(text, w=2).expression() == "q - k < 2"


@pytest.mark.parametrize("type_, value, expected", [
    ("int", 3, 3), ("int", -3, -3), ("int", np.int64(7), 7), ("int", torch.tensor(5), 5),
    ("bool", True, True), ("bool", np.bool_(False), False), ("bool", np.True_, True),
    ("set", [3, 1, 3], frozenset({1, 3})), ("set", {2}, frozenset({2})), ("set", range(0, 6, 2), frozenset({0, 2, 4})),
    ("set", frozenset(), frozenset()), ("set", (1, 2), frozenset({1, 2})), ("set", np.array([4, 5]), frozenset({4, 5})),
    ("list", [3, 1, 3], (3, 1, 3)), ("list", (1,), (1,)), ("list", range(3), (0, 1, 2)),
])
def test_python_values_accepted(type_, value, expected):
    got = python_value(value, type_, "parameter 'x'")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("type_, value", [
    ("int", True), ("int", False), ("int", "3"), ("int", 3.0), ("int", None), ("int", [3]),
    ("int", np.True_), ("int", torch.tensor(True)), ("list", [np.True_]),
    ("bool", 1), ("bool", 0), ("bool", "True"), ("bool", None),
    ("set", "ab"), ("set", 3), ("set", [1, "2"]), ("set", [True]), ("set", [1.5]),
    ("list", b"ab"), ("list", None), ("list", [None]),
])
def test_python_values_rejected(type_, value):
    with pytest.raises(attnpat.ParameterError, match="parameter 'x' expects"):
        python_value(value, type_, "parameter 'x'")


def test_huge_python_collections_are_rejected_before_iterating():
    # a range given for a set stays a range (symbolic, never iterated); a list would be materialised
    assert python_value(range(10**15), "set", "parameter 'x'") == range(10**15)
    with pytest.raises(attnpat.ParameterError, match="at most 65536 elements"):
        python_value(list(range(65537)), "set", "parameter 'x'")
    with pytest.raises(attnpat.ParameterError, match="at most 65536 elements"):
        python_value(range(10**30), "list", "parameter 'x'")


def test_override_types_through_parse():
    text = "pattern p(w: int = 1, on: bool = True, g: set = {}, ws: list = [1]):\n    mask q - k < w\n"
    p = attnpat.parse(text, w=2, on=False, g=[1, 2], ws=(4, 5))
    assert p.params == {"w": 2, "on": False, "g": frozenset({1, 2}), "ws": (4, 5)}
    for bad in ({"w": True}, {"w": "2"}, {"on": 1}, {"g": "12"}, {"ws": 3}):
        with pytest.raises(attnpat.ParameterError):
            attnpat.parse(text, **bad)
    with pytest.raises(attnpat.ParameterError, match="has no parameter 'ww' \\(did you mean 'w'\\?\\)"):
        attnpat.parse(text, ww=3)


def test_default_of_the_wrong_type():
    with pytest.raises(attnpat.PatternTypeError, match="the value of parameter 'w' is bool, but it is declared int"):
        attnpat.parse("pattern p(w: int = True):\n    mask True\n")
    with pytest.raises(attnpat.PatternTypeError, match="the value of parameter 'w' must be a constant"):
        attnpat.parse("pattern p(w: int = q):\n    mask True\n")
    # a list or range is a fine default for a set
    assert attnpat.parse("pattern p(s: set = [2, 2, 1]):\n    mask k in s\n").params == {"s": frozenset({1, 2})}


@pytest.mark.parametrize("header", ["q: int = 1", "causal: bool = True", "abs: int = 1", "w: int = 1, w: int = 2"])
def test_bad_parameter_names(header):
    with pytest.raises(attnpat.PatternNameError):
        attnpat.parse(f"pattern p({header}):\n    mask True\n")


def test_requires():
    assert attnpat.parse(SLIDING, window=1).params == {"window": 1}
    with pytest.raises(attnpat.RequirementError, match=r"failed: window >= 1 \(window = 0\)"):
        attnpat.parse(SLIDING, window=0)
    # requires are checked after the whole body, wherever they stand, with every parameter bound
    text = "pattern p(a: int = 1, b2: int = 2):\n    mask q < a\n    require a < b2 and b2 < 10\n"
    with pytest.raises(attnpat.RequirementError, match=r"\(a = 5, b2 = 2\)"):
        attnpat.parse(text, a=5)
    with pytest.raises(attnpat.PatternTypeError, match="'require' may only use parameters"):
        attnpat.parse("pattern p():\n    require q >= 0\n    mask True\n")
    with pytest.raises(attnpat.PatternTypeError, match="'require' needs a condition, not int"):
        attnpat.parse("pattern p():\n    require 1\n    mask True\n")


# -- folding and inlining -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, header, expected", [
    ("q - k < w + 1", "w: int = 3", "q - k < 4"),
    ("q < 2 * 3 - 1", "", "q < 5"),
    ("q < 7 // -2", "", "q < -4"),
    ("q < -7 % 3", "", "q < 2"),
    ("q < -7 // 2", "", "q < -4"),
    ("q < 7 % -3", "", "q < -2"),
    ("q < -(3)", "", "q < -3"),
    ("q < --3", "", "q < 3"),
    ("k in range(0, w)", "w: int = 3", "k in range(0, 3, 1)"),
    ("k in range(w)", "w: int = 3", "k in range(0, 3, 1)"),
    ("k not in {3, 1, 3}", "", "k not in {1, 3}"),
    ("k in s", "s: set = [5, 0]", "k in {0, 5}"),
    ("q < ws[1]", "ws: list = [4, 9]", "q < 9"),
    ("q - k < ws[h % len(ws)]", "ws: list = [4, 9]", "q - k < [4, 9][h % 2]"),
    ("q < abs(-3) + max(1, 2) + min(5, 4) + len({1, 2, 2})", "", "q < 11"),
    ("k < min(q, 3, 5, w)", "w: int = 9", "k < min(q, 3)"),
    ("k < max(q, k + 1)", "", "k < max(q, k + 1)"),
    ("hash(q) % 2 == hash(1, 2) % 2", "", f"hash(q) % 2 == {hash32(1, 2) % 2}"),
    ("True and causal", "", "k <= q"),
    ("causal and False", "", "False"),
    ("False or causal", "", "k <= q"),
    ("w > 2 or q < k", "w: int = 3", "True"),
    ("not (w > 2) and q < k", "w: int = 3", "False"),
    ("on and causal", "on: bool = True", "k <= q"),
    ("on == False", "on: bool = True", "False"),
    ("not not causal", "", "not not k <= q"),
    ("1 < 2 < 3", "", "True"),
    ("1 < 2 > 3", "", "False"),
    ("0 <= q - k < w", "w: int = 4", "0 <= q - k and q - k < 4"),
    ("0 <= q - k < 4 < w", "w: int = 9", "0 <= q - k and q - k < 4"),
    ("0 <= q - k < 4 < w", "w: int = 2", "False"),
    ("(q < k) == (k < q)", "", "(q < k) == (k < q)"),
    ("q + 0 < k * 1", "", "q + 0 < k * 1"),   # no algebraic simplification here: that is a later stage
])
def test_folding(body, header, expected):
    assert expr_of(body, header) == expected


def test_lets_are_inlined():
    body = "d = q - k\nnear = abs(d) <= w\nmask near and d >= 0"
    assert expr_of(body, "w: int = 2") == "abs(q - k) <= 2 and q - k >= 0"
    assert expr_of("c = w * 2\nmask q < c", "w: int = 2") == "q < 4"


def test_statement_order():
    # the mask is judged after the whole body: it may use definitions and inputs written below it
    assert expr_of("mask q < d\nd = 1") == "q < 1"
    assert attnpat.parse("pattern p():\n    mask doc[k] == 0\n    input doc: int[k]\n").inputs == {"doc": "k"}
    # requirements are judged before the mask: a bad value reports the require, not what it breaks
    text = "pattern p(w: int = 2):\n    mask (q - k) // w == 0\n    require w >= 1\n"
    with pytest.raises(attnpat.RequirementError, match="w >= 1"):
        attnpat.parse(text, w=0)
    # a definition that fails is an error only where it is used
    assert expr_of("bad = q // w\nmask causal", "w: int = 0") == "k <= q"
    with pytest.raises(attnpat.PatternTypeError, match="division by zero"):
        expr_of("bad = q // w\nmask causal and bad < 1", "w: int = 0")


def test_let_errors():
    with pytest.raises(attnpat.PatternNameError, match="'d' is used before it is defined"):
        expr_of("e = d + 1\nd = 1\nmask q < e")
    with pytest.raises(attnpat.PatternNameError, match="'d' is already defined in pattern 'p'"):
        expr_of("d = 1\nd = 2\nmask q < d")
    with pytest.raises(attnpat.PatternNameError, match="'w' is already defined"):
        expr_of("w = 2\nmask q < w", "w: int = 1")
    with pytest.raises(attnpat.PatternNameError, match="'k' is a built-in name"):
        expr_of("k = 2\nmask q < k")
    with pytest.raises(attnpat.PatternNameError, match="'causal' is a built-in name"):
        expr_of("input causal: int[k]\nmask True")


def test_causal_is_a_builtin_condition():
    assert expr_of("causal") == "k <= q"
    p = attnpat.parse("pattern p():\n    mask causal\n")
    assert p.dense_mask(3, 3)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_type_errors():
    for body, msg in [
        ("q", "a mask must be a condition"), ("q < True", "'<' compares integers, not bool"),
        ("q + causal < 1", "the right operand of '+' must be an integer, not bool"),
        ("not q", "the operand of 'not' must be a condition"), ("q and k", "an operand of 'and'"),
        ("q in 3", "the right side of 'in' must be a set, list or range, not int"),
        ("causal in {1}", "the left side of 'in' must be an integer, not bool"),
        ("q == causal", "cannot compare int with bool using '=='"),
        ("q < {1}[0]", "only lists and runtime inputs can be indexed, not set"),
        ("q < [][0]", "cannot index an empty list"), ("q < [1][1]", "list index 1 is out of range"),
        ("q < abs", "'abs' is a function"), ("q < abs(q, k)", "abs() takes 1 arguments, 2 given"),
        ("q < min(q)", "min() takes at least 2 arguments, 1 given"), ("q < len(q)", "len() takes a set, list or range"),
        ("q in range(q)", "range() arguments must be constants"),
        ("q in range(0, 4, 0)", "range() step must not be zero"),
        ("q < abs(x=1)", "abs() takes no keyword arguments"), ("k in {q}", "set elements must be constants"),
        ("q < q * k", "'*' needs a constant on one side"), ("q < q // k", "must be a constant"),
        ("q < q % 0", "division by zero"), ("q < q // (2 - 2)", "division by zero"),
    ]:
        with pytest.raises(attnpat.PatternTypeError, match=re.escape(msg)):
            expr_of(body)


def test_oversized_constants_are_rejected():
    with pytest.raises(attnpat.PatternTypeError, match="the constant 9223372036854775808 is too large"):
        expr_of("q < 9223372036854775808")
    with pytest.raises(attnpat.PatternTypeError, match="too large"):
        expr_of("q < len(range(0, 100000000000000000000000))")
    with pytest.raises(attnpat.PatternTypeError, match="too large"):
        expr_of("k in s", "s: set = {}", s=[2**64])
    assert expr_of("q < 9223372036854775807") == "q < 9223372036854775807"
    assert expr_of("q < 100000000000000000000 // 100000") == "q < 1000000000000000"   # folded: fits


def test_huge_ranges_as_sets_stay_ranges():
    assert expr_of("k in s", "s: set = range(0, 1000000000)") == "k in range(0, 1000000000, 1)"
    text = "pattern hp(s: set = {}):\n    mask k in s\npattern p():\n    mask hp(s=range(0, 1000000000))\n"
    assert attnpat.parse(text, "p").expression() == "k in range(0, 1000000000, 1)"
    assert expr_of("k in s", "s: set = range(0, 6, 2)") == "k in {0, 2, 4}"   # a short one is a set
    # ranges stay ranges where they are used directly: no size limit
    assert expr_of("k in range(0, 1000000000, 7)") == "k in range(0, 1000000000, 7)"


# -- pattern calls and inputs ------------------------------------------------------------------------

CALLS = """pattern band(lo: int = 0, hi: int = 2):
    require lo <= hi
    mask lo <= q - k <= hi

pattern same_doc():
    input doc: int[k]
    mask doc[q] == doc[k]

pattern main(w: int = 5):
    mask band(hi=w) and same_doc()
"""


def test_calls_with_overrides():
    def main(mask, **params):
        return attnpat.parse(CALLS.replace("band(hi=w) and same_doc()", mask), "main", **params).expression()

    assert main("band()") == "0 <= q - k and q - k <= 2"
    assert main("band(1)") == "1 <= q - k and q - k <= 2"
    assert main("band(1, w)") == "1 <= q - k and q - k <= 5"
    assert main("band(hi=w)", w=7) == "0 <= q - k and q - k <= 7"
    assert main("band(1, hi=3)") == "1 <= q - k and q - k <= 3"
    assert main("not band()") == "not (0 <= q - k and q - k <= 2)"
    with pytest.raises(attnpat.RequirementError, match=r"requirement of 'band' failed: lo <= hi \(hi = 1, lo = 4\)"):
        main("band(lo=4, hi=1)")
    unknown = "pattern 'band' has no parameter 'high' (did you mean 'hi'?)"
    with pytest.raises(attnpat.ParameterError, match=re.escape(unknown)):
        main("band(high=3)")
    with pytest.raises(attnpat.ParameterError, match="pattern 'band' takes 2 parameters, 3 given"):
        main("band(1, 2, 3)")
    with pytest.raises(attnpat.ParameterError, match="parameter 'lo' given twice"):
        main("band(1, lo=2)")
    with pytest.raises(attnpat.ParameterError, match="parameter 'hi' of pattern 'band' is int, got bool True"):
        main("band(hi=True)")
    with pytest.raises(attnpat.PatternTypeError, match="the value of 'hi' must be a constant"):
        main("band(hi=q)")
    with pytest.raises(attnpat.PatternTypeError, match="'w' is not a function or pattern"):
        main("w()")


def test_called_patterns_keep_their_own_scope():
    text = CALLS + "\npattern outer(lo: int = 9):\n    d = 1\n    mask band() and q > d\n"
    # band's `lo` is band's default 0, not outer's 9; outer's parameters are its own
    p = attnpat.parse(text, "outer")
    assert p.expression() == "(0 <= q - k and q - k <= 2) and q > 1"
    assert p.params == {"lo": 9}


def test_inputs_are_merged_from_called_patterns():
    p = attnpat.parse(CALLS, "main")
    assert p.inputs == {"doc": "k"}
    assert p.expression() == "(0 <= q - k and q - k <= 5) and doc[q] == doc[k]"
    own = "pattern other():\n    input doc: int[k]\n    mask same_doc() or doc[k] == 0\n"
    assert attnpat.parse(CALLS + own, "other").inputs == {"doc": "k"}


def test_input_declared_on_two_axes():
    text = CALLS + "pattern bad():\n    input doc: int[q]\n    mask doc[q] == 0 and same_doc()\n"
    with pytest.raises(attnpat.PatternTypeError,
                       match="runtime input 'doc' is int\\[q\\] in pattern 'bad' but int\\[k\\] in pattern 'same_doc'"):
        attnpat.parse(text, "bad")


def test_unused_inputs_are_not_required():
    text = ("pattern p(packed: bool = True):\n    input doc: int[k]\n"
            "    mask causal and (not packed or doc[q] == doc[k])\n")
    assert attnpat.parse(text).inputs == {"doc": "k"}
    unpacked = attnpat.parse(text, packed=False)
    assert unpacked.inputs == {}
    # a caller need not know which parameter values read an input: passing it anyway is accepted
    ids = [0, 0, 1, 1]
    assert (unpacked.dense_mask(4, 4, doc=ids) == unpacked.dense_mask(4, 4)).all()
    with pytest.raises(attnpat.InputError, match="no runtime input 'docs'"):
        unpacked.dense_mask(4, 4, docs=ids)


def test_input_indexing_rules():
    for body, msg in [
        ("input doc: int[k]\nmask doc[h] == 0", "runtime input 'doc' can only be indexed by q or k"),
        ("input doc: int[k]\nmask doc[q + 1] == 0", "can only be indexed by q or k"),
        ("input seg: int[q]\nmask seg[k] == 0", "'seg' is int[q] (one value per query); it cannot be indexed by k"),
        ("input doc: int[k]\nmask doc == 0", "cannot compare input with int"),
        ("input doc: int[k]\nmask doc + 1 < q", "must be an integer, not input"),
    ]:
        with pytest.raises(attnpat.PatternTypeError, match=re.escape(msg)):
            expr_of(body)


def test_recursion_between_patterns():
    text = "pattern pa():\n    mask pb()\npattern pb():\n    mask causal and pa()\n"
    with pytest.raises(attnpat.PatternNameError, match=r"pattern 'pa' uses itself \(pa -> pb -> pa\)"):
        attnpat.parse(text, "pa")


def test_choosing_a_pattern():
    text = CALLS
    with pytest.raises(attnpat.ParameterError, match="defines several patterns"):
        attnpat.parse(text)
    with pytest.raises(attnpat.PatternNameError, match="no pattern 'mian' in <string> \\(did you mean 'main'\\?\\)"):
        attnpat.parse(text, "mian")
    with pytest.raises(attnpat.PatternNameError, match="no pattern 'zz' here"):
        check_pattern(parse_module(text), "zz")
    with pytest.raises(attnpat.PatternNameError, match="defines no pattern"):
        attnpat.parse("# nothing\n")


def test_library_patterns_can_be_called():
    names = attnpat.library_names()
    loadable = []
    for name in names:
        try:
            p = attnpat.load(name)
        except attnpat.PatternError:
            continue
        if p.compiled.checked.scores is None:   # calling a pattern with score terms is refused (test_scores.py)
            loadable.append((name, p))
    if not loadable:
        pytest.skip("no library pattern with all-default parameters yet")
    for name, p in loadable[:5]:
        decls = "".join(f"    input {n}: int[{a}]\n" for n, a in p.inputs.items())
        caller = attnpat.parse(f"pattern caller_of_library():\n{decls}    mask {name}()\n")
        assert caller.expression() == p.expression()
        assert caller.inputs == p.inputs


# -- reserved names ------------------------------------------------------------------------------------

def _keyword_signatures(var_keyword: str) -> dict[str, set[str]]:
    """Every function or method of attnpat (attnpat, attnpat.compiler, attnpat.runtime and their modules)
    that takes `**<var_keyword>`, with the names of its other arguments."""
    import importlib
    import inspect
    import pkgutil

    import attnpat.compiler
    import attnpat.runtime
    module_names = []
    for pkg in (attnpat, attnpat.compiler, attnpat.runtime):
        module_names += [pkg.__name__] + [i.name for i in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    found = {}
    for module_name in module_names:
        if module_name.endswith("__main__"):
            continue
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = [(name, obj)]
            if inspect.isclass(obj):
                members = [(f"{name}.{n}", getattr(m, "__func__", m)) for n, m in vars(obj).items()]
            for qualname, f in members:
                if not callable(f):
                    continue
                try:
                    parameters = list(inspect.signature(f).parameters.values())
                except (TypeError, ValueError):
                    continue
                if any(p.kind is p.VAR_KEYWORD and p.name == var_keyword for p in parameters):
                    found[f"{module.__name__}.{qualname}"] = {
                        p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return found


def test_reserved_input_names_are_the_arguments_of_every_call_taking_inputs():
    found = _keyword_signatures("inputs")
    # the discovery works: the calls the docs name are among those found
    for f in ("attnpat.attention", "attnpat.reference.reference_attention", "attnpat.pattern.Pattern.dense_mask",
              "attnpat.pattern.Pattern.block_mask", "attnpat.compiler.analysis.analyze",
              "attnpat.runtime.kernel.Kernel.__call__", "attnpat.runtime.kernel.attention",
              "attnpat.runtime.autograd.attention_with_grad"):
        assert f in found, f
    assert set().union(*found.values()) == set(RESERVED_INPUT_NAMES), found
    assert list(RESERVED_INPUT_NAMES) == sorted(RESERVED_INPUT_NAMES)


def test_reserved_parameter_names_are_the_arguments_of_every_call_taking_params():
    found = _keyword_signatures("params")
    for f in ("attnpat.pattern.load", "attnpat.pattern.parse", "attnpat.pattern.Pattern.with_params"):
        assert f in found, f
    assert set().union(*found.values()) == set(RESERVED_PARAMETER_NAMES), found


@pytest.mark.parametrize("name", RESERVED_INPUT_NAMES)
def test_reserved_input_names_are_rejected(name):
    text = f"pattern p():\n    input {name}: int[k]\n    mask True\n"
    with pytest.raises(attnpat.PatternError) as info:
        attnpat.parse(text, name="f.attn")
    if name in KEYWORDS:            # 'pattern': not even a name
        assert type(info.value) is attnpat.PatternSyntaxError
        return
    assert type(info.value) is attnpat.PatternNameError
    assert (info.value.span.line, info.value.span.column) == (2, 5)
    if name in BUILTIN_NAMES:
        assert info.value.message == f"'{name}' is a built-in name and cannot be redefined"
    else:
        assert info.value.message.startswith(f"'{name}' is reserved and cannot name a runtime input")
        assert info.value.notes == ("reserved input names: " + ", ".join(RESERVED_INPUT_NAMES),)


@pytest.mark.parametrize("name", RESERVED_PARAMETER_NAMES)
def test_reserved_parameter_names_are_rejected(name):
    text = f"pattern p(w: int = 1, {name}: int = 2):\n    mask q - k < w\n"
    with pytest.raises(attnpat.PatternError) as info:
        attnpat.parse(text, name="f.attn")
    if name in KEYWORDS:
        assert type(info.value) is attnpat.PatternSyntaxError
        return
    assert type(info.value) is attnpat.PatternNameError
    assert (info.value.span.line, info.value.span.column) == (1, 23)
    assert info.value.message.startswith(f"'{name}' is reserved and cannot name a parameter")
    assert info.value.notes == ("reserved parameter names: " + ", ".join(RESERVED_PARAMETER_NAMES),)


def test_reserved_names_are_per_kind():
    # an input may be named like a load() argument, a parameter like a dense_mask() argument
    p = attnpat.parse("pattern p(heads: int = 2, scale: int = 1):\n    input name: int[k]\n    input text: int[q]\n"
                      "    mask q - k < heads * scale and name[q] == name[k] and text[q] >= 0\n", heads=3)
    assert p.params == {"heads": 3, "scale": 1} and p.inputs == {"name": "k", "text": "q"}
    mask = p.dense_mask(4, 4, heads=1, name=torch.tensor([0, 0, 1, 1]), text=torch.tensor([0, 1, 2, 3]))
    assert mask.shape == (1, 1, 4, 4)
    assert not set(RESERVED_INPUT_NAMES) & set(RESERVED_PARAMETER_NAMES) - {"pattern", "self"}


@pytest.mark.parametrize("name", RESERVED_PATTERN_NAMES)
def test_reserved_pattern_names_are_rejected_at_the_definition(name):
    text = f"pattern ok():\n    mask causal\n\npattern {name}(w: int = 1):\n    mask causal\n"
    with pytest.raises(attnpat.PatternNameError) as info:
        attnpat.parse(text, name, name="f.attn")
    span = info.value.span
    assert (span.line, span.column, span.end_column) == (4, 9, 9 + len(name))
    assert info.value.message.startswith(f"'{name}' is a built-in ")
    assert f"cannot name a pattern: a call {name}(" in info.value.message
    # the file's other patterns are not affected
    assert attnpat.parse(text, "ok").expression() == "k <= q"


def test_calling_a_pattern_named_like_a_variable_reports_the_definition():
    for var in VARIABLES:
        text = f"pattern p():\n    mask causal and {var}()\n\npattern {var}():\n    mask True\n"
        with pytest.raises(attnpat.PatternNameError, match=f"'{var}' is a built-in variable") as info:
            attnpat.parse(text, "p")
        assert (info.value.span.line, info.value.span.column) == (4, 9)
    # without such a definition the call is what it always was
    with pytest.raises(attnpat.PatternTypeError, match="'q' is not a function or pattern"):
        attnpat.parse("pattern p():\n    mask q()\n")


def test_causal_may_name_a_pattern():
    # `causal()` reaches a pattern so named (the library has one); the bare name stays the builtin
    assert "causal" not in RESERVED_PATTERN_NAMES
    text = "pattern causal():\n    mask k < q\n\npattern p():\n    mask causal() and causal\n"
    assert attnpat.parse(text, "p").expression() == "k < q and k <= q"


# -- did you mean ----------------------------------------------------------------------------------------

def test_unknown_pattern_suggests_the_file_then_the_library_then_builtins():
    def message(mask):
        with pytest.raises(attnpat.PatternNameError) as info:
            attnpat.parse(f"pattern band(lo: int = 0):\n    mask q - k >= lo\n\npattern p():\n    mask {mask}\n", "p")
        return info.value.message
    assert message("bnad()") == "unknown pattern 'bnad' (did you mean 'band'?)"
    assert message("streaming_lm()") == "unknown pattern 'streaming_lm' (did you mean 'streaming_llm'?)"
    assert message("prefix_lm_dynamc()") == "unknown pattern 'prefix_lm_dynamc' (did you mean 'prefix_lm_dynamic'?)"
    assert message("rnge(3) == {}") == "unknown pattern 'rnge' (did you mean 'range'?)"
    assert message("zzzzzz()") == "unknown pattern 'zzzzzz'"


def test_a_resolver_names_what_it_knows():
    module = parse_module("pattern p():\n    mask causal and wndow()\n", "f.attn")
    own = parse_module("pattern window():\n    mask q - k < 3\n", "lib.attn")

    def resolver(name):
        return (own, own.patterns[0]) if name == "window" else None
    with pytest.raises(attnpat.PatternNameError) as info:
        check_pattern(module, "p", resolver=resolver)
    assert info.value.message == "unknown pattern 'wndow'"      # a bare resolver knows no names
    resolver.names = lambda: ["window"]
    with pytest.raises(attnpat.PatternNameError) as info:
        check_pattern(module, "p", resolver=resolver)
    assert info.value.message == "unknown pattern 'wndow' (did you mean 'window'?)"
    assert resolve_library.names() == attnpat.library_names()


def test_a_pattern_used_as_a_value():
    with pytest.raises(attnpat.PatternTypeError, match=r"'document' is a pattern; call it, e.g. document\(\)"):
        attnpat.parse("pattern p():\n    mask causal and document\n")
    with pytest.raises(attnpat.PatternTypeError, match=r"'band' is a pattern; call it, e.g. band\(\)"):
        attnpat.parse("pattern band():\n    mask True\n\npattern p():\n    mask band\n", "p")
    # a local definition named like a pattern is the definition
    assert expr_of("full = q - k < 2\nmask full") == "q - k < 2"


# -- properties ---------------------------------------------------------------------------------------

ALLOWED_CALLS = {"abs", "min", "max", "hash", "range"}


@given(patterns())
def test_checked_expressions_are_closed(gen):
    """What the checker hands on mentions only q, k, h, b, input subscripts and literals."""
    p = gen.load()
    inputs = p.inputs
    for node in N.walk(p.checked.expr):
        if isinstance(node, N.Name):
            assert node.id in ("q", "k", "h", "b") or node.id in inputs
        elif isinstance(node, N.Call):
            assert node.func in ALLOWED_CALLS and not node.kwargs
        elif isinstance(node, N.Subscript):
            if isinstance(node.value, N.Name):
                assert node.value.id in inputs and node.index in (N.Name("q"), N.Name("k"))
            else:
                assert isinstance(node.value, N.ListLit)
        elif isinstance(node, N.Compare):
            assert len(node.ops) == 1
        elif isinstance(node, N.BinOp) and node.op in ("//", "%"):
            assert isinstance(node.right, N.Num) and node.right.value != 0
        elif isinstance(node, N.BoolOp):
            assert len(node.values) >= 2
    assert set(p.params) == {prm.name for prm in p.definition.params}


# linear integer terms over q, k, h and a parameter
ints = st.recursive(
    st.one_of(st.sampled_from(["q", "k", "h", "w"]).map(N.Name), st.integers(0, 5).map(N.Num)),
    lambda sub: st.one_of(st.builds(N.BinOp, st.sampled_from(["+", "-"]), sub, sub),
                          st.builds(N.Unary, st.just("-"), sub)),
    max_leaves=3)


@given(st.lists(ints, min_size=3, max_size=4), st.lists(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
                                                        min_size=3, max_size=3))
def test_chained_comparison_is_the_conjunction_of_its_links(operands, ops):
    from attnpat.compiler.unparse import unparse_expr
    ops = ops[:len(operands) - 1]
    texts = [unparse_expr(o) for o in operands]
    chain = texts[0] + "".join(f" {op} {t}" for op, t in zip(ops, texts[1:]))
    links = " and ".join(f"{a} {op} {b}" for a, op, b in zip(texts, ops, texts[1:]))
    header = "pattern p(w: int = 2):\n    mask "
    a = attnpat.parse(header + chain + "\n")
    b = attnpat.parse(header + "(" + links + ")" + "\n")
    assert torch.equal(a.dense_mask(6, 7, heads=2), b.dense_mask(6, 7, heads=2))


# -- an independent interpreter of the unchecked source ---------------------------------------------------

class _Interp:
    """Evaluates a pattern straight from its AST with Python ints at one (b, h, q, k) point: no folding,
    no inlining, lets re-evaluated on use -- nothing shared with the checker or the dense reference."""

    def __init__(self, module, inputs):
        self.module, self.inputs = module, inputs

    def pattern_value(self, name, overrides, point):
        pdef = next(p for p in self.module.patterns if p.name == name)
        env = {}
        for prm in pdef.params:
            if prm.name in overrides:
                v = overrides[prm.name]
            else:
                v = self.eval(prm.default, env, point)
            env[prm.name] = frozenset(v) if prm.type == "set" else (tuple(v) if prm.type == "list" else v)
        mask = None
        for stmt in pdef.body:
            if isinstance(stmt, N.Let):
                env[stmt.name] = ("let", stmt.value, dict(env))
            elif isinstance(stmt, N.InputDecl):
                env[stmt.name] = ("input", stmt.name, stmt.axis)
            elif isinstance(stmt, N.Mask):
                mask = stmt.expr
        return self.eval(mask, env, point)

    def eval(self, e, env, pt):
        ev = lambda x: self.eval(x, env, pt)  # noqa: E731
        if isinstance(e, N.Num) or isinstance(e, N.BoolLit):
            return e.value
        if isinstance(e, N.Name):
            if e.id in ("q", "k", "h", "b"):
                return pt[e.id]
            if e.id == "causal":
                return pt["k"] <= pt["q"]
            v = env[e.id]
            if isinstance(v, tuple) and v and v[0] == "let":
                return self.eval(v[1], v[2], pt)
            return v
        if isinstance(e, N.Unary):
            return (not ev(e.operand)) if e.op == "not" else -ev(e.operand)
        if isinstance(e, N.BinOp):
            a, b = ev(e.left), ev(e.right)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "//": lambda: a // b, "%": lambda: a % b}[e.op]()
        if isinstance(e, N.BoolOp):
            vals = [ev(v) for v in e.values]
            return all(vals) if e.op == "and" else any(vals)
        if isinstance(e, N.Compare):
            vals = [ev(e.left)] + [ev(c) for c in e.comparators]
            fns = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                   ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
                   "in": lambda a, b: a in b, "not in": lambda a, b: a not in b}
            return all(fns[op](a, b) for op, a, b in zip(e.ops, vals, vals[1:]))
        if isinstance(e, N.SetLit):
            return frozenset(ev(x) for x in e.elts)
        if isinstance(e, N.ListLit):
            return tuple(ev(x) for x in e.elts)
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.Name) and isinstance(env.get(e.value.id), tuple) \
                    and env[e.value.id][:1] == ("input",):
                _, name, axis = env[e.value.id]
                if name not in self.inputs:   # folded away by the checker: the mask does not depend on it
                    return 0
                row = self.inputs[name][pt["b"]]
                return row[pt["row"]] if axis == "q" else row[pt[e.index.id]]
            return ev(e.value)[ev(e.index)]
        if isinstance(e, N.Call):
            args = [ev(a) for a in e.args]
            builtins = {"abs": lambda: abs(args[0]), "min": lambda: min(args), "max": lambda: max(args),
                        "len": lambda: len(args[0]), "range": lambda: range(*args), "hash": lambda: hash32(*args)}
            if e.func in builtins:
                return builtins[e.func]()
            target = next(p for p in self.module.patterns if p.name == e.func)
            overrides = {prm.name: a for prm, a in zip(target.params, args)}
            overrides.update({k: ev(v) for k, v in e.kwargs})
            return self.pattern_value(e.func, overrides, pt)
        raise AssertionError(e)


@given(cases(max_len=7, max_batch=2, max_heads=3))
def test_front_end_matches_a_naive_interpreter(case):
    """check + dense reference == direct interpretation of the source, on every (b, h, q, k)."""
    s = case.shape
    dense = case.dense()
    module = parse_module(case.gen.text)
    main = next(p for p in module.patterns if p.name == case.gen.name)
    types = {prm.name: prm.type for prm in main.params}
    overrides = {k: python_value(v, types[k], k) for k, v in case.gen.params.items()}
    inputs = {}
    for name, t in case.inputs.items():
        t = t.to(torch.int64)
        rows = t if t.dim() == 2 else t.unsqueeze(0).expand(s.batch, -1)
        inputs[name] = rows.tolist()
    interp = _Interp(module, inputs)
    q0 = s.kv_len - s.q_len if s.q_offset is None else s.q_offset
    for b in range(s.batch):
        for h in range(s.heads):
            for i in range(s.q_len):
                for k in range(s.kv_len):
                    pt = {"b": b, "h": h, "q": q0 + i, "k": k, "row": i}
                    want = bool(interp.pattern_value(case.gen.name, overrides, pt))
                    assert bool(dense[b, h, i, k]) == want, (pt, case.pattern.expression())
