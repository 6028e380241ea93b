"""Every script in examples/ runs to completion (small sizes, CPU) -- they are documentation that must work."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted(p for p in (pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))
# train_sliding_window.py is run (and its loss checked) by tests/test_backward.py
RUN_HERE = [p for p in EXAMPLES if p.stem != "train_sliding_window"]


def test_examples_exist_and_say_what_they_show():
    names = {p.stem for p in EXAMPLES}
    assert {"mistral_layer", "longformer_globals", "packed_documents", "per_head_windows", "custom_pattern",
            "demo"} <= names
    for p in EXAMPLES:
        text = p.read_text()
        assert text.startswith('"""'), f"{p.name} must open with a docstring saying what it shows"


@pytest.mark.parametrize("path", RUN_HERE, ids=lambda p: p.stem)
def test_example_runs(path):
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{path.name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert run.stdout.strip(), f"{path.name} printed nothing"


def test_gpu_benchmark_says_it_needs_a_gpu_and_exits_zero():
    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "attention.py"
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    import torch
    if not torch.cuda.is_available():
        assert "no CUDA device" in run.stdout
