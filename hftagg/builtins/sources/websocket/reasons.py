"""Reason codes of the WebSocket sources (owner ``websocket``, range 0x1300..0x13FF).

Dead letters (``dead_letter.reason``) for input refused before or while decoding, and alert
codes (``alert.code``) for connection state changes. Venue adapters built on
:class:`~hftagg.builtins.sources.websocket.WebSocketSource` use these too.
"""

from __future__ import annotations

from hftagg.records.reasons import REASONS

__all__ = [
    "ALERT_CODES",
    "BAD_LEVEL",
    "BAD_SIDE",
    "BINARY_FRAME",
    "CONNECTED",
    "DISCONNECTED",
    "MALFORMED",
    "MISSING_FIELD",
    "NO_INSTRUMENT",
    "OVERSIZED",
    "STALE",
    "STOPPED",
    "TEXT_FRAME",
]

REASONS.claim("websocket", 0x1300, 0x13FF)

MALFORMED = 0x1301
OVERSIZED = 0x1302
BINARY_FRAME = 0x1303
TEXT_FRAME = 0x1304
MISSING_FIELD = 0x1305
BAD_SIDE = 0x1306
NO_INSTRUMENT = 0x1307
UNDECODABLE = 0x1308
BAD_LEVEL = 0x1309

CONNECTED = 0x1380
DISCONNECTED = 0x1381
STALE = 0x1382
STOPPED = 0x1383

REASONS.register_all("websocket", {
    MALFORMED: ("malformed", "a message that is not valid JSON (or not the mapped shape)", 1),
    OVERSIZED: ("oversized", "a message longer than max_message_bytes", 1),
    BINARY_FRAME: ("binary_frame", "a binary frame where text (JSON) was expected", 1),
    TEXT_FRAME: ("text_frame", "a text frame where binary was expected", 1),
    MISSING_FIELD: ("missing_field", "a mapped field is missing from the message", 1),
    BAD_SIDE: ("bad_side", "a side value not in side_values", 1),
    NO_INSTRUMENT: ("no_instrument", "a symbol the instrument registry does not know", 1),
    BAD_LEVEL: ("bad_level", "a depth level that is not [price, size, ...]", 1),
    UNDECODABLE: ("undecodable", "the adapter's decoder raised on this batch", 2),
    CONNECTED: ("connected", "websocket connected and subscribed", 0),
    DISCONNECTED: ("disconnected", "websocket disconnected; reconnecting", 1),
    STALE: ("stale", "no message within stale_after_s; reconnecting", 1),
    STOPPED: ("stopped", "websocket source closed", 0),
})  # fmt: skip

#: connection state (connection.State) -> alert code
ALERT_CODES = {2: CONNECTED, 0: DISCONNECTED, 3: STALE, 4: STOPPED}
