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


# -- benchmarks/attention.py: the GPU benchmark's dry run and its fairness checks -----------------------

ATTENTION = ROOT / "benchmarks" / "attention.py"


def _attention_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("attention_benchmark", ATTENTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_benchmark_dry_run_on_cpu():
    """Every column, the mask_mod equivalence check and the agreement checks run end to end (GQA, bf16,
    a pattern with runtime inputs, a per-head one, and one with a hash)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ATTENTION), "--device", "cpu", "--patterns",
                           "sliding_window,document,bigbird", "--lengths", "200", "--heads", "2",
                           "--kv-heads", "1", "--dtype", "bf16"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr[-4000:]}"
    assert "CPU dry run -- times are NOT meaningful" in out
    rows = [line.split() for line in out.splitlines()]
    for name in ("sliding_window", "document", "bigbird"):
        for label in ("fwd", "fwd+bwd"):
            row = next((r for r in rows if r[:3] == [name, "200", label]), None)
            assert row is not None, f"no {name} {label} row:\n{out}"
            line = " ".join(row)
            assert "ok (fp64" in line and "MISMATCH" not in line, line
            # the forward is also compared with FlexAttention (its CPU path has no backward), and the
            # forward + backward with SDPA
            assert ("flex" if label == "fwd" else "sdpa") in line, line
    assert "SUMMARY: every result agreed" in out


def test_attention_benchmark_mask_mod_check_catches_an_off_by_one():
    bench = _attention_module()
    import attnpat
    pattern = attnpat.load("sliding_window", window=64)
    right, _ = bench.flex_mask_mod("sliding_window", {"window": 64}, bench.CHECK_LEN, "cpu")
    assert bench.check_mask_mod(pattern, right, 1, "cpu") is None
    problem = bench.check_mask_mod(pattern, lambda b, h, q, k: (k <= q) & (q - k <= 64), 1, "cpu")
    assert problem is not None and "differ" in problem


def test_attention_benchmark_reports_a_wrong_mask_mod_and_exits_1(monkeypatch, capsys):
    bench = _attention_module()
    monkeypatch.setattr(bench, "flex_mask_mod", lambda name, params, n, device: (
        (lambda b, h, q, k: k < q), False))
    code = bench.main(["--device", "cpu", "--patterns", "causal", "--lengths", "64", "--heads", "1",
                       "--no-backward"])
    out = capsys.readouterr().out
    assert code == 1
    assert "causal" in out and "MISMATCH: the FlexAttention mask_mod is not the same pattern" in out


def test_attention_benchmark_reports_disagreeing_results_and_exits_1(monkeypatch, capsys):
    bench = _attention_module()
    import attnpat
    real_compile = attnpat.compile

    def skewed(pattern, **options):   # a kernel whose output is 5% off
        kernel = real_compile(pattern, **options)
        return lambda q, k, v, **inputs: kernel(q, k, v, **inputs) * 1.05
    monkeypatch.setattr(attnpat, "compile", skewed)
    code = bench.main(["--device", "cpu", "--patterns", "causal", "--lengths", "64", "--heads", "1",
                       "--no-backward"])
    out = capsys.readouterr().out
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("causal "))
    assert "MISMATCH fp64" in row and "flex" in row, out
    assert "SUMMARY: 1 mismatch(es)" in out


def test_attention_benchmark_relative_disagreement():
    bench = _attention_module()
    import torch
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5])
    assert bench.disagreement((b,), (b,)) == 0.0
    assert abs(bench.disagreement((a,), (b,)) - 0.5 / 2.5) < 1e-12


# -- benchmarks/context_parallel.py: two gloo processes, small ------------------------------------------

CONTEXT_PARALLEL = ROOT / "benchmarks" / "context_parallel.py"


def test_context_parallel_benchmark_small():
    """Two ranks, 128 tokens, streaming_llm: the forward and backward bytes each rank received equal the
    plan's exact rows (the sinks and the window's halo, not the rows between), and the output and gradients
    agree with the all-gather baseline's (the script exits 1 otherwise)."""
    import attnpat
    from attnpat.distributed.plan import make_plan
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(CONTEXT_PARALLEL), "--ranks", "2", "--length", "128", "--heads", "1",
                           "--patterns", "streaming_llm"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr[-4000:]}"
    rows = [line.split() for line in out.splitlines() if line.startswith("streaming_llm ")]
    assert [r[1:3] for r in rows] == [["2", "0"], ["2", "1"]], out
    plan = make_plan(attnpat.load("streaming_llm", sinks=4, window=28).compiled, [64, 64])
    assert plan.fetch[1][0] == ((0, 4), (37, 64))
    row = 2 * 16 * 4    # K and V (dK and dV), one head of 16 fp32 values
    got = {int(r[2]): (int(r[3].replace(",", "")), int(r[4].replace(",", ""))) for r in rows}
    assert got == {0: (0, 31 * row), 1: (31 * row, 0)}, out
    assert all(int(r[5].replace(",", "")) == 64 * row for r in rows), out
