"""Built-in plugin: bar consolidators -- time, tick and volume bars from trades, and cascades.

=================  ==================  ==============================  =========================
type               input               output (closed)                 output (partial)
=================  ==================  ==============================  =========================
``time_bars``      ``md.trades``       ``md.bars``                     ``md.bars_partial``
``tick_bars``      ``md.trades``       ``md.tick_bars``                ``md.tick_bars_partial``
``volume_bars``    ``md.trades``       ``md.volume_bars``              ``md.volume_bars_partial``
``cascade_bars``   ``md.bars``         ``md.bars_<timeframe>``         ``md.bars_<timeframe>_partial``
=================  ==================  ==============================  =========================

All output ``bar`` records (ports ``output`` and ``partial``); a trade that cannot be applied
exactly (negative size, or a bar volume past the int64 1e-8 range) goes to ``dead_letters``
(topic ``dead_letters.<stage type>``) with the field and value named. Bars close on event time
(``ts_event``), so a replay gives the bars a live run gave; the exact rules (bar boundaries,
``close_on``, synthetic bars, late trades, VWAP, cascading, partial bars) are in
``hftagg.builtins.core.bars.kernels``. In short:

- ``timeframe``: ``"1s"``, ``"1m"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` ... (units ns, us,
  ms, s, m, h, d); bars are aligned to the UNIX epoch plus ``offset`` (``"1d"`` = UTC days;
  ``offset = "22h"`` starts days at 22:00 UTC). ``ts_event`` of a bar is its end.
- ``close_on = "any_event"`` (default): a bar closes when the input's newest ``ts_event`` (any
  instrument) reaches its end plus ``grace`` -- quiet instruments' bars close on time, as a live
  timer would, but deterministically. ``"next_trade"``: only the instrument's own next record
  closes its bar.
- ``emit_synthetic`` (default true): intervals without trades between an instrument's bars get
  flat bars with volume 0 and ``synthetic = 1``; at most ``max_synthetic`` in a row.
- The last open bar of each instrument is not emitted when the input ends (it is incomplete, and
  live would not have emitted it yet); call the stage's ``flush()`` to close it (end of a file).
- ``emit = "tick"`` / ``"price_move"`` also writes the bar in progress to the ``partial`` port on
  each trade / each trade that moved its close; ``"close"`` (default) writes nothing there, so
  close-only consumers of ``output`` never see partial bars whatever the setting.
- ``cascade_bars`` builds e.g. 5m bars from 1m bars without the trades; the result equals 5m bars
  built from the trades (VWAP to a few units in the last place). Wire several for 1m -> 5m -> 15m,
  each reading the previous one's topic.

Live parameters: ``close_on``, ``grace``, ``emit_synthetic``, ``max_synthetic``, ``emit``,
``ticks``, ``volume``, ``split_trades``; they apply from the next record. ``timeframe`` and
``offset`` need a rebuild: the bars in progress cannot be re-bucketed, so a rebuild with a new
timeframe starts with no open bars (the snapshot is dropped with a warning); with the same
timeframe ``snapshot``/``restore`` continue exactly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import field_validator, model_validator

from hftagg.builtins.core.bars.kernels import (
    TickBarKernel,
    TimeBarKernel,
    VolumeBarKernel,
    parse_duration,
)
from hftagg.hookspecs import hookimpl
from hftagg.records.fixed import QTY_DECIMALS, FixedPointError, to_fixed
from hftagg.stages import KernelStage, Params, Port, live, restart

__all__ = [
    "CascadeBars",
    "CascadeBarsParams",
    "TickBars",
    "TickBarsParams",
    "TimeBars",
    "TimeBarsParams",
    "VolumeBars",
    "VolumeBarsParams",
]

EmitMode = Literal["close", "tick", "price_move"]
_TRADES = Port("trade", "md.trades", "trades: price (1e-9 fixed-point), size (1e-8 fixed-point)")
_DEAD = Port("dead_letter", "dead_letters.time_bars", "trades that could not be applied exactly")


def _emit():
    return live(
        "close",
        description="partial bars on the 'partial' port: 'close' (none), 'tick' (after every "
        "trade), 'price_move' (when the trade opened the bar or moved its close)",
    )


class _TimeParams(Params):
    timeframe: str = restart("1m", description="bar length: '1s', '1m', '5m', '1h', '1d', ...")
    offset: str = restart("0s", description="bar alignment: UNIX epoch + offset (< timeframe)")
    close_on: Literal["any_event", "next_trade"] = live(
        "any_event",
        description="close a bar when any instrument's ts_event passes its end + grace "
        "('any_event') or only on the instrument's own next trade ('next_trade')",
    )
    grace: str = live("0s", description="any_event: close bars this long after their end")
    emit_synthetic: bool = live(True, description="flat volume-0 bars for intervals w/o trades")
    max_synthetic: int = live(
        1000, ge=0, le=1_000_000, description="most synthetic bars in a row per instrument"
    )
    emit: EmitMode = _emit()

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        parse_duration(value, "timeframe")
        return value

    @field_validator("offset", "grace")
    @classmethod
    def _duration(cls, value: str, info) -> str:
        parse_duration(value, info.field_name, allow_zero=True)
        return value

    @model_validator(mode="after")
    def _offset_within_timeframe(self):
        if self.offset_ns >= self.timeframe_ns:
            raise ValueError(
                f"offset must be shorter than timeframe, got offset={self.offset!r} with "
                f"timeframe={self.timeframe!r}"
            )
        return self

    @property
    def timeframe_ns(self) -> int:
        return parse_duration(self.timeframe, "timeframe")

    @property
    def offset_ns(self) -> int:
        return parse_duration(self.offset, "offset", allow_zero=True)

    @property
    def grace_ns(self) -> int:
        return parse_duration(self.grace, "grace", allow_zero=True)

    def live_options(self) -> dict:
        return {
            "close_on": self.close_on,
            "grace_ns": self.grace_ns,
            "emit_synthetic": self.emit_synthetic,
            "max_synthetic": self.max_synthetic,
            "emit": self.emit,
        }


class TimeBarsParams(_TimeParams):
    """Time bars from trades."""


class CascadeBarsParams(_TimeParams):
    """Larger time bars from smaller time bars."""

    timeframe: str = restart("5m", description="output bar length, a multiple of the input's")


class _Bars(KernelStage):
    """Shared plumbing: one kernel, ``output`` and ``partial`` ports."""

    def process(self, batch: np.ndarray):
        closed, partial = self.kernel.update(batch)
        dead = self.kernel.dead_letters()
        if len(dead):
            return {"output": closed, "partial": partial, "dead_letters": dead}
        return {"output": closed, "partial": partial}

    def flush(self) -> np.ndarray:
        """Close every open bar now (end of a recording); returns them (a view; copy to keep)."""
        return self.kernel.flush()


class _TimeBars(_Bars):
    from_bars = False

    def make_kernel(self, params: _TimeParams) -> TimeBarKernel:
        return TimeBarKernel(params.timeframe_ns, offset_ns=params.offset_ns,
                             from_bars=self.from_bars, **params.live_options())  # fmt: skip

    def configure_kernel(self, kernel: TimeBarKernel, params: _TimeParams) -> None:
        kernel.configure(**params.live_options())

    def advance(self, ts_event: int, ts_recv: int | None = None) -> np.ndarray:
        """A heartbeat at ``ts_event``: returns the bars it closes (a view; copy to keep)."""
        return self.kernel.advance(ts_event, ts_recv)


class TimeBars(_TimeBars):
    """Time bars per instrument from trades."""

    type_name = "time_bars"
    Params = TimeBarsParams
    inputs = {"input": _TRADES}
    outputs = {
        "output": Port("bar", "md.bars", "closed time bars (ts_event = bar end)"),
        "partial": Port("bar", "md.bars_partial", "bars in progress (emit = tick | price_move)"),
        "dead_letters": _DEAD,
    }


class CascadeBars(_TimeBars):
    """Larger time bars from smaller bars (1m -> 5m -> 15m) without re-reading the trades."""

    type_name = "cascade_bars"
    Params = CascadeBarsParams
    from_bars = True
    inputs = {"input": Port("bar", "md.bars", "time bars whose timeframe divides ours")}
    outputs = {
        "output": Port("bar", "md.bars_5m", "closed time bars"),
        "partial": Port("bar", "md.bars_5m_partial", "bars in progress"),
        "dead_letters": Port("dead_letter", "dead_letters.cascade_bars", "input bars not applied"),
    }

    @classmethod
    def ports(cls, params: CascadeBarsParams):
        inputs, _ = super().ports(params)
        topic = f"md.bars_{params.timeframe}"
        return inputs, {
            "output": Port("bar", topic, "closed time bars (ts_event = bar end)"),
            "partial": Port("bar", f"{topic}_partial", "bars in progress"),
            "dead_letters": Port(
                "dead_letter",
                f"dead_letters.cascade_bars_{params.timeframe}",
                "input bars that could not be applied exactly",
            ),
        }


class TickBarsParams(Params):
    ticks: int = live(100, ge=1, le=1_000_000_000, description="trades per bar")
    emit: EmitMode = _emit()


class TickBars(_Bars):
    """A bar every ``ticks`` trades per instrument."""

    type_name = "tick_bars"
    Params = TickBarsParams
    inputs = {"input": _TRADES}
    outputs = {
        "output": Port("bar", "md.tick_bars", "closed tick bars (ts_event = last trade's)"),
        "partial": Port("bar", "md.tick_bars_partial", "bars in progress"),
        "dead_letters": Port("dead_letter", "dead_letters.tick_bars", "trades not applied"),
    }

    def make_kernel(self, params: TickBarsParams) -> TickBarKernel:
        return TickBarKernel(params.ticks, emit=params.emit)

    def configure_kernel(self, kernel: TickBarKernel, params: TickBarsParams) -> None:
        kernel.configure(params.ticks, split=False, emit=params.emit)


class VolumeBarsParams(Params):
    volume: float = live(
        10_000.0, gt=0, le=4.6e10, description="units of size per bar (<= 8 decimals: 0.5 BTC)"
    )
    split_trades: bool = live(
        True,
        description="split the trade that crosses the threshold so each bar holds exactly "
        "volume (true), or put it whole in the bar (false)",
    )
    emit: EmitMode = _emit()

    @field_validator("volume")
    @classmethod
    def _volume_is_a_quantity(cls, value: float) -> float:
        try:
            to_fixed(repr(value), QTY_DECIMALS, field="volume")
        except FixedPointError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def volume_units(self) -> int:
        """``volume`` as raw 1e-8 fixed-point units, exactly (no float rounding)."""
        return to_fixed(repr(self.volume), QTY_DECIMALS, field="volume")


class VolumeBars(_Bars):
    """A bar every ``volume`` units traded per instrument."""

    type_name = "volume_bars"
    Params = VolumeBarsParams
    inputs = {"input": _TRADES}
    outputs = {
        "output": Port("bar", "md.volume_bars", "closed volume bars (ts_event = last trade's)"),
        "partial": Port("bar", "md.volume_bars_partial", "bars in progress"),
        "dead_letters": Port("dead_letter", "dead_letters.volume_bars", "trades not applied"),
    }

    def make_kernel(self, params: VolumeBarsParams) -> VolumeBarKernel:
        return VolumeBarKernel(params.volume_units, split=params.split_trades, emit=params.emit)

    def configure_kernel(self, kernel: VolumeBarKernel, params: VolumeBarsParams) -> None:
        kernel.configure(params.volume_units, split=params.split_trades, emit=params.emit)


STAGES = (TimeBars, TickBars, VolumeBars, CascadeBars)


@hookimpl
def hftagg_register_stage_types(register):
    for stage_type in STAGES:
        register(stage_type)
