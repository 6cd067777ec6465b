"""Market-by-order (L3) books: orders by id, aggregated to price levels, the L2 book's outputs.

Input is the ``mbo`` record (defined here, registered by the ``book`` plugin): the common
header, ``order_id``, ``price``, ``size`` (int64 1e-8 fixed-point), ``action``, ``side``,
``flags``. Actions follow DBN's MBO vocabulary (a negative size is a bad record):

- ``A`` add a resting order (an add of an id already resting is taken as a modify);
- ``M`` modify: the order's new price and size (a price or side change moves it to its new
  level); a modify of an unknown id is taken as an add, as DBN advises;
- ``C`` cancel ``size`` of the order (all of it when ``size`` is 0 or at least what rests);
  a cancel of an unknown id is counted and alerted like a delete of an unknown level;
- ``R`` clear the instrument's book (every resting order of it goes); ``F_SNAPSHOT``/``F_LAST``
  work as for the L2 book;
- ``T`` trade, ``F`` fill, ``N`` none leave the book alone (the venue's cancel or modify that
  follows a fill changes it).

Sequence gaps, validity, snapshots, crossed-book alerts and the ``quote``/``mbp10``/``alert``
outputs are exactly the L2 book's (:mod:`hftagg.builtins.core.book.kernels`, same compiled code); the mbp10
records carry each level's order count. Orders are keyed by ``(instrument, order_id)`` in an
open-addressing table (linear probing, backward-shift deletion) over a pool that doubles when
full. A clear scans the pool once (clears are rare: session starts and recoveries).
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.builtins.core.book.kernels import (
    _A,
    _C,
    _DIRTY,
    _DONE,
    _F,
    _M,
    _N,
    _NEED_DEPTH,
    _NLEV,
    _R,
    _ST,
    _T,
    _TOP,
    F_SNAPSHOT,
    BookKernel,
    _bad_record,
    _begin,
    _clear,
    _end,
    _enter,
    _find,
    _row,
    _set_level,
    _side,
    _unknown_level,
)
from hftagg.kernels.options import NJIT_NO_NRT as _NJIT
from hftagg.kernels.slots import GOLDEN
from hftagg.records.catalog import MBO

__all__ = ["MBO", "MboBookKernel", "warm"]

_NEED_ORDERS = 4
_INITIAL_ORDERS = 1024
_U40 = np.uint64(40)


# --------------------------------------------------------------------------- order table


@numba.njit(inline="always", **_NJIT)
def _home(order_id, slot, shift):
    return np.int64(((order_id ^ (slot << _U40)) * GOLDEN) >> np.uint64(shift))


@numba.njit(inline="always", **_NJIT)
def _lookup(table, shift, order_id, slot, o_id, o_slot):
    """Position of the order's table entry, or of the empty entry where it belongs."""
    mask = table.shape[0] - 1
    pos = _home(order_id, slot, shift)
    while True:
        entry = table[pos]
        if entry == 0:
            return pos
        k = entry - 1
        if o_id[k] == order_id and o_slot[k] == slot:
            return pos
        pos = (pos + 1) & mask


@numba.njit(**_NJIT)
def _unlink(table, shift, pos, o_id, o_slot):
    """Empty entry ``pos``, shifting back the entries of its probe run (no tombstones)."""
    mask = table.shape[0] - 1
    hole = pos
    j = pos
    while True:
        j = (j + 1) & mask
        entry = table[j]
        if entry == 0:
            break
        k = entry - 1
        home = _home(o_id[k], o_slot[k], shift)
        if (hole <= j and (home <= hole or home > j)) or (hole > j and home <= hole and home > j):
            table[hole] = entry
            hole = j
    table[hole] = 0


@numba.njit(**_NJIT)
def _rebuild(table, shift, o_id, o_slot, o_size):
    table[:] = 0
    for k in range(o_id.shape[0]):
        if o_size[k] > 0:
            table[_lookup(table, shift, o_id[k], o_slot[k], o_id, o_slot)] = k + 1


# --------------------------------------------------------------------------- levels


@numba.njit(inline="always", **_NJIT)
def _adjust(keys, sizes, orders, inst, slot, side, price, dsize, dcount, st):
    """Add ``dsize`` and ``dcount`` to a level (gone at count or size 0); the new status."""
    row = _row(slot, side)
    key = price if side == 0 else -price
    n = inst[slot, _NLEV + side]
    pos, found = _find(keys, row, n, key)
    size, count = dsize, dcount
    if found:
        size += np.int64(sizes[row, pos])
        count += np.int64(orders[row, pos])
    if size <= 0 or count <= 0:
        size, count = 0, 0
    n, depth, _ = _set_level(keys, sizes, orders, row, n, key, size, count)
    inst[slot, _NLEV + side] = n
    if depth == 0:
        return st | _DIRTY | _TOP
    return st | _DIRTY if depth < 10 else st


@numba.njit(**_NJIT)
def _clear_orders(slot, table, shift, o_id, o_slot, o_size, free, ometa):
    """Drop every resting order of one instrument."""
    for k in range(o_id.shape[0]):
        if o_size[k] > 0 and o_slot[k] == slot:
            _unlink(table, shift, _lookup(table, shift, o_id[k], slot, o_id, o_slot), o_id, o_slot)
            o_size[k] = 0
            free[ometa[0]] = k
            ometa[0] += 1


@numba.njit(inline="always", **_NJIT)
def _place(rec, slot, side, book, pool, st):
    """Add or move an order to the record's price, side and size; the new status."""
    inst, keys, sizes, orders = book
    table, shift, o_id, o_slot, o_side, o_price, o_size, free, ometa = pool
    order_id = rec["order_id"]
    pos = _lookup(table, shift, order_id, slot, o_id, o_slot)
    size = np.int64(rec["size"])
    price = rec["price"]
    k = table[pos] - 1
    if k >= 0 and size == 0:  # a modify to nothing: the order goes
        st = _adjust(keys, sizes, orders, inst, slot, o_side[k], o_price[k], -o_size[k], -1, st)
        _unlink(table, shift, pos, o_id, o_slot)
        o_size[k] = 0
        free[ometa[0]] = k
        ometa[0] += 1
        return st
    if k >= 0 and o_side[k] == side and o_price[k] == price:  # same level: only the size
        delta = size - o_size[k]
        o_size[k] = size
        return _adjust(keys, sizes, orders, inst, slot, side, price, delta, 0, st)
    if k >= 0:  # to another level
        st = _adjust(keys, sizes, orders, inst, slot, o_side[k], o_price[k], -o_size[k], -1, st)
    elif size == 0:
        return st
    else:
        ometa[0] -= 1
        k = free[ometa[0]]
        table[pos] = k + 1
        o_id[k], o_slot[k] = order_id, slot
    o_side[k], o_price[k], o_size[k] = side, price, size
    return _adjust(keys, sizes, orders, inst, slot, side, price, size, 1, st)


@numba.njit(inline="always", **_NJIT)
def _cancel(rec, slot, book, pool, st):
    """Cancel part or all of an order; ``(status, found)``."""
    inst, keys, sizes, orders = book
    table, shift, o_id, o_slot, o_side, o_price, o_size, free, ometa = pool
    pos = _lookup(table, shift, rec["order_id"], slot, o_id, o_slot)
    k = table[pos] - 1
    if k < 0:
        return st, False
    size = np.int64(rec["size"])
    if size == 0 or size >= o_size[k]:
        st = _adjust(keys, sizes, orders, inst, slot, o_side[k], o_price[k], -o_size[k], -1, st)
        _unlink(table, shift, pos, o_id, o_slot)
        o_size[k] = 0
        free[ometa[0]] = k
        ometa[0] += 1
    else:
        o_size[k] -= size
        st = _adjust(keys, sizes, orders, inst, slot, o_side[k], o_price[k], -size, 0, st)
    return st, True


@numba.njit(inline="always", **_NJIT)
def _mbo_action(alerts, na, params, rec, iid, slot, book, pool, action, side, st):
    """Apply one MBO action; ``(status, alerts written)``."""
    inst = book[0]
    if action == _R:
        table, shift, o_id, o_slot, _, _, o_size, free, ometa = pool
        _clear_orders(slot, table, shift, o_id, o_slot, o_size, free, ometa)
        st = _clear(inst, slot, rec["flags"] & F_SNAPSHOT, st)
    elif rec["size"] < 0 and (action == _A or action == _M or action == _C):
        na = _bad_record(alerts, na, rec, iid, inst, slot, action)
    elif (action == _A or action == _M) and side >= 0:
        st = _place(rec, slot, side, book, pool, st)
    elif action == _C:
        st, found = _cancel(rec, slot, book, pool, st)
        if not found:
            na = _unknown_level(alerts, na, params, rec, iid, inst, slot)
    elif action != _T and action != _F and action != _N:
        na = _bad_record(alerts, na, rec, iid, inst, slot, action)
    return st, na


@numba.njit(**_NJIT)
def _apply_mbo(batch, start, table, shift, slot_ids, meta, params, book, pool, quotes, mbp,
               alerts, nout):  # fmt: skip
    """``_apply`` of the L2 book for MBO records; also stops when the order pool is full."""
    inst, keys, sizes, orders = book
    ometa = pool[8]
    cap = keys.shape[1]
    n_slots = meta[0]
    nq, nm, na = nout[0], nout[1], nout[2]
    meta[1] = _DONE
    stop = batch.shape[0]
    for i in range(start, batch.shape[0]):
        rec = batch[i]
        iid = rec["instrument_id"]
        reason, slot, n_slots = _enter(rec, table, shift, slot_ids, n_slots, inst, quotes, mbp,
                                       alerts, nq, nm, na)  # fmt: skip
        if reason != _DONE:
            meta[1] = reason
            stop = i
            break
        action = rec["action"]
        side = _side(rec["side"])
        if (action == _A or action == _M) and side >= 0:
            if inst[slot, _NLEV + side] >= cap:
                meta[1] = _NEED_DEPTH
                stop = i
                break
            if ometa[0] == 0:
                meta[1] = _NEED_ORDERS
                stop = i
                break
        ok, st, na = _begin(alerts, na, rec, iid, inst, slot, action == _R, inst[slot, _ST])
        if ok:
            st, na = _mbo_action(alerts, na, params, rec, iid, slot, book, pool, action, side, st)
            st, nq, nm, na = _end(quotes, mbp, alerts, nq, nm, na, params, rec, iid, inst, slot,
                                  keys, sizes, orders, st)  # fmt: skip
        inst[slot, _ST] = st
    meta[0] = n_slots
    nout[0], nout[1], nout[2] = nq, nm, na
    return stop


# --------------------------------------------------------------------------- Python side

_POOL_KEYS = ("order_slot", "order_id", "order_side", "order_price", "order_size")


class MboBookKernel(BookKernel):
    """L3 books: ``update(batch)`` of ``mbo`` records gives the L2 book's outputs.

    Everything :class:`~hftagg.builtins.core.book.kernels.BookKernel` offers applies (``levels(iid,
    counts=True)`` shows order counts); ``order(iid, order_id)`` looks one resting order up.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pool(_INITIAL_ORDERS)

    def _pool(self, capacity: int) -> None:
        self._o_id = np.zeros(capacity, dtype=np.uint64)
        self._o_slot = np.zeros(capacity, dtype=np.uint64)
        self._o_side = np.zeros(capacity, dtype=np.int64)
        self._o_price = np.zeros(capacity, dtype=np.int64)
        self._o_size = np.zeros(capacity, dtype=np.int64)
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self._ometa = np.array([capacity], dtype=np.int64)
        bits = max(int(4 * capacity - 1).bit_length(), 12)
        self._otable = np.zeros(1 << bits, dtype=np.int64)
        self._oshift = 64 - bits

    def _pool_arrays(self) -> tuple[np.ndarray, ...]:
        return (self._o_slot, self._o_id, self._o_side, self._o_price, self._o_size)

    def _load_orders(self, slots, ids, sides, prices, sizes) -> None:
        """Put resting orders in a fresh pool big enough for them (and twice as many)."""
        n = len(ids)
        self._pool(max(_INITIAL_ORDERS, 1 << (2 * n).bit_length()))
        for array, values in zip(self._pool_arrays(), (slots, ids, sides, prices, sizes),
                                 strict=True):  # fmt: skip
            array[:n] = values
        capacity = self._o_id.shape[0]
        self._free[: capacity - n] = np.arange(capacity - 1, n - 1, -1)
        self._ometa[0] = capacity - n
        _rebuild(self._otable, self._oshift, self._o_id, self._o_slot, self._o_size)

    def _resting(self) -> tuple[np.ndarray, ...]:
        live = self._o_size > 0
        return tuple(a[live].copy() for a in self._pool_arrays())

    def _run(self, batch: np.ndarray, start: int) -> int:
        quotes, mbp, alerts = self._out
        book = (self._inst, self._keys, self._sizes, self._orders)
        pool = (self._otable, self._oshift, self._o_id, self._o_slot, self._o_side,
                self._o_price, self._o_size, self._free, self._ometa)  # fmt: skip
        slots = self._slots
        return _apply_mbo(batch, start, slots.table, slots.shift, slots.ids, self._meta,
                          self._params, book, pool, quotes, mbp, alerts, self._nout)  # fmt: skip

    def _make_room(self, reason: int) -> None:
        if reason == _NEED_ORDERS:
            self._load_orders(*self._resting())
        else:
            super()._make_room(reason)

    @property
    def order_count(self) -> int:
        """Resting orders over all instruments."""
        return int(self._o_id.shape[0] - self._ometa[0])

    def order(self, instrument_id: int, order_id: int) -> tuple[str, int, int] | None:
        """``(side "B"/"A", price, size)`` of a resting order, ``None`` if it is not resting."""
        slot = self._slot(instrument_id)
        if slot < 0:
            return None
        live = (self._o_size > 0) & (self._o_slot == slot) & (self._o_id == np.uint64(order_id))
        hits = np.flatnonzero(live)
        if not len(hits):
            return None
        k = int(hits[0])
        return ("B" if self._o_side[k] == 0 else "A"), int(self._o_price[k]), int(self._o_size[k])

    def snapshot(self) -> dict:
        """The L2 snapshot plus every resting order (``order_slot`` indexes ``instrument_id``)."""
        state = super().snapshot()
        state.update(zip(_POOL_KEYS, self._resting(), strict=True))
        return state

    def restore(self, state: dict) -> None:
        missing = [key for key in _POOL_KEYS if key not in state]
        if missing:
            raise ValueError(f"MBO book snapshot is missing key {missing[0]!r}")
        super().restore(state)
        self._load_orders(*(np.asarray(state[key]) for key in _POOL_KEYS))


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile the MBO loop for contiguous and strided ``mbo`` batches."""
    batch = MBO.empty(8)
    batch["instrument_id"] = [3, 3, 3, 3, 5, 5, 3, 5]
    batch["seq"] = [0, 1, 2, 3, 0, 1, 4, 3]
    batch["order_id"] = [1, 2, 1, 2, 0, 9, 0, 9]
    batch["action"] = [ord(c) for c in "AAMCRATC"]
    batch["side"] = [ord(c) for c in "BAABBABA"]
    batch["price"] = [100, 101, 101, 99, 0, 50, 0, 51]
    batch["size"] = [1, 2, 3, 0, 0, 4, 0, 1]
    batch["size"] *= 10**8
    for mode in ("off", "change", "interval"):
        kernel = MboBookKernel(mbp10_on=mode, interval_ns=10, capacity=16)
        kernel.update(batch)
        kernel.update(batch[::2])
    kernel.restore(kernel.snapshot())
    kernel._make_room(_NEED_ORDERS)
    kernel.order(3, 1)
