"""Binance spot adapter: trades, best bid/offer and a depth book synchronised by update ids.

See :mod:`.source` (the stage) and :mod:`.sync` (the documented synchronisation procedure).
"""

from __future__ import annotations

from hftagg.builtins.sources.binance.source import BinanceSpot, BinanceSpotParams
from hftagg.builtins.sources.binance.sync import DepthEvents, DepthSync, Snapshot, check_updates
from hftagg.hookspecs import hookimpl

__all__ = ["BinanceSpot", "BinanceSpotParams", "DepthEvents", "DepthSync", "Snapshot",
           "check_updates"]  # fmt: skip


@hookimpl
def hftagg_register_stage_types(register):
    register(BinanceSpot)
