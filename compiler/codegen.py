"""Stage 5 -- codegen: canonical IR -> the Python source of a Triton attention kernel module.

The generated module holds a FlashAttention-2-style forward kernel (online softmax in base 2, fp32
accumulators) specialised for one canonical pattern:

* the pattern's predicate becomes a Triton expression over the absolute query positions ``q_pos`` and key
  positions ``k_pos`` of a tile; it is applied only on tiles that need it;
* **band plan** -- when every allowed key of a query block lies in at most two intervals given by linear
  bounds (causal, sliding and symmetric windows, dilation, sinks + window, prefix-LM), the kernel computes
  its key-block ranges arithmetically, with no block tables, and decides per tile whether it is FULL (no
  predicate) or needs the predicate;
* **table plan** -- otherwise each query block walks the compressed rows of a :class:`BlockMask`: first its
  PARTIAL tiles with the predicate, then its FULL tiles without;
* runtime inputs are kernel arguments read per tile, so new values never recompile anything.

The source is built from the IR alone: numbers are printed from validated integers and every identifier is
generated (runtime inputs become ``in0``, ``in1``, ... in name order), so no user text reaches the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PatternError
from . import nodes as N
from .hashing import HASH_INIT, HASH_M1, HASH_M2, MASK32
from .ir import IR, And, Const, Lin, Mod, Opaque, Or, to_text
from .simplify import Canonical

__all__ = ["KernelPlan", "plan", "generate", "key_families", "bound_code", "MAX_RUNS"]

MAX_RUNS = 64   # separate runs of a set that a predicate may test element-wise


@dataclass(frozen=True, slots=True)
class KernelPlan:
    """What the code generator decided for one canonical pattern.

    Attributes:
        key: the canonical key.
        text: the canonical mask text (printed in the generated module's docstring).
        mode: 'band' (arithmetic loop bounds) or 'table' (block-mask tables).
        inputs: runtime inputs as (name, axis) in kernel argument order (in0, in1, ...).
        families: for 'band', the key intervals of a query block [q_lo, q_hi]: tuples of (lower bounds,
            upper bounds) as code.
        bounds: the same intervals as data (see :func:`key_families`), which the backward inverts.
        uses_h, uses_b: whether the predicate reads the head or batch index.
    """

    key: str
    text: str
    mode: str
    inputs: tuple[tuple[str, str], ...]
    families: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    bounds: tuple[tuple[tuple[Bound, ...], tuple[Bound, ...]], ...]
    uses_h: bool
    uses_b: bool

    def __str__(self) -> str:
        return f"KernelPlan({self.mode}, {self.text})"


# -- planning -------------------------------------------------------------------------------------


# A bound on k: ("q", c) is q + c, ("c", c) the constant c.
Bound = tuple[str, int]


def key_families(node: IR):
    """A query's allowed keys as intervals max(lower bounds) <= k <= min(upper bounds), or None when some
    alternative does not bound k linearly.

    Returns a list of families (lower bounds, upper bounds), each bound a :data:`Bound`. The forward renders
    them per query block (q = q_lo for lower bounds, q = q_hi for upper ones); the backward inverts them.
    """
    if isinstance(node, Lin):
        if node.form == (1, -1):    # lo <= q - k <= hi  ->  q - hi <= k <= q - lo
            los = () if node.hi is None else (("q", -node.hi),)
            his = () if node.lo is None else (("q", -node.lo),)
            return [(los, his)]
        if node.form == (0, 1):
            return [(() if node.lo is None else (("c", node.lo),), () if node.hi is None else (("c", node.hi),))]
        return None
    if isinstance(node, Or):
        out = []
        for a in node.args:
            f = key_families(a)
            if f is None:
                return None
            out += f
        return out
    if isinstance(node, And):
        acc = [((), ())]
        bounded = False
        for a in node.args:
            f = key_families(a)
            if f is None:
                continue   # a condition that does not bound k: the predicate handles it
            bounded = True
            acc = [(l1 + l2, h1 + h2) for l1, h1 in acc for l2, h2 in f]
        return acc if bounded else None
    return None


def bound_code(bound: Bound, q_var: str) -> str:
    """A bound as code, with the query position named `q_var`."""
    kind, c = bound
    if kind == "c":
        return str(c)
    return f"{q_var} - {-c}" if c <= 0 else f"{q_var} + {c}"


def _family_code(family) -> tuple[tuple[str, ...], tuple[str, ...]]:
    los, his = family
    return tuple(bound_code(b, "q_lo") for b in los), tuple(bound_code(b, "q_hi") for b in his)


def _has_opaque(node: IR) -> bool:
    if isinstance(node, (And, Or)):
        return any(_has_opaque(a) for a in node.args)
    return isinstance(node, Opaque)


def _reads_inputs(node: IR) -> bool:
    if isinstance(node, (And, Or)):
        return any(_reads_inputs(a) for a in node.args)
    return isinstance(node, Opaque) and _ast_reads(node.expr, lambda e: isinstance(e, N.Subscript)
                                                     and isinstance(e.value, N.Name))


def _ast_reads(e, pred) -> bool:
    return any(pred(x) for x in N.walk(e))


def _ir_uses(node: IR, name: str) -> bool:
    if isinstance(node, (And, Or)):
        return any(_ir_uses(a, name) for a in node.args)
    return isinstance(node, Opaque) and _ast_reads(node.expr, lambda e: isinstance(e, N.Name) and e.id == name)


def plan(canonical: Canonical) -> KernelPlan:
    """Choose the kernel's strategy for a canonical pattern."""
    ir = canonical.ir
    fams = key_families(ir)
    # Opaque conditions (per-head bounds, chunks, runtime inputs) may cut the support far below the
    # linear band, which only a block mask sees: those patterns walk tables.
    band = fams is not None and 1 <= len(fams) <= 2 and all(lo or hi for lo, hi in fams) and not _has_opaque(ir)
    if ir == Const(True):   # full attention: every key block, no tables, no predicate
        band, fams = True, [((), ())]
    bounds = tuple(fams) if band else ()
    return KernelPlan(canonical.key, canonical.text, "band" if band else "table", canonical.inputs,
                      tuple(_family_code(f) for f in bounds), bounds, _ir_uses(ir, "h"), _ir_uses(ir, "b"))


# -- predicate expressions ------------------------------------------------------------------------


class _Pred:
    """IR -> a Triton expression over q_pos [BLOCK_M, 1] and k_pos [1, BLOCK_N] (as `qp`, `kp`)."""

    def __init__(self, inputs: tuple[tuple[str, str], ...]):
        self.slot = {name: i for i, (name, _) in enumerate(inputs)}

    def ir(self, node: IR) -> str:
        if isinstance(node, Const):
            return "True" if node.value else "False"
        if isinstance(node, Lin):
            f = _lin_code(node.cq, node.ck, 0)
            parts = []
            if node.lo is not None:
                parts.append(f"({f} >= {node.lo})")
            if node.hi is not None:
                parts.append(f"({f} <= {node.hi})")
            return "(" + " & ".join(parts) + ")"
        if isinstance(node, Mod):
            r = f"_pymod({_lin_code(node.cq, node.ck, node.c0)}, {node.m})"
            return "(" + " | ".join(f"({r} == {v})" for v in node.residues) + ")"
        if isinstance(node, Opaque):
            return self.expr(node.expr)
        op = " & " if isinstance(node, And) else " | "
        return "(" + op.join(self.ir(a) for a in node.args) + ")"

    def expr(self, e: N.Expr) -> str:
        if isinstance(e, N.Num):
            return str(int(e.value)) if e.value >= 0 else f"({int(e.value)})"
        if isinstance(e, N.BoolLit):
            return "True" if e.value else "False"
        if isinstance(e, N.Name):
            return {"q": "qp", "k": "kp", "h": "off_h", "b": "off_b"}[e.id]
        if isinstance(e, N.Unary):
            x = self.expr(e.operand)
            return f"(~{x})" if e.op == "not" else f"(-{x})"
        if isinstance(e, N.BinOp):
            a, b = self.expr(e.left), self.expr(e.right)
            if e.op == "//":
                return f"_floordiv({a}, {b})"
            if e.op == "%":
                return f"_pymod({a}, {b})"
            return f"({a} {e.op} {b})"
        if isinstance(e, N.BoolOp):
            op = " & " if e.op == "and" else " | "
            return "(" + op.join(self.expr(v) for v in e.values) + ")"
        if isinstance(e, N.Compare):
            links, left = [], e.left
            for op, right in zip(e.ops, e.comparators):
                links.append(self._link(left, op, right))
                left = right
            return links[0] if len(links) == 1 else "(" + " & ".join(links) + ")"
        if isinstance(e, N.Call):
            args = [self.expr(a) for a in e.args]
            if e.func == "abs":
                return f"tl.abs({args[0]})"
            if e.func in ("min", "max"):
                out = args[0]
                for a in args[1:]:
                    out = f"tl.{'minimum' if e.func == 'min' else 'maximum'}({out}, {a})"
                return out
            if e.func == "hash":
                h = str(HASH_INIT)
                for node, a in zip(e.args, args):
                    # tensors are widened to int64 first so the 32-bit mask is not taken as an int32 constant
                    literal = isinstance(node, N.Num) or a.lstrip("(-").rstrip(")").isdigit()
                    a = a if literal else f"({a}).to(tl.int64)"
                    h = f"_hash_step({h}, {a})"
                return h
        if isinstance(e, N.Subscript):
            if isinstance(e.value, N.ListLit):
                idx = self.expr(e.index)
                vals = [x.value for x in e.value.elts]
                out = str(vals[-1])
                for i in range(len(vals) - 2, -1, -1):
                    out = f"tl.where({idx} == {i}, {vals[i]}, {out})"
                return out
            slot = self.slot[e.value.id]
            return f"in{slot}_q[:, None]" if e.index.id == "q" else f"in{slot}_k[None, :]"
        raise PatternError(f"cannot generate kernel code for {type(e).__name__}")

    def _link(self, left: N.Expr, op: str, right: N.Expr) -> str:
        x = self.expr(left)
        if op in ("in", "not in"):
            if isinstance(right, N.Call):
                start, stop, step = (a.value for a in right.args)
                r = range(start, stop, step)
                if len(r) == 0:
                    test = "False"
                else:
                    lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
                    test = f"(({x} >= {lo}) & ({x} <= {hi})"
                    test += f" & (_pymod({x} - {lo}, {abs(step)}) == 0))" if abs(step) > 1 else ")"
            else:
                values = sorted({v.value for v in right.elts})
                runs: list[list[int]] = []
                for v in values:
                    if runs and v == runs[-1][1] + 1:
                        runs[-1][1] = v
                    else:
                        runs.append([v, v])
                if len(runs) > MAX_RUNS:
                    raise PatternError(f"a set with {len(runs)} separate runs is too large to test in a kernel "
                                       f"(at most {MAX_RUNS}); pass it as a runtime input flag instead")
                tests = [f"({x} == {a})" if a == b else f"(({x} >= {a}) & ({x} <= {b}))" for a, b in runs]
                test = "(" + " | ".join(tests) + ")" if tests else "False"
            return f"(~{test})" if op == "not in" else test
        return f"({x} {op} {self.expr(right)})"


def _lin_code(cq: int, ck: int, c0: int) -> str:
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
    text = text[2:] if text.startswith("+ ") else "-" + text[2:] if text.startswith("- ") else text
    return f"({text})"


def _full_tile(node: IR):
    """Scalar code over (q_lo, q_hi, k_lo, k_hi) proving every pair of a tile allowed, or True/False."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Lin):
        def extreme(which):
            terms = []
            for coef, lo, hi in ((node.cq, "q_lo", "q_hi"), (node.ck, "k_lo", "k_hi")):
                if coef == 0:
                    continue
                var = (lo if coef > 0 else hi) if which == "min" else (hi if coef > 0 else lo)
                mag = "" if abs(coef) == 1 else f"{abs(coef)} * "
                terms.append(("- " if coef < 0 else "+ ") + mag + var)
            text = " ".join(terms)
            return "(" + (text[2:] if text.startswith("+ ") else text) + ")"
        parts = []
        if node.lo is not None:
            parts.append(f"({extreme('min')} >= {node.lo})")
        if node.hi is not None:
            parts.append(f"({extreme('max')} <= {node.hi})")
        return "(" + " & ".join(parts) + ")" if parts else True
    if isinstance(node, (And, Or)):
        is_and = isinstance(node, And)
        parts = []
        for a in node.args:
            t = _full_tile(a)
            if t is (not is_and):        # False in an `and`, True in an `or` decides it
                return not is_and
            if t is is_and:
                continue
            parts.append(t)
        if not parts:
            return is_and
        return "(" + (" & " if is_and else " | ").join(parts) + ")"
    return False   # modular and opaque conditions: the predicate decides element-wise


# -- the module -----------------------------------------------------------------------------------

_TEMPLATE_PATH = "kernel_template.py.txt"


def _template() -> str:
    from importlib import resources
    return resources.files(__package__).joinpath(_TEMPLATE_PATH).read_text()


_TILE_CALL = ("_tile(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, "
              "{start}, q_pos, off_b, off_h, KV_LEN, qk_scale{in_args}, HEAD_DIM, HEAD_DIM_P, "
              "BLOCK_N, {masked}, EVEN_N, DOT_PRECISION)")

_TABLE_BODY = """    variant = tl.load(Variant + off_bh)
    row = variant * (NUM_QB + 1) + pid_m
    start = tl.load(RowPtrP + row)
    end = tl.load(RowPtrP + row + 1)
    for i in range(start, end):
        kb = tl.load(ColIdxP + i)
        acc, l_i, m_i = {partial}
    start = tl.load(RowPtrF + row)
    end = tl.load(RowPtrF + row + 1)
    for i in range(start, end):
        kb = tl.load(ColIdxF + i)
        acc, l_i, m_i = {full}"""


def _rename_inputs(node, names: dict[str, str]):
    """The IR with runtime inputs renamed to their generated names (for the module's docstring)."""
    if isinstance(node, (And, Or)):
        return type(node)(tuple(_rename_inputs(a, names) for a in node.args))
    if isinstance(node, Opaque):
        return Opaque(_rename_ast(node.expr, names), node.span)
    return node


def _rename_ast(e, names):
    if isinstance(e, N.Name):
        return N.Name(names.get(e.id, e.id), e.span)
    if not hasattr(e, "__dataclass_fields__"):
        return e
    values = {}
    for f in e.__dataclass_fields__:
        v = getattr(e, f)
        if f == "span":
            values[f] = v
        elif isinstance(v, tuple):
            values[f] = tuple((x[0], _rename_ast(x[1], names)) if isinstance(x, tuple) else _rename_ast(x, names)
                              for x in v)
        else:
            values[f] = _rename_ast(v, names)
    return type(e)(**values)


def _bound(terms, fn: str, default: str) -> str:
    out = default
    for t in terms:
        out = f"tl.{fn}({out}, {t})"
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        template = template.replace("@" + k + "@", v)
    return template


def input_loads(inputs) -> tuple[str, str]:
    """Code reading the runtime inputs in a kernel that walks key tiles for a block of queries (the forward
    and dQ): (per key tile, indented for the tile loop; once per query block)."""
    k_loads, q_loads = "", ""
    for i, (_, axis) in enumerate(inputs):
        base = f"In{i} + off_b * stride_in{i}"
        if axis == "k":   # one value per key position: read at absolute positions
            k_loads += f"        in{i}_k = tl.load({base} + k_pos, mask=k_pos < KV_LEN, other=0)\n"
            q_loads += (f"    in{i}_q = tl.load({base} + q_pos, mask=m_valid & (q_pos >= 0) & (q_pos < KV_LEN), "
                        f"other=0)\n")
        else:             # one value per query row; never read at k (the checker forbids it)
            k_loads += f"        in{i}_k = k_pos\n"
            q_loads += f"    in{i}_q = tl.load({base} + offs_m, mask=m_valid, other=0)\n"
    return k_loads, q_loads


def generate(canonical: Canonical, kplan: KernelPlan | None = None) -> str:
    """Return the source of the kernel module for a canonical pattern."""
    kplan = kplan or plan(canonical)
    n_in = len(kplan.inputs)
    pred_params = "".join(f", in{i}_q, in{i}_k" for i in range(n_in))
    tile_params = "".join(f", in{i}_q, In{i}, stride_in{i}" for i in range(n_in))
    kernel_params = "".join(f"In{i}, stride_in{i}, " for i in range(n_in))
    k_loads, q_loads = input_loads(kplan.inputs)

    def call(start: str, masked: bool) -> str:
        return _TILE_CALL.format(start=start, masked=masked,
                                 in_args="".join(f", in{i}_q, In{i}, stride_in{i}" for i in range(n_in)))

    if kplan.mode == "table":
        body = _TABLE_BODY.format(partial=call("kb * BLOCK_N", True), full=call("kb * BLOCK_N", False))
    else:
        lines = []
        for j, (lo_terms, hi_terms) in enumerate(kplan.families):
            lines.append(f"    lk{j} = tl.maximum({_bound(lo_terms, 'maximum', '0')}, 0)")
            lines.append(f"    hk{j} = {_bound(hi_terms, 'minimum', 'KV_LEN - 1')}")
            lines.append(f"    a{j} = lk{j} // BLOCK_N")
            lines.append(f"    b{j} = tl.where(hk{j} < lk{j}, a{j} - 1, hk{j} // BLOCK_N)")
        if len(kplan.families) == 1:
            lines.append("    n_tiles = tl.maximum(b0 - a0 + 1, 0)")
            kb_expr = "a0 + j"
        else:
            # Family 0, then what family 1 adds on either side of it -- every tile exactly once -- walked
            # as one loop (one copy of the tile code, not three).
            lines.append("    num_kb = (KV_LEN + BLOCK_N - 1) // BLOCK_N")
            lines.append("    e0 = a0 > b0")
            lines.append("    a0 = tl.where(e0, num_kb, a0)")
            lines.append("    b0 = tl.where(e0, num_kb - 1, b0)")
            lines.append("    n0 = b0 - a0 + 1")
            lines.append("    n1 = tl.maximum(tl.minimum(b1, a0 - 1) - a1 + 1, 0)")
            lines.append("    c2 = tl.maximum(a1, b0 + 1)")
            lines.append("    n2 = tl.maximum(b1 - c2 + 1, 0)")
            lines.append("    n_tiles = n0 + n1 + n2")
            kb_expr = "tl.where(j < n0, a0 + j, tl.where(j < n0 + n1, a1 + (j - n0), c2 + (j - n0 - n1)))"
        full_test = _full_tile(canonical.ir)
        head = (f"    for j in range(0, n_tiles):\n        kb = {kb_expr}\n        k_lo = kb * BLOCK_N\n"
                f"        k_hi = tl.minimum(k_lo + BLOCK_N, KV_LEN) - 1\n")
        if isinstance(full_test, bool):
            chunks = [head + f"        acc, l_i, m_i = {call('k_lo', not full_test)}"]
        else:
            chunks = [head + f"        if {full_test}:\n            acc, l_i, m_i = {call('k_lo', False)}\n"
                      f"        else:\n            acc, l_i, m_i = {call('k_lo', True)}"]
        body = "\n".join(lines) + "\n" + "\n".join(chunks)
    return _fill(_template(), {
        "KEY": kplan.key, "TEXT": to_text(_rename_inputs(canonical.ir, {n: f"in{i}" for i, (n, _) in
                                                                        enumerate(kplan.inputs)})), "MODE": kplan.mode, "MASK": str(MASK32),
        "M1": str(HASH_M1), "M2": str(HASH_M2), "INIT": str(HASH_INIT), "PRED": _Pred(kplan.inputs).ir(canonical.ir),
        "PRED_PARAMS": pred_params, "TILE_PARAMS": tile_params, "K_LOADS": k_loads,
        "KERNEL_PARAMS": kernel_params, "Q_LOADS": q_loads, "BODY": body,
    })
