"""The `hash(...)` builtin: a seeded 32-bit integer hash, one definition for every evaluator.

The same function runs on Python ints (constant folding, tests), torch int64 tensors (the dense
reference) and numpy int64 arrays (block masks); the Triton code generator emits the same steps. Only
`^`, `&`, `>>` and `*` are used, and every product is reduced to 32 bits at once, so 64-bit wrap-around
never changes a result.
"""

from __future__ import annotations

__all__ = ["hash32", "HASH_INIT", "HASH_M1", "HASH_M2", "MASK32"]

MASK32 = 0xFFFFFFFF
HASH_INIT = 0x9E3779B9
HASH_M1 = 0x85EBCA6B
HASH_M2 = 0xC2B2AE35


def _fmix(h):
    # murmur3's finaliser: full avalanche over 32 bits.
    h = h ^ (h >> 16)
    h = (h * HASH_M1) & MASK32
    h = h ^ (h >> 13)
    h = (h * HASH_M2) & MASK32
    return h ^ (h >> 16)


def hash32(*xs):
    """Hash integers (or broadcastable int tensors/arrays) to a value in [0, 2**32)."""
    h = HASH_INIT
    for x in xs:
        h = _fmix(h ^ (x & MASK32))
    return h
