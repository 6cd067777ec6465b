"""Rolling-window indicator kernels, per instrument, over batches of interleaved instruments.

Every kernel here keeps, for each instrument, a ring buffer of its last ``window`` inputs and a
few running sums, updated in O(1) per record. Running sums that add and subtract drift; each
instrument's sums are recomputed exactly from its ring every time the ring wraps (once per
``window`` records, so the cost stays O(1) amortized) and the drift never accumulates for longer
than one window. Sums of second moments are taken of deviations from a reference value (the newest
input at the last recomputation), so large price or time offsets cancel before they are squared.

Kernels (all outputs NaN until the instrument has a full window, as TA-Lib and pandas
``rolling(window)`` do):

- ``SmaKernel``: simple mean of the last ``window`` values (TA-Lib ``SMA``).
- ``WmaKernel``: linearly weighted mean, weights ``1..window`` with the newest value weighted
  ``window``, divided by ``window * (window + 1) / 2`` (TA-Lib ``WMA``).
- ``RollingVwapKernel``: ``sum(price * size) / sum(size)`` over the last ``window`` trades;
  NaN when that size sum is 0.
- ``ZScoreKernel``: ``(x - mean) / std`` over the last ``window`` values, the current one
  included, ``std`` with ``ddof=1`` (pandas ``rolling().std()``); NaN when ``std`` is 0.
- ``VolatilityKernel``: ``std`` (``ddof=1``) of the last ``window`` log returns
  ``log(x_t) - log(x_{t-1})`` (first output at the ``window + 1``-th value); not annualised.
- ``OlsKernel``: least-squares line of price on ``x`` over the last ``window`` records, with
  ``x`` the record's per-instrument index (``x="index"``) or its ``ts_event`` in seconds
  (``x="time"``). Outputs the slope (price per record, or per second), the intercept (the fitted
  price at the *oldest* record of the window, as ``numpy.polyfit(arange(window), y, 1)`` and
  TA-Lib ``LINEARREG_INTERCEPT``) and r² (squared correlation; NaN if the window's prices, or
  with ``x="time"`` its timestamps, are all equal).

Live window change (``set_window``), the same for all of them: each instrument's ring is
re-sized keeping its most recent ``min(held, new window)`` values and its sums are recomputed
exactly from them. When the window shrinks and the instrument held at least the new window, the
next output is already the new-window value over the full history; when it grows, the instrument
outputs NaN until the ring holds the new window again (``new - old`` more records), after which
it equals a run that had used the new window from the start.

Prices are int64 fixed-point (scale 1e-9) or float64 real values. A NaN input is not skipped:
it makes the running sums NaN until the ring's next exact recomputation after it has left the
window. Ring memory is ``8 * window`` bytes per instrument per ring.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import SlotTable, find_slot
from hftagg.records.schema import PRICE_SCALE

__all__ = [
    "KeyedKernel",
    "OlsKernel",
    "RollingVwapKernel",
    "SmaKernel",
    "VolatilityKernel",
    "WmaKernel",
    "ZScoreKernel",
    "as_ids",
    "check_window",
    "moment_sums",
    "price_scale",
    "resize_ring",
    "set_held",
    "warm",
]

_INTS = 4  # per-slot integers: records seen, values held in the ring, ring head, spare
_SCALES = {np.dtype(np.int64): PRICE_SCALE, np.dtype(np.float64): 1.0}
_NAN = np.nan


def check_window(window: object, minimum: int = 1, name: str = "window") -> int:
    """``window`` as an int, or ValueError naming ``name`` and the bound."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {window!r}")
    if window < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {int(window)}")
    return int(window)


def as_ids(ids: np.ndarray) -> np.ndarray:
    if not isinstance(ids, np.ndarray) or ids.dtype != np.uint32 or ids.ndim != 1:
        raise ValueError(
            f"instrument_id must be a 1-D uint32 array, got {getattr(ids, 'dtype', type(ids))}; "
            f"pass batch['instrument_id']"
        )
    return ids


def price_scale(values: np.ndarray, n: int, name: str = "price") -> float:
    """Factor turning ``values`` into real prices (int64 fixed-point or float64), checked."""
    scale = _SCALES.get(values.dtype) if isinstance(values, np.ndarray) else None
    if scale is None or values.ndim != 1 or values.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D int64 (fixed-point 1e-9) or float64 array of length {n}, got "
            f"{getattr(values, 'dtype', type(values).__name__)} {getattr(values, 'shape', '')}"
        )
    return scale


# --------------------------------------------------------------------------- shared njit helpers


@numba.njit(**_NJIT)
def resize_ring(old, new, ints, n_slots):
    """Copy each slot's newest ``min(held, new window)`` values to ``new`` in time order."""
    w_old = old.shape[1]
    w_new = new.shape[1]
    for s in range(n_slots):
        held = ints[s, 1]
        head = ints[s, 2]
        keep = min(held, w_new)
        for j in range(keep):
            new[s, j] = old[s, (head - keep + j) % w_old]


@numba.njit(**_NJIT)
def set_held(ints, n_slots, window):
    for s in range(n_slots):
        keep = min(ints[s, 1], window)
        ints[s, 1] = keep
        ints[s, 2] = keep % window


class KeyedKernel:
    """Per-instrument state in slots found through an open-addressing hash table (see ``ema``).

    Subclasses set ``_RINGS`` (ring buffers of ``window`` float64 per instrument), ``_STATE``
    (float64 per instrument) and implement ``_rebuild`` (recompute sums after a resize).
    """

    _RINGS = 0
    _STATE = 1
    _MIN_WINDOW = 1
    name = "kernel"

    def __init__(self, window: int) -> None:
        self.window = check_window(window, self._MIN_WINDOW)
        self._slots = SlotTable(self._columns(self.window), name=self.name)

    # ----------------------------------------------------------------- state arrays

    def _columns(self, window: int) -> dict:
        rings = {f"ring{k}": ((window,), np.float64) for k in range(self._RINGS)}
        return {**rings, "state": ((self._STATE,), np.float64), "ints": ((_INTS,), np.int64)}

    @property
    def _rings(self) -> list[np.ndarray]:
        return [self._slots[f"ring{k}"] for k in range(self._RINGS)]

    @property
    def _state(self) -> np.ndarray:
        return self._slots["state"]

    @property
    def _ints(self) -> np.ndarray:
        return self._slots["ints"]

    def _run(self, kernel, ids: np.ndarray, args: tuple, extra: tuple = ()) -> None:
        """Call ``kernel`` until the batch is done, growing the state when it runs out of slots."""
        n = ids.shape[0]
        done = 0
        while done < n:
            slots = self._slots
            done = kernel(
                ids, *args, done, slots.table, slots.shift, slots.ids, slots.meta,
                *self._rings, self._state, self._ints, *extra,
            )  # fmt: skip
            if done < n:
                slots.grow()

    @staticmethod
    def _out(out: np.ndarray | None, n: int) -> np.ndarray:
        if out is None:
            return np.empty(n)
        if not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape[0] < n:
            raise ValueError(f"out must be a float64 array of length >= {n}")
        return out[:n]

    # ----------------------------------------------------------------- live window

    def set_window(self, window: int) -> None:
        """Change the window from the next update on (see the module docstring)."""
        window = check_window(window, self._MIN_WINDOW)
        if window == self.window:
            return
        n = self._slots.count
        if self._RINGS:
            for k, ring in enumerate(self._rings):
                new = self._slots.reshape(f"ring{k}", (window,), keep=False)
                resize_ring(ring, new, self._ints, n)
            set_held(self._ints, n, window)
        self.window = window
        self._rebuild(n)

    def _rebuild(self, n_slots: int) -> None:
        """Recompute the running state of slots ``0..n_slots`` from their rings (time order)."""

    # ----------------------------------------------------------------- inspection and state

    @property
    def instrument_count(self) -> int:
        return self._slots.count

    def snapshot(self) -> dict:
        """Everything needed to continue exactly (plain ints and numpy copies)."""
        ids, rows = self._slots.snapshot()
        return {
            "kernel": self.name,
            "window": self.window,
            "instrument_id": ids,
            "rings": [rows[f"ring{k}"] for k in range(self._RINGS)],
            "state": rows["state"],
            "ints": rows["ints"],
        }

    def restore(self, state: dict) -> None:
        """Replace this kernel's state with a ``snapshot()`` of the same kernel type."""
        if state.get("kernel") != self.name:
            raise ValueError(
                f"snapshot is of kernel {state.get('kernel')!r}, cannot restore into {self.name!r}"
            )
        window = check_window(state["window"], self._MIN_WINDOW)
        if len(state["rings"]) != self._RINGS:
            raise ValueError(f"snapshot has {len(state['rings'])} rings, expected {self._RINGS}")
        rings = {f"ring{k}": ring for k, ring in enumerate(state["rings"])}
        slots = SlotTable(self._columns(window), name=self.name)
        slots.load(
            state["instrument_id"], {**rings, "state": state["state"], "ints": state["ints"]}
        )
        self._slots, self.window = slots, window

    def __repr__(self) -> str:
        return f"{type(self).__name__}(window={self.window}, instruments={self.instrument_count})"


# --------------------------------------------------------------------------- SMA and WMA


@numba.njit(inline="always", **_NJIT)
def _ma_sums(ring, s, held):
    total = 0.0
    weighted = 0.0
    for j in range(held):
        v = ring[s, j]
        total += v
        weighted += (j + 1) * v
    return total, weighted


@numba.njit(**_NJIT)
def _ma_rebuild(ring, state, ints, n_slots):
    for s in range(n_slots):
        state[s, 0], state[s, 1] = _ma_sums(ring, s, ints[s, 1])


@numba.njit(**_NJIT)
def _ma_update(ids, x, scale, out, weighted, start, table, shift, slot_ids, meta, ring, state,
               ints):  # fmt: skip
    """SMA (``weighted`` False) or WMA: ``state[s] = (sum, weighted sum)`` of the ring.

    The current instrument's sums and ring position stay in locals while its records are adjacent.
    """
    w = ring.shape[1]
    divisor = w * (w + 1) / 2.0 if weighted else np.float64(w)
    last = np.int64(-1)
    s = 0
    held = head = count = np.int64(0)
    total = wsum = 0.0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            if last >= 0:
                state[s, 0], state[s, 1] = total, wsum
                ints[s, 0], ints[s, 1], ints[s, 2] = count, held, head
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
            total, wsum = state[s, 0], state[s, 1]
            count, held, head = ints[s, 0], ints[s, 1], ints[s, 2]
        v = np.float64(x[i]) * scale
        count += 1
        if held == w:
            wsum = wsum - total + w * v
            total = total - ring[s, head] + v
        else:
            held += 1
            total += v
            wsum += held * v
        ring[s, head] = v
        head += 1
        if head == w:
            head = 0
            if held == w:
                total, wsum = _ma_sums(ring, s, w)
        if held == w:
            out[i] = (wsum if weighted else total) / divisor
        else:
            out[i] = _NAN
    if last >= 0:
        state[s, 0], state[s, 1] = total, wsum
        ints[s, 0], ints[s, 1], ints[s, 2] = count, held, head
    return ids.shape[0]


class SmaKernel(KeyedKernel):
    """TA-Lib ``SMA`` per instrument: NaN for the first ``window - 1`` values."""

    _RINGS = 1
    _STATE = 2
    name = "sma"
    _WEIGHTED = False

    def update(self, instrument_id, price, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        scale = price_scale(price, ids.shape[0])
        result = self._out(out, ids.shape[0])
        self._run(_ma_update, ids, (price, scale, result, self._WEIGHTED))
        return result

    def _rebuild(self, n_slots: int) -> None:
        _ma_rebuild(self._rings[0], self._state, self._ints, n_slots)


class WmaKernel(SmaKernel):
    """TA-Lib ``WMA`` per instrument: NaN for the first ``window - 1`` values."""

    name = "wma"
    _WEIGHTED = True


# --------------------------------------------------------------------------- rolling VWAP


@numba.njit(inline="always", **_NJIT)
def _vwap_sums(notional, size, s, held):
    total_n = 0.0
    total_s = 0.0
    for j in range(held):
        total_n += notional[s, j]
        total_s += size[s, j]
    return total_n, total_s


@numba.njit(**_NJIT)
def _vwap_rebuild(notional, size, state, ints, n_slots):
    for s in range(n_slots):
        state[s, 0], state[s, 1] = _vwap_sums(notional, size, s, ints[s, 1])


@numba.njit(**_NJIT)
def _vwap_update(ids, price, size, scale, out, start, table, shift, slot_ids, meta, notional,
                 sizes, state, ints):  # fmt: skip
    w = notional.shape[1]
    last = np.int64(-1)
    s = 0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
        q = np.float64(size[i])
        pq = np.float64(price[i]) * scale * q
        held = ints[s, 1]
        head = ints[s, 2]
        total_n = state[s, 0]
        total_s = state[s, 1]
        if held == w:
            total_n -= notional[s, head]
            total_s -= sizes[s, head]
        else:
            held += 1
        total_n += pq
        total_s += q
        notional[s, head] = pq
        sizes[s, head] = q
        head += 1
        if head == w:
            head = 0
            if held == w:
                total_n, total_s = _vwap_sums(notional, sizes, s, w)
        state[s, 0] = total_n
        state[s, 1] = total_s
        ints[s, 0] += 1
        ints[s, 1] = held
        ints[s, 2] = head
        out[i] = total_n / total_s if held == w and total_s > 0 else _NAN
    return ids.shape[0]


class RollingVwapKernel(KeyedKernel):
    """Volume-weighted average price over each instrument's last ``window`` trades."""

    _RINGS = 2
    _STATE = 2
    name = "rolling_vwap"

    def update(self, instrument_id, price, size, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        scale = price_scale(price, ids.shape[0])
        if not isinstance(size, np.ndarray) or size.dtype.kind not in "ui" or size.ndim != 1:
            raise ValueError("size must be a 1-D integer array (batch['size'])")
        result = self._out(out, ids.shape[0])
        self._run(_vwap_update, ids, (price, size, scale, result))
        return result

    def _rebuild(self, n_slots: int) -> None:
        _vwap_rebuild(self._rings[0], self._rings[1], self._state, self._ints, n_slots)


# --------------------------------------------------------------------------- z-score, volatility
# state[s] = (reference, sum of deviations, sum of squared deviations, previous log price)


@numba.njit(inline="always", **_NJIT)
def moment_sums(ring, s, held, ref):
    total = 0.0
    squares = 0.0
    for j in range(held):
        d = ring[s, j] - ref
        total += d
        squares += d * d
    return total, squares


@numba.njit(**_NJIT)
def _moment_rebuild(ring, state, ints, n_slots):
    for s in range(n_slots):
        held = ints[s, 1]
        ref = ring[s, held - 1] if held > 0 else 0.0
        state[s, 0] = ref
        state[s, 1], state[s, 2] = moment_sums(ring, s, held, ref)


@numba.njit(inline="always", **_NJIT)
def _moment_value(total, squares, w, deviation, returns):
    """Std of the window (``returns``) or the z-score of the newest value, from its sums."""
    mean = total / w
    var = (squares - total * mean) / (w - 1)
    if returns:
        return math.sqrt(var) if var > 0 else 0.0
    return (deviation - mean) / math.sqrt(var) if var > 0 else _NAN


@numba.njit(**_NJIT)
def _moment_update(ids, x, scale, out, returns, start, table, shift, slot_ids, meta, ring, state,
                   ints):  # fmt: skip
    """Rolling z-score of the inputs, or (``returns``) rolling std of their log returns."""
    w = ring.shape[1]
    last = np.int64(-1)
    s = 0
    for i in range(start, ids.shape[0]):
        key = np.int64(ids[i])
        if key != last:
            s = find_slot(key, table, shift, slot_ids, meta)
            if s < 0:
                return i
            last = key
        v = np.float64(x[i]) * scale
        ints[s, 0] += 1
        if returns:
            logv = math.log(v) if v > 0 else _NAN
            prev = state[s, 3]
            state[s, 3] = logv
            if ints[s, 0] == 1:
                out[i] = _NAN
                continue
            v = logv - prev
        held = ints[s, 1]
        head = ints[s, 2]
        if held == 0:
            state[s, 0] = v
        ref = state[s, 0]
        total = state[s, 1]
        squares = state[s, 2]
        if held == w:
            d = ring[s, head] - ref
            total -= d
            squares -= d * d
        else:
            held += 1
        d = v - ref
        total += d
        squares += d * d
        ring[s, head] = v
        head += 1
        if head == w:
            head = 0
            if held == w:
                ref = v
                state[s, 0] = ref
                total, squares = moment_sums(ring, s, w, ref)
        state[s, 1] = total
        state[s, 2] = squares
        ints[s, 1] = held
        ints[s, 2] = head
        out[i] = _moment_value(total, squares, w, v - ref, returns) if held == w else _NAN
    return ids.shape[0]


class ZScoreKernel(KeyedKernel):
    """``(x - rolling mean) / rolling std`` (ddof 1) over the last ``window`` values."""

    _RINGS = 1
    _STATE = 4
    _MIN_WINDOW = 2
    name = "zscore"
    _RETURNS = False

    def update(self, instrument_id, price, out=None) -> np.ndarray:
        ids = as_ids(instrument_id)
        scale = price_scale(price, ids.shape[0])
        result = self._out(out, ids.shape[0])
        self._run(_moment_update, ids, (price, scale, result, self._RETURNS))
        return result

    def _rebuild(self, n_slots: int) -> None:
        _moment_rebuild(self._rings[0], self._state, self._ints, n_slots)


class VolatilityKernel(ZScoreKernel):
    """Rolling std (ddof 1) of the last ``window`` log returns; not annualised."""

    name = "volatility"
    _RETURNS = True


# --------------------------------------------------------------------------- rolling OLS
# state[s] = (x ref, y ref, Sx, Sy, Sxx, Sxy, Syy) of deviations from the refs;
# ints[s, 3] = the instrument's first ts_event (origin of x="time").


@numba.njit(inline="always", **_NJIT)
def _ols_exact(rx, ry, s, held):
    """Sums of deviations from the newest point, recomputed exactly from the ring."""
    xr = rx[s, held - 1]
    yr = ry[s, held - 1]
    sx = sy = sxx = sxy = syy = 0.0
    for j in range(held):
        dx = rx[s, j] - xr
        dy = ry[s, j] - yr
        sx += dx
        sy += dy
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    return xr, yr, sx, sy, sxx, sxy, syy


@numba.njit(inline="always", **_NJIT)
def _ols_sums(rx, ry, s, held, state):
    xr, yr, sx, sy, sxx, sxy, syy = _ols_exact(rx, ry, s, held)
    state[s, 0] = xr
    state[s, 1] = yr
    state[s, 2] = sx
    state[s, 3] = sy
    state[s, 4] = sxx
    state[s, 5] = sxy
    state[s, 6] = syy


@numba.njit(**_NJIT)
def _ols_rebuild(rx, ry, state, ints, n_slots):
    for s in range(n_slots):
        if ints[s, 1] > 0:
            _ols_sums(rx, ry, s, ints[s, 1], state)


@numba.njit(**_NJIT)
def _ols_update(ids, ts, y, scale, slope, intercept, r2, use_time, start, table, shift, slot_ids,
                meta, rx, ry, state, ints):  # fmt: skip
    """Runs of consecutive records of one instrument keep its state in locals (registers)."""
    w = rx.shape[1]
    inv_w = 1.0 / w
    n = ids.shape[0]
    i = start
    while i < n:
        key = np.int64(ids[i])
        s = find_slot(key, table, shift, slot_ids, meta)
        if s < 0:
            return i
        count = ints[s, 0]
        held = ints[s, 1]
        head = ints[s, 2]
        t0 = ints[s, 3]
        xr = state[s, 0]
        yr = state[s, 1]
        sx = state[s, 2]
        sy = state[s, 3]
        sxx = state[s, 4]
        sxy = state[s, 5]
        syy = state[s, 6]
        while i < n and np.int64(ids[i]) == key:
            v = np.float64(y[i]) * scale
            if use_time:
                if count == 0:
                    t0 = ts[i]
                u = np.float64(ts[i] - t0) * 1e-9
            else:
                u = np.float64(count)
            count += 1
            if held == 0:
                xr = u
                yr = v
            if held == w:
                dx = rx[s, head] - xr
                dy = ry[s, head] - yr
                sx -= dx
                sy -= dy
                sxx -= dx * dx
                sxy -= dx * dy
                syy -= dy * dy
            else:
                held += 1
            dx = u - xr
            dy = v - yr
            sx += dx
            sy += dy
            sxx += dx * dx
            sxy += dx * dy
            syy += dy * dy
            rx[s, head] = u
            ry[s, head] = v
            head += 1
            if head == w:
                head = 0
                if held == w:  # exact recomputation once per window: drift stays bounded
                    xr, yr, sx, sy, sxx, sxy, syy = _ols_exact(rx, ry, s, w)
            if held < w:
                slope[i] = _NAN
                intercept[i] = _NAN
                r2[i] = _NAN
                i += 1
                continue
            mx = sx * inv_w
            my = sy * inv_w
            cxx = sxx - sx * mx
            cxy = sxy - sx * my
            cyy = syy - sy * my
            if cxx > 0:
                b = cxy / cxx
                slope[i] = b
                intercept[i] = (my + yr) + b * ((rx[s, head] - xr) - mx)
                r2[i] = b * (cxy / cyy) if cyy > 0 else _NAN
            else:
                slope[i] = _NAN
                intercept[i] = _NAN
                r2[i] = _NAN
            i += 1
        ints[s, 0] = count
        ints[s, 1] = held
        ints[s, 2] = head
        ints[s, 3] = t0
        state[s, 0] = xr
        state[s, 1] = yr
        state[s, 2] = sx
        state[s, 3] = sy
        state[s, 4] = sxx
        state[s, 5] = sxy
        state[s, 6] = syy
    return n


class OlsKernel(KeyedKernel):
    """Rolling least-squares line of price on record index (or time): slope, intercept, r²."""

    _RINGS = 2
    _STATE = 7
    _MIN_WINDOW = 2
    name = "ols"
    X_KINDS = ("index", "time")

    def __init__(self, window: int, x: str = "index") -> None:
        if x not in self.X_KINDS:
            raise ValueError(f"x must be 'index' or 'time', got {x!r}")
        self.x = x
        super().__init__(window)

    def update(self, instrument_id, ts_event, price, out=None):
        """``(slope, intercept, r2)`` after each record; ``out`` is an optional (3, n) buffer."""
        ids = as_ids(instrument_id)
        n = ids.shape[0]
        scale = price_scale(price, n)
        if not isinstance(ts_event, np.ndarray) or ts_event.dtype != np.int64:
            raise ValueError("ts_event must be an int64 array (batch['ts_event'])")
        if out is None:
            out = np.empty((3, n))
        elif out.dtype != np.float64 or out.ndim != 2 or out.shape[0] != 3 or out.shape[1] < n:
            raise ValueError(f"out must be a float64 array of shape (3, >= {n})")
        slope, intercept, r2 = out[0, :n], out[1, :n], out[2, :n]
        self._run(_ols_update, ids, (ts_event, price, scale, slope, intercept, r2,
                                     self.x == "time"))  # fmt: skip
        return slope, intercept, r2

    def _rebuild(self, n_slots: int) -> None:
        _ols_rebuild(self._rings[0], self._rings[1], self._state, self._ints, n_slots)

    def snapshot(self) -> dict:
        return {**super().snapshot(), "x": self.x}

    def restore(self, state: dict) -> None:
        if state.get("x", self.x) != self.x:
            raise ValueError(f"snapshot has x={state.get('x')!r}, this kernel x={self.x!r}")
        super().restore(state)


# --------------------------------------------------------------------------- warm-up

_WARM_DTYPE = np.dtype(
    [("ts_event", "<i8"), ("instrument_id", "<u4"), ("price", "<i8"), ("size", "<u4"),
     ("value", "<f8")], align=True,
)  # fmt: skip


def warm_batches() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, ts, price, size) argument kinds the pipeline and the tests pass: fields and copies."""
    batch = np.zeros(4, dtype=_WARM_DTYPE)
    batch["instrument_id"] = [7, 0, 7, 0xFFFFFFFF]
    batch["ts_event"] = [1, 2, 3, 4]
    batch["price"] = [1_000_000_000, 2_000_000_000, 3_000_000_000, 4_000_000_000]
    batch["size"] = [1, 2, 3, 4]
    batch["value"] = batch["price"] * PRICE_SCALE
    strided = (batch["instrument_id"], batch["ts_event"], batch["size"])
    copies = tuple(a.copy() for a in strided)
    out = []
    for ids, ts, size in (strided, copies):
        for price in (batch["price"], batch["value"], batch["price"].copy(), batch["value"].copy()):
            out.append((ids, ts, price, size))
    return out


def warm() -> None:
    """Compile (and cache on disk) every rolling kernel for each argument kind."""
    for ids, ts, price, size in warm_batches():
        for cls in (SmaKernel, WmaKernel, ZScoreKernel, VolatilityKernel):
            kernel = cls(2)
            kernel.update(ids, price)
            kernel.set_window(3)
        for x in OlsKernel.X_KINDS:
            OlsKernel(2, x=x).update(ids, ts, price)
        RollingVwapKernel(2).update(ids, price, size)
    kernel = SmaKernel(2)
    for _ in range(40):  # force a grow
        kernel.update(np.arange(kernel.instrument_count, kernel.instrument_count + 64,
                                dtype=np.uint32), np.ones(64))  # fmt: skip
    for cls in (SmaKernel, ZScoreKernel, RollingVwapKernel):
        cls(3).set_window(2)
    OlsKernel(3).set_window(2)
