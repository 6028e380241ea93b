"""runtime/backend.py: the interpreter-or-compiler choice and the device kernels run on."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

import attnpat
from attnpat.runtime import backend


def _in_child(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def test_kernel_device_follows_the_backend():
    expected = "cpu" if backend.interpreting() else "cuda"
    assert attnpat.kernel_device() == torch.device(expected)
    if not torch.cuda.is_available():
        assert backend.interpreting() and backend.target_name() == "interpreter"


def test_import_picks_the_interpreter_without_cuda_and_keeps_an_explicit_choice():
    code = "import os, attnpat; print(attnpat.kernel_device(), os.environ.get('TRITON_INTERPRET'))"
    if not torch.cuda.is_available():
        assert _in_child(code) == "cpu 1"
    assert _in_child(code, TRITON_INTERPRET="1") == "cpu 1"


def test_a_kernel_runs_on_the_kernel_device():
    dev = attnpat.kernel_device()
    q, k, v = (torch.randn(1, 1, 40, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    pattern = attnpat.load("sliding_window", window=8)
    out = attnpat.compile(pattern)(q.to(dev), k.to(dev), v.to(dev))
    assert out.device.type == dev.type
    torch.testing.assert_close(out.cpu().double(), attnpat.reference_attention(q, k, v, pattern),
                               atol=1e-5, rtol=1e-5)
