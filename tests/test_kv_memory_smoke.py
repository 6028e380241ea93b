"""Smoke test: `benchmarks/kv_memory.py --quick` runs, prints the bytes held (with the crossovers) and read per
decoded token, and its measured caches allocate what the capacities say (the script asserts it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kv_memory_benchmark_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kv_memory.py"), "--quick"], cwd=ROOT,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr[-3000:]}"
    held, read = out.split("bytes read per decoded token")
    rows = {line.split("  ")[0]: line.split() for line in held.splitlines()
            if line.startswith(("sliding_window(4096)", "streaming_llm", "5:1", "full (causal)"))}
    reads = {line.split("  ")[0]: line.split() for line in read.splitlines()
             if line.startswith(("sliding_window(4096)", "streaming_llm", "5:1", "full (causal)"))}
    assert reads["sliding_window(4096)"][-3:] == ["96.0MB"] * 3 and reads["full (causal)"][-1] == "24576.0MB", out
    assert rows["sliding_window(4096)"][1:7] == ["1.0x", "1.0x", "1.0x", "8.0x", "32.0x", "256.0x"], out
    assert rows["streaming_llm"][1:7] == ["1.0x", "2.0x", "4.0x", "32.0x", "128.0x", "1024.0x"], out
    assert "> 4,096 tokens" in " ".join(rows["sliding_window(4096)"]) and "never" in rows["full (causal)"]
    assert "measured" in out and "SUMMARY:" in out
