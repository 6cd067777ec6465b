"""Market-by-price (L2) order books per instrument, built from ``book_update`` records.

Levels live in compiled code: for every instrument and side a sorted row of ``(key, size,
order count)`` with the best level at the *end* (``key = price`` for bids, ``-price`` for asks, so both sides
ascend towards the best), which makes the common case, an update at or near the touch, a short
scan from the end and an insert or delete that moves only the few levels above it. Depth is
unbounded: when a side outgrows the arrays the kernel stops, the Python side doubles the
capacity and the kernel resumes at the same record. Instruments are arbitrary uint32 ids found
in the shared slot table (:mod:`hftagg.kernels.slots`). Only an update at the touch can
change the quote, so the top of book is only looked at after one.

The per-record steps (``_begin``, ``_end``, the level arrays) are shared with the market-by-order
kernel in :mod:`hftagg.builtins.core.book.mbo`, which inlines them: numba's disk cache does not see that
dependency, so after editing this file touch ``mbo.py`` too (a fresh checkout has no such issue).

Speed: every kernel here is compiled without numba's reference counting (``NJIT_NO_NRT``). With
it, each ``inline="always"`` helper that takes arrays and branches leaves atomic
``NRT_incref``/``NRT_decref`` calls per array per record (the refcount pruning pass only removes
pairs in straight-line code): several per update on the common path, each a call and a locked
add, together costing more than the book itself. Nothing here allocates (the kernels only index
arrays the Python side owns and keeps alive for the call), and numba refuses to compile an
allocation without its runtime, so this cannot fail silently. The mbp10 writer is inlined too:
as a call it copied ~45 words of array arguments onto the stack per record. Measured on the
book benchmark (one core, mbp10 on every change): 8.4 M updates/s before both, ~20 M after.

Semantics, per instrument (``flags`` bits are DBN's: ``F_LAST = 0x80``, ``F_SNAPSHOT = 0x20``):

- ``A`` add and ``M`` modify set the level at ``price``/``side`` to ``size`` (an upsert: an add
  of an existing level or a modify of an unknown one is accepted); ``size == 0`` removes it.
- ``D`` delete removes the level; a delete of a level that is not in the book is counted and
  alerted (``ALERT_UNKNOWN_LEVEL``, at most one per ``alert_interval`` of ``ts_recv``).
- ``R`` clear empties both sides and makes the book valid again. A clear that carries
  ``F_SNAPSHOT`` starts a snapshot: the records that follow with ``F_SNAPSHOT`` build the book
  and nothing is published until the snapshot ends, at its record with ``F_LAST`` or at the
  first record without ``F_SNAPSHOT``. A clear (with or without snapshot) always republishes the
  top of book and the 10 levels once the book is published again.
- ``T`` trade, ``F`` fill and ``N`` none leave the book alone. Any other action, a side other
  than ``B``/``A`` on an add/modify/delete, or a negative size, is counted and alerted
  (``ALERT_BAD_RECORD``).
- Sizes are int64 1e-8 fixed-point quantities (:mod:`hftagg.records.fixed`), kept exactly.
- Sequence: ``seq`` must be contiguous per instrument (the first record of an instrument, and a
  clear, may start anywhere). On a gap the book turns invalid (``ALERT_GAP``, value = records
  missed, negative for a step back) and every record but a clear is dropped (counted) until a
  clear rebuilds it. A new instrument starts valid with an empty book.
- Crossed (best bid > best ask) or locked (equal) books are still published; entering either
  state raises one alert (``ALERT_CROSSED`` / ``ALERT_LOCKED``, value = ask - bid in price units).

Outputs, each with the triggering update's ``ts_event``/``ts_recv``/``instrument_id`` and a
contiguous per-instrument, per-output ``seq``: a ``quote`` whenever the best bid or ask price or
size changes (an empty side is ``UNDEF_PRICE``, size 0); an ``mbp10`` (10 levels per side, same
convention, order counts 0 as L2 has none) whenever one of the top 10 levels of either side
changed (``MBP_CHANGE``), or at most once per ``interval`` of ``ts_event`` when they did
(``MBP_INTERVAL``: the first update at least ``interval`` after the last mbp10 publishes the book
after it; a change not followed by such an update stays unpublished until one comes); and
``alert`` records (text filled by the Python side from the code). A modify that leaves a level as
it was publishes nothing.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT_NO_NRT
from hftagg.kernels.slots import SlotTable, capacity_for, slot_of
from hftagg.records.reasons import REASONS

__all__ = [
    "ALERT_BAD_RECORD",
    "ALERT_CROSSED",
    "ALERT_GAP",
    "ALERT_LOCKED",
    "ALERT_TEXT",
    "ALERT_UNKNOWN_LEVEL",
    "COUNTERS",
    "F_LAST",
    "F_SNAPSHOT",
    "MBP_CHANGE",
    "MBP_INTERVAL",
    "MBP_OFF",
    "UNDEF_PRICE",
    "BookKernel",
    "warm",
]

_NJIT = NJIT_NO_NRT

F_LAST = 0x80
F_SNAPSHOT = 0x20
#: DBN's "no price": an empty side of a quote or an empty mbp10 level.
UNDEF_PRICE = np.iinfo(np.int64).max

MBP_OFF, MBP_CHANGE, MBP_INTERVAL = 0, 1, 2

ALERT_GAP, ALERT_CROSSED, ALERT_LOCKED, ALERT_UNKNOWN_LEVEL, ALERT_BAD_RECORD = 1, 2, 3, 4, 5
#: Alert code -> (severity, text) for the ``alert`` record (severity 1 warning, 2 error).
ALERT_TEXT = {
    ALERT_GAP: (2, b"book: sequence gap, book invalid until clear"),
    ALERT_CROSSED: (1, b"book: crossed (best bid above best ask)"),
    ALERT_LOCKED: (1, b"book: locked (best bid equals best ask)"),
    ALERT_UNKNOWN_LEVEL: (1, b"book: delete of a level not in the book"),
    ALERT_BAD_RECORD: (2, b"book: bad action, side or size; record ignored"),
}
_SEVERITY = np.zeros(8, dtype=np.uint8)
_TEXT = np.zeros(8, dtype="S48")
for _code, (_sev, _txt) in ALERT_TEXT.items():
    _SEVERITY[_code], _TEXT[_code] = _sev, _txt
_NAMES = {ALERT_GAP: "gap", ALERT_CROSSED: "crossed", ALERT_LOCKED: "locked",
          ALERT_UNKNOWN_LEVEL: "unknown_level", ALERT_BAD_RECORD: "bad_record"}  # fmt: skip
REASONS.register_all("book", {code: (_NAMES[code], text.decode(), level)
                              for code, (level, text) in ALERT_TEXT.items()})  # fmt: skip

#: Per-instrument counters, in the order of the kernel's ``counts`` columns.
COUNTERS = ("updates", "gaps", "unknown_deletes", "dropped_invalid", "bad_records", "crossed")
# per-instrument state: one int64 row per instrument, these columns
_ST, _NSEQ = 0, 1  # status bits, next expected seq
_CNT = 2  # the COUNTERS, 2..7
_PUB = 8  # last published bid_px, ask_px, bid_sz, ask_sz (size -1: publish next time), 8..11
_OSEQ = 12  # next output seq of quotes, mbp10, alerts, 12..14
_LMBP, _LALT = 15, 16  # ts of the last mbp10, of the last unknown-level alert
_NLEV = 17  # levels on the bid side, the ask side: 17, 18
_NCOL = 19
_C_UPD, _C_GAP, _C_UNK, _C_DROP, _C_BAD, _C_CROSS = range(_CNT, _CNT + 6)

# status bits
_VALID, _SNAP, _CROSSED, _SEEN, _DIRTY, _TOP = 1, 2, 4, 8, 16, 32  # _DIRTY: top 10 changed
# stop reasons (meta[1])
_DONE, _NEED_SLOTS, _NEED_DEPTH, _NEED_OUT = 0, 1, 2, 3
_NO_TIME = np.iinfo(np.int64).min  # no mbp10 / alert published yet

_A, _M, _D, _R, _T, _F, _N, _C = (ord(c) for c in "AMDRTFNC")
_BID, _ASK = ord("B"), ord("A")

_INITIAL_SLOTS = 16
_INITIAL_DEPTH = 32
_UNCHANGED = 1 << 40  # the "depth" _set_level reports when no level changed
_SCAN = 8  # levels scanned linearly from the touch before a binary search


# --------------------------------------------------------------------------- level arrays
#
# Levels of instrument slot s, side d (0 bid, 1 ask) are row 2 * s + d of ``keys`` (int64:
# price for bids, -price for asks), ``sizes`` (int64, 1e-8 fixed-point quantities) and
# ``orders`` (uint32; order counts, 0 for L2 input), ascending, the best level last;
# ``inst[s, _NLEV + d]`` of them are in use.


@numba.njit(inline="always", **_NJIT)
def _find(keys, row, n, key):
    """``(index, found)``: where ``key`` is in ``keys[row, :n]``, or where it belongs."""
    i = n - 1
    stop = max(n - _SCAN, 0)
    while i >= stop:
        k = keys[row, i]
        if k == key:
            return i, True
        if k < key:
            return i + 1, False
        i -= 1
    lo = 0
    hi = stop  # keys[row, stop:] are all above key
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[row, mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo, lo < n and keys[row, lo] == key


@numba.njit(inline="always", **_NJIT)
def _set_level(keys, sizes, orders, row, n, key, size, count):
    """Upsert or (size 0) remove; return ``(new n, depth from the touch, was found)``.

    The depth is that of the changed level (0: the best), ``_UNCHANGED`` if nothing changed.
    """
    pos, found = _find(keys, row, n, key)
    if found:
        if size == 0:
            for j in range(pos, n - 1):
                keys[row, j] = keys[row, j + 1]
                sizes[row, j] = sizes[row, j + 1]
                orders[row, j] = orders[row, j + 1]
            return n - 1, n - 1 - pos, True
        if sizes[row, pos] == size and orders[row, pos] == count:
            return n, _UNCHANGED, True
        sizes[row, pos] = size
        orders[row, pos] = count
        return n, n - 1 - pos, True
    if size == 0:
        return n, _UNCHANGED, False
    for j in range(n, pos, -1):
        keys[row, j] = keys[row, j - 1]
        sizes[row, j] = sizes[row, j - 1]
        orders[row, j] = orders[row, j - 1]
    keys[row, pos] = key
    sizes[row, pos] = size
    orders[row, pos] = count
    return n + 1, n - pos, False


@numba.njit(inline="always", **_NJIT)
def _row(slot, side):
    """The level-array row of an instrument slot (uint64) and side (0 bid, 1 ask)."""
    return np.uint64(2) * slot + np.uint64(side)


@numba.njit(inline="always", **_NJIT)
def _top(keys, sizes, inst, slot, side):
    """Best price and size of one side; ``(UNDEF_PRICE, 0)`` if it is empty."""
    n = inst[slot, _NLEV + side]
    if n == 0:
        return UNDEF_PRICE, np.int64(0)
    row = _row(slot, side)
    px = keys[row, n - 1]
    return (px if side == 0 else -px), np.int64(sizes[row, n - 1])


# --------------------------------------------------------------------------- outputs


@numba.njit(**_NJIT)
def _alert(alerts, na, rec, iid, inst, slot, code, value):
    a = alerts[na]
    a["ts_event"] = rec["ts_event"]
    a["ts_recv"] = rec["ts_recv"]
    a["seq"] = inst[slot, _OSEQ + 2]
    a["instrument_id"] = iid
    a["code"] = code
    a["value"] = value
    inst[slot, _OSEQ + 2] += 1
    return na + 1


@numba.njit(inline="always", **_NJIT)
def _levels(px_out, sz_out, ct_out, keys, sizes, orders, row, n, sign):
    for j in range(10):
        idx = n - 1 - j
        if idx >= 0:
            px_out[j] = sign * keys[row, idx]
            sz_out[j] = sizes[row, idx]
            ct_out[j] = orders[row, idx]
        else:
            px_out[j] = UNDEF_PRICE
            sz_out[j] = 0
            ct_out[j] = 0


@numba.njit(inline="always", **_NJIT)
def _mbp10(mbp, nm, rec, iid, inst, slot, keys, sizes, orders):
    m = mbp[nm]
    m["ts_event"] = rec["ts_event"]
    m["ts_recv"] = rec["ts_recv"]
    m["seq"] = inst[slot, _OSEQ + 1]
    m["instrument_id"] = iid
    inst[slot, _OSEQ + 1] += 1
    _levels(m["bid_px"], m["bid_sz"], m["bid_ct"], keys, sizes, orders, _row(slot, 0),
            inst[slot, _NLEV], 1)  # fmt: skip
    _levels(m["ask_px"], m["ask_sz"], m["ask_ct"], keys, sizes, orders, _row(slot, 1),
            inst[slot, _NLEV + 1], -1)  # fmt: skip
    return nm + 1


@numba.njit(inline="always", **_NJIT)
def _quote(quotes, nq, rec, iid, inst, slot, bid, ask, bsz, asz):
    """Publish the top of book if it differs from the last one published."""
    p = _PUB
    if (
        bid == inst[slot, p]
        and ask == inst[slot, p + 1]
        and bsz == inst[slot, p + 2]
        and (asz == inst[slot, p + 3])
    ):
        return nq
    inst[slot, p], inst[slot, p + 1], inst[slot, p + 2], inst[slot, p + 3] = bid, ask, bsz, asz
    q = quotes[nq]
    q["ts_event"] = rec["ts_event"]
    q["ts_recv"] = rec["ts_recv"]
    q["seq"] = inst[slot, _OSEQ]
    q["instrument_id"] = iid
    q["bid_px"] = bid
    q["ask_px"] = ask
    q["bid_sz"] = bsz
    q["ask_sz"] = asz
    inst[slot, _OSEQ] += 1
    return nq + 1


@numba.njit(inline="always", **_NJIT)
def _check_cross(alerts, na, rec, iid, inst, slot, bid, ask, st):
    """Alert once when the book becomes crossed or locked; ``(status, alerts written)``."""
    if bid != UNDEF_PRICE and ask != UNDEF_PRICE and bid >= ask:
        if not st & _CROSSED:
            st |= _CROSSED
            inst[slot, _C_CROSS] += 1
            code = ALERT_CROSSED if bid > ask else ALERT_LOCKED
            na = _alert(alerts, na, rec, iid, inst, slot, code, (ask - bid) * 1e-9)
        return st, na
    return st & ~_CROSSED, na


# --------------------------------------------------------------------------- per record
#
# Shared with the market-by-order kernel: ``_begin`` (sequence, validity, snapshot entry),
# the action itself, then ``_end`` (snapshot exit, crossed check, quote, mbp10). The status
# bits travel as a local ``st`` and are stored once per record.


@numba.njit(inline="always", **_NJIT)
def _new_instrument(inst, slot):
    inst[slot, :] = 0
    inst[slot, _ST] = _VALID | _TOP
    inst[slot, _PUB + 2] = -1
    inst[slot, _LMBP] = _NO_TIME
    inst[slot, _LALT] = _NO_TIME


@numba.njit(inline="always", **_NJIT)
def _clear(inst, slot, snapshot, st):
    """Empty both sides; valid again; republish everything once out of the snapshot."""
    inst[slot, _NLEV] = 0
    inst[slot, _NLEV + 1] = 0
    inst[slot, _PUB + 2] = -1
    st = (st | _VALID | _DIRTY | _TOP) & ~(_SNAP | _CROSSED)
    return st | _SNAP if snapshot else st


@numba.njit(inline="always", **_NJIT)
def _begin(alerts, na, rec, iid, inst, slot, is_clear, st):
    """Count, check ``seq``, drop while invalid; ``(apply it?, status, alerts written)``."""
    inst[slot, _C_UPD] += 1
    seq = np.int64(rec["seq"])
    expected = inst[slot, _NSEQ]
    inst[slot, _NSEQ] = seq + 1
    if not is_clear and st & _SEEN and seq != expected:
        inst[slot, _C_GAP] += 1
        if st & _VALID:
            st &= ~(_VALID | _SNAP)
            na = _alert(alerts, na, rec, iid, inst, slot, ALERT_GAP, np.float64(seq - expected))
    st |= _SEEN
    if not st & _VALID and not is_clear:
        inst[slot, _C_DROP] += 1
        return False, st, na
    if st & _SNAP and not rec["flags"] & F_SNAPSHOT:
        st &= ~_SNAP
    return True, st, na


@numba.njit(inline="always", **_NJIT)
def _end(quotes, mbp, alerts, nq, nm, na, params, rec, iid, inst, slot, keys, sizes, orders,
         st):  # fmt: skip
    """Leave a snapshot at ``F_LAST``; outside one, publish what changed; ``(st, counts)``."""
    if st & _SNAP:
        if not rec["flags"] & F_LAST:
            return st, nq, nm, na
        st &= ~_SNAP
    if st & _TOP:  # only a change at the touch can change the quote or uncross the book
        st &= ~_TOP
        bid, bsz = _top(keys, sizes, inst, slot, 0)
        ask, asz = _top(keys, sizes, inst, slot, 1)
        st, na = _check_cross(alerts, na, rec, iid, inst, slot, bid, ask, st)
        nq = _quote(quotes, nq, rec, iid, inst, slot, bid, ask, bsz, asz)
    mode = params[0]
    if st & _DIRTY and mode != MBP_OFF:
        ts = rec["ts_event"]
        last = inst[slot, _LMBP]
        if mode == MBP_CHANGE or last == _NO_TIME or ts - last >= params[1]:
            inst[slot, _LMBP] = ts
            st &= ~_DIRTY
            nm = _mbp10(mbp, nm, rec, iid, inst, slot, keys, sizes, orders)
    return st, nq, nm, na


@numba.njit(**_NJIT)
def _unknown_level(alerts, na, params, rec, iid, inst, slot):
    """Count a delete of a level (or order) that is not in the book; alert, throttled."""
    inst[slot, _C_UNK] += 1
    ts = rec["ts_recv"]
    last = inst[slot, _LALT]
    if params[2] == 0 or last == _NO_TIME or ts - last >= params[2]:
        inst[slot, _LALT] = ts
        value = np.float64(inst[slot, _C_UNK])
        na = _alert(alerts, na, rec, iid, inst, slot, ALERT_UNKNOWN_LEVEL, value)
    return na


@numba.njit(**_NJIT)
def _bad_record(alerts, na, rec, iid, inst, slot, action):
    inst[slot, _C_BAD] += 1
    return _alert(alerts, na, rec, iid, inst, slot, ALERT_BAD_RECORD, np.float64(action))


@numba.njit(inline="always", **_NJIT)
def _mbp_action(alerts, na, params, rec, iid, inst, slot, keys, sizes, orders, action, side, st):
    """Apply one MBP action to the book; ``(status, alerts written)``."""
    if action == _R:
        st = _clear(inst, slot, rec["flags"] & F_SNAPSHOT, st)
    elif (action == _A or action == _M or action == _D) and side >= 0 and rec["size"] >= 0:
        size = 0 if action == _D else rec["size"]
        key = rec["price"] if side == 0 else -rec["price"]
        n = inst[slot, _NLEV + side]
        n, depth, found = _set_level(keys, sizes, orders, _row(slot, side), n, key, size, 0)
        inst[slot, _NLEV + side] = n
        if depth == 0:
            st |= _DIRTY | _TOP
        elif depth < 10:
            st |= _DIRTY
        if not found and size == 0:
            na = _unknown_level(alerts, na, params, rec, iid, inst, slot)
    elif action != _T and action != _F and action != _N:
        na = _bad_record(alerts, na, rec, iid, inst, slot, action)
    return st, na


@numba.njit(inline="always", **_NJIT)
def _room(quotes, mbp, alerts, nq, nm, na):
    """Whether the outputs have room for what one record can produce."""
    return nq < quotes.shape[0] and nm < mbp.shape[0] and na + 3 <= alerts.shape[0]


@numba.njit(inline="always", **_NJIT)
def _side(code):
    return 0 if code == _BID else (1 if code == _ASK else -1)


@numba.njit(inline="always", **_NJIT)
def _enter(rec, table, shift, slot_ids, n_slots, inst, quotes, mbp, alerts, nq, nm, na):
    """Room for one record's outputs, and its instrument's slot (a new one starts empty).

    Returns ``(reason, slot, n_slots)``: ``_DONE`` to go on, else why the loop must stop. The slot
    is unsigned: no negative-index wraparound on every access.
    """
    if not _room(quotes, mbp, alerts, nq, nm, na):
        return _NEED_OUT, np.uint64(0), n_slots
    found = slot_of(np.int64(rec["instrument_id"]), table, shift, slot_ids, n_slots)
    if found < 0:
        return _NEED_SLOTS, np.uint64(0), n_slots
    if found == n_slots:
        n_slots += 1
        _new_instrument(inst, np.uint64(found))
    return _DONE, np.uint64(found), n_slots


@numba.njit(**_NJIT)
def _apply(batch, start, table, shift, slot_ids, meta, params, inst, keys, sizes, orders,
           quotes, mbp, alerts, nout):  # fmt: skip
    """Process ``batch[start:]``; return where it stopped (``meta[1]`` says why).

    ``nout`` counts the records written to ``quotes``, ``mbp`` and ``alerts``.
    """
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
        if (action == _A or action == _M) and side >= 0 and inst[slot, _NLEV + side] >= cap:
            meta[1] = _NEED_DEPTH
            stop = i
            break
        ok, st, na = _begin(alerts, na, rec, iid, inst, slot, action == _R, inst[slot, _ST])
        if ok:
            st, na = _mbp_action(alerts, na, params, rec, iid, inst, slot, keys, sizes, orders,
                                 action, side, st)  # fmt: skip
            st, nq, nm, na = _end(quotes, mbp, alerts, nq, nm, na, params, rec, iid, inst, slot,
                                  keys, sizes, orders, st)  # fmt: skip
        inst[slot, _ST] = st
    meta[0] = n_slots
    nout[0], nout[1], nout[2] = nq, nm, na
    return stop


# --------------------------------------------------------------------------- Python side

_MBP_MODES = {"off": MBP_OFF, "change": MBP_CHANGE, "interval": MBP_INTERVAL}
_SNAPSHOT_KEYS = ("instrument_id", "state", "keys", "sizes", "orders")


class BookKernel:
    """L2 books for any number of instruments; ``update(batch)`` once per ``book_update`` batch.

    Returns ``(quotes, mbp10, alerts)``: views into buffers this kernel owns, valid until the next
    call (copy them to keep them). See the module docstring for the semantics. Not thread-safe:
    one stage owns one kernel; the compiled loop releases the GIL.
    """

    def __init__(
        self, mbp10_on: str = "change", interval_ns: int = 0, alert_interval_ns: int = 0,
        capacity: int = 4096,
    ) -> None:  # fmt: skip
        from hftagg.records.catalog import ALERT, MBP10, QUOTE

        self._schemas = (QUOTE, MBP10, ALERT)
        self._params = np.zeros(3, dtype=np.int64)
        self._meta = np.zeros(2, dtype=np.int64)
        self._nout = np.zeros(3, dtype=np.int64)
        self.configure(mbp10_on, interval_ns, alert_interval_ns)
        self._slots = self._table_for(_INITIAL_DEPTH)
        self._outputs(max(int(capacity), 16))

    def configure(self, mbp10_on: str, interval_ns: int, alert_interval_ns: int) -> None:
        """Change the mbp10 policy and the alert throttle from the next ``update`` on."""
        if mbp10_on not in _MBP_MODES:
            raise ValueError(f"mbp10_on must be one of {sorted(_MBP_MODES)}, got {mbp10_on!r}")
        if interval_ns < 0 or alert_interval_ns < 0:
            raise ValueError(
                f"intervals must be >= 0 ns, got {interval_ns} and {alert_interval_ns}"
            )
        self._params[:] = (_MBP_MODES[mbp10_on], interval_ns, alert_interval_ns)

    # ----------------------------------------------------------------- state arrays

    def _table_for(self, depth: int) -> SlotTable:
        """Per-instrument rows: the ``_NCOL`` state columns and ``depth`` levels per side."""
        columns = {
            "state": ((_NCOL,), np.int64),
            "keys": ((2, depth), np.int64),
            "sizes": ((2, depth), np.int64),
            "orders": ((2, depth), np.uint32),
        }
        return SlotTable(columns, meta=self._meta, capacity=_INITIAL_SLOTS, name="book")

    @property
    def _inst(self) -> np.ndarray:
        return self._slots["state"]

    def _levels(self, column: str) -> np.ndarray:
        """Level rows as the compiled code indexes them: row ``2 * slot + side`` (a view)."""
        array = self._slots[column]
        return array.reshape(2 * array.shape[0], array.shape[2])

    @property
    def _keys(self) -> np.ndarray:
        return self._levels("keys")

    @property
    def _sizes(self) -> np.ndarray:
        return self._levels("sizes")

    @property
    def _orders(self) -> np.ndarray:
        return self._levels("orders")

    def _outputs(self, capacity: int) -> None:
        """(Re)allocate the output buffers, keeping what the current call has written."""
        quote, mbp10, alert = self._schemas
        old = getattr(self, "_out", None)
        self._out = (quote.empty(capacity), mbp10.empty(capacity), alert.empty(capacity))
        if old is not None:
            for new, prev, k in zip(self._out, old, self._nout, strict=True):
                new[:k] = prev[:k]

    # ----------------------------------------------------------------- hot path

    def update(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply a batch of updates; return the ``(quotes, mbp10, alerts)`` it produced."""
        self._nout[:] = 0
        done = 0
        while True:
            done = self._run(batch, done)
            reason = self._meta[1]
            if reason == _DONE:
                break
            self._make_room(int(reason))
        nq, nm, na = (int(k) for k in self._nout)
        alerts = self._out[2][:na]
        if na:
            alerts["severity"] = _SEVERITY[alerts["code"]]
            alerts["text"] = _TEXT[alerts["code"]]
        return self._out[0][:nq], self._out[1][:nm], alerts

    def _run(self, batch: np.ndarray, start: int) -> int:
        quotes, mbp, alerts = self._out
        slots = self._slots
        return _apply(batch, start, slots.table, slots.shift, slots.ids, self._meta,
                      self._params, self._inst, self._keys, self._sizes, self._orders,
                      quotes, mbp, alerts, self._nout)  # fmt: skip

    def _make_room(self, reason: int) -> None:
        """Grow what the compiled loop stopped for (it resumes at the same record)."""
        if reason == _NEED_SLOTS:
            self._slots.grow()
        elif reason == _NEED_DEPTH:
            depth = 2 * self.depth_capacity
            for column in ("keys", "sizes", "orders"):
                self._slots.reshape(column, (2, depth))
        elif reason == _NEED_OUT:
            self._outputs(2 * self._out[0].shape[0])
        else:
            raise AssertionError(f"book kernel stopped for unknown reason {reason}")

    # ----------------------------------------------------------------- inspection

    def _slot(self, instrument_id: int) -> int:
        return self._slots.lookup(instrument_id)

    @property
    def instrument_count(self) -> int:
        return self._slots.count

    @property
    def depth_capacity(self) -> int:
        """Levels per side the arrays hold now (they double when a side outgrows them)."""
        return self._slots.row_shape("keys")[1]

    def levels(self, instrument_id: int, counts: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(bids, asks)``: ``(k, 2)`` int64 arrays of ``(price, size)``, best level first.

        With ``counts=True`` a third column holds each level's order count (0 for L2 input).
        """
        slot = self._slot(instrument_id)
        width = 3 if counts else 2
        if slot < 0:
            return np.zeros((0, width), np.int64), np.zeros((0, width), np.int64)
        out = []
        for side, sign in ((0, 1), (1, -1)):
            n, row = int(self._inst[slot, _NLEV + side]), 2 * slot + side
            rows = np.empty((n, width), dtype=np.int64)
            rows[:, 0] = sign * self._keys[row, :n][::-1]
            rows[:, 1] = self._sizes[row, :n][::-1]
            if counts:
                rows[:, 2] = self._orders[row, :n][::-1]
            out.append(rows)
        return out[0], out[1]

    def is_valid(self, instrument_id: int) -> bool:
        """False after a sequence gap until a clear rebuilds the book (True if unseen)."""
        slot = self._slot(instrument_id)
        return slot < 0 or bool(self._inst[slot, _ST] & _VALID)

    def counters(self, instrument_id: int | None = None) -> dict[str, int]:
        """``COUNTERS`` for one instrument, or summed over all of them."""
        columns = slice(_CNT, _CNT + len(COUNTERS))
        if instrument_id is None:
            rows = self._inst[: self.instrument_count, columns].sum(axis=0)
        else:
            slot = self._slot(instrument_id)
            rows = self._inst[slot, columns] if slot >= 0 else np.zeros(len(COUNTERS), np.int64)
        return {name: int(v) for name, v in zip(COUNTERS, rows, strict=True)}

    # ----------------------------------------------------------------- state

    def snapshot(self) -> dict:
        """Every instrument's book and bookkeeping as numpy array copies.

        ``instrument_id[i]`` owns ``state[i]`` and the level rows ``2 * i`` (bids) and
        ``2 * i + 1`` (asks) of ``keys``/``sizes``/``orders``, trimmed to the deepest side.
        """
        ids, rows = self._slots.snapshot()
        n = ids.shape[0]
        depth = int(rows["state"][:, _NLEV : _NLEV + 2].max()) if n else 0
        state = {"instrument_id": ids, "state": rows["state"]}
        for name in _SNAPSHOT_KEYS[2:]:
            state[name] = rows[name][:, :, :depth].reshape(2 * n, depth)
        return state

    def restore(self, state: dict) -> None:
        """Replace every book with a ``snapshot()``."""
        missing = [key for key in _SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"book snapshot is missing key {missing[0]!r} (needs {', '.join(_SNAPSHOT_KEYS)})"
            )
        n = np.shape(state["instrument_id"])[0] if np.ndim(state["instrument_id"]) == 1 else 0
        levels = {k: np.asarray(state[k]) for k in _SNAPSHOT_KEYS[2:]}
        if any(a.ndim != 2 or a.shape[0] != 2 * n for a in levels.values()):
            raise ValueError(
                f"book snapshot level arrays must have 2 rows (bids, asks) per instrument, "
                f"{2 * n} for {n} instruments: got {[a.shape for a in levels.values()]}"
            )
        depth = levels["keys"].shape[1]
        rows = {k: a.reshape(n, 2, a.shape[1]) for k, a in levels.items()}
        table = self._table_for(capacity_for(depth + 1, _INITIAL_DEPTH))
        table.load(state["instrument_id"], {"state": state["state"], **rows})
        self._slots = table


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile the book loop for contiguous and strided ``book_update`` batches."""
    from hftagg.records.catalog import BOOK_UPDATE

    batch = BOOK_UPDATE.empty(8)
    batch["instrument_id"] = [3, 3, 3, 3, 5, 5, 3, 5]
    batch["seq"] = [0, 1, 2, 3, 0, 1, 4, 3]
    batch["action"] = [ord(c) for c in "AAMDRATA"]
    batch["side"] = [ord(c) for c in "BAABBABA"]
    batch["price"] = [100, 101, 101, 99, 0, 50, 0, 51]
    batch["size"] = [1, 2, 3, 0, 0, 4, 0, 1]
    batch["size"] *= 10**8
    for mode in _MBP_MODES:
        kernel = BookKernel(mbp10_on=mode, interval_ns=10, capacity=16)
        kernel.update(batch)
        kernel.update(batch[::2])
    kernel.restore(kernel.snapshot())
