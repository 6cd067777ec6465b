"""Instrument id -> state slot: an open-addressing hash table inside compiled code.

Every per-instrument kernel (EMA, indicators, bars, books, validation, decoders) maps arbitrary
uint32 instrument ids to dense state slots with these functions.

Open addressing with linear probing in one int64 array. An entry is (slot + 1) << 32 | id, so 0
means empty and every uint32 id (0 and 2**32 - 1 included) can be stored. Callers keep the table
at most half full (``slot_of`` refuses past that, returning -1, so the Python side can grow the
slot arrays and the table and resume).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["GOLDEN", "build_table", "probe", "slot_of"]

_NJIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

#: 2**64 / golden ratio: Fibonacci hashing spreads consecutive and clustered ids over the table.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.int64(0xFFFFFFFF)


@numba.njit(**_NJIT)
def probe(table, shift, key):
    """Index of ``key``'s entry in ``table``, or of the empty entry where it belongs."""
    mask = table.shape[0] - 1
    pos = np.int64((np.uint64(key) * GOLDEN) >> np.uint64(shift))
    while True:
        entry = table[pos]
        if entry == 0 or (entry & _LOW32) == key:
            return pos
        pos = (pos + 1) & mask


@numba.njit(**_NJIT)
def build_table(slot_ids, n_slots, table, shift):
    """Fill ``table`` from the first ``n_slots`` ids of ``slot_ids`` (after growing it)."""
    table[:] = 0
    for slot in range(n_slots):
        key = np.int64(slot_ids[slot])
        table[probe(table, shift, key)] = ((slot + 1) << 32) | key


@numba.njit(**_NJIT)
def slot_of(key, table, shift, slot_ids, n_slots):
    """The slot of ``key``; ``n_slots`` if it is new (now inserted); -1 if the arrays are full."""
    pos = probe(table, shift, key)
    entry = table[pos]
    if entry != 0:
        return (entry >> 32) - 1
    if n_slots >= slot_ids.shape[0] or 2 * (n_slots + 1) > table.shape[0]:
        return -1
    table[pos] = ((n_slots + 1) << 32) | key
    slot_ids[n_slots] = key
    return n_slots
