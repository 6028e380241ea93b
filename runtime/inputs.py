"""Runtime inputs at launch: validated once per call (or once per prepared block mask), kept on their device.

The kernels compute with 32-bit integers, so an input value outside int32 would be cut and compare equal to
another one (document ids 0 and 2**32): such a value is an InputError naming the input and the value, never
a silent wrong answer. The range check is one device->host synchronisation for all inputs together.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..reference import shape_inputs

__all__ = ["INT32_MIN", "INT32_MAX", "validate_inputs"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def validate_inputs(checked, q_len: int, kv_len: int, batch: int, inputs: dict, device):
    """The pattern's runtime inputs checked against its declarations (names, integer dtype, shape [L] or
    [batch, L], as the reference checks them) and within int32: (int64 [1 or batch, L] tensors on `device`,
    {name: (min, max)} of the non-empty ones) by name."""
    out = {}
    per_seq = {d.name for d in checked.inputs if d.axis == "b"}
    for name, t in shape_inputs(checked, q_len, kv_len, batch, inputs).items():
        if t.dtype == torch.uint64:   # its values above 2**63 would wrap in int64; compare them unconverted
            big = t > INT32_MAX
            if bool(big.any()):
                _out_of_range(name, t, big, name in per_seq)
        out[name] = t.to(device=device, dtype=torch.int64).contiguous()
    return out, _check_range(out, per_seq)


def _check_range(tensors: dict[str, torch.Tensor], per_seq=frozenset()) -> dict[str, tuple[int, int]]:
    nonempty = {n: t for n, t in tensors.items() if t.numel()}
    if not nonempty:
        return {}
    # one synchronisation for every input: their minima and maxima side by side
    bounds = torch.stack([torch.stack(torch.aminmax(t)) for t in nonempty.values()]).tolist()
    for (name, t), (lo, hi) in zip(nonempty.items(), bounds):
        if lo < INT32_MIN or hi > INT32_MAX:
            _out_of_range(name, t, (t < INT32_MIN) | (t > INT32_MAX), name in per_seq)
    return {name: (lo, hi) for name, (lo, hi) in zip(nonempty, bounds)}


def _out_of_range(name: str, t: torch.Tensor, bad: torch.Tensor, per_seq: bool = False):
    where = [int(i) for i in bad.nonzero()[0]]
    value = int(t[tuple(where)])
    # an int[b] input ([B', 1]) is indexed by the sequence; the others by position, per row when per batch
    at = f"[{where[0]}]" if per_seq else f"[{where[-1]}]" if t.shape[0] == 1 else f"[{where[0]}, {where[1]}]"
    raise InputError(f"runtime input '{name}' holds {value} at {at}, outside the 32-bit integer range "
                     f"[{INT32_MIN}, {INT32_MAX}] that the kernels compute in; map the values into that range "
                     f"(e.g. number documents from 0)")
