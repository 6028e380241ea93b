"""How the work is split between `make test` and `make gpu-check`.

The suite runs the kernels under Triton's interpreter on CPU tensors on every machine, GPU machines included
(tests/conftest.py sets TRITON_INTERPRET=1 unless the user set it); `make gpu-check` (benchmarks/gpu_check.py)
runs the checks that need a GPU, and without one says so and exits 0.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import attnpat
from attnpat.cli import main as cli_main
from attnpat.runtime import backend

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_the_suite_runs_kernels_under_the_interpreter(suite_backend):
    user = suite_backend["user_triton_interpret"]
    if user is not None and user.lower() not in ("1", "true", "yes", "on"):
        pytest.skip(f"TRITON_INTERPRET={user} was set by the user: kernels are compiled in this run")
    # conftest itself chose (on a CPU machine attnpat would pick the interpreter anyway; on a GPU it would not)
    assert suite_backend["triton_interpret_from_conftest"] == (user or "1")
    assert not suite_backend["triton_imported_before_conftest"], \
        "triton was imported before tests/conftest.py could choose the interpreter"
    assert backend.interpreting() and backend.target_name() == "interpreter"
    assert attnpat.kernel_device() == torch.device("cpu")
    # subprocesses (the examples, CLI runs) inherit the choice
    code = "import attnpat; print(attnpat.kernel_device())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "cpu"


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_zero():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs the same on a GPU machine (it must not start the
    # real checks there)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "need a GPU" in lines[0], run.stdout


def _load_script():
    spec = importlib.util.spec_from_file_location("_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_covers_every_library_pattern_example_and_the_benchmark(capsys):
    gpu_check = _load_script()
    todo = gpu_check.steps()
    verified = {s[2] for s in todo if s[:2] == ["attnpat", "verify"]}
    assert verified == set(attnpat.library_names())
    scripts = {s[0] for s in todo if s[0] != "attnpat"}
    assert scripts == {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")} | {"benchmarks/attention.py"}
    assert todo[-1] == ["benchmarks/attention.py"]
    for step in todo:
        if step[:2] != ["attnpat", "verify"]:
            continue
        assert step[3:5] == ["--device", "cuda"]
        # the small parameter values are accepted by the pattern (its `require` clauses hold)
        sets = step[7:]
        assert cli_main(["check", step[2], *sets]) == 0, (step, capsys.readouterr())
