"""The lowering of a compiled value: which IR each (batch, head) pair lowers, and the block mask of one
shape from CPU input tables. What `Pattern.lowering` and the runtime's closed-form path share, so the
runtime needs the compiled value only (compiler/pipeline.Compiled), never the front-end Pattern."""

from __future__ import annotations

import functools

import numpy as np

from .blockmask import BlockMask, lower

__all__ = ["variants", "lower_compiled"]


@functools.lru_cache(maxsize=64)
def _variants(compiled, heads: int, batch: int):
    # each substitution of h or b runs the simplifier, which costs far more than lowering a small mask:
    # memoised per (compiled value, heads, batch); a few shapes per pattern are typical
    from ..semantics import fold
    from ..simplify import normalize, to_ir, uses
    expr = compiled.checked.expr
    use_h, use_b = uses(expr, "h"), uses(expr, "b")
    found: list = []
    index: dict = {}
    assignment = np.zeros((batch, heads, 2), np.int64)
    for b in range(batch):
        for h in range(heads):
            env = {}
            if use_h:
                env["h"] = h
            if use_b:
                env["b"] = b
            key = tuple(sorted(env.items()))
            if key not in index:
                ir = compiled.canonical.ir if not env else normalize(to_ir(fold(expr, env)))
                if ir not in found:
                    found.append(ir)
                index[key] = found.index(ir)
            assignment[b, h, 0] = index[key]
    assignment.setflags(write=False)
    return tuple(found), assignment


def variants(compiled, heads: int, batch: int):
    """(distinct IRs over (b, h) after substituting the variables the pattern reads, int [B, H, 2]
    assignment whose [..., 0] indexes the IRs); the assignment is a fresh, writable copy."""
    found, assignment = _variants(compiled, heads, batch)
    return list(found), assignment.copy()


def lower_compiled(compiled, q_len: int, kv_len: int, *, block_q: int, block_k: int, heads: int, batch: int,
                   q_start: int, tables: dict[str, np.ndarray]) -> tuple[BlockMask, list]:
    """The closed-form block mask of a compiled pattern at one shape, from its runtime inputs as int64
    numpy arrays [B' (1 or batch), length] by name; also, per stored variant, (ir, {input: (axis, values)}).
    """
    axes = {d.name: d.axis for d in compiled.checked.inputs}
    per_batch = [{n: (axes[n], t[min(b, t.shape[0] - 1)]) for n, t in tables.items()}
                 for b in range(batch)] if tables else [{}]
    irs, assignment = variants(compiled, heads, batch)
    if any(t.shape[0] > 1 for t in tables.values()):
        assignment[:, :, 1] = np.arange(batch)[:, None]
    bm = lower(irs, assignment, q_len, kv_len, block_q=block_q, block_k=block_k, q_start=q_start,
               inputs_per_batch=per_batch)
    sources = [None] * bm.num_variants
    for b in range(batch):
        for h in range(heads):
            v = int(bm.variant[b, h])
            if sources[v] is None:
                sources[v] = (irs[int(assignment[b, h, 0])], per_batch[int(assignment[b, h, 1])])
    return bm, sources
