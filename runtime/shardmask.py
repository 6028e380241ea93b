"""A block mask cut from a prepared one: a query-row range x a key range whose first key sits at an absolute
position (the kernels' KV_START). attnpat.distributed runs each (query shard x fetched key range) pair with
one; ``attention(..., kv_start=)`` runs a call on keys that start past position 0."""

from __future__ import annotations

import torch

__all__ = ["ShardMask"]


class ShardMask:
    """The block mask of one (query rows x key range) call of the kernels, cut from a larger prepared mask
    `whole` (keys from position 0): queries at absolute positions q_start.. (rows of `whole` from
    q_start - whole.q_start), keys at kv_start.., runtime inputs the whole mask's (int[q] inputs cut to the
    rows). Quacks like a PreparedMask for the launchers.

    Table plans reuse `whole`'s tiles, cropped to the pair when both offsets are multiples of the tile sides,
    else every tile PARTIAL (the predicate decides each pair: exact, slower)."""

    def __init__(self, whole, q_start: int, q_len: int, kv_start: int, kv_len: int):
        self.whole, self.compiled = whole, whole.compiled
        self.q_start, self.q_len, self.kv_start, self.kv_len = q_start, q_len, kv_start, kv_len
        self.in_len = whole.kv_len
        self.device = whole.device
        self.builds = {"shard": "cut from a prepared mask"}   # Kernel.run: nothing to build ahead
        self._tables: dict = {}
        self._row0 = q_start - whole.q_start
        axes = {d.name: d.axis for d in self.compiled.checked.inputs}
        self._inputs = {n: (t[:, self._row0:self._row0 + q_len].contiguous() if axes.get(n) == "q" else t)
                        for n, t in whole.kernel_inputs().items()}

    def kernel_inputs(self) -> dict[str, torch.Tensor]:
        """The runtime inputs as the kernels read them (int32)."""
        return self._inputs

    def tables(self, block_q: int, block_k: int, B: int, H: int, *, transposed: bool = False) -> dict:
        """The kernels' table arguments for this pair ({} for band plans)."""
        if self.compiled.plan.mode == "band":
            return {}
        key = (block_q, block_k, B, H)
        if key not in self._tables:
            self._tables[key] = self._build(block_q, block_k, B, H)
        fwd, bwd, variant = self._tables[key]
        return {**(bwd if transposed else fwd), "Variant": variant}

    def _build(self, block_q: int, block_k: int, B: int, H: int):
        from .tiles import Tiles, tables as tile_tables
        nqb, nkb = -(-self.q_len // block_q), -(-self.kv_len // block_k)
        dev = self.device
        if self._row0 % block_q == 0 and self.kv_start % block_k == 0:
            self.whole.tables(block_q, block_k, B, H)                    # builds the whole mask's tiles once
            _, _, variant, t = self.whole._tables[(block_q, block_k)]
            q0, k0 = self._row0 // block_q, self.kv_start // block_k
            sel = (t.qb >= q0) & (t.qb < q0 + nqb) & (t.kb >= k0) & (t.kb < k0 + nkb) & (t.kind > 0)
            tiles = Tiles(t.v[sel], t.qb[sel] - q0, t.kb[sel] - k0, t.kind[sel], t.variants, nqb, nkb,
                          block_q, block_k)
            flat = variant.to(dev).expand(B, H).to(torch.int32).contiguous().reshape(-1)
        else:
            qb = torch.arange(nqb, device=dev).repeat_interleave(nkb)
            tiles = Tiles(torch.zeros_like(qb), qb, torch.arange(nkb, device=dev).repeat(nqb),
                          torch.ones_like(qb), 1, nqb, nkb, block_q, block_k)
            flat = torch.zeros(B * H, dtype=torch.int32, device=dev)
        fwd, bwd = tile_tables(tiles)
        return fwd, bwd, flat
