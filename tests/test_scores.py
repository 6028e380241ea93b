"""Score terms (issue 14): softcap, biases (ALiBi) and sinks -- language, checker, canonical form, reference,
forward and backward kernels.

Every numeric check compares with `naive`, a float64 implementation written here from the definitions in
docs/language.md ("Score terms"), independent of the reference and of the code generator: scores
s = scale * q.k, then cap * tanh(s / cap), then + bias, then the mask, then the sink as one more logit in the
softmax's denominator. Gradients, the sinks' included, come from torch autograd through `naive`.
Kernels run under Triton's interpreter on small shapes.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnpat
from kernel_util import own_cache  # noqa: F401  (autouse: a temporary kernel cache)
from attnpat.compiler import pipeline
from attnpat.errors import ArgumentError, InputError, PatternNameError, PatternSyntaxError, PatternTypeError
from attnpat.runtime.autograd import BwdConfig, TileConfig, override_bwd_config

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")

SMALL_BWD = BwdConfig(TileConfig(16, 16, 4, 1), TileConfig(16, 16, 4, 1))
FLOOR = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


# -- the independent float64 implementation ---------------------------------------------------------------


def naive(q, k, v, allowed, *, softcap=None, slopes=None, sinks=None, scale=None):
    """Attention with score terms in float64, straight from the definitions. allowed(qpos, kpos) -> bool
    grid [N, M]; slopes [H] (ALiBi: bias = -slope_h * (q - k)); sinks [H]. Returns (out, lse)."""
    B, H, N, D = q.shape
    Hkv, M = k.shape[1], k.shape[2]
    kk = k.double().repeat_interleave(H // Hkv, dim=1)
    vv = v.double().repeat_interleave(H // Hkv, dim=1)
    s = (1.0 / math.sqrt(D) if scale is None else scale) * q.double() @ kk.transpose(-1, -2)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    qpos = torch.arange(N).view(N, 1) + (M - N)          # bottom-right aligned, as attnpat
    kpos = torch.arange(M).view(1, M)
    if slopes is not None:
        s = s - slopes.double().view(1, H, 1, 1) * (qpos - kpos).double()
    ok = allowed(qpos, kpos).expand(N, M)
    s = s.masked_fill(~ok, float("-inf"))
    logits = s if sinks is None else torch.cat([s, sinks.double().view(1, H, 1, 1).expand(B, H, N, 1)], -1)
    lse = torch.logsumexp(logits, -1)
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse).unsqueeze(-1))
    p = p.masked_fill(~ok, 0.0)
    return p @ vv, lse


def _window(w):
    return lambda qp, kp: (kp <= qp) & (qp - kp < w)


# -- language, checker, canonical form ----------------------------------------------------------------------

GEMMA = """
pattern gemma(cap: float = 50.0, window: int = 4):
    score softcap(cap)
    mask causal and q - k < window
"""


def _error(text, exc, name="p"):
    with pytest.raises(exc) as info:
        attnpat.parse(text, name)
    return str(info.value)


def test_statements_parse_check_and_print_canonically():
    p = attnpat.parse("""
pattern p(slopes: list = [0.5, 0.25]):
    input sinks: float[h]
    d = q - k
    score bias(-slopes[h % 2] * d)
    score softcap(30)
    score sink(sinks[h])
    mask causal
""", "p")
    terms = p.compiled.checked.scores
    assert terms.softcap == 30.0 and len(terms.bias) == 1 and [d.name for d in terms.inputs] == ["sinks"]
    src = p.canonical.source()
    assert "input sinks: float[h]" in src and "score softcap(30.0)" in src
    # products distributed over sums, factors and summands in text order
    assert "score bias([0.5, 0.25][h % 2] * k - [0.5, 0.25][h % 2] * q)" in src and "score sink(sinks[h])" in src
    again = attnpat.parse(src, "canonical")   # the canonical text is a pattern with the same key
    assert again.key == p.key


def test_equivalent_spellings_share_a_key_and_terms_change_it():
    a = attnpat.parse("""
pattern a():
    input sl: float[h]
    score bias(0.5)
    score bias(-sl[h] * (q - k))
    mask causal
""", "a")
    b = attnpat.parse("""
pattern bb():
    input sl: float[h]
    score bias(-sl[h] * (q - k) + 0.25 + 0.25)
    mask k <= q
""", "bb")
    assert a.key == b.key
    # multiplication distributes and commutes: ALiBi written three ways is one kernel
    c = attnpat.parse("""
pattern c():
    input sl: float[h]
    score bias(0.5 + sl[h] * (k - q))
    mask causal
""", "c")
    d = attnpat.parse("""
pattern d():
    input sl: float[h]
    score bias(k * sl[h] - sl[h] * q + 0.5)
    mask causal
""", "d")
    assert a.key == c.key == d.key
    plain = attnpat.load("causal")
    assert a.key != plain.key and attnpat.parse(GEMMA, "gemma").key != attnpat.load("sliding_window", window=4).key
    assert attnpat.parse(GEMMA, "gemma", cap=20).key != attnpat.parse(GEMMA, "gemma").key
    assert attnpat.parse(GEMMA, "gemma", cap=20).key == attnpat.parse(GEMMA, "gemma", cap=20.0).key


@pytest.mark.parametrize("body, exc, message, caret", [
    ("    score softcap(q)\n", PatternTypeError, "must be a constant", "q"),
    ("    score softcap(0)\n", PatternTypeError, "must be positive", "0"),
    ("    score sink(q)\n", PatternTypeError, "cannot read 'q'", "q"),
    ("    score bias(q < k)\n", PatternTypeError, "must be a number, not a condition", "q < k"),
    ("    score frob(1)\n", PatternSyntaxError, "unknown score term 'frob'", "frob"),
    ("    input s: float[k]\n", PatternSyntaxError, "float[h]", "k"),
    ("    input s: int[h]\n", PatternSyntaxError, "float[h]", "int"),
    ("    input s: float[h]\n    score bias(s)\n", PatternTypeError, "write 's[h]'", "s"),
    ("    input s: float[h]\n    score bias(s[q])\n", PatternTypeError, "index it by h", "q"),
    ("    score softcap(2)\n    score softcap(3)\n", PatternNameError, "more than one 'score softcap'",
     "score softcap(3)"),
    ("    score bias(hash(q))\n", PatternTypeError, "only take constants", "hash(q)"),
])
def test_errors_point_at_the_term(body, exc, message, caret):
    text = "pattern p():\n" + body + "    mask causal\n"
    msg = _error(text, exc)
    assert message in msg
    line = msg.splitlines()
    assert line[0].startswith("<string>:") and "^" in line[2]
    start = line[2].index("^")
    assert line[1][start:start + len(caret)] == caret and line[2].count("^") == len(caret)


def test_floats_stay_out_of_masks():
    assert "compares integers, not float" in _error("pattern p():\n    mask q - k < 2.5\n", PatternTypeError)
    assert "not float" in _error("pattern p(w: list = [0.5]):\n    mask q - k < w[0]\n", PatternTypeError)
    assert "float input" in _error("pattern p():\n    input s: float[h]\n    mask s == 1\n", PatternTypeError)


def test_a_called_pattern_with_score_terms_is_refused():
    text = GEMMA + "\npattern user():\n    mask gemma()\n"
    assert "repeat its 'score' statements" in _error(text, PatternNameError, "user")


def test_float_parameters_from_python():
    p = attnpat.parse(GEMMA, "gemma", cap=7)
    assert p.compiled.checked.scores.softcap == 7.0 and dict(p.params)["cap"] == 7.0
    with pytest.raises(attnpat.ParameterError):
        attnpat.parse(GEMMA, "gemma", cap="x")
    with pytest.raises(attnpat.ParameterError):
        attnpat.parse(GEMMA, "gemma", cap=float("nan"))


def test_explain_names_the_terms():
    from attnpat.compiler.analysis import analyze
    p = attnpat.parse(GEMMA, "gemma")
    text = str(analyze(p, 64))
    assert "softcap(50.0)" in text and "score terms" in text


# -- the reference ------------------------------------------------------------------------------------------

def test_reference_implements_the_terms():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=g, dtype=torch.float64) for _ in range(3))
    slopes, sinks = torch.rand(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    p = attnpat.parse("""
pattern p():
    input slopes: float[h]
    input sinks: float[h]
    score softcap(3.0)
    score bias(-slopes[h] * (q - k))
    score sink(sinks[h])
    mask causal and q - k < 3 and q >= 2
""", "p")
    out, lse = attnpat.reference_attention(q, k, v, p, slopes=slopes, sinks=sinks, return_lse=True)
    want, wlse = naive(q, k, v, lambda a, b: (b <= a) & (a - b < 3) & (a >= 2), softcap=3.0, slopes=slopes,
                       sinks=sinks)
    assert torch.allclose(out, want, atol=1e-12) and torch.allclose(lse, wlse, atol=1e-12)
    # rows 0 and 1 allow no key: output 0, lse the sink
    assert (out[:, :, :2] == 0).all() and torch.equal(lse[:, :, 0], sinks.expand(2, 4))


# -- kernels: random terms against the float64 implementation ------------------------------------------------

_SCORE_TEXT = """
pattern s(window: int = 8, cap: float = 50.0, slopes: list = [0.0]):
    input sinks: float[h]
    input sl: float[h]
    ${softcap}
    ${bias}
    ${sink}
    mask causal and q - k < window
"""


def _pattern(softcap, bias, sink, window, heads, slope_values):
    text = _SCORE_TEXT
    text = text.replace("${softcap}", "score softcap(cap)" if softcap else "")
    text = text.replace("${bias}", {"none": "", "list": "score bias(-slopes[h] * (q - k))",
                                    "input": "score bias(-sl[h] * (q - k))"}[bias])
    text = text.replace("${sink}", "score sink(sinks[h])" if sink else "")
    params = dict(window=window)
    if softcap:
        params["cap"] = softcap
    if bias == "list":
        params["slopes"] = [float(x) for x in slope_values]
    return attnpat.parse(text, "s", **params)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_forward_matches_float64(data):
    heads, group = data.draw(st.sampled_from([(2, 1), (4, 2), (2, 2)]))
    N = data.draw(st.integers(1, 40))
    M = data.draw(st.integers(N, 48))
    window = data.draw(st.integers(1, 20))
    softcap = data.draw(st.sampled_from([None, 1.5, 20.0]))
    bias = data.draw(st.sampled_from(["none", "list", "input"]))
    sink = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 1000))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, N, 16, generator=g)
    k, v = (torch.randn(1, heads // group, M, 16, generator=g) for _ in range(2))
    slopes = torch.rand(heads, generator=g)
    sinks = torch.randn(heads, generator=g) * 2
    p = _pattern(softcap, bias, sink, window, heads, slopes.tolist())
    given = {n: t for n, t in (("sinks", sinks), ("sl", slopes)) if n in p.float_inputs}
    out, lse = attnpat.attention(q, k, v, p, return_lse=True, **given)
    want, wlse = naive(q, k, v, _window(window), softcap=softcap, slopes=None if bias == "none" else slopes,
                       sinks=sinks if sink else None)
    assert (out.double() - want).abs().max() < 1e-5
    finite = torch.isfinite(wlse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert (lse.double()[finite] - wlse[finite]).abs().max() < 1e-5 if finite.any() else True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 33, 32, generator=g).to(dtype)
    k, v = (torch.randn(1, 2, 40, 32, generator=g).to(dtype) for _ in range(2))
    sinks, slopes = torch.randn(4, generator=g), torch.rand(4, generator=g)
    p = _pattern(5.0, "input", True, 9, 4, [])
    out = attnpat.attention(q, k, v, p, sinks=sinks, sl=slopes)
    want, _ = naive(q, k, v, _window(9), softcap=5.0, slopes=slopes, sinks=sinks)
    assert out.dtype == dtype and (out.double() - want).abs().max() < FLOOR[dtype] * 10


def test_sink_alone_makes_an_empty_row_zero_with_the_sink_as_lse():
    p = attnpat.parse("""
pattern p():
    input sinks: float[h]
    score sink(sinks[h])
    mask causal and q >= 4
""", "p")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 16, generator=g) for _ in range(3))
    sinks = torch.tensor([0.5, -2.0])
    out, lse = attnpat.attention(q, k, v, p, sinks=sinks, return_lse=True)
    assert (out[:, :, :4] == 0).all() and torch.allclose(lse[0, :, :4], sinks.view(2, 1).expand(2, 4))
    want, wlse = naive(q, k, v, lambda a, b: (b <= a) & (a >= 4), sinks=sinks)
    assert (out.double() - want).abs().max() < 1e-5 and (lse.double() - wlse).abs().max() < 1e-5


# -- gradients ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("softcap, bias, sink, heads, group, table", [
    (2.0, "list", True, 4, 2, False),
    (None, "input", True, 2, 1, True),
    (8.0, "none", False, 2, 2, False),
    (3.0, "input", False, 4, 2, False),
])
def test_gradients_match_float64_autograd(softcap, bias, sink, heads, group, table):
    g = torch.Generator().manual_seed(7)
    N, M = 37, 45
    q = torch.randn(1, heads, N, 16, generator=g, requires_grad=True)
    k, v = (torch.randn(1, heads // group, M, 16, generator=g).requires_grad_() for _ in range(2))
    sinks = (torch.randn(heads, generator=g) * 2).requires_grad_()
    slopes = torch.rand(heads, generator=g).requires_grad_(bias == "input")   # a bias input's gradient
    do = torch.randn(1, heads, N, 16, generator=g)
    if table:   # a mask that walks block tables
        p = attnpat.parse("""
pattern t():
    input sinks: float[h]
    input sl: float[h]
    score bias(-sl[h] * (q - k))
    score sink(sinks[h])
    mask causal and (q - k < 6 or k % 5 == 0)
""", "t")
        allowed = lambda a, b: (b <= a) & ((a - b < 6) | (b % 5 == 0))  # noqa: E731
    else:
        p = _pattern(softcap, bias, sink, 6, heads, slopes.tolist())
        allowed = _window(6)
    with override_bwd_config(SMALL_BWD):
        out = attnpat.attention(q, k, v, p, sinks=sinks, sl=slopes)
        leaves = [q, k, v] + ([sinks] if sink else []) + ([slopes] if bias == "input" else [])
        got = torch.autograd.grad(out, leaves, do)
    want, _ = naive(q, k, v, allowed, softcap=softcap, slopes=None if bias == "none" else slopes,
                    sinks=sinks if sink else None)
    ref = torch.autograd.grad(want, leaves, do.double())
    assert (out.double() - want).abs().max() < 1e-5
    names = ["dq", "dk", "dv"] + (["dsinks"] if sink else []) + (["dslopes"] if bias == "input" else [])
    assert len(got) == len(names)
    for name, a, b in zip(names, got, ref):
        assert (a.double() - b).abs().max() < 1e-4 * (1 + b.abs().max()), name


# -- runtime inputs --------------------------------------------------------------------------------------------

def test_float_inputs_are_validated():
    p = _pattern(None, "none", True, 4, 2, [])
    q = torch.randn(1, 2, 8, 16)
    k = v = torch.randn(1, 2, 8, 16)
    with pytest.raises(InputError, match="needs runtime input 'sinks'"):
        attnpat.attention(q, k, v, p, sl=torch.zeros(2))
    with pytest.raises(InputError, match=r"shape \[2\]"):
        attnpat.attention(q, k, v, p, sinks=torch.zeros(3), sl=torch.zeros(2))
    with pytest.raises(InputError, match="floating-point"):
        attnpat.attention(q, k, v, p, sinks=torch.zeros(2, dtype=torch.int64), sl=torch.zeros(2))
    with pytest.raises(InputError, match="not finite"):
        attnpat.attention(q, k, v, p, sinks=torch.tensor([0.0, float("nan")]), sl=torch.zeros(2))


def test_an_input_whose_gradient_is_not_computed_is_refused_not_ignored():
    p = attnpat.parse("""
pattern p():
    input s: float[h]
    score sink(2.0 * s[h])
    mask causal
""", "p")
    q = torch.randn(1, 2, 8, 16, requires_grad=True)
    k = v = torch.randn(1, 2, 8, 16)
    with pytest.raises(ArgumentError, match="requires grad"):
        attnpat.attention(q, k, v, p, s=torch.zeros(2, requires_grad=True))


def test_patterns_without_terms_generate_what_they_did():
    # the golden files pin this for the library; here the module text has no trace of score code
    src = pipeline.forward_source(attnpat.load("sliding_window", window=8).compiled)
    assert "_scores" not in src and "FIn" not in src and "sink" not in src


# -- library, verify, docs ------------------------------------------------------------------------------------

def test_library_score_patterns_match_float64():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 4, 20, 16, generator=g)
    k, v = (torch.randn(1, 2, 20, 16, generator=g) for _ in range(2))
    sinks, slopes = torch.randn(4, generator=g), torch.rand(4, generator=g)
    cases = [
        (attnpat.load("gemma2_local", window=5, cap=2.0), {}, dict(softcap=2.0), _window(5)),
        (attnpat.load("gemma2_global", cap=3.0), {}, dict(softcap=3.0), _window(10**9)),
        (attnpat.load("alibi", slopes=slopes.tolist()), {}, dict(slopes=slopes), _window(10**9)),
        (attnpat.load("alibi_learned"), dict(slopes=slopes), dict(slopes=slopes), _window(10**9)),
        (attnpat.load("gpt_oss_local", window=3), dict(sinks=sinks), dict(sinks=sinks), _window(3)),
        (attnpat.load("gpt_oss_global"), dict(sinks=sinks), dict(sinks=sinks), _window(10**9)),
    ]
    for p, inputs, terms, allowed in cases:
        out = attnpat.attention(q, k, v, p, **inputs)
        want, _ = naive(q, k, v, allowed, **terms)
        assert (out.double() - want).abs().max() < 1e-5, p.name


def test_verify_covers_sinks_and_catches_a_wrong_sink_gradient(monkeypatch):
    from attnpat.runtime import scores
    from attnpat.verify import verify
    p = attnpat.load("gpt_oss_local", window=4)
    assert verify(p, spec="gpt_oss_local", examples=3, max_len=24).passed
    real = scores.op_input_grads
    monkeypatch.setattr(scores, "op_input_grads",
                        lambda *a: [None if g is None else 2 * g for g in real(*a)])
    import attnpat.runtime.op as op
    monkeypatch.setattr(op, "score_input_grads", scores.op_input_grads)
    result = verify(p, spec="gpt_oss_local", examples=3, max_len=24)
    assert not result.passed and "dsinks" in result.failure and "sinks=torch.tensor(" in result.snippet


def test_the_documented_examples_check():
    import re
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "docs" / "language.md").read_text()
    section = doc.split("## Score terms", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    names = re.findall(r"^pattern (\w+)\(", blocks[0], re.M)
    assert len(names) == 4
    for name in names:
        assert attnpat.parse(blocks[0], name).compiled.checked.scores is not None


def test_bias_input_gradients_through_abs_min_max_and_products():
    p = attnpat.parse("""
pattern p():
    input sl: float[h]
    input w: float[h]
    score bias(-abs(sl[h]) * (q - k) + max(sl[h], 0.2) * w[h] - min(w[h] * k, 1.5))
    mask causal
""", "p")
    g = torch.Generator().manual_seed(11)
    q = torch.randn(1, 3, 21, 16, generator=g)
    k, v = (torch.randn(1, 3, 21, 16, generator=g) for _ in range(2))
    sl = torch.tensor([-0.3, 0.1, 0.7], requires_grad=True)
    w = torch.tensor([0.05, -0.2, 0.27], requires_grad=True)   # no tie of w * k with 1.5 (a kink)
    do = torch.randn(1, 3, 21, 16, generator=g)
    with override_bwd_config(SMALL_BWD):
        out = attnpat.attention(q, k, v, p, sl=sl, w=w)
        got = torch.autograd.grad(out, (sl, w), do)
    # float64, written out: the bias on the grid, then softmax attention
    pos = torch.arange(21).double()
    qp, kp = pos.view(21, 1), pos.view(1, 21)
    s64, w64 = sl.double().view(3, 1, 1), w.double().view(3, 1, 1)
    bias = -s64.abs() * (qp - kp) + torch.maximum(s64, torch.tensor(0.2, dtype=torch.float64)) * w64 \
        - torch.minimum(w64 * kp, torch.tensor(1.5, dtype=torch.float64))
    s = (q.double() @ k.double().transpose(-1, -2)) / 4.0 + bias
    s = s.masked_fill(kp > qp, float("-inf"))
    want = torch.softmax(s, -1) @ v.double()
    ref = torch.autograd.grad(want, (sl, w), do.double())
    assert (out.double() - want).abs().max() < 1e-5
    for a, b in zip(got, ref):
        assert (a.double() - b).abs().max() < 1e-4 * (1 + b.abs().max()), (a, b)


def test_terms_reading_b_h_and_lists_with_an_explicit_q_offset():
    p = attnpat.parse("""
pattern p(bs: list = [0.5, -1.0, 0.25]):
    score bias(0.5 * b - 0.1 * h + min(q, 2 * k) * 0.01)
    score sink(bs[h % 3] + 0.25 * b)
    mask causal and q - k < 6
""", "p")
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 9, 16, generator=g)
    k, v = (torch.randn(2, 2, 30, 16, generator=g) for _ in range(2))
    out, lse = attnpat.attention(q, k, v, p, q_offset=3, return_lse=True)
    # float64, written out
    qp, kp = (torch.arange(9).view(9, 1) + 3).double(), torch.arange(30).view(1, 30).double()
    bb, hh = torch.arange(2).view(2, 1, 1, 1).double(), torch.arange(4).view(1, 4, 1, 1).double()
    s = q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2) / 4.0
    s = s + 0.5 * bb - 0.1 * hh + torch.minimum(qp, 2 * kp) * 0.01
    s = s.masked_fill(~((kp <= qp) & (qp - kp < 6)), float("-inf"))
    sink = (torch.tensor([0.5, -1.0, 0.25, 0.5]).view(1, 4, 1, 1).double() + 0.25 * bb).expand(2, 4, 9, 1)
    wlse = torch.logsumexp(torch.cat([s, sink], -1), -1)
    want = torch.exp(s - wlse.unsqueeze(-1)) @ v.double().repeat_interleave(2, 1)
    assert (out.double() - want).abs().max() < 1e-5 and (lse.double() - wlse).abs().max() < 1e-5
