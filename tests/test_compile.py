"""attnpat inside torch.compile, torch.func, autocast and activation checkpointing (issue 13).

The kernels run as the custom ops torch.ops.attnpat.fwd / bwd (runtime/op.py). Compiled results are compared
with the same model run eagerly (the eager path is checked against the float64 reference in test_kernel.py
and test_backward.py; one test here checks it again). Kernels run under Triton's interpreter: small shapes.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import attnpat
from attnpat import ArgumentError, InputError

pytestmark = pytest.mark.filterwarnings("ignore:attnpat. kernels run under Triton's interpreter")

DOCUMENT = attnpat.load("document")
WINDOW = attnpat.load("sliding_window", window=8)


@pytest.fixture(autouse=True, scope="module")
def _forget_module_patterns():
    """This module's patterns live as long as the session: take their kernels out of attention's per-Pattern
    cache at the end, so that tests of that cache see only their own patterns."""
    yield
    from attnpat.runtime import kernel
    for p in (DOCUMENT, WINDOW):
        kernel._compiled.pop(p, None)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Layer(torch.nn.Module):
    """A projection to q, k, v (GQA: 4 query heads, 2 key/value heads) and attnpat attention."""

    def __init__(self, pattern, dim=32, head_dim=16):
        super().__init__()
        self.pattern, self.head_dim = pattern, head_dim
        self.qkv = torch.nn.Linear(dim, 8 * head_dim)
        self.out = torch.nn.Linear(4 * head_dim, dim)

    def forward(self, x, **kw):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 8, self.head_dim).transpose(1, 2).split([4, 2, 2], dim=1)
        o = attnpat.attention(q, k, v, self.pattern, enable_gqa=True, **kw)
        return self.out(o.transpose(1, 2).reshape(B, N, -1))


class Model(torch.nn.Module):
    """Three layers: a library spec, a Pattern with parameters, and a pattern with a runtime input."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer("causal"), Layer(WINDOW), Layer(DOCUMENT)])

    def forward(self, x, doc):
        for i, layer in enumerate(self.layers):
            x = x + layer(x, **({"doc": doc} if i == 2 else {}))
        return x


def _run(model, x, doc):
    """Output and parameter gradients of one training step."""
    model.zero_grad()
    out = model(x, doc)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_fullgraph_compile_equals_eager_in_training_and_inference(backend):
    torch.manual_seed(0)
    model = Model()
    x, doc = torch.randn(2, 40, 32), torch.arange(40) // 11
    ref_out, ref_grads = _run(model, x, doc)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    out, grads = _run(compiled, x, doc)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, doc), ref_out, atol=1e-5, rtol=1e-5)


def test_zero_graph_breaks():
    kernel = attnpat.compile("causal")
    m = attnpat.block_mask(DOCUMENT, 40, 40, doc=torch.arange(40) // 7)

    def f(q, k, v, doc):
        a = kernel(q, k, v)                                                   # a Kernel object
        b, lse = attnpat.attention(q, k, v, WINDOW, return_lse=True, scale=0.5)
        c = attnpat.attention(q, k, v, "document", doc=doc)                  # a spec with a runtime input
        d = attnpat.attention(q, k, v, DOCUMENT, block_mask=m)               # a prepared mask
        return a + b + c + d + lse.unsqueeze(-1)

    q, k, v = (torch.randn(1, 2, 40, 16, requires_grad=True) for _ in range(3))
    report = torch._dynamo.explain(f)(q, k, v, torch.arange(40) // 5)
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1


def test_lengths_64_to_1024_compile_at_most_twice():
    compiles = []

    def counting(gm, example_inputs):
        compiles.append(len(example_inputs))
        return gm.forward

    def f(q, k, v, doc):
        return attnpat.attention(attnpat.attention(q, k, v, "causal"), k, v, DOCUMENT, doc=doc)

    cf = torch.compile(f, backend=counting, fullgraph=True)
    for N in (64, 100, 128, 256, 512, 1024):
        q, k, v = (torch.randn(1, 1, N, 16) for _ in range(3))
        doc = torch.arange(N) // 100
        out = cf(q, k, v, doc)
        if N <= 128:
            torch.testing.assert_close(out, f(q, k, v, doc))
    assert len(compiles) <= 2, compiles


def test_prepared_masks_and_runtime_inputs_compile_and_train():
    """A new mask each step (new documents) is new data, not a new graph; gradients equal eager ones."""
    compiles = []

    def counting(gm, example_inputs):
        compiles.append(1)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    def f(q, k, v, m):
        return attnpat.attention(q, k, v, DOCUMENT, block_mask=m)

    cf = torch.compile(f, backend=counting, fullgraph=True)
    for step, size in enumerate((9, 13, 5)):
        q, k, v = (torch.randn(2, 2, 40, 16, requires_grad=True) for _ in range(3))
        m = attnpat.block_mask(DOCUMENT, 40, 40, doc=torch.arange(40) // size)
        out = cf(q, k, v, m)
        out.sum().backward()
        got = [t.grad for t in (q, k, v)]
        ref = attnpat.reference_attention(*(t.detach().double().requires_grad_() for t in (q, k, v)), DOCUMENT,
                                          doc=torch.arange(40) // size)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    assert len(compiles) == 1
    for t in (q, k, v):
        t.grad = None
    f(q, k, v, m).sum().backward()
    for g, t in zip(got, (q, k, v)):
        torch.testing.assert_close(g, t.grad)


@pytest.mark.parametrize("backend", [None, "aot_eager"])
def test_a_call_builds_its_mask_once_for_forward_and_backward(backend):
    """Without a prepared mask, each call builds once and its backward reuses that mask, compiled or not; the
    held mask is released with the autograd graph."""
    from attnpat.runtime import blockmask, op

    def f(q, k, v, doc):
        return attnpat.attention(attnpat.attention(q, k, v, DOCUMENT, doc=doc), k, v, DOCUMENT, doc=doc)

    g = f if backend is None else torch.compile(f, backend=backend, fullgraph=True)
    q, k, v = (torch.randn(1, 2, 40, 16, requires_grad=True) for _ in range(3))
    doc = torch.arange(40) // 9
    g(q, k, v, doc)   # compiles
    before = dict(blockmask.BUILD_COUNTS)
    g(q, k, v, doc).sum().backward()
    builds = {key: blockmask.BUILD_COUNTS[key] - before[key] for key in before}
    assert builds["device"] + builds["closed_form"] == 2, builds
    out = g(q, k, v, doc)
    assert len(op._PENDING) == 2
    del out
    assert len(op._PENDING) == 0


def test_prepared_mask_mismatch_under_compile_is_an_argument_error():
    m = attnpat.block_mask(DOCUMENT, 40, 40, doc=torch.arange(40) // 9)
    cf = torch.compile(lambda q, k, v: attnpat.attention(q, k, v, DOCUMENT, block_mask=m), backend="aot_eager",
                       fullgraph=True)
    q, k, v = (torch.randn(1, 1, 32, 16) for _ in range(3))
    with pytest.raises(ArgumentError, match="built for q_len=40, kv_len=40, but q has 32 queries"):
        cf(q, k, v)


def test_opcheck():
    """torch.library.opcheck: schema, autograd registration, fake implementation and AOT dispatch."""
    from attnpat.runtime.kernel import _info_of
    name = _info_of(DOCUMENT)[0]
    q, k, v = (torch.randn(1, 2, 40, 16, requires_grad=True) for _ in range(3))
    doc = torch.arange(40) // 7
    basic = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.attnpat.fwd.default, (q, k, v, [doc], "doc", None, name, 0.25, None, True, False))
    # in training the third output is a fresh handle per call (a token, not data), so two runs differ there
    torch.library.opcheck(torch.ops.attnpat.fwd.default, (q, k, v, [doc], "doc", None, name, 0.25, None, True, True),
                          test_utils=basic)
    m = attnpat.block_mask(DOCUMENT, 40, 40, doc=doc)
    qd, kd, vd = (t.detach() for t in (q, k, v))
    torch.library.opcheck(torch.ops.attnpat.fwd.default, (qd, kd, vd, [], "", m.handle, name, 0.25, None, False, False))


# -- autocast ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True])
def test_autocast_casts_inputs_as_sdpa_does(compiled):
    q, k, v = (torch.randn(1, 2, 40, 16) for _ in range(3))

    def f(q, k, v):
        return attnpat.attention(q, k, v, "full"), F.scaled_dot_product_attention(q, k, v)

    run = torch.compile(f, backend="aot_eager", fullgraph=True) if compiled else f
    with torch.autocast("cpu"):
        ours, sdpa = run(q, k, v)
    assert ours.dtype == sdpa.dtype == torch.get_autocast_dtype("cpu") == torch.bfloat16
    torch.testing.assert_close(ours, attnpat.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), "full"))
    torch.testing.assert_close(ours.float(), sdpa.float(), atol=2e-2, rtol=2e-2)


# -- SDPA keywords and parameters -------------------------------------------------------------------------


def _qkv(B=1, H=2, N=40, M=40, Hkv=None):
    return (torch.randn(B, H, N, 16), torch.randn(B, Hkv or H, M, 16), torch.randn(B, Hkv or H, M, 16))


@pytest.mark.parametrize("keyword, value, message", [
    ("attn_mask", torch.ones(40, 40, dtype=torch.bool), "takes no 'attn_mask': the mask is the pattern"),
    ("is_causal", True, "pass the pattern 'causal' instead. When q_len != kv_len the alignment differs: attnpat "
                        "aligns queries bottom-right"),
    ("dropout_p", 0.1, "no attention dropout: leave 'dropout_p' out"),
    ("enable_gqa", "yes", "'enable_gqa' must be a bool"),
])
def test_sdpa_keywords_say_what_to_write_instead(keyword, value, message):
    with pytest.raises(ArgumentError, match=re.escape(message)):
        attnpat.attention(*_qkv(), "causal", **{keyword: value})


def test_sdpa_defaults_and_enable_gqa_are_accepted():
    q, k, v = _qkv(H=4, Hkv=2)
    plain = attnpat.attention(q, k, v, "causal")
    same = attnpat.attention(q, k, v, "causal", attn_mask=None, is_causal=False, dropout_p=0.0, enable_gqa=True)
    torch.testing.assert_close(plain, same)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(plain, ref, atol=1e-5, rtol=1e-5)


def test_is_causal_alignment_is_top_left_with_q_offset_0():
    """What the is_causal message says: SDPA's is_causal is attnpat's causal with q_offset=0 when q_len !=
    kv_len, while attnpat's default aligns the last query with the last key."""
    q, k, v = _qkv(N=24, M=40)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(attnpat.attention(q, k, v, "causal", q_offset=0), sdpa, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attnpat.attention(q, k, v, "causal"), sdpa, atol=1e-3)


def test_pattern_parameters_as_keywords_say_where_they_go():
    with pytest.raises(ArgumentError, match=r"'window' is a parameter of pattern 'sliding_window', not a runtime "
                                            r"input; .* attnpat.load\('sliding_window', window=16\)"):
        attnpat.attention(*_qkv(), "sliding_window", window=16)


def test_unknown_keywords_still_name_the_inputs():
    with pytest.raises(InputError, match="pattern 'document' has no runtime input 'docs'"):
        attnpat.attention(*_qkv(), "document", docs=torch.zeros(40, dtype=torch.long))


# -- torch.func and checkpointing ---------------------------------------------------------------------------


def test_vmap_over_a_batch_dimension():
    q, k, v = (torch.randn(3, 1, 2, 40, 16) for _ in range(3))
    doc = torch.arange(40) // 7
    out = torch.func.vmap(lambda a, b, c: attnpat.attention(a, b, c, DOCUMENT, doc=doc))(q, k, v)
    loop = torch.stack([attnpat.attention(a, b, c, DOCUMENT, doc=doc) for a, b, c in zip(q, k, v)])
    torch.testing.assert_close(out, loop)
    out, lse = torch.func.vmap(lambda a, b, c: attnpat.attention(a, b, c, "causal", return_lse=True),
                               in_dims=(2, None, None))(q, k[:, :, 0], v[:, :, 0])
    assert out.shape == (2, 3, 1, 40, 16) and lse.shape == (2, 3, 1, 40)
    torch.testing.assert_close(out[1], attnpat.attention(q[:, :, 1], k[:, :, 0], v[:, :, 0], "causal"))
    # per-sequence inputs [batch, length] are repeated for each mapped call
    q, k, v = (torch.randn(2, 2, 1, 40, 16) for _ in range(3))
    docs = torch.stack([torch.arange(40) // 7, torch.arange(40) // 9])
    out = torch.func.vmap(lambda a, b, c: attnpat.attention(a, b, c, DOCUMENT, doc=docs))(q, k, v)
    torch.testing.assert_close(out, torch.stack([attnpat.attention(a, b, c, DOCUMENT, doc=docs)
                                                 for a, b, c in zip(q, k, v)]))
    m = attnpat.block_mask(DOCUMENT, 40, 40, doc=docs)
    with pytest.raises(ArgumentError, match="vmap with a block mask built per batch element"):
        torch.func.vmap(lambda a, b, c: attnpat.attention(a, b, c, DOCUMENT, block_mask=m))(q, k, v)



def test_vmap_in_training_equals_a_loop():
    q, k, v = (torch.randn(2, 1, 2, 40, 16, requires_grad=True) for _ in range(3))
    torch.func.vmap(lambda a, b, c: attnpat.attention(a, b, c, "causal"))(q, k, v).pow(2).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.stack([attnpat.attention(a, b, c, "causal") for a, b, c in zip(q, k, v)]).pow(2).sum().backward()
    for g, t in zip(got, (q, k, v)):
        torch.testing.assert_close(g, t.grad)


def test_vmap_over_inputs_and_func_grad_are_clear_errors():
    q, k, v = _qkv()
    docs = torch.stack([torch.arange(40) // 7, torch.arange(40) // 9])
    with pytest.raises(ArgumentError, match="vmap over the runtime inputs of pattern 'document' is not supported"):
        torch.func.vmap(lambda d: attnpat.attention(q, k, v, DOCUMENT, doc=d))(docs)
    with pytest.raises(ArgumentError, match="does not support torch.func's grad, jvp"):
        torch.func.grad(lambda a: attnpat.attention(a, k, v, "causal").sum())(q)


@pytest.mark.parametrize("compiled", [False, True])
def test_activation_checkpointing(compiled):
    torch.manual_seed(1)
    model = Model()
    x, doc = torch.randn(1, 40, 32), torch.arange(40) // 11

    class Checkpointed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, doc):
            return checkpoint(self.inner, x, doc, use_reentrant=False)

    ref_out, ref_grads = _run(model, x, doc)
    wrapped = Checkpointed(model)
    out, grads = _run(torch.compile(wrapped, backend="aot_eager", fullgraph=True) if compiled else wrapped, x, doc)
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_eager_op_equals_the_reference():
    q, k, v = (torch.randn(2, 2, 40, 16, dtype=torch.float32, requires_grad=True) for _ in range(3))
    doc = torch.arange(40) // 6
    out = attnpat.attention(q, k, v, DOCUMENT, doc=doc, scale=1 / math.sqrt(8))
    out.sum().backward()
    d = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = attnpat.reference_attention(*d, DOCUMENT, doc=doc, scale=1 / math.sqrt(8))
    ref.sum().backward()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    for t, r in zip((q, k, v), d):
        torch.testing.assert_close(t.grad.double(), r.grad, atol=1e-5, rtol=0)
