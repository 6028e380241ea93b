"""attnpat/packing.py: document ids and starts from lengths or cu_seqlens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import attnpat
from attnpat import ArgumentError, packing


@given(st.lists(st.integers(0, 9), max_size=8), st.integers(0, 5))
def test_ids_and_starts_follow_the_lengths(lengths, padding):
    total = sum(lengths) + padding
    ids = packing.document_ids(lengths, total=total)
    starts = packing.document_starts(lengths, total=total)
    want_ids, want_starts, pos = [], [], 0
    for i, n in enumerate(lengths):
        want_ids += [i] * n
        want_starts += [pos] * n
        pos += n
    want_ids += [len(lengths)] * padding          # padding is a document of its own
    want_starts += [pos] * padding
    assert ids.tolist() == want_ids and starts.tolist() == want_starts
    cu = packing.cu_seqlens_from_lengths(lengths)
    assert packing.ids_from_cu_seqlens(cu, total=total).tolist() == want_ids
    assert packing.document_ids(lengths).tolist() == want_ids[:sum(lengths)]


def test_packed_ids_run_a_document_pattern_on_the_device_path():
    ids = packing.document_ids([13, 30, 5], total=50)
    p = attnpat.load("document")
    m = attnpat.block_mask(p, 50, 50, doc=ids)
    q, k, v = (torch.randn(1, 2, 50, 16) for _ in range(3))
    out = attnpat.attention(q, k, v, p, block_mask=m)
    ref = attnpat.reference_attention(q.double(), k.double(), v.double(), p, doc=ids)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    assert list(m.builds.values())[0] == "device"


@pytest.mark.parametrize("call, message", [
    (lambda: packing.document_ids([3, -1]), "'lengths' must be non-negative"),
    (lambda: packing.document_ids([[1, 2]]), "'lengths' must be a 1-D sequence of integers"),
    (lambda: packing.document_ids([1.5]), "'lengths' must be a 1-D sequence of integers"),
    (lambda: packing.ids_from_cu_seqlens(torch.tensor([1, 4])), "must start at 0 and never decrease"),
    (lambda: packing.ids_from_cu_seqlens(torch.tensor([0, 4, 2])), "must start at 0 and never decrease"),
    (lambda: packing.ids_from_cu_seqlens(torch.tensor([])), "non-empty 1-D integer tensor"),
    (lambda: packing.document_ids([3, 4], total=5), r"'total' must be an int >= the documents' length 7"),
])
def test_bad_lengths_are_argument_errors(call, message):
    with pytest.raises(ArgumentError, match=message):
        call()
