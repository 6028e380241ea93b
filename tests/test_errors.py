"""Error messages: golden texts for typical mistakes, and fuzzing -- whatever text comes in, only
attnpat.PatternError subclasses come out, each well formed (`name:line:col: error: ...`, the source line,
a caret line under the offending text)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings

import attnpat
from attnpat.compiler.check import check_pattern
from attnpat.compiler.parse import parse_expr, parse_module
from attnpat.compiler.unparse import unparse
from strategies import modules, mutated_texts, noise_texts, resolving_texts

SW = """pattern sliding_window(window: int = 4096):
    require window >= 1
    mask causal and q - k < window
"""

# (id, text, Python parameter overrides, exception type, the exact message)
GOLDEN = [
    ("unknown name with did-you-mean",
     "pattern sliding_window(window: int = 4096):\n    mask causal and q - k < windw\n", {},
     attnpat.PatternNameError,
     "f.attn:2:29: error: unknown name 'windw' (did you mean 'window'?)\n"
     "        mask causal and q - k < windw\n"
     "                                ^^^^^"),
    ("unknown name, nothing close",
     "pattern p():\n    mask q < zzz\n", {},
     attnpat.PatternNameError,
     "f.attn:2:14: error: unknown name 'zzz'\n"
     "        mask q < zzz\n"
     "                 ^^^"),
    ("unknown pattern",
     "pattern band(lo: int = 0):\n    mask q - k >= lo\n\npattern p():\n    mask causal and bnad(lo=1)\n", {},
     attnpat.PatternNameError,
     "f.attn:5:21: error: unknown pattern 'bnad' (did you mean 'band'?)\n"
     "        mask causal and bnad(lo=1)\n"
     "                        ^^^^^^^^^^"),
    ("pattern defined twice",
     "pattern band(lo: int = 0):\n    mask q - k >= lo\n\npattern p():\n    mask causal\n\n"
     "pattern band(hi: int = 8):\n    mask q - k <= hi\n", {},
     attnpat.PatternNameError,
     "f.attn:7:9: error: pattern 'band' is defined twice in this file\n"
     "    pattern band(hi: int = 8):\n"
     "            ^^^^\n"
     "    note: the first definition is at f.attn:1:9"),
    ("unknown parameter override from Python", SW, {"windw": 3},
     attnpat.ParameterError,
     "error: pattern 'sliding_window' has no parameter 'windw' (did you mean 'window'?)"),
    ("unknown parameter override, nothing close", SW, {"size": 3},
     attnpat.ParameterError,
     "error: pattern 'sliding_window' has no parameter 'size'; it has window"),
    ("wrong parameter type from Python: str", SW, {"window": "3"},
     attnpat.ParameterError,
     "error: parameter 'window' of pattern 'sliding_window' expects an int, got '3' (str)"),
    ("wrong parameter type from Python: bool for int", SW, {"window": True},
     attnpat.ParameterError,
     "error: parameter 'window' of pattern 'sliding_window' expects an int, got True (bool)"),
    ("wrong parameter type from Python: set",
     "pattern p(sinks: set = {0}):\n    mask k in sinks\n", {"sinks": 3},
     attnpat.ParameterError,
     "error: parameter 'sinks' of pattern 'p' expects a set of integers, got 3 (int)"),
    ("failed require with values", SW, {"window": 0},
     attnpat.RequirementError,
     "f.attn:2:13: error: requirement of 'sliding_window' failed: window >= 1 (window = 0)\n"
     "        require window >= 1\n"
     "                ^^^^^^^^^^^"),
    ("failed require naming several values",
     "pattern p(lo: int = 0, hi: int = 4, ws: list = [1]):\n    require lo < hi and len(ws) > 1\n    mask causal\n",
     {"lo": 5},
     attnpat.RequirementError,
     "f.attn:2:13: error: requirement of 'p' failed: lo < hi and len(ws) > 1 (hi = 4, lo = 5, ws = [1])\n"
     "        require lo < hi and len(ws) > 1\n"
     "                ^^^^^^^^^^^^^^^^^^^^^^^"),
    ("parameter without default not given",
     "pattern p(w: int):\n    mask q - k < w\n", {},
     attnpat.ParameterError,
     "f.attn:1:11: error: parameter 'w' of pattern 'p' has no default; give a value\n"
     "    pattern p(w: int):\n"
     "              ^^^^^^"),
    ("missing mask",
     "pattern p(w: int = 3):\n    require w >= 1\n", {},
     attnpat.PatternNameError,
     "f.attn:1:1: error: pattern 'p' has no 'mask' statement\n"
     "    pattern p(w: int = 3):\n"
     "    ^^^^^^^^^"),
    ("two masks",
     "pattern p():\n    mask causal\n    mask q - k < 4\n", {},
     attnpat.PatternNameError,
     "f.attn:3:5: error: pattern 'p' has more than one 'mask'\n"
     "        mask q - k < 4\n"
     "        ^^^^^^^^^^^^^^"),
    ("int where bool is needed",
     "pattern p():\n    mask causal and q - k\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:21: error: an operand of 'and' must be a condition (bool), not int\n"
     "        mask causal and q - k\n"
     "                        ^^^^^"),
    ("a mask that is an int",
     "pattern p():\n    mask q - k\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:10: error: a mask must be a condition (bool), not int\n"
     "        mask q - k\n"
     "             ^^^^^"),
    ("bool where int is needed",
     "pattern p():\n    mask q - causal < 4\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:14: error: the right operand of '-' must be an integer, not bool\n"
     "        mask q - causal < 4\n"
     "                 ^^^^^^"),
    ("comparing an int with a bool",
     "pattern p(on: bool = True):\n    mask q == on\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:10: error: cannot compare int with bool using '=='\n"
     "        mask q == on\n"
     "             ^^^^^^^"),
    ("non-constant divisor",
     "pattern p():\n    mask q // k == 0\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:15: error: the right operand of '//' must be a constant (parameters and numbers only)\n"
     "        mask q // k == 0\n"
     "                  ^"),
    ("division by zero",
     "pattern p(stride: int = 0):\n    mask (q - k) % stride == 0\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:20: error: division by zero: 'stride' is 0\n"
     "        mask (q - k) % stride == 0\n"
     "                       ^^^^^^"),
    ("q * k",
     "pattern p():\n    mask q * k < 16\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:10: error: '*' needs a constant on one side (q * k is not a linear pattern)\n"
     "        mask q * k < 16\n"
     "             ^^^^^"),
    ("syntax error: unexpected token",
     "pattern p():\n    mask causal and and q < 4\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:21: error: unexpected 'and', expected an expression\n"
     "        mask causal and and q < 4\n"
     "                        ^^^"),
    ("syntax error: two expressions in a row",
     "pattern p():\n    mask q < k k\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:16: error: unexpected 'k'\n"
     "        mask q < k k\n"
     "                   ^"),
    ("syntax error: '=' for '=='",
     "pattern p():\n    mask q = k\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:12: error: unexpected '=' (to compare, write '==')\n"
     "        mask q = k\n"
     "               ^"),
    ("syntax error: the expression stops short",
     "pattern p():\n    mask q <\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:13: error: unexpected end of line, expected an expression\n"
     "        mask q <\n"
     "                ^"),
    ("unexpected character",
     "pattern p():\n    mask q - k < 4 && causal\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:20: error: unexpected character '&' (write 'and')\n"
     "        mask q - k < 4 && causal\n"
     "                       ^"),
    ("unexpected unicode character",
     "pattern p():\n    mask q \u2212 k < 4\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:12: error: unexpected character '\u2212' (a unicode minus: write '-')\n"
     "        mask q \u2212 k < 4\n"
     "               ^"),
    ("missing colon",
     "pattern p(w: int = 3)\n    mask q - k < w\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:1:22: error: unexpected end of line, expected ':'\n"
     "    pattern p(w: int = 3)\n"
     "                         ^"),
    ("bad indentation: dedent to no block",
     "pattern p():\n    require True\n  mask causal\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:3:1: error: indentation does not match any outer block\n"
     "      mask causal\n"
     "    ^^"),
    ("bad indentation: indented further",
     "pattern p():\n    require True\n        mask causal\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:3:1: error: unexpected indentation\n"
     "            mask causal\n"
     "    ^^^^^^^^"),
    ("bad indentation: body not indented",
     "pattern p():\nmask causal\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:1: error: expected an indented block after the pattern header, got 'mask'\n"
     "    mask causal\n"
     "    ^^^^"),
    ("unclosed bracket at end of file",
     "pattern p():\n    mask causal and (q - k < 4\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:21: error: '(' was never closed\n"
     "        mask causal and (q - k < 4\n"
     "                        ^"),
    ("unclosed bracket before the next statement",
     "pattern p(w: int = 3):\n    mask causal and (q - k < w\n    require w > 0\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:3:5: error: unexpected 'require'\n"
     "        require w > 0\n"
     "        ^^^^^^^\n"
     "    note: the '(' at line 2, column 21 is still open here"),
    ("a keyword as a name",
     "pattern p():\n    in = 3\n    mask True\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:5: error: unexpected 'in', expected 'input', 'mask', 'require', 'score', a name or end of line\n"
     "        in = 3\n"
     "        ^^\n"
     "    note: 'in' is a reserved word and cannot be used as a name"),
    ("runtime input indexed by something else than q or k",
     "pattern p():\n    input doc: int[k]\n    mask doc[h] == doc[k]\n", {},
     attnpat.PatternTypeError,
     "f.attn:3:14: error: runtime input 'doc' can only be indexed by q or k\n"
     "        mask doc[h] == doc[k]\n"
     "                 ^"),
    ("int[q] runtime input indexed by k",
     "pattern p():\n    input seg: int[q]\n    mask seg[k] == 0\n", {},
     attnpat.PatternTypeError,
     "f.attn:3:14: error: 'seg' is int[q] (one value per query); it cannot be indexed by k\n"
     "        mask seg[k] == 0\n"
     "                 ^"),
    ("runtime inputs are int",
     "pattern p():\n    input doc: bool[k]\n    mask True\n", {},
     attnpat.PatternSyntaxError,
     "f.attn:2:16: error: runtime inputs are integer tensors: write 'int[k]', not 'bool[k]'\n"
     "        input doc: bool[k]\n"
     "                   ^^^^"),
    ("pattern calling itself",
     "pattern p():\n    mask causal and p()\n", {},
     attnpat.PatternNameError,
     "f.attn:2:21: error: pattern 'p' uses itself (p -> p)\n"
     "        mask causal and p()\n"
     "                        ^^^"),
    ("unknown keyword in a pattern call",
     "pattern band(lo: int = 0):\n    mask q - k >= lo\n\npattern p():\n    mask band(low=2)\n", {},
     attnpat.ParameterError,
     "f.attn:5:19: error: pattern 'band' has no parameter 'low' (did you mean 'lo'?)\n"
     "        mask band(low=2)\n"
     "                      ^"),
    ("indexing a set",
     "pattern p(g: set = {1, 2}):\n    mask q < g[0]\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:14: error: only lists and runtime inputs can be indexed, not set\n"
     "        mask q < g[0]\n"
     "                 ^"),
    ("an empty file", "# nothing here\n", {},
     attnpat.PatternNameError,
     "error: f.attn defines no pattern"),
    # -- "did you mean" for patterns searches the file, the library and the builtin functions
    ("unknown pattern close to a library pattern",
     "pattern p():\n    mask causal and slidng_window(window=4)\n", {},
     attnpat.PatternNameError,
     "f.attn:2:21: error: unknown pattern 'slidng_window' (did you mean 'sliding_window'?)\n"
     "        mask causal and slidng_window(window=4)\n"
     "                        ^^^^^^^^^^^^^^^^^^^^^^^"),
    ("unknown pattern close to a library pattern in another file",
     "pattern p():\n    mask causal and documnt_full()\n", {},
     attnpat.PatternNameError,
     "f.attn:2:21: error: unknown pattern 'documnt_full' (did you mean 'document_full'?)\n"
     "        mask causal and documnt_full()\n"
     "                        ^^^^^^^^^^^^^^"),
    ("unknown pattern close to a builtin function",
     "pattern p():\n    mask mx(q, k) < 4\n", {},
     attnpat.PatternNameError,
     "f.attn:2:10: error: unknown pattern 'mx' (did you mean 'max'?)\n"
     "        mask mx(q, k) < 4\n"
     "             ^^^^^^^^"),
    ("a pattern used without calling it",
     "pattern p():\n    mask causal and sliding_window\n", {},
     attnpat.PatternTypeError,
     "f.attn:2:21: error: 'sliding_window' is a pattern; call it, e.g. sliding_window()\n"
     "        mask causal and sliding_window\n"
     "                        ^^^^^^^^^^^^^^"),
    # -- reserved names
    ("runtime input named like an argument of dense_mask",
     "pattern p():\n    input heads: int[k]\n    mask heads[q] == heads[k]\n", {},
     attnpat.PatternNameError,
     "f.attn:2:5: error: 'heads' is reserved and cannot name a runtime input: inputs are passed as keyword "
     "arguments (kernel(q, k, v, doc=ids)), and 'heads' is already an argument of the calls that take them\n"
     "        input heads: int[k]\n"
     "        ^^^^^^^^^^^^^^^^^^^\n"
     "    note: reserved input names: batch, block_k, block_mask, block_q, device, group, head_dim, heads, k, "
     "kernel, kv_len, kv_start, layers, layout, lengths, num_splits, pattern, q, q_len, q_offset, return_lse, "
     "scale, self, v"),
    ("runtime input named like the kernel's value tensor",
     "pattern p():\n    input doc: int[k]\n    input v: int[q]\n    mask doc[q] == doc[k] and v[q] > 0\n", {},
     attnpat.PatternNameError,
     "f.attn:3:5: error: 'v' is reserved and cannot name a runtime input: inputs are passed as keyword "
     "arguments (kernel(q, k, v, doc=ids)), and 'v' is already an argument of the calls that take them\n"
     "        input v: int[q]\n"
     "        ^^^^^^^^^^^^^^^\n"
     "    note: reserved input names: batch, block_k, block_mask, block_q, device, group, head_dim, heads, k, "
     "kernel, kv_len, kv_start, layers, layout, lengths, num_splits, pattern, q, q_len, q_offset, return_lse, "
     "scale, self, v"),
    ("parameter named like an argument of attnpat.parse",
     "pattern p(w: int = 4, name: int = 3):\n    mask q - k < w\n", {},
     attnpat.PatternNameError,
     "f.attn:1:23: error: 'name' is reserved and cannot name a parameter: parameter values are passed as "
     "keyword arguments (attnpat.load(FILE, window=8)), and 'name' is already an argument of attnpat.load, "
     "attnpat.parse or Pattern.with_params\n"
     "    pattern p(w: int = 4, name: int = 3):\n"
     "                          ^^^^^^^^^^^^^\n"
     "    note: reserved parameter names: name, path_or_name, pattern, self, text"),
    ("a pattern named like a variable",
     "pattern q():\n    mask causal\n", {},
     attnpat.PatternNameError,
     "f.attn:1:9: error: 'q' is a built-in variable and cannot name a pattern: a call q() could never reach it\n"
     "    pattern q():\n"
     "            ^\n"
     "    note: names no pattern may take: q, k, h, b, abs, min, max, len, range, hash"),
    ("a pattern named like a builtin function",
     "pattern hash(seed: int = 0):\n    mask causal\n", {},
     attnpat.PatternNameError,
     "f.attn:1:9: error: 'hash' is a built-in function and cannot name a pattern: a call hash(...) calls the "
     "built-in function\n"
     "    pattern hash(seed: int = 0):\n"
     "            ^^^^\n"
     "    note: names no pattern may take: q, k, h, b, abs, min, max, len, range, hash"),
    ("calling a pattern named like a variable reports its definition",
     "pattern h():\n    mask causal\n\npattern p():\n    mask causal and h()\n", {},
     attnpat.PatternNameError,
     "f.attn:1:9: error: 'h' is a built-in variable and cannot name a pattern: a call h() could never reach it\n"
     "    pattern h():\n"
     "            ^\n"
     "    note: names no pattern may take: q, k, h, b, abs, min, max, len, range, hash"),
]


def _parse(text: str, params: dict):
    module = parse_module(text, "f.attn")
    name = "p" if any(p.name == "p" for p in module.patterns) else None
    return attnpat.parse(text, name, name="f.attn", **params)


@pytest.mark.parametrize("what, text, params, kind, message", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_messages(what, text, params, kind, message):
    with pytest.raises(attnpat.PatternError) as info:
        _parse(text, params)
    assert type(info.value) is kind
    assert str(info.value) == message
    _assert_well_formed(info.value, "f.attn", text)


DOC = "pattern p():\n    input doc: int[k]\n    mask doc[q] == doc[k]\n"


@pytest.mark.parametrize("inputs, message", [
    ({}, "error: pattern 'p' needs runtime input 'doc' (int[k]: one integer per key)"),
    ({"doc": None}, "error: pattern 'p' needs runtime input 'doc' (int[k]: one integer per key)"),
    ({"doc": torch.zeros(4, dtype=torch.long)},
     "error: runtime input 'doc' must have shape [6] or [2, 6] (int[k] with kv_len = 6), got [4]"),
    ({"doc": torch.zeros(3, 6, dtype=torch.long)},
     "error: runtime input 'doc' must have shape [6] or [2, 6] (int[k] with kv_len = 6), got [3, 6]"),
    ({"doc": torch.zeros(1, 1, 6, dtype=torch.long)},
     "error: runtime input 'doc' must have shape [6] or [2, 6] (int[k] with kv_len = 6), got [1, 1, 6]"),
    ({"doc": torch.zeros(6)}, "error: runtime input 'doc' must have an integer (or bool) dtype, got torch.float32"),
    ({"doc": "abcdef"}, "error: runtime input 'doc' must be an integer tensor, got str"),
    ({"doc": torch.zeros(6, dtype=torch.long), "docs": 1},
     "error: pattern 'p' has no runtime input 'docs' (its inputs: doc)"),
])
def test_runtime_input_errors(inputs, message):
    p = attnpat.parse(DOC, name="f.attn")
    with pytest.raises(attnpat.InputError) as info:
        p.dense_mask(4, 6, batch=2, **inputs)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)   # InputError is also a ValueError


def test_int_k_input_read_at_queries_outside_the_keys():
    p = attnpat.parse(DOC, name="f.attn")
    with pytest.raises(attnpat.InputError, match=r"'doc\[q\]' reads query positions 2\.\.7, outside the 6 values"):
        p.dense_mask(6, 6, q_offset=2, doc=torch.zeros(6, dtype=torch.long))


def test_error_hierarchy():
    for cls in (attnpat.PatternSyntaxError, attnpat.PatternNameError, attnpat.PatternTypeError,
                attnpat.ParameterError, attnpat.RequirementError, attnpat.EmptyPatternError, attnpat.InputError,
                attnpat.ArgumentError):
        assert issubclass(cls, attnpat.PatternError)
    e = attnpat.PatternError("plain")
    assert str(e) == "error: plain" and e.span is None and e.message == "plain"


def test_parse_expr_errors_point_into_the_expression():
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_expr("  {1, 2", name="--set s")
    assert str(info.value) == "--set s:1:3: error: '{' was never closed\n      {1, 2\n      ^"
    with pytest.raises(attnpat.PatternSyntaxError) as info:
        parse_expr("3 +", name="--set w")
    assert str(info.value) == "--set w:1:4: error: unexpected end of line, expected an expression\n    3 +\n       ^"


def test_expression_nested_too_deeply():
    for body in ["-" * 3000 + "q < k", "not " * 3000 + "True", "(" * 3000 + "q" + ")" * 3000 + " < k",
                 "q" + " + q" * 3000 + " < k"]:
        try:
            attnpat.parse(f"pattern p():\n    mask {body}\n")
        except attnpat.PatternError as e:
            assert "nested too deeply" in str(e)


def test_oversized_constant_is_a_pattern_error():
    with pytest.raises(attnpat.PatternTypeError) as info:
        _parse("pattern p():\n    mask k < 100000000000000000000\n", {})
    assert str(info.value) == (
        "f.attn:2:14: error: the constant 100000000000000000000 is too large: constants in a mask must lie "
        "between -2**63 and 2**63 - 1\n"
        "        mask k < 100000000000000000000\n"
        "                 ^^^^^^^^^^^^^^^^^^^^^")


# -- well-formedness ----------------------------------------------------------------------------------

def _assert_well_formed(e: attnpat.PatternError, name: str, text: str) -> None:
    s = str(e)
    lines = s.split("\n")
    notes = [ln for ln in lines if ln.startswith("    note: ")]
    assert lines[len(lines) - len(notes):] == notes, s   # notes come last
    if e.span is None:
        assert lines[0].startswith("error: "), s
        return
    span = e.span
    assert lines[0].startswith(f"{name}:{span.line}:{span.column}: error: "), s
    assert span.line >= 1 and span.column >= 1
    source_lines = text.split("\n")
    assert span.line <= len(source_lines), s
    shown = source_lines[span.line - 1]
    shown = shown[:-1] if shown.endswith("\r") else shown
    assert len(lines) >= 3 + len(notes), s
    assert lines[1] == "    " + shown, s
    assert re.fullmatch(r" *\^+", lines[2]), s
    assert lines[2].index("^") == 4 + span.column - 1, s


def _check_text(text: str) -> None:
    """Parse `text`, check every pattern in it with default parameters, evaluate what checks on a small
    grid: anything may fail, but only with a well-formed PatternError."""
    try:
        module = parse_module(text, "fz.attn")
    except attnpat.PatternError as e:
        _assert_well_formed(e, "fz.attn", text)
        return
    for p in module.patterns:
        try:
            pattern = attnpat.Pattern(module, p.name)
            pattern.expression()
            inputs = {n: torch.tensor([0, 0, 1, 1, 2]) if a == "k" else torch.tensor([1, 2, 3])
                      for n, a in pattern.inputs.items()}
            mask = pattern.dense_mask(3, 5, heads=2, **inputs)
            assert mask.shape == (1, 2, 3, 5) and mask.dtype == torch.bool
        except attnpat.PatternError as e:
            _assert_well_formed(e, "fz.attn", text)


FUZZ = settings(max_examples=5 * settings.default.max_examples)


@FUZZ
@given(mutated_texts())
def test_fuzz_mutated_files(text):
    _check_text(text)


@FUZZ
@given(noise_texts())
def test_fuzz_noise(text):
    _check_text(text)


@FUZZ
@given(modules())
def test_fuzz_random_modules(m):
    _check_text(unparse(m))


@settings(max_examples=2 * settings.default.max_examples)
@given(resolving_texts())
def test_fuzz_random_masks_over_declared_names(text):
    try:
        pattern = attnpat.parse(text, "main", name="fz.attn")
        inputs = {n: torch.tensor([0, 0, 1, 1, 2]) if a == "k" else [1, 2, 3] for n, a in pattern.inputs.items()}
        pattern.dense_mask(3, 5, heads=3, batch=2, **inputs)
    except attnpat.PatternError as e:
        _assert_well_formed(e, "fz.attn", text)


@FUZZ
@given(noise_texts())
def test_fuzz_parse_expr(text):
    try:
        parse_expr(text, name="--set")
    except attnpat.PatternError as e:
        _assert_well_formed(e, "--set", text)


def test_check_pattern_without_resolver():
    module = parse_module("pattern p():\n    mask sliding_window()\n", "f.attn")
    with pytest.raises(attnpat.PatternNameError, match="unknown pattern 'sliding_window'"):
        check_pattern(module, "p")
