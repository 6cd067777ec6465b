"""Built-in plugin: the pynng transport (nng pub/sub for fan-out, push/pull for lossless).

``pub``: every subscriber gets every frame; a subscriber that cannot keep up loses frames at the
socket (nng's pub/sub semantics) -- subscribers detect that from the frame offsets.
``push``: one or more pullers share the stream; the publisher blocks when they are full
(lossless, with backpressure all the way to the ring).
"""

from __future__ import annotations

import pynng

from hftagg.bus.frame import topic_prefix
from hftagg.errors import TransportError
from hftagg.hookspecs import hookimpl

__all__ = ["PynngTransport"]


class _Publisher:
    def __init__(self, socket: pynng.Socket) -> None:
        self._socket = socket

    def send(self, frame: bytes) -> None:
        self._socket.send(frame)

    def close(self) -> None:
        self._socket.close()


class _Subscriber:
    def __init__(self, socket: pynng.Socket) -> None:
        self._socket = socket

    def recv(self, timeout_secs: float | None = None) -> bytes | None:
        self._socket.recv_timeout = -1 if timeout_secs is None else max(1, int(timeout_secs * 1e3))
        try:
            return self._socket.recv()
        except pynng.Timeout:
            return None

    def close(self) -> None:
        self._socket.close()


class PynngTransport:
    name = "pynng"
    patterns = ("pub", "push")

    def publisher(self, address: str, *, pattern: str = "pub", buffer_frames: int = 1024):
        cls = {"pub": pynng.Pub0, "push": pynng.Push0}.get(pattern)
        if cls is None:
            raise TransportError(
                f"pynng pattern {pattern!r} is unknown; use one of {self.patterns}"
            )
        try:
            socket = cls(listen=address, send_buffer_size=buffer_frames)
        except pynng.NNGException as exc:
            raise TransportError(f"pynng cannot listen on {address!r}: {exc}") from exc
        return _Publisher(socket)

    def subscriber(
        self,
        address: str,
        topics: list[str] | None = None,
        *,
        pattern: str = "pub",
        buffer_frames: int = 1024,
    ):
        if pattern == "pub":
            socket = pynng.Sub0(recv_buffer_size=buffer_frames)
            for topic in topics or [None]:
                socket.subscribe(topic_prefix(topic))
        elif pattern == "push":
            socket = pynng.Pull0(recv_buffer_size=buffer_frames)
        else:
            raise TransportError(
                f"pynng pattern {pattern!r} is unknown; use one of {self.patterns}"
            )
        try:
            socket.dial(address, block=False)
        except pynng.NNGException as exc:
            socket.close()
            raise TransportError(f"pynng cannot dial {address!r}: {exc}") from exc
        return _Subscriber(socket)


@hookimpl
def hftagg_register_transports(register):
    register(PynngTransport())
