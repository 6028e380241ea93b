"""The launch signatures of the generated kernels, defined once.

A :class:`Signature` lists a kernel's parameters in order, in groups (tensors, their strides, the block-mask
tables, the runtime inputs, scalars, compile-time constants). The templates print it as the kernel's
``def`` line, the launchers (runtime/kernel.py, runtime/autograd.py) bind their values to it by name, and
the ahead-of-time requests read from it which parameters are pointers, floats, unit strides and strides
divisible by 16. A band plan's signature has no tables: its kernels compute their key or query blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import KernelPlan

__all__ = ["Param", "Signature", "forward", "dkdv", "dq", "decode", "input_names", "KERNELS"]


@dataclass(frozen=True, slots=True)
class Param:
    """One kernel parameter.

    Attributes:
        name: the parameter's name in the kernel.
        kind: 'pointer', 'int', 'float' or 'constexpr'.
        element: a pointer's element type: 'DT' (the attention dtype), 'fp32', 'i32' or 'i8'.
        tensor, dim: a stride parameter's tensor parameter and dimension (the launcher reads it there).
        unit: a head-dim stride, 1 for contiguous tensors (ahead-of-time compiles make it a constant).
        divisible: a stride that is a multiple of 16 for contiguous tensors (as Triton's JIT specialises).
    """

    name: str
    kind: str
    element: str = ""
    tensor: str = ""
    dim: int = -1
    unit: bool = False
    divisible: bool = False


@dataclass(frozen=True, slots=True)
class Signature:
    """A kernel's parameters in order, as groups (one line each in the kernel's ``def``)."""

    kernel: str
    groups: tuple[tuple[Param, ...], ...]

    @property
    def params(self) -> tuple[Param, ...]:
        """Every parameter in order."""
        return tuple(p for group in self.groups for p in group)

    def code(self, indent: int) -> str:
        """The parameter list as kernel code: one group per line, continued at column `indent`."""
        lines = []
        for group in self.groups:
            names = [f"{p.name}: tl.constexpr" if p.kind == "constexpr" else p.name for p in group]
            line: list[str] = []
            for name in names:   # long groups (the constants) wrap at about 110 columns
                if line and indent + len(", ".join(line + [name])) > 108:
                    lines.append(", ".join(line))
                    line = []
                line.append(name)
            lines.append(", ".join(line))
        return (",\n" + " " * indent).join(lines)

    def bind(self, **values) -> dict:
        """The launch's keyword arguments: every parameter by name, a stride read from its tensor's strides
        when not given. Raises TypeError for a missing or unknown name (a launcher out of step)."""
        params = self.params
        unknown = set(values) - {p.name for p in params}
        if unknown:
            raise TypeError(f"{self.kernel} has no parameter {sorted(unknown)[0]!r}")
        out = {}
        for p in params:
            if p.name in values:
                out[p.name] = values[p.name]
            elif p.tensor:
                out[p.name] = values[p.tensor].stride(p.dim)
            else:
                raise TypeError(f"{self.kernel}: no value for parameter {p.name!r}")
        return out

    def pointers(self) -> dict[str, str]:
        """Pointer parameters and their element types ('DT', 'fp32', 'i32', 'i8')."""
        return {p.name: p.element for p in self.params if p.kind == "pointer"}

    def floats(self) -> list[str]:
        """The fp32 scalar parameters."""
        return [p.name for p in self.params if p.kind == "float"]

    def unit_strides(self) -> list[str]:
        """Head-dim strides, 1 for contiguous tensors."""
        return [p.name for p in self.params if p.unit]

    def divisible(self) -> list[str]:
        """Strides that are multiples of 16 for contiguous tensors."""
        return [p.name for p in self.params if p.divisible]


def input_names(i: int) -> tuple[str, str]:
    """The pointer and batch-stride parameter names of runtime input `i`."""
    return f"In{i}", f"stride_in{i}"


def _tensors(*specs: tuple[str, str, str]) -> tuple[tuple[Param, ...], ...]:
    """Pointer parameters, then one group of strides per 4-D tensor: (name, stride prefix or '', element)."""
    groups = [tuple(Param(name, "pointer", element) for name, _, element in specs)]
    for name, prefix, _ in specs:
        if prefix:
            rows = "m" if prefix in ("q", "o", "do", "dq") else "n"
            groups.append(tuple(Param(f"stride_{prefix}{axis}", "int", tensor=name, dim=d, unit=axis == "d",
                                      divisible=axis != "d") for d, axis in enumerate("bh" + rows + "d")))
    return tuple(groups)


def _vbad() -> tuple[tuple[Param, ...], ...]:
    """VBad, int8 [B, Hkv, kv_len] from the launcher: 1 where a key's v row holds a NaN or an inf (the kernels
    read such a row as 0 where it could reach a row it is masked for; docs/kernels.md, "Non-finite values").
    Its key stride is 1; its other strides need not be multiples of 16 (they are kv_len and Hkv x kv_len)."""
    return ((Param("VBad", "pointer", "i8"), Param("stride_vbadb", "int", tensor="VBad", dim=0),
             Param("stride_vbadh", "int", tensor="VBad", dim=1)),)


def _tables(kplan: KernelPlan, count: str) -> tuple[tuple[Param, ...], ...]:
    if kplan.mode == "band":
        return ()
    return (tuple(Param(n, "pointer", "i32") for n in ("Variant", "RowPtrP", "ColIdxP", "RowPtrF", "ColIdxF"))
            + (Param(count, "int"),),)


def _inputs(kplan: KernelPlan) -> tuple[tuple[Param, ...], ...]:
    if not kplan.inputs:
        return ()
    group = []
    for i in range(len(kplan.inputs)):
        ptr, stride = input_names(i)
        group += [Param(ptr, "pointer", "i32"), Param(stride, "int")]
    return (tuple(group),)


def _float_inputs(kplan: KernelPlan) -> tuple[tuple[Param, ...], ...]:
    """The score terms' float[h] inputs (fp32 [H] tensors): one group, none without them."""
    return (tuple(Param(f"FIn{i}", "pointer", "fp32") for i in range(len(kplan.float_inputs))),) \
        if kplan.float_inputs else ()


def bias_grad_names(kplan: KernelPlan) -> tuple[str, ...]:
    """The dQ kernel's outputs for the gradients of float inputs a bias reads: DFin{i}, i the input's FIn
    index; each holds one fp32 partial sum per (batch x head, query block) program."""
    return tuple(f"DFin{i}" for i, n in enumerate(kplan.float_inputs) if n in kplan.bias_inputs)


def _scalars(ints: str, floats: str) -> tuple[Param, ...]:
    return tuple(Param(n, "int") for n in ints.split()) + tuple(Param(n, "float") for n in floats.split())


def _constants(names: str) -> tuple[Param, ...]:
    return tuple(Param(n, "constexpr") for n in names.split())


def forward(kplan: KernelPlan) -> Signature:
    """attn_fwd: one program per (query block, batch x head)."""
    return Signature("attn_fwd", (
        *_tensors(("Q", "q", "DT"), ("K", "k", "DT"), ("V", "v", "DT"), ("Out", "o", "DT"), ("Lse", "", "fp32")),
        *_vbad(), *_tables(kplan, "NUM_QB"), *_inputs(kplan), *_float_inputs(kplan),
        _scalars("H GROUP Q_LEN KV_LEN Q_START KV_START IN_LEN", "qk_scale"),
        _constants("HEAD_DIM HEAD_DIM_P BLOCK_M BLOCK_N EVEN_N WRITE_LSE DOT_PRECISION")))


_BWD_TENSORS = (("Q", "q", "DT"), ("K", "k", "DT"), ("V", "v", "DT"), ("DO", "do", "DT"), ("Lse", "", "fp32"),
                ("Delta", "", "fp32"))
_BWD_CONSTANTS = "HEAD_DIM HEAD_DIM_P BLOCK_M BLOCK_N EVEN_N DOT_PRECISION"


def dkdv(kplan: KernelPlan) -> Signature:
    """attn_bwd_dkdv: one program per (key block, batch x kv head)."""
    return Signature("attn_bwd_dkdv", (
        *_tensors(*_BWD_TENSORS, ("DK", "dk", "DT"), ("DV", "dv", "DT")), *_vbad(),
        *_tables(kplan, "NUM_KB"), *_inputs(kplan), *_float_inputs(kplan),
        _scalars("H HKV GROUP Q_LEN KV_LEN Q_START KV_START IN_LEN", "qk_scale sm_scale"), _constants(_BWD_CONSTANTS)))


def dq(kplan: KernelPlan) -> Signature:
    """attn_bwd_dq: one program per (query block, batch x query head)."""
    return Signature("attn_bwd_dq", (
        *_tensors(*_BWD_TENSORS, ("DQ", "dq", "DT")), *_vbad(),
        *_tables(kplan, "NUM_QB"), *_inputs(kplan), *_float_inputs(kplan),
        *((tuple(Param(n, "pointer", "fp32") for n in bias_grad_names(kplan)),) if kplan.bias_inputs else ()),
        _scalars("H GROUP Q_LEN KV_LEN Q_START KV_START IN_LEN", "qk_scale sm_scale"), _constants(_BWD_CONSTANTS)))


def decode(kplan: KernelPlan) -> Signature:
    """attn_decode: one program per (split of the key tiles, batch x query heads of one KV group)."""
    return Signature("attn_decode", (
        *_tensors(("Q", "q", "DT"), ("K", "k", "DT"), ("V", "v", "DT"), ("OutP", "", "fp32"), ("LseP", "", "fp32"),
                  ("QStart", "", "i32"), ("KvLen", "", "i32")),
        *_tables(kplan, "NUM_QB"), *_inputs(kplan),
        _scalars("H GROUP Q_LEN SINK RING NUM_SPLITS ROWS", "qk_scale"),
        _constants("HEAD_DIM HEAD_DIM_P BLOCK_M BLOCK_N Q_ROWS HEADS_PER_PROG RING_BUF DOT_PRECISION")))


KERNELS = {"attn_fwd": forward, "attn_bwd_dkdv": dkdv, "attn_bwd_dq": dq}
