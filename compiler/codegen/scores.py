"""Score terms in generated code: softcap, bias and sink (compiler/check_score.py), fused into the kernels.

The kernels keep scores in base 2 (``qk = q.k * scale * log2(e)``). A pattern with score terms calls
``_scores`` on each tile's scores: back to natural-log units, softcap ``cap * tanh(s / cap)`` (tanh from
one exp2, saturating to +-1 without overflow), plus the biases, back to base 2. The backward kernels call
``_scores_d``, which also returns the softcap's derivative ``1 - tanh^2`` (1 without a softcap). The sink is
one logit per (batch element, head), folded into the forward's running max and sum after the last tile.

Score arithmetic is fp32: positions and heads are converted once, so a term is exact while its integers stay
below 2**24. Identifiers are generated (float inputs become ``fin0``, ``fin1``, ... read at the program's
head), numbers are printed from validated floats: no user text reaches the code. A pattern without score
terms gets none of this: every function here returns '' for it.
"""

from __future__ import annotations

from ...errors import PatternError
from .. import nodes as N
from ..check_score import ScoreTerms
from .. import semantics as S
from .predicate import Predicate
from .template import fill, render, template

__all__ = ["functions", "params", "args", "loads", "apply", "apply_d", "sink", "LN2", "LOG2E"]

LN2 = 0.6931471805599453
LOG2E = 1.4426950408889634

# (broadcast of q-side values, of k-side values) per tile layout, as in predicate.py
_LAYOUTS = {"rows": ("[:, None]", "[None, :]"), "columns": ("[None, :]", "[:, None]")}

_FUNCTION = '''@triton.jit
def ${name}(qk, qp, kp, off_b, off_h${fins}):
    # score terms of a ${shape} tile, in natural-log units: ${order}; back to base 2
    qp = qp${q_axis}
    kp = kp${k_axis}
    qpf = qp.to(tl.float32)
    kpf = kp.to(tl.float32)
    hf = off_h.to(tl.float32)
    bf = off_b.to(tl.float32)
    s = qk * ${ln2}
${body}'''


def _num(v) -> str:
    return repr(float(v))


class _Printer:
    """A checked score expression -> fp32 Triton code over qpf, kpf, hf, bf and fin{i}."""

    def __init__(self, floats: tuple[str, ...]):
        self.slot = {name: i for i, name in enumerate(floats)}
        self.ints = Predicate(())

    def code(self, e: N.Expr) -> str:
        if isinstance(e, (N.Num, N.Float)):
            return f"({_num(e.value)})" if e.value < 0 else _num(e.value)
        if isinstance(e, N.Name):
            return {"q": "qpf", "k": "kpf", "h": "hf", "b": "bf"}[e.id]
        if isinstance(e, N.Unary):
            return f"(-{self.code(e.operand)})"
        if isinstance(e, N.BinOp):
            return f"({self.code(e.left)} {e.op} {self.code(e.right)})"
        if isinstance(e, N.Call):
            args = [self.code(a) for a in e.args]
            if e.func == "abs":
                return f"tl.abs({args[0]})"
            fn = "tl.minimum" if e.func == "min" else "tl.maximum"
            out = args[0]
            for a in args[1:]:
                out = f"{fn}({out}, {a})"
            return out
        if isinstance(e, N.Subscript) and isinstance(e.value, N.Name) and e.value.id in self.slot:
            return f"fin{self.slot[e.value.id]}"
        if isinstance(e, N.Subscript) and isinstance(e.value, N.ListLit):
            idx = self.ints.expr(e.index)   # the integer index, printed as masks print it
            vals = [_num(x.value) for x in e.value.elts]
            out = vals[-1]
            for i in range(len(vals) - 2, -1, -1):
                out = f"tl.where({idx} == {i}, {vals[i]}, {out})"
            return out
        raise PatternError(f"cannot generate kernel code for score term {type(e).__name__}")

    def d(self, e: N.Expr, name: str) -> str | None:
        """The code of d e / d name[h] (None where it is 0), by the rules of + - * abs min max."""
        if isinstance(e, N.Subscript) and isinstance(e.value, N.Name):
            return "1.0" if e.value.id == name else None
        if isinstance(e, N.Unary):
            x = self.d(e.operand, name)
            return None if x is None else f"(-{x})"
        if isinstance(e, N.BinOp) and e.op in "+-":
            a, b = self.d(e.left, name), self.d(e.right, name)
            if b is None:
                return a
            return f"(-{b})" if a is None and e.op == "-" else b if a is None else f"({a} {e.op} {b})"
        if isinstance(e, N.BinOp):   # a product
            a, b = self.d(e.left, name), self.d(e.right, name)
            terms = ([f"{a} * {self.code(e.right)}"] if a is not None else []) + \
                    ([f"{self.code(e.left)} * {b}"] if b is not None else [])
            return f"({' + '.join(terms)})" if terms else None
        if isinstance(e, N.Call):
            ds = [self.d(a, name) for a in e.args]
            if all(x is None for x in ds):
                return None
            args = [self.code(a) for a in e.args]
            ds = [x or "0.0" for x in ds]
            if e.func == "abs":
                return f"tl.where({args[0]} < 0.0, -{ds[0]}, {ds[0]})"
            # min / max: the derivative of the argument that wins (the first one on a tie)
            best, grad = args[0], ds[0]
            cmp = "<" if e.func == "min" else ">"
            for a, x in zip(args[1:], ds[1:]):
                best, grad = (f"{'tl.minimum' if e.func == 'min' else 'tl.maximum'}({best}, {a})",
                              f"tl.where({a} {cmp} {best}, {x}, {grad})")
            return grad
        return None


def _fins(kplan_floats: tuple[str, ...]) -> str:
    return "".join(f", fin{i}" for i in range(len(kplan_floats)))


def functions(terms: ScoreTerms | None, floats: tuple[str, ...], layouts: tuple[str, ...], grad: bool,
              before: str) -> str:
    """The module's score functions (`_scores` per layout; with `grad` and a softcap, `_scores_d` returning
    its derivative too), after the integer helpers (`_pymod`, ...) a list index calls that `before` (the
    predicate's functions) lacks; '' without score terms."""
    if terms is None or not (terms.softcap is not None or terms.bias or terms.sink is not None):
        return ""
    printer = _Printer(floats)
    for e in terms.bias + ((terms.sink,) if terms.sink is not None and not grad else ()):
        printer.code(e)   # collects the helpers (the backward has no sink code)
    helpers = _helpers(printer.ints.helpers, before)
    if not has_mod(terms):
        return helpers
    body = []
    if terms.softcap is not None:
        cap = terms.softcap
        body += [f"    t = 1.0 - 2.0 / (tl.math.exp2(s * {_num(2 * LOG2E / cap)}) + 1.0)   # tanh(s / cap)",
                 f"    s = t * {_num(cap)}"]
    if terms.bias:
        body.append(f"    s = s + {' + '.join(printer.code(e) for e in terms.bias)}")
    out = []
    order = ", ".join(x for x, on in (("softcap", terms.softcap is not None), ("bias", bool(terms.bias))) if on)
    for layout in layouts:
        q_axis, k_axis = _LAYOUTS[layout]
        shape = "[queries, keys]" if layout == "rows" else "[keys, queries]"
        suffix = "" if layout == "rows" else "_t"
        for derivative in ((True,) if grad and terms.softcap is not None else (False,)):
            if derivative:
                ret = f"    return s * {_num(LOG2E)}, 1.0 - t * t"
            else:
                ret = f"    return s * {_num(LOG2E)}"
            name = ("_scores_d" if derivative else "_scores") + suffix
            out.append(fill(_FUNCTION, name=name, fins=_fins(floats), shape=shape, order=order, q_axis=q_axis,
                            k_axis=k_axis, ln2=_num(LN2), body="\n".join(body + [ret])))
    return "\n\n\n".join(([helpers] if helpers else []) + out)


def _helpers(used: set[str], before: str) -> str:
    """The @triton.jit integer helpers in `used` (and those they call) that `before` does not define."""
    need = set(used)
    for h in reversed(S.HELPERS):   # helpers call helpers defined before them (_pymod calls _floordiv)
        if h in need:
            need.update(g for g in S.HELPERS[:S.HELPERS.index(h)] if f"{g}(" in template(h.lstrip("_")))
    return "\n\n\n".join(render(h.lstrip("_")) for h in S.HELPERS if h in need and f"def {h}(" not in before)


def has_mod(terms: ScoreTerms | None) -> bool:
    """Whether the tiles' scores change (a softcap or a bias); a sink alone leaves them as they are."""
    return terms is not None and (terms.softcap is not None or bool(terms.bias))


def params(floats: tuple[str, ...]) -> str:
    """The float inputs' values a tile function receives ('fin0, fin1,'), '' without them."""
    return " ".join(f"fin{i}," for i in range(len(floats)))


args = params   # what a call passes is what the tile function receives


def loads(floats: tuple[str, ...]) -> str:
    """The statements reading each float input at the program's head."""
    return "\n".join(f"fin{i} = tl.load(FIn{i} + off_h)" for i in range(len(floats)))


def apply(terms: ScoreTerms | None, floats: tuple[str, ...], layout: str, qk: str, qp: str, kp: str) -> str:
    """The statement applying the score terms to the tile scores `qk` ('' when they leave scores alone)."""
    if not has_mod(terms):
        return ""
    suffix = "" if layout == "rows" else "_t"
    return f"{qk} = _scores{suffix}({qk}, {qp}, {kp}, off_b, off_h{_fins(floats)})"


def apply_d(terms: ScoreTerms | None, floats: tuple[str, ...], layout: str, qk: str, qp: str, kp: str) -> str:
    """As apply, for the backward: with a softcap also sets `dcap`, its derivative 1 - tanh^2, for dS."""
    if terms is None or terms.softcap is None:
        return apply(terms, floats, layout, qk, qp, kp)
    suffix = "" if layout == "rows" else "_t"
    return f"{qk}, dcap = _scores_d{suffix}({qk}, {qp}, {kp}, off_b, off_h{_fins(floats)})"


_SINK = '''# -- the sink: one more logit in the denominator, attending to nothing (a row with no allowed key: output 0,
# lse = the sink) --
hf = off_h.to(tl.float32)
bf = off_b.to(tl.float32)
sink2 = (${code}) * ${log2e}
m_sink = tl.maximum(m_i, sink2)
alpha = tl.math.exp2(m_i - m_sink)
l_i = l_i * alpha + tl.math.exp2(sink2 - m_sink)
acc = acc * alpha[:, None]
m_i = m_sink'''


def sink(terms: ScoreTerms | None, floats: tuple[str, ...]) -> str:
    """The forward's sink, after the last tile ('' without one)."""
    if terms is None or terms.sink is None:
        return ""
    return fill(_SINK, code=_Printer(floats).code(terms.sink), log2e=_num(LOG2E))


_BIAS_GRADS = '''@triton.jit
def _bias_grads(ds, qp, kp, off_b, off_h${fins}, ${dfins}):
    # the float inputs' gradient parts of one [queries, keys] tile: dS times d(bias)/d(input), summed
    qp = qp[:, None]
    kp = kp[None, :]
    qpf = qp.to(tl.float32)
    kpf = kp.to(tl.float32)
    hf = off_h.to(tl.float32)
    bf = off_b.to(tl.float32)
${body}
    return ${dfins}'''


def _dfins(kplan) -> list[str]:
    return [f"dfin{i}" for i, n in enumerate(kplan.float_inputs) if n in kplan.bias_inputs]


def bias_grad_function(terms: ScoreTerms | None, kplan) -> str:
    """The dQ kernel's `_bias_grads` ('' when no bias reads a float input)."""
    if not kplan.bias_inputs:
        return ""
    printer = _Printer(kplan.float_inputs)
    body = []
    for i, name in enumerate(kplan.float_inputs):
        if name in kplan.bias_inputs:
            parts = [x for x in (printer.d(e, name) for e in terms.bias) if x is not None]
            deriv = " + ".join(parts) if parts else "0.0"
            body.append(f"    dfin{i} = dfin{i} + tl.sum(tl.sum(ds * ({deriv}), 1), 0)")
    return fill(_BIAS_GRADS, fins=_fins(kplan.float_inputs), dfins=", ".join(_dfins(kplan)), body="\n".join(body))


def bias_grad_parts(kplan) -> dict[str, str]:
    """The dQ kernel's template values for the bias inputs' gradients (all '' when there are none)."""
    names = _dfins(kplan)
    if not names:
        return dict.fromkeys(("bias_grad_params", "bias_grad_acc", "bias_grad_ret", "bias_grad_args",
                              "bias_grad_init", "bias_grad_store"), "")
    joined = ", ".join(names)
    stores = [f"tl.store(D{n[1:].replace('fin', 'Fin')} + off_bh * tl.num_programs(0) + pid_m, {n})" for n in names]
    return {"bias_grad_params": " ".join(f"{n}," for n in names),
            "bias_grad_acc": f"{joined} = _bias_grads(ds, q_pos, KV_START + offs_n, off_b, off_h"
                             f"{_fins(kplan.float_inputs)}, {joined})",
            "bias_grad_ret": "".join(f", {n}" for n in names),
            "bias_grad_args": " ".join(f"{n}," for n in names),
            "bias_grad_init": "\n".join(f"{n} = tl.full([], 0.0, tl.float32)" for n in names),
            "bias_grad_store": "# the float inputs' gradient parts of this program, summed in torch (no atomics)\n"
                               + "\n".join(stores)}
