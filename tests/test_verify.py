"""attnpat verify and attnpat inspect: the tools that tell a user a kernel is right and well built."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import attnpat
from attnpat import verify as verify_module
from attnpat.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter")


def test_verify_passes_a_correct_pattern_forward_and_backward(capsys):
    status = main(["verify", "streaming_llm", "--set", "sinks=2", "--set", "window=7", "--examples", "4",
                   "--max-len", "40"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "ok -- 4 cases, forward and backward" in out


def test_verify_draws_runtime_inputs(capsys):
    assert main(["verify", "document", "--examples", "4", "--max-len", "40", "--forward-only"]) == 0


def test_verify_reports_the_smallest_failing_case_as_a_runnable_snippet(monkeypatch, capsys):
    real = verify_module.check_case

    def broken(pattern, case, **kw):   # a kernel that is wrong once queries outnumber 5
        problem = real(pattern, case, **kw)
        return problem or ("forward error 1 > 0" if case["q_len"] > 5 else None)

    monkeypatch.setattr(verify_module, "check_case", broken)
    status = main(["verify", "sliding_window", "--set", "window=4", "--examples", "15", "--forward-only",
                   "--max-len", "30"])
    err = capsys.readouterr().err
    assert status == 1
    assert "FAILED" in err and "smallest failing case" in err
    snippet = err.split("smallest failing case:\n", 1)[1]
    # shrunk to the boundary: six queries
    assert "torch.randn(1, 1, 6," in snippet
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "max |out - ref| =" in run.stdout


def test_inspect_reports_resources_for_a_target(capsys):
    status = main(["inspect", "sliding_window", "--set", "window=256", "--target", "sm_80", "--dtype", "fp16",
                   "--head-dim", "64", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    (fwd,) = [k for k in report["kernels"] if k["kernel"] == "attn_fwd"]
    assert fwd["mma_kind"] == "HMMA" and fwd["mma_count"] > 0
    assert fwd["stack_bytes"] == 0 and fwd["spill_bytes"] == 0
    assert fwd["block_m"] == 128 and fwd["num_warps"] == 8 and fwd["occupancy_blocks"] >= 1
    assert report["warnings"] == []


def test_inspect_warns_loudly_on_spills(capsys):
    # a deliberately oversized configuration: 256-wide head with 128 x 128 tiles on 4 warps spills
    kernel = attnpat.compile("sliding_window", block_m=128, block_n=128, num_warps=4, num_stages=1)
    from attnpat.runtime.aot import compile_many
    from attnpat.runtime.kernel import aot_request
    import torch
    (report,) = compile_many([aot_request(kernel, target="sm_80", dtype=torch.float16, head_dim=256)])
    assert report.spills


def test_eager_baseline_has_zero_not_nan_gradients_on_empty_rows():
    """A NaN baseline would make every `error <= factor * baseline` comparison pass."""
    import torch
    from attnpat.verify import eager_attention
    pattern = attnpat.parse("pattern late():\n    mask causal and q >= 5\n")
    mask = pattern.dense_mask(8, 8, heads=2)
    q, k, v = (torch.randn(1, 2, 8, 16, requires_grad=True) for _ in range(3))
    out = eager_attention(q, k, v, mask)
    out.sum().backward()
    assert (out[:, :, :5] == 0).all()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[:, :, :5] == 0).all()


# -- issue 18: an optional dependency, no litter, --seed, progress and where the time goes -------------------

def test_verify_leaves_no_hypothesis_folder_and_says_where_time_goes(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    status = main(["verify", "causal", "--examples", "2", "--max-len", "12", "--forward-only", "--seed", "3"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert list(tmp_path.iterdir()) == []          # no .hypothesis/ in the user's directory
    lines = out.splitlines()
    assert lines[0] == "causal: ok -- 2 cases, forward, match the float64 reference"
    assert lines[1].startswith("time ") and "forward kernel" in lines[1]


def test_verify_without_hypothesis_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)     # `import hypothesis` now fails
    assert main(["verify", "causal"]) == 1
    err = capsys.readouterr().err
    assert "attnpat verify needs hypothesis" in err and "pip install 'attnpat[verify]'" in err
    with pytest.raises(ModuleNotFoundError, match=r"attnpat\[verify\]"):
        verify_module.verify(attnpat.load("causal"), spec="causal")


def test_progress_is_drawn_on_a_terminal_only():
    import io
    from attnpat.cli.progress import Progress, time_line

    class Tty(io.StringIO):
        def isatty(self):
            return True

    piped = io.StringIO()
    p = Progress(piped)
    with p.step("generating", name="codegen"):
        p.bar(1, 2, "cases")
    assert piped.getvalue() == "" and set(p.seconds) == {"codegen"}
    tty = Tty()
    p = Progress(tty)
    with p.step("generating"):
        pass
    p.bar(1, 4, "cases")
    p.done()
    text = tty.getvalue()
    assert "generating ..." in text and "[######..................] 1/4 cases" in text and text.endswith("\n")
    assert time_line({"a": 3.0, "b": 1.0, "total": 4.0}) == "time 4.0 s: a 3.0 s (75%), b 1.0 s (25%)"
