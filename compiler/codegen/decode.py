"""Stage codegen, decode: canonical IR -> the source of a pattern's split-KV decode kernel module.

The module (templates/decode.py.txt) holds ``attn_decode``, a kernel for short queries (1 to 16 rows per
head, as in token-by-token or speculative decoding). A prefill kernel gives such a call one query block per
head, so a GPU runs a handful of programs; the decode kernel instead

* puts the query heads of one KV group (GQA) in the rows of one program, so they share every K/V load;
* splits each row's non-empty key tiles evenly across NUM_SPLITS programs (split-KV), each writing a
  partial normalised output and log-sum-exp, which the launcher combines by log-sum-exp (runtime/decode.py);
* walks key POSITIONS: a band plan visits only its window's blocks (bands.py, the same derivation as the
  forward), a table plan the prepared mask's row; where a position is stored is a separate question, so the
  same kernel reads a plain cache (position p in slot p) or a KV cache's ring buffer (runtime/kvcache.py).

The predicate, the runtime-input loads and the signature are the forward's (predicate.py, inputs.py,
signature.decode); the source is built from the validated IR alone.
"""

from __future__ import annotations

from ...errors import PatternError
from ..simplify import Canonical
from . import bands, inputs, signature
from .plan import KernelPlan, plan
from .predicate import functions
from .template import fill, render

__all__ = ["generate", "supported"]

# how a split's tile index t becomes a key block: one family, or two walked as one list (band_loop2's order)
_PICK = {1: "kb = a0 + t",
         2: "kb = tl.where(t < n0, a0 + t, tl.where(t < n0 + n1, a1 + (t - n0), d1 + (t - n0 - n1)))"}
_COUNT = {1: "total = tl.maximum(b0 - a0 + 1, 0)", 2: "total = n0 + n1 + n2"}
_FULL_STEP = "if ${full}:\n    ${unmasked}\nelse:\n    ${masked}"


def supported(canonical: Canonical, kplan: KernelPlan) -> bool:
    """Whether the decode kernel can run this pattern: not yet with score terms (their float inputs)."""
    return canonical.scores is None and not kplan.float_inputs


def _tile(n_inputs: int, masked: bool) -> str:
    return render("decode_tile", input_args=inputs.tile_args(n_inputs, "q"), masked=masked)


def generate(canonical: Canonical, kplan: KernelPlan | None = None) -> str:
    """Return the source of the split-KV decode kernel module for a canonical pattern."""
    kplan = kplan or plan(canonical)
    if not supported(canonical, kplan):
        raise PatternError("the decode kernel does not support score terms yet; use the prefill kernel "
                           "(attnpat.attention)")
    n = len(kplan.inputs)
    if kplan.mode == "table":
        body = render("decode_table", partial=_tile(n, True), full=_tile(n, False))
    else:
        ranges = bands.key_ranges(kplan)
        full = bands.full_test(canonical.ir)
        if isinstance(full, bool):
            step = _tile(n, not full)
        else:
            step = fill(_FULL_STEP, full=full, unmasked=_tile(n, False), masked=_tile(n, True))
        body = render("decode_band", ranges=bands.block_ranges(ranges, "BLOCK_N"), count=_COUNT[len(ranges)],
                      pick=_PICK[len(ranges)], step=step)
    pred_args = inputs.predicate_args(n)
    return render(
        "decode", key=kplan.key, text=inputs.renamed_text(canonical.ir, kplan.inputs), mode=kplan.mode,
        functions=functions(canonical.ir, kplan.inputs, ("rows",)),
        input_params=inputs.tile_args(n, "q"), k_loads=inputs.loads(kplan.inputs, "k", "q"),
        predicate_args=f", {pred_args}" if pred_args else "",
        params=signature.decode(kplan).code(len("def attn_decode(")), q_loads=inputs.loads(kplan.inputs, "q"),
        body=body) + "\n"
