"""The transport interface: how frames leave and enter a process.

A transport is registered by name through ``hftagg_register_transports``; the built-in one is
``pynng``. Transports move opaque frames (see :mod:`hftagg.bus.frame`); they never see records.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol
from urllib.parse import urlsplit

from hftagg.errors import TransportError

__all__ = ["Publisher", "Subscriber", "Transport", "check_loopback"]


class Publisher(Protocol):
    """What the publisher stage needs. A transport that can tell what reached its peers also
    offers (the built-in pynng one does; the stage uses them when present):

    - ``send(frame, records) -> bool``: False when ``interrupt()`` made a blocked send give up;
    - ``interrupt()``: the pipeline stops hard, return from blocking calls soon;
    - ``drain(idle_secs) -> int``: wait until peers have every frame sent; frames still not;
    - ``counters() -> dict``: ``peers``, ``frames_sent``, ``frames_queued``, ``frames_lost``,
      ``records_lost`` (final after ``close``, which counts what it discards).
    """

    def send(self, frame: bytes) -> None: ...
    def close(self) -> None: ...


class Subscriber(Protocol):
    """Optionally ``dropped_connections() -> int`` (connections the transport lost or cut,
    such as for a frame over the receive limit)."""

    def recv(self, timeout_secs: float | None = None) -> bytes | None:
        """The next frame, or ``None`` if none arrived within ``timeout_secs``."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    name: str
    patterns: tuple[str, ...]

    def publisher(self, address: str, *, pattern: str, buffer_frames: int) -> Publisher: ...

    def subscriber(
        self, address: str, topics: list[str] | None, *, pattern: str, buffer_frames: int
    ) -> Subscriber:
        """May also accept ``max_frame_bytes``: the receive limit (larger frames unread)."""
        ...


def check_loopback(address: str, allow_remote: bool, key: str = "delivery.target") -> None:
    """Refuse to listen beyond loopback unless ``allow_remote`` says so."""
    parts = urlsplit(address)
    if parts.scheme in ("ipc", "inproc"):
        return
    host = parts.hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    if not allow_remote:
        raise TransportError(
            f"{key} = {address!r} listens beyond loopback; use 127.0.0.1 (or ipc://), "
            f"or set {key.split('.')[0]}.allow_remote = true to expose it on purpose"
        )
