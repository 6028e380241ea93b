"""Test configuration: the kernel backend, hypothesis profiles and the import path for tests/strategies.py.

Profiles (choose with HYPOTHESIS_PROFILE=...):
    ci        (default) modest example counts, no deadline -- the whole suite stays fast on 2 cores
    dev       5x more examples
    thorough  for bug hunting: 10x more examples (the fuzz tests then try 2000 texts each)
Tests that need a different count scale `settings.default.max_examples` rather than hard-coding one,
so every profile scales them.

Backend: the suite runs attnpat's kernels under Triton's interpreter on CPU tensors, on every machine.
Unless TRITON_INTERPRET is already set in the environment, this file sets TRITON_INTERPRET=1 before
anything imports triton or attnpat (attnpat fixes its interpreter-or-compiler choice when triton is first
imported; see runtime/backend.py), so on a GPU machine `make test` still tests the kernels under the
interpreter, with the same results as on a CPU machine; the GPU checks are `make gpu-check`
(benchmarks/gpu_check.py). Subprocesses the tests start (the examples, the CLI) inherit the setting; the
ahead-of-time compiles of runtime/aot.py set TRITON_INTERPRET=0 in their own child processes on purpose.
A user who sets TRITON_INTERPRET themselves (e.g. TRITON_INTERPRET=0 on a GPU machine) keeps that choice;
tests/test_gpu_check.py checks that the default holds.
"""

from __future__ import annotations

import os
import sys

# Before the test modules (and through them attnpat) can import triton. Pytest's plugins, hypothesis's
# included, are loaded before this file and do not import it; the fixture below records if one ever does.
USER_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET")   # None: the user made no choice
TRITON_IMPORTED_BEFORE_CONFTEST = "triton" in sys.modules
if USER_TRITON_INTERPRET is None:
    os.environ["TRITON_INTERPRET"] = "1"
TRITON_INTERPRET_FROM_CONFTEST = os.environ.get("TRITON_INTERPRET")   # what the test modules start with

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# `from strategies import ...` works whatever the rootdir / import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("ci", max_examples=40, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    how = ("set by tests/conftest.py" if USER_TRITON_INTERPRET is None
           else "set by the user, kept as it is")
    return f"attnpat kernels: TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} ({how})"


@pytest.fixture(scope="session")
def suite_backend() -> dict:
    """How this file chose the suite's backend: the user's TRITON_INTERPRET (None if unset), the value the
    test modules start with, and whether triton was imported before this file could choose."""
    return {"user_triton_interpret": USER_TRITON_INTERPRET,
            "triton_interpret_from_conftest": TRITON_INTERPRET_FROM_CONFTEST,
            "triton_imported_before_conftest": TRITON_IMPORTED_BEFORE_CONFTEST}
