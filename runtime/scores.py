"""Score terms at launch: the float[h] inputs of softcap / bias / sink patterns (docs/language.md, "Score
terms"), kept apart from the integer inputs that the block masks read, and the gradients of those inputs.

The launchers call three functions here and nothing else about score terms: :func:`split` (the call's
inputs -> the mask's integer inputs and the checked float inputs), :func:`kernel_args` (the float inputs as
the kernels' ``FIn{i}`` arguments) and, in the backward, :func:`op_input_grads`.
"""

from __future__ import annotations

import torch

from ..compiler import nodes as N
from ..errors import ArgumentError
from ..reference import shape_float_inputs

__all__ = ["split", "kernel_args", "op_input_grads", "needs_grad", "bias_needs_grad", "stack_bias_grads",
           "grad_buffers", "grad_sums"]


def split(compiled, heads: int, inputs: dict) -> tuple[dict, dict]:
    """(the integer inputs, {name: float[h] input checked against `heads`}) of a call's keyword inputs."""
    terms = compiled.checked.scores
    if terms is None or not terms.inputs:
        return inputs, {}
    names = {d.name for d in terms.inputs}
    floats = shape_float_inputs(compiled.checked, heads, {n: v for n, v in inputs.items() if n in names})
    return {n: v for n, v in inputs.items() if n not in names}, floats


def kernel_args(kplan, floats: dict | None, device) -> dict:
    """The float inputs as kernel arguments FIn0, FIn1, ... (fp32, contiguous, on `device`)."""
    return {f"FIn{i}": floats[name].detach().to(device=device, dtype=torch.float32).contiguous()
            for i, name in enumerate(kplan.float_inputs)}


def needs_grad(compiled, inputs: dict | None) -> bool:
    """Whether some input tensor of a call requires a gradient (only float inputs can); one that attnpat
    computes no gradient for is refused here, before the forward runs (ArgumentError)."""
    terms = compiled.checked.scores
    read = {d.name for d in terms.inputs} if terms is not None else set()
    grads = [n for n, t in (inputs or {}).items() if isinstance(t, torch.Tensor) and t.requires_grad and n in read]
    for name in grads:
        _check_grad(terms, name)
    return bool(grads)


def op_input_grads(compiled, names: str, tensors, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
                   dbias: torch.Tensor) -> list:
    """The gradients of a call's input tensors (the custom op's `inputs` list, named by `names`), None for
    those that need none. A sink input, written `NAME[h]`, gets torch operations on the saved output and
    natural-log lse [B, H, N]: dsink_h = -sum_{b,i} exp(sink_h - lse_bhi) * delta_bhi, delta = rowsum(dO * O)
    (the sink's probability times dP - delta, its dP being 0: it attends to nothing). An input a bias reads gets
    its row of `dbias` [bias inputs, H], the dQ kernel's sums of dS * d(bias)/d(input)."""
    terms = compiled.checked.scores
    bias_inputs = compiled.plan.bias_inputs
    grads: list = []
    for name, t in zip(names.split(",") if names else (), tensors):
        if terms is None or not t.requires_grad or name not in {d.name for d in terms.inputs}:   # not read
            grads.append(None)
            continue
        _check_grad(terms, name)
        grad = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
        if _is_sink(terms, name):
            delta = (dout.float() * out.float()).sum(-1)                                     # [B, H, N]
            p_sink = torch.exp(t.detach().float().view(1, -1, 1) - lse.float())
            grad = grad - (p_sink * delta).sum(dim=(0, 2))
        if name in bias_inputs:
            grad = grad + dbias[bias_inputs.index(name)].to(grad.device)
        grads.append(grad.to(t.dtype))
    return grads


def bias_needs_grad(compiled, names: str, tensors) -> bool:
    """Whether an input a bias reads requires a gradient (then the dQ kernel sums its parts)."""
    read = compiled.plan.bias_inputs
    return any(n in read and t.requires_grad for n, t in zip(names.split(",") if names else (), tensors))


def stack_bias_grads(kplan, grads: dict | None, heads: int, device) -> torch.Tensor:
    """attention_backward's bias-input gradients as the bwd op's dbias output [bias inputs, heads] (empty
    when none were asked for)."""
    if grads is None:
        return torch.empty(0, dtype=torch.float32, device=device)
    return torch.stack([grads[n] for n in kplan.bias_inputs]) if kplan.bias_inputs else \
        torch.empty(0, dtype=torch.float32, device=device)


def _is_sink(terms, name: str) -> bool:
    sink = terms.sink
    return isinstance(sink, N.Subscript) and isinstance(sink.value, N.Name) and sink.value.id == name


def _check_grad(terms, name: str) -> None:
    """Refuse a float input that requires grad where attnpat computes none (ArgumentError): a sink written
    other than NAME[h] reads it."""
    if terms.sink is not None and not _is_sink(terms, name) and any(
            isinstance(x, N.Name) and x.id == name for x in N.walk(terms.sink)):
        raise ArgumentError(f"runtime input '{name}' requires grad, but attnpat computes a sink's gradient only "
                            f"for a sink written '{name}[h]'; pass it detached ({name}.detach())")


def grad_buffers(kplan, programs: int, blocks: int, device) -> dict:
    """The dQ kernel's DFin{i} outputs: [programs (batch x head), query blocks] fp32 partial sums, one per
    program, for each float input a bias reads (none without)."""
    from ..compiler.codegen.signature import bias_grad_names
    return {n: torch.zeros(programs, blocks, dtype=torch.float32, device=device) for n in bias_grad_names(kplan)}


def grad_sums(kplan, buffers: dict, batch: int, heads: int, device) -> dict:
    """{name: [heads] gradient} of the float inputs a bias reads, from grad_buffers' partial sums, summed in a
    fixed order by torch (deterministic; zeros for an empty problem)."""
    from ..compiler.codegen.signature import bias_grad_names
    names = [n for n in kplan.float_inputs if n in kplan.bias_inputs]
    return {name: (buffers[out].view(batch, heads, -1).sum(dim=(0, 2)) if out in buffers
                   else torch.zeros(heads, dtype=torch.float32, device=device))
            for name, out in zip(names, bias_grad_names(kplan))}
