"""Smoke test: `benchmarks/block_mask.py --quick` runs, prints its table, and attnpat's tiles match Flex's.

--quick uses 2K and 4K tokens, two patterns and FlexAttention in eager mode (torch.compile's first
compilation alone takes 30+ s on 2 cores), so this stays well under a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "block_mask.py"

pytest.importorskip("torch.nn.attention.flex_attention")


def test_block_mask_benchmark_quick():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr[-4000:]}"
    assert "MISMATCH" not in out, out
    assert "FAILED" not in out, out
    # the header and the table, with one row per (pattern, size)
    assert f"torch {__import__('torch').__version__}" in out
    assert "block size: 128x128" in out
    header = next((line for line in out.splitlines() if line.startswith("pattern ") and "flex ms" in line), None)
    assert header is not None, out
    for pattern in ("sliding_window", "document"):
        for size in ("2K", "4K"):
            assert any(line.split()[:3] == [pattern, "1", size] and line.rstrip().endswith("exact")
                       for line in out.splitlines()), f"no exact row for {pattern} at {size}:\n{out}"
    assert "SUMMARY:" in out and "no tile mismatches" in out
