"""Stage codegen, forward: canonical IR -> the source of a pattern's forward kernel module.

The module (templates/forward.py.txt) holds a FlashAttention-2-style forward kernel, ``attn_fwd``, one
program per (query block, batch x head), specialised for one canonical pattern: the predicate (predicate.py)
is applied only on tiles that need it, a band plan computes its key blocks from linear bounds (bands.py), a
table plan walks the block mask's PARTIAL then FULL tiles, and runtime inputs are kernel arguments
(inputs.py), so new values never recompile anything. The tile is a separate @triton.jit function with a
compile-time MASKED flag, so FULL tiles carry no predicate code at all.

The source is built from the IR alone: numbers are printed from validated integers and every identifier is
generated (runtime inputs become ``in0``, ``in1``, ... in name order), so no user text reaches the code.
"""

from __future__ import annotations

from ..simplify import Canonical
from . import bands, inputs, scores, signature
from .plan import KernelPlan, plan
from .predicate import functions
from .template import fill, render

__all__ = ["generate"]

_BAND = "# -- the band: key blocks computed from the query block's bounds, no tables --\n${walk}"
_STATIC_STEP = "k_lo = kb * BLOCK_N\n${tile}"
# a tile's first and last key at absolute positions (k_lo, k_hi count rows from key row 0)
_KEYS = ("(KV_START + k_lo)", "(KV_START + k_hi)")


def _tile(n_inputs: int, masked: bool, floats: tuple[str, ...] = ()) -> str:
    return render("forward_tile", input_args=inputs.tile_args(n_inputs, "q"), score_args=scores.args(floats),
                  masked=masked)


def generate(canonical: Canonical, kplan: KernelPlan | None = None) -> str:
    """Return the source of the forward kernel module for a canonical pattern."""
    kplan = kplan or plan(canonical)
    n, fl, terms = len(kplan.inputs), kplan.float_inputs, canonical.scores
    if kplan.mode == "table":
        body = render("forward_table", partial=_tile(n, True, fl), full=_tile(n, False, fl))
    else:
        full = bands.full_test(canonical.ir, _KEYS)
        if isinstance(full, bool):
            step = fill(_STATIC_STEP, tile=_tile(n, not full, fl))
        else:
            step = render("forward_band", full=full, unmasked=_tile(n, False, fl), masked=_tile(n, True, fl))
        body = fill(_BAND, walk=bands.walk(bands.key_ranges(kplan, True), "BLOCK_N", "kb", step))
    pred_args = inputs.predicate_args(n)
    fns = functions(canonical.ir, kplan.inputs, ("rows",))
    score_fns = scores.functions(terms, fl, ("rows",), False, fns)
    return render(
        "forward", key=kplan.key, text=inputs.renamed_text(canonical.ir, kplan.inputs), mode=kplan.mode,
        functions=fns + "\n\n\n" + score_fns if score_fns else fns,
        score_params=scores.params(fl),
        score_apply=scores.apply(terms, fl, "rows", "qk", "q_pos", "KV_START + offs_n"),
        score_loads=scores.loads(fl), sink=scores.sink(terms, fl),
        input_params=inputs.tile_args(n, "q"), k_loads=inputs.loads(kplan.inputs, "k", "q"),
        predicate_args=f", {pred_args}" if pred_args else "",
        params=signature.forward(kplan).code(len("def attn_fwd(")),
        q_loads=inputs.loads(kplan.inputs, "q", length="IN_LEN"),
        body=body) + "\n"
