"""Pre-trade risk checks per instrument and account, over ``order``, ``quote`` and ``fill`` batches.

``RiskKernel`` keeps, per instrument, its position, last two-sided quote and mark, and for the
account a cash balance and a mark-to-market sum, all updated in compiled code:

- ``quotes(batch)``: a quote with both sides present (not ``UNDEF_PRICE``) and positive sets the
  instrument's book (bid, ask) for the price band and its mark to the mid ``(bid + ask) / 2``.
  A one-sided or non-positive quote changes nothing.
- ``fills(batch)`` (position source ``"fills"``): each fill (side ``B`` +size, ``A`` -size)
  moves the position and the cash at the fill price. A fill with another side, a size of 0 or
  below, or one that would take the position past the int64 range, is ignored and alerted
  (``BAD_FILL``).

Sizes and positions are int64 1e-8 fixed-point quantities (:mod:`hftagg.records.fixed`), kept
exactly; ``max_order_size`` and ``max_position`` are given in units (at most 8 decimals) and
compared in raw units. Cash, marks, notional and P&L are float64 in price units times units.
- ``orders(batch)``: each order is checked, in this order; the first failed check rejects it:

  ===================  ========================================================================
  ``INVALID_ORDER``    side not ``B``/``A``, order type not ``L`` (limit) / ``M`` (market),
                       size <= 0, or a limit price that is ``UNDEF_PRICE`` or <= 0
  ``MAX_ORDER_SIZE``   size > ``max_order_size``
  ``NO_MARKET_DATA``   no two-sided quote seen for the instrument, for a market order (always:
                       it is valued at the mid) or a limit order when the price band is on
  ``PRICE_BAND``       limit order with ``|price - mid| / mid > price_band_bps / 1e4``
                       (computed ``|2 price - (bid + ask)| * 1e4 / (bid + ask)``; equal passes)
  ``MAX_NOTIONAL``     ``price * 1e-9 * size * 1e-8 > max_notional`` (market orders: mid)
  ``MAX_POSITION``     ``|position + signed size| > max_position``, or past the int64 range
  ``DAILY_LOSS``       the account's P&L since the start of the trading day is below
                       ``-max_daily_loss`` and the order does not reduce its instrument's
                       absolute position (reducing orders stay allowed, to flatten)
  ===================  ========================================================================

  A limit of 0 turns its check off. An accepted order with position source ``"orders"`` is
  assumed filled at once, at its limit price (market: the mid), and moves position and cash;
  with ``"fills"`` only fills do, so accepted orders not yet filled do not count against the
  position limit.

P&L is ``cash + sum(position * mark)``: realized and unrealized, marked at each instrument's last
mid (before any quote, at its last execution price). The trading day is
``floor((ts_event - day_offset_ns) / 1 day)`` of any record on any input; when a record's day is
later than the current one, the P&L at that moment becomes the day's starting P&L (positions
carry over). Rejections raise an ``alert`` (code = reason, value: the size, deviation in bps,
notional, position after the order, or the daily P&L) whose ``seq`` counts that instrument's
alerts from 0. Live changes (``configure``) apply from the next record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum

import numba
import numpy as np

from hftagg.builtins.core.validation.kernels import UNDEF_PRICE
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import SlotTable, find_slot
from hftagg.records.catalog import ALERT, FILL, ORDER, QUOTE
from hftagg.records.fixed import INT64_MAX, QTY_DECIMALS, to_fixed
from hftagg.records.reasons import register_reason_table

__all__ = ["OrderStatus", "OrderType", "RiskKernel", "RiskLimits", "RiskReason", "warm"]

_DAY_NS = 86_400 * 1_000_000_000
_NO_DAY = np.iinfo(np.int64).min
_UNITS = 1e9  # fixed-point units per price unit: divide (exact when the result is representable)
_QTY = 1e8  # raw quantity units per unit (QTY_UNITS): divide, as for prices


class OrderType:
    """``order.order_type`` codes (uint8 ASCII)."""

    LIMIT = ord("L")
    MARKET = ord("M")


class OrderStatus:
    """``order.status``: 0 as sent, ``ACCEPTED`` on ``orders.accepted``; rejects carry a
    :class:`RiskReason` code (200..255)."""

    NEW = 0
    ACCEPTED = 1


class RiskReason(IntEnum):
    """``order.status`` of rejected orders and ``alert.code`` of the risk stage (200..255)."""

    INVALID_ORDER = 201
    MAX_ORDER_SIZE = 202
    NO_MARKET_DATA = 203
    PRICE_BAND = 204
    MAX_NOTIONAL = 205
    MAX_POSITION = 206
    DAILY_LOSS = 207
    BAD_FILL = 208  # alert only: a fill that was ignored


_BASE = 200
_NCODES = 16
#: code -> (severity 1 warning / 2 error, alert text)
REASON_TEXT = {
    RiskReason.INVALID_ORDER: (2, b"risk: invalid side, type, size or price"),
    RiskReason.MAX_ORDER_SIZE: (1, b"risk: order size above max_order_size"),
    RiskReason.NO_MARKET_DATA: (1, b"risk: no two-sided quote for the instrument"),
    RiskReason.PRICE_BAND: (2, b"risk: price outside the band around the mid"),
    RiskReason.MAX_NOTIONAL: (1, b"risk: notional above max_notional"),
    RiskReason.MAX_POSITION: (1, b"risk: position would exceed max_position"),
    RiskReason.DAILY_LOSS: (2, b"risk: daily loss limit reached"),
    RiskReason.BAD_FILL: (2, b"risk: fill with bad side or size ignored"),
}
_SEVERITY, _TEXT = register_reason_table("risk", REASON_TEXT, _BASE, _NCODES)
_ACCEPTED, _FILLS, _QUOTES = 0, 14, 15  # counts[code - 200] per reason, these three besides
_INVALID, _SIZE, _NOMD, _BAND, _NOTIONAL, _POSITION, _LOSS, _BADFILL = range(1, 9)

_BUY, _SELL = ord("B"), ord("A")
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
# per-instrument int64 columns and flags, float64 columns
_POS, _FLAGS, _BID, _ASK, _ASEQ = 0, 1, 2, 3, 4
_NINT = 5
_F_MID, _F_MARK = 1, 2
_MARK = 0
# account (float64): cash, sum of position * mark, P&L at the start of the day
_CASH, _MTM, _DAY_START = 0, 1, 2
# meta: slots in use, stop reason, current trading day
_M_SLOTS, _M_STOP, _M_DAY = 0, 1, 2
_DONE, _NEED_SLOTS = 0, 1
# int params, float params
_P_MAX_SIZE, _P_MAX_POS, _P_DAY_OFFSET, _P_FROM_ORDERS = 0, 1, 2, 3
_P_MAX_NOTIONAL, _P_BAND, _P_MAX_LOSS = 0, 1, 2


@dataclass(frozen=True)
class RiskLimits:
    """The live limits (0 = that check off) and the position source (see the module docstring)."""

    max_order_size: float = 10_000  # units (1.0 = QTY_UNITS raw)
    max_position: float = 50_000
    max_notional: float = 1_000_000.0
    price_band_bps: float = 500.0
    max_daily_loss: float = 100_000.0
    day_offset_ns: int = 0
    position_from_orders: bool = True

    def __post_init__(self) -> None:
        for name in ("max_order_size", "max_position", "max_notional", "price_band_bps",
                     "max_daily_loss"):  # fmt: skip
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0 (0 = off), got {value}")
        if abs(self.day_offset_ns) >= _DAY_NS:
            raise ValueError(f"day_offset_ns must be within one day, got {self.day_offset_ns}")
        for name in ("max_order_size", "max_position"):
            _raw(getattr(self, name), name)


def _raw(units: float, name: str) -> int:
    """A limit in units as raw 1e-8 quantity units, exactly (raises if not representable)."""
    return to_fixed(repr(units) if isinstance(units, float) else int(units), QTY_DECIMALS, name)


# --------------------------------------------------------------------------- compiled loops


@numba.njit(inline="always", **_NJIT)
def _new_day(ts, meta, acct, ip):
    day = (ts - ip[_P_DAY_OFFSET]) // _DAY_NS
    if meta[_M_DAY] == _NO_DAY or day > meta[_M_DAY]:
        meta[_M_DAY] = day
        acct[_DAY_START] = acct[_CASH] + acct[_MTM]


@numba.njit(inline="always", **_NJIT)
def _execute(ints, fstate, acct, s, dq, px):
    """Position ``s`` changes by ``dq`` raw quantity units at real price ``px``."""
    q = np.float64(dq) / _QTY
    acct[_CASH] -= q * px
    if not ints[s, _FLAGS] & _F_MARK:
        fstate[s, _MARK] = px
        ints[s, _FLAGS] |= _F_MARK
    acct[_MTM] += q * fstate[s, _MARK]
    ints[s, _POS] += np.int64(dq)


@numba.njit(inline="always", **_NJIT)
def _overflows(pos, dq):
    """Whether ``pos + dq`` leaves the symmetric int64 range."""
    return (dq > 0 and pos > INT64_MAX - dq) or (dq < 0 and pos < -INT64_MAX - dq)


@numba.njit(**_NJIT)
def _alert(alerts, nout, ints, s, iid, ts, tr, code, value):
    a = alerts[nout[2]]
    a["ts_event"] = ts
    a["ts_recv"] = tr
    a["seq"] = ints[s, _ASEQ]
    a["instrument_id"] = iid
    a["code"] = _BASE + code
    a["value"] = value
    ints[s, _ASEQ] += 1
    nout[2] += 1


@numba.njit(inline="always", **_NJIT)
def _check(s, price, size, side, kind, ints, fstate, acct, ip, fp):
    """(reason, value, signed size, execution price) of one order; reason 0: accepted."""
    sign = 1 if side == _BUY else -1
    limit = kind == _LIMIT
    if (side != _BUY and side != _SELL) or size <= 0 or (not limit and kind != _MARKET):
        return _INVALID, size / _QTY, 0, 0.0
    if limit and (price == UNDEF_PRICE or price <= 0):
        return _INVALID, price / _UNITS, 0, 0.0
    if ip[_P_MAX_SIZE] > 0 and size > ip[_P_MAX_SIZE]:
        return _SIZE, size / _QTY, 0, 0.0
    has_mid = ints[s, _FLAGS] & _F_MID
    m2 = np.float64(ints[s, _BID]) + np.float64(ints[s, _ASK])
    if not has_mid and (not limit or fp[_P_BAND] > 0):
        return _NOMD, 0.0, 0, 0.0
    px = price / _UNITS if limit else m2 / (2 * _UNITS)
    if limit and fp[_P_BAND] > 0:
        deviation = abs(2.0 * np.float64(price) - m2) * 1e4 / m2
        if deviation > fp[_P_BAND]:
            return _BAND, deviation, 0, 0.0
    notional = (np.float64(price) if limit else m2 / 2) / _UNITS * (size / _QTY)
    if fp[_P_MAX_NOTIONAL] > 0 and notional > fp[_P_MAX_NOTIONAL]:
        return _NOTIONAL, notional, 0, 0.0
    dq = sign * np.int64(size)
    pos = ints[s, _POS]
    if _overflows(pos, dq):
        return _POSITION, (np.float64(pos) + np.float64(dq)) / _QTY, 0, 0.0
    after = pos + dq
    if ip[_P_MAX_POS] > 0 and abs(after) > ip[_P_MAX_POS]:
        return _POSITION, after / _QTY, 0, 0.0
    if fp[_P_MAX_LOSS] > 0 and abs(after) >= abs(pos):
        daily = acct[_CASH] + acct[_MTM] - acct[_DAY_START]
        if daily < -fp[_P_MAX_LOSS]:
            return _LOSS, daily, 0, 0.0
    return 0, 0.0, dq, px


@numba.njit(**_NJIT)
def _orders(ids, ts, tr, price, size, side, kind, start, table, shift, slot_ids, meta, ints,
            fstate, acct, ip, fp, accepted, rejected, codes, alerts, nout, counts):  # fmt: skip
    """Check orders ``start..``; return where it stopped (``meta[_M_STOP]`` says why)."""
    meta[_M_STOP] = _DONE
    for i in range(start, ids.shape[0]):
        s = find_slot(np.int64(ids[i]), table, shift, slot_ids, meta)
        if s < 0:
            meta[_M_STOP] = _NEED_SLOTS
            return i
        _new_day(ts[i], meta, acct, ip)
        code, value, dq, px = _check(s, price[i], size[i], side[i], kind[i], ints, fstate, acct,
                                     ip, fp)  # fmt: skip
        counts[code] += 1
        if code:
            rejected[nout[1]] = i
            codes[nout[1]] = _BASE + code
            nout[1] += 1
            _alert(alerts, nout, ints, s, ids[i], ts[i], tr[i], code, value)
            continue
        accepted[nout[0]] = i
        nout[0] += 1
        if ip[_P_FROM_ORDERS]:
            _execute(ints, fstate, acct, s, dq, px)
    return ids.shape[0]


@numba.njit(**_NJIT)
def _fills(ids, ts, tr, price, size, side, start, table, shift, slot_ids, meta, ints, fstate,
           acct, ip, alerts, nout, counts):  # fmt: skip
    meta[_M_STOP] = _DONE
    for i in range(start, ids.shape[0]):
        s = find_slot(np.int64(ids[i]), table, shift, slot_ids, meta)
        if s < 0:
            meta[_M_STOP] = _NEED_SLOTS
            return i
        _new_day(ts[i], meta, acct, ip)
        dq = np.int64(size[i]) if side[i] == _BUY else -np.int64(size[i])
        if (side[i] != _BUY and side[i] != _SELL) or size[i] <= 0 or _overflows(ints[s, _POS], dq):
            counts[_BADFILL] += 1
            _alert(alerts, nout, ints, s, ids[i], ts[i], tr[i], _BADFILL, size[i] / _QTY)
            continue
        counts[_FILLS] += 1
        _execute(ints, fstate, acct, s, dq, price[i] / _UNITS)
    return ids.shape[0]


@numba.njit(**_NJIT)
def _quotes(ids, ts, bid, ask, start, table, shift, slot_ids, meta, ints, fstate, acct, ip,
            counts):  # fmt: skip
    meta[_M_STOP] = _DONE
    for i in range(start, ids.shape[0]):
        s = find_slot(np.int64(ids[i]), table, shift, slot_ids, meta)
        if s < 0:
            meta[_M_STOP] = _NEED_SLOTS
            return i
        _new_day(ts[i], meta, acct, ip)
        counts[_QUOTES] += 1
        b, a = bid[i], ask[i]
        if b == UNDEF_PRICE or a == UNDEF_PRICE or b <= 0 or a <= 0:
            continue
        mid = (np.float64(b) + np.float64(a)) / (2 * _UNITS)
        old = fstate[s, _MARK] if ints[s, _FLAGS] & _F_MARK else 0.0
        acct[_MTM] += ints[s, _POS] / _QTY * (mid - old)
        fstate[s, _MARK] = mid
        ints[s, _BID], ints[s, _ASK] = b, a
        ints[s, _FLAGS] |= _F_MID | _F_MARK
    return ids.shape[0]


# --------------------------------------------------------------------------- Python side

_SNAPSHOT_KEYS = ("instrument_id", "state", "marks", "account", "meta", "counts")


class RiskKernel:
    """Risk state for any number of instruments and one account (see the module docstring).

    ``orders(batch)`` returns ``(accepted, rejected, alerts)``: new arrays of ``order`` records
    (``status`` set to ``ACCEPTED`` or the reject code) and a view of ``alert`` records valid
    until the next call. ``quotes`` and ``fills`` return the alerts they raised. Not thread-safe.
    """

    def __init__(self, limits: RiskLimits | None = None) -> None:
        self._meta = np.zeros(3, dtype=np.int64)
        self._meta[_M_DAY] = _NO_DAY
        self._acct = np.zeros(3, dtype=np.float64)
        self._counts = np.zeros(_NCODES, dtype=np.int64)
        self._nout = np.zeros(3, dtype=np.int64)
        self._ip = np.zeros(4, dtype=np.int64)
        self._fp = np.zeros(3, dtype=np.float64)
        columns = {"state": ((_NINT,), np.int64), "marks": ((1,), np.float64)}
        self._slots = SlotTable(columns, meta=self._meta, name="risk")
        self._buffers(256)
        self.configure(limits or RiskLimits())

    def configure(self, limits: RiskLimits) -> None:
        """Apply new limits from the next record on."""
        self.limits = limits
        self._ip[:] = (_raw(limits.max_order_size, "max_order_size"),
                       _raw(limits.max_position, "max_position"), limits.day_offset_ns,
                       limits.position_from_orders)  # fmt: skip
        self._fp[:] = (limits.max_notional, limits.price_band_bps, limits.max_daily_loss)

    def _buffers(self, capacity: int) -> None:
        self._accepted = np.zeros(capacity, dtype=np.int64)
        self._rejected = np.zeros(capacity, dtype=np.int64)
        self._codes = np.zeros(capacity, dtype=np.uint8)
        self._alerts = ALERT.empty(capacity)

    def _reserve(self, batch: np.ndarray, schema) -> None:
        """Check the batch and make the output buffers hold it (before they are passed on)."""
        if batch.dtype != schema.dtype:
            raise ValueError(f"risk kernel expected {schema.key} records, got dtype {batch.dtype}")
        if len(batch) > self._accepted.shape[0]:
            self._buffers(len(batch))
        self._nout[:] = 0

    def _run(self, kernel, batch: np.ndarray, fields: tuple, tail: tuple) -> np.ndarray:
        done = 0
        slots = self._slots
        while True:
            done = kernel(batch["instrument_id"], batch["ts_event"], *fields, done, slots.table,
                          slots.shift, slots.ids, self._meta, *slots.arrays, self._acct,
                          *tail)  # fmt: skip
            if self._meta[_M_STOP] == _DONE:
                break
            slots.grow()
        alerts = self._alerts[: int(self._nout[2])]
        if len(alerts):
            index = alerts["code"] - _BASE
            alerts["severity"] = _SEVERITY[index]
            alerts["text"] = _TEXT[index]
        return alerts

    def orders(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Check a batch of orders; return ``(accepted, rejected, alerts)``."""
        self._reserve(batch, ORDER)
        fields = (batch["ts_recv"], batch["price"], batch["size"], batch["side"],
                  batch["order_type"])  # fmt: skip
        tail = (self._ip, self._fp, self._accepted, self._rejected, self._codes, self._alerts,
                self._nout, self._counts)  # fmt: skip
        alerts = self._run(_orders, batch, fields, tail)
        na, nr = int(self._nout[0]), int(self._nout[1])
        accepted = batch[self._accepted[:na]]
        accepted["status"] = OrderStatus.ACCEPTED
        rejected = batch[self._rejected[:nr]]
        rejected["status"] = self._codes[:nr]
        return accepted, rejected, alerts

    def fills(self, batch: np.ndarray) -> np.ndarray:
        """Apply fills to positions and cash; return alerts for fills that were ignored."""
        self._reserve(batch, FILL)
        fields = (batch["ts_recv"], batch["price"], batch["size"], batch["side"])
        return self._run(_fills, batch, fields, (self._ip, self._alerts, self._nout, self._counts))

    def quotes(self, batch: np.ndarray) -> np.ndarray:
        """Update books and marks; returns an empty alert array (quotes raise none)."""
        self._reserve(batch, QUOTE)
        return self._run(_quotes, batch, (batch["bid_px"], batch["ask_px"]),
                         (self._ip, self._counts))  # fmt: skip

    # ----------------------------------------------------------------- inspection and state

    @property
    def counts(self) -> dict[str, int]:
        """Orders accepted, rejected per reason; fills applied, bad fills, quotes seen."""
        out = {"accepted": int(self._counts[_ACCEPTED])}
        for reason in RiskReason:
            out[reason.name.lower()] = int(self._counts[reason - _BASE])
        out["fills"] = int(self._counts[_FILLS])
        out["quotes"] = int(self._counts[_QUOTES])
        return out

    def position(self, instrument_id: int) -> int:
        """Current position of one instrument in raw 1e-8 units (0 if unseen)."""
        slot = self._slots.lookup(instrument_id)
        return int(self._slots["state"][slot, _POS]) if slot >= 0 else 0

    @property
    def pnl(self) -> float:
        """Account P&L, realized and unrealized, in price units times size units."""
        return float(self._acct[_CASH] + self._acct[_MTM])

    @property
    def daily_pnl(self) -> float:
        """P&L since the start of the current trading day."""
        return self.pnl - float(self._acct[_DAY_START])

    def snapshot(self) -> dict:
        ids, rows = self._slots.snapshot()
        return {"limits": asdict(self.limits), "instrument_id": ids, **rows,
                "account": self._acct.copy(), "meta": self._meta.copy(),
                "counts": self._counts.copy()}  # fmt: skip

    def restore(self, state: dict) -> None:
        """Replace the state with a ``snapshot()``; this kernel's limits stay in force."""
        missing = [key for key in _SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(f"risk snapshot is missing key {missing[0]!r}")
        self._slots.load(state["instrument_id"], {k: state[k] for k in ("state", "marks")})
        self._acct[:] = state["account"]
        self._meta[1:] = state["meta"][1:]
        self._counts[:] = state["counts"]


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile the order, fill and quote loops for record batches (strided field views)."""
    quotes = QUOTE.empty(2)
    quotes["instrument_id"] = [1, 2]
    quotes["bid_px"], quotes["ask_px"] = 99 * 10**9, 101 * 10**9
    orders = ORDER.empty(4)
    orders["instrument_id"] = [1, 1, 2, 3]
    orders["price"] = [100 * 10**9, 200 * 10**9, 0, 100 * 10**9]
    orders["size"] = 10**8
    orders["side"] = [_BUY, _SELL, _BUY, _BUY]
    orders["order_type"] = [OrderType.LIMIT, OrderType.LIMIT, OrderType.MARKET, OrderType.LIMIT]
    fills = FILL.empty(2)
    fills["instrument_id"] = [1, 2]
    fills["price"] = 100 * 10**9
    fills["size"] = 10**8
    fills["side"] = [_BUY, 0]
    kernel = RiskKernel()
    kernel.quotes(quotes)
    kernel.orders(orders)
    kernel.fills(fills)
    kernel.restore(kernel.snapshot())
