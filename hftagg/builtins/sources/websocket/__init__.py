"""WebSocket sources: the connection machinery, the adapter base class and the generic
config-mapped ``websocket`` source (:mod:`.source`)."""

from hftagg.builtins.sources.websocket.connection import (
    ConnectionSettings,
    Event,
    MessageBatch,
    State,
    WebSocketClient,
    backoff_delay,
)
from hftagg.builtins.sources.websocket.source import (
    JsonWebSocket,
    WebSocketParams,
    WebSocketSource,
    next_seq,
)

__all__ = [
    "ConnectionSettings",
    "Event",
    "JsonWebSocket",
    "MessageBatch",
    "State",
    "WebSocketClient",
    "WebSocketParams",
    "WebSocketSource",
    "backoff_delay",
    "next_seq",
]
