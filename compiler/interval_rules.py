"""The interval column of the semantics table (compiler/semantics.py): sound rules on per-tile bounds.

An integer operand is a ``(lo, hi)`` pair of int64 arrays (or scalars), a condition a trit array (``ALL``:
true on the whole tile, ``SOME``, ``NONE``). For ``//`` and ``%`` the divisor is a constant passed as
``(m, m)``; for ``in`` the right operand is the container value (a set, list or range of ints).
"""

from __future__ import annotations

import numpy as np

from .hashing import hash32

__all__ = ["NONE", "SOME", "ALL", "trit", "iv_mul", "iv_floordiv", "iv_mod", "iv_abs", "iv_hash", "iv_eq",
           "iv_member", "iv_not"]

NONE, SOME, ALL = np.int8(0), np.int8(1), np.int8(2)


def iv_mul(a, b):
    c = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return np.minimum.reduce(c), np.maximum.reduce(c)


def iv_floordiv(a, b):
    m = b[0]
    x, y = np.floor_divide(a[0], m), np.floor_divide(a[1], m)
    return np.minimum(x, y), np.maximum(x, y)


def iv_mod(a, b):
    m = b[0]
    same = np.floor_divide(a[0], m) == np.floor_divide(a[1], m)
    lo, hi = np.where(m > 0, 0, m + 1), np.where(m > 0, m - 1, 0)   # x % m lies in [0, m) or (m, 0]
    return np.where(same, np.mod(a[0], m), lo), np.where(same, np.mod(a[1], m), hi)


def iv_abs(a):
    lo, hi = a
    return np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0)), np.maximum(np.abs(lo), np.abs(hi))


def iv_hash(*args):
    single = np.logical_and.reduce([np.asarray(lo) == np.asarray(hi) for lo, hi in args])
    with np.errstate(over="ignore"):   # 64-bit wrap-around is part of the definition
        h = hash32(*[np.asarray(lo, np.int64) for lo, _ in args])
    h = np.broadcast_to(np.asarray(h, np.int64), np.shape(single))
    return np.where(single, h, 0), np.where(single, h, 0xFFFFFFFF)


def trit(all_, none):
    return np.where(all_, ALL, np.where(none, NONE, SOME)).astype(np.int8)


def iv_eq(a, b):
    return trit((a[0] == a[1]) & (b[0] == b[1]) & (a[0] == b[0]), (a[1] < b[0]) | (b[1] < a[0]))


def iv_member(a, container):
    a0, a1 = (np.asarray(x, np.int64) for x in a)
    if isinstance(container, range):
        inside = _range_count(a0, a1, container)
    else:
        # distinct values: the rule counts values inside a tile, so a list's repeats must not count twice
        values = np.array(sorted(set(container)), np.int64)
        inside = np.searchsorted(values, a1, "right") - np.searchsorted(values, a0, "left")
    return trit((inside != 0) & ((a0 == a1) | (inside == a1 - a0 + 1)), inside == 0)


_EDGE = 1 << 61   # tile bounds lie well inside this (compiler/ranges.py); a range is cut to it exactly


def _range_count(a0, a1, r: range):
    """How many members of `r` lie in [a0, a1], per tile, in O(1) whatever the range's length."""
    if r.step > 0 and r.start >= r.stop or r.step < 0 and r.start <= r.stop:
        return np.zeros(np.broadcast_shapes(a0.shape, a1.shape), np.int64)
    s = abs(r.step)
    lo = r.start if r.step > 0 else r.start - (r.start - r.stop - 1) // s * s   # the smallest member
    hi = r.start if r.step < 0 else r.start + (r.stop - 1 - r.start) // s * s   # the largest member
    if lo < -_EDGE:
        lo += -(-(-_EDGE - lo) // s) * s
    hi = min(hi, lo + (_EDGE - lo) // s * s) if hi > _EDGE else hi
    if lo > hi:
        return np.zeros(np.broadcast_shapes(a0.shape, a1.shape), np.int64)
    x0, x1 = np.maximum(a0, lo), np.minimum(a1, hi)
    count = np.floor_divide(x1 - lo, s) - np.floor_divide(x0 - lo - 1, s)
    return np.where(x0 <= x1, count, 0)


def iv_not(t):
    return (2 - np.asarray(t)).astype(np.int8)
