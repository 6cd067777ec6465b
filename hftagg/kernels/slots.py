"""The per-instrument slot table: uint32 instrument id -> a dense row of every state array.

Every per-instrument kernel (EMA, indicators, bars, books, validation, the FIX decoder) keeps its
state in rows of numpy arrays and finds an instrument's row through one :class:`SlotTable`:

- compiled code receives ``table``, ``shift``, ``ids`` and the count (``meta[count_at]``) and calls
  :func:`slot_of`, which inserts a new id or returns -1 when the arrays are full; the kernel then
  stops, the Python side calls :meth:`SlotTable.grow` and the kernel resumes at the same record;
- Python code uses :meth:`SlotTable.lookup`, :meth:`SlotTable.snapshot` and
  :meth:`SlotTable.load` (restore), so no kernel reimplements growth, restore checks or probing.

The hash table: open addressing with linear probing in one int64 array. An entry is
``(slot + 1) << 32 | id``, so 0 means empty and every uint32 id (0 and 2**32 - 1 included) can be
stored. It has at least ``TABLE_PER_SLOT`` entries per state row, so probes are short and rarely
mispredicted (``slot_of`` also refuses past half full).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np

from hftagg.kernels.options import NJIT

__all__ = [
    "GOLDEN",
    "INITIAL_SLOTS",
    "SlotTable",
    "build_table",
    "capacity_for",
    "find_slot",
    "probe",
    "slot_of",
]

#: 2**64 / golden ratio: Fibonacci hashing spreads consecutive and clustered ids over the table.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.int64(0xFFFFFFFF)
#: Rows a new table holds; it doubles when they run out.
INITIAL_SLOTS = 64
#: Hash-table entries per state row: the table is at most 1/8 full.
TABLE_PER_SLOT = 8
#: The smallest table: 4096 entries (32 KiB), few collisions while the universe is small.
MIN_TABLE_BITS = 12
_UINT32_MAX = 0xFFFFFFFF


@numba.njit(**NJIT)
def probe(table, shift, key):
    """Index of ``key``'s entry in ``table``, or of the empty entry where it belongs."""
    mask = table.shape[0] - 1
    pos = np.int64((np.uint64(key) * GOLDEN) >> np.uint64(shift))
    while True:
        entry = table[pos]
        if entry == 0 or (entry & _LOW32) == key:
            return pos
        pos = (pos + 1) & mask


@numba.njit(**NJIT)
def build_table(slot_ids, n_slots, table, shift):
    """Fill ``table`` from the first ``n_slots`` ids of ``slot_ids`` (after growing it)."""
    table[:] = 0
    for slot in range(n_slots):
        key = np.int64(slot_ids[slot])
        table[probe(table, shift, key)] = ((slot + 1) << 32) | key


@numba.njit(**NJIT)
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


@numba.njit(inline="always", **NJIT)
def find_slot(key, table, shift, slot_ids, meta):
    """``slot_of`` with the count in ``meta[0]``, counted up when ``key`` is new; -1 when full."""
    n = meta[0]
    slot = slot_of(key, table, shift, slot_ids, n)
    if slot == n:
        meta[0] = n + 1
    return slot


def capacity_for(n: int, at_least: int = INITIAL_SLOTS) -> int:
    """Rows to allocate for ``n`` instruments: a power of two, at least ``at_least``."""
    return max(at_least, 1 << max(int(n) - 1, 0).bit_length())


class SlotTable:
    """Rows of named per-instrument arrays, found by instrument id, grown by doubling.

    ``columns`` maps a name to ``(row_shape, dtype)``: column ``name`` is an array of shape
    ``(capacity, *row_shape)`` whose row ``s`` belongs to instrument ``ids[s]``. The number of rows
    in use lives in ``meta[count_at]`` (an int64 array the kernel shares with its other counters,
    so compiled code updates it in place). Not thread-safe: one kernel owns one table.
    """

    def __init__(
        self,
        columns: Mapping[str, tuple[tuple[int, ...], Any]],
        *,
        meta: np.ndarray | None = None,
        count_at: int = 0,
        capacity: int = INITIAL_SLOTS,
        name: str = "kernel",
    ) -> None:
        self.meta = np.zeros(1, dtype=np.int64) if meta is None else meta
        self.count_at = int(count_at)
        self.name = name
        self._shapes = {key: (tuple(shape), np.dtype(dt)) for key, (shape, dt) in columns.items()}
        self.allocate(capacity)

    # ----------------------------------------------------------------- arrays

    def allocate(self, capacity: int) -> None:
        """Empty rows for ``capacity`` instruments and a hash table sparse enough for them."""
        self.ids = np.zeros(capacity, dtype=np.uint32)
        self.columns = {
            key: np.zeros((capacity, *shape), dtype=dtype)
            for key, (shape, dtype) in self._shapes.items()
        }
        bits = max(int(TABLE_PER_SLOT * capacity - 1).bit_length(), MIN_TABLE_BITS)
        self.table = np.zeros(1 << bits, dtype=np.int64)
        self.shift = 64 - bits
        self.meta[self.count_at] = 0

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The column arrays in the order they were declared (to pass to compiled code)."""
        return tuple(self.columns.values())

    @property
    def count(self) -> int:
        """Instruments seen (rows in use)."""
        return int(self.meta[self.count_at])

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.ids.shape[0])

    def row_shape(self, column: str) -> tuple[int, ...]:
        return self._shapes[column][0]

    def grow(self, capacity: int | None = None) -> None:
        """Reallocate for ``capacity`` rows (default: twice as many), keeping every row."""
        ids, rows = self.snapshot()
        self._fill(ids, rows, capacity or 2 * self.capacity)

    def reshape(self, column: str, row_shape: tuple[int, ...], *, keep: bool = True) -> np.ndarray:
        """Give ``column`` a new row shape; returns the new array.

        ``keep=True`` copies the part of each row that fits (the rest is zero); ``keep=False``
        leaves the new array zeroed, for a caller that fills it from the old one itself.
        """
        old = self.columns[column]
        dtype = self._shapes[column][1]
        new = np.zeros((self.capacity, *row_shape), dtype=dtype)
        if keep:
            fit = tuple(slice(0, min(a, b)) for a, b in zip(old.shape[1:], row_shape, strict=True))
            new[(slice(None), *fit)] = old[(slice(None), *fit)]
        self._shapes[column] = (tuple(row_shape), dtype)
        self.columns[column] = new
        return new

    # ----------------------------------------------------------------- lookup

    def lookup(self, instrument_id: int) -> int:
        """The row of ``instrument_id``, or -1 if it has not been seen."""
        key = int(instrument_id)
        if not 0 <= key <= _UINT32_MAX:
            raise ValueError(
                f"{self.name}: instrument_id must be a uint32 (0..{_UINT32_MAX}), got {key}"
            )
        entry = int(self.table[probe(self.table, self.shift, key)])
        return (entry >> 32) - 1

    # ----------------------------------------------------------------- state

    def snapshot(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Copies of the ids in use and of their rows, per column."""
        n = self.count
        return self.ids[:n].copy(), {key: a[:n].copy() for key, a in self.columns.items()}

    def load(self, ids: Any, rows: Mapping[str, Any], *, capacity: int = 0) -> None:
        """Replace every row with ``ids`` and ``rows`` (from ``snapshot``), after checking them.

        A column's saved rows may be narrower than its row shape (a book saved at a smaller
        depth): they fill the start of each row. Errors name the kernel, the key and the shapes.
        """
        ids = np.asarray(ids)
        n = ids.shape[0] if ids.ndim == 1 else -1
        if ids.dtype != np.uint32 or n < 0 or np.unique(ids).shape[0] != n:
            raise ValueError(
                f"{self.name} snapshot key 'instrument_id' must hold distinct uint32 ids "
                f"(a 1-D uint32 array), got {ids.dtype} of shape {ids.shape}"
            )
        missing = sorted(set(self._shapes) - set(rows))
        if missing:
            raise ValueError(f"{self.name} snapshot is missing state {missing[0]!r}")
        arrays = {key: np.asarray(rows[key]) for key in self._shapes}
        for key, array in arrays.items():
            shape = self._shapes[key][0]
            if array.ndim != 1 + len(shape) or array.shape[0] != n:
                raise ValueError(
                    f"{self.name} snapshot state {key!r} has shape {array.shape}, expected "
                    f"({n}, {', '.join(map(str, shape))}) to match {n} instrument ids"
                )
        self._fill(ids, arrays, capacity)

    def _fill(self, ids: np.ndarray, rows: Mapping[str, np.ndarray], capacity: int) -> None:
        n = ids.shape[0]
        for key, array in rows.items():  # widen rows saved at a larger row shape
            shape = self._shapes[key][0]
            if any(a > b for a, b in zip(array.shape[1:], shape, strict=True)):
                self._shapes[key] = (
                    tuple(max(a, b) for a, b in zip(array.shape[1:], shape, strict=True)),
                    self._shapes[key][1],
                )
        self.allocate(max(capacity, capacity_for(n)))
        self.ids[:n] = ids
        for key, array in rows.items():
            self.columns[key][(slice(0, n), *(slice(0, k) for k in array.shape[1:]))] = array
        self.meta[self.count_at] = n
        build_table(self.ids, n, self.table, self.shift)

    def __repr__(self) -> str:
        return f"SlotTable({self.name!r}, instruments={self.count}, capacity={self.capacity})"
