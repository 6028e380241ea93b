"""The geometry of one lowering: block boundaries, per-block input summaries and boxes of tiles.

Shared by every step of the lowering (support, classification, chunk cells, refinement) and by the
analysis, which counts allowed pairs on the same tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ArgumentError
from ..semantics import ALL, NONE, SOME

__all__ = ["BIG", "NONE", "SOME", "ALL", "CELL_BUDGET", "Geo", "Box", "floordiv", "lin_range"]

CELL_BUDGET = 1 << 25     # (tile, chunk cell) pairs evaluated, at most, per chunk of candidate tiles
BIG = np.int64(1) << 62   # stands for an unbounded end of a range
# NONE, SOME, ALL (from the semantics table): a condition is false at every point of a tile, true at some,
# true at every one.


class Geo:
    """Block boundaries and per-block summaries of the runtime inputs for one (batch) slice."""

    def __init__(self, q_len, kv_len, block_q, block_k, q_start, inputs: dict[str, tuple[str, np.ndarray]]):
        self.q_len, self.kv_len, self.bq, self.bk, self.q_start = q_len, kv_len, block_q, block_k, q_start
        self.nqb, self.nkb = -(-q_len // block_q), -(-kv_len // block_k)
        rows = np.arange(self.nqb, dtype=np.int64)
        self.q_lo = q_start + rows * block_q
        self.q_hi = q_start + np.minimum((rows + 1) * block_q, q_len) - 1
        cols = np.arange(self.nkb, dtype=np.int64)
        self.k_lo = cols * block_k
        self.k_hi = np.minimum((cols + 1) * block_k, kv_len) - 1
        self.inputs = inputs          # name -> (axis, values int64 [L]; [1] for an int[b] input)
        self._summary: dict = {}
        self.cells_left = CELL_BUDGET  # chunk-cell evaluations still allowed (reset per chunk of tiles)

    def input_range(self, name: str, index_axis: str):
        """Per-block (min, max) of input `name` read at q (per query block) or k (per key block)."""
        key = (name, index_axis)
        if key not in self._summary:
            axis, values = self.inputs[name]
            if index_axis == "k":
                starts, n = self.k_lo, self.kv_len
            elif axis == "q":
                starts, n = np.arange(self.nqb, dtype=np.int64) * self.bq, self.q_len
            else:
                starts = self.q_lo
                n = self.kv_len
                if self.q_len and (self.q_start < 0 or self.q_start + self.q_len > self.kv_len):
                    raise ArgumentError(f"'{name}[q]' reads query positions {self.q_start}.."
                                        f"{self.q_start + self.q_len - 1}, outside the {self.kv_len} values of "
                                        f"int[k] input '{name}'")
                starts = starts.copy()
            block = self.bk if index_axis == "k" else self.bq
            if len(values) == 0 or len(starts) == 0:
                self._summary[key] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                starts = np.clip(starts, 0, n - 1)
                mins = np.minimum.reduceat(values, starts)
                maxs = np.maximum.reduceat(values, starts)
                # reduceat runs to the next start; the last block may be cut short of a full block.
                ends = np.minimum(starts + block, n)
                if len(starts) and ends[-1] < n:
                    mins[-1] = values[starts[-1]:ends[-1]].min()
                    maxs[-1] = values[starts[-1]:ends[-1]].max()
                self._summary[key] = (mins, maxs)
        return self._summary[key]


@dataclass
class Box:
    """Rectangles [q0, q1] x [k0, k1] of absolute positions, one per tile (empty when q0 > q1 or k0 > k1)."""

    q0: np.ndarray
    q1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    qb: np.ndarray   # the query block of each tile (for per-block input summaries)
    kb: np.ndarray

    def restrict(self, q0=None, q1=None, k0=None, k1=None) -> "Box":
        return Box(self.q0 if q0 is None else q0, self.q1 if q1 is None else q1,
                   self.k0 if k0 is None else k0, self.k1 if k1 is None else k1, self.qb, self.kb)


def lin_range(cq, ck, box: Box):
    """(min, max) of cq * q + ck * k over each rectangle of the box."""
    a, b = cq * box.q0, cq * box.q1
    c, d = ck * box.k0, ck * box.k1
    return np.minimum(a, b) + np.minimum(c, d), np.maximum(a, b) + np.maximum(c, d)


def floordiv(a, b):
    """Python's floor division, element-wise."""
    return np.floor_divide(a, b)
