"""The built-in record catalog.

Every market-data record starts with the common header (``ts_event``, ``ts_recv``, ``seq``,
``instrument_id``). Prices are int64 fixed-point with scale 1e-9 (``PRICE_UNITS`` per 1.0);
quantities -- sizes, volumes, filled/leaves quantities, positions -- are int64 fixed-point with
scale 1e-8 (``QTY_UNITS`` per 1.0); counts are unsigned integers; derived values are float64.
The scales, their ranges and the reasoning behind them are in :mod:`hftagg.records.fixed`.
Single-character codes (side, action) are stored as uint8 ASCII, as in DBN: ``ord("B")``.

Version 2 of trade, quote, book_update, mbp10, bar, mbo, order and fill replaced version 1's uint32
sizes (and uint64 bar volume) with the int64 1e-8 quantities.

The schemas are registered by the built-in ``records`` plugin through the same hook a
third-party plugin would use.
"""

from __future__ import annotations

import numpy as np

from hftagg.records.schema import HEADER_FIELDS, Schema, make_dtype

__all__ = [
    "ALERT",
    "BAR",
    "BOOK_UPDATE",
    "BUILTIN_SCHEMAS",
    "DEAD_LETTER",
    "FILL",
    "INDICATOR",
    "MBO",
    "MBP10",
    "ORDER",
    "QUOTE",
    "RAW_CHUNK",
    "RAW_CHUNK_BYTES",
    "SIGNAL",
    "TRADE",
    "Action",
    "Side",
    "copy_header",
]


class Side:
    """Side codes (uint8 ASCII): ask/sell, bid/buy, none."""

    ASK = ord("A")
    BID = ord("B")
    NONE = ord("N")


class Action:
    """Book-update action codes (uint8 ASCII), DBN's MBP vocabulary."""

    ADD = ord("A")
    MODIFY = ord("M")
    DELETE = ord("D")
    CLEAR = ord("R")
    TRADE = ord("T")


TRADE = Schema(
    "trade",
    2,
    make_dtype([("side", "u1"), ("flags", "u1"), ("price", "<i8"), ("size", "<i8")]),
    doc="A trade print: price (1e-9 fixed), size (1e-8 fixed), aggressor side.",
)

QUOTE = Schema(
    "quote",
    2,
    make_dtype([("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<i8"), ("ask_sz", "<i8")]),
    doc="Best bid and offer (top of book): prices 1e-9 fixed, sizes 1e-8 fixed.",
)

BOOK_UPDATE = Schema(
    "book_update",
    2,
    make_dtype(
        [
            ("action", "u1"),
            ("side", "u1"),
            ("depth", "u1"),
            ("flags", "u1"),
            ("price", "<i8"),
            ("size", "<i8"),
        ]
    ),
    doc="Market-by-price incremental update: set the level at price/side to size (1e-8 fixed).",
)

MBP10 = Schema(
    "mbp10",
    2,
    make_dtype(
        [
            ("bid_px", "<i8", (10,)),
            ("ask_px", "<i8", (10,)),
            ("bid_sz", "<i8", (10,)),
            ("ask_sz", "<i8", (10,)),
            ("bid_ct", "<u4", (10,)),
            ("ask_ct", "<u4", (10,)),
        ]
    ),
    doc="Ten price levels per side: prices 1e-9, sizes 1e-8 fixed, order counts.",
)

BAR = Schema(
    "bar",
    2,
    make_dtype(
        [
            ("timeframe_ns", "<i8"),
            ("open", "<i8"),
            ("high", "<i8"),
            ("low", "<i8"),
            ("close", "<i8"),
            ("volume", "<i8"),
            ("trade_count", "<u4"),
            ("synthetic", "u1"),
            ("vwap", "<f8"),
        ]
    ),
    doc="OHLCV bar (prices 1e-9, volume 1e-8 fixed); ts_event is the bar's close time; "
    "synthetic=1 for a bar with no trades.",
)

INDICATOR = Schema(
    "indicator",
    1,
    make_dtype([("value", "<f8")]),
    doc="One indicator value; the topic names the indicator (ind.ema, ind.mid, ...).",
)

SIGNAL = Schema(
    "signal",
    1,
    make_dtype([("strength", "<f8"), ("signal_id", "<u4"), ("side", "u1")]),
    doc="A trading signal from an analytics stage.",
)

ORDER = Schema(
    "order",
    2,
    make_dtype(
        [
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("size", "<i8"),
            ("filled", "<i8"),
            ("leaves", "<i8"),
            ("side", "u1"),
            ("order_type", "u1"),
            ("status", "u1"),
        ]
    ),
    doc="An order request or state change: price 1e-9; size (ordered), filled (cumulative) "
    "and leaves (still open) quantities 1e-8 fixed.",
)

FILL = Schema(
    "fill",
    2,
    make_dtype(
        [
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("size", "<i8"),
            ("leaves", "<i8"),
            ("side", "u1"),
        ]
    ),
    doc="An execution of (part of) an order: price 1e-9, size (this fill) and leaves (still "
    "open after it) 1e-8 fixed.",
)

ALERT = Schema(
    "alert",
    1,
    make_dtype([("code", "<u4"), ("severity", "u1"), ("value", "<f8"), ("text", "S48")]),
    doc="Something a validation or risk stage wants a human or system to know.",
)

DEAD_LETTER = Schema(
    "dead_letter",
    1,
    make_dtype(
        [
            ("reason", "<u4"),
            ("raw_offset", "<u8"),
            ("raw_length", "<u4"),
            ("source_id", "<u4"),
            ("detail", "S64"),
        ]
    ),
    doc="Input that could not be used: reason code, where its raw bytes are, a short detail.",
)

MBO = Schema(
    "mbo",
    2,
    make_dtype(
        [
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("size", "<i8"),
            ("action", "u1"),
            ("side", "u1"),
            ("flags", "u1"),
        ]
    ),
    doc="Market-by-order event: one order's add, cancel, modify, clear, trade or fill (DBN MBO); "
    "price 1e-9, size 1e-8 fixed-point.",
)

RAW_CHUNK_BYTES = 4064

RAW_CHUNK = Schema(
    "raw_chunk",
    1,
    make_dtype(
        [
            ("length", "<u4"),
            ("flags", "<u4"),
            ("data", "u1", (RAW_CHUNK_BYTES,)),
        ]
    ),
    doc="Raw protocol bytes as received: `length` bytes of `data`. flags bit 0 set: the chunk "
    "is one whole datagram/packet; clear: a piece of a byte stream (messages may span "
    "chunks). ts_recv = receive time, seq = chunk sequence, instrument_id = stream id.",
)

BUILTIN_SCHEMAS: tuple[Schema, ...] = (
    TRADE,
    QUOTE,
    BOOK_UPDATE,
    MBP10,
    MBO,
    BAR,
    INDICATOR,
    SIGNAL,
    ORDER,
    FILL,
    ALERT,
    DEAD_LETTER,
    RAW_CHUNK,
)


def copy_header(source: np.ndarray, target: np.ndarray) -> None:
    """Copy the common header fields of ``source`` into ``target`` (same length), per field.

    For a derived record (an indicator, a bar) that keeps the header of the record it came from.
    """
    for name, _ in HEADER_FIELDS:
        target[name] = source[name]
