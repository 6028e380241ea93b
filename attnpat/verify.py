"""`attnpat verify`: property-test a user's pattern -- its kernels against the float64 dense reference.

Hypothesis draws shapes (ragged lengths, q_len < kv_len, explicit q_offset), head counts with GQA/MQA,
dtypes, head dims and runtime inputs; each example runs the forward kernel (and, with backward, the
gradients) and compares with the dense reference the way FlexAttention's tests do: the kernel's error
against fp64 may be a small factor times the error of torch eager in the same dtype. On failure
hypothesis shrinks to the smallest failing case, printed as a Python snippet that reproduces it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .compiler.values import format_value

__all__ = ["verify", "VerifyResult", "FUDGE", "FLOOR", "eager_attention"]

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


def eager_attention(q, k, v, mask, scale=None):
    """Attention by torch eager in the inputs' own dtype: the error baseline a kernel is held to."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scale = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    # Rows with no allowed key are zeroed before the softmax, so their output and their gradients are 0
    # (a softmax over all -inf would give NaN, and a NaN baseline would make every comparison pass).
    empty = ~mask.any(-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype).masked_fill(empty, 0.0)
    return torch.matmul(probs, v)


def _error(a, ref):
    return (a.double() - ref).abs().max().item() if a.numel() else 0.0


def check_case(pattern, case: dict, *, backward: bool, device: str = "cpu") -> str | None:
    """Run one case; return None if it passes, else what went wrong."""
    from . import compile as compile_kernel
    from .reference import reference_attention
    g = torch.Generator().manual_seed(case["seed"])
    dtype = getattr(torch, case["dtype"])
    B, H, Hkv, N, M, D = (case[x] for x in ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim"))
    q = torch.randn(B, H, N, D, generator=g).to(dtype).to(device)
    k = torch.randn(B, Hkv, M, D, generator=g).to(dtype).to(device)
    v = torch.randn(B, Hkv, M, D, generator=g).to(dtype).to(device)
    inputs = {n: torch.tensor(rows, dtype=torch.int64) for n, rows in case["inputs"].items()}
    inputs = {n: (t[0] if t.shape[0] == 1 else t) for n, t in inputs.items()}
    offset = case["q_offset"]
    scale = 1.0 / math.sqrt(D)
    kernel = compile_kernel(pattern, block_m=case["block_m"], block_n=case["block_n"])
    if backward:
        q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    out = kernel(q, k, v, q_offset=offset, **inputs)
    q64, k64, v64 = (t.detach().double().requires_grad_(backward) for t in (q, k, v))
    ref = reference_attention(q64, k64, v64, pattern, q_offset=offset, **inputs)
    mask = pattern.dense_mask(N, M, batch=B, heads=H, q_offset=offset, **inputs).to(q.device)
    eager = eager_attention(q.detach(), k.detach(), v.detach(), mask, scale)
    if not torch.isfinite(out).all():
        return "the output has NaN or inf"
    err, base = _error(out.detach(), ref.detach()), _error(eager, ref.detach())
    if err > max(FUDGE * base, FLOOR[dtype]):
        return f"forward error {err:.3g} > {FUDGE} x eager {dtype} error {base:.3g} (floor {FLOOR[dtype]:.1g})"
    if not backward:
        return None
    do = torch.randn(out.shape, generator=g).to(dtype).to(device)
    out.backward(do)
    ref.backward(do.double())
    e_q, e_k, e_v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    eager_attention(e_q, e_k, e_v, mask, scale).backward(do)
    for name, got, want, base_t in (("dq", q.grad, q64.grad, e_q.grad), ("dk", k.grad, k64.grad, e_k.grad),
                                    ("dv", v.grad, v64.grad, e_v.grad)):
        if got is None or not torch.isfinite(got).all():
            return f"{name} is missing or not finite"
        err, base = _error(got, want), _error(base_t, want)
        if err > max(FUDGE * base, GRAD_FLOOR[dtype]):
            return f"{name} error {err:.3g} > {FUDGE} x eager {dtype} error {base:.3g}"
    return None


def _python_value(value: object) -> str:
    """A parameter value as Python source for attnpat.load (sets and lists as Python literals)."""
    return "set()" if value == frozenset() else format_value(value)


def _snippet(spec: str, params: dict, case: dict, backward: bool) -> str:
    args = "".join(f", {k}={_python_value(v)}" for k, v in params.items())
    inputs = "".join(f", {n}=torch.tensor({rows if len(rows) > 1 else rows[0]})"
                     for n, rows in case["inputs"].items())
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


def verify(pattern, *, spec: str, examples: int = 25, backward: bool = True, device: str = "cpu",
           max_len: int = 96, seed: int | None = None) -> VerifyResult:
    """Property-test `pattern`'s kernels against the dense reference.

    Args:
        pattern: the Pattern to test (its parameters bound).
        spec: how the user named it (for the reproducer snippet).
        examples: how many cases hypothesis draws.
        backward: also check dq, dk, dv.
        device: 'cpu' (Triton's interpreter) or 'cuda'.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    inputs_decl = dict(pattern.inputs)

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
                "seed": draw(st.integers(0, 2**16)), "inputs": inputs}

    failures: list = []
    count = [0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
              **({"seed": seed} if seed is not None else {}))
    @given(cases())
    def prop(case):
        count[0] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem = check_case(pattern, case, backward=backward, device=device)
        if problem is not None:
            failures.append((case, problem))
            raise AssertionError(problem)

    try:
        prop()
    except AssertionError:
        case, problem = failures[-1]      # hypothesis re-runs the shrunk case last
        return VerifyResult(False, count[0], problem, _snippet(spec, pattern.params, case, backward))
    return VerifyResult(True, count[0])
