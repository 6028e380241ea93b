"""The pattern's predicate as Triton code, printed from the IR through the semantics table.

Every operator and builtin is printed by its ``triton`` entry in compiler/semantics.py, which also names the
@triton.jit helpers it calls; the module emits only the helpers its code calls. The predicate is printed
once, over layout-free names (``qp``, ``kp``, ``in0_q``, ``in0_k``, ...): the predicate function's prologue
broadcasts them for its tile, queries down and keys across (forward, dQ) or transposed (dK/dV).
"""

from __future__ import annotations

from ...errors import PatternError
from .. import nodes as N
from .. import semantics as S
from ..hashing import HASH_M1, HASH_M2, MASK32
from ..ir import IR, And, Const, Lin, Mod, Opaque, Or
from .inputs import predicate_args
from .template import fill, render, template

__all__ = ["MAX_RUNS", "Predicate", "functions"]

MAX_RUNS = 64   # separate runs of a set that a predicate may test element-wise

_NAMES = {"q": "qp", "k": "kp", "h": "off_h", "b": "off_b"}


class Predicate:
    """IR -> a Triton expression over qp, kp, off_h, off_b and the inputs' in{i}_q / in{i}_k; `helpers`
    collects the @triton.jit helpers the printed code calls."""

    def __init__(self, inputs: tuple[tuple[str, str], ...]):
        self.slot = {name: i for i, (name, _) in enumerate(inputs)}
        self.helpers: set[str] = set()

    def _op(self, key: str, *codes: str) -> str:
        if key in ("and", "or") and len(codes) == 1:
            return codes[0]
        entry = S.OPERATORS[key]
        self.helpers.update(entry.helpers)
        return entry.triton(*codes)

    def ir(self, node: IR) -> str:
        """The code of an IR condition."""
        if isinstance(node, Const):
            return "True" if node.value else "False"
        if isinstance(node, Lin):
            f = _lin_code(node.cq, node.ck, 0)
            if node.lo is not None and node.lo == node.hi:
                return self._op("==", f, str(node.lo))
            bounds = [(">=", node.lo), ("<=", node.hi)]
            return self._op("and", *(self._op(op, f, str(c)) for op, c in bounds if c is not None))
        if isinstance(node, Mod):
            r = self._op("%", _lin_code(node.cq, node.ck, node.c0), str(node.m))
            return self._op("in", r, frozenset(node.residues))   # runs of residues: one range test each
        if isinstance(node, Opaque):
            return self.expr(node.expr)
        return self._op("and" if isinstance(node, And) else "or", *(self.ir(a) for a in node.args))

    def expr(self, e: N.Expr) -> str:
        """The code of a checked AST expression (inside an Opaque condition)."""
        if isinstance(e, N.Num):
            return str(int(e.value)) if e.value >= 0 else f"({int(e.value)})"
        if isinstance(e, N.BoolLit):
            return "True" if e.value else "False"
        if isinstance(e, N.Name):
            return _NAMES[e.id]
        if isinstance(e, N.Unary):
            return self._op("neg" if e.op == "-" else e.op, self.expr(e.operand))
        if isinstance(e, N.BinOp):
            return self._op(e.op, self.expr(e.left), self.expr(e.right))
        if isinstance(e, N.BoolOp):
            return self._op(e.op, *(self.expr(v) for v in e.values))
        if isinstance(e, N.Compare):
            operands = (e.left,) + e.comparators
            links = [self._link(a, op, b) for a, op, b in zip(operands, e.ops, operands[1:])]
            return links[0] if len(links) == 1 else self._op("and", *links)
        if isinstance(e, N.Call) and e.func in S.BUILTINS and S.BUILTINS[e.func].triton is not None:
            entry = S.BUILTINS[e.func]
            self.helpers.update(entry.helpers)
            return entry.triton(*(self.expr(a) for a in e.args))
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.ListLit):   # a per-head (or per-batch) constant: a chain of selects
                idx = self.expr(e.index)
                vals = [x.value for x in e.value.elts]
                out = str(vals[-1])
                for i in range(len(vals) - 2, -1, -1):
                    out = f"tl.where({idx} == {i}, {vals[i]}, {out})"
                return out
            # an int[b] input is one scalar per program, passed as in{i}_q (and in{i}_k)
            return f"in{self.slot[e.value.id]}_{'q' if e.index.id == 'b' else e.index.id}"
        raise PatternError(f"cannot generate kernel code for {type(e).__name__}")

    def _link(self, left: N.Expr, op: str, right: N.Expr) -> str:
        x = self.expr(left)
        if op not in ("in", "not in"):
            return self._op(op, x, self.expr(right))
        container = S.constant(right)
        if not isinstance(container, range):
            n = len(S.runs(container))
            if n > MAX_RUNS:
                raise PatternError(f"a set with {n} separate runs is too large to test in a kernel "
                                   f"(at most {MAX_RUNS}); pass it as a runtime input flag instead")
        return self._op(op, x, container)


def _lin_code(cq: int, ck: int, c0: int) -> str:
    """cq*qp + ck*kp + c0 as code, unparenthesised: it only stands as an operand of a comparison or an
    argument."""
    parts = []
    for coef, var in ((cq, "qp"), (ck, "kp")):
        if coef == 1:
            parts.append(f"+ {var}")
        elif coef == -1:
            parts.append(f"- {var}")
        elif coef:
            parts.append(f"{'+' if coef > 0 else '-'} {abs(coef)} * {var}")
    if c0:
        parts.append(f"{'+' if c0 > 0 else '-'} {abs(c0)}")
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:] if text.startswith("- ") else text


# (function name, what the tile is, broadcast of q-side values, broadcast of k-side values)
_LAYOUTS = {
    "rows": ("_predicate", "[BLOCK_M, BLOCK_N]: queries down, keys across", "[:, None]", "[None, :]"),
    "columns": ("_predicate_t", "[BLOCK_N, BLOCK_M]: keys down, queries across (transposed)", "[None, :]",
                "[:, None]"),
}

_VIEW = "${name} = ${name}${axis}"


def functions(ir: IR, inputs: tuple[tuple[str, str], ...], layouts: tuple[str, ...]) -> str:
    """The module's first functions: the helpers the predicate calls, then one predicate function per
    layout ('rows': [queries, keys] tiles; 'columns': transposed [keys, queries] tiles)."""
    printer = Predicate(inputs)
    pred = printer.ir(ir)
    params = predicate_args(len(inputs))
    out = []
    for layout in layouts:
        name, shape, q_axis, k_axis = _LAYOUTS[layout]
        views = [fill(_VIEW, name=f"in{i}_{side}", axis=q_axis if side == "q" else k_axis)
                 for i, (_, axis) in enumerate(inputs) if axis != "b" for side in "qk"]
        out.append(render("predicate", name=name, shape=shape, params=f", {params}" if params else "",
                          q_axis=q_axis, k_axis=k_axis, views="\n".join(views), pred=pred))
    used = {h for h in printer.helpers if f"{h}(" in pred}
    for h in reversed(S.HELPERS):   # helpers call helpers defined before them (_pymod calls _floordiv)
        if h in used:
            used.update(g for g in S.HELPERS[:S.HELPERS.index(h)] if f"{g}(" in template(h.lstrip("_")))
    helpers = [render(h.lstrip("_"), MASK=MASK32, M1=HASH_M1, M2=HASH_M2) if h == "_hash_step"
               else render(h.lstrip("_")) for h in S.HELPERS if h in used]
    return "\n\n\n".join(helpers + out)
