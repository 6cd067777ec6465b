"""Coinbase Advanced Trade adapter: level2 book and market trades, sequence gaps detected.
See :mod:`.source`."""

from __future__ import annotations

from hftagg.builtins.sources.coinbase.source import CoinbaseAdvanced, CoinbaseAdvancedParams
from hftagg.hookspecs import hookimpl

__all__ = ["CoinbaseAdvanced", "CoinbaseAdvancedParams"]


@hookimpl
def hftagg_register_stage_types(register):
    register(CoinbaseAdvanced)
