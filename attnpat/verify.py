"""`attnpat verify`: property-test a user's pattern -- its kernels against the float64 dense reference.

Hypothesis draws shapes (ragged lengths, q_len < kv_len, explicit q_offset), head counts with GQA/MQA,
dtypes, head dims and runtime inputs; each example runs the forward kernel (and, with backward, the
gradients) and compares with the dense reference the way FlexAttention's tests do: the kernel's error
against fp64 may be a small factor times the error of torch eager in the same dtype. On failure
hypothesis shrinks to the smallest failing case, printed as a Python snippet that reproduces it.

hypothesis is an optional dependency (``pip install 'attnpat[verify]'``): only this module needs it, and
:func:`verify` says how to install it when it is missing. Its files (a cache of constants) go to a
temporary directory, not to a `.hypothesis/` folder in the user's current directory.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from .compiler.values import format_value

if TYPE_CHECKING:
    from .pattern import Pattern

__all__ = ["verify", "VerifyResult", "FUDGE", "FLOOR", "eager_attention", "require_hypothesis", "VERIFY_HINT"]

VERIFY_HINT = ("attnpat verify needs hypothesis, an optional dependency: pip install 'attnpat[verify]' "
               "(or pip install hypothesis)")

FUDGE = 4.0
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
GRAD_FLOOR = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 8e-2}


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a verify run."""

    passed: bool
    examples: int
    failure: str | None = None      # the reason, for a failing run
    snippet: str | None = None      # Python that reproduces the smallest failing case
    seconds: dict[str, float] = field(default_factory=dict)   # where the time went, by step


def require_hypothesis() -> None:
    """Raise ModuleNotFoundError, saying how to install it, when hypothesis is missing."""
    try:
        import hypothesis   # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(VERIFY_HINT, name="hypothesis") from None


@contextlib.contextmanager
def _timed(seconds: dict[str, float] | None, step: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if seconds is not None:
            seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start


def eager_attention(q, k, v, mask, scale=None, terms=(None, None, None)):
    """Attention by torch eager in the inputs' own dtype: the error baseline a kernel is held to. `terms`:
    the pattern's score terms as reference.dense_score_terms gives them (softcap, bias, sink), applied in
    the inputs' dtype."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scale = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    softcap, bias, sink = terms
    if softcap is not None or bias is not None or sink is not None:
        return _eager_scores(scores, v, mask, softcap, bias, sink)
    # Rows with no allowed key are zeroed before the softmax, so their output and their gradients are 0
    # (a softmax over all -inf would give NaN, and a NaN baseline would make every comparison pass).
    empty = ~mask.any(-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype).masked_fill(empty, 0.0)
    return torch.matmul(probs, v)


def _eager_scores(scores, v, mask, softcap, bias, sink):
    """eager_attention's tail for score terms: softcap, bias, mask, sink, in the scores' dtype."""
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    scores = scores.masked_fill(~mask, float("-inf"))
    if sink is not None:   # one more logit that attends to nothing: a zero row of v
        column = sink.to(scores.dtype).expand(*scores.shape[:-1], 1)
        probs = torch.softmax(torch.cat([scores, column], -1).float(), dim=-1)[..., :-1].to(scores.dtype)
    else:
        empty = ~mask.any(-1, keepdim=True)
        probs = torch.softmax(scores.masked_fill(empty, 0.0).float(), dim=-1).to(scores.dtype).masked_fill(empty, 0)
    return torch.matmul(probs, v)


def _error(a, ref):
    return (a.double() - ref).abs().max().item() if a.numel() else 0.0


def check_case(pattern: Pattern, case: dict, *, backward: bool, device: str = "cpu",
               seconds: dict[str, float] | None = None) -> str | None:
    """Run one case; return None if it passes, else what went wrong (`seconds` adds up time per step)."""
    from . import compile as compile_kernel
    from .reference import dense_score_terms, reference_attention
    g = torch.Generator().manual_seed(case["seed"])
    dtype = getattr(torch, case["dtype"])
    B, H, Hkv, N, M, D = (case[x] for x in ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim"))
    q = torch.randn(B, H, N, D, generator=g).to(dtype).to(device)
    k = torch.randn(B, Hkv, M, D, generator=g).to(dtype).to(device)
    v = torch.randn(B, Hkv, M, D, generator=g).to(dtype).to(device)
    inputs = {n: torch.tensor(rows, dtype=torch.int64) for n, rows in case["inputs"].items()}
    inputs = {n: (t[0] if t.shape[0] == 1 else t) for n, t in inputs.items()}
    floats = {n: torch.tensor(vals, dtype=torch.float32, device=device) for n, vals in case.get("floats", {}).items()}
    sinks = _grad_inputs(pattern) if backward else set()
    for n in sinks & set(floats):
        floats[n].requires_grad_(True)   # a float input's gradient is checked with dq, dk, dv
    offset = case["q_offset"]
    scale = 1.0 / math.sqrt(D)
    with _timed(seconds, "compile"):
        kernel = compile_kernel(pattern, block_m=case["block_m"], block_n=case["block_n"])
    if backward:
        q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    with _timed(seconds, "forward kernel"):
        out = kernel(q, k, v, q_offset=offset, **inputs, **floats)
    with _timed(seconds, "reference"):
        q64, k64, v64 = (t.detach().double().requires_grad_(backward) for t in (q, k, v))
        f64 = {n: t.detach().double().requires_grad_(t.requires_grad) for n, t in floats.items()}
        ref = reference_attention(q64, k64, v64, pattern, q_offset=offset, **inputs, **f64)
        mask = pattern.dense_mask(N, M, batch=B, heads=H, q_offset=offset, **inputs).to(q.device)
        terms = dense_score_terms(pattern, N, M, B, H, offset, {**inputs, **floats})
        eager = eager_attention(q.detach(), k.detach(), v.detach(), mask, scale, terms)
    if not torch.isfinite(out).all():
        return "the output has NaN or inf"
    err, base = _error(out.detach(), ref.detach()), _error(eager, ref.detach())
    if err > max(FUDGE * base, FLOOR[dtype]):
        return f"forward error {err:.3g} > {FUDGE} x eager {dtype} error {base:.3g} (floor {FLOOR[dtype]:.1g})"
    if not backward:
        return None
    do = torch.randn(out.shape, generator=g).to(dtype).to(device)
    with _timed(seconds, "backward kernels"):
        out.backward(do)
    with _timed(seconds, "reference"):
        ref.backward(do.double())
        e_q, e_k, e_v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        e_f = {n: t.detach().clone().requires_grad_(t.requires_grad) for n, t in floats.items()}
        terms = dense_score_terms(pattern, N, M, B, H, offset, {**inputs, **e_f})
        eager_attention(e_q, e_k, e_v, mask, scale, terms).backward(do)
    grads = [("dq", q.grad, q64.grad, e_q.grad), ("dk", k.grad, k64.grad, e_k.grad),
             ("dv", v.grad, v64.grad, e_v.grad)]
    grads += [(f"d{n}", floats[n].grad, f64[n].grad, e_f[n].grad) for n in sorted(sinks & set(floats))]
    for name, got, want, base_t in grads:
        if got is None or not torch.isfinite(got).all():
            return f"{name} is missing or not finite"
        err, base = _error(got, want), _error(base_t, want)
        if err > max(FUDGE * base, GRAD_FLOOR[dtype]):
            return f"{name} error {err:.3g} > {FUDGE} x eager {dtype} error {base:.3g}"
    return None


def _grad_inputs(pattern) -> set[str]:
    """The float inputs attnpat computes gradients for: those a bias reads, and a sink written NAME[h]."""
    from .compiler import nodes as N
    terms = pattern.compiled.checked.scores
    if terms is None:
        return set()
    sink = terms.sink
    simple = isinstance(sink, N.Subscript) and isinstance(sink.value, N.Name)
    other = set() if sink is None or simple else {x.id for x in N.walk(sink) if isinstance(x, N.Name)}
    return {d.name for d in terms.inputs} - other


def _python_value(value: object) -> str:
    """A parameter value as Python source for attnpat.load (sets and lists as Python literals)."""
    return "set()" if value == frozenset() else format_value(value)


def _snippet(spec: str, params: dict, case: dict, backward: bool) -> str:
    args = "".join(f", {k}={_python_value(v)}" for k, v in params.items())
    inputs = "".join(f", {n}=torch.tensor({rows if len(rows) > 1 else rows[0]})"
                     for n, rows in case["inputs"].items())
    inputs += "".join(f", {n}=torch.tensor({vals})" for n, vals in case.get("floats", {}).items())
    lines = [
        "import math, torch, attnpat",
        f"pattern = attnpat.load({spec!r}{args})",
        f"g = torch.Generator().manual_seed({case['seed']})",
        *(f"{x} = torch.randn({case['batch']}, {case[heads]}, {case[length]}, {case['head_dim']}, generator=g)"
          f".to(torch.{case['dtype']})"
          for x, heads, length in (("q", "heads", "q_len"), ("k", "kv_heads", "kv_len"), ("v", "kv_heads", "kv_len"))),
        f"kernel = attnpat.compile(pattern, block_m={case['block_m']}, block_n={case['block_n']})",
    ]
    if backward:
        lines.append("q.requires_grad_(True); k.requires_grad_(True); v.requires_grad_(True)")
    lines += [
        f"out = kernel(q, k, v, q_offset={case['q_offset']}{inputs})",
        f"ref = attnpat.reference_attention(q.detach().double(), k.detach().double(), v.detach().double(), pattern, "
        f"q_offset={case['q_offset']}{inputs})",
        "print('max |out - ref| =', (out.double() - ref).abs().max().item())",
    ]
    return "\n".join(lines)


def verify(pattern: Pattern, *, spec: str, examples: int = 25, backward: bool = True, device: str = "cpu",
           max_len: int = 96, seed: int | None = None,
           progress: Callable[[int, int, dict, bool], None] | None = None) -> VerifyResult:
    """Property-test `pattern`'s kernels against the dense reference.

    Args:
        pattern: the Pattern to test (its parameters bound).
        spec: how the user named it (for the reproducer snippet).
        examples: how many cases hypothesis draws.
        backward: also check dq, dk, dv.
        device: 'cpu' (Triton's interpreter) or 'cuda'.
        seed: hypothesis's seed (default: derandomized, the same cases every run).
        progress: called after each case as progress(cases run, examples, case, shrinking).
    """
    require_hypothesis()
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seed_decorator
    from hypothesis import strategies as st

    inputs_decl = dict(pattern.inputs)
    terms = pattern.compiled.checked.scores
    floats_decl = [d.name for d in terms.inputs] if terms is not None else []   # float[h]: score terms

    @st.composite
    def cases(draw):
        kv_len = draw(st.integers(1, max_len))
        q_len = draw(st.integers(1, kv_len)) if draw(st.booleans()) else kv_len
        offset = None
        if draw(st.integers(0, 3)) == 0:
            offset = draw(st.integers(0, kv_len - q_len))
        heads = draw(st.sampled_from([1, 2, 4]))
        kv_heads = draw(st.sampled_from([h for h in (1, 2, 4) if heads % h == 0]))
        batch = draw(st.integers(1, 2))
        inputs = {}
        for name, axis in sorted(inputs_decl.items()):
            if axis == "b":   # one value per sequence (a length, say), or one shared by the batch
                inputs[name] = draw(st.lists(st.integers(0, kv_len + 1), min_size=1, max_size=1)
                                    if draw(st.booleans()) else
                                    st.lists(st.integers(0, kv_len + 1), min_size=batch, max_size=batch))
                continue
            length = kv_len if axis == "k" else q_len
            rows = []
            for _ in range(batch if draw(st.booleans()) else 1):
                if draw(st.booleans()):      # sorted ids: packed documents
                    cuts = sorted(draw(st.lists(st.integers(0, length), max_size=4)))
                    rows.append([sum(c <= i for c in cuts) for i in range(length)])
                else:
                    rows.append(draw(st.lists(st.integers(0, 3), min_size=length, max_size=length)))
            inputs[name] = rows
        return {"q_len": q_len, "kv_len": kv_len, "q_offset": offset, "batch": batch, "heads": heads,
                "kv_heads": kv_heads, "head_dim": draw(st.sampled_from([16, 32, 64])),
                "dtype": draw(st.sampled_from(["float32", "float16", "bfloat16"])),
                "block_m": draw(st.sampled_from([16, 32, 64])), "block_n": draw(st.sampled_from([16, 32])),
                "seed": draw(st.integers(0, 2**16)), "inputs": inputs,
                "floats": {name: draw(st.lists(st.floats(-3, 3, width=32), min_size=heads, max_size=heads))
                           for name in floats_decl}}

    failures: list = []
    count = [0]
    seconds: dict[str, float] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(cases())
    def prop(case):
        count[0] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem = check_case(pattern, case, backward=backward, device=device, seconds=seconds)
        if progress is not None:
            progress(count[0], examples, case, bool(failures))
        if problem is not None:
            failures.append((case, problem))
            raise AssertionError(problem)

    if seed is not None:
        prop = seed_decorator(seed)(prop)
    start = time.perf_counter()
    try:
        with _hypothesis_home():
            prop()
    except AssertionError:
        case, problem = failures[-1]      # hypothesis re-runs the shrunk case last
        return VerifyResult(False, count[0], problem, _snippet(spec, pattern.params, case, backward),
                            _with_total(seconds, start))
    return VerifyResult(True, count[0], seconds=_with_total(seconds, start))


def _with_total(seconds: dict[str, float], start: float) -> dict[str, float]:
    """The per-step times plus 'total' and the rest (hypothesis drawing and shrinking cases, Python)."""
    total = time.perf_counter() - start
    return {**seconds, "hypothesis and other": max(0.0, total - sum(seconds.values())), "total": total}


@contextlib.contextmanager
def _hypothesis_home():
    """Point hypothesis's storage (it caches constants there) at a temporary directory for the run, so
    that verify leaves no `.hypothesis/` folder in the user's current directory."""
    from hypothesis import configuration
    # hypothesis has no getter for it; None (what we restore when unset) means "resolve again later".
    previous = getattr(configuration, "__hypothesis_home_directory", None)
    with tempfile.TemporaryDirectory(prefix="attnpat-hypothesis-") as home:
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(previous)
