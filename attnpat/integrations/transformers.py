"""attnpat as a Hugging Face transformers attention implementation.

``register()`` once, then ``attn_implementation="attnpat"`` (or ``model.set_attn_implementation("attnpat")``).
The mask function builds no dense mask: it returns an ``HfMask`` holding the 2-D padding mask and the
offsets, shared by every layer of one mask type; each layer's pattern comes from what the model passes
(``sliding_window``, ``is_causal``, ``softcap``, ``s_aux``, ``scaling``) and the config (``layer_types``,
``attention_chunk_size``). Padding, packed documents and Llama 4's chunks all become one ``doc`` input
(docs/model.md, "Hugging Face transformers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ArgumentError, PatternError
from ..pattern import Pattern, load, parse

__all__ = ["register", "HfMask", "layer_pattern"]

_OVERRIDES: dict[str, object] = {}   # registered name -> a dict {layer type: Pattern} or a callable
_PATTERNS: dict[tuple, Pattern] = {}  # (causal, window, softcap, sinks, doc) or ("override", key) -> Pattern


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """What one attention layer asks for: causal or not, a sliding window, a chunk size, a logit softcap,
    sinks."""
    causal: bool = True
    window: int | None = None
    chunk: int | None = None
    softcap: float | None = None
    sinks: bool = False


def register(patterns=None, *, name: str = "attnpat") -> str:
    """Register `name` in transformers' AttentionInterface and AttentionMaskInterface; `patterns` overrides the
    pattern by layer type ({"sliding_attention": a Pattern or library spec}) or by layer (a callable
    (layer_idx, config) -> Pattern)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as e:   # the extra is optional: say how to get it
        raise ArgumentError("attnpat.integrations.transformers needs the transformers package: "
                            "pip install 'attnpat[hf]'") from e
    if patterns is not None and not callable(patterns) and not isinstance(patterns, dict):
        raise ArgumentError(f"'patterns' must be a dict of layer type -> Pattern or a callable (layer_idx, config) "
                            f"-> Pattern, got {type(patterns).__name__}")
    if isinstance(patterns, dict):
        patterns = {t: load(p) if isinstance(p, str) else p for t, p in patterns.items()}   # library specs too
        for layer_type, p in patterns.items():
            _check_override(p, f"patterns[{layer_type!r}]")
    _OVERRIDES[name] = patterns
    AttentionInterface.register(name, _make_attention(name))
    AttentionMaskInterface.register(name, _mask_function)
    return name


class HfMask:
    """The mask a model hands its layers: the 2-D padding mask over the keys, the query and key offsets and
    per-layer-kind document ids and prepared block masks, built once per forward; never a dense mask."""

    __slots__ = ("batch", "q_len", "kv_len", "q_offset", "kv_offset", "padding", "left_pad", "device", "_kinds")
    ndim = 4   # generate and the models look at attention_mask.ndim to tell a prepared mask from a 2-D one

    def __init__(self, batch, q_len, kv_len, q_offset, kv_offset, padding, left_pad, device):
        self.batch, self.q_len, self.kv_len = batch, q_len, kv_len
        self.q_offset, self.kv_offset = q_offset, kv_offset
        self.padding, self.left_pad, self.device = padding, left_pad, device
        self._kinds: dict = {}

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of the dense mask this object stands for, [batch, 1, q_len, kv_len]."""
        return (self.batch, 1, self.q_len, self.kv_len)

    def key_positions(self) -> torch.Tensor:
        """The absolute position of every key of this mask's layers, [kv_len]."""
        return torch.arange(self.kv_offset, self.kv_offset + self.kv_len, device=self.device)

    def doc_ids(self, chunk: int | None, causal: bool, packed: torch.Tensor | None, positions) -> torch.Tensor | None:
        """One id per key [batch, kv_len] that a query must share with a key to attend to it (-1: padding, an
        unfilled cache slot), or None when nothing needs one; cached by kind."""
        key = (chunk, causal, packed is not None)
        if key in self._kinds:
            return self._kinds[key]
        p = self.key_positions()
        end = self.q_offset + self.q_len
        needs = self.padding is not None or packed is not None or chunk is not None or \
            (not causal and self.kv_offset + self.kv_len > end)
        ids = None
        if needs:
            B, M = self.batch, self.kv_len
            ids = torch.zeros(B, M, dtype=torch.int64, device=self.device) if packed is None else \
                packed.to(self.device, torch.int64).expand(B, M)
            if chunk is not None:
                # Llama 4's chunks count from each sequence's first real token (HF: left padding excluded) or,
                # packed, from each document's position 0
                pos = positions.to(self.device).expand(B, M) if packed is not None else \
                    p[None, :] - self.left_pad[:, None]
                span = (self.kv_offset + M) // chunk + 2
                ids = ids * span + torch.div(pos, chunk, rounding_mode="floor").clamp(min=-1) + 1
            valid = (p < end)[None, :].expand(B, M)
            if self.padding is not None:
                valid = valid & self.padding[:, self.kv_offset:self.kv_offset + M]
            ids = torch.where(valid, ids, torch.full_like(ids, -1))
        self._kinds[key] = ids
        return ids

    def prepared(self, key, build: Callable):
        """A prepared block mask for `key`, built once by build() and shared by every layer of that kind."""
        k = ("block", key)
        if k not in self._kinds:
            self._kinds[k] = build()
        return self._kinds[k]

    def __repr__(self) -> str:
        return (f"HfMask(batch={self.batch}, q_len={self.q_len}, kv_len={self.kv_len}, q_offset={self.q_offset}, "
                f"kv_offset={self.kv_offset}, padding={'yes' if self.padding is not None else 'no'})")


def _mask_function(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                   attention_mask=None, device="cpu", **kwargs):
    """transformers' mask interface: an HfMask with the padding, offsets and left padding, no dense mask."""
    if isinstance(attention_mask, HfMask):   # generate prepared it already (static caches), the model asks again
        return attention_mask
    if not isinstance(q_offset, int):   # a static cache gives a tensor, to spare graph breaks elsewhere
        q_offset = int(q_offset)
    padding = left_pad = None
    if attention_mask is not None:
        padding = attention_mask.to(device=device, dtype=torch.bool)
        need = kv_offset + kv_length - padding.shape[-1]
        if need > 0:   # static caches: slots past the 2-D mask are unfilled, so masked
            padding = torch.nn.functional.pad(padding, (0, need))
        left_pad = (attention_mask.to(device=device, dtype=torch.int64).cumsum(-1) == 0).sum(-1)
        if not torch.compiler.is_compiling() and bool(padding[:, :q_offset + q_length].all()):
            padding = None   # nothing padded: the plain kernels (one check per forward, as SDPA's mask skip)
    else:
        left_pad = torch.zeros(batch_size, dtype=torch.int64, device=device)
    return HfMask(batch_size, q_length, kv_length, q_offset, kv_offset, padding, left_pad, device)


def _check_override(p, where: str) -> None:
    if not isinstance(p, Pattern):
        raise ArgumentError(f"{where} must be an attnpat Pattern (attnpat.load / attnpat.parse), got {p!r}")
    if p.inputs:
        raise ArgumentError(f"{where}: pattern {p.name!r} reads integer runtime inputs {sorted(p.inputs)}, which a "
                            f"model does not pass; padding and packed documents are added by the integration")
    extra = set(p.float_inputs) - {"sinks"}
    if extra:
        raise ArgumentError(f"{where}: pattern {p.name!r} reads float inputs {sorted(extra)}; only 'sinks' "
                            f"(the model's s_aux) can be given by a model")


def _spec_text(spec: LayerSpec, doc: bool) -> str:
    """The pattern text of a layer, from fixed pieces only: values enter as parameters."""
    params = (["window: int"] if spec.window is not None else []) + (["cap: float"] if spec.softcap is not None else [])
    lines = [f"pattern hf_layer({', '.join(params)}):"]
    if spec.window is not None:
        lines.append("    require window >= 1")
    if doc:
        lines.append("    input doc: int[k]")
    if spec.sinks:
        lines.append("    input sinks: float[h]")
    if spec.softcap is not None:
        lines.append("    score softcap(cap)")
    if spec.sinks:
        lines.append("    score sink(sinks[h])")
    conds = (["causal"] if spec.causal else []) + (["q - k < window"] if spec.window is not None else []) + \
        (["doc[q] == doc[k]"] if doc else [])
    lines.append(f"    mask {' and '.join(conds) or 'True'}")
    return "\n".join(lines) + "\n"


def layer_pattern(spec: LayerSpec, doc: bool = False) -> Pattern:
    """The Pattern of a layer spec, with the `doc` input when the call needs one (chunks live in `doc`); cached."""
    return _layer_pattern(spec.causal, spec.window, spec.softcap, spec.sinks, doc)


def _layer_pattern(causal, window, softcap, sinks, doc) -> Pattern:
    key = (causal, window, softcap, sinks, doc)
    if key not in _PATTERNS:
        params = {}
        if window is not None:
            params["window"] = int(window)
        if softcap is not None:
            params["cap"] = float(softcap)
        text = _spec_text(LayerSpec(causal, window, None, softcap, sinks), doc)
        _PATTERNS[key] = parse(text, name="<transformers layer>", **params)
    return _PATTERNS[key]


@torch._dynamo.assume_constant_result
def _layer_info(causal, window, softcap, sinks, doc) -> tuple:
    # under torch.compile this runs while Dynamo traces and its result is a constant of the graph, so the
    # parser and the compiler are never traced (as attnpat.attention's own pattern lookup)
    from ..runtime.kernel import _info_of
    return _info_of(_layer_pattern(causal, window, softcap, sinks, doc))


@torch._dynamo.assume_constant_result
def _user_info(pattern: Pattern, doc: bool) -> tuple:
    from ..runtime.kernel import _info_of
    return _info_of(_with_doc(pattern) if doc else pattern)


def _with_doc(p: Pattern) -> Pattern:
    """A user's pattern with the integration's `doc` condition added, composed from its canonical form."""
    key = ("override", p.key)
    if key not in _PATTERNS:
        lines = p.canonical.source("hf_user").rstrip("\n").split("\n")
        mask = lines[-1].strip()[len("mask "):]
        lines = [lines[0], "    input doc: int[k]", *lines[1:-1], f"    mask ({mask}) and doc[q] == doc[k]"]
        try:
            _PATTERNS[key] = parse("\n".join(lines) + "\n", name=f"<{p.name} with padding>")
        except PatternError as e:   # the canonical text is generated, so this is an attnpat bug
            raise PatternError(f"could not add padding to pattern {p.name!r}: {e}") from e
    return _PATTERNS[key]


def _layer_spec(module, config, sliding_window, is_causal, softcap, s_aux) -> tuple[LayerSpec, str | None]:
    layer_idx = getattr(module, "layer_idx", None)
    types = getattr(config, "layer_types", None)
    layer_type = types[layer_idx] if types is not None and layer_idx is not None and layer_idx < len(types) else None
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = causal and getattr(config, "is_causal", True)   # transformers' switch to bidirectional masks
    chunk = getattr(config, "attention_chunk_size", None) if layer_type == "chunked_attention" else None
    window = sliding_window
    if window is None and layer_type == "sliding_attention":
        window = getattr(config, "sliding_window", None)
    if layer_type is None:   # a config without layer_types (Mistral): the type its layers behave as
        layer_type = "full_attention" if window is None else "sliding_attention"
    return LayerSpec(bool(causal), None if window is None else int(window), chunk,
                     None if softcap is None else float(softcap), s_aux is not None), layer_type


def _override_for(name, module, config, layer_type):
    o = _OVERRIDES.get(name)
    if o is None:
        return None
    if isinstance(o, dict):
        return o.get(layer_type)
    p = o(getattr(module, "layer_idx", None), config)
    if p is not None:
        _check_override(p, "the pattern callable's result")
    return p


def _packed_ids(mask: HfMask | None, position_ids, kwargs):
    """Document ids [batch, len] of packed sequences from cu_seq_lens_k or position_ids (which restart at 0
    per document), as transformers detects them: only without padding and without a cache; found once per
    forward (cached on the mask)."""
    if mask is None:
        return _find_packed(position_ids, kwargs)
    if "packed" not in mask._kinds:
        plain = mask.padding is None and mask.q_offset == 0 and mask.kv_offset == 0 and mask.q_len == mask.kv_len
        mask._kinds["packed"] = _find_packed(position_ids, kwargs) if plain else None
    return mask._kinds["packed"]


def _find_packed(position_ids, kwargs):
    cu = kwargs.get("cu_seq_lens_k")
    if cu is not None:
        from ..packing import ids_from_cu_seqlens
        return ids_from_cu_seqlens(cu)[None, :]
    if position_ids is None:
        return None
    pos = position_ids if position_ids.dim() == 2 else position_ids[None]
    first = pos[:, :1] - 1
    ids = (torch.diff(pos, prepend=first, dim=-1) != 1).cumsum(-1)
    if not torch.compiler.is_compiling() and not bool(ids[:, -1].any()):
        return None   # one document per row: no doc input needed (under compile the ids stay, as data)
    return ids


def _make_attention(name: str):
    def attnpat_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                          s_aux=None, sliding_window=None, is_causal=None, **kwargs):
        """transformers' attention interface: attnpat.attention with the layer's pattern; [B, N, H, D] out."""
        from ..runtime.kernel import launch, prepared_mask
        if dropout and module.training:
            raise ArgumentError(f"attnpat has no attention dropout (the model asks for {dropout}): set the "
                                f"config's attention_dropout to 0, or call model.eval()")
        if kwargs.get("output_attentions"):
            raise ArgumentError("attnpat never forms the attention weights, so output_attentions=True cannot be "
                                "served: use attn_implementation='eager' for that call")
        if kwargs.get("position_bias") is not None or kwargs.get("head_mask") is not None:
            raise ArgumentError("attnpat's transformers integration takes no position_bias or head_mask: write "
                                "the bias as a pattern score term and pass it with register(patterns=...)")
        if attention_mask is not None and not isinstance(attention_mask, HfMask):
            raise ArgumentError(f"attnpat got a dense {type(attention_mask).__name__} attention mask: the model "
                                f"built it without attnpat's mask function (a custom 4-D mask); pass the 2-D "
                                f"padding mask instead")
        config = getattr(module, "config", None)
        spec, layer_type = _layer_spec(module, config, sliding_window, is_causal, softcap, s_aux)
        user = _override_for(name, module, config, layer_type)
        mask = attention_mask
        packed = _packed_ids(mask, kwargs.get("position_ids"), kwargs)
        chunk = None if user is not None else spec.chunk
        if chunk is not None and packed is None and mask is None:
            mask = _mask_function(query.shape[0], query.shape[2], key.shape[2], key.shape[2] - query.shape[2],
                                  0, device=query.device)
        ids = None if mask is None else mask.doc_ids(chunk, spec.causal, packed, kwargs.get("position_ids"))
        if ids is None and packed is not None:
            ids = packed.to(query.device).expand(query.shape[0], -1)
        doc = ids is not None
        if user is not None:
            info, wants_sinks = _user_info(user, doc), "sinks" in user.float_inputs
        else:
            info, wants_sinks = _layer_info(spec.causal, spec.window, spec.softcap, spec.sinks, doc), spec.sinks
        inputs = {}
        if wants_sinks:
            if s_aux is None:
                raise ArgumentError(f"pattern {user.name!r} reads 'sinks', and this layer passes no s_aux")
            inputs["sinks"] = s_aux
        q_offset = None if mask is None else mask.q_offset - mask.kv_offset
        block_mask = None
        if doc:
            if mask is None or torch.compiler.is_compiling():
                inputs["doc"] = ids   # inside the compiled op the mask is built from the inputs
            else:
                pattern = layer_pattern(spec, True) if user is None else _with_doc(user)
                B, N, M = query.shape[0], query.shape[2], key.shape[2]
                block_mask = mask.prepared(
                    (pattern.key, chunk, packed is not None, N, M),
                    lambda: prepared_mask(pattern, N, M, batch=B, q_offset=q_offset, device=query.device, doc=ids))
        out = launch(info, query, key, value, scale=scaling, q_offset=q_offset, block_mask=block_mask, **inputs)
        return out.transpose(1, 2).contiguous(), None

    return attnpat_attention
