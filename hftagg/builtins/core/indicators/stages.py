"""Built-in plugin: streaming indicator stages (EMA included), per instrument, compiled per record.

Every stage outputs ``indicator`` records (the input record's header, ``value`` float64), one per
input record, in input order; each is one row of ``INDICATORS``. Kernels and their exact
definitions are in ``hftagg.builtins.core.indicators.ema``, ``hftagg.builtins.core.indicators.rolling`` and
``hftagg.builtins.core.indicators.kernels``.

==================  ============================  ======================  =====================
type                output topic(s)               input                   warm-up (NaN)
==================  ============================  ======================  =====================
``ema``             ``ind.ema``                   trade                   see ``seed``
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

``ema``: ``alpha = 2 / (window + 1)``; ``seed = "first"`` follows pandas
``ewm(span=window, adjust=False)`` (the first price seeds the EMA), ``seed = "sma"`` follows TA-Lib
(NaN for the first window-1 prices, then the SMA seed). A window change keeps each instrument's
current EMA and continues with the new alpha (no re-warm-up).

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import create_model

from hftagg.builtins.core.indicators.ema import EmaKernel
from hftagg.builtins.core.indicators.kernels import (
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
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import INDICATOR, copy_header
from hftagg.stages import KernelStage, Params, Port, StageContext, live, restart

__all__ = [
    "INDICATORS",
    "STAGES",
    "Atr",
    "Ema",
    "IndicatorSpec",
    "Ols",
    "RollingVwap",
    "Rsi",
    "SessionVwap",
    "Sma",
    "Volatility",
    "Wma",
    "ZScore",
    "indicator_stage",
]

_MAX_WINDOW = 100_000  # TA-Lib's bound too; a ring costs 8 bytes per record per instrument
InputKind = Literal["trade", "indicator"]
_INPUTS = {
    "trade": (Port("trade", "md.trades", "trades: price (int64 fixed-point 1e-9)"), "price"),
    "indicator": (Port("indicator", "ind.mid", "indicator records: value (float64)"), "value"),
}
#: In ``IndicatorSpec.fields``: the price field of the input the ``input`` parameter chose.
PRICE = "<input price>"


def _window(default: int, minimum: int, what: str) -> tuple[type, Any]:
    return int, live(default, ge=minimum, le=_MAX_WINDOW, description=what)


def _set_window(kernel: Any, params: Params) -> None:
    kernel.set_window(params.window)


def _set_ema(kernel: EmaKernel, params: Params) -> None:
    kernel.set_window(params.window)
    kernel.set_seed(params.seed)  # a restored snapshot carries its own seed


def _set_session(kernel: SessionVwapKernel, params: Params) -> None:
    kernel.set_session(params.session_reset, params.session_offset_secs)


@dataclass(frozen=True)
class IndicatorSpec:
    """One row of the indicator table: everything that differs between indicator stages.

    ``fields`` are the batch fields passed to ``kernel.update`` after ``instrument_id`` (``PRICE``:
    the chosen input's price field). ``input`` is the fixed input port; ``None`` gives the stage
    an ``input`` parameter choosing trades (``md.trades`` price) or indicator values (``ind.mid``).
    Each output port gets one row of the kernel's output.
    """

    name: str
    type_name: str
    doc: str
    make: Callable[[Params], Any]
    params: dict[str, tuple[type, Any]]
    outputs: dict[str, Port]
    fields: tuple[str, ...] = (PRICE,)
    input: Port | None = None
    configure: Callable[[Any, Params], None] = _set_window


_TRADES_WITH_SIZE = Port("trade", "md.trades", "trades: price and size")

INDICATORS: tuple[IndicatorSpec, ...] = (
    IndicatorSpec(
        "Ema", "ema", "Exponential moving average per instrument (pandas or TA-Lib seeding).",
        lambda p: EmaKernel(p.window, seed=p.seed),
        {
            "window": (int, live(
                20, ge=1, le=1_000_000, description="EMA span in records (alpha = 2/(window+1))"
            )),
            "seed": (Literal["first", "sma"], restart(
                "first", description="warm-up: pandas (first) or TA-Lib (sma)"
            )),
        },
        {"output": Port("indicator", "ind.ema", "EMA after each trade, same header")},
        fields=("price",),
        input=Port("trade", "md.trades", "trades whose price is averaged"),
        configure=_set_ema,
    ),
    IndicatorSpec(
        "Sma", "sma", "Simple moving average per instrument (TA-Lib SMA).",
        lambda p: SmaKernel(p.window),
        {"window": _window(20, 1, "records averaged (TA-Lib SMA)")},
        {"output": Port("indicator", "ind.sma", "simple moving average")},
    ),
    IndicatorSpec(
        "Wma", "wma", "Linearly weighted moving average per instrument (TA-Lib WMA).",
        lambda p: WmaKernel(p.window),
        {"window": _window(20, 1, "records averaged, weights 1..window (TA-Lib WMA)")},
        {"output": Port("indicator", "ind.wma", "linearly weighted moving average")},
    ),
    IndicatorSpec(
        "Rsi", "rsi", "Relative strength index per instrument (TA-Lib RSI, Wilder smoothing).",
        lambda p: RsiKernel(p.window),
        {"window": _window(14, 2, "Wilder smoothing period (TA-Lib RSI)")},
        {"output": Port("indicator", "ind.rsi", "relative strength index, 0..100")},
    ),
    IndicatorSpec(
        "Atr", "atr", "Average true range per instrument from bars (TA-Lib ATR).",
        lambda p: AtrKernel(p.window),
        {"window": _window(14, 1, "Wilder smoothing period in bars (TA-Lib ATR)")},
        {"output": Port("indicator", "ind.atr", "average true range")},
        fields=("high", "low", "close"),
        input=Port("bar", "md.bars", "bars: high, low, close (int64 fixed-point)"),
    ),
    IndicatorSpec(
        "RollingVwap", "rolling_vwap", "VWAP over each instrument's last ``window`` trades.",
        lambda p: RollingVwapKernel(p.window),
        {"window": _window(100, 1, "trades in the rolling VWAP")},
        {"output": Port("indicator", "ind.vwap", "VWAP over the last window trades")},
        fields=("price", "size"),
        input=_TRADES_WITH_SIZE,
    ),
    IndicatorSpec(
        "SessionVwap", "session_vwap", "VWAP per instrument since its session start.",
        lambda p: SessionVwapKernel(p.session_reset, p.session_offset_secs),
        {
            "session_reset": (Literal["utc_day", "never"], live(
                "utc_day", description="start a new session each UTC day of ts_event, or never"
            )),
            "session_offset_secs": (int, live(
                0, gt=-86_400, lt=86_400,
                description="session boundary: UTC midnight + this many seconds",
            )),
        },
        {"output": Port("indicator", "ind.session_vwap", "VWAP since the session start")},
        fields=("ts_event", "price", "size"),
        input=_TRADES_WITH_SIZE,
        configure=_set_session,
    ),
    IndicatorSpec(
        "ZScore", "zscore", "Rolling z-score per instrument: (price - mean) / std (ddof 1).",
        lambda p: ZScoreKernel(p.window),
        {"window": _window(20, 2, "records in the rolling mean and std (ddof 1)")},
        {"output": Port("indicator", "ind.zscore", "(price - mean) / std over the window")},
    ),
    IndicatorSpec(
        "Volatility", "volatility", "Rolling std of log returns per instrument (not annualised).",
        lambda p: VolatilityKernel(p.window),
        {"window": _window(20, 2, "log returns in the rolling std (ddof 1), not annualised")},
        {"output": Port("indicator", "ind.volatility", "std of log returns")},
    ),
    IndicatorSpec(
        "Ols", "ols", "Rolling least-squares line per instrument: slope, intercept, r².",
        lambda p: OlsKernel(p.window, x=p.x),
        {
            "window": _window(20, 2, "records in the rolling regression"),
            "x": (Literal["index", "time"], restart(
                "index",
                description="regress on record index (per record) or ts_event (per second)",
            )),
        },
        {
            "slope": Port("indicator", "ind.ols_slope", "price change per record (or second)"),
            "intercept": Port("indicator", "ind.ols_intercept", "fitted price at the oldest"),
            "r2": Port("indicator", "ind.ols_r2", "coefficient of determination"),
        },
        fields=("ts_event", PRICE),
    ),
)  # fmt: skip


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


class IndicatorStage(KernelStage):
    """An indicator stage built from an ``IndicatorSpec`` (see ``indicator_stage``)."""

    spec: IndicatorSpec = INDICATORS[0]

    @classmethod
    def ports(cls, params):
        inputs, outputs = super().ports(params)
        kind = getattr(params, "input", None)
        if kind is not None:
            inputs = {"input": _INPUTS[kind][0]}
        return inputs, outputs

    def make_kernel(self, params: Params) -> Any:
        return self.spec.make(params)

    def configure_kernel(self, kernel: Any, params: Params) -> None:
        self.spec.configure(kernel, params)

    def open_buffers(self, ctx: StageContext) -> None:
        self._buffers = _Output(ctx.max_batch, len(self.outputs))
        price = _INPUTS[getattr(self.params, "input", "trade")][1]
        self._fields = tuple(price if f == PRICE else f for f in self.spec.fields)

    def process(self, batch: np.ndarray):
        out, values = self._buffers.take(batch)
        columns = (batch[f] for f in self._fields)
        if len(out) == 1:
            out[0]["value"] = self.kernel.update(batch["instrument_id"], *columns, out=values[0])
            return out[0]
        self.kernel.update(batch["instrument_id"], *columns, out=values)
        for records, column in zip(out, values, strict=True):
            records["value"] = column
        return dict(zip(self.outputs, out, strict=True))


def indicator_stage(spec: IndicatorSpec) -> type[IndicatorStage]:
    """The stage type of one table row: its ``Params`` model, ports and kernel."""
    fields = dict(spec.params)
    if spec.input is None:
        fields["input"] = (
            InputKind,
            restart("trade", description="'trade' (md.trades price) or 'indicator' (value)"),
        )
    params = create_model(f"{spec.name}Params", __base__=Params, __module__=__name__, **fields)
    namespace = {
        "__doc__": spec.doc,
        "__module__": __name__,
        "__qualname__": spec.name,
        "spec": spec,
        "type_name": spec.type_name,
        "Params": params,
        "inputs": {"input": spec.input or _INPUTS["trade"][0]},
        "outputs": spec.outputs,
    }
    return type(spec.name, (IndicatorStage,), namespace)


STAGES = tuple(indicator_stage(spec) for spec in INDICATORS)
Ema, Sma, Wma, Rsi, Atr, RollingVwap, SessionVwap, ZScore, Volatility, Ols = STAGES


@hookimpl
def hftagg_register_stage_types(register):
    for stage_type in STAGES:
        register(stage_type)


@hookimpl
def hftagg_register_config_sections(register):
    from hftagg.builtins.core._ema_section import PROCESSING

    register(PROCESSING)
