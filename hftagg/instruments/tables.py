"""The registry as an Arrow table (``hftagg query`` joins it as ``instruments``).

Columns: ``instrument_id`` (uint32), ``symbol``, ``venue``, ``venue_symbol``, ``pinned``,
``asset_class``, ``tick_size`` (decimal(38, 9), exact like prices), ``lot_size`` (decimal(38,
8), like quantities), ``price_precision``, ``size_precision``, ``multiplier`` (decimal(38, 9)),
``currency``, ``expiry`` (text, as written), ``description``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["instruments_table"]


def instruments_table(registry: Any):
    """A ``pyarrow.Table`` with one row per instrument of ``registry``."""
    import pyarrow as pa

    rows = list(registry)
    price, qty = pa.decimal128(38, 9), pa.decimal128(38, 8)

    def column(name: str, kind: Any) -> Any:
        return pa.array([getattr(i, name) for i in rows], type=kind)

    return pa.table(
        {
            "instrument_id": column("instrument_id", pa.uint32()),
            "symbol": column("symbol", pa.string()),
            "venue": column("venue", pa.string()),
            "venue_symbol": column("venue_symbol", pa.string()),
            "pinned": column("pinned", pa.bool_()),
            "asset_class": column("asset_class", pa.string()),
            "tick_size": column("tick_size", price),
            "lot_size": column("lot_size", qty),
            "price_precision": column("price_precision", pa.int8()),
            "size_precision": column("size_precision", pa.int8()),
            "multiplier": column("multiplier", price),
            "currency": column("currency", pa.string()),
            "expiry": column("expiry", pa.string()),
            "description": column("description", pa.string()),
        }
    )
