"""Hugging Face transformers models switched to attnpat with one line, checked against attn_implementation="eager".

Tiny random-weight models built from config objects (no downloads), fp32, under Triton's interpreter: prefill
logits on a left-padded batch, greedy generation with dynamic and static caches, packed sequences, one
training step's gradients, and the requests attnpat refuses.
"""

from __future__ import annotations

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnpat  # noqa: E402
from attnpat.integrations import transformers as hf  # noqa: E402

hf.register()

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
             initializer_range=0.2)   # 10x the default: peaked attention rows, so a wrong mask shows in the logits


def _config(kind: str):
    t = transformers
    if kind == "mistral":
        return t.MistralConfig(**SMALL, sliding_window=5)
    if kind == "gemma2":
        return t.Gemma2Config(**SMALL, sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=None,
                              query_pre_attn_scalar=16)
    if kind == "gemma3":
        return t.Gemma3TextConfig(**SMALL, sliding_window=4, query_pre_attn_scalar=16,
                                  layer_types=["sliding_attention", "full_attention"])
    if kind == "qwen2":
        return t.Qwen2Config(**SMALL)
    if kind == "gpt_oss":
        return t.GptOssConfig(**SMALL, sliding_window=4, num_local_experts=4, num_experts_per_tok=2)
    if kind == "llama4":
        return t.Llama4TextConfig(**SMALL, intermediate_size_mlp=64, attention_chunk_size=4, num_local_experts=2,
                                  no_rope_layers=[1, 0], interleave_moe_layer_step=2)
    raise AssertionError(kind)


_MODELS: dict = {}


def _model(kind: str):
    """One tiny model per kind (seeded), in eval mode, its attention implementation switched per call."""
    if kind not in _MODELS:
        torch.manual_seed(0)
        cfg = _config(kind)
        m = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
        # gpt-oss initializes its sinks with initializer_range: std 1 makes the sink term matter more
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("sinks"):
                    p.normal_(0.0, 1.0)
        _MODELS[kind] = m
    return _MODELS[kind]


def _batch(seed=1, n=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, :3] = 0   # left padding
    return ids, mask


def _logits(m, impl, ids, **kw):
    m.set_attn_implementation(impl)
    with torch.no_grad():
        return m(ids, **kw).logits


KINDS = ["mistral", "gemma2", "gemma3", "qwen2", "gpt_oss", "llama4"]


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_left_padded_matches_eager(kind):
    m = _model(kind)
    ids, mask = _batch(n=11)
    ref = _logits(m, "eager", ids, attention_mask=mask)
    out = _logits(m, "attnpat", ids, attention_mask=mask)
    real = mask.bool()   # padded query rows are not outputs of the model (eager averages junk there)
    assert torch.isfinite(out).all()
    assert (out - ref).abs()[real].max() < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_unpadded_matches_eager(kind):
    m = _model(kind)
    ids, _ = _batch(seed=2, n=13)
    ref = _logits(m, "eager", ids)
    out = _logits(m, "attnpat", ids)
    assert (out - ref).abs().max() < 1e-4


def _generate(m, impl, ids, mask, cache):
    m.set_attn_implementation(impl)
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    with torch.no_grad():
        return m.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, **kw)


@pytest.mark.parametrize("kind,cache", [("mistral", "dynamic"), ("mistral", "static"), ("gemma2", "static"),
                                        ("gemma3", "dynamic"), ("gpt_oss", "dynamic"), ("gpt_oss", "static"),
                                        ("llama4", "dynamic"), ("llama4", "static")])
def test_greedy_generate_matches_eager(kind, cache):
    m = _model(kind)
    ids, mask = _batch(seed=3, n=7)
    ref = _generate(m, "eager", ids, mask, cache)
    out = _generate(m, "attnpat", ids, mask, cache)
    assert out.shape == (2, 15)
    assert torch.equal(out, ref)


def test_packed_sequences_match_separate_runs():
    # Qwen2 with three documents packed in one row (position_ids restart at 0): each document's logits are
    # those of the document run alone, and eager (which detects the packing the same way) agrees
    m = _model("qwen2")
    lengths = [5, 3, 6]
    ids = torch.randint(1, 64, (1, sum(lengths)), generator=torch.Generator().manual_seed(4))
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    # without a cache: transformers looks for packing only then (attnpat also on a cache's first step)
    out = _logits(m, "attnpat", ids, position_ids=pos, use_cache=False)
    ref = _logits(m, "eager", ids, position_ids=pos, use_cache=False)
    assert (out - ref).abs().max() < 1e-4
    start = 0
    for n in lengths:
        alone = _logits(m, "eager", ids[:, start:start + n])
        assert (out[:, start:start + n] - alone).abs().max() < 1e-4
        start += n
    # cu_seq_lens (flash-attention's keywords) instead: positions run on, which RoPE does not see inside a
    # document (it is relative), so each document is still the document alone
    cu = torch.tensor([0, 5, 8, 14], dtype=torch.int32)
    by_cu = _logits(m, "attnpat", ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=6, max_length_k=6,
                    use_cache=False)
    assert (by_cu - out).abs().max() < 1e-4
    cached = _logits(m, "attnpat", ids, position_ids=pos)
    assert (cached - out).abs().max() < 1e-5
    plain = _logits(m, "attnpat", ids)   # without position_ids: one sequence, so the documents mix
    assert (plain - out).abs().max() > 1e-3


def _grads(m, impl, ids, mask):
    m.set_attn_implementation(impl)
    m.train()
    m.zero_grad()
    # a label is predicted from the previous position, so the first real token of a left-padded row is
    # predicted from padding (whose logits differ by design) and is left out too
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    m(ids, attention_mask=mask, labels=labels).loss.backward()
    m.eval()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["mistral", "gemma2", "gpt_oss"])
def test_training_step_gradients_match_eager(kind):
    m = _model(kind)
    ids, mask = _batch(seed=5, n=9)
    ref = _grads(m, "eager", ids, mask)
    out = _grads(m, "attnpat", ids, mask)
    assert ref.keys() == out.keys()
    if kind == "gpt_oss":
        assert any(n.endswith("sinks") for n in out)   # the sinks train through attnpat
    for n in ref:
        scale = ref[n].abs().max().clamp(min=1e-6)
        assert (out[n] - ref[n]).abs().max() / scale < 1e-4, n


def test_mask_is_shared_and_never_dense():
    m = _model("gemma2")
    ids, mask = _batch(n=6)
    seen = []
    orig = hf._mask_function

    def spy(*a, **kw):
        r = orig(*a, **kw)
        seen.append(r)
        return r

    transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["attnpat"] = spy
    try:
        _logits(m, "attnpat", ids, attention_mask=mask)
    finally:
        hf.register()
    assert len(seen) == 2 and all(isinstance(s, hf.HfMask) for s in seen)   # one per layer type, per forward
    assert all(s.ndim == 4 and s.shape == (2, 1, 6, 6) for s in seen)
    assert all(any(isinstance(v, attnpat.runtime.blockmask.PreparedMask) for v in s._kinds.values()) for s in seen)


def test_user_patterns_per_layer_type_and_callable():
    m = _model("mistral")
    ids, mask = _batch(seed=6, n=10)
    ref = _logits(m, "eager", ids, attention_mask=mask)
    # the same window written by the user, combined with the padding by the integration
    # Mistral's config has no layer_types: its windowed layers count as "sliding_attention"
    hf.register({"sliding_attention": attnpat.load("sliding_window", window=5)}, name="attnpat_user")
    try:
        out = _logits(m, "attnpat_user", ids, attention_mask=mask)
        assert (out - ref).abs()[mask.bool()].max() < 1e-4
        hf.register({"sliding_attention": "causal"}, name="attnpat_user")   # a library spec
        full = _logits(m, "attnpat_user", ids, attention_mask=mask)
        assert (full - ref).abs()[mask.bool()].max() > 1e-3   # plain causal: not the model's window
        window, asked = attnpat.load("sliding_window", window=5), []

        def per_layer(layer_idx, config):
            asked.append(layer_idx)
            return window

        hf.register(per_layer, name="attnpat_user")
        out = _logits(m, "attnpat_user", ids, attention_mask=mask)
        assert (out - ref).abs()[mask.bool()].max() < 1e-4 and sorted(set(asked)) == [0, 1]
        with pytest.raises(attnpat.ArgumentError, match="integer runtime inputs"):
            hf.register({"sliding_attention": attnpat.load("document")}, name="attnpat_user")
    finally:
        m.set_attn_implementation("eager")


def test_unsupported_requests_raise():
    cfg = _config("mistral")
    cfg.attention_dropout = 0.1
    m = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="attnpat")
    ids, _ = _batch(n=5)
    m.train()
    with pytest.raises(attnpat.ArgumentError, match="dropout"):
        m(ids)
    m.eval()
    assert torch.isfinite(m(ids).logits).all()   # dropout is off in eval mode
    with pytest.raises(attnpat.ArgumentError, match="output_attentions"):
        m(ids, output_attentions=True)
    dense = torch.zeros(2, 1, 5, 5)
    with pytest.raises(attnpat.ArgumentError, match="dense"):
        m(ids, attention_mask=dense)


def test_torch_compile_fullgraph_prefill_and_training():
    # the whole model in one graph (fullgraph=True: any graph break is an error): gpt-oss's window, sinks and
    # left padding; Dynamo never traces the pattern compiler (the layer's kernel is a constant of the graph)
    m = _model("gpt_oss")
    ids, mask = _batch(seed=7, n=9)
    ref = _logits(m, "eager", ids, attention_mask=mask, use_cache=False)
    ref_grads = _grads(m, "eager", ids, mask)
    m.set_attn_implementation("attnpat")
    torch._dynamo.reset()
    try:
        c = torch.compile(m, fullgraph=True, backend="eager")
        with torch.no_grad():
            out = c(ids, attention_mask=mask, use_cache=False).logits
        assert (out - ref).abs()[mask.bool()].max() < 1e-4
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
        m.train()
        m.zero_grad()
        c(ids, attention_mask=mask, labels=labels).loss.backward()
    finally:
        m.eval()
        torch._dynamo.reset()
    for n, p in m.named_parameters():
        if n in ref_grads:
            assert (p.grad - ref_grads[n]).abs().max() / ref_grads[n].abs().max().clamp(min=1e-6) < 1e-4, n


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_torch_compile_fullgraph_generate(cache):
    # generate calling a fullgraph-compiled forward: the growing cache length reaches attnpat as a SymInt
    # query offset, so one decode graph serves every step
    m = _model("mistral")
    ids, mask = _batch(seed=8, n=6)
    ref = _generate(m, "eager", ids, mask, cache)
    forward = m.forward
    torch._dynamo.reset()
    m.forward = torch.compile(forward, fullgraph=True, backend="eager")
    try:
        out = _generate(m, "attnpat", ids, mask, cache)
    finally:
        m.forward = forward
        torch._dynamo.reset()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("kind,expected", [
    # (causal, window, softcap, sinks, doc): what each model's layers asked for, on a left-padded batch
    ("gemma2", {(True, 4, 2.0, False, True), (True, None, 2.0, False, True)}),
    ("gpt_oss", {(True, 4, None, True, True), (True, None, None, True, True)}),
    ("llama4", {(True, None, None, False, True)}),   # its chunks are in the doc ids
    ("mistral", {(True, 5, None, False, True)}),
])
def test_layer_patterns_follow_the_model(kind, expected):
    m = _model(kind)
    ids, mask = _batch(n=5)
    hf._PATTERNS.clear()
    _logits(m, "attnpat", ids, attention_mask=mask)
    assert set(hf._PATTERNS) == expected
    text = hf._spec_text(hf.LayerSpec(window=4, softcap=2.0, sinks=True), True)
    assert "score softcap(cap)" in text and "score sink(sinks[h])" in text and "q - k < window" in text


def test_bidirectional_config_matches_eager():
    # config.is_causal=False: transformers' switch of a decoder to bidirectional masks (padding still applies)
    torch.manual_seed(0)
    cfg = _config("qwen2")
    cfg.is_causal = False
    m = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    ids, mask = _batch(n=8)
    ref = _logits(m, "eager", ids, attention_mask=mask, use_cache=False)
    out = _logits(m, "attnpat", ids, attention_mask=mask, use_cache=False)
    assert (out - ref).abs()[mask.bool()].max() < 1e-4
    causal = _logits(_model("qwen2"), "eager", ids, attention_mask=mask, use_cache=False)
    assert (out - causal).abs()[mask.bool()].max() > 1e-3   # the same seed's causal model differs


def test_register_errors(monkeypatch):
    with pytest.raises(attnpat.ArgumentError, match="dict of layer type"):
        hf.register(42, name="attnpat_bad")
    with pytest.raises(attnpat.ArgumentError, match="must be an attnpat Pattern"):
        hf.register({"full_attention": 42}, name="attnpat_bad")
    monkeypatch.setitem(sys.modules, "transformers", None)   # as if the extra were not installed
    with pytest.raises(attnpat.ArgumentError, match=r"pip install 'attnpat\[hf\]'"):
        hf.register(name="attnpat_bad")
