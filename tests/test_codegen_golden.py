"""Golden tests: the generated forward and backward (dK/dV + dQ) source of every library pattern, and of a
few user patterns that reach the code generator's other branches, pinned byte for byte.

A change to the code generator shows up here as a diff of the emitted kernels, to be reviewed like code.
After an intended change, regenerate the files with one command and commit the diff:

    make golden          # = ATTNPAT_UPDATE_GOLDEN=1 python -m pytest tests/test_codegen_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import attnpat
from attnpat.runtime.autograd import bwd_source
from kernel_util import check_golden

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ATTNPAT_UPDATE_GOLDEN") == "1"

# Branches the library does not reach: a set of runs, a stepped range, a q-axis input with a k-axis one,
# a two-family band with sinks on a constant, and a list indexed by the head.
USER_PATTERNS = {
    "user_sets": """
pattern user_sets():
    mask causal and (k % 8 in {0, 1, 2, 5} or q - k in range(0, 64, 4))
""",
    "user_inputs": """
pattern user_inputs():
    input seg: int[k]
    input qlen: int[q]
    mask seg[q] == seg[k] and k <= q + qlen[q]
""",
    "user_two_bands": """
pattern user_two_bands():
    mask (k >= 16 and k < 32) or (q - k >= 0 and q - k < 8)
""",
}


def _cases():
    for name in attnpat.library_names():
        yield name, lambda name=name: attnpat.load(name)
    for name, text in USER_PATTERNS.items():
        yield name, lambda text=text: attnpat.parse(text)


CASES = dict(_cases())


def _sources(make) -> dict[str, str]:
    kernel = attnpat.compile(make())
    return {"fwd": kernel.source(), "bwd": bwd_source(kernel)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_source_matches_golden(name):
    for part, text in _sources(CASES[name]).items():
        check_golden(GOLDEN / f"{name}.{part}.py.txt", text, UPDATE, "run `make golden`")


def test_no_stale_golden_files():
    expected = {f"{name}.{part}.py.txt" for name in CASES for part in ("fwd", "bwd")}
    present = {p.name for p in GOLDEN.glob("*.py.txt")}
    assert present == expected or UPDATE, f"stale golden files: {sorted(present - expected)}"


# -- the signature module is the one definition of each kernel's parameters ------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_definitions_follow_the_signature_module(name):
    import ast

    from attnpat.compiler.codegen import signature

    kernel = attnpat.compile(CASES[name]())
    defs = {}
    for text in (kernel.source(), bwd_source(kernel)):
        defs.update({f.name: [a.arg for a in f.args.args] for f in ast.parse(text).body
                     if isinstance(f, ast.FunctionDef)})
    for kernel_name, make in signature.KERNELS.items():
        sig = make(kernel.plan)
        assert defs[kernel_name] == [p.name for p in sig.params], kernel_name
        tables = {"Variant", "RowPtrP", "ColIdxP", "RowPtrF", "ColIdxF"} & set(defs[kernel_name])
        assert bool(tables) == (kernel.plan.mode == "table"), kernel_name


def test_template_placeholders_and_values_must_match():
    from attnpat.compiler.codegen.template import fill

    assert fill("a = ${x}\n    ${body}\nb", x=1, body="c\n\nd") == "a = 1\n    c\n\n    d\nb"
    assert fill("a\n    ${body}\nb", body="") == "a\nb"   # an empty block removes its line
    with pytest.raises(KeyError, match="no value"):
        fill("${x} ${y}", x=1)
    with pytest.raises(KeyError, match="no placeholder"):
        fill("${x}", x=1, y=2)


def test_only_the_helpers_the_predicate_calls_are_emitted():
    sources = {name: attnpat.compile(make()).source() for name, make in CASES.items()}
    assert "_floordiv" not in sources["causal"] and "_hash_step" not in sources["causal"]
    assert "def _hash_step" in sources["bigbird"] and "def _floordiv" in sources["bigbird"]
    assert "def _pymod" in sources["dilated"] and "def _hash_step" not in sources["dilated"]
    for text in sources.values():
        for helper in ("_floordiv", "_pymod", "_hash_step"):
            assert (f"def {helper}(" in text) == (text.count(f"{helper}(") > 1), helper
