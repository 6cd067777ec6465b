"""Kraken spot adapter (WebSocket v2): a CRC32-verified book and trades. See :mod:`.source`."""

from __future__ import annotations

from hftagg.builtins.sources.kraken.book import KrakenBook, checksum_text
from hftagg.builtins.sources.kraken.source import KrakenSpot, KrakenSpotParams
from hftagg.hookspecs import hookimpl

__all__ = ["KrakenBook", "KrakenSpot", "KrakenSpotParams", "checksum_text"]


@hookimpl
def hftagg_register_stage_types(register):
    register(KrakenSpot)
