"""compiler/pipeline.py: the stage list, the frozen Compiled value, and Pattern as a handle on it."""

from __future__ import annotations

import dataclasses

import pytest

import attnpat
from attnpat.compiler import pipeline
from attnpat.library import resolve_library


def test_stage_list_is_the_pipeline_in_order():
    names = [name for name, _ in pipeline.STAGES]
    assert names == ["parse", "check", "simplify", "plan", "codegen", "codegen"]
    assert all(callable(fn) and fn.__doc__ for _, fn in pipeline.STAGES)


def test_compiled_is_frozen_and_slotted():
    compiled = attnpat.load("sliding_window", window=8).compiled
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.plan = None
    assert not hasattr(compiled, "__dict__")
    assert compiled.key == compiled.canonical.key and compiled.name == "sliding_window"
    assert "sliding_window" in str(compiled) and "band plan" in str(compiled)


@pytest.mark.parametrize("name", attnpat.library_names())
def test_stages_by_hand_equal_the_pattern_handle(name):
    pattern = attnpat.load(name)
    module = pattern.module
    checked = pipeline.front(module, name, None, resolve_library)
    assert checked == pattern.checked
    compiled = pipeline.back(checked)
    assert compiled == pattern.compiled
    assert pipeline.forward_source(compiled) == attnpat.compile(pattern).source()


def test_text_to_source_through_every_stage():
    module = pipeline.parse("pattern w():\n    mask causal and q - k < 4\n")
    compiled = pipeline.back(pipeline.check(module, "w"))
    assert compiled.canonical.text == "0 <= q - k <= 3" and compiled.plan.mode == "band"
    assert "def attn_fwd" in pipeline.forward_source(compiled)
    assert "def attn_bwd_dkdv" in pipeline.backward_source(compiled)


def test_an_empty_pattern_exists_until_it_is_compiled():
    pattern = attnpat.parse("pattern e():\n    mask q < k and k < q\n")
    assert pattern.dense_mask(4, 4).sum() == 0
    with pytest.raises(attnpat.EmptyPatternError):
        pattern.compiled
