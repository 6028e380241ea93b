"""The prepared block mask: built once (per training step, say) and passed to every layer and the backward.

``attnpat.block_mask(pattern, q_len, kv_len, ...)`` validates the runtime inputs once, keeps them on their
device, and returns a :class:`PreparedMask`. ``attnpat.attention(q, k, v, pattern, block_mask=m)`` checks
the mask against q and k and reads its tables; the backward of that call reads the same object. Tables are
kept per tile shape: the first is built from the inputs (on a kernel call, at the gcd of every tile shape
that call's kernels use), and the others are coarsened from it exactly (runtime/tiles.py), so a model of any
depth builds once per mask. A call without a prepared mask makes one for itself (one build, shared by that
call's backward).

Three ways to build (docs/runtime.md says which patterns take which):

* on the device -- document patterns with monotone ids (runtime/devlower.py) or unsorted ids and a
  one-sided band (runtime/devids.py), and row-interval patterns
  (prefix lengths, sequence lengths, flags, starts: runtime/devrows.py): torch operations on the inputs'
  device, one device->host synchronisation per build;
* in closed form -- every other table-plan pattern (compiler/lower/, numpy on the CPU): the inputs are
  copied to the host once per build.
"""

from __future__ import annotations

import torch

from ..compiler.lower.variants import lower_compiled
from ..compiler.ranges import KERNEL_BITS, check_ranges
from ..errors import ArgumentError
from ..reference import check_sizes, query_positions
from .devids import unsorted_document_tiles
from .devlower import document_form, document_tiles
from .devrows import row_form, row_tiles
from .inputs import validate_inputs
from .tiles import coarsen, from_blockmask
from .tiles import tables as tile_tables

__all__ = ["PreparedMask", "prepare", "BUILD_COUNTS"]

# Builds since the process started, by path: 'device' and 'closed_form' read the inputs; 'derived' coarsens
# tiles already built (runtime/tiles.py). Benchmarks and tests count builds per step with it.
BUILD_COUNTS = {"device": 0, "closed_form": 0, "derived": 0}


class PreparedMask:
    """A pattern's block mask at one shape, with its validated runtime inputs, on one device.

    Attributes:
        compiled: the pattern's compiled value (compiler/pipeline.Compiled).
        q_len, kv_len, q_offset, q_start: the shape (q_start: absolute position of query row 0).
        batch, heads: the sizes it was built for (None: any; the mask is then shared across that axis).
        device: where its tables and inputs live.
        inputs: the validated runtime inputs, int64 [1 or batch, length] on `device`.
        builds: tables built so far, by tile shape (block_q, block_k) -> 'device' or 'closed_form'.
    """

    __slots__ = ("compiled", "q_len", "kv_len", "q_offset", "q_start", "batch", "heads", "device", "inputs",
                 "builds", "_tables", "_variants", "_inputs32", "handle", "__weakref__")

    def __init__(self, compiled, q_len, kv_len, *, batch, heads, q_offset, device, inputs):
        self.compiled, self.q_len, self.kv_len, self.q_offset = compiled, q_len, kv_len, q_offset
        self.q_start = query_positions(q_len, kv_len, q_offset)
        self.batch, self.heads, self.device, self.inputs = batch, heads, device, inputs
        self.builds: dict[tuple[int, int], str] = {}
        self._tables: dict[tuple[int, int], tuple] = {}
        self._variants: dict[tuple, torch.Tensor] = {}
        self._inputs32: dict[str, torch.Tensor] | None = None
        self.handle: torch.Tensor | None = None   # names the mask to the custom ops (runtime/op.py)

    # absolute position of key row 0; a shard's mask (attnpat/distributed.py) sets its own
    kv_start = 0

    @property
    def in_len(self) -> int:
        """The length of the int[k] runtime inputs (a query past it reads 0 there)."""
        return self.kv_len

    def kernel_inputs(self) -> dict[str, torch.Tensor]:
        """The runtime inputs as the kernels read them: int32 (their range was checked), made once per mask."""
        if self._inputs32 is None:
            self._inputs32 = {n: t.to(torch.int32) for n, t in self.inputs.items()}
        return self._inputs32

    # -- checks against a call -----------------------------------------------------------------------------

    def check(self, compiled, B: int, H: int, N: int, M: int, device, q_offset) -> None:
        """ArgumentError unless this mask fits a call of `compiled` on q [B, H, N, .] and k [B, ., M, .]."""
        if compiled.key != self.compiled.key:
            raise ArgumentError(f"'block_mask' was built for pattern '{self.compiled.name}' "
                                f"({self.compiled.canonical.text}), not for '{compiled.name}' "
                                f"({compiled.canonical.text})")
        if (N, M) != (self.q_len, self.kv_len):
            raise ArgumentError(f"'block_mask' was built for q_len={self.q_len}, kv_len={self.kv_len}, but q has "
                                f"{N} queries and k has {M} keys")
        for what, mine, call in (("batch", self._batch_rows(), B), ("heads", self.heads, H)):
            if mine is not None and mine != call:
                raise ArgumentError(f"'block_mask' was built for {what}={mine}, but q has {what} {call}")
        if torch.device(device) != self.device:
            raise ArgumentError(f"'block_mask' lives on {self.device}, but q is on {device}")
        if q_offset is not None and q_offset != self.q_offset:
            raise ArgumentError(f"'q_offset' {q_offset} differs from the block mask's ({self.q_offset}); build "
                                f"the mask with q_offset={q_offset}, or leave q_offset out of the call")

    def _batch_rows(self):
        per_batch = max((t.shape[0] for t in self.inputs.values()), default=1)
        return self.batch if self.batch is not None else (per_batch if per_batch > 1 else None)

    # -- tables ---------------------------------------------------------------------------------------------

    def tables(self, block_q: int, block_k: int, B: int, H: int, *, transposed: bool = False) -> dict:
        """The kernels' table arguments for tiles of block_q queries x block_k keys at batch B, heads H:
        Variant, RowPtrP, ColIdxP, RowPtrF, ColIdxF and NUM_QB (NUM_KB when transposed); {} for band plans."""
        if self.compiled.plan.mode == "band":
            return {}
        entry = self._tables.get((block_q, block_k))
        if entry is None:
            tiles, variant = self._tiles_at(block_q, block_k)
            entry = self._tables[(block_q, block_k)] = (*tile_tables(tiles), variant, tiles)
        fwd, bwd, variant, _ = entry
        key = (block_q, block_k, B, H)
        flat = self._variants.get(key)
        if flat is None:   # [Bm, Hm] stored variants, broadcast to the call's batch and heads
            flat = variant.to(self.device).expand(B, H).to(torch.int32).contiguous().reshape(-1)
            self._variants[key] = flat
        return {**(bwd if transposed else fwd), "Variant": flat}

    def _tiles_at(self, block_q: int, block_k: int):
        # a shape whose tiles divide these: coarsen its tiles (exact, no input read, no synchronisation)
        finer = [(bq * bk, (bq, bk)) for (bq, bk) in self._tables if block_q % bq == 0 and block_k % bk == 0]
        if finer:
            shape = max(finer)[1]
            _, _, variant, tiles = self._tables[shape]
            BUILD_COUNTS["derived"] += 1
            self.builds[(block_q, block_k)] = f"derived from {shape[0]}x{shape[1]}"
            return coarsen(tiles, block_q, block_k), variant
        form = document_form(self.compiled.canonical.ir) if self.compiled.plan.inputs else None
        if form is not None and not self.compiled.plan.uses_h and not self.compiled.plan.uses_b:
            doc = self.inputs[form[0]]
            tiles = document_tiles(form, doc, self.q_len, self.kv_len, self.q_start, block_q, block_k)
            if tiles is None:   # ids not monotone: the join of id groups (one more synchronisation)
                tiles = unsorted_document_tiles(form, doc, self.q_len, self.kv_len, self.q_start, block_q, block_k)
            if tiles is not None:
                BUILD_COUNTS["device"] += 1
                self.builds[(block_q, block_k)] = "device"
                return tiles, torch.arange(doc.shape[0]).view(-1, 1)
        form = row_form(self.compiled.canonical.ir) if self.compiled.plan.inputs else None
        if form is not None and not self.compiled.plan.uses_h and not self.compiled.plan.uses_b:
            axes = {d.name: d.axis for d in self.compiled.checked.inputs}
            tiles = row_tiles(form, self.inputs, axes, self.q_len, self.kv_len, self.q_start, block_q, block_k)
            if tiles is not None:
                BUILD_COUNTS["device"] += 1
                self.builds[(block_q, block_k)] = "device"
                return tiles, torch.arange(tiles.variants).view(-1, 1)
        BUILD_COUNTS["closed_form"] += 1
        self.builds[(block_q, block_k)] = "closed_form"
        plan = self.compiled.plan
        rows = self.batch if plan.uses_b else (self._batch_rows() or 1)
        tables = {n: t.cpu().numpy() for n, t in self.inputs.items()}   # one copy per build
        bm, _ = lower_compiled(self.compiled, self.q_len, self.kv_len, block_q=block_q, block_k=block_k,
                               heads=self.heads if plan.uses_h else 1, batch=rows, q_start=self.q_start,
                               tables=tables)
        return from_blockmask(bm, self.device), torch.from_numpy(bm.variant.astype("int64"))

    def tile_kinds(self, block_q: int, block_k: int, B: int = 1, H: int = 1):
        """The tiles of the (built) forward tables as a uint8 numpy array [B, H, Q blocks, K blocks]: 0 EMPTY,
        1 PARTIAL, 2 FULL (tests and benchmarks compare them tile by tile; reads the tables to the host)."""
        import numpy as np
        t = {n: (x.cpu().numpy() if isinstance(x, torch.Tensor) else x)
             for n, x in self.tables(block_q, block_k, B, H).items()}
        nqb, nkb = -(-self.q_len // block_q), -(-self.kv_len // block_k)
        out = np.zeros((B * H, nqb, nkb), np.uint8)
        if not t:   # a band plan: no tables; every tile is decided in the kernel
            raise ArgumentError(f"pattern '{self.compiled.name}' has a band plan: its kernels use no tables")
        for kind, ptr, idx in ((1, t["RowPtrP"], t["ColIdxP"]), (2, t["RowPtrF"], t["ColIdxF"])):
            for bh, v in enumerate(t["Variant"]):
                p = ptr[v * (nqb + 1):(v + 1) * (nqb + 1)]
                for i in range(nqb):
                    out[bh, i, idx[p[i]:p[i + 1]]] = kind
        return out.reshape(B, H, nqb, nkb)

    def __repr__(self) -> str:
        built = ", ".join(f"{bq}x{bk}:{how}" for (bq, bk), how in self.builds.items()) or "none yet"
        return (f"PreparedMask({self.compiled.name}, q_len={self.q_len}, kv_len={self.kv_len}, batch={self.batch}, "
                f"heads={self.heads}, q_offset={self.q_offset}, device={self.device}, tables: {built})")


def prepare(compiled, q_len: int, kv_len: int, *, batch=None, heads=None, q_offset=None, device=None,
            inputs=None) -> PreparedMask:
    """A PreparedMask: sizes and q_offset checked (ArgumentError), runtime inputs validated (InputError) and
    moved to `device` (default: the device of the first tensor input, else the CPU)."""
    check_sizes(q_len=q_len, kv_len=kv_len)
    for name, value in (("batch", batch), ("heads", heads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ArgumentError(f"'{name}' must be a non-negative int or None, got {value!r}")
    q_offset = check_q_offset(q_offset)
    for name, value, var in (("heads", heads, "h"), ("batch", batch, "b")):
        if value is None and getattr(compiled.plan, f"uses_{var}"):
            raise ArgumentError(f"pattern '{compiled.name}' reads the {name[:-1] if name == 'heads' else name} "
                                f"index {var}: pass {name}=")
    inputs = dict(inputs or {})
    if device is None:
        device = next((t.device for t in inputs.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rows = batch if batch is not None else _input_rows(compiled, inputs)
    valid, ranges = validate_inputs(compiled.checked, q_len, kv_len, rows, inputs, device)
    mask = PreparedMask(compiled, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, device=device,
                        inputs=valid)
    # the kernels compute positions, inputs and the predicate in int32: every value they would compute at this
    # shape must fit, or the launch is a RangeError pointing at the pattern (never an overflow in the kernel)
    check_ranges(compiled, (mask.q_start, mask.q_start + q_len - 1), (0, kv_len - 1), ranges, bits=KERNEL_BITS,
                 h_range=(0, max(heads or 1, 1) - 1), b_range=(0, max(batch or 1, 1) - 1),
                 bands=compiled.plan.mode == "band")
    return mask


def _input_rows(compiled, inputs: dict) -> int:
    """The batch the inputs are given for, when the call does not say: the rows of [batch, L] inputs and the
    length of int[b] inputs ([batch]); 1 when every input is shared."""
    axes = {d.name: d.axis for d in compiled.checked.inputs}
    rows = [1]
    for name, t in inputs.items():
        dim = t.dim() if isinstance(t, torch.Tensor) else getattr(t, "ndim", None)
        if dim is None:
            try:
                dim = torch.as_tensor(t).dim()
            except Exception:
                continue   # shape_inputs reports it
        if (dim == 2 and axes.get(name) != "b") or (dim == 1 and axes.get(name) == "b"):
            rows.append(len(t))
    return max(rows)


def check_q_offset(q_offset):
    """q_offset as a Python int (numpy integers and 0-dim integer tensors accepted) or None; ArgumentError
    otherwise."""
    if q_offset is None:
        return None
    if isinstance(q_offset, (int, torch.SymInt)) and not isinstance(q_offset, bool):
        return q_offset   # as is: under torch.compile a cache length Dynamo made dynamic is a SymInt the ops take
    if isinstance(q_offset, torch.Tensor) and q_offset.dim() == 0 and not q_offset.dtype.is_floating_point \
            and q_offset.dtype != torch.bool:
        return int(q_offset)
    if isinstance(q_offset, bool) or not hasattr(q_offset, "__index__"):
        raise ArgumentError(f"'q_offset' must be an int or None, got {q_offset!r}")
    return int(q_offset.__index__())
