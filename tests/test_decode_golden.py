"""Golden tests of the generated split-KV decode kernel (compiler/codegen/decode.py): the source for three
patterns that cover its branches -- a one-family band (sliding_window), a two-family band with sinks
(streaming_llm) and a table plan with a runtime input (document) -- pinned byte for byte.

After an intended change to the decode generator, regenerate and review the diff:

    ATTNPAT_UPDATE_GOLDEN=1 python -m pytest tests/test_decode_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import attnpat
from attnpat.runtime.decode import decode_source
from kernel_util import check_golden

GOLDEN = Path(__file__).parent / "golden" / "decode"
UPDATE = os.environ.get("ATTNPAT_UPDATE_GOLDEN") == "1"
NAMES = ("sliding_window", "streaming_llm", "document")


@pytest.mark.parametrize("name", NAMES)
def test_decode_source_matches_golden(name):
    check_golden(GOLDEN / f"{name}.decode.py.txt", decode_source(attnpat.load(name).compiled), UPDATE,
                 "regenerate with ATTNPAT_UPDATE_GOLDEN=1")


def test_no_stale_golden_files():
    present = {p.name for p in GOLDEN.glob("*.py.txt")}
    assert present == {f"{n}.decode.py.txt" for n in NAMES} or UPDATE, f"stale: {sorted(present)}"


def test_band_plans_take_no_tables_and_visit_only_the_window():
    text = decode_source(attnpat.load("sliding_window", window=4096).compiled)
    assert "RowPtrP" not in text and "Variant" not in text
    assert "q_lo - 4095" in text   # the window's first block, computed from the queries' lowest position
