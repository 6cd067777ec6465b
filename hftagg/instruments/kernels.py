"""Compiled grouping of symbol keys: one pass, an open-addressing table, no sort.

``ids_for`` views a batch of venue symbols as rows of uint64 words
(:mod:`hftagg.instruments.registry`) and needs, per record, which distinct symbol it has:
:func:`group_keys` does it exactly in O(n) whatever the number of distinct symbols
(``np.unique`` on the strings sorts them: ~50x slower on 4,096 records).
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT

__all__ = ["group_keys", "warm"]

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


@numba.njit(inline="always", **NJIT)
def _same(words, a, b):
    for j in range(words.shape[1]):
        if words[a, j] != words[b, j]:
            return False
    return True


@numba.njit(**NJIT)
def group_keys(words, inverse, first):
    """Rows of ``words`` (n x m uint64: each a symbol's bytes, zero-padded) grouped exactly:
    ``inverse[i]`` = the group of row ``i``, ``first[g]`` = the first row of group ``g``.
    Returns the number of groups."""
    n = words.shape[0]
    size = 16
    bits = 4
    while size < 2 * n:
        size <<= 1
        bits += 1
    slots = np.full(size, -1, dtype=np.int64)
    shift = np.uint64(64 - bits)
    mask = size - 1
    groups = 0
    for i in range(n):
        key = words[i, 0]
        for j in range(1, words.shape[1]):
            key = (key * _MIX) ^ words[i, j]
        h = np.int64((key * _MIX) >> shift)
        while slots[h] != -1 and not _same(words, first[slots[h]], i):
            h = (h + 1) & mask
        if slots[h] == -1:
            slots[h] = groups
            first[groups] = i
            groups += 1
        inverse[i] = slots[h]
    return groups


def warm() -> None:
    """Compile (or load from the cache) for uint64 words."""
    words = np.array([[3, 0], [1, 0], [3, 0]], dtype=np.uint64)
    group_keys(words, np.empty(3, np.int64), np.empty(3, np.int64))
