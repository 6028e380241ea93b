"""Every script in examples/ runs to completion (small sizes) -- they are documentation that must work.

The scripts put their tensors on `attnpat.kernel_device()`; here they inherit TRITON_INTERPRET=1 from
tests/conftest.py, so they run under Triton's interpreter on the CPU even on a GPU machine (`make gpu-check`
runs them on the GPU).
"""

from __future__ import annotations

import os
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
        # on a GPU machine attnpat compiles kernels for CUDA and refuses CPU tensors: every example puts its
        # tensors where the kernels run, and says so
        assert "attnpat.kernel_device()" in text, f"{p.name} must run its kernels on attnpat.kernel_device()"
        assert "GPU" in text.split('"""')[1], f"{p.name}'s docstring must say it runs on the GPU when there is one"


@pytest.mark.parametrize("path", RUN_HERE, ids=lambda p: p.stem)
def test_example_runs(path):
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{path.name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert run.stdout.strip(), f"{path.name} printed nothing"


def test_gpu_benchmark_says_it_needs_a_gpu_and_exits_zero():
    # With CUDA_VISIBLE_DEVICES="" the script sees no GPU on any machine; on a GPU machine it is run for real
    # by `make gpu-check`, not here.
    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "attention.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no CUDA device" in run.stdout
