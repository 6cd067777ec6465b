"""Recursive indicator kernels (Wilder RSI and ATR, session VWAP), and the indicator kernel index.

The ring-buffer kernels (SMA, WMA, rolling VWAP, z-score, volatility, rolling OLS) live in
``hftagg.builtins.core.indicators.rolling`` and are re-exported here. These three keep O(1) state per instrument
and no ring:

- ``RsiKernel`` follows TA-Lib ``RSI`` (default, non-Metastock compatibility): NaN for the
  first ``window`` values of an instrument; at the ``window + 1``-th, the average gain and loss
  are the simple means of the first ``window`` price changes; after that Wilder's smoothing
  ``avg = (avg * (window - 1) + change) / window``; ``RSI = 100 * gain / (gain + loss)``, and 0
  when ``gain + loss`` is within 1e-8 of zero (TA-Lib's ``TA_IS_ZERO``).
- ``AtrKernel`` follows TA-Lib ``ATR`` over bars (high, low, close): the true range of a bar is
  ``max(high - low, |high - prev close|, |low - prev close|)`` and exists from the second bar;
  NaN for the first ``window`` bars, the mean of the first ``window`` true ranges at the
  ``window + 1``-th, then Wilder's smoothing. ``window = 1`` gives the true range (TA-Lib
  ``TRANGE``), NaN for the first bar only.
- ``SessionVwapKernel``: cumulative ``sum(price * size) / sum(size)`` per instrument since the
  start of its session (compensated summation); NaN while the session's size is 0. A session is
  ``floor((ts_event - offset) / 1 day)`` in UTC nanoseconds; a new one starts whenever a record's
  session index differs from the instrument's previous record's (so also when time goes back
  across a boundary). ``reset="never"`` keeps one session forever.

Live changes (``set_window`` / ``set_session``), applied from the next update: RSI and ATR keep
every instrument's current averages and continue Wilder's smoothing with the new window; an
instrument still warming up keeps the changes (true ranges) it has summed and completes its
warm-up at the new window, on the record that brings its count of changes to it, or, if it
already had more, on its next record, seeded with the mean of all it had summed. A session change
compares each record's session index under the new boundary with the stored one, so changing the
offset starts a new session at an instrument's next record if its index moved.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.builtins.core.indicators import rolling
from hftagg.builtins.core.indicators.rolling import (
    KeyedKernel,
    OlsKernel,
    RollingVwapKernel,
    SmaKernel,
    VolatilityKernel,
    WmaKernel,
    ZScoreKernel,
    as_ids,
    price_scale,
)
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import find_slot

__all__ = [
    "AtrKernel",
    "OlsKernel",
    "RollingVwapKernel",
    "RsiKernel",
    "SessionVwapKernel",
    "SmaKernel",
    "VolatilityKernel",
    "WmaKernel",
    "ZScoreKernel",
    "warm",
]

_NAN = np.nan
DAY_NS = 86_400 * 1_000_000_000
SESSION_RESETS = ("utc_day", "never")


# --------------------------------------------------------------------------- RSI
# state[s] = (previous price, average gain or warm-up sum, average loss or warm-up sum)
# ints[s] = (prices seen, seeded)


@numba.njit(**_NJIT)
def _rsi_update(ids, x, scale, out, window, start, table, shift, slot_ids, meta, state, ints):
    """The current instrument's state stays in locals while its records are adjacent."""
    last = np.int64(-1)
    s = 0
    count = seeded = np.int64(0)
    prev = gain = loss = 0.0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            if last >= 0:
                state[s, 0], state[s, 1], state[s, 2] = prev, gain, loss
                ints[s, 0], ints[s, 1] = count, seeded
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
            prev, gain, loss = state[s, 0], state[s, 1], state[s, 2]
            count, seeded = ints[s, 0], ints[s, 1]
        v = np.float64(x[i]) * scale
        count += 1
        change = v - prev
        prev = v
        if count == 1:
            out[i] = _NAN
            continue
        if seeded:
            loss *= window - 1
            gain *= window - 1
            if change < 0:
                loss -= change
            else:
                gain += change
            loss /= window
            gain /= window
        else:
            if change < 0:
                loss -= change
            else:
                gain += change
            if count - 1 < window:
                out[i] = _NAN
                continue
            loss /= count - 1
            gain /= count - 1
            seeded = 1
        total = gain + loss
        out[i] = 100.0 * (gain / total) if not (-1e-8 < total < 1e-8) else 0.0
    if last >= 0:
        state[s, 0], state[s, 1], state[s, 2] = prev, gain, loss
        ints[s, 0], ints[s, 1] = count, seeded
    return ids.shape[0]


class RsiKernel(KeyedKernel):
    """TA-Lib ``RSI`` per instrument (see the module docstring)."""

    _STATE = 3
    _MIN_WINDOW = 2
    name = "rsi"

    def update(self, instrument_id, price, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        scale = price_scale(price, ids.shape[0])
        result = self._out(out, ids.shape[0])
        self._run(_rsi_update, ids, (price, scale, result, self.window))
        return result


# --------------------------------------------------------------------------- ATR
# state[s] = (previous close, ATR or warm-up sum of true ranges); ints[s] = (bars seen, seeded)


@numba.njit(**_NJIT)
def _atr_update(ids, high, low, close, scale, out, window, start, table, shift, slot_ids, meta,
                state, ints):  # fmt: skip
    last = np.int64(-1)
    s = 0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
        h = np.float64(high[i]) * scale
        lo = np.float64(low[i]) * scale
        c = np.float64(close[i]) * scale
        count = ints[s, 0] + 1
        ints[s, 0] = count
        prev = state[s, 0]
        state[s, 0] = c
        if count == 1:
            out[i] = _NAN
            continue
        tr = h - lo
        tr = max(tr, abs(prev - h))
        tr = max(tr, abs(prev - lo))
        atr = state[s, 1]
        if ints[s, 1]:
            atr *= window - 1
            atr += tr
            atr /= window
        else:
            atr += tr
            if count - 1 < window:
                state[s, 1] = atr
                out[i] = _NAN
                continue
            atr /= count - 1
            ints[s, 1] = 1
        state[s, 1] = atr
        out[i] = atr
    return ids.shape[0]


class AtrKernel(KeyedKernel):
    """TA-Lib ``ATR`` per instrument over bars (see the module docstring)."""

    _STATE = 2
    name = "atr"

    def update(self, instrument_id, high, low, close, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        n = ids.shape[0]
        scale = price_scale(close, n, "close")
        for name, values in (("high", high), ("low", low)):
            if price_scale(values, n, name) != scale or values.dtype != close.dtype:
                raise ValueError(f"{name} must have the dtype of close ({close.dtype})")
        result = self._out(out, n)
        self._run(_atr_update, ids, (high, low, close, scale, result, self.window))
        return result


# --------------------------------------------------------------------------- session VWAP
# state[s] = (sum of price * size, its compensation, sum of size); ints[s] = (records, session)


@numba.njit(**_NJIT)
def _session_update(ids, ts, price, size, scale, out, offset, use_day, start, table, shift,
                    slot_ids, meta, state, ints):  # fmt: skip
    last = np.int64(-1)
    s = 0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
        session = (ts[i] - offset) // DAY_NS if use_day else np.int64(0)
        if ints[s, 0] == 0 or ints[s, 1] != session:
            ints[s, 1] = session
            state[s, 0] = 0.0
            state[s, 1] = 0.0
            state[s, 2] = 0.0
        ints[s, 0] += 1
        q = np.float64(size[i])
        pq = np.float64(price[i]) * scale * q
        total = state[s, 0]
        t = total + pq  # Neumaier summation
        if abs(total) >= abs(pq):
            state[s, 1] += (total - t) + pq
        else:
            state[s, 1] += (pq - t) + total
        state[s, 0] = t
        state[s, 2] += q
        out[i] = (t + state[s, 1]) / state[s, 2] if state[s, 2] > 0 else _NAN
    return ids.shape[0]


class SessionVwapKernel(KeyedKernel):
    """Cumulative VWAP per instrument, reset at each UTC day (shifted by ``offset_secs``)."""

    _STATE = 3
    name = "session_vwap"

    def __init__(self, reset: str = "utc_day", offset_secs: int = 0) -> None:
        super().__init__(1)
        self.set_session(reset, offset_secs)

    def set_session(self, reset: str, offset_secs: int) -> None:
        """Change the session boundary from the next update on (see the module docstring)."""
        if reset not in SESSION_RESETS:
            raise ValueError(f"session_reset must be 'utc_day' or 'never', got {reset!r}")
        if isinstance(offset_secs, bool) or not isinstance(offset_secs, int):
            raise ValueError(f"session_offset_secs must be an integer, got {offset_secs!r}")
        if not -86_400 < offset_secs < 86_400:
            raise ValueError(
                f"session_offset_secs must be within (-86400, 86400), got {offset_secs}"
            )
        self.reset, self.offset_secs = reset, offset_secs

    def update(self, instrument_id, ts_event, price, size, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        scale = price_scale(price, ids.shape[0])
        if not isinstance(ts_event, np.ndarray) or ts_event.dtype != np.int64:
            raise ValueError("ts_event must be an int64 array (batch['ts_event'])")
        result = self._out(out, ids.shape[0])
        args = (ts_event, price, size, scale, result, np.int64(self.offset_secs * 1_000_000_000),
                self.reset == "utc_day")  # fmt: skip
        self._run(_session_update, ids, args)
        return result

    def snapshot(self) -> dict:
        return {**super().snapshot(), "reset": self.reset, "offset_secs": self.offset_secs}

    def restore(self, state: dict) -> None:
        super().restore(state)
        self.set_session(state.get("reset", self.reset), state.get("offset_secs", 0))


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile (and cache on disk) the RSI, ATR and session-VWAP kernels for each argument kind."""
    for ids, ts, price, size in rolling.warm_batches():
        RsiKernel(2).update(ids, price)
        AtrKernel(1).update(ids, price, price, price)
        for reset in SESSION_RESETS:
            SessionVwapKernel(reset).update(ids, ts, price, size)
