"""The WebSocket source base class (for venue adapters) and the generic config-mapped ``websocket``.

:class:`WebSocketSource` runs a :class:`~.connection.WebSocketClient` and turns what it collects
into records once per ``next_batch``: the adapter's ``decode(batch)`` gets every message that
arrived since the last call (a :class:`~.connection.MessageBatch`: payloads and receive times)
and returns ``{port: records}``. The base adds, on its own ports, an ``alert`` per connection
state change (``alerts``: connected -- with how long the feed was down --, disconnected, stale)
and a ``dead_letter`` per refused message (``dead_letters``: malformed, oversized, wrong frame
kind, a field that does not convert), and keeps counters (``metrics()``: messages, bytes,
reconnects, ``connection_state``).

Adapter hooks (override what you need)::

    class BinanceTrades(WebSocketSource):
        type_name = "binance"
        outputs = {**WebSocketSource.outputs, "trades": Port("trade", "md.trades")}

        def subscribe_messages(self):          # sent after every connect
            return ['{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}']

        async def on_connect(self, client):    # after subscribing, on the connection's loop
            ...                                # e.g. fetch a REST snapshot

        def decode(self, batch):               # pipeline thread, once per batch
            return {"trades": records}
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from hftagg.builtins.sources.websocket import reasons as R
from hftagg.builtins.sources.websocket.connection import (
    ConnectionSettings,
    Event,
    MessageBatch,
    Rejected,
    State,
    WebSocketClient,
)
from hftagg.builtins.sources.websocket.formats import FixFormat, SbeFormat
from hftagg.builtins.sources.websocket.mapping import JsonMapping
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import ALERT, BOOK_UPDATE, DEAD_LETTER, QUOTE, TRADE, Action, Side
from hftagg.stages import Params, Port, SourceStage, StageContext, restart

__all__ = ["JsonWebSocket", "JsonWebSocketParams", "WebSocketParams", "WebSocketSource",
           "next_seq"]  # fmt: skip

_REJECT_REASON = {"oversized": R.OVERSIZED, "binary_frame": R.BINARY_FRAME,
                  "text_frame": R.TEXT_FRAME}  # fmt: skip


class WebSocketParams(Params):
    """Connection parameters every WebSocket source has."""

    endpoint: str = restart(..., description="ws:// or wss:// URL of the feed")
    ping_interval_s: float = restart(
        10.0, gt=0, le=3600, description="ping after this much silence; drop if no pong as long"
    )
    stale_after_s: float = restart(
        30.0, gt=0, le=86400, description="no data message for this long -> reconnect (stale)"
    )
    reconnect_initial_s: float = restart(0.5, gt=0, le=3600, description="first backoff")
    reconnect_max_s: float = restart(30.0, gt=0, le=3600, description="backoff cap")
    reconnect_jitter: float = restart(
        0.5, ge=0, le=1, description="backoff scaled by a random factor in [1 - jitter, 1]"
    )
    max_message_bytes: int = restart(
        1 << 20, ge=64, le=1 << 30, description="longer messages are dead-lettered (oversized)"
    )
    handshake_timeout_s: float = restart(5.0, gt=0, le=600)

    @field_validator("endpoint")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"endpoint {value!r}: expected a ws:// or wss:// URL, e.g. "
                             f"'wss://stream.binance.com:9443/ws'")  # fmt: skip
        return value


def next_seq(ids: np.ndarray, counters: dict[int, int]) -> np.ndarray:
    """Per-instrument sequence numbers for records in arrival order, continuing ``counters``
    (instrument id -> last seq given; updated in place). Bulk: one pass per distinct id."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.uint64)
    rank[order] = np.arange(n, dtype=np.uint64) - np.repeat(starts, counts).astype(np.uint64)
    keys = uniq.tolist()
    base = np.array([counters.get(k, 0) for k in keys], dtype=np.uint64)
    for k, last in zip(keys, (base + counts.astype(np.uint64)).tolist(), strict=True):
        counters[k] = last
    return base[inverse] + rank + np.uint64(1)


class WebSocketSource(SourceStage):
    """Base of WebSocket sources: connection machinery, alerts, dead letters, counters."""

    Params = WebSocketParams
    outputs = {
        "alerts": Port("alert", "alerts.websocket", "connection state changes"),
        "dead_letters": Port("dead_letter", "dead_letters.websocket",
                             "malformed, oversized, wrong-kind or unconvertible messages"),
    }  # fmt: skip
    #: the frames this source decodes: "text" (JSON), "binary" (SBE, ...) or "any"
    expect: str = "text"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each adapter's alert and dead-letter ports default to ``alerts.<type_name>`` and
        ``dead_letters.<type_name>`` (the catalog's convention), not the base's."""
        super().__init_subclass__(**kwargs)
        if not cls.type_name:
            return
        renamed = {"alerts.websocket": f"alerts.{cls.type_name}",
                   "dead_letters.websocket": f"dead_letters.{cls.type_name}"}  # fmt: skip
        cls.outputs = {
            name: Port(p.schema, renamed.get(p.topic, p.topic), p.doc)
            for name, p in cls.outputs.items()
        }

    # -- adapter hooks -----------------------------------------------------------------------

    def subscribe_messages(self) -> list[str | bytes]:
        """Messages sent after every connect (str: a text frame, bytes: binary)."""
        return []

    async def on_connect(self, client: WebSocketClient) -> None:
        """Runs on the connection's loop after each connect, once the subscribe messages are
        sent (messages keep arriving meanwhile); raising drops the connection (reconnect)."""

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        """Raw messages -> ``{port: records}`` (plus ``dead_letters`` if any)."""
        raise NotImplementedError(f"{type(self).__name__} must implement decode()")

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_settings(self) -> ConnectionSettings:
        p = self.params
        return ConnectionSettings(
            p.endpoint, ping_interval_s=p.ping_interval_s, stale_after_s=p.stale_after_s,
            reconnect_initial_s=p.reconnect_initial_s, reconnect_max_s=p.reconnect_max_s,
            reconnect_jitter=p.reconnect_jitter, max_message_bytes=p.max_message_bytes,
            handshake_timeout_s=p.handshake_timeout_s, expect=self.expect,
        )  # fmt: skip

    def prepare(self, ctx: StageContext) -> None:
        """Everything ``open`` does but connect: enough to call ``decode`` (tests, benchmarks)."""
        self.ctx = ctx
        self.seq: dict[int, int] = {}
        self.source_counters = {"records_decoded": 0, "dead_lettered": 0, "ignored": 0, "alerts": 0}
        self._alert_rows: list[tuple[int, int, int, float, str]] = []

    # -- an adapter's own alerts (a book gap, a checksum mismatch) ------------------------------

    def alert(self, ts: int, code: int, severity: int, value: float, text: str) -> None:
        """Queue an alert of the adapter's; :meth:`with_alerts` puts them on the ``alerts`` port."""
        self._alert_rows.append((ts, code, severity, value, text))

    def with_alerts(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``out`` with the queued alerts appended to its ``alerts`` (numbered after the
        connection's, like them); the queue is emptied."""
        rows, self._alert_rows = self._alert_rows, []
        if not rows:
            return out
        mine = np.zeros(len(rows), dtype=ALERT.dtype)
        mine["ts_event"] = mine["ts_recv"] = [r[0] for r in rows]
        mine["code"] = [r[1] for r in rows]
        mine["severity"] = [r[2] for r in rows]
        mine["value"] = [r[3] for r in rows]
        mine["text"] = [r[4].encode("utf-8", "replace")[:48] for r in rows]
        mine["seq"] = self.source_counters["alerts"] + np.arange(1, len(rows) + 1)
        self.source_counters["alerts"] += len(rows)
        alerts = out.get("alerts")
        out["alerts"] = mine if alerts is None else np.concatenate([alerts, mine])
        return out

    def open(self, ctx: StageContext) -> None:
        self.prepare(ctx)
        self.client = WebSocketClient(
            self.connection_settings(), name=self.stage_id, subscribe=self.subscribe_messages,
            on_connect=self.on_connect, wake=self.wake,
        )  # fmt: skip
        self.client.start()

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.stop()

    def next_awake(self) -> float | None:
        return math.inf  # the connection thread rings wake() when messages arrive

    def next_batch(self) -> dict[str, np.ndarray] | None:
        batch, events, rejected = self.client.take()
        if batch is None and not events and not rejected:
            return None
        out: dict[str, np.ndarray] = {}
        dead = [self._rejected_letters(rejected)] if rejected else []
        if batch is not None:
            try:
                decoded = self.decode(batch)
            except Exception as exc:  # an adapter bug must not lose the batch silently
                decoded = {"dead_letters": self._undecodable(batch, exc)}
            for port, records in decoded.items():
                if port == "dead_letters":
                    dead.append(records)
                elif port in self.output_topics:
                    out[port] = records
                    self.source_counters["records_decoded"] += len(records)
        if dead:
            out["dead_letters"] = np.concatenate(dead) if len(dead) > 1 else dead[0]
            self.source_counters["dead_lettered"] += len(out["dead_letters"])
        events = [e for e in events if e.state != State.CONNECTING]
        if events:
            out["alerts"] = self._alerts(events)
            self.source_counters["alerts"] += len(events)
        return out or None

    # -- records the base produces -----------------------------------------------------------

    def dead_letters(self, rows: list[tuple[int, int, bytes]], batch: MessageBatch) -> np.ndarray:
        """Dead letters for ``(message index in batch, reason, detail)`` rows."""
        out = np.zeros(len(rows), dtype=DEAD_LETTER.dtype)
        if not rows:
            return out
        idx = np.array([r[0] for r in rows], dtype=np.int64)
        out["ts_recv"] = batch.ts_recv[idx]
        out["ts_event"] = out["ts_recv"]
        out["reason"] = [r[1] for r in rows]
        out["detail"] = [r[2] for r in rows]
        out["raw_offset"] = batch.first_index + idx
        out["raw_length"] = [len(batch.messages[i]) for i in idx.tolist()]
        out["source_id"] = batch.connection[idx] if len(batch.connection) else 0
        return out

    def _rejected_letters(self, rejected: list[Rejected]) -> np.ndarray:
        out = np.zeros(len(rejected), dtype=DEAD_LETTER.dtype)
        for k, r in enumerate(rejected):
            out[k]["ts_recv"] = out[k]["ts_event"] = r.ts_ns
            out[k]["reason"] = _REJECT_REASON[r.kind]
            out[k]["raw_offset"] = self.client.index
            out[k]["raw_length"] = min(r.size, 2**32 - 1)
            out[k]["detail"] = f"{r.kind}: {r.size} bytes, {r.head[:24]!r}".encode()[:64]
        return out

    def _undecodable(self, batch: MessageBatch, exc: Exception) -> np.ndarray:
        text = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:64]
        return self.dead_letters([(i, R.UNDECODABLE, text) for i in range(len(batch))], batch)

    def _alerts(self, events: list[Event]) -> np.ndarray:
        out = np.zeros(len(events), dtype=ALERT.dtype)
        for k, e in enumerate(events):
            code = R.ALERT_CODES.get(e.state, R.DISCONNECTED)
            out[k]["ts_event"] = out[k]["ts_recv"] = e.ts_ns
            out[k]["seq"] = self.source_counters["alerts"] + k + 1
            out[k]["code"] = code
            out[k]["severity"] = 0 if code in (R.CONNECTED, R.STOPPED) else 1
            out[k]["value"] = e.gap_ns / 1e9 if e.state == State.CONNECTED else e.connection
            text = f"{State.NAMES[e.state]} #{e.connection}: {e.reason}"
            if e.gap_ns:
                text = f"reconnected #{e.connection} after {e.gap_ns / 1e9:.3f} s down"
            out[k]["text"] = text.encode("utf-8", "replace")[:48]
        return out

    # -- status ------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Counters and the connection state for status lines, the summary and Prometheus."""
        client = getattr(self, "client", None)
        if client is None:
            return {}
        quiet = time.monotonic() - client.last_data
        return {
            **client.counters,
            **self.source_counters,
            "connection_state": client.state,  # 0 down, 1 connecting, 2 connected, 3 stale
            "silent_secs": round(quiet, 3),
        }


# ------------------------------------------------------------------------------ generic source

_DEFAULT_SIDES = {"b": "B", "buy": "B", "bid": "B", "s": "A", "sell": "A", "ask": "A",
                  "offer": "A"}  # fmt: skip


_PORT = {"trade": "trades", "quote": "quotes", "book_update": "book"}


class JsonWebSocketParams(WebSocketParams):
    data_format: Literal["json", "fix", "sbe"] = restart(
        "json", description="json (mapped by `mapping`), fix (35=W/X) or sbe (binary frames)"
    )
    subscribe: list[str] = restart([], description="messages sent after every connect")
    record: Literal["trade", "quote", "book_update"] = restart(
        "trade", description="record type produced (book_update: depth diffs, bids/asks levels)"
    )
    mapping: dict[str, str] = restart(
        {}, description="json: record field -> message path, e.g. {price = 'p', size = 'q'}"
    )
    fix_symbols: list[str] = restart([], description="fix: Symbol (55) values to map")
    fix_dictionary: str = restart("fix/FIX44.xml", description="fix: QuickFIX data dictionary")
    sbe_schema: str = restart("sbe/hftagg-md.xml", description="sbe: the SBE XML schema")
    sbe_framing: Literal["length2", "sofh"] = restart("length2", description="sbe: framing")
    match: dict[str, str | int | bool] = restart(
        {}, description="path -> value a message must have to be a record (others ignored)"
    )
    ts_unit: Literal["ns", "us", "ms", "s"] = restart("ms", description="unit of ts_event")
    venue: str = restart("", description="instrument registry venue (default: the source name)")
    symbol: str = restart("", description="symbol of every record when mapping has none")
    side_values: dict[str, Literal["B", "A", "N"]] = restart(
        _DEFAULT_SIDES, description="message side value (lower case) -> B (buy) / A (sell)"
    )

    @field_validator("data_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class JsonWebSocket(WebSocketSource):
    """A WebSocket feed: JSON mapped to trades, quotes or book updates by config, or FIX / SBE
    messages handed to those protocols' decoders (:mod:`.formats`)."""

    type_name = "websocket"
    Params = JsonWebSocketParams
    outputs = {
        **WebSocketSource.outputs,
        "trades": Port("trade", "md.trades", "trades (record = 'trade')"),
        "quotes": Port("quote", "md.quotes", "best bid/offer (record = 'quote')"),
        "book": Port("book_update", "md.book", "depth diffs (record = 'book_update')"),
        "mbp10": Port("mbp10", "md.mbp10", "MBP-10 snapshots (data_format = 'sbe')"),
    }

    @classmethod
    def ports(cls, params: Params) -> tuple[dict[str, Port], dict[str, Port]]:
        keep = {
            "json": {_PORT[params.record]},
            "fix": set(FixFormat.ports),
            "sbe": set(SbeFormat.ports),
        }[params.data_format]
        data = {"trades", "quotes", "book", "mbp10"}
        return {}, {k: v for k, v in cls.outputs.items() if k in keep or k not in data}

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        if self.params.data_format == "fix":
            from hftagg.builtins.protocols.fix.stages import dictionary_problems

            return dictionary_problems(self.params.fix_dictionary, self.stage_id)
        if self.params.data_format == "sbe":
            from hftagg.builtins.protocols.sbe.stages import SbeDecode

            return SbeDecode(schema=self.params.sbe_schema).check(ctx)
        if not self.params.mapping:
            return [("mapping", "data_format = 'json' needs a mapping, e.g. mapping = "
                                "{ symbol = 's', price = 'p', size = 'q' }")]  # fmt: skip
        try:
            self._mapping()
        except ValueError as exc:
            return [("mapping", str(exc))]
        p = self.params
        if "symbol" not in p.mapping and not p.symbol:
            return [("symbol", "the mapping has no symbol path: set symbol = 'BTCUSDT' (every "
                               "record's symbol) or mapping.symbol = 's'")]  # fmt: skip
        return []

    def _mapping(self) -> JsonMapping:
        p = self.params
        return JsonMapping(p.record, p.mapping, match=p.match, ts_unit=p.ts_unit,
                           side_values=p.side_values)  # fmt: skip

    def prepare(self, ctx: StageContext) -> None:
        problems = self.check(ctx)
        if problems:
            key, text = problems[0]
            raise ValueError(f"websocket source {self.stage_id!r}: {key}: {text}")
        self.venue = self.params.venue or self.stage_id
        p = self.params
        self.binary: FixFormat | SbeFormat | None = None
        if p.data_format == "fix":
            self.expect = "any"
            self.binary = FixFormat(ctx, self.venue, p.fix_symbols, p.fix_dictionary)
        elif p.data_format == "sbe":
            self.expect = "binary"
            self.binary = SbeFormat(ctx, self.stage_id, p.sbe_schema, p.sbe_framing)
        else:
            self.mapping = self._mapping()
        self.port = _PORT[self.params.record]
        self.schema = {"trade": TRADE, "quote": QUOTE, "book_update": BOOK_UPDATE}[
            self.params.record
        ]
        super().prepare(ctx)

    def subscribe_messages(self) -> list[str | bytes]:
        return list(self.params.subscribe)

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        if self.binary is not None:
            return self.binary.decode(batch)
        cols = self.mapping.decode(batch.messages)
        self.source_counters["ignored"] += cols.ignored
        v, rows = cols.values, cols.rows
        if "symbol" in v:
            ids = self.ctx.instruments.ids_for(self.venue, v["symbol"])
        else:
            ids = self.ctx.instruments.ids_for(self.venue, [self.params.symbol] * len(rows))
        unknown = ids == 0
        rejected = cols.rejected
        if unknown.any():
            names = v["symbol"][unknown] if "symbol" in v else [b""] * int(unknown.sum())
            rejected += [(int(r), R.NO_INSTRUMENT, b"symbol=" + s[:40] + b": not in registry")
                         for r, s in zip(rows[unknown], names, strict=True)]  # fmt: skip
            keep = ~unknown
            rows, ids, v = rows[keep], ids[keep], {k: a[keep] for k, a in v.items()}
        out = np.zeros(len(rows), dtype=self.schema.dtype)
        out["ts_recv"] = batch.ts_recv[rows]
        out["ts_event"] = v["ts_event"] if "ts_event" in v else out["ts_recv"]
        out["instrument_id"] = ids
        out["seq"] = next_seq(ids, self.seq)
        for name in ("price", "size", "bid_px", "ask_px", "bid_sz", "ask_sz", "side", "flags"):
            if name in v:
                out[name] = v[name]
        if self.params.record == "trade" and "side" not in v:
            out["side"] = Side.NONE
        if self.params.record == "book_update":
            out["action"] = np.where(out["size"] == 0, Action.DELETE, Action.MODIFY)
        result = {self.port: out}
        if rejected:
            result["dead_letters"] = self.dead_letters(sorted(rejected), batch)
        return result


@hookimpl
def hftagg_register_stage_types(register):
    register(JsonWebSocket)
