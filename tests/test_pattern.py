"""attnpat/pattern.py: the Pattern object's own behaviour (loading and errors are in test_library.py)."""

from __future__ import annotations

import numpy as np

import attnpat
from attnpat.compiler import simplify


def test_per_head_variants_are_simplified_once_per_shape(monkeypatch):
    pattern = attnpat.load("per_head", windows=[4, 8, 4])
    first = pattern.block_mask(64, 64, block_q=16, block_k=16, heads=6)
    calls = []
    real = simplify.normalize
    monkeypatch.setattr(simplify, "normalize", lambda ir: calls.append(ir) or real(ir))
    again = pattern.block_mask(64, 64, block_q=16, block_k=16, heads=6)
    assert calls == []   # the memoised variants were reused
    for name in ("variant", "partial_ptr", "partial_idx", "full_ptr", "full_idx"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    # windows repeat with period 3: heads 0 and 3 share a stored variant, and a new head count still works
    assert first.variant[0, 0] == first.variant[0, 3] and first.num_variants == 2
    more = pattern.block_mask(64, 64, block_q=16, block_k=16, heads=2)
    assert calls and more.variant.shape == (1, 2)


def test_memoised_variants_are_not_shared_mutable_state():
    pattern = attnpat.load("per_head", windows=[4, 8])
    variants, assignment = pattern._variants(4, 1)
    variants.clear()
    assignment[:] = 99
    again, assignment2 = pattern._variants(4, 1)
    assert len(again) == 2 and assignment2.max() < 2
