"""Built-in plugin: streaming indicator stages, per instrument, compiled per record.

Every stage outputs ``indicator`` records (the input record's header, ``value`` float64), one per
input record, in input order. Kernels and their exact definitions are in
``hftagg.kernels.rolling`` and ``hftagg.kernels.indicators``.

==================  ============================  ======================  =====================
type                output topic(s)               input                   warm-up (NaN)
==================  ============================  ======================  =====================
``sma``             ``ind.sma``                   trade / indicator       first window-1 (TA-Lib)
``wma``             ``ind.wma``                   trade / indicator       first window-1 (TA-Lib)
``rsi``             ``ind.rsi``                   trade / indicator       first window (TA-Lib)
``atr``             ``ind.atr``                   bar (high, low, close)  first window (TA-Lib)
``rolling_vwap``    ``ind.vwap``                  trade (price, size)     first window-1
``session_vwap``    ``ind.session_vwap``          trade (price, size)     none
``zscore``          ``ind.zscore``                trade / indicator       first window-1
``volatility``      ``ind.volatility``            trade / indicator       first window (returns)
``ols``             ``ind.ols_slope``,            trade / indicator       first window-1
                    ``ind.ols_intercept``,
                    ``ind.ols_r2``
==================  ============================  ======================  =====================

``input = "trade"`` reads ``price`` (int64 fixed-point 1e-9) from ``md.trades``;
``input = "indicator"`` reads ``value`` (float64) from ``ind.mid`` (any indicator topic can be
wired in config). VWAP needs trade sizes and ATR needs bars, so they have no ``input`` param.

``ols`` is one stage with three output ports (slope, intercept, r²) rather than three stages: the
three share all their running sums, so one pass computes them together. Its ``x`` is the record's
per-instrument index (default; slope in price per record) or ``ts_event`` (``x = "time"``; slope
in price per second). Intercept: the fitted price at the oldest record of the window.

Every ``window`` is live. Ring-buffer indicators (sma, wma, rolling_vwap, zscore, volatility,
ols) re-size each instrument's ring keeping its most recent values and recompute their sums
exactly: a smaller window gives the new-window value from the next record; a larger one gives NaN
until the ring is full again, then the same values as if the new window had been used all along.
RSI and ATR keep their Wilder averages and continue smoothing with the new window (an instrument
still warming up completes its warm-up at the new window). ``session_vwap``'s ``session_reset``
and ``session_offset_secs`` are live too: the next record's session index under the new boundary
is compared with the stored one. Everything else (``input``, ``x``) needs a rebuild; state is
carried by ``snapshot``/``restore``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from hftagg.hookspecs import hookimpl
from hftagg.kernels.indicators import (
    AtrKernel,
    OlsKernel,
    RollingVwapKernel,
    RsiKernel,
    SessionVwapKernel,
    SmaKernel,
    VolatilityKernel,
    WmaKernel,
    ZScoreKernel,
)
from hftagg.records.catalog import INDICATOR, copy_header
from hftagg.stages import Params, Port, Stage, StageContext, live, restart

__all__ = [
    "Atr",
    "Ols",
    "RollingVwap",
    "Rsi",
    "SessionVwap",
    "Sma",
    "Volatility",
    "Wma",
    "ZScore",
]

_MAX_WINDOW = 100_000  # TA-Lib's bound too; a ring costs 8 bytes per record per instrument
InputKind = Literal["trade", "indicator"]
_INPUTS = {
    "trade": (Port("trade", "md.trades", "trades: price (int64 fixed-point 1e-9)"), "price"),
    "indicator": (Port("indicator", "ind.mid", "indicator records: value (float64)"), "value"),
}


def _window(default: int, minimum: int, what: str):
    return live(default, ge=minimum, le=_MAX_WINDOW, description=what)


def _input():
    return restart("trade", description="'trade' (md.trades price) or 'indicator' (value)")


class _Output:
    """A reusable indicator buffer per output port, grown when a batch is larger."""

    def __init__(self, size: int, ports: int = 1) -> None:
        self.ports = ports
        self._allocate(size)

    def _allocate(self, size: int) -> None:
        self.records = [INDICATOR.empty(size) for _ in range(self.ports)]
        self.values = np.empty((self.ports, size))

    def take(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        n = len(batch)
        if n > self.values.shape[1]:
            self._allocate(n)
        out = [records[:n] for records in self.records]
        for records in out:
            copy_header(batch, records)
        return out, self.values[:, :n]


class _Indicator(Stage):
    """A one-output indicator over one price field; subclasses set the kernel and the ports."""

    Kernel: ClassVar[type] = SmaKernel
    inputs = {"input": _INPUTS["trade"][0]}

    @classmethod
    def ports(cls, params):
        inputs, outputs = super().ports(params)
        kind = getattr(params, "input", None)
        if kind is not None:
            inputs = {"input": _INPUTS[kind][0]}
        return inputs, outputs

    def _make_kernel(self):
        return self.Kernel(self.params.window)

    def open(self, ctx: StageContext) -> None:
        if not hasattr(self, "kernel"):
            self.kernel = self._make_kernel()
        self._buffers = _Output(ctx.max_batch, len(self.outputs))

    def process(self, batch: np.ndarray):
        (out,), values = self._buffers.take(batch)
        field = _INPUTS[self.params.input][1]
        out["value"] = self.kernel.update(batch["instrument_id"], batch[field], out=values[0])
        return out

    def reconfigure(self, params) -> None:
        self.params = params
        if hasattr(self, "kernel"):
            self.kernel.set_window(params.window)

    def snapshot(self) -> dict:
        return self.kernel.snapshot()

    def restore(self, state: dict) -> None:
        if not hasattr(self, "kernel"):
            self.kernel = self._make_kernel()
        self.kernel.restore(state)
        if self.kernel.window != self.params.window:  # restored into a stage with a new window
            self.kernel.set_window(self.params.window)


# --------------------------------------------------------------------------- one price in


class SmaParams(Params):
    window: int = _window(20, 1, "records averaged (TA-Lib SMA)")
    input: InputKind = _input()


class Sma(_Indicator):
    type_name = "sma"
    Params = SmaParams
    Kernel = SmaKernel
    outputs = {"output": Port("indicator", "ind.sma", "simple moving average")}


class WmaParams(Params):
    window: int = _window(20, 1, "records averaged, weights 1..window (TA-Lib WMA)")
    input: InputKind = _input()


class Wma(_Indicator):
    type_name = "wma"
    Params = WmaParams
    Kernel = WmaKernel
    outputs = {"output": Port("indicator", "ind.wma", "linearly weighted moving average")}


class RsiParams(Params):
    window: int = _window(14, 2, "Wilder smoothing period (TA-Lib RSI)")
    input: InputKind = _input()


class Rsi(_Indicator):
    type_name = "rsi"
    Params = RsiParams
    Kernel = RsiKernel
    outputs = {"output": Port("indicator", "ind.rsi", "relative strength index, 0..100")}


class ZScoreParams(Params):
    window: int = _window(20, 2, "records in the rolling mean and std (ddof 1)")
    input: InputKind = _input()


class ZScore(_Indicator):
    type_name = "zscore"
    Params = ZScoreParams
    Kernel = ZScoreKernel
    outputs = {"output": Port("indicator", "ind.zscore", "(price - mean) / std over the window")}


class VolatilityParams(Params):
    window: int = _window(20, 2, "log returns in the rolling std (ddof 1), not annualised")
    input: InputKind = _input()


class Volatility(_Indicator):
    type_name = "volatility"
    Params = VolatilityParams
    Kernel = VolatilityKernel
    outputs = {"output": Port("indicator", "ind.volatility", "std of log returns")}


# --------------------------------------------------------------------------- OLS


class OlsParams(Params):
    window: int = _window(20, 2, "records in the rolling regression")
    x: Literal["index", "time"] = restart(
        "index", description="regress on record index (per record) or ts_event (per second)"
    )
    input: InputKind = _input()


class Ols(_Indicator):
    type_name = "ols"
    Params = OlsParams
    Kernel = OlsKernel
    outputs = {
        "slope": Port("indicator", "ind.ols_slope", "price change per record (or per second)"),
        "intercept": Port("indicator", "ind.ols_intercept", "fitted price at the window's oldest"),
        "r2": Port("indicator", "ind.ols_r2", "coefficient of determination"),
    }

    def _make_kernel(self):
        return OlsKernel(self.params.window, x=self.params.x)

    def process(self, batch: np.ndarray):
        out, values = self._buffers.take(batch)
        field = _INPUTS[self.params.input][1]
        self.kernel.update(batch["instrument_id"], batch["ts_event"], batch[field], out=values)
        for records, column in zip(out, values, strict=True):
            records["value"] = column
        return dict(zip(self.outputs, out, strict=True))


# --------------------------------------------------------------------------- trades with size


class RollingVwapParams(Params):
    window: int = _window(100, 1, "trades in the rolling VWAP")


class RollingVwap(_Indicator):
    type_name = "rolling_vwap"
    Params = RollingVwapParams
    Kernel = RollingVwapKernel
    outputs = {"output": Port("indicator", "ind.vwap", "VWAP over the last window trades")}

    def process(self, batch: np.ndarray):
        (out,), values = self._buffers.take(batch)
        ids, price, size = batch["instrument_id"], batch["price"], batch["size"]
        out["value"] = self.kernel.update(ids, price, size, out=values[0])
        return out


class SessionVwapParams(Params):
    session_reset: Literal["utc_day", "never"] = live(
        "utc_day", description="start a new session each UTC day of ts_event, or never"
    )
    session_offset_secs: int = live(
        0, gt=-86_400, lt=86_400, description="session boundary: UTC midnight + this many seconds"
    )


class SessionVwap(_Indicator):
    type_name = "session_vwap"
    Params = SessionVwapParams
    outputs = {"output": Port("indicator", "ind.session_vwap", "VWAP since the session start")}

    def _make_kernel(self):
        return SessionVwapKernel(self.params.session_reset, self.params.session_offset_secs)

    def process(self, batch: np.ndarray):
        (out,), values = self._buffers.take(batch)
        ids, ts, price, size = (batch[f] for f in ("instrument_id", "ts_event", "price", "size"))
        out["value"] = self.kernel.update(ids, ts, price, size, out=values[0])
        return out

    def reconfigure(self, params: SessionVwapParams) -> None:
        self.params = params
        if hasattr(self, "kernel"):
            self.kernel.set_session(params.session_reset, params.session_offset_secs)

    def restore(self, state: dict) -> None:
        if not hasattr(self, "kernel"):
            self.kernel = self._make_kernel()
        self.kernel.restore(state)
        self.kernel.set_session(self.params.session_reset, self.params.session_offset_secs)


# --------------------------------------------------------------------------- bars


class AtrParams(Params):
    window: int = _window(14, 1, "Wilder smoothing period in bars (TA-Lib ATR)")


class Atr(_Indicator):
    type_name = "atr"
    Params = AtrParams
    Kernel = AtrKernel
    inputs = {"input": Port("bar", "md.bars", "bars: high, low, close (int64 fixed-point)")}
    outputs = {"output": Port("indicator", "ind.atr", "average true range")}

    def process(self, batch: np.ndarray):
        (out,), values = self._buffers.take(batch)
        hlc = (batch["high"], batch["low"], batch["close"])
        out["value"] = self.kernel.update(batch["instrument_id"], *hlc, out=values[0])
        return out


STAGES = (Sma, Wma, Rsi, Atr, RollingVwap, SessionVwap, ZScore, Volatility, Ols)


@hookimpl
def hftagg_register_stage_types(register):
    for stage_type in STAGES:
        register(stage_type)
