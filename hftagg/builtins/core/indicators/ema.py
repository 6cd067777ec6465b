"""Exponential moving average kernels: one series, or many instruments interleaved in a batch.

``alpha = 2 / (window + 1)``. Two seeding conventions, each matching a reference library:

- ``seed="first"`` (pandas ``Series.ewm(span=window, adjust=False).mean()``): ``y0 = x0``, then
  ``y_t = (1 - alpha) * y_{t-1} + alpha * x_t``. There is an output from the first value on.
- ``seed="sma"`` (TA-Lib ``talib.EMA(x, timeperiod=window)``): NaN for the first ``window - 1``
  values of each instrument, the simple mean of the first ``window`` values at the window-th,
  then ``y_t = (x_t - y_{t-1}) * alpha + y_{t-1}``.

The two recurrences are the same in exact arithmetic; each convention uses its reference's
operation order, so results usually agree with the reference to the last bit and otherwise within
a few units in the last place (pandas also divides by ``(1 - alpha) + alpha``; a TA-Lib binary
may fuse the multiply-add). At ``window=1`` (alpha 1) both conventions use the pandas order,
which gives ``y = x`` exactly where TA-Lib's ``(x - y) + y`` can lose digits.

Prices arrive as int64 fixed-point (``x = price * PRICE_SCALE``, scale 1e-9) or as float64 real
prices. A NaN price is not skipped: it makes that instrument's EMA NaN from then on (filter bad
prices upstream, where they can go to the dead-letter topic).

All per-record work runs in compiled functions (``hftagg.kernels.options``); Python runs once
per batch. Instruments are found in the shared slot table (``hftagg.kernels.slots``). ``warm()``
compiles (and caches on disk) every specialization the pipeline uses.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import SlotTable, slot_of
from hftagg.records.schema import PRICE_SCALE

__all__ = ["EmaKernel", "ema_series", "warm"]

SEEDS = ("first", "sma")

_SNAPSHOT_KEYS = ("window", "seed", "instrument_id", "value", "count", "warmup_sum", "seeded")
_ID_DTYPE = np.dtype(np.uint32)
#: Per-instrument state: (value, warm-up sum), prices seen, 1 once warmed up.
_COLUMNS = {"state": ((2,), np.float64), "counts": ((), np.int64), "seeded": ((), np.uint8)}
_OUT_DTYPE = np.dtype(np.float64)
#: What each accepted price dtype is multiplied by to give real prices.
_SCALES = {np.dtype(np.int64): PRICE_SCALE, np.dtype(np.float64): 1.0}


# --------------------------------------------------------------------------- validation


def _check_window(window: object) -> int:
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise ValueError(
            f"window must be an integer >= 1, got {window!r} ({type(window).__name__}); "
            f"pass a whole number of records such as window=20"
        )
    if window < 1:
        raise ValueError(f"window must be an integer >= 1, got {int(window)}")
    return int(window)


def _check_seed(seed: object) -> str:
    if seed not in SEEDS:
        raise ValueError(
            f"seed must be 'first' (pandas ewm adjust=False) or 'sma' (TA-Lib EMA), got {seed!r}"
        )
    return str(seed)


def _check_out(out: np.ndarray | None, n: int) -> np.ndarray:
    if out is None:
        return np.empty(n, dtype=np.float64)
    if not isinstance(out, np.ndarray) or out.dtype != _OUT_DTYPE or out.ndim != 1:
        raise ValueError(
            f"out must be a 1-D float64 numpy array, got "
            f"{getattr(out, 'dtype', type(out).__name__)} with ndim {getattr(out, 'ndim', '?')}"
        )
    if out.shape[0] < n:
        raise ValueError(f"out has length {out.shape[0]}, too short for a batch of {n} records")
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable float64 buffer")
    return out[:n]


def _price_scale(instrument_id: np.ndarray, price: np.ndarray) -> float:
    """Check a batch's arrays; return the factor that turns its prices into real prices."""
    if not isinstance(instrument_id, np.ndarray) or instrument_id.dtype != _ID_DTYPE:
        raise ValueError(
            f"instrument_id must be a uint32 numpy array, got "
            f"{getattr(instrument_id, 'dtype', type(instrument_id).__name__)}; "
            f"pass batch['instrument_id']"
        )
    scale = _SCALES.get(price.dtype) if isinstance(price, np.ndarray) else None
    if scale is None:
        raise ValueError(
            f"price must be an int64 (fixed-point, scale 1e-9) or float64 numpy array, got "
            f"{getattr(price, 'dtype', type(price).__name__)}"
        )
    if instrument_id.ndim != 1 or price.ndim != 1:
        raise ValueError(
            f"instrument_id and price must be 1-D, got ndim {instrument_id.ndim} and {price.ndim}"
        )
    if instrument_id.shape[0] != price.shape[0]:
        raise ValueError(
            f"instrument_id and price must have the same length, got "
            f"{instrument_id.shape[0]} and {price.shape[0]}"
        )
    return scale


# --------------------------------------------------------------------------- single series


@numba.njit(**_NJIT)
def _ema_series(x, alpha, out):
    keep = 1.0 - alpha
    y = x[0]
    out[0] = y
    for i in range(1, x.shape[0]):
        y = keep * y + alpha * x[i]
        out[i] = y


def ema_series(x: np.ndarray, window: int, out: np.ndarray | None = None) -> np.ndarray:
    """EMA of one float64 series, pandas convention (``ewm(span=window, adjust=False)``).

    No state is kept between calls: the first value seeds the average. ``out`` (float64, length
    >= ``len(x)``) is written in place when given. Returns ``out[:len(x)]``.
    """
    window = _check_window(window)
    x = np.asarray(x)
    if x.dtype != np.float64 or x.ndim != 1:
        raise ValueError(f"x must be a 1-D float64 array, got {x.dtype} with ndim {x.ndim}")
    result = _check_out(out, x.shape[0])
    if x.shape[0]:
        _ema_series(x, 2.0 / (window + 1), result)
    return result


# --------------------------------------------------------------------------- many instruments


@numba.njit(inline="always", **_NJIT)
def _run(ids, price, scale, out, start, table, shift, slot_ids, state, counts, seeded, meta, params,
         talib_form):  # fmt: skip
    """Run records ``start..`` of the batch; return where it stopped (``len(ids)`` when done).

    ``state[slot] = (value, warm-up sum)``, ``counts[slot]`` prices seen, ``seeded[slot]`` 1 once
    warmed up; ``meta[0]`` is the number of slots in use; ``params = (alpha, warm-up length)``.
    ``talib_form`` is a constant at each call site, so each convention gets its own loop. The
    current instrument's value and count stay in registers while its records are adjacent.
    """
    alpha = params[0]
    need = np.int64(params[1])
    keep = 1.0 - alpha
    n_slots = meta[0]
    cur_key = np.int64(-1)
    cur = np.uint64(0)
    y = 0.0
    cnt = np.int64(0)
    ready = False
    for i in range(np.uint64(start), np.uint64(ids.shape[0])):
        key = np.int64(ids[i])
        if key != cur_key:
            if cur_key >= 0:
                state[cur, 0] = y
                counts[cur] = cnt
            slot = slot_of(key, table, shift, slot_ids, n_slots)
            if slot < 0:
                meta[0] = n_slots
                return i
            cur = np.uint64(slot)
            if slot == n_slots:
                n_slots += 1
                state[cur, 0] = 0.0
                state[cur, 1] = 0.0
                counts[cur] = 0
                seeded[cur] = 0
            cur_key = key
            y = state[cur, 0]
            cnt = counts[cur]
            ready = seeded[cur] != 0
        x = np.float64(price[i]) * scale
        cnt += 1
        if ready:
            if talib_form:
                y = (x - y) * alpha + y
            else:
                y = keep * y + alpha * x
            out[i] = y
        else:
            total = state[cur, 1] + x
            state[cur, 1] = total
            if cnt >= need:
                y = total / cnt
                seeded[cur] = 1
                ready = True
                out[i] = y
            else:
                out[i] = np.nan
    if cur_key >= 0:
        state[cur, 0] = y
        counts[cur] = cnt
    meta[0] = n_slots
    return ids.shape[0]


@numba.njit(**_NJIT)
def _update_first(ids, price, scale, out, start, table, shift, slot_ids, state, counts, seeded,
                  meta, params):  # fmt: skip
    """``_run`` with the pandas recurrence ``(1 - alpha) * y + alpha * x``."""
    return _run(ids, price, scale, out, start, table, shift, slot_ids, state, counts, seeded,
                meta, params, False)  # fmt: skip


@numba.njit(**_NJIT)
def _update_sma(ids, price, scale, out, start, table, shift, slot_ids, state, counts, seeded,
                meta, params):  # fmt: skip
    """``_run`` with the TA-Lib recurrence ``(x - y) * alpha + y``."""
    return _run(ids, price, scale, out, start, table, shift, slot_ids, state, counts, seeded,
                meta, params, True)  # fmt: skip


class EmaKernel:
    """EMA per instrument over batches, with state carried from one batch to the next.

    ``update(instrument_id, price)`` takes a batch of any number of instruments, interleaved in
    any order, and returns the EMA after each record for that record's instrument. Instruments
    are arbitrary uint32 ids, found in a hash table inside the compiled loop; the state grows as
    new ids appear. Not thread-safe: one stage owns one kernel (the loop itself releases the GIL).

    Warm-up (``seed="sma"``): an instrument outputs NaN until it has ``window`` values, then their
    mean. ``seed="first"`` has no warm-up: the first value is the first output.

    ``set_window`` is a live change, applied from the next ``update``: every instrument keeps its
    current EMA value and continues with the new alpha. An instrument still in its SMA warm-up
    keeps the sum and count it has accumulated and completes the warm-up at the *new* window: on
    the record that brings its count to the new window, or, when the window shrank below the count
    already reached, on its next record, which is seeded with the mean of all values accumulated.
    """

    def __init__(self, window: int, seed: str = "first") -> None:
        self.window = _check_window(window)
        self.seed = _check_seed(seed)
        self._params = np.empty(2, dtype=np.float64)
        self._slots = SlotTable(_COLUMNS, name="EMA")
        self._set_params()

    # ----------------------------------------------------------------- configuration

    def set_window(self, window: int) -> None:
        """Change the window from the next ``update`` on (see the class docstring)."""
        self.window = _check_window(window)
        self._set_params()

    def set_seed(self, seed: str) -> None:
        """Change the warm-up convention from the next ``update`` on.

        Instruments already warmed up continue with the new convention's recurrence; one still in
        its warm-up completes it under the new rule (``"first"``: on its next record, seeded with
        the mean of the values it accumulated; ``"sma"``: once it has ``window`` values).
        """
        self.seed = _check_seed(seed)
        self._set_params()

    def _set_params(self) -> None:
        self._params[0] = 2.0 / (self.window + 1)
        self._params[1] = self.window if self.seed == "sma" else 1
        # At window 1 (alpha 1) both conventions are y = x; TA-Lib's form would compute it as
        # (x - y) + y, which loses digits when y is much larger than x, so use the other form.
        self._kernel = _update_sma if self.seed == "sma" and self.window > 1 else _update_first

    # ----------------------------------------------------------------- hot path

    def update(
        self, instrument_id: np.ndarray, price: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """EMA after each record of a batch; returns ``out[:n]`` (a new array if ``out`` is None).

        ``instrument_id`` is uint32, ``price`` int64 fixed-point (scale 1e-9) or float64; both may
        be strided views such as ``batch["price"]`` and are never copied.
        """
        scale = _price_scale(instrument_id, price)
        n = instrument_id.shape[0]
        result = _check_out(out, n)
        done = 0
        slots = self._slots
        while done < n:
            done = self._kernel(
                instrument_id, price, scale, result, done, slots.table, slots.shift, slots.ids,
                slots["state"], slots["counts"], slots["seeded"], slots.meta, self._params,
            )  # fmt: skip
            if done < n:
                slots.grow()
        return result

    # ----------------------------------------------------------------- inspection and state

    @property
    def instrument_count(self) -> int:
        """How many distinct instruments have been seen."""
        return self._slots.count

    def value(self, instrument_id: int) -> float:
        """Current EMA of one instrument; NaN if it is unseen or still in its warm-up."""
        slot = self._slots.lookup(instrument_id)
        if slot < 0 or not self._slots["seeded"][slot]:
            return float("nan")
        return float(self._slots["state"][slot, 0])

    def snapshot(self) -> dict:
        """Everything needed to continue exactly: plain ints, strings and numpy array copies.

        Slot ``i`` of ``value``, ``count``, ``warmup_sum`` and ``seeded`` belongs to instrument
        ``instrument_id[i]``; ``count`` is the number of prices seen, ``warmup_sum`` their sum
        while the instrument was warming up.
        """
        ids, rows = self._slots.snapshot()
        return {
            "window": self.window,
            "seed": self.seed,
            "instrument_id": ids,
            "value": rows["state"][:, 0].copy(),
            "count": rows["counts"],
            "warmup_sum": rows["state"][:, 1].copy(),
            "seeded": rows["seeded"].astype(bool),
        }

    def restore(self, state: dict) -> None:
        """Replace this kernel's state with a ``snapshot()`` (window and seed included)."""
        missing = [key for key in _SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"EMA snapshot is missing key {missing[0]!r} (needs {', '.join(_SNAPSHOT_KEYS)})"
            )
        window = _check_window(state["window"])
        seed = _check_seed(state["seed"])
        n = np.shape(state["instrument_id"])[0] if np.ndim(state["instrument_id"]) == 1 else -1
        for key in _SNAPSHOT_KEYS[3:]:
            if np.shape(state[key]) != (n,):
                raise ValueError(
                    f"EMA snapshot key {key!r} has shape {np.shape(state[key])}, expected ({n},) "
                    f"to match 'instrument_id'"
                )
        values = np.column_stack((state["value"], state["warmup_sum"])).reshape(n, 2)
        rows = {"state": values, "counts": state["count"], "seeded": state["seeded"]}
        self._slots.load(state["instrument_id"], rows)
        self.window, self.seed = window, seed
        self._set_params()

    def __repr__(self) -> str:
        return (
            f"EmaKernel(window={self.window}, seed={self.seed!r}, "
            f"instruments={self.instrument_count})"
        )


# --------------------------------------------------------------------------- warm-up

_WARM_DTYPE = np.dtype(
    [("ts_event", "<i8"), ("instrument_id", "<u4"), ("price", "<i8"), ("real", "<f8")], align=True
)


def warm() -> None:
    """Compile (and cache on disk) every kernel for each input kind the pipeline passes.

    Instrument ids and prices come contiguous or as strided fields of a record batch; prices are
    int64 fixed-point or float64.
    """
    batch = np.zeros(4, dtype=_WARM_DTYPE)
    batch["instrument_id"] = [7, 0, 7, 0xFFFFFFFF]
    batch["price"] = [1_000_000_000, 2_000_000_000, 3_000_000_000, 4_000_000_000]
    batch["real"] = batch["price"] * PRICE_SCALE
    ids_views = (batch["instrument_id"], batch["instrument_id"].copy())
    price_views = (batch["price"], batch["price"].copy(), batch["real"], batch["real"].copy())
    for seed in SEEDS:
        kernel = EmaKernel(2, seed=seed)
        for ids in ids_views:
            for prices in price_views:
                kernel.update(ids, prices)
        kernel._slots.grow()
        kernel.value(7)
    ema_series(batch["real"].copy(), 2)
    ema_series(batch["real"], 2)
