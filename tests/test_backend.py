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


def test_the_choice_waits_for_the_first_import_of_triton_by_anyone():
    # attnpat's import asks torch about CUDA only when triton is first imported, by attnpat or another library
    code = ("import os, sys, attnpat; light = 'torch' not in sys.modules and 'triton' not in sys.modules; "
            "import torch.optim, triton; print(light, os.environ.get('TRITON_INTERPRET'))")
    expected = "1" if not torch.cuda.is_available() else None
    assert _in_child(code) == f"True {expected}"
    # a user's explicit choice is kept and no hook is left behind
    code = "import sys, attnpat; from attnpat.runtime import backend; print(backend._HOOK in sys.meta_path)"
    assert _in_child(code, TRITON_INTERPRET="0") == "False"


def test_the_interpreter_warning_points_at_the_callers_line(monkeypatch):
    import warnings
    from attnpat.runtime import kernel
    if not backend.interpreting():
        return   # compiled kernels give no warning; the suite always interprets (tests/conftest.py)
    monkeypatch.setattr(kernel, "_warned_interpreter", False)
    q = torch.randn(1, 1, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attnpat.attention(q, q, q, "causal")   # through attention(), compile() and Kernel.__call__
    assert [(w.filename, w.category) for w in caught] == [(__file__, RuntimeWarning)]


def test_triton_imported_first_on_a_machine_without_cuda_is_said_clearly():
    if torch.cuda.is_available():
        return   # with a GPU, importing triton first is fine
    code = ("import triton, attnpat\ntry:\n    attnpat.kernel_device()\nexcept RuntimeError as e:\n"
            "    print('refused:', 'imported before attnpat' in str(e), 'TRITON_INTERPRET=1' in str(e))")
    assert _in_child(code) == "refused: True True"
