"""Helpers shared by the kernel tests: the same-dtype eager baseline and the FlexAttention-style tolerance."""

from __future__ import annotations

import os

import pytest
import torch

# The FlexAttention criterion, shared with `attnpat verify`: the kernel's error against fp64 may be FUDGE
# times the eager same-dtype error (eager_attention), or FLOOR[dtype] when that error is tiny.
from attnpat.verify import FLOOR, FUDGE, eager_attention  # noqa: F401  (re-exported for the tests)


def assert_close_to_reference(out, ref64, eager, what=""):
    """The FlexAttention criterion: |out - ref| <= FUDGE * |eager - ref| (max-abs), with a small floor."""
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    err = (out.double() - ref64).abs().max().item() if out.numel() else 0.0
    base = (eager.double() - ref64).abs().max().item() if out.numel() else 0.0
    bound = max(FUDGE * base, FLOOR[out.dtype])
    assert err <= bound, f"{what}: kernel error {err:.3g} > bound {bound:.3g} (eager {out.dtype} error {base:.3g})"


# -- ahead-of-time compile checks shared by tests/test_aot.py and tests/test_aot_backward.py -------------

AOT_TARGETS = ("sm_80", "sm_90a")
AOT_HEAD_DIMS = (64, 128)


def library_kernels():
    """(name, Kernel) for each distinct library kernel: equivalent patterns share one kernel."""
    import attnpat
    seen, kernels = set(), []
    for name in attnpat.library_names():
        kernel = attnpat.compile(name)
        if kernel.key not in seen:
            seen.add(kernel.key)
            kernels.append((name, kernel))
    return kernels


def aot_problems(labelled_reports) -> list[str]:
    """Spills, missing tensor-core MMA or resources over the limits, one line per offending report."""
    problems = []
    for label, r in labelled_reports:
        target = r.target
        text = (f"{label} ({r.block_m}x{r.block_n}, {r.num_warps} warps, {r.num_stages} stages): "
                f"regs={r.registers} stack={r.stack_bytes} local={r.spill_bytes} mma={r.mma_kind}x{r.mma_count}")
        if r.stack_bytes or r.spill_bytes:
            problems.append("spills: " + text)
        wanted = ("HMMA",) if target == "sm_80" else ("HGMMA", "HMMA")
        if r.mma_kind not in wanted or r.mma_count == 0:
            problems.append("no tensor-core MMA: " + text)
        if r.registers > 255 or r.shared_bytes > 163 * 1024:
            problems.append("resources: " + text)
    return problems


@pytest.fixture(autouse=True, scope="module")
def own_cache(tmp_path_factory):
    """Generated modules of a test module's patterns go to a temporary cache, not the user's (autouse where
    imported)."""
    old = os.environ.get("ATTNPAT_CACHE_DIR")
    os.environ["ATTNPAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("attnpat_cache"))
    yield
    if old is None:
        os.environ.pop("ATTNPAT_CACHE_DIR", None)
    else:
        os.environ["ATTNPAT_CACHE_DIR"] = old


def check_golden(path, text: str, update: bool, how: str) -> None:
    """Compare generated source with its golden file (or rewrite it when `update`); `how` says how to
    regenerate."""
    if update:
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path.name}: {how} and review the new file")
    assert text == path.read_text(), (
        f"generated source differs from {path.name}; if the change is intended, {how} and review the diff")
