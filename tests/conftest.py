"""Test configuration: hypothesis profiles and the import path for tests/strategies.py.

Profiles (choose with HYPOTHESIS_PROFILE=...):
    ci        (default) modest example counts, no deadline -- the whole suite stays fast on 2 cores
    dev       5x more examples
    thorough  for bug hunting: 10x more examples (the fuzz tests then try 2000 texts each)
Tests that need a different count scale `settings.default.max_examples` rather than hard-coding one,
so every profile scales them.
"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

# `from strategies import ...` works whatever the rootdir / import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("ci", max_examples=40, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
