"""The built-in record catalog.

Every market-data record starts with the common header (``ts_event``, ``ts_recv``, ``seq``,
``instrument_id``). Prices are int64 fixed-point with scale 1e-9; derived values are float64.
Single-character codes (side, action) are stored as uint8 ASCII, as in DBN: ``ord("B")``.

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
    1,
    make_dtype([("side", "u1"), ("flags", "u1"), ("price", "<i8"), ("size", "<u4")]),
    doc="A trade print: price (1e-9 fixed), size, aggressor side.",
)

QUOTE = Schema(
    "quote",
    1,
    make_dtype([("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"), ("ask_sz", "<u4")]),
    doc="Best bid and offer (top of book).",
)

BOOK_UPDATE = Schema(
    "book_update",
    1,
    make_dtype(
        [
            ("action", "u1"),
            ("side", "u1"),
            ("depth", "u1"),
            ("flags", "u1"),
            ("price", "<i8"),
            ("size", "<u4"),
        ]
    ),
    doc="Market-by-price incremental update: action on the level at price/side.",
)

MBP10 = Schema(
    "mbp10",
    1,
    make_dtype(
        [
            ("bid_px", "<i8", (10,)),
            ("ask_px", "<i8", (10,)),
            ("bid_sz", "<u4", (10,)),
            ("ask_sz", "<u4", (10,)),
            ("bid_ct", "<u4", (10,)),
            ("ask_ct", "<u4", (10,)),
        ]
    ),
    doc="Ten price levels per side.",
)

BAR = Schema(
    "bar",
    1,
    make_dtype(
        [
            ("timeframe_ns", "<i8"),
            ("open", "<i8"),
            ("high", "<i8"),
            ("low", "<i8"),
            ("close", "<i8"),
            ("volume", "<u8"),
            ("trade_count", "<u4"),
            ("synthetic", "u1"),
            ("vwap", "<f8"),
        ]
    ),
    doc="OHLCV bar; ts_event is the bar's close time; synthetic=1 for a bar with no trades.",
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
    1,
    make_dtype(
        [
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("size", "<u4"),
            ("side", "u1"),
            ("order_type", "u1"),
            ("status", "u1"),
        ]
    ),
    doc="An order request or state change.",
)

FILL = Schema(
    "fill",
    1,
    make_dtype([("order_id", "<u8"), ("price", "<i8"), ("size", "<u4"), ("side", "u1")]),
    doc="An execution of (part of) an order.",
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
    1,
    make_dtype(
        [
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("size", "<u4"),
            ("action", "u1"),
            ("side", "u1"),
            ("flags", "u1"),
        ]
    ),
    doc="Market-by-order event: one order's add, cancel, modify, clear, trade or fill (DBN MBO).",
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
