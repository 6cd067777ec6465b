"""A WebSocket client on its own thread and asyncio loop: reconnect, resubscribe, ping, staleness.

The client collects raw messages (bytes plus local receive time) for the pipeline thread, which
takes them as one :class:`MessageBatch` per ``next_batch`` and decodes them in bulk. Nothing is
decoded on the connection thread.

Client library: picows (Cython, one listener callback per frame, no per-message task or queue).
Measured here on loopback (2 shared cores, one process, 300k Binance trade messages of ~110
bytes from a picows server): picows received 550-760k messages/s, ``websockets`` 17's asyncio
client (``recv(decode=False)``, compression off) 22-25k/s -- a factor of over 20. ``websockets``
would cap a source far below what the bulk decoder takes, so picows it is.

Connection behaviour:

- Reconnect with capped exponential backoff and jitter: after the n-th failed attempt in a row
  the client waits ``min(reconnect_max_s, reconnect_initial_s * 2**n)`` scaled by a random factor
  in ``[1 - reconnect_jitter, 1]`` (so many clients of one venue do not reconnect in step). The
  count resets once a connection has delivered a message.
- After each connect: the adapter's subscribe messages are sent again (a venue forgets
  subscriptions with the connection), then its ``on_connect`` runs (e.g. a REST snapshot:
  Binance's order book sync asks for the stream first, buffered, then the snapshot; messages
  keep being collected while it runs).
- Pings: the server's pings are answered with pongs (picows answers in the protocol layer); the
  client also pings after ``ping_interval_s`` of silence and drops a connection whose pong does
  not come back within ``ping_interval_s``.
- Staleness: no data message for ``stale_after_s`` (pongs do not count: a venue can keep the
  socket alive while its feed is dead) -> the connection is dropped as stale and reconnected.
- Hostile input never drops the connection: a message over ``max_message_bytes`` and a frame of
  the wrong kind (binary where text is expected, or the reverse) are counted and handed on as
  rejected with a reason (the source dead-letters them). Frames over ``64 x max_message_bytes``
  are refused by the protocol layer (close 1009) and the connection is reopened -- reported.

Every state change (``connecting``, ``connected``, ``disconnected``, ``stale``, ``failed``) is
recorded as an :class:`Event` with its reason; the source turns them into alert records and a
``connection_state`` metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import picows

__all__ = [
    "ConnectionSettings",
    "Event",
    "MessageBatch",
    "Rejected",
    "State",
    "WebSocketClient",
    "backoff_delay",
]

log = logging.getLogger("hftagg.websocket")


class State:
    """Connection states (the ``connection_state`` metric's values)."""

    DISCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2  # connected and subscribed
    STALE = 3  # no data for stale_after_s; being reconnected
    STOPPED = 4

    NAMES = {0: "disconnected", 1: "connecting", 2: "connected", 3: "stale", 4: "stopped"}


@dataclass(frozen=True)
class ConnectionSettings:
    endpoint: str
    ping_interval_s: float = 10.0
    stale_after_s: float = 30.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    reconnect_jitter: float = 0.5
    max_message_bytes: int = 1 << 20
    handshake_timeout_s: float = 5.0
    expect: str = "text"  # "text", "binary" or "any"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Event:
    """A connection state change: when (ns, wall clock), the new state, which connection
    (1, 2, ...), how long the feed was down before it (ns; 0 if not a reconnect) and why."""

    ts_ns: int
    state: int
    connection: int
    gap_ns: int
    reason: str


@dataclass
class Rejected:
    """A message refused before decoding: why, its size, its first bytes, its index."""

    kind: str  # "oversized", "binary_frame", "text_frame"
    size: int
    head: bytes
    index: int
    ts_ns: int


@dataclass
class MessageBatch:
    """Raw messages handed to a decoder at once: payloads, receive times (int64 ns), the stream
    index of the first one (messages counted since the source opened) and, per message, the
    connection it arrived on."""

    messages: list[bytes]
    ts_recv: np.ndarray
    first_index: int
    connection: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))

    def __len__(self) -> int:
        return len(self.messages)


def backoff_delay(attempt: int, initial: float, cap: float, jitter: float, rng=random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): capped exponential,
    scaled by a factor drawn from ``[1 - jitter, 1]``."""
    base = min(cap, initial * (2.0 ** min(attempt, 60)))
    return base * (1.0 - jitter * rng.random())


class _Listener(picows.WSListener):
    """Per-frame callback: append payload and receive time; flush to the client once per read
    buffer (``last_in_buffer``), so the lock is taken once per socket read, not per message."""

    def __init__(self, client: WebSocketClient, connection: int) -> None:
        self.client = client
        self.connection = connection
        self.msgs: list[bytes] = []
        self.times: list[int] = []
        self.fragments: list[bytes] = []
        self.fragment_type = 0
        self.transport: picows.WSTransport | None = None

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if kind == picows.WSMsgType.TEXT or kind == picows.WSMsgType.BINARY:
            if not frame.fin:
                self.fragment_type = kind
                self.fragments = [frame.get_payload_as_bytes()]
            else:
                self._message(kind, frame.get_payload_as_bytes())
        elif kind == picows.WSMsgType.CONTINUATION:
            self.fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload = b"".join(self.fragments)
                self.fragments = []
                self._message(self.fragment_type, payload)
        elif kind == picows.WSMsgType.CLOSE:
            self.client._closed_by_server(frame.get_close_code(), frame.get_close_message())
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind == picows.WSMsgType.PING:  # auto-pong answers; kept for explicitness
            transport.send_pong(frame.get_payload_as_bytes())
        if frame.last_in_buffer and self.msgs:
            self.flush()

    def _message(self, kind: int, payload: bytes) -> None:
        client = self.client
        now = time.time_ns()
        client.last_data = time.monotonic()
        if len(payload) > client.settings.max_message_bytes:
            client._reject("oversized", payload, now)
        elif kind == picows.WSMsgType.BINARY and client.settings.expect == "text":
            client._reject("binary_frame", payload, now)
        elif kind == picows.WSMsgType.TEXT and client.settings.expect == "binary":
            client._reject("text_frame", payload, now)
        else:
            self.msgs.append(payload)
            self.times.append(now)

    def flush(self) -> None:
        msgs, times = self.msgs, self.times
        self.msgs, self.times = [], []
        self.client._deliver(msgs, times, self.connection)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if self.msgs:
            self.flush()
        self.client._disconnected.set()


class WebSocketClient:
    """Runs one WebSocket connection (and its reconnects) on a thread of its own.

    ``subscribe`` returns the messages to send after each connect; ``on_connect`` (a coroutine
    function taking the client) runs first on each connect; ``wake`` is called from the
    connection thread whenever messages arrive. ``take()`` (pipeline thread) returns what has
    arrived since the last call.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        name: str = "websocket",
        subscribe: Callable[[], list[str | bytes]] = list,
        on_connect: Callable[[WebSocketClient], Awaitable[None]] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self._subscribe = subscribe
        self._on_connect = on_connect
        self._wake = wake or (lambda: None)
        self._lock = threading.Lock()
        self._msgs: list[bytes] = []
        self._times: list[int] = []
        self._conns: list[tuple[int, int]] = []  # (connection, count) runs
        self._events: list[Event] = []
        self._rejected: list[Rejected] = []
        self.index = 0  # messages taken so far (the next batch's first_index)
        self.state = State.DISCONNECTED
        self.connection = 0
        self.last_data = time.monotonic()
        self.counters = {
            "messages": 0,
            "bytes": 0,
            "connects": 0,
            "reconnects": 0,
            "connect_failures": 0,
            "stale_reconnects": 0,
            "oversized": 0,
            "binary_frames": 0,
            "text_frames": 0,
            "server_closes": 0,
        }
        self.transport: picows.WSTransport | None = None
        self._stop = threading.Event()
        self._disconnected: asyncio.Event | None = None
        self._down_since: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    # -- pipeline thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"websocket:{self.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def take(self) -> tuple[MessageBatch | None, list[Event], list[Rejected]]:
        """Everything that arrived since the last call: messages, state events, rejects."""
        with self._lock:
            msgs, times, conns = self._msgs, self._times, self._conns
            events, rejected = self._events, self._rejected
            if not (msgs or events or rejected):
                return None, [], []
            self._msgs, self._times, self._conns = [], [], []
            self._events, self._rejected = [], []
        batch = None
        if msgs:
            connection = np.repeat(
                np.array([c for c, _ in conns], dtype=np.uint32),
                np.array([n for _, n in conns], dtype=np.int64),
            )
            batch = MessageBatch(msgs, np.array(times, dtype=np.int64), self.index, connection)
            self.index += len(msgs)
        return batch, events, rejected

    def send(self, message: str | bytes) -> None:
        """Send a message on the current connection (thread-safe; dropped when disconnected)."""
        loop, transport = self._loop, self.transport
        if loop is not None and transport is not None:
            loop.call_soon_threadsafe(self._send_now, message)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._drop, "stopping")
        if self._thread is not None:
            self._thread.join(timeout)

    # -- connection thread -------------------------------------------------------------------

    def _deliver(self, msgs: list[bytes], times: list[int], connection: int) -> None:
        size = sum(map(len, msgs))
        with self._lock:
            self._msgs.extend(msgs)
            self._times.extend(times)
            if self._conns and self._conns[-1][0] == connection:
                self._conns[-1] = (connection, self._conns[-1][1] + len(msgs))
            else:
                self._conns.append((connection, len(msgs)))
        self.counters["messages"] += len(msgs)
        self.counters["bytes"] += size
        self._wake()

    def _reject(self, kind: str, payload: bytes, now: int) -> None:
        key = {"oversized": "oversized", "binary_frame": "binary_frames"}.get(kind, "text_frames")
        self.counters[key] += 1
        with self._lock:
            self._rejected.append(Rejected(kind, len(payload), payload[:32], -1, now))
        self._wake()

    def _event(self, state: int, reason: str) -> None:
        now = time.time_ns()
        gap = 0
        if state == State.CONNECTED and self._down_since is not None:
            gap = now - self._down_since
            self._down_since = None
        elif state in (State.DISCONNECTED, State.STALE) and self._down_since is None:
            self._down_since = now
        self.state = state
        with self._lock:
            self._events.append(Event(now, state, self.connection, gap, reason))
        if state != State.CONNECTING:
            log.info("websocket %s: %s (%s)", self.name, State.NAMES[state], reason)
        self._wake()

    def _closed_by_server(self, code: Any, message: bytes) -> None:
        self.counters["server_closes"] += 1
        self._close_reason = f"server closed ({int(code)} {(message or b'')[:40]!r})"

    def _send_now(self, message: str | bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if isinstance(message, str):
            transport.send(picows.WSMsgType.TEXT, message.encode())
        else:
            transport.send(picows.WSMsgType.BINARY, message)

    def _drop(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None:
            self.transport.disconnect()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            delivered = await self._session()
            if self._stop.is_set():
                break
            attempt = 0 if delivered else attempt + 1
            s = self.settings
            delay = backoff_delay(attempt, s.reconnect_initial_s, s.reconnect_max_s,
                                  s.reconnect_jitter, self._rng)  # fmt: skip
            deadline = time.monotonic() + delay
            while not self._stop.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(min(0.05, delay))
        self._event(State.STOPPED, "source closed")

    async def _session(self) -> bool:
        """One connection, from connect to disconnect; whether it delivered any message."""
        s = self.settings
        self._close_reason = ""
        self._event(State.CONNECTING, s.endpoint)
        self.connection += 1
        self._disconnected = asyncio.Event()
        before = self.counters["messages"]
        connection = self.connection
        try:
            transport, _ = await picows.ws_connect(
                lambda: _Listener(self, connection),
                s.endpoint,
                websocket_handshake_timeout=s.handshake_timeout_s,
                enable_auto_ping=True,
                auto_ping_idle_timeout=s.ping_interval_s,
                auto_ping_reply_timeout=s.ping_interval_s,
                enable_auto_pong=True,
                max_frame_size=64 * s.max_message_bytes,
                extra_headers=list(s.headers) or None,
                logger_name="hftagg.websocket.picows",
            )
        except (TimeoutError, OSError, picows.WSError, ValueError) as exc:
            self.counters["connect_failures"] += 1
            self._event(State.DISCONNECTED, f"connect failed: {exc}"[:200])
            return False
        self.transport = transport
        self.counters["connects"] += 1
        if self.counters["connects"] > 1:
            self.counters["reconnects"] += 1
        self.last_data = time.monotonic()
        try:
            for message in self._subscribe():
                self._send_now(message)
            if self._on_connect is not None:  # messages arriving meanwhile are collected
                await self._on_connect(self)
        except Exception as exc:  # an adapter's hook failed: reconnect rather than die
            log.warning("websocket %s: on_connect failed: %r", self.name, exc)
            self._close_reason = f"on_connect failed: {exc!r}"[:200]
            transport.disconnect()
        else:
            self._event(State.CONNECTED, s.endpoint)
            await self._watch(transport)
        self.transport = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(transport.wait_disconnected(), 1.0)
        if self.state != State.STALE:
            self._event(State.DISCONNECTED, self._close_reason or "connection lost")
        return self.counters["messages"] > before

    async def _watch(self, transport: picows.WSTransport) -> None:
        """Until the connection ends: drop it when no data came for ``stale_after_s``."""
        s = self.settings
        tick = max(0.01, min(0.25, s.stale_after_s / 4))
        while not self._disconnected.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), tick)
            if self._disconnected.is_set() or self._stop.is_set():
                break
            silent = time.monotonic() - self.last_data
            if silent >= s.stale_after_s:
                self.counters["stale_reconnects"] += 1
                self._event(State.STALE, f"no message for {silent:.1f} s "
                                         f"(stale_after_s = {s.stale_after_s:g})")  # fmt: skip
                transport.disconnect()
                break
        if self._stop.is_set():
            transport.disconnect()
