"""attnpat.KVCache: a decoder's KV cache sized by the pattern, read in place by the decode kernel.

A windowed pattern's queries never look further back than its look-back, so a cache needs only look-back + 1
entries per sequence and head for the window, plus the columns every later query keeps seeing (attention
sinks, a global prefix), which are stored in slots of their own. The window lives in a ring buffer: position
p >= sink sits in slot sink + (p - sink) % size, and the decode kernel (runtime/decode.py) walks key
POSITIONS and maps each to its slot, so the pattern is evaluated at the true absolute positions. The ring has
MAX_Q_LEN - 1 slots more than the capacity so that a chunk of up to 16 new queries still finds every key its
first query may see; longer prefills are attended 16 positions at a time.

Patterns whose look-back grows with the position (causal, full attention, a bidirectional prefix) cannot be
bounded: their cache stores position p in slot p and grows (``cache.bounded`` is False, ``cache.capacity``
None). So do patterns with a table plan (BigBird, Longformer's globals, per-head windows, chunks): their
look-back is not read from linear bounds yet, and their block mask, built per step, needs every sequence of
the batch at the same position. Patterns with runtime inputs (documents) are not supported yet
(ArgumentError).
"""

from __future__ import annotations

import torch

from ..errors import ArgumentError
from ..reference import check_sizes
from .backend import interpreting
from .blockmask import prepare
from .checks import SUPPORTED_DTYPES
from .decode import BLOCK_Q, MAX_Q_LEN, Ring, check_num_splits, compiled_of, decode_config, launch

__all__ = ["KVCache", "layer_caches", "footprint"]


def footprint(compiled) -> tuple[int, int | None]:
    """(sink columns, look-back) of a band-plan pattern from its key intervals: a family with a constant upper
    bound keeps columns [0, bound] forever (sinks, a global prefix); one with a lower bound q - c looks back c
    positions; anything else makes the look-back unbounded (None)."""
    sink, back = 0, 0
    for los, his in compiled.plan.bounds:
        hi_c = [c for kind, c in his if kind == "c"]
        lo_q = [c for kind, c in los if kind == "q"]
        if hi_c:
            sink = max(sink, min(hi_c) + 1)
        elif lo_q:
            back = max(back, -max(lo_q))
        else:
            return sink, None
    if not compiled.plan.bounds:   # no linear bound at all (full attention)
        return 0, None
    return max(sink, 0), back


class KVCache:
    """A KV cache for one pattern (one layer): ``out = cache.attend(q, k_new, v_new)``.

    Args:
        pattern: a Pattern or a FILE_OR_NAME[:PATTERN] string with a band plan and no runtime inputs.
        batch, kv_heads, head_dim: the cached sequences, KV heads and head size.
        dtype: the keys' and values' dtype (fp16, bf16 or fp32); device: where they live.
        num_splits: the decode kernel's key splits per row (default: enough to fill the GPU).

    Attributes:
        capacity: entries a sequence and KV head needs, sinks + look-back + 1 (None: unbounded).
        sinks, lookback: the two parts of it (lookback None when unbounded).
        bounded: whether the cache stops growing; slots: entries held per sequence and head now.
        lengths: positions appended per sequence (int64 [batch] on the CPU).
    """

    def __init__(self, pattern, *, batch: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device=None,
                 num_splits: int | None = None):
        check_sizes(batch=batch, kv_heads=kv_heads, head_dim=head_dim)
        if dtype not in SUPPORTED_DTYPES:
            raise ArgumentError(f"'dtype' must be torch.float16, torch.bfloat16 or torch.float32, got {dtype!r}")
        if not 16 <= head_dim <= 256:
            raise ArgumentError(f"head_dim must be between 16 and 256, got {head_dim}")
        check_num_splits(num_splits)
        self.num_splits = num_splits
        compiled = self.compiled = compiled_of(pattern)
        if compiled.plan.inputs:
            raise ArgumentError(f"KVCache does not support patterns with runtime inputs yet ('{compiled.name}' "
                                f"reads {', '.join(sorted(dict(compiled.plan.inputs)))})")
        # a table plan's look-back is not read from linear bounds: its cache grows (see the module docstring)
        self.sinks, self.lookback = footprint(compiled) if compiled.plan.mode == "band" else (0, None)
        self.bounded = self.lookback is not None
        self.capacity = self.sinks + self.lookback + 1 if self.bounded else None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.device.type != "cuda" and not (self.device.type == "cpu" and interpreting()):
            raise ArgumentError(f"a KVCache on {self.device} cannot run the decode kernel: use a CUDA device (or "
                                f"the CPU under TRITON_INTERPRET=1)")
        self.batch, self.kv_heads, self.head_dim, self.dtype = batch, kv_heads, head_dim, dtype
        slots = self.capacity + MAX_Q_LEN - 1 if self.bounded else 64
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=self.device)
        self.v = torch.zeros_like(self.k)
        self.lengths = torch.zeros(batch, dtype=torch.int64)
        self._checked = 0   # positions up to which the int32 range proof (blockmask.prepare) has run

    @property
    def slots(self) -> int:
        """Entries held per sequence and KV head."""
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held."""
        return 2 * self.k.numel() * self.k.element_size()

    def reset(self) -> None:
        """Forget every sequence (the storage is kept)."""
        self.lengths.zero_()

    def attend(self, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, *, lengths=None, scale=None,
               return_lse: bool = False):
        """Append k_new, v_new [B, Hkv, n, D] at each sequence's next positions and return the attention of
        q [B, Hq, n, D] (the queries at those positions) over everything the pattern lets them see.

        lengths: new positions per sequence (ints <= n; default n): sequence b appends only its first
        lengths[b], and its other query rows get 0 (log-sum-exp -inf).
        """
        n = self._check(q, k_new, v_new)
        counts = self._counts(lengths, n)
        scale = 1.0 / self.head_dim ** 0.5 if scale is None else scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not abs(scale) < float("inf"):
            raise ArgumentError(f"'scale' must be a finite number, got {scale!r}")
        outs, lses = [], []
        for c0 in range(0, n, MAX_Q_LEN):   # the ring's spare slots cover MAX_Q_LEN new positions at a time
            c1 = min(c0 + MAX_Q_LEN, n)
            part = (counts - c0).clamp(0, c1 - c0)
            out, lse = self._step(q[:, :, c0:c1], k_new[:, :, c0:c1], v_new[:, :, c0:c1], part, scale)
            outs.append(out)
            lses.append(lse)
        out = torch.cat(outs, 2) if outs else torch.zeros_like(q)
        lse = torch.cat(lses, 2) if lses else torch.full(q.shape[:3], float("-inf"), device=q.device)
        return (out, lse) if return_lse else out

    def _check(self, q, k_new, v_new) -> int:
        for name, t in (("q", q), ("k_new", k_new), ("v_new", v_new)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                raise ArgumentError(f"'{name}' must be a 4-D tensor [B, H, n, D]")
            if t.dtype != self.dtype or t.device != self.device:
                raise ArgumentError(f"'{name}' must be {self.dtype} on {self.device} like the cache, got "
                                    f"{t.dtype} on {t.device}")
        B, Hq, n, D = q.shape
        if (B, D) != (self.batch, self.head_dim) or k_new.shape != (B, self.kv_heads, n, D) \
                or v_new.shape != k_new.shape:
            raise ArgumentError(f"expected q [{self.batch}, Hq, n, {self.head_dim}] and k_new, v_new "
                                f"[{self.batch}, {self.kv_heads}, n, {self.head_dim}], got {list(q.shape)}, "
                                f"{list(k_new.shape)}, {list(v_new.shape)}")
        if Hq % self.kv_heads:
            raise ArgumentError(f"q's {Hq} heads must be a multiple of the cache's {self.kv_heads} KV heads")
        return n

    def _counts(self, lengths, n: int) -> torch.Tensor:
        if lengths is None:
            return torch.full((self.batch,), n, dtype=torch.int64)
        counts = torch.as_tensor(lengths).to("cpu")
        if counts.dtype.is_floating_point or counts.dtype == torch.bool or counts.shape != (self.batch,):
            raise ArgumentError(f"'lengths' must hold {self.batch} ints, got {lengths!r}")
        if (counts < 0).any() or (counts > n).any():
            raise ArgumentError(f"'lengths' must be between 0 and {n}, got {counts.tolist()}")
        return counts.to(torch.int64)

    def _slots_of(self, pos: torch.Tensor) -> torch.Tensor:
        if not self.bounded:
            return pos
        ring = self.slots - self.sinks
        return torch.where(pos < self.sinks, pos, self.sinks + (pos - self.sinks) % ring)

    def _step(self, q, k_new, v_new, counts: torch.Tensor, scale: float):
        B, Hq, n, _ = q.shape
        start = self.lengths.clone()
        end = start + counts
        top = int(end.max())
        if top >= self._checked:   # the kernel computes positions in int32: prove this range fits once
            plan = self.compiled.plan
            prepare(self.compiled, 1, 2 * top + MAX_Q_LEN, batch=B if plan.uses_b else None,
                    heads=Hq if plan.uses_h else None, device=self.device)
            self._checked = 2 * top + MAX_Q_LEN
        tables = self._tables(start, n, top, Hq)   # before anything is written: it may refuse the step
        if not self.bounded and top > self.slots:
            self._grow(max(top, 2 * self.slots))
        # -- append: position start[b] + j goes to its slot (the ring overwrites what no query can see) --
        j = torch.arange(n)
        valid = j[None, :] < counts[:, None]
        pos = start[:, None] + j[None, :]
        rows = torch.arange(B)[:, None].expand(B, n)[valid].to(self.device)
        slots = self._slots_of(pos)[valid].to(self.device)
        self.k[rows, :, slots] = k_new.permute(0, 2, 1, 3)[valid.to(self.device)]
        self.v[rows, :, slots] = v_new.permute(0, 2, 1, 3)[valid.to(self.device)]
        self.lengths = end
        ring = Ring(self.sinks, self.slots - self.sinks) if self.bounded else None
        span = self.capacity + n - 1 if self.bounded else top
        with torch.no_grad():
            out, lse = launch(self.compiled, q, self.k, self.v, start.to(self.device, torch.int32),
                              end.to(self.device, torch.int32), scale, tables=tables,
                              inputs={}, ring=ring, span=span, num_splits=self.num_splits)
        keep = valid.to(self.device)
        if not bool(valid.all()):   # padding rows: nothing appended, nothing attended
            out = out * keep[:, None, :, None]
            lse = torch.where(keep[:, None, :], lse, float("-inf"))
        return out, lse

    def _tables(self, start: torch.Tensor, n: int, top: int, heads: int) -> dict:
        """A table plan's block-mask tables for this step: one mask for the batch, so every sequence must be at
        the same position; {} for band plans."""
        plan = self.compiled.plan
        if plan.mode == "band":
            return {}
        if bool((start != start[0]).any()):
            raise ArgumentError(f"pattern '{self.compiled.name}' has a table plan: its KVCache needs every sequence "
                                f"at the same position, got lengths {start.tolist()}")
        mask = prepare(self.compiled, n, top, batch=self.batch if plan.uses_b else None,
                       heads=heads if plan.uses_h else None, q_offset=int(start[0]), device=self.device)
        return mask.tables(BLOCK_Q, decode_config(self.head_dim, self.dtype, 16).block_n, self.batch, heads)

    def _grow(self, slots: int) -> None:
        extra = slots - self.slots
        pad = torch.zeros(self.batch, self.kv_heads, extra, self.head_dim, dtype=self.dtype, device=self.device)
        self.k = torch.cat([self.k, pad], 2)
        self.v = torch.cat([self.v, pad.clone()], 2)

    def __repr__(self) -> str:
        size = f"capacity={self.capacity}" if self.bounded else "unbounded (grows)"
        return (f"KVCache({self.compiled.name}, {size}, sinks={self.sinks}, slots={self.slots}, "
                f"lengths={self.lengths.tolist()})")


def layer_caches(patterns, *, batch: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device=None,
                 num_splits: int | None = None):
    """One KVCache per layer, each sized by its own pattern (e.g. a 5 local : 1 global stack)."""
    return [KVCache(p, batch=batch, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype, device=device,
                    num_splits=num_splits) for p in patterns]
