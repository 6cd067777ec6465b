"""Market-by-price (L2) order books per instrument, built from ``book_update`` records.

Levels live in compiled code: for every instrument and side a sorted array of ``(key, size)``
with the best level at the *end* (``key = price`` for bids, ``-price`` for asks, so both sides
ascend towards the best), which makes the common case, an update at or near the touch, a short
scan from the end and an insert or delete that moves only the few levels above it. Depth is
unbounded: when a side outgrows the arrays the kernel stops, the Python side doubles the
capacity and the kernel resumes at the same record. Instruments are arbitrary uint32 ids found
in the open-addressing table of :mod:`hftagg.kernels.ema`.

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
- ``T`` trade, ``F`` fill and ``N`` none leave the book alone. Any other action, or a side other
  than ``B``/``A`` on an add/modify/delete, is counted and alerted (``ALERT_BAD_RECORD``).
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
after it); and ``alert`` records (text filled by the Python side from the code).
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.ema import _build_table, _probe, _slot_of

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

_NJIT = {"cache": True, "nogil": True, "error_model": "numpy"}

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
    ALERT_BAD_RECORD: (2, b"book: unknown action or side, record ignored"),
}
_SEVERITY = np.zeros(8, dtype=np.uint8)
_TEXT = np.zeros(8, dtype="S48")
for _code, (_sev, _txt) in ALERT_TEXT.items():
    _SEVERITY[_code], _TEXT[_code] = _sev, _txt

#: Per-instrument counters, in the order of the kernel's ``counts`` columns.
COUNTERS = ("updates", "gaps", "unknown_deletes", "dropped_invalid", "bad_records", "crossed")
_C_UPD, _C_GAP, _C_UNK, _C_DROP, _C_BAD, _C_CROSS = range(6)

# status bits
_VALID, _SNAP, _CROSSED, _SEEN, _DIRTY = 1, 2, 4, 8, 16
# stop reasons (meta[1])
_DONE, _NEED_SLOTS, _NEED_DEPTH, _NEED_OUT = 0, 1, 2, 3
# last published quote: (bid_px, ask_px, bid_sz, ask_sz); size -1 forces the next publication
_NEVER = -1
_NO_TIME = np.iinfo(np.int64).min  # no mbp10 / alert published yet

_A, _M, _D, _R, _T, _F, _N = (ord(c) for c in "AMDRTFN")
_BID, _ASK = ord("B"), ord("A")

_INITIAL_SLOTS = 16
_INITIAL_DEPTH = 32
_TABLE_PER_SLOT = 8
_MIN_TABLE_BITS = 12
_UNCHANGED = 1 << 40  # the "depth" _set_level reports when no level changed
_SCAN = 8  # levels scanned linearly from the touch before a binary search


# --------------------------------------------------------------------------- level arrays


@numba.njit(inline="always", **_NJIT)
def _find(keys, n, key):
    """``(index, found)``: where ``key`` is in ``keys[:n]`` (ascending), or where it belongs."""
    i = n - 1
    stop = max(n - _SCAN, 0)
    while i >= stop:
        k = keys[i]
        if k == key:
            return i, True
        if k < key:
            return i + 1, False
        i -= 1
    lo = 0
    hi = stop  # keys[stop:] are all above key
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo, lo < n and keys[lo] == key


@numba.njit(inline="always", **_NJIT)
def _set_level(keys, sizes, n, key, size):
    """Upsert or (size 0) remove; return ``(new n, depth from the touch, was found)``.

    The depth is that of the changed level (0: the best), ``_UNCHANGED`` if nothing changed.
    """
    pos, found = _find(keys, n, key)
    if found:
        if size == 0:
            for j in range(pos, n - 1):
                keys[j] = keys[j + 1]
                sizes[j] = sizes[j + 1]
            return n - 1, n - 1 - pos, True
        if sizes[pos] == size:
            return n, _UNCHANGED, True
        sizes[pos] = size
        return n, n - 1 - pos, True
    if size == 0:
        return n, _UNCHANGED, False
    for j in range(n, pos, -1):
        keys[j] = keys[j - 1]
        sizes[j] = sizes[j - 1]
    keys[pos] = key
    sizes[pos] = size
    return n + 1, n - pos, False


# --------------------------------------------------------------------------- outputs


@numba.njit(inline="always", **_NJIT)
def _alert(alerts, na, rec, iid, slot, oseq, code, value):
    a = alerts[na]
    a["ts_event"] = rec["ts_event"]
    a["ts_recv"] = rec["ts_recv"]
    a["seq"] = oseq[slot, 2]
    a["instrument_id"] = iid
    a["code"] = code
    a["value"] = value
    oseq[slot, 2] += 1
    return na + 1


@numba.njit(inline="always", **_NJIT)
def _levels(px_out, sz_out, nm, keys, sizes, n, sign):
    for j in range(10):
        idx = n - 1 - j
        if idx >= 0:
            px_out[nm, j] = sign * keys[idx]
            sz_out[nm, j] = sizes[idx]
        else:
            px_out[nm, j] = UNDEF_PRICE
            sz_out[nm, j] = 0


@numba.njit(inline="always", **_NJIT)
def _write_mbp(mbp, m_out, nm, rec, iid, slot, oseq, keys, sizes, nlev):
    m = mbp[nm]
    m["ts_event"] = rec["ts_event"]
    m["ts_recv"] = rec["ts_recv"]
    m["seq"] = oseq[slot, 1]
    m["instrument_id"] = iid
    oseq[slot, 1] += 1
    bid_px, ask_px, bid_sz, ask_sz = m_out
    _levels(bid_px, bid_sz, nm, keys[slot, 0], sizes[slot, 0], nlev[slot, 0], 1)
    _levels(ask_px, ask_sz, nm, keys[slot, 1], sizes[slot, 1], nlev[slot, 1], -1)
    return nm + 1


@numba.njit(inline="always", **_NJIT)
def _top(keys, sizes, nlev, slot, side):
    n = nlev[slot, side]
    if n == 0:
        return UNDEF_PRICE, 0
    px = keys[slot, side, n - 1]
    return (px if side == 0 else -px), np.int64(sizes[slot, side, n - 1])


# --------------------------------------------------------------------------- the batch loop


@numba.njit(inline="always", **_NJIT)
def _sequence(rec, action, slot, status, next_seq, counts):
    """Check ``seq``; return the gap (0: none) and update the expected sequence."""
    seq = rec["seq"]
    gap = 0
    if action != _R and status[slot] & _SEEN and seq != next_seq[slot]:
        gap = np.int64(seq - next_seq[slot])
        counts[slot, _C_GAP] += 1
    next_seq[slot] = seq + np.uint64(1)
    status[slot] |= _SEEN
    return gap


@numba.njit(inline="always", **_NJIT)
def _check_cross(rec, iid, slot, status, counts, keys, sizes, nlev, alerts, na, oseq):
    bid, _ = _top(keys, sizes, nlev, slot, 0)
    ask, _ = _top(keys, sizes, nlev, slot, 1)
    if nlev[slot, 0] and nlev[slot, 1] and bid >= ask:
        if not status[slot] & _CROSSED:
            status[slot] |= _CROSSED
            counts[slot, _C_CROSS] += 1
            code = ALERT_CROSSED if bid > ask else ALERT_LOCKED
            na = _alert(alerts, na, rec, iid, slot, oseq, code, (ask - bid) * 1e-9)
    else:
        status[slot] &= ~_CROSSED
    return na


@numba.njit(inline="always", **_NJIT)
def _new_instrument(slot, book):
    status, _, counts, pub, oseq, last_mbp, last_alert, _, _, nlev = book
    status[slot] = _VALID
    counts[slot, :] = 0
    pub[slot, :] = _NEVER
    oseq[slot, :] = 0
    last_mbp[slot] = _NO_TIME
    last_alert[slot] = _NO_TIME
    nlev[slot, :] = 0


@numba.njit(inline="always", **_NJIT)
def _clear(slot, snapshot, book):
    status, _, _, pub, _, _, _, _, _, nlev = book
    nlev[slot, :] = 0
    status[slot] = (status[slot] | _VALID | _DIRTY) & ~(_SNAP | _CROSSED)
    if snapshot:
        status[slot] |= _SNAP
    pub[slot, :] = _NEVER


@numba.njit(inline="always", **_NJIT)
def _level(rec, action, side, slot, iid, alert_gap_ns, book, alerts, na):
    """Apply an add/modify/delete to the level; alert a delete of an unknown level."""
    status, _, counts, _, oseq, _, last_alert, keys, sizes, nlev = book
    size = 0 if action == _D else rec["size"]
    key = rec["price"] if side == 0 else -rec["price"]
    n, depth, found = _set_level(keys[slot, side], sizes[slot, side], nlev[slot, side], key, size)
    nlev[slot, side] = n
    if depth < 10:
        status[slot] |= _DIRTY
    if not found and size == 0:
        counts[slot, _C_UNK] += 1
        ts = rec["ts_recv"]
        last = last_alert[slot]
        if alert_gap_ns == 0 or last == _NO_TIME or ts - last >= alert_gap_ns:
            last_alert[slot] = ts
            na = _alert(alerts, na, rec, iid, slot, oseq, ALERT_UNKNOWN_LEVEL,
                        np.float64(counts[slot, _C_UNK]))  # fmt: skip
    return na


@numba.njit(inline="always", **_NJIT)
def _quote(rec, iid, slot, book, quotes, nq):
    """Publish the top of book if it differs from the last one published."""
    _, _, _, pub, oseq, _, _, keys, sizes, nlev = book
    bid, bsz = _top(keys, sizes, nlev, slot, 0)
    ask, asz = _top(keys, sizes, nlev, slot, 1)
    if bid == pub[slot, 0] and ask == pub[slot, 1] and bsz == pub[slot, 2] and asz == pub[slot, 3]:
        return nq
    pub[slot, 0], pub[slot, 1], pub[slot, 2], pub[slot, 3] = bid, ask, bsz, asz
    q = quotes[nq]
    q["ts_event"] = rec["ts_event"]
    q["ts_recv"] = rec["ts_recv"]
    q["seq"] = oseq[slot, 0]
    q["instrument_id"] = iid
    q["bid_px"] = bid
    q["ask_px"] = ask
    q["bid_sz"] = bsz
    q["ask_sz"] = asz
    oseq[slot, 0] += 1
    return nq + 1


@numba.njit(inline="always", **_NJIT)
def _publish(rec, iid, slot, params, book, out, nout):
    """After an update outside a snapshot: crossed check, quote, mbp10."""
    status, _, counts, _, oseq, last_mbp, _, keys, sizes, nlev = book
    quotes, mbp, m_out, alerts = out
    nout[2] = _check_cross(rec, iid, slot, status, counts, keys, sizes, nlev, alerts, nout[2],
                           oseq)  # fmt: skip
    nout[0] = _quote(rec, iid, slot, book, quotes, nout[0])
    mode = params[0]
    if status[slot] & _DIRTY and mode != MBP_OFF:
        ts = rec["ts_event"]
        last = last_mbp[slot]
        if mode == MBP_CHANGE or last == _NO_TIME or ts - last >= params[1]:
            last_mbp[slot] = ts
            status[slot] &= ~_DIRTY
            nout[1] = _write_mbp(mbp, m_out, nout[1], rec, iid, slot, oseq, keys, sizes, nlev)


@numba.njit(inline="always", **_NJIT)
def _record(rec, iid, slot, params, book, out, nout):
    """Everything one update does to its instrument (room for its outputs is checked)."""
    status, next_seq, counts = book[0], book[1], book[2]
    alerts = out[3]
    action = rec["action"]
    side = 0 if rec["side"] == _BID else (1 if rec["side"] == _ASK else -1)
    counts[slot, _C_UPD] += 1
    gap = _sequence(rec, action, slot, status, next_seq, counts)
    if gap != 0 and status[slot] & _VALID:
        status[slot] &= ~(_VALID | _SNAP)
        nout[2] = _alert(alerts, nout[2], rec, iid, slot, book[4], ALERT_GAP, np.float64(gap))
    if not status[slot] & _VALID and action != _R:
        counts[slot, _C_DROP] += 1
        return
    snap_flag = rec["flags"] & F_SNAPSHOT
    if status[slot] & _SNAP and not snap_flag:
        status[slot] &= ~_SNAP
    if action == _R:
        _clear(slot, snap_flag, book)
    elif (action == _A or action == _M or action == _D) and side >= 0:
        nout[2] = _level(rec, action, side, slot, iid, params[2], book, alerts, nout[2])
    elif action != _T and action != _F and action != _N:
        counts[slot, _C_BAD] += 1
        nout[2] = _alert(alerts, nout[2], rec, iid, slot, book[4], ALERT_BAD_RECORD,
                         np.float64(action))  # fmt: skip
    if status[slot] & _SNAP and rec["flags"] & F_LAST:
        status[slot] &= ~_SNAP
    if not status[slot] & _SNAP:
        _publish(rec, iid, slot, params, book, out, nout)


@numba.njit(**_NJIT)
def _apply(batch, start, table, shift, slot_ids, meta, params, book, out, nout):
    """Process ``batch[start:]``; return where it stopped (``meta[1]`` says why).

    ``book`` = (status, next_seq, counts, pub, oseq, last_mbp, last_alert, keys, sizes, nlev),
    ``out`` = (quotes, mbp10, mbp10 level views, alerts), ``nout`` = records written to each.
    """
    quotes, mbp, _, alerts = out
    nlev = book[9]
    cap = book[7].shape[2]
    n_slots = meta[0]
    meta[1] = _DONE
    stop = batch.shape[0]
    for i in range(start, batch.shape[0]):
        if nout[0] >= quotes.shape[0] or nout[1] >= mbp.shape[0] or nout[2] + 3 > alerts.shape[0]:
            meta[1] = _NEED_OUT
            stop = i
            break
        rec = batch[i]
        iid = rec["instrument_id"]
        slot = _slot_of(np.int64(iid), table, shift, slot_ids, n_slots)
        if slot < 0:
            meta[1] = _NEED_SLOTS
            stop = i
            break
        if slot == n_slots:
            n_slots += 1
            _new_instrument(slot, book)
        action = rec["action"]
        side = 0 if rec["side"] == _BID else (1 if rec["side"] == _ASK else -1)
        if (action == _A or action == _M) and side >= 0 and nlev[slot, side] >= cap:
            meta[1] = _NEED_DEPTH
            stop = i
            break
        _record(rec, iid, slot, params, book, out, nout)
    meta[0] = n_slots
    return stop


# --------------------------------------------------------------------------- Python side

_MBP_MODES = {"off": MBP_OFF, "change": MBP_CHANGE, "interval": MBP_INTERVAL}
_SNAPSHOT_KEYS = (
    "instrument_id", "status", "next_seq", "counts", "published", "out_seq", "last_mbp10_ts",
    "last_alert_ts", "levels", "keys", "sizes",
)  # fmt: skip


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
        self._allocate(_INITIAL_SLOTS, _INITIAL_DEPTH)
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

    def _allocate(self, slots: int, depth: int) -> None:
        self._slot_ids = np.zeros(slots, dtype=np.uint32)
        self._status = np.zeros(slots, dtype=np.uint8)
        self._next_seq = np.zeros(slots, dtype=np.uint64)
        self._counts = np.zeros((slots, len(COUNTERS)), dtype=np.int64)
        self._pub = np.zeros((slots, 4), dtype=np.int64)
        self._oseq = np.zeros((slots, 3), dtype=np.uint64)
        self._last_mbp = np.zeros(slots, dtype=np.int64)
        self._last_alert = np.zeros(slots, dtype=np.int64)
        self._keys = np.zeros((slots, 2, depth), dtype=np.int64)
        self._sizes = np.zeros((slots, 2, depth), dtype=np.uint32)
        self._nlev = np.zeros((slots, 2), dtype=np.int64)
        bits = max(int(_TABLE_PER_SLOT * slots - 1).bit_length(), _MIN_TABLE_BITS)
        self._table = np.zeros(1 << bits, dtype=np.int64)
        self._shift = 64 - bits
        self._meta[0] = 0

    def _state_arrays(self) -> tuple[np.ndarray, ...]:
        return (self._slot_ids, self._status, self._next_seq, self._counts, self._pub,
                self._oseq, self._last_mbp, self._last_alert, self._nlev)  # fmt: skip

    def _grow(self, slots: int, depth: int) -> None:
        n = int(self._meta[0])
        old = [a[:n].copy() for a in self._state_arrays()]
        old_depth = self._keys.shape[2]
        keys, sizes = self._keys[:n].copy(), self._sizes[:n].copy()
        self._allocate(slots, depth)
        for new, values in zip(self._state_arrays(), old, strict=True):
            new[:n] = values
        self._keys[:n, :, :old_depth] = keys
        self._sizes[:n, :, :old_depth] = sizes
        self._meta[0] = n
        _build_table(self._slot_ids, n, self._table, self._shift)

    def _outputs(self, capacity: int) -> None:
        """(Re)allocate the output buffers, keeping what the current call has written."""
        quote, mbp10, alert = self._schemas
        old = getattr(self, "_out", None)
        self._out = (quote.empty(capacity), mbp10.empty(capacity), alert.empty(capacity))
        if old is not None:
            for new, prev, k in zip(self._out, old, self._nout, strict=True):
                new[:k] = prev[:k]
        mbp = self._out[1]
        self._mbp_fields = (mbp["bid_px"], mbp["ask_px"], mbp["bid_sz"], mbp["ask_sz"])

    # ----------------------------------------------------------------- hot path

    def update(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply a ``book_update`` batch; return ``(quotes, mbp10, alerts)`` it produced."""
        self._nout[:] = 0
        done = 0
        while True:
            book = (self._status, self._next_seq, self._counts, self._pub, self._oseq,
                    self._last_mbp, self._last_alert, self._keys, self._sizes, self._nlev)
            out = (self._out[0], self._out[1], self._mbp_fields, self._out[2])
            done = _apply(batch, done, self._table, self._shift, self._slot_ids, self._meta,
                          self._params, book, out, self._nout)  # fmt: skip
            reason = self._meta[1]
            if reason == _DONE:
                break
            slots, depth = self._slot_ids.shape[0], self._keys.shape[2]
            if reason == _NEED_SLOTS:
                self._grow(2 * slots, depth)
            elif reason == _NEED_DEPTH:
                self._grow(slots, 2 * depth)
            else:
                self._outputs(2 * self._out[0].shape[0])
        nq, nm, na = (int(k) for k in self._nout)
        alerts = self._out[2][:na]
        if na:
            alerts["severity"] = _SEVERITY[alerts["code"]]
            alerts["text"] = _TEXT[alerts["code"]]
        return self._out[0][:nq], self._out[1][:nm], alerts

    # ----------------------------------------------------------------- inspection

    def _slot(self, instrument_id: int) -> int:
        key = int(instrument_id)
        if not 0 <= key <= 0xFFFFFFFF:
            raise ValueError(f"instrument_id must be a uint32 (0..4294967295), got {key}")
        entry = int(self._table[_probe(self._table, self._shift, key)])
        return (entry >> 32) - 1

    @property
    def instrument_count(self) -> int:
        return int(self._meta[0])

    @property
    def depth_capacity(self) -> int:
        """Levels per side the arrays hold now (they double when a side outgrows them)."""
        return int(self._keys.shape[2])

    def levels(self, instrument_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bids, asks)``: ``(k, 2)`` int64 arrays of ``(price, size)``, best level first."""
        slot = self._slot(instrument_id)
        if slot < 0:
            return np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
        out = []
        for side, sign in ((0, 1), (1, -1)):
            n = int(self._nlev[slot, side])
            rows = np.empty((n, 2), dtype=np.int64)
            rows[:, 0] = sign * self._keys[slot, side, :n][::-1]
            rows[:, 1] = self._sizes[slot, side, :n][::-1]
            out.append(rows)
        return out[0], out[1]

    def is_valid(self, instrument_id: int) -> bool:
        """False after a sequence gap until a clear rebuilds the book (True if unseen)."""
        slot = self._slot(instrument_id)
        return slot < 0 or bool(self._status[slot] & _VALID)

    def counters(self, instrument_id: int | None = None) -> dict[str, int]:
        """``COUNTERS`` for one instrument, or summed over all of them."""
        if instrument_id is None:
            rows = self._counts[: self.instrument_count].sum(axis=0)
        else:
            slot = self._slot(instrument_id)
            rows = self._counts[slot] if slot >= 0 else np.zeros(len(COUNTERS), np.int64)
        return {name: int(v) for name, v in zip(COUNTERS, rows, strict=True)}

    # ----------------------------------------------------------------- state

    def snapshot(self) -> dict:
        """Every instrument's book and bookkeeping: numpy array copies, slot ``i`` per id."""
        n = self.instrument_count
        depth = int(self._nlev[:n].max()) if n else 0
        values = [a[:n].copy() for a in self._state_arrays()]
        names = _SNAPSHOT_KEYS[:9]
        state = dict(zip(names, values, strict=True))
        state["keys"] = self._keys[:n, :, :depth].copy()
        state["sizes"] = self._sizes[:n, :, :depth].copy()
        return state

    def restore(self, state: dict) -> None:
        """Replace every book with a ``snapshot()``."""
        missing = [key for key in _SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"book snapshot is missing key {missing[0]!r} (needs {', '.join(_SNAPSHOT_KEYS)})"
            )
        ids = np.asarray(state["instrument_id"])
        n = ids.shape[0]
        if ids.dtype != np.uint32 or np.unique(ids).shape[0] != n:
            raise ValueError("book snapshot key 'instrument_id' must hold distinct uint32 ids")
        depth = np.asarray(state["keys"]).shape[2] if n else 0
        slots = max(_INITIAL_SLOTS, 1 << max(n - 1, 0).bit_length())
        self._allocate(slots, max(_INITIAL_DEPTH, 1 << max(depth, 1).bit_length()))
        for new, key in zip(self._state_arrays(), _SNAPSHOT_KEYS[:9], strict=True):
            new[:n] = state[key]
        self._keys[:n, :, :depth] = state["keys"]
        self._sizes[:n, :, :depth] = state["sizes"]
        self._meta[0] = n
        _build_table(self._slot_ids, n, self._table, self._shift)


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
    for mode in _MBP_MODES:
        kernel = BookKernel(mbp10_on=mode, interval_ns=10, capacity=16)
        kernel.update(batch)
        kernel.update(batch[::2])
    kernel.restore(kernel.snapshot())
