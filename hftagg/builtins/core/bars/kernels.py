"""Bar consolidation kernels: time bars (from trades or from smaller bars), tick and volume bars.

Every kernel keeps one bar in progress per instrument (arbitrary uint32 ids, found in the
per-instrument slot table of ``hftagg.kernels.slots``) and carries it across batches. The per-record
work runs in compiled functions (``hftagg.kernels.options``); Python runs once per batch. A batch
gives two outputs, both ``bar`` records: the bars that closed (``closed``) and, when asked for,
the bar still in progress after a trade (``partial``). Both are views of buffers the kernel reuses
on its next call: copy them to keep them.

Time bars (``TimeBarKernel``) close on event time, never on the wall clock, so a replay of
recorded data gives exactly the bars a live run gave:

- A bar covers ``[start, start + timeframe)`` with ``start = offset + k * timeframe`` (UNIX ns;
  ``offset = 0`` aligns to the epoch, so ``1d`` bars are UTC days). Its ``ts_event`` is its end.
- ``close_on = "next_trade"``: an instrument's bar closes when a record of that instrument with
  ``ts_event >= end`` arrives. A quiet instrument keeps its last bar open.
- ``close_on = "any_event"``: the stream clock is the newest ``ts_event`` seen on the input (any
  instrument); every instrument's bar with ``end <= clock - grace`` closes as soon as the clock
  gets there. Bars close in ``ts_event`` order across instruments (ties in first-seen instrument
  order). A record of instrument X with ``ts_event >= end`` still closes X's bar at once. When
  cascading, the clock closes only bars that end *before* the newest input bar's end (inputs
  ending at the same time may still come for other instruments).
- Synthetic bars: when an instrument had a bar and a whole interval passes without its trades,
  the interval gets a bar with ``open = high = low = close =`` the previous close, ``volume 0``,
  ``trade_count 0``, ``vwap NaN``, ``synthetic 1`` -- at most ``max_synthetic`` in a row; after
  that the instrument is dormant until its next trade (a long halt cannot flood the stream).
  With ``any_event`` they are emitted as the clock passes; with ``next_trade`` when the next real
  bar of the instrument starts.
- A trade whose interval has already closed (``ts_event`` before the current bar's start) is a
  late trade: counted (``late_records``) and not applied.
- ``flush()`` closes every open bar (end of a recording); ``advance(ts)`` moves the clock as a
  heartbeat would and closes what ``any_event`` would close.

Sizes and ``volume`` are int64 1e-8 fixed-point quantities (:mod:`hftagg.records.fixed`).
VWAP is ``sum(price * size) / sum(size)``: the sum is kept exactly in a 128-bit integer for
trades (a price times a size needs up to 126 bits) and rounded once when the bar is written. A
bar with ``volume 0`` has ``vwap NaN``.

A record that cannot be applied exactly is rejected, never wrapped: a negative size (or input
bar volume), or one that would take the bar's volume past the int64 range (92,233,720,368.5
units). It is skipped, counted (``rejected_records``) and returned as a ``dead_letter``
(``FixedReason.OUT_OF_RANGE``, the detail names the field and value) by ``dead_letters()``.

Cascading (``TimeBarKernel(..., from_bars=True)``) builds larger time bars from smaller ones: an
input bar ``[ts_event - timeframe_ns, ts_event)`` joins the output bar that contains it (an input
that would straddle an output boundary is an error). Open is the first non-synthetic input's open,
high/low the max/min of the non-synthetic inputs, close the last one's close, volume and
trade_count sums, VWAP ``sum(vwap * volume) / sum(volume)`` (exact up to the rounding of the
input VWAPs, a few units in the last place). Synthetic inputs carry no prices; they only move
time. The output bar closes as soon as the input bar that ends at its end arrives, so 5m bars from
1m bars are the 5m bars built from the trades, record for record.

Tick bars (``TickBarKernel``) close on the ``ticks``-th trade; volume bars on reaching ``volume``
units. ``split=True`` (default) splits the trade that crosses the threshold so every bar holds
exactly ``volume`` (the rest of the trade starts the next bar, a big trade can fill several; each
part counts as one trade in its bar); ``split=False`` puts the whole crossing trade in the bar,
which then holds ``>= volume``. ``ts_event``/``ts_recv`` of a tick or volume bar are those of its
last trade; ``timeframe_ns`` is 0. Changing ``ticks``/``volume`` applies to the bar in progress:
if it already holds the new threshold it closes just before the instrument's next trade.

Partial bars (``emit``): ``"tick"`` writes the bar in progress after every trade applied,
``"price_move"`` only when the trade opened the bar or changed its close. A trade that closes its
own bar (tick/volume bars) gives the closed bar only. A partial bar has the ``seq`` its closed bar
will have and the ``ts_event``/``ts_recv`` of the trade that produced it.

``seq`` of a bar is the instrument's bar number (0, 1, ...; synthetic bars included), so a
consumer can see a missing bar. ``ts_recv`` of a closed bar is that of the record that closed it.
"""

from __future__ import annotations

import logging
import re

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import SlotTable, slot_of
from hftagg.records.catalog import BAR, DEAD_LETTER, TRADE, copy_header
from hftagg.records.fixed import FixedReason, format_fixed

__all__ = [
    "EMIT_MODES",
    "TickBarKernel",
    "TimeBarKernel",
    "VolumeBarKernel",
    "parse_duration",
    "warm",
]

log = logging.getLogger(__name__)

EMIT_MODES = ("close", "tick", "price_move")
CLOSE_ON = ("next_trade", "any_event")

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_DURATION = re.compile(r"^\s*(\d+)\s*(ns|us|ms|s|m|h|d)\s*$")
MAX_TIMEFRAME_NS = 366 * _UNITS_NS["d"]

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
_TWO64 = 18446744073709551616.0
_LOW32 = np.uint64(0xFFFFFFFF)
_U32 = np.uint64(32)
_NAN = np.nan
_SCALE = 1e-9

_INITIAL_OUT = 256

# per-instrument int64 state columns (S_HI: the high word of the exact price * size sum)
S_START, S_O, S_H, S_L, S_C, S_VOL, S_CNT, S_OPEN = 0, 1, 2, 3, 4, 5, 6, 7
S_PREV, S_HASPREV, S_RUN, S_SEQ, S_HI, S_LAST_TS, S_LAST_RECV = 8, 9, 10, 11, 12, 13, 14
_NS = 15

# meta: slots in use, clock, next due end, closed written, partial written, late records, status,
# phase (cascade: record applied, its close pending), error record, last ts_recv, out needed
M_SLOTS, M_CLOCK, M_DUE, M_NOUT, M_NPART, M_LATE, M_STATUS, M_PHASE = 0, 1, 2, 3, 4, 5, 6, 7
M_ERR, M_RECV, M_NEED = 8, 9, 10
_NM = 11
#: Per-instrument state rows: the S_* columns, the low word of the exact price * size sum (its
#: high part is S_HI) and its float64 part (see ``_add_pq`` and ``_vwap``).
_COLUMNS = {"state": ((_NS,), np.int64), "pq_low": ((), np.uint64), "pq_float": ((), np.float64)}
ST_DONE, ST_SLOTS, ST_OUT, ST_PARTIAL, ST_MISALIGNED, ST_REJECT = 0, 1, 2, 3, 4, 5

# time-bar params
P_TF, P_OFFSET, P_ANY, P_GRACE, P_SYN, P_CAP, P_EMIT = 0, 1, 2, 3, 4, 5, 6
# tick/volume params
Q_N, Q_SPLIT, Q_EMIT, Q_VOLUME = 0, 1, 2, 3
_NP = 7


# --------------------------------------------------------------------------- parsing


def parse_duration(text: object, name: str = "timeframe", *, allow_zero: bool = False) -> int:
    """``"1s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"``, ... as nanoseconds; ValueError if bad."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        hint = (
            " (months are not fixed-length: use days such as '30d')"
            if str(text).endswith("M")
            else ""
        )
        raise ValueError(
            f"{name} must be a whole number and a unit (ns, us, ms, s, m, h, d) such as '1m' or "
            f"'250ms', got {text!r}{hint}"
        )
    ns = int(match.group(1)) * _UNITS_NS[match.group(2)]
    if ns == 0 and not allow_zero:
        raise ValueError(f"{name} must be longer than zero, got {text!r}")
    if ns > MAX_TIMEFRAME_NS:
        raise ValueError(f"{name} must be at most 366d, got {text!r}")
    return ns


# --------------------------------------------------------------------------- njit helpers


@numba.njit(inline="always", **_NJIT)
def _add_pq(st, lo, s, price, size):
    """Add ``price * size`` (``size >= 0``) to slot ``s``'s exact sum ``S_HI * 2**64 + lo``
    (128-bit two's complement; the sum fits: |price| < 2**63 and the volume < 2**63)."""
    neg = price < 0
    a = np.uint64(-(price + 1)) + np.uint64(1) if neg else np.uint64(price)
    b = np.uint64(size)
    a1, a0, b1, b0 = a >> _U32, a & _LOW32, b >> _U32, b & _LOW32
    cross = a1 * b0 + a0 * b1  # < 2**64: a1, b1 < 2**31
    low = a0 * b0
    plo = low + (cross << _U32)
    phi = a1 * b1 + (cross >> _U32) + (np.uint64(1) if plo < low else np.uint64(0))
    if neg:  # negate the 128-bit product
        plo = ~plo + np.uint64(1)
        phi = ~phi + (np.uint64(1) if plo == 0 else np.uint64(0))
    total = lo[s] + plo
    st[s, S_HI] += np.int64(phi) + (np.int64(1) if total < plo else np.int64(0))
    lo[s] = total


@numba.njit(inline="always", **_NJIT)
def _vwap(st, lo, pqf, s):
    vol = st[s, S_VOL]
    if vol <= 0:
        return _NAN
    exact = np.float64(st[s, S_HI]) * _TWO64 + np.float64(lo[s])
    return (exact * _SCALE + pqf[s]) / np.float64(vol)


@numba.njit(inline="always", **_NJIT)
def _reject(meta, i):
    """Stop at record ``i``: it cannot be applied (the driver dead-letters it and resumes)."""
    meta[M_STATUS] = ST_REJECT
    meta[M_ERR] = i
    meta[M_PHASE] = 0
    return i


@numba.njit(inline="always", **_NJIT)
def _write(out, k, ts, recv, seq, iid, tf, o, h, lw, c, vol, cnt, syn, vwap):
    rec = out[k]
    rec["ts_event"] = ts
    rec["ts_recv"] = recv
    rec["seq"] = seq
    rec["instrument_id"] = iid
    rec["timeframe_ns"] = tf
    rec["open"] = o
    rec["high"] = h
    rec["low"] = lw
    rec["close"] = c
    rec["volume"] = vol
    rec["trade_count"] = cnt
    rec["synthetic"] = syn
    rec["vwap"] = vwap


@numba.njit(inline="always", **_NJIT)
def _write_slot(out, k, ts, recv, seq, st, lo, pqf, slot_ids, s, tf):
    _write(out, k, ts, recv, seq, slot_ids[s], tf, st[s, S_O], st[s, S_H], st[s, S_L],
           st[s, S_C], st[s, S_VOL], st[s, S_CNT], 0, _vwap(st, lo, pqf, s))  # fmt: skip


@numba.njit(inline="always", **_NJIT)
def _reset_bar(st, lo, pqf, s):
    st[s, S_OPEN] = 0
    st[s, S_VOL] = 0
    st[s, S_CNT] = 0
    st[s, S_HI] = 0
    lo[s] = 0
    pqf[s] = 0.0


@numba.njit(inline="always", **_NJIT)
def _init_slot(st, lo, pqf, s, start):
    st[s, :] = 0
    lo[s] = 0
    pqf[s] = 0.0
    st[s, S_START] = start


@numba.njit(inline="always", **_NJIT)
def _eligible(st, s, prm):
    """Whether slot ``s`` has a bar to emit when its interval ends (real, or synthetic)."""
    if st[s, S_OPEN]:
        return True
    return st[s, S_HASPREV] != 0 and prm[P_SYN] != 0 and st[s, S_RUN] < prm[P_CAP]


# --------------------------------------------------------------------------- time bars


@numba.njit(**_NJIT)
def _step(s, recv, st, lo, pqf, slot_ids, prm, meta, out):
    """Emit slot ``s``'s bar ending at ``start + tf``: 1 emitted, 0 nothing to emit, -1 full."""
    tf = prm[P_TF]
    if not _eligible(st, s, prm):
        return 0
    k = meta[M_NOUT]
    if k >= out.shape[0]:
        meta[M_STATUS] = ST_OUT
        return -1
    end = st[s, S_START] + tf
    seq = st[s, S_SEQ]
    if st[s, S_OPEN]:
        _write_slot(out, k, end, recv, seq, st, lo, pqf, slot_ids, s, tf)
        st[s, S_PREV] = st[s, S_C]
        st[s, S_HASPREV] = 1
        st[s, S_RUN] = 0
        _reset_bar(st, lo, pqf, s)
    else:
        p = st[s, S_PREV]
        _write(out, k, end, recv, seq, slot_ids[s], tf, p, p, p, p, 0, 0, 1, _NAN)
        st[s, S_RUN] += 1
    st[s, S_SEQ] = seq + 1
    st[s, S_START] = end
    meta[M_NOUT] = k + 1
    return 1


@numba.njit(**_NJIT)
def _close_until(s, t, recv, st, lo, pqf, slot_ids, prm, meta, out):
    """Emit slot ``s``'s bars that end at or before ``t``; False when the output is full."""
    tf = prm[P_TF]
    while st[s, S_START] + tf <= t:
        r = _step(s, recv, st, lo, pqf, slot_ids, prm, meta, out)
        if r < 0:
            return False
        if r == 0:
            break
    return True


@numba.njit(**_NJIT)
def _advance(ce, recv, st, lo, pqf, slot_ids, prm, meta, out):
    """Emit every slot's bars ending at or before ``ce``, in end order; False when full."""
    tf = prm[P_TF]
    n = meta[M_SLOTS]
    while meta[M_DUE] <= ce:
        b = meta[M_DUE]
        for s in range(n):
            if st[s, S_START] + tf == b:
                if _step(s, recv, st, lo, pqf, slot_ids, prm, meta, out) < 0:
                    return False
        due = _INT64_MAX
        for s in range(n):
            if _eligible(st, s, prm):
                due = min(due, st[s, S_START] + tf)
        meta[M_DUE] = due
    return True


@numba.njit(inline="always", **_NJIT)
def _floor(t, tf, offset):
    return ((t - offset) // tf) * tf + offset


# The two record loops stay whole on purpose: a non-inlined call per record cost 4x throughput.
@numba.njit(inline="always", **_NJIT)
def _time_run(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout, from_bars):  # noqa: C901
    """Run records ``start..``; return where it stopped (``len(inp)`` when done)."""
    tf = prm[P_TF]
    offset = prm[P_OFFSET]
    emit = prm[P_EMIT]
    for i in range(start, inp.shape[0]):
        rec = inp[i]
        key = np.int64(rec["instrument_id"])
        ts = rec["ts_event"]
        recv = rec["ts_recv"]
        tb = ts
        if from_bars:
            tfi = rec["timeframe_ns"]
            tb = ts - tfi
            if tfi <= 0 or _floor(tb, tf, offset) != _floor(ts - 1, tf, offset):
                meta[M_STATUS] = ST_MISALIGNED
                meta[M_ERR] = i
                return i
        n = meta[M_SLOTS]
        s = slot_of(key, table, shift, slot_ids, n)
        if s < 0:
            meta[M_STATUS] = ST_SLOTS
            return i
        if s == n:
            _init_slot(st, lo, pqf, s, _floor(tb, tf, offset))
            meta[M_SLOTS] = n + 1
        if meta[M_PHASE] == 0:
            meta[M_RECV] = recv
            if ts > meta[M_CLOCK]:
                meta[M_CLOCK] = ts
            # input bars ending at the clock may still come for other instruments: close
            # output bars strictly before it (each one's own last input bar closes it at once)
            ce = meta[M_CLOCK] - prm[P_GRACE] - (1 if from_bars else 0)
            if prm[P_ANY] and ce >= meta[M_DUE]:
                if not _advance(ce, recv, st, lo, pqf, slot_ids, prm, meta, out):
                    return i
            if st[s, S_START] + tf <= tb and not _close_until(
                s, tb, recv, st, lo, pqf, slot_ids, prm, meta, out
            ):
                return i
            if emit and meta[M_NPART] >= pout.shape[0]:
                meta[M_STATUS] = ST_PARTIAL
                return i
            b = _floor(tb, tf, offset)
            applied = False
            moved = False
            if from_bars and rec["synthetic"]:
                pass
            elif b < st[s, S_START]:
                meta[M_LATE] += 1
            elif st[s, S_OPEN]:
                if from_bars:
                    h, lw, c = rec["high"], rec["low"], rec["close"]
                    vol, cnt = np.int64(rec["volume"]), np.int64(rec["trade_count"])
                else:
                    h = lw = c = rec["price"]
                    vol, cnt = np.int64(rec["size"]), np.int64(1)
                if vol < 0 or vol > _INT64_MAX - st[s, S_VOL]:
                    return _reject(meta, i)
                moved = c != st[s, S_C]
                st[s, S_H] = max(st[s, S_H], h)
                st[s, S_L] = min(st[s, S_L], lw)
                st[s, S_C] = c
                st[s, S_VOL] += vol
                st[s, S_CNT] += cnt
                applied = True
            else:
                if from_bars:
                    if rec["volume"] < 0:
                        return _reject(meta, i)
                    st[s, S_O], st[s, S_H] = rec["open"], rec["high"]
                    st[s, S_L], st[s, S_C] = rec["low"], rec["close"]
                    vol, cnt = np.int64(rec["volume"]), np.int64(rec["trade_count"])
                else:
                    vol = np.int64(rec["size"])
                    if vol < 0:
                        return _reject(meta, i)
                    p = rec["price"]
                    st[s, S_O] = st[s, S_H] = st[s, S_L] = st[s, S_C] = p
                    vol, cnt = vol, np.int64(1)
                st[s, S_START] = b
                st[s, S_OPEN] = 1
                st[s, S_VOL] = vol
                st[s, S_CNT] = cnt
                meta[M_DUE] = min(meta[M_DUE], b + tf)
                applied = moved = True
            if applied:
                if from_bars:
                    if rec["volume"] > 0:
                        pqf[s] += rec["vwap"] * np.float64(rec["volume"])
                else:
                    _add_pq(st, lo, s, rec["price"], rec["size"])
                if emit == 1 or (emit == 2 and moved):
                    k = meta[M_NPART]
                    _write_slot(pout, k, ts, recv, st[s, S_SEQ], st, lo, pqf, slot_ids, s, tf)
                    meta[M_NPART] = k + 1
            meta[M_PHASE] = 1
        if from_bars:
            if not _close_until(s, ts, recv, st, lo, pqf, slot_ids, prm, meta, out):
                return i
        meta[M_PHASE] = 0
    meta[M_STATUS] = ST_DONE
    return inp.shape[0]


@numba.njit(**_NJIT)
def _time_trades(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout):
    return _time_run(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout, False)


@numba.njit(**_NJIT)
def _time_bars(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout):
    return _time_run(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout, True)


@numba.njit(**_NJIT)
def _flush_open(recv, st, lo, pqf, slot_ids, prm, meta, out):
    """Close every open bar (synthetic bars are not made up); False when the output is full."""
    for s in range(meta[M_SLOTS]):
        if st[s, S_OPEN]:
            if _step(s, recv, st, lo, pqf, slot_ids, prm, meta, out) < 0:
                return False
    return True


# --------------------------------------------------------------------------- tick / volume bars


@numba.njit(inline="always", **_NJIT)
def _count_close(s, st, lo, pqf, slot_ids, meta, out, ts, recv):
    k = meta[M_NOUT]
    _write_slot(out, k, ts, recv, st[s, S_SEQ], st, lo, pqf, slot_ids, s, 0)
    meta[M_NOUT] = k + 1
    st[s, S_SEQ] += 1
    _reset_bar(st, lo, pqf, s)


@numba.njit(inline="always", **_NJIT)
def _count_add(s, st, lo, price, size, ts, recv):
    """Add a trade (or part of one) to slot ``s``'s bar; True if the close price moved."""
    moved = True
    if st[s, S_OPEN]:
        moved = price != st[s, S_C]
        st[s, S_H] = max(st[s, S_H], price)
        st[s, S_L] = min(st[s, S_L], price)
    else:
        st[s, S_O] = st[s, S_H] = st[s, S_L] = price
        st[s, S_OPEN] = 1
    st[s, S_C] = price
    st[s, S_VOL] += size
    st[s, S_CNT] += 1
    st[s, S_LAST_TS] = ts
    st[s, S_LAST_RECV] = recv
    _add_pq(st, lo, s, price, size)
    return moved


@numba.njit(**_NJIT)
def _count_run(inp, start, table, shift, slot_ids, st, lo, pqf, prm, meta, out, pout):  # noqa: C901
    """Tick bars (``prm[Q_VOLUME] == 0``) or volume bars; return where it stopped."""
    threshold = prm[Q_N]
    by_volume = prm[Q_VOLUME] != 0
    split = prm[Q_SPLIT] != 0
    emit = prm[Q_EMIT]
    for i in range(start, inp.shape[0]):
        rec = inp[i]
        n = meta[M_SLOTS]
        s = slot_of(np.int64(rec["instrument_id"]), table, shift, slot_ids, n)
        if s < 0:
            meta[M_STATUS] = ST_SLOTS
            return i
        if s == n:
            _init_slot(st, lo, pqf, s, 0)
            meta[M_SLOTS] = n + 1
        price = rec["price"]
        size = np.int64(rec["size"])
        ts = rec["ts_event"]
        recv = rec["ts_recv"]
        if size < 0 or (not (by_volume and split) and size > _INT64_MAX - st[s, S_VOL]):
            return _reject(meta, i)
        need = 2
        if by_volume and split:
            need += st[s, S_VOL] // threshold + size // threshold + 1
        if meta[M_NOUT] + need > out.shape[0]:
            meta[M_STATUS] = ST_OUT
            meta[M_NEED] = meta[M_NOUT] + need
            return i
        if emit and meta[M_NPART] >= pout.shape[0]:
            meta[M_STATUS] = ST_PARTIAL
            return i
        meta[M_RECV] = recv
        level = st[s, S_VOL] if by_volume else st[s, S_CNT]
        if st[s, S_OPEN] and level >= threshold:  # the threshold was lowered (live)
            _count_close(s, st, lo, pqf, slot_ids, meta, out, st[s, S_LAST_TS], st[s, S_LAST_RECV])
        moved = False
        if by_volume and split:
            room = threshold - st[s, S_VOL]
            while size >= room:
                moved |= _count_add(s, st, lo, price, room, ts, recv)
                _count_close(s, st, lo, pqf, slot_ids, meta, out, ts, recv)
                size -= room
                room = threshold
                moved = False
                if size == 0:
                    break
            if size > 0 or (size == 0 and rec["size"] == 0):
                moved |= _count_add(s, st, lo, price, size, ts, recv)
        else:
            moved = _count_add(s, st, lo, price, size, ts, recv)
            level = st[s, S_VOL] if by_volume else st[s, S_CNT]
            if level >= threshold:
                _count_close(s, st, lo, pqf, slot_ids, meta, out, ts, recv)
        if st[s, S_OPEN] and (emit == 1 or (emit == 2 and moved)):
            k = meta[M_NPART]
            _write_slot(pout, k, ts, recv, st[s, S_SEQ], st, lo, pqf, slot_ids, s, 0)
            meta[M_NPART] = k + 1
    meta[M_STATUS] = ST_DONE
    return inp.shape[0]


@numba.njit(**_NJIT)
def _count_flush(st, lo, pqf, slot_ids, meta, out):
    for s in range(meta[M_SLOTS]):
        if st[s, S_OPEN]:
            if meta[M_NOUT] >= out.shape[0]:
                meta[M_STATUS] = ST_OUT
                return False
            _count_close(s, st, lo, pqf, slot_ids, meta, out, st[s, S_LAST_TS],
                         st[s, S_LAST_RECV])  # fmt: skip
    return True


# --------------------------------------------------------------------------- Python drivers


def _check_choice(value: object, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def _check_int(value: object, name: str, minimum: int, maximum: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {int(value)}")
    return int(value)


class _BarKernel:
    """Slots, hash table, output buffers and the run/grow loop shared by the bar kernels."""

    name = "bars"
    _schema = TRADE

    def __init__(self) -> None:
        self.rejected_records = 0
        self._meta = np.zeros(_NM, dtype=np.int64)
        self._prm = np.zeros(_NP, dtype=np.int64)
        self._slots = SlotTable(_COLUMNS, meta=self._meta, count_at=M_SLOTS, name=self.name)
        self._meta[M_CLOCK] = _INT64_MIN
        self._meta[M_DUE] = _INT64_MAX
        self._out = BAR.empty(_INITIAL_OUT)
        self._pout = BAR.empty(_INITIAL_OUT)

    @property
    def _slot_ids(self) -> np.ndarray:
        return self._slots.ids

    @property
    def _st(self) -> np.ndarray:
        return self._slots["state"]

    @property
    def _lo(self) -> np.ndarray:
        return self._slots["pq_low"]

    @property
    def _pqf(self) -> np.ndarray:
        return self._slots["pq_float"]

    @staticmethod
    def _grown(buffer: np.ndarray, need: int) -> np.ndarray:
        new = BAR.empty(max(2 * buffer.shape[0], need))
        new[: buffer.shape[0]] = buffer
        return new

    def _handle(self, status: int, inp: np.ndarray) -> None:
        if status == ST_SLOTS:
            self._slots.grow()
        elif status == ST_OUT:
            self._out = self._grown(self._out, int(self._meta[M_NEED]))
        elif status == ST_PARTIAL:
            self._pout = self._grown(self._pout, 0)
        elif status == ST_MISALIGNED:
            self._misaligned(inp[int(self._meta[M_ERR])])

    def _misaligned(self, record) -> None:
        raise AssertionError("unreachable")

    def _check_input(self, batch: np.ndarray) -> None:
        if not isinstance(batch, np.ndarray) or batch.dtype != self._schema.dtype:
            raise ValueError(
                f"{type(self).__name__}.update takes a batch of {self._schema.key} records, got "
                f"{getattr(batch, 'dtype', type(batch).__name__)}"
            )

    def _drive(self, kernel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_input(batch)
        meta = self._meta
        meta[M_NOUT] = meta[M_NPART] = meta[M_NEED] = 0
        self._rejected: list[int] = []
        done, n = 0, batch.shape[0]
        while done < n:
            slots = self._slots
            done = kernel(batch, done, slots.table, slots.shift, slots.ids, self._st, self._lo,
                          self._pqf, self._prm, meta, self._out, self._pout)  # fmt: skip
            if done < n:
                if meta[M_STATUS] == ST_REJECT:
                    self._rejected.append(done)
                    self.rejected_records += 1
                    done += 1
                else:
                    self._handle(int(meta[M_STATUS]), batch)
        self._batch = batch
        return self._out[: meta[M_NOUT]], self._pout[: meta[M_NPART]]

    def dead_letters(self) -> np.ndarray:
        """``dead_letter`` records for the records the last ``update`` rejected (see module)."""
        if not getattr(self, "_rejected", None):
            return DEAD_LETTER.empty(0)
        rows = self._batch[np.array(self._rejected)]
        field = "volume" if self._schema is BAR else "size"
        out = DEAD_LETTER.empty(len(rows))
        copy_header(rows, out)
        out["reason"] = FixedReason.OUT_OF_RANGE
        out["source_id"] = rows["instrument_id"]
        for k, row in enumerate(rows):
            value = format_fixed(np.array([row[field]]))[0].decode()
            why = "negative" if row[field] < 0 else "bar volume would pass 92233720368.54775807"
            out["detail"][k] = f"{self.name}: {field}={value}: {why}".encode()[:64]
        return out

    # ----------------------------------------------------------------- inspection and state

    @property
    def instrument_count(self) -> int:
        """How many distinct instruments have been seen."""
        return int(self._meta[M_SLOTS])

    @property
    def late_records(self) -> int:
        """Records not applied because their bar had already closed (time bars only)."""
        return int(self._meta[M_LATE])

    def _config(self) -> dict:
        return {}

    def snapshot(self) -> dict:
        """Everything needed to continue exactly (plain ints and numpy copies)."""
        ids, rows = self._slots.snapshot()
        return {
            "kernel": self.name,
            "config": self._config(),
            "instrument_id": ids,
            **rows,
            "meta": self._meta.copy(),
        }

    def restore(self, state: dict) -> None:
        """Take back a ``snapshot()`` of the same kernel type and configuration.

        A snapshot of another configuration (a new timeframe or offset after a restart) cannot
        continue its bars: it is ignored with a warning and the kernel starts empty.
        """
        if state.get("kernel") != self.name:
            raise ValueError(
                f"snapshot is of kernel {state.get('kernel')!r}, cannot restore into {self.name!r}"
            )
        if state.get("config") != self._config():
            log.warning("bar snapshot of %s does not match %s: starting with no open bars",
                        state.get("config"), self._config())  # fmt: skip
            return
        self._slots.load(state["instrument_id"], {k: state[k] for k in _COLUMNS})
        n = self._slots.count
        self._meta[:] = state["meta"]
        self._meta[M_SLOTS] = n
        self._meta[M_DUE] = _INT64_MIN  # recompute on the next record

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({config}, instruments={self.instrument_count})"


class TimeBarKernel(_BarKernel):
    """Time bars per instrument from trades, or from smaller bars (``from_bars``): see the module.

    ``update(batch)`` returns ``(closed, partial)`` bar views, valid until the next call.
    """

    name = "time_bars"

    def __init__(self, timeframe_ns: int, *, offset_ns: int = 0, from_bars: bool = False,
                 close_on: str = "any_event", grace_ns: int = 0, emit_synthetic: bool = True,
                 max_synthetic: int = 1000, emit: str = "close") -> None:  # fmt: skip
        super().__init__()
        self.timeframe_ns = _check_int(timeframe_ns, "timeframe_ns", 1, MAX_TIMEFRAME_NS)
        self.offset_ns = _check_int(offset_ns, "offset_ns", 0, self.timeframe_ns - 1)
        self.from_bars = bool(from_bars)
        self._schema = BAR if self.from_bars else TRADE
        self._prm[P_TF] = self.timeframe_ns
        self._prm[P_OFFSET] = self.offset_ns
        self.configure(close_on=close_on, grace_ns=grace_ns, emit_synthetic=emit_synthetic,
                       max_synthetic=max_synthetic, emit=emit)  # fmt: skip

    def configure(self, *, close_on: str, grace_ns: int, emit_synthetic: bool,
                  max_synthetic: int, emit: str) -> None:  # fmt: skip
        """Set the live parameters; they apply from the next record."""
        self.close_on = _check_choice(close_on, CLOSE_ON, "close_on")
        self.grace_ns = _check_int(grace_ns, "grace_ns", 0)
        self.emit_synthetic = bool(emit_synthetic)
        self.max_synthetic = _check_int(max_synthetic, "max_synthetic", 0)
        self.emit = _check_choice(emit, EMIT_MODES, "emit")
        prm = self._prm
        prm[P_ANY] = self.close_on == "any_event"
        prm[P_GRACE] = self.grace_ns
        prm[P_SYN] = self.emit_synthetic
        prm[P_CAP] = self.max_synthetic
        prm[P_EMIT] = EMIT_MODES.index(self.emit)
        self._meta[M_DUE] = _INT64_MIN  # who is due may have changed: recompute

    def _config(self) -> dict:
        return {"timeframe_ns": self.timeframe_ns, "offset_ns": self.offset_ns,
                "from_bars": self.from_bars}  # fmt: skip

    def update(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply a batch of trades (bars with ``from_bars``); return ``(closed, partial)``."""
        return self._drive(_time_bars if self.from_bars else _time_trades, batch)

    def _misaligned(self, record) -> None:
        tfi = int(record["timeframe_ns"])
        raise ValueError(
            f"input bar of instrument {int(record['instrument_id'])} ending at "
            f"{int(record['ts_event'])} with timeframe_ns {tfi} does not fit in one "
            f"{self.timeframe_ns} ns output bar (offset {self.offset_ns} ns); cascade from bars "
            f"whose timeframe divides the output timeframe, with the same alignment"
        )

    def _emit_loop(self, step) -> np.ndarray:
        self._meta[M_NOUT] = 0
        while not step():
            self._out = self._grown(self._out, 0)
        return self._out[: self._meta[M_NOUT]]

    def advance(self, ts_event: int, ts_recv: int | None = None) -> np.ndarray:
        """A heartbeat: move the clock to ``ts_event``; return the bars ``any_event`` closes.

        Works in both ``close_on`` modes (a heartbeat is an event). ``ts_recv`` defaults to the
        last record's.
        """
        meta = self._meta
        meta[M_CLOCK] = max(int(meta[M_CLOCK]), int(ts_event))
        recv = int(meta[M_RECV] if ts_recv is None else ts_recv)
        clock = int(meta[M_CLOCK]) - self.grace_ns - int(self.from_bars)

        def step() -> bool:
            return _advance(clock, recv, self._st, self._lo, self._pqf, self._slot_ids, self._prm,
                            meta, self._out)  # fmt: skip

        return self._emit_loop(step)

    def flush(self, ts_recv: int | None = None) -> np.ndarray:
        """Close every instrument's open bar now (end of data); returns them, ``ts_event`` = end."""
        recv = int(self._meta[M_RECV] if ts_recv is None else ts_recv)

        def step() -> bool:
            return _flush_open(recv, self._st, self._lo, self._pqf, self._slot_ids, self._prm,
                               self._meta, self._out)  # fmt: skip

        closed = self._emit_loop(step)
        self._meta[M_DUE] = _INT64_MIN
        return closed


class _CountBarKernel(_BarKernel):
    _volume = 0
    _threshold_name = "ticks"

    def __init__(self, threshold: int, *, split: bool = True, emit: str = "close") -> None:
        super().__init__()
        self._prm[Q_VOLUME] = self._volume
        self.configure(threshold, split=split, emit=emit)

    def configure(self, threshold: int, *, split: bool = True, emit: str = "close") -> None:
        """Set the threshold (trades, or raw 1e-8 quantity units for volume bars) and the live
        options; they apply from the next trade."""
        self.threshold = _check_int(threshold, self._threshold_name, 1, 2**62)
        self.split = bool(split)
        self.emit = _check_choice(emit, EMIT_MODES, "emit")
        self._prm[Q_N] = self.threshold
        self._prm[Q_SPLIT] = self.split
        self._prm[Q_EMIT] = EMIT_MODES.index(self.emit)

    def update(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply a batch of trades; return ``(closed, partial)`` bar views."""
        return self._drive(_count_run, batch)

    def flush(self) -> np.ndarray:
        """Close every open bar now (end of data); ``ts_event`` is its last trade's."""
        self._meta[M_NOUT] = 0
        while not _count_flush(self._st, self._lo, self._pqf, self._slot_ids, self._meta,
                               self._out):  # fmt: skip
            self._out = self._grown(self._out, 0)
        return self._out[: self._meta[M_NOUT]]


class TickBarKernel(_CountBarKernel):
    """A bar every ``ticks`` trades per instrument (see the module docstring)."""

    name = "tick_bars"

    def __init__(self, ticks: int, *, emit: str = "close") -> None:
        super().__init__(ticks, split=False, emit=emit)


class VolumeBarKernel(_CountBarKernel):
    """A bar every ``volume`` raw quantity units (1e-8 fixed-point: ``10**8`` is one unit of
    size) per instrument (see the module docstring)."""

    name = "volume_bars"
    _volume = 1
    _threshold_name = "volume"


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile (and cache on disk) every bar kernel for trade and bar batches."""
    trades = TRADE.empty(6)
    trades["instrument_id"] = [7, 0, 7, 0xFFFFFFFF, 7, 0]
    trades["ts_event"] = [0, 1, 2, 3, 90 * 10**9, 200 * 10**9]
    trades["price"] = [10**9, 2 * 10**9, 3 * 10**9, 4 * 10**9, 5 * 10**9, 6 * 10**9]
    trades["size"] = [1, 2, 3, 4, 5, 6]
    trades["size"] *= 10**8
    for close_on in CLOSE_ON:
        kernel = TimeBarKernel(60 * 10**9, close_on=close_on, emit="tick")
        kernel.update(trades)
        kernel._slots.grow()
        kernel.advance(10**12)
        kernel.flush()
    minute, _ = TimeBarKernel(10**9).update(trades)
    cascade = TimeBarKernel(60 * 10**9, from_bars=True, emit="price_move")
    cascade.update(minute.copy())
    cascade.flush()
    for kernel in (TickBarKernel(2, emit="tick"), VolumeBarKernel(3 * 10**8, emit="price_move")):
        kernel.update(trades)
        kernel.flush()
