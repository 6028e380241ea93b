"""Backward kernels and autograd (issue 5): dq, dk, dv of the generated kernels against float64 autograd
through attnpat.reference_attention.

Tolerance, as in FlexAttention's tests: the kernel's error against the float64 result may be at most a small
factor times the error of eager torch attention computed in the same low dtype (plus a tiny absolute floor
scaled by the size of the result), for the output and for each gradient.

Kernels run under Triton's interpreter on the CPU here, so the sizes are small and the examples few.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import subprocess
import sys
import warnings
import weakref
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import attnpat
from attnpat.errors import EmptyPatternError
from attnpat.runtime import autograd
from attnpat.runtime.aot import AotReport
from attnpat.runtime.autograd import BwdConfig, TileConfig, default_bwd_config, override_bwd_config
from attnpat.reference import dense_score_terms
from attnpat.verify import eager_attention
from strategies import cases
from kernel_util import own_cache  # noqa: F401  (autouse: a temporary kernel cache)

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTOR = 5.0
# absolute floor, relative to the largest magnitude of the float64 result
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# -- helpers --------------------------------------------------------------------------------------


_eager = eager_attention   # the low-precision baseline shared with `attnpat verify`; empty rows give 0


def _leaves(B, Hq, Hkv, N, M, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, N, D, generator=g)
    k = torch.randn(B, Hkv, M, D, generator=g)
    v = torch.randn(B, Hkv, M, D, generator=g)
    do = torch.randn(B, Hq, N, D, generator=g)
    return q, k, v, do


def _run(fn, q, k, v, do, dtype):
    leaves = [x.detach().to(dtype).clone().requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    out.backward(do.to(dtype))
    return [out.detach()] + [x.grad for x in leaves]


def check_grads(pattern, B, Hq, Hkv, N, M, D, dtype, *, q_offset=None, seed=0, scale=None, factor=FACTOR,
                kernel=None, **inputs):
    """Run kernel (`kernel`, or attnpat.attention's for `pattern`), fp64 reference and low-precision eager;
    assert the tolerance rule; return the kernel's (out, dq, dk, dv)."""
    q, k, v, do = _leaves(B, Hq, Hkv, N, M, D, dtype, seed)
    s = 1.0 / math.sqrt(D) if scale is None else scale
    if kernel is None:
        got = _run(lambda a, b, c: attnpat.attention(a, b, c, pattern, scale=scale, q_offset=q_offset, **inputs),
                   q, k, v, do, dtype)
    else:
        got = _run(lambda a, b, c: kernel(a, b, c, scale=scale, q_offset=q_offset, **inputs), q, k, v, do, dtype)
    # the reference sees the same (rounded) values as the kernel
    gold = _run(lambda a, b, c: attnpat.reference_attention(a, b, c, pattern, scale=scale, q_offset=q_offset,
                                                            **inputs),
                q.to(dtype), k.to(dtype), v.to(dtype), do.to(dtype), torch.float64)
    mask = pattern.dense_mask(N, M, batch=B, heads=Hq, q_offset=q_offset, **inputs)
    terms = dense_score_terms(pattern, N, M, B, Hq, q_offset, inputs)   # softcap, bias, sink (or None)
    low = _run(lambda a, b, c: _eager(a, b, c, mask, s, terms), q, k, v, do, dtype)
    for name, g, ref, base in zip(("out", "dq", "dk", "dv"), got, gold, low):
        assert g.dtype == dtype and g.shape == ref.shape, name
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        err = (g.double() - ref).abs().max().item() if g.numel() else 0.0
        base_err = (base.double() - ref).abs().max().item() if g.numel() else 0.0
        floor = FLOOR[dtype] * (1.0 + (ref.abs().max().item() if ref.numel() else 0.0))
        assert err <= factor * base_err + floor, (
            f"{name} ({dtype}): kernel error {err:.3g} > {factor} x eager error {base_err:.3g} + {floor:.3g}")
    return got


# -- random patterns from the shared strategies ---------------------------------------------------


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


# small tiles, so that sequences of up to 48 positions span several query and key blocks
SMALL_BWD = [BwdConfig(TileConfig(16, 16, 4, 1), TileConfig(16, 16, 4, 1)),
             BwdConfig(TileConfig(32, 16, 4, 1), TileConfig(16, 32, 4, 1)),
             BwdConfig(TileConfig(16, 32, 4, 1), TileConfig(32, 16, 4, 1))]


@settings(max_examples=max(10, settings.default.max_examples // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=cases(max_len=48), data=st.data())
def test_random_patterns_match_fp64_autograd(case, data):
    s = case.shape
    try:
        case.pattern.canonical
    except EmptyPatternError:
        assume(False)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    D = data.draw(st.sampled_from([16, 24, 32, 40]), label="head_dim")
    Hkv = data.draw(st.sampled_from(_divisors(s.heads)), label="kv_heads")
    config = data.draw(st.sampled_from(SMALL_BWD), label="bwd_config")
    try:    # the forward kernel is tests/test_kernel.py's business: only patterns it runs are differentiated
        with torch.no_grad():
            attnpat.attention(*_leaves(s.batch, s.heads, Hkv, s.q_len, s.kv_len, 16, torch.float32)[:3], case.pattern,
                              q_offset=s.q_offset, **case.inputs)
    except Exception:
        assume(False)
    with override_bwd_config(config):
        check_grads(case.pattern, s.batch, s.heads, Hkv, s.q_len, s.kv_len, D, dtype, q_offset=s.q_offset,
                    seed=data.draw(st.integers(0, 2**16), label="seed"), **case.inputs)


# -- band plans: the closed-form inversion of key intervals --------------------------------------


@st.composite
def _band_texts(draw):
    """Masks whose plan is 'band': one or two families of bounds on q - k and on k."""
    def family():
        atoms = []
        lo = draw(st.one_of(st.none(), st.integers(-40, 40)))
        hi = draw(st.one_of(st.none(), st.integers(-40, 60)))
        if lo is not None:
            atoms.append(f"q - k >= {lo}")
        if hi is not None:
            atoms.append(f"q - k <= {hi}")
        if draw(st.booleans()):
            atoms.append(f"k >= {draw(st.integers(0, 60))}")
        if draw(st.booleans()) or not atoms:
            atoms.append(f"k < {draw(st.integers(1, 120))}")
        return "(" + " and ".join(atoms) + ")"
    fams = [family() for _ in range(draw(st.integers(1, 2)))]
    return "pattern p():\n    mask " + " or ".join(fams) + "\n"


@settings(max_examples=max(8, settings.default.max_examples // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=_band_texts(), n=st.integers(1, 150), m=st.integers(1, 150), data=st.data())
def test_band_plans_match_fp64_autograd(text, n, m, data):
    p = attnpat.parse(text)
    try:
        kernel = attnpat.compile(p)
    except EmptyPatternError:
        assume(False)
    q_offset = data.draw(st.one_of(st.none(), st.integers(0, 20)), label="q_offset")
    config = data.draw(st.sampled_from([None] + SMALL_BWD), label="bwd_config")
    with override_bwd_config(config) if config else contextlib.nullcontext():
        check_grads(p, 1, 2, 1, n, m, 16, torch.float32, q_offset=q_offset, seed=n * 1000 + m)
    assert kernel.plan.mode in ("band", "table")


def test_band_generator_inverts_two_families():
    # sinks + window (streaming) and prefix-LM: two families; a long band with q_len != kv_len
    for name, params, n, m in (("streaming_llm", dict(sinks=3, window=17), 150, 131),
                               ("prefix_lm", dict(prefix=37), 97, 150),
                               ("local", dict(radius=20), 140, 150),
                               ("dilated", dict(window=9, dilation=3), 150, 150)):
        p = attnpat.load(name, **params)
        assert attnpat.compile(p).plan.mode == "band"
        check_grads(p, 1, 2, 2, n, m, 32, torch.float32)


def test_band_tile_walk_at_every_block_alignment():
    """The inverted ranges are exact at block boundaries: sweep window sizes and offsets over 16-row tiles, so
    that the first / last query block of every key block is hit at each alignment (an off-by-one in the
    inversion drops or doubles a tile for one alignment in 16)."""
    cases_ = []
    for w in range(1, 18):
        cases_.append(("sliding_window", dict(window=w), 48, 48, None))
        cases_.append(("local", dict(radius=w), 45, 48, None))
    for s_ in (1, 5, 16, 17):
        cases_.append(("streaming_llm", dict(sinks=s_, window=7 + s_), 48, 40, None))
        cases_.append(("prefix_lm", dict(prefix=s_ + 15), 33, 48, 3))
    with override_bwd_config(SMALL_BWD[0]):
        for i, (name, params, n, m, q_offset) in enumerate(cases_):
            q, k, v, do = _leaves(1, 1, 1, n, m, 16, torch.float32, seed=i)
            p = attnpat.load(name, **params)
            got = _run(lambda a, b, c: attnpat.attention(a, b, c, p, q_offset=q_offset), q, k, v, do, torch.float32)
            gold = _run(lambda a, b, c: attnpat.reference_attention(a, b, c, p, q_offset=q_offset), q, k, v, do,
                        torch.float64)
            for name_, g, r in zip(("out", "dq", "dk", "dv"), got, gold):
                err = (g.double() - r).abs().max().item()
                assert err < 1e-4 * (1 + r.abs().max().item()), f"{name}{params} {name_}: error {err}"


# -- every library pattern ------------------------------------------------------------------------

_SMALL = {
    "bigbird": dict(block=8, window_blocks=3, global_blocks=1, random_blocks=2, key_blocks=12, seed=3),
    "chunked_causal": dict(chunk=24),
    "dilated": dict(window=12, dilation=3),
    "dilated_local": dict(radius=8, dilation=2),
    "document_sliding_window": dict(window=20),
    "local": dict(radius=13),
    "longformer": dict(window=16, globals={0, 41}),
    "longformer_flags": dict(window=16),
    "per_head": dict(windows=[5, 17, 40, 90]),
    "prefix_lm": dict(prefix=30),
    "sliding_window": dict(window=19),
    "streaming_llm": dict(sinks=4, window=21),
}


def _library_inputs(pattern, n, m, heads=4):
    terms = pattern.compiled.checked.scores   # float[h] inputs of score terms: sinks, slopes
    out = {d.name: torch.linspace(-1.0, 1.5, heads) for d in (terms.inputs if terms is not None else ())}
    for name, axis in sorted(pattern.inputs.items()):
        if axis == "b":   # one value per sequence: a length cutting a block
            out[name] = torch.tensor(57)
        elif axis == "k":
            if "global" in name:
                out[name] = torch.tensor([1 if i in (0, 33, 70) else 0 for i in range(m)])
            else:   # document ids: three documents, one of them split across a block boundary
                out[name] = torch.tensor([0 if i < 23 else 1 if i < 61 else 2 for i in range(m)])
        else:
            out[name] = torch.tensor([min(29, i) for i in range(n)])
    return out


@pytest.mark.parametrize("name", attnpat.library_names())
def test_library_pattern_gradients(name):
    p = attnpat.load(name, **_SMALL.get(name, {}))
    n = m = 90
    check_grads(p, 2, 4, 2, n, m, 32, torch.float32, **_library_inputs(p, n, m))


@pytest.mark.parametrize("name,dtype", [("sliding_window", torch.float16), ("document", torch.bfloat16),
                                        ("bigbird", torch.float16), ("causal", torch.bfloat16)])
def test_library_low_precision(name, dtype):
    p = attnpat.load(name, **_SMALL.get(name, {}))
    n, m = 70, 100
    check_grads(p, 1, 4, 1, n, m, 64, dtype, **_library_inputs(p, n, m))


def test_head_dims_padded_and_large():
    p = attnpat.load("sliding_window", window=11)
    for D in (16, 40, 96, 256):
        check_grads(p, 1, 2, 1, 33, 47, D, torch.float32, seed=D)


# -- backward launch options of attnpat.compile ----------------------------------------------------


@contextlib.contextmanager
def _recorded_bwd_launches():
    """Yield a list that receives (kernel name, BLOCK_M, BLOCK_N, num_warps, num_stages) per backward launch."""
    launches = []
    real_module = autograd.bwd_module

    class _Module:
        def __init__(self, module):
            self._module = module

        def __getattr__(self, name):
            fn = getattr(self._module, name)

            class _Launcher:
                def __getitem__(self, grid):
                    def launch(*args, **kw):
                        launches.append((name, kw["BLOCK_M"], kw["BLOCK_N"], kw["num_warps"], kw["num_stages"]))
                        return fn[grid](*args, **kw)
                    return launch
            return _Launcher()

    with mock.patch.object(autograd, "bwd_module", lambda kernel, device: _Module(real_module(kernel, device))):
        yield launches


def _expected_launches(config: BwdConfig):
    return [(name, t.block_m, t.block_n, t.num_warps, t.num_stages)
            for name, t in (("attn_bwd_dkdv", config.dkdv), ("attn_bwd_dq", config.dq))]


@st.composite
def _bwd_options(draw):
    """Backward options as a user passes them: for both kernels, per kernel, or both with one kernel refined."""
    options = {}
    for prefix in draw(st.sampled_from([("bwd",), ("dkdv", "dq"), ("bwd", "dq"), ("bwd", "dkdv"), ("dq",)])):
        for field, values in (("block_m", [16, 32]), ("block_n", [16, 32]), ("num_warps", [1, 2, 4, 8]),
                              ("num_stages", [1, 2, 3])):
            if draw(st.booleans()):
                options[f"{prefix}_{field}"] = draw(st.sampled_from(values))
    return options


@settings(max_examples=max(8, settings.default.max_examples // 4), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=cases(max_len=48), options=_bwd_options(), data=st.data())
def test_backward_options_match_fp64_autograd(case, options, data):
    s = case.shape
    try:
        kernel = attnpat.compile(case.pattern, **options)
    except EmptyPatternError:
        assume(False)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    D = data.draw(st.sampled_from([16, 32, 40]), label="head_dim")
    Hkv = data.draw(st.sampled_from(_divisors(s.heads)), label="kv_heads")
    try:    # as in test_random_patterns_match_fp64_autograd: only patterns the forward runs
        with torch.no_grad():
            kernel(*_leaves(s.batch, s.heads, Hkv, s.q_len, s.kv_len, 16, torch.float32)[:3], q_offset=s.q_offset,
                   **case.inputs)
    except Exception:
        assume(False)
    config = kernel.bwd_config(D, dtype)
    default = default_bwd_config(D, dtype)
    for which in ("dkdv", "dq"):
        for field in ("block_m", "block_n", "num_warps", "num_stages"):
            want = options.get(f"{which}_{field}", options.get(f"bwd_{field}", getattr(getattr(default, which), field)))
            assert getattr(getattr(config, which), field) == want, (which, field)
    with _recorded_bwd_launches() as launches:
        check_grads(case.pattern, s.batch, s.heads, Hkv, s.q_len, s.kv_len, D, dtype, q_offset=s.q_offset,
                    seed=data.draw(st.integers(0, 2**16), label="seed"), kernel=kernel, **case.inputs)
    assert launches == _expected_launches(config)


def test_backward_options_precedence_and_targets():
    kernel = attnpat.compile("sliding_window", bwd_block_m=32, bwd_num_warps=2, dkdv_block_m=64, dq_block_n=128,
                             dq_num_stages=None)
    for dtype, d, arch in ((torch.float16, 64, 80), (torch.bfloat16, 128, 90), (torch.float32, 256, 80),
                           (torch.float32, 40, None)):
        base = default_bwd_config(d, dtype, arch)
        assert kernel.bwd_config(d, dtype, arch) == BwdConfig(
            TileConfig(64, base.dkdv.block_n, 2, base.dkdv.num_stages),
            TileConfig(32, 128, 2, base.dq.num_stages))
        assert kernel.config(d, dtype) == attnpat.compile("sliding_window").config(d, dtype)   # forward untouched
    plain = attnpat.compile("sliding_window")
    assert plain.bwd_config(128, torch.float16, 80) == default_bwd_config(128, torch.float16, 80)
    # the testing aid replaces the default; a kernel's own options still apply on top of it
    with override_bwd_config(SMALL_BWD[1]):
        assert plain.bwd_config(64, torch.float16, 80) == SMALL_BWD[1]
        assert kernel.bwd_config(64, torch.float16, 80) == BwdConfig(TileConfig(64, 16, 2, 1),
                                                                     TileConfig(32, 128, 2, 1))
    # the ahead-of-time requests (attnpat inspect --backward) compile the kernel's configuration
    requests = autograd.bwd_aot_requests(kernel, target="sm_90a", dtype=torch.bfloat16, head_dim=128)
    config = kernel.bwd_config(128, torch.bfloat16, 90)
    assert [(r["kernel"], r["block_m"], r["block_n"], r["num_warps"], r["num_stages"]) for r in requests] == \
        _expected_launches(config)
    assert [(r["constexprs"]["BLOCK_M"], r["constexprs"]["BLOCK_N"]) for r in requests] == \
        [(64, config.dkdv.block_n), (32, 128)]


def test_backward_options_reach_the_launches_of_attention_and_large_tiles():
    # tiles larger than the sequence: one masked tile per program
    pattern = attnpat.load("document")
    kernel = attnpat.compile(pattern, dkdv_block_n=128, dkdv_block_m=16, dq_block_m=64, dq_block_n=16,
                             bwd_num_stages=2)
    doc = torch.tensor([0] * 17 + [1] * 30 + [2] * 3)
    with _recorded_bwd_launches() as launches:
        check_grads(pattern, 1, 4, 2, 50, 50, 32, torch.float32, kernel=kernel, doc=doc)
    assert launches == [("attn_bwd_dkdv", 16, 128, 4, 2), ("attn_bwd_dq", 64, 16, 4, 2)]


@pytest.mark.parametrize("options, message", [
    (dict(bwd_block_m=24), "'bwd_block_m' must be a power of two from 16 to 512, got 24"),
    (dict(bwd_block_n=8), "'bwd_block_n' must be a power of two from 16 to 512, got 8"),
    (dict(dkdv_block_m=48), "'dkdv_block_m' must be a power of two from 16 to 512, got 48"),
    (dict(dq_block_n=0), "'dq_block_n' must be a positive int, got 0"),
    (dict(bwd_num_warps=-4), "'bwd_num_warps' must be a positive int, got -4"),
    (dict(dkdv_num_stages=True), "'dkdv_num_stages' must be a positive int, got True"),
    (dict(dq_num_warps=2.0), "'dq_num_warps' must be a positive int, got 2.0"),
    (dict(bwd_block_m="32"), "'bwd_block_m' must be a positive int, got '32'"),
    (dict(bwd_blockm=32), "unknown option 'bwd_blockm'; the options are block_m, "),
    (dict(window=32), "unknown option 'window'; the options are block_m, "),
    (dict(dq_block_k=32), "unknown option 'dq_block_k'"),
])
def test_backward_option_errors_name_the_option(options, message):
    with pytest.raises(attnpat.ArgumentError, match="^error: " + re.escape(message)):
        attnpat.compile("causal", **options)


def test_inspect_backward_shows_the_options(monkeypatch, capsys):
    from attnpat.cli import main

    def fake_compile_many(requests):   # what inspect asks for, without compiling
        return [AotReport(r["kernel"], r["target"], r["dtype"], r["head_dim"], r["block_m"], r["block_n"],
                          r["num_warps"], r["num_stages"], 128, 0, 0, 1024, 8, "HMMA", 2) for r in requests]
    monkeypatch.setattr("attnpat.runtime.aot.compile_many", fake_compile_many)
    argv = ["inspect", "sliding_window", "--target", "sm_80", "--dtype", "fp16", "--head-dim", "64", "--backward"]
    assert main(argv + ["--option", "bwd_block_m=32", "--option", "dq_num_warps=8", "--option", "block_n=32"]) == 0
    rows = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("attn_")}
    default = default_bwd_config(64, torch.float16, 80)
    fwd = attnpat.compile("sliding_window").config(64, torch.float16)
    assert rows == {"attn_fwd": [f"{fwd.block_m}x32", str(fwd.num_warps), str(fwd.num_stages)],
                    "attn_bwd_dkdv": [f"32x{default.dkdv.block_n}", str(default.dkdv.num_warps),
                                      str(default.dkdv.num_stages)],
                    "attn_bwd_dq": [f"32x{default.dq.block_n}", "8", str(default.dq.num_stages)]}
    assert main(argv + ["--option", "bwd_block_n=20"]) == 1
    assert "'bwd_block_n' must be a power of two from 16 to 512, got 20" in capsys.readouterr().err
    assert main(argv + ["--option", "bwd_block_n"]) == 1
    assert "'--option' takes NAME=VALUE with an integer VALUE, got 'bwd_block_n'" in capsys.readouterr().err


def test_backward_needs_no_pattern_object():
    # the runtime holds the compiled value and the call's mask, never the Pattern: a pattern dropped right
    # after the forward is released at once, and the backward still runs (and is right)
    q, k, v, do = _leaves(1, 2, 1, 40, 40, 16, torch.float32, seed=3)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    dropped = attnpat.load("document_sliding_window", window=9)
    gone = weakref.ref(dropped)
    out = attnpat.attention(q, k, v, dropped, doc=torch.arange(40) // 15)
    del dropped
    gc.collect()
    assert gone() is None
    out.backward(do)
    p = attnpat.load("document_sliding_window", window=9)
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attnpat.reference_attention(q2, k2, v2, p, doc=torch.arange(40) // 15).backward(do.double())
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=1e-5, rtol=1e-4)


# -- empty rows, determinism, drop-in behaviour ---------------------------------------------------


def test_empty_rows_have_zero_gradients():
    # rows q < 40 see no key; with q_len > kv_len the first rows sit at negative positions
    p = attnpat.parse("pattern p():\n    mask causal and k >= 40\n")
    for n, m in ((90, 90), (120, 70)):
        out, dq, dk, dv = check_grads(p, 1, 2, 1, n, m, 32, torch.float32)
        mask = p.dense_mask(n, m)
        empty = ~mask.any(-1)[0, 0]
        assert empty.any()
        assert (out[:, :, empty] == 0).all() and (dq[:, :, empty] == 0).all()
        unseen = ~mask.any(-2)[0, 0]     # keys no query sees get exactly zero dk, dv
        assert (dk[:, :, unseen] == 0).all() and (dv[:, :, unseen] == 0).all()
    # a runtime input leaving rows empty: document ids that never match at q
    d = attnpat.load("document")
    for dtype in (torch.float16, torch.float32):
        out, dq, dk, dv = check_grads(d, 1, 2, 2, 40, 80, 16, dtype, doc=torch.arange(80) // 50)
        assert all(torch.isfinite(t).all() for t in (out, dq, dk, dv))


def test_deterministic_gqa():
    p = attnpat.load("document_sliding_window", window=30)
    doc = torch.arange(100) // 37
    q, k, v, do = _leaves(1, 6, 2, 100, 100, 32, torch.float32, seed=5)
    results = [_run(lambda a, b, c: attnpat.attention(a, b, c, p, doc=doc), q, k, v, do, torch.float32)
               for _ in range(2)]
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_drop_in_for_sdpa():
    q, k, v, do = _leaves(2, 2, 2, 64, 64, 32, torch.float32, seed=1)
    ours = _run(lambda a, b, c: attnpat.attention(a, b, c, attnpat.load("causal")), q, k, v, do, torch.float32)
    theirs = _run(lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True),
                  q, k, v, do, torch.float32)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_compiled_kernel_and_sum_backward():
    pattern = attnpat.load("sliding_window", window=9)
    kernel = attnpat.compile(pattern)
    q = torch.randn(1, 2, 50, 16, requires_grad=True)
    k = torch.randn(1, 1, 50, 16, requires_grad=True)
    v = torch.randn(1, 1, 50, 16, requires_grad=True)
    out = kernel(q, k, v)
    assert out.grad_fn is not None
    out.sum().backward()      # dout is an expanded (stride 0) tensor
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attnpat.reference_attention(q2, k2, v2, pattern).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=1e-5, rtol=1e-4)


def test_only_some_inputs_need_grad():
    p = attnpat.load("causal")
    q = torch.randn(1, 2, 40, 16)
    k = torch.randn(1, 2, 40, 16, requires_grad=True)
    v = torch.randn(1, 2, 40, 16)
    attnpat.attention(q, k, v, p).sum().backward()
    assert q.grad is None and v.grad is None and k.grad is not None
    with torch.no_grad():
        assert attnpat.attention(q, k, v, p).grad_fn is None


def test_return_lse_is_not_differentiable():
    p = attnpat.load("sliding_window", window=7)
    q = torch.randn(1, 2, 30, 16, requires_grad=True)
    k = torch.randn(1, 2, 30, 16, requires_grad=True)
    v = torch.randn(1, 2, 30, 16, requires_grad=True)
    out, lse = attnpat.attention(q, k, v, p, return_lse=True)
    assert out.requires_grad and not lse.requires_grad
    _, ref_lse = attnpat.reference_attention(q.detach(), k.detach(), v.detach(), p, return_lse=True)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)
    (out * 2).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_runtime_inputs_get_no_gradient_and_scale_is_used():
    p = attnpat.load("document")
    doc = torch.tensor([0] * 20 + [1] * 25)
    check_grads(p, 1, 2, 1, 45, 45, 16, torch.float32, scale=0.3, doc=doc)
    # runtime inputs are integer tensors: nothing to differentiate, and a float one is refused
    with pytest.raises(attnpat.InputError):
        attnpat.attention(torch.randn(1, 1, 45, 16, requires_grad=True), torch.randn(1, 1, 45, 16),
                          torch.randn(1, 1, 45, 16), p, doc=doc.float().requires_grad_())


# -- the training example -------------------------------------------------------------------------


def test_train_sliding_window_example():
    env = dict(os.environ)
    env.pop("ATTNPAT_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_sliding_window.py")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "loss" in proc.stdout
