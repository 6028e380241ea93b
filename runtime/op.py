"""attnpat's kernels as PyTorch custom ops (``torch.ops.attnpat.fwd`` and ``torch.ops.attnpat.bwd``).

torch.compile, torch.func and autocast see attnpat through these two ops. They take only tensors and plain
values, so Dynamo records each call as one opaque node and never traces into the disk cache, sympy or
Triton's launcher:

* the pattern is named by a string: its kernel's registry name (``Kernel.info[0]``), filled when
  ``attnpat.attention`` or ``attnpat.compile`` resolves the pattern, before any op runs;
* a prepared block mask is named by its handle, a 0-dim int64 CPU tensor (``PreparedMask.handle``). Being a
  tensor and not an int, a new mask each step (new document ids) is new data, not a new graph;
* runtime inputs are a list of tensors with their names beside them (one comma-separated string).

Everything that reads the PreparedMask object (its checks against the call, building its tables) happens
inside the op, on real tensors. The fake implementations only say the output shapes, which works with
symbolic sizes: one compiled graph serves every sequence length.

The forward returns (out, lse, handle). In training, `handle` names the block mask the forward used, kept here
until the backward takes it or the autograd graph is freed, so one call builds its mask once for the forward
and the backward together. A mask no longer held (more pending backward passes than ``PENDING_LIMIT``) is
rebuilt from the saved inputs. The handle is a token, not data: two runs of one call return different ones.
"""

from __future__ import annotations

import collections
import itertools
import weakref
from typing import Optional

import torch

from ..errors import ArgumentError, InputError
from .autograd import attention_backward
from .scores import bias_needs_grad, op_input_grads as score_input_grads, split as split_scores, stack_bias_grads

__all__ = ["register_kernel", "register_mask", "PENDING_LIMIT"]

_KERNELS: dict = {}                                   # op name -> Kernel (a few per process; never dropped)
_MASKS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # handle -> PreparedMask, while it lives
_PENDING: collections.OrderedDict = collections.OrderedDict()  # handle -> mask a forward used, until its backward
PENDING_LIMIT = 256   # masks held for pending backward passes; beyond it the oldest is rebuilt if needed
_IDS = itertools.count(1)                             # handle 0 means "no mask held"


def register_kernel(kernel, options: dict) -> str:
    """The op name of a Kernel: its canonical key and launch options (equal kernels share one entry)."""
    given = ",".join(f"{k}={v}" for k, v in sorted(options.items()) if v is not None)
    name = f"{kernel.key}|{given}"
    _KERNELS.setdefault(name, kernel)
    return name


def register_mask(mask) -> torch.Tensor:
    """Give a PreparedMask its handle tensor (done once, when attnpat.block_mask makes it)."""
    n = next(_IDS)
    _MASKS[n] = mask
    return torch.tensor(n, dtype=torch.int64)


def _hold(mask) -> torch.Tensor:
    n = next(_IDS)
    _PENDING[n] = mask
    while len(_PENDING) > PENDING_LIMIT:   # forwards whose backward has not run yet: bounded whatever happens
        _PENDING.popitem(last=False)
    handle = torch.tensor(n, dtype=torch.int64)
    # autograd saves the handle for the backward and frees it with the graph (after the backward, or when an
    # output that will never be back-propagated is dropped): the mask goes with it
    weakref.finalize(handle, _PENDING.pop, n, None)
    return handle


def _kernel(name: str):
    try:
        return _KERNELS[name]
    except KeyError:   # only reachable by calling torch.ops.attnpat.* by hand
        raise ArgumentError(f"no attnpat kernel is registered as '{name}': call attnpat.attention") from None


def _named(names: str, tensors) -> dict:
    return dict(zip(names.split(",") if names else (), tensors))


def _prepared(mask: Optional[torch.Tensor]):
    if mask is None:
        return None
    found = _MASKS.get(int(mask))
    if found is None:
        raise ArgumentError("the prepared block mask of this call no longer exists; keep the object that "
                            "attnpat.block_mask returned while calls use it")
    return found


# -- forward --------------------------------------------------------------------------------------------------


@torch.library.custom_op("attnpat::fwd", mutates_args=())
def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inputs: list[torch.Tensor], names: str,
        mask: Optional[torch.Tensor], kernel: str, scale: float, q_offset: Optional[int], write_lse: bool,
        training: bool, kv_start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pattern attention on checked q, k, v: (out, lse or an empty tensor, handle of the mask held for backward)."""
    kern = _kernel(kernel)
    kern._check_backend(q.device)
    B, Hq, N, _ = q.shape
    ints, floats = split_scores(kern.compiled, Hq, _named(names, inputs))   # float[h] inputs: score terms
    m = kern.mask(N, k.shape[2], B, Hq, q_offset, q.device, _prepared(mask), ints, kv_start)
    out, lse = kern.run(q, k, v, scale, write_lse or training, m, training, floats)
    if not (write_lse or training):
        lse = torch.empty(0, dtype=torch.float32, device=q.device)
    # the backward finds a mask made for this call (or a prepared one the caller may drop) by this handle; masks
    # of patterns without inputs are cached in the kernel and need none
    held = training and (mask is not None or bool(inputs))
    return out, lse, (_hold(m) if held else torch.tensor(0, dtype=torch.int64))


@fwd.register_fake
def _fwd_fake(q, k, v, inputs, names, mask, kernel, scale, q_offset, write_lse, training, kv_start=0):
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty(q.shape[:3] if write_lse or training else (0,), dtype=torch.float32)
    return out, lse, torch.empty((), dtype=torch.int64, device="cpu")


# -- backward -------------------------------------------------------------------------------------------------


@torch.library.custom_op("attnpat::bwd", mutates_args=())
def bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        dout: torch.Tensor, inputs: list[torch.Tensor], names: str, mask: Optional[torch.Tensor],
        handle: torch.Tensor, kernel: str, scale: float, q_offset: Optional[int],
        needs: list[bool], kv_start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dbias) of fwd; a gradient whose `needs` flag is False is an empty tensor (its kernel not
    launched). dbias: [bias inputs, Hq], the gradients of the float inputs a bias reads (KernelPlan.bias_inputs),
    when a fourth flag asks for them (runtime/scores.py)."""
    kern = _kernel(kernel)
    B, Hq, N, _ = q.shape
    if lse.shape != q.shape[:3]:   # never launch the kernels on a missing lse (they would read past its end)
        raise ArgumentError("attnpat's backward needs the forward's log-sum-exp, which the forward did not write: "
                            "it was called with training=False on tensors that require grad")
    m = _PENDING.pop(int(handle), None)
    ints, floats = split_scores(kern.compiled, Hq, _named(names, inputs))
    if m is None:   # not held: a prepared mask by its own handle, else made again (static masks: the kernel's cache)
        m = kern.mask(N, k.shape[2], B, Hq, q_offset, q.device, _prepared(mask), ints, kv_start)
    bias: dict | None = {} if len(needs) > 3 and needs[3] else None
    grads = attention_backward(kern, q, k, v, out, lse, dout, scale=scale, mask=m, needs=tuple(needs[:3]),
                               floats=floats, bias_grads=bias)
    return (*(g if g is not None else t.new_empty(0) for g, t in zip(grads, (q, k, v))),
            stack_bias_grads(kern.plan, bias, Hq, q.device))


@bwd.register_fake
def _bwd_fake(q, k, v, out, lse, dout, inputs, names, mask, handle, kernel, scale, q_offset, needs, kv_start=0):
    bias = len(_kernel(kernel).plan.bias_inputs) if len(needs) > 3 and needs[3] else 0
    return (*(torch.empty_like(t, memory_format=torch.contiguous_format) if need else t.new_empty(0)
              for t, need in zip((q, k, v), needs)), q.new_empty((bias, q.shape[1]) if bias else (0,),
                                                                 dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    q, k, v, tensors, names, mask, kernel, scale, q_offset, _write_lse, _training, *kv_start = inputs
    out, lse, handle = output
    ctx.save_for_backward(q, k, v, out, lse, handle, *([] if mask is None else [mask]), *tensors)
    ctx.mark_non_differentiable(lse, handle)   # gradients flow through the output only (docs/backward.md)
    ctx.has_mask = mask is not None
    ctx.names, ctx.kernel, ctx.scale, ctx.q_offset = names, kernel, scale, q_offset
    ctx.kv_start = kv_start[0] if kv_start else 0


def _backward(ctx, dout, _dlse, _dhandle):
    q, k, v, out, lse, handle, *rest = ctx.saved_tensors
    mask = rest.pop(0) if ctx.has_mask else None
    needs = list(ctx.needs_input_grad[:3])
    compiled = _kernel(ctx.kernel).compiled
    wants_bias = bias_needs_grad(compiled, ctx.names, rest)   # float inputs a bias reads: from the dQ kernel
    dq, dk, dv, dbias = torch.ops.attnpat.bwd(q, k, v, out, lse, dout, rest, ctx.names, mask, handle, ctx.kernel,
                                              ctx.scale, ctx.q_offset, needs + [wants_bias], ctx.kv_start)
    grads = tuple(g if need else None for g, need in zip((dq, dk, dv), needs))
    # float inputs of score terms that require grad: sinks by torch operations on the saved out and lse, bias
    # inputs from dbias
    dinputs = score_input_grads(compiled, ctx.names, rest, out, lse, dout, dbias)
    # one None per other input; the dispatcher drops a kv_start equal to its default, so count them
    return (*grads, dinputs, *[None] * (len(ctx.needs_input_grad) - 4))


fwd.register_autograd(_backward, setup_context=_setup_context)


# -- torch.func.vmap: the mapped dimension joins the batch --------------------------------------------------


@fwd.register_vmap
def _fwd_vmap(info, in_dims, q, k, v, inputs, names, mask, kernel, scale, q_offset, write_lse, training,
              kv_start=0):
    """One call on [V * B, ...]: q, k, v with their mapped dimension moved in front of the batch and merged into
    it. Runtime inputs and prepared masks are not mapped over (ArgumentError): they are shared by the V calls."""
    if any(d is not None for d in in_dims[3]):
        raise ArgumentError(f"torch.func.vmap over the runtime inputs of pattern '{_kernel(kernel).compiled.name}'"
                            f" is not supported: map over q, k and v only, or fold the mapped dimension into the "
                            f"batch and pass [batch, length] inputs")
    V = info.batch_size
    # requires_grad is seen on the unwrapped tensors only (a batched tensor reports False)
    training = training or (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
    q, k, v = (t.movedim(d, 0) if d is not None else t.unsqueeze(0).expand(V, *t.shape)
               for t, d in zip((q, k, v), in_dims[:3]))
    B = q.shape[1]
    # per-sequence inputs ([B, L], or [B] for int[b]) repeat for each mapped call; shared ones stay as they are
    axes = {d.name: d.axis for d in _kernel(kernel).compiled.checked.inputs}

    def per_sequence(name, t):
        return name in axes and B > 1 and t.dim() == (1 if axes[name] == "b" else 2) and t.shape[0] == B

    inputs = [t.repeat(V, *([1] * (t.dim() - 1))) if per_sequence(n, t) else t
              for n, t in _named(names, inputs).items()]
    prepared = _prepared(mask)
    if prepared is not None and B > 1 and (prepared.batch not in (None, 1)
                                           or any(t.shape[0] > 1 for t in prepared.inputs.values())):
        raise ArgumentError("torch.func.vmap with a block mask built per batch element (batch=, or [batch, length] "
                            "inputs) is not supported: build a mask shared by the batch, or pass the inputs to "
                            "attention instead of a mask")
    out, lse, handle = torch.ops.attnpat.fwd(*(t.reshape(V * B, *t.shape[2:]) for t in (q, k, v)), inputs, names,
                                             mask, kernel, scale, q_offset, write_lse, training, kv_start)
    lse = lse.view(V, B, *lse.shape[1:]) if lse.numel() else lse
    return (out.view(V, B, *out.shape[1:]), lse, handle), (0, 0 if lse.numel() else None, None)


@torch._dynamo.assume_constant_result
def input_grads(kernel: str, names: tuple) -> bool:
    """Whether runtime inputs `names`, which require grad, get gradients (runtime/scores.needs_grad; an
    ArgumentError if attnpat computes none for one). Constants only: Dynamo runs it once, while tracing."""
    from . import scores
    return scores.needs_grad(_kernel(kernel).compiled, {n: torch.zeros(0, requires_grad=True) for n in names})


def check_transforms() -> None:
    """ArgumentError inside torch.func.grad, jvp, jacrev, ... (vmap alone is supported): what to use instead."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    if any(i.key() in (TransformType.Grad, TransformType.Jvp) for i in retrieve_all_functorch_interpreters()):
        raise ArgumentError("attnpat.attention does not support torch.func's grad, jvp, jacrev or hessian; use "
                            "torch.autograd (loss.backward() or torch.autograd.grad), which attnpat supports, "
                            "also inside torch.compile (torch.func.vmap is supported)")


# -- what the Python entry does before the op (traced by Dynamo: plain Python on constants and tensors) ------

_SDPA_HINTS = {
    "attn_mask": "attnpat takes no 'attn_mask': the mask is the pattern. Write it as a pattern (attnpat.parse, "
                 "or a library pattern such as 'causal' or attnpat.load('sliding_window', window=128)); a mask "
                 "that depends on data is a pattern with a runtime input (e.g. 'document' with doc=ids)",
    "is_causal": "attnpat takes no 'is_causal': pass the pattern 'causal' instead. When q_len != kv_len the "
                 "alignment differs: attnpat aligns queries bottom-right (query row i sits at position "
                 "i + kv_len - q_len, so the last query sees every key, as in decoding with a KV cache), "
                 "SDPA's is_causal top-left (query i sees keys 0..i); for SDPA's alignment pass q_offset=0",
    "dropout_p": "attnpat's kernels have no attention dropout: leave 'dropout_p' out (or pass 0.0) and apply "
                 "dropout elsewhere in the model",
}
_SDPA_DEFAULTS = {"attn_mask": None, "is_causal": False, "dropout_p": 0.0}


def sdpa_keywords(info: tuple, inputs: dict) -> dict:
    """The call's runtime inputs, as tensors, with SDPA's keywords taken out: their defaults and `enable_gqa`
    are accepted (GQA is always on), anything else, and a pattern parameter, is an ArgumentError saying what
    to write instead; a name the pattern does not take is an InputError naming the caller's pattern (the op's
    kernel may have been registered under an equivalent pattern's name). `info` is Kernel.info: (op name,
    pattern name, (input names, other accepted names: unused and float inputs), parameter names)."""
    _, pattern, (declared, accepted), params = info
    out = {}
    for name, value in inputs.items():
        if name in declared or name in accepted:
            pass
        elif name == "enable_gqa":
            if not isinstance(value, bool):
                raise ArgumentError(f"'enable_gqa' must be a bool, got {value!r}")
            continue   # q may have a multiple of k's heads whatever it says
        elif name in _SDPA_HINTS:
            if value is _SDPA_DEFAULTS[name] or (name == "dropout_p" and value == 0):
                continue
            raise ArgumentError(f"'{name}'={value!r}: {_SDPA_HINTS[name]}")
        elif name in params:
            raise ArgumentError(
                f"'{name}' is a parameter of pattern '{pattern}', not a runtime input; parameters are "
                f"fixed when the pattern is made, so pass attention the pattern attnpat.load('{pattern}', "
                f"{name}={value!r}) (or Pattern.with_params({name}={value!r}))")
        else:
            have = ", ".join(sorted(declared + tuple(n for n in accepted if n not in declared))) or "none"
            raise InputError(f"pattern '{pattern}' has no runtime input '{name}' (its inputs: {have})")
        if value is None:
            continue   # a missing input: the op's validation names it
        out[name] = value if isinstance(value, torch.Tensor) else _as_tensor(name, value)
    return out


def _as_tensor(name: str, value) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except Exception:
        raise InputError(f"runtime input '{name}' must be a tensor, got {type(value).__name__}") from None
    return t.to(torch.int64) if t.numel() == 0 else t   # an empty list is an empty integer input


def autocast_inputs(q, k, v):
    """q, k, v cast as autocast casts SDPA's inputs: to the autocast dtype of their device type when autocast is
    on there (floating tensors other than float64)."""
    kind = q.device.type if isinstance(q, torch.Tensor) else None
    if kind not in ("cuda", "cpu") or not torch.is_autocast_enabled(kind):
        return q, k, v
    dtype = torch.get_autocast_dtype(kind)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16,
                                                                             torch.float32) else t
                 for t in (q, k, v))
