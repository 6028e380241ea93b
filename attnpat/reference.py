"""The dense reference: the oracle every later stage is tested against.

It evaluates a checked pattern expression directly with torch broadcasting over a [B, H, Q, K] grid --
deliberately simple and independent of the simplifier, the block masks and the kernels.

torch is imported inside the functions that use it, so that importing attnpat (and the command line's
check / show / explain / list) does not pay for it: `prepare_inputs` needs it only when the pattern has
runtime inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from .compiler import nodes as N
from .compiler.check import CheckedPattern
from .compiler.hashing import hash32
from .compiler.values import describe
from .errors import ArgumentError, InputError, PatternError, RangeError

if TYPE_CHECKING:
    import torch

__all__ = ["evaluate_dense", "reference_attention", "prepare_inputs", "shape_inputs", "query_positions",
           "check_sizes", "shape_float_inputs", "dense_score_terms"]


# Values the reference refuses: int64 wraps at 2**63, and the float64 estimate that detects it is exact to
# about 2**10 there; a margin makes the test sound. Positions are bounded the same way.
_EDGE = float(1 << 62)


def check_sizes(**sizes: object) -> None:
    """Lengths must be non-negative ints, batch and head counts positive ints (ArgumentError otherwise)."""
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if "len" in name else 1):
            raise ArgumentError(f"{name} must be a {'non-negative' if 'len' in name else 'positive'} int, "
                                f"got {describe(v)}")


def query_positions(q_len: int, kv_len: int, q_offset: int | None) -> int:
    """Absolute position of query row 0: bottom-right aligned (kv_len - q_len) unless q_offset is given."""
    q0 = kv_len - q_len if q_offset is None else int(q_offset)
    if abs(q0) >= _EDGE or abs(q0 + q_len) >= _EDGE:
        raise ArgumentError(f"q_offset {q0} is too large: query positions must stay within +-2**62")
    return q0


def prepare_inputs(checked: CheckedPattern, q_len: int, kv_len: int, batch: int, inputs: dict[str, object],
                   how: Callable[[str, str, int], str] | None = None) -> dict[str, torch.Tensor]:
    """Validate runtime inputs against the pattern's declarations; return int64 CPU [B', L] tensors.

    An int[k] input has one value per key position (length kv_len); an int[q] input one per query row
    (length q_len). Either may be 1-D (shared by the batch) or [batch, length]. An int[b] input has one value
    per sequence: [batch], or [1] or 0-d (shared); it comes back as [B', 1]. `how(name, axis, length)`,
    when given, is added to a missing input's error: how to pass it (the command line's --input syntax).
    """
    shaped = shape_inputs(checked, q_len, kv_len, batch, inputs, how)
    if not shaped:
        return {}   # without importing torch: the CLI's light commands never do
    import torch
    return {name: t.to(device="cpu", dtype=torch.int64) for name, t in shaped.items()}


def shape_inputs(checked: CheckedPattern, q_len: int, kv_len: int, batch: int, inputs: dict[str, object],
                 how: Callable[[str, str, int], str] | None = None) -> dict[str, torch.Tensor]:
    """The declaration checks every user of runtime inputs shares (names, integer dtype, shape [L] or
    [batch, L]): the inputs as [B', L] tensors, in their own dtype and on their own device."""
    declared = {d.name: d for d in checked.inputs}
    if not declared and not inputs:
        return {}
    import torch
    floats = {d.name for d in checked.scores.inputs} if checked.scores is not None else set()
    # float inputs feed the score terms (shape_float_inputs), not the mask
    inputs = {n: v for n, v in inputs.items() if n not in checked.unused_inputs and n not in floats}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        have = ", ".join(sorted(declared)) or "none"
        raise InputError(f"pattern '{checked.name}' has no runtime input '{unknown[0]}' (its inputs: {have})")
    out = {}
    for name, decl in declared.items():
        length, length_name = {"k": (kv_len, "kv_len"), "q": (q_len, "q_len"), "b": (batch, "batch")}[decl.axis]
        if name not in inputs or inputs[name] is None:
            raise InputError(f"pattern '{checked.name}' needs runtime input '{name}' "
                             f"(int[{decl.axis}]: one integer per {_PER[decl.axis]})"
                             + (how(name, decl.axis, length) if how else ""))
        value = inputs[name]
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value)
                if value.numel() == 0:   # an empty Python list is an empty integer input, not float
                    value = value.to(torch.int64)
            except Exception:
                raise InputError(f"runtime input '{name}' must be an integer tensor, got "
                                 f"{type(value).__name__}") from None
        if value.dtype.is_floating_point or value.dtype.is_complex:
            raise InputError(f"runtime input '{name}' must have an integer (or bool) dtype, got {value.dtype}")
        shape = list(value.shape)
        if decl.axis == "b":   # one value per sequence: [batch], or [1] / 0-d shared by the batch -> [B', 1]
            # ([B', 1], what this function returns, is accepted again: callers pass prepared inputs on)
            if value.dim() > 2 or (value.dim() == 2 and value.shape[1] != 1) or \
                    (value.dim() >= 1 and value.shape[0] not in (1, batch)):
                raise InputError(f"input '{name}' is int[b]: give one value per sequence, shape [batch] "
                                 f"([{batch}] here; [1] or a 0-d tensor is shared by the batch), got {shape}")
            out[name] = value.reshape(-1, 1)
            continue
        if value.dim() == 1:
            value = value.unsqueeze(0)
        if value.dim() != 2 or value.shape[-1] != length or value.shape[0] not in (1, batch):
            raise InputError(f"runtime input '{name}' must have shape [{length}] or [{batch}, {length}] "
                             f"(int[{decl.axis}] with {length_name} = {length}), got {shape}")
        out[name] = value
    return out


_PER = {"k": "key", "q": "query", "b": "sequence of the batch"}


def shape_float_inputs(checked: CheckedPattern, heads: int, inputs: dict[str, object]) -> dict[str, torch.Tensor]:
    """The pattern's float[h] inputs (score terms) checked: a real tensor (or sequence) of shape [heads] with
    finite values, each in its own floating dtype and device (its autograd graph kept)."""
    if checked.scores is None or not checked.scores.inputs:
        return {}
    import torch
    out = {}
    for decl in checked.scores.inputs:
        name = decl.name
        if name not in inputs or inputs[name] is None:
            raise InputError(f"pattern '{checked.name}' needs runtime input '{name}' (float[h]: one number per "
                             f"head, {heads} of them)")
        value = inputs[name]
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value, dtype=torch.float64)
            except Exception:
                raise InputError(f"runtime input '{name}' must be a float tensor, got "
                                 f"{type(value).__name__}") from None
        if not value.dtype.is_floating_point:
            raise InputError(f"runtime input '{name}' is float[h]: it must have a floating-point dtype, got "
                             f"{value.dtype}")
        if list(value.shape) != [heads]:
            raise InputError(f"runtime input '{name}' must have shape [{heads}] (float[h]: one number per query "
                             f"head), got {list(value.shape)}")
        if not bool(torch.isfinite(value.detach()).all()):
            raise InputError(f"runtime input '{name}' holds a value that is not finite (NaN or inf)")
        out[name] = value
    return out


class _Grid:
    def __init__(self, checked, q_len, kv_len, batch, heads, q_offset, inputs):
        import torch
        q0 = query_positions(q_len, kv_len, q_offset)
        self.checked = checked
        self.q_row = torch.arange(q_len).view(1, 1, q_len, 1)
        self.vars = {
            "q": (self.q_row + q0),
            "k": torch.arange(kv_len).view(1, 1, 1, kv_len),
            "h": torch.arange(heads).view(1, heads, 1, 1),
            "b": torch.arange(batch).view(batch, 1, 1, 1),
        }
        self.kv_len = kv_len
        self.inputs = inputs
        self.decls = {d.name: d for d in checked.inputs}

    def eval(self, e: N.Expr):
        return getattr(self, "v_" + type(e).__name__)(e)

    def v_Num(self, e):
        import torch
        return torch.tensor(e.value, dtype=torch.int64)

    def v_BoolLit(self, e):
        import torch
        return torch.tensor(e.value)

    def v_Name(self, e):
        return self.vars[e.id]

    def v_Unary(self, e):
        import torch
        x = self.eval(e.operand)
        return torch.logical_not(x) if e.op == "not" else self.exact(e, -x, -x.double())

    def exact(self, e, value, estimate):
        """`value` (int64) when `estimate` (the same in float64) shows no value near the int64 edge; else
        refuse: the language's integers are exact, and int64 would wrap."""
        if estimate.numel() and float(estimate.abs().max()) >= _EDGE:
            raise RangeError(f"pattern '{self.checked.name}': this value leaves the 64-bit integers the dense "
                             f"reference computes with", e.span)
        return value

    def v_BinOp(self, e):
        import torch
        a, b = self.eval(e.left), self.eval(e.right)
        if e.op in "+-*":
            fn = {"+": torch.add, "-": torch.sub, "*": torch.mul}[e.op]
            return self.exact(e, fn(a, b), fn(a.double(), b.double()))
        if e.op == "//":
            return torch.div(a, b, rounding_mode="floor")
        return torch.remainder(a, b)

    def v_BoolOp(self, e):
        vals = [self.eval(v) for v in e.values]
        out = vals[0]
        for v in vals[1:]:
            out = (out & v) if e.op == "and" else (out | v)
        return out

    def v_Compare(self, e):
        import torch
        left = self.eval(e.left)
        result = None
        for op, comp in zip(e.ops, e.comparators):
            if op in ("in", "not in"):
                r = self._member(left, comp)
                r = ~r if op == "not in" else r
                left = None   # a container never feeds a further link (the checker ensures it)
            else:
                right = self.eval(comp)
                r = {"<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge,
                     "==": torch.eq, "!=": torch.ne}[op](left, right)
                left = right
            result = r if result is None else result & r
        return result

    def _member(self, x, container):
        import torch
        if isinstance(container, N.Call) and container.func == "range":
            start, stop, step = (a.value for a in container.args)
            inside = (x >= start) & (x < stop) if step > 0 else (x <= start) & (x > stop)
            return inside & (torch.remainder(x - start, step) == 0)
        values = torch.tensor([v.value for v in container.elts], dtype=torch.int64)
        return torch.isin(x, values)

    def v_Call(self, e):
        import torch
        args = [self.eval(a) for a in e.args]
        if e.func == "abs":
            return self.exact(e, torch.abs(args[0]), torch.abs(args[0].double()))
        if e.func in ("min", "max"):
            out = args[0]
            for a in args[1:]:
                out = torch.minimum(out, a) if e.func == "min" else torch.maximum(out, a)
            return out
        if e.func == "hash":
            return hash32(*args)
        raise PatternError(f"internal error: unchecked call {e.func}", e.span)  # the checker admits no other

    def v_Subscript(self, e):
        import torch
        if isinstance(e.value, N.ListLit):
            values = torch.tensor([v.value for v in e.value.elts], dtype=torch.int64)
            idx = self.eval(e.index)
            bad = (idx < 0) | (idx >= len(values))
            if bool(bad.any()):
                first = int(idx[bad].flatten()[0])
                raise ArgumentError(f"pattern '{self.checked.name}': list index {first} is out of range "
                                    f"(the list has {len(values)} elements); check the number of heads")
            return values[idx]
        name, axis = e.value.id, e.index.id
        table = self.inputs[name]                                   # [B' , L]
        if axis == "b":                                             # int[b]: [B', 1], one value per sequence
            return table.view(-1, 1, 1, 1)
        if self.decls[name].axis == "q":
            pos = self.q_row.flatten()
        else:
            pos = self.vars[axis].flatten()
            if axis == "q" and pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= self.kv_len):
                raise InputError(f"'{name}[q]' reads query positions {int(pos.min())}..{int(pos.max())}, "
                                 f"outside the {self.kv_len} values of int[k] input '{name}'")
        vals = table[:, pos]                                        # [B', L]
        shape = [vals.shape[0], 1, 1, 1]
        shape[2 if axis == "q" else 3] = vals.shape[1]
        return vals.view(shape)


def evaluate_dense(checked: CheckedPattern, q_len: int, kv_len: int, *, batch: int = 1, heads: int = 1,
                   q_offset: int | None = None, inputs: dict[str, object] | None = None) -> torch.Tensor:
    """Evaluate the checked mask on every (b, h, q, k): a bool tensor [batch, heads, q_len, kv_len]."""
    import torch
    check_sizes(q_len=q_len, kv_len=kv_len, batch=batch, heads=heads)
    tensors = prepare_inputs(checked, q_len, kv_len, batch, dict(inputs or {}))
    grid = _Grid(checked, q_len, kv_len, batch, heads, q_offset, tensors)
    out = grid.eval(checked.expr)
    if out.dtype != torch.bool:
        raise PatternError("internal error: a checked mask is not boolean")
    return out.expand(batch, heads, q_len, kv_len).contiguous()


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern, *,
                        scale: float | None = None, q_offset: int | None = None, return_lse: bool = False,
                        **inputs) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention restricted to `pattern`, computed in float64 from the dense mask.

    Args:
        q: [B, Hq, N, D]; k, v: [B, Hkv, M, D] with Hq a multiple of Hkv (GQA / MQA).
        pattern: a Pattern (or anything with `.dense_mask`).
        scale: softmax scale, default 1/sqrt(D).
        return_lse: also return the natural-log log-sum-exp per query [B, Hq, N] (-inf for empty rows).
    Returns:
        float64 output [B, Hq, N, Dv]; a query with no allowed key gets 0. Non-finite values follow the
        kernels: a masked-out key never contributes (a NaN or inf in its v row included); an allowed score
        of +inf or NaN makes its row NaN; allowed scores of -inf weigh 0 (all of them: the row gets 0).
    """
    import torch

    from .runtime.checks import check_qkv
    B, Hq, Nq, D, Hkv, M = check_qkv(q, k, v, require_same_dtype=False)
    mask = pattern.dense_mask(Nq, M, batch=B, heads=Hq, q_offset=q_offset, **inputs).to(q.device)
    group = Hq // Hkv
    qd, kd, vd = q.double(), k.double(), v.double()
    if group > 1:
        kd = kd.repeat_interleave(group, dim=1)
        vd = vd.repeat_interleave(group, dim=1)
    s = (1.0 / math.sqrt(D)) if scale is None else float(scale)
    scores = torch.matmul(qd, kd.transpose(-1, -2)) * s
    softcap, bias, sink = dense_score_terms(pattern, Nq, M, B, Hq, q_offset, inputs)
    if softcap is not None:   # in the documented order: softcap, bias, (mask), sink
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias.to(scores.device)
    if sink is not None:
        sink = sink.to(scores.device).expand(B, Hq, Nq, 1)
    scores = scores.masked_fill(~mask, float("-inf"))
    # the sink is one more logit in the denominator that attends to nothing: a row with no allowed key but a
    # sink has lse = the sink and output 0
    lse = torch.logsumexp(scores if sink is None else torch.cat([scores, sink], -1), dim=-1)
    # a row with no allowed key (lse = -inf) gets 0; an allowed score of +inf or NaN makes its row NaN
    probs = torch.exp(scores - lse.unsqueeze(-1).masked_fill((lse == float("-inf")).unsqueeze(-1), 0.0))
    probs = probs.masked_fill(~mask, 0.0)
    # a masked-out key contributes nothing, even where its v row is not finite (0 * NaN would be NaN)
    bad = ~torch.isfinite(vd).all(dim=-1)                         # [B, H, M]
    out = torch.matmul(probs, vd.masked_fill(bad.unsqueeze(-1), 0.0))
    for b, h, j in bad.nonzero().tolist():
        out[b, h] += torch.where(mask[b, h, :, j, None], probs[b, h, :, j, None] * vd[b, h, j], 0.0)
    return (out, lse) if return_lse else out


def dense_score_terms(pattern, q_len: int, kv_len: int, batch: int, heads: int, q_offset, inputs: dict):
    """A pattern's score terms on the grid, in float64: (softcap or None, the summed bias broadcastable to
    [batch, heads, q_len, kv_len] or None, the sink broadcastable to [batch, heads, 1, 1] or None). The sink and
    the float inputs keep their autograd graph."""
    terms = getattr(getattr(pattern, "checked", None), "scores", None)
    if terms is None:
        return None, None, None
    grid = _ScoreGrid(pattern.checked, q_len, kv_len, batch, heads, q_offset, inputs)
    bias = None
    for term in terms.bias:
        bias = grid.eval(term) if bias is None else bias + grid.eval(term)
    sink = grid.eval(terms.sink) if terms.sink is not None else None
    if sink is not None and sink.dim() < 4:
        sink = sink.view(1, 1, 1, 1)
    return terms.softcap, bias, sink


class _ScoreGrid:
    """Score terms evaluated in float64 on the [B, H, Q, K] grid, independently of the kernels' printer."""

    def __init__(self, checked, q_len, kv_len, batch, heads, q_offset, inputs):
        import torch
        self.floats = {n: t.to(torch.float64) for n, t in shape_float_inputs(checked, heads, inputs).items()}
        ints = {n: v for n, v in inputs.items() if n not in self.floats}
        self.grid = _Grid(checked, q_len, kv_len, batch, heads, q_offset,
                          prepare_inputs(checked, q_len, kv_len, batch, ints))

    def eval(self, e: N.Expr):
        import torch
        if isinstance(e, (N.Num, N.Float)):
            return torch.tensor(float(e.value), dtype=torch.float64)
        if isinstance(e, N.Name):
            return self.grid.vars[e.id].double()
        if isinstance(e, N.Unary):
            return -self.eval(e.operand)
        if isinstance(e, N.BinOp):
            a, b = self.eval(e.left), self.eval(e.right)
            return a + b if e.op == "+" else a - b if e.op == "-" else a * b
        if isinstance(e, N.Call):
            args = [self.eval(a) for a in e.args]
            if e.func == "abs":
                return args[0].abs()
            out = args[0]
            for a in args[1:]:
                out = torch.minimum(out, a) if e.func == "min" else torch.maximum(out, a)
            return out
        if isinstance(e, N.Subscript) and isinstance(e.value, N.Name) and e.value.id in self.floats:
            return self.floats[e.value.id].view(1, -1, 1, 1)
        if isinstance(e, N.Subscript) and isinstance(e.value, N.ListLit):
            values = torch.tensor([float(x.value) for x in e.value.elts], dtype=torch.float64)
            idx = self.grid.eval(e.index)
            if bool(((idx < 0) | (idx >= len(values))).any()):
                raise ArgumentError(f"pattern '{self.grid.checked.name}': a list index in a score term is out "
                                    f"of range (the list has {len(values)} elements); check the number of heads")
            return values[idx]
        if isinstance(e, N.Subscript):
            return self.grid.eval(e).double()
        raise PatternError(f"internal error: unchecked score term {type(e).__name__}", e.span)
