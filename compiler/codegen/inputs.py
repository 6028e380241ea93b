"""Runtime inputs in generated code: their names, the arguments that carry them, and the one emitter of their
loads.

Input i (in name order) is the kernel argument pair ``In{i}, stride_in{i}`` (signature.input_names); its
value at the tile's queries is ``in{i}_q`` and at its keys ``in{i}_k``. A kernel reads one side once per
program and the other per tile: the forward and dQ kernels hold a query block (q side once, k side per key
tile), the dK/dV kernel a key block (k side once, q side per query tile).
"""

from __future__ import annotations

from .. import nodes as N
from ..ir import IR, And, Opaque, Or, to_text
from .signature import input_names
from .template import fill

__all__ = ["loads", "tile_args", "predicate_args", "renamed_text"]

# A k-axis input holds one value per key position (read at absolute positions); a q-axis input one value
# per query row, never read at k (the checker forbids it); a b-axis input one value per sequence: one scalar
# load per program, at the batch index, passed to the tiles as it is (the predicate reads it as in{i}_q).
_LOADS = {
    ("b", "held"): "in${i}_${side} = tl.load(${base})   # per sequence: one value per program",
    ("b", "tile"): "in${i}_${side} = in${i}_${held}",
    ("k", "q"): "in${i}_q = tl.load(${base} + q_pos, mask=m_valid & (q_pos >= 0) & (q_pos < ${length}), other=0)",
    ("q", "q"): "in${i}_q = tl.load(${base} + offs_m, mask=m_valid, other=0)",
    ("k", "k"): "in${i}_k = tl.load(${base} + k_pos, mask=k_valid, other=0)",
    ("q", "k"): "in${i}_k = k_pos   # a per-query input: never read at k",
}


def loads(inputs: tuple[tuple[str, str], ...], side: str, held: str | None = None, length: str = "KV_LEN") -> str:
    """The statements that read every input at the tile's queries (`side` 'q': needs q_pos, offs_m,
    m_valid) or keys ('k': needs k_pos, k_valid). `held`: the side the kernel holds ('q' for the forward and
    dQ kernels, 'k' for dK/dV); loads of the held side run once per program, the other side's per tile.
    `length`: the int[k] inputs' length as code (a query past it reads 0)."""
    lines = []
    for i, (_, axis) in enumerate(inputs):
        ptr, stride = input_names(i)
        if axis == "b":
            held = held or side
            code, extra = (_LOADS["b", "held"], {"side": side}) if side == held else \
                (_LOADS["b", "tile"], {"side": side, "held": held})
        else:
            code, extra = _LOADS[axis, side], {}
        base = {"base": f"{ptr} + off_b * {stride}"} if "${base}" in code else {}
        lines.append(fill(code, i=i, **base, **extra, **({"length": length} if "${length}" in code else {})))
    return "\n".join(lines)


def tile_args(n: int, held: str) -> str:
    """What a tile function receives per input: the side its kernel holds (`held`: 'q' or 'k') and the
    pointer to read the other side from ('in0_q, In0, stride_in0, ...'); '' without inputs."""
    return " ".join(f"in{i}_{held}, {', '.join(input_names(i))}," for i in range(n))


def predicate_args(n: int) -> str:
    """The predicate's input arguments: 'in0_q, in0_k, in1_q, in1_k' ('' without inputs)."""
    return ", ".join(f"in{i}_q, in{i}_k" for i in range(n))


def renamed_text(ir: IR, inputs: tuple[tuple[str, str], ...]) -> str:
    """The canonical mask's text with runtime inputs under their generated names (in0, in1, ...), for the
    module's docstring: no user identifier reaches the generated code."""
    names = {name: f"in{i}" for i, (name, _) in enumerate(inputs)}

    def rename(e):
        if isinstance(e, N.Name):
            return N.Name(names.get(e.id, e.id), e.span)
        return N.map_children(e, rename)

    def rename_ir(node):
        if isinstance(node, (And, Or)):
            return type(node)(tuple(rename_ir(a) for a in node.args))
        return Opaque(rename(node.expr), node.span) if isinstance(node, Opaque) else node

    return to_text(rename_ir(ir))
