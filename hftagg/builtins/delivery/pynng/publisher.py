"""Built-in plugin: the publisher sink, which sends topics to other processes as frames.

``[delivery]`` in config.toml maps onto it: ``method`` picks a registered transport (``pynng``),
``target`` is the address to listen on (loopback unless ``allow_remote = true``), ``pattern`` is
``pub`` (fan-out) or ``push`` (lossless, with backpressure), ``topics`` what to send. Each batch
becomes one frame (split at ``max_frame_bytes``) whose header carries the schema id, the stream
offset of its first record and the publisher's session id, so a subscriber can check it lost
nothing and tell a publisher restart from a loss.

Stopping keeps the pattern's promise: the sink's last ``flush`` waits until the transport has
handed every queued frame to a peer -- as long as it takes a connected puller, even a stalled
one. It gives up when the pipeline stops hard (``runtime.drain_timeout_secs``) or when no
puller has been connected for ``linger_secs``, and then counts what it discards: the summary's
``drops`` for push, ``frames_lost`` for both patterns, and a warning line. The counters
and the session id survive a live replacement of the publisher (the stream continues).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftagg.bus.frame import FrameEncoder, new_session_id
from hftagg.bus.transport import check_loopback
from hftagg.config.addresses import listen_address_problem
from hftagg.errors import TransportError
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SinkStage, StageContext, restart

__all__ = ["Publisher", "PublisherParams"]

log = logging.getLogger("hftagg.delivery")


class PublisherParams(Params):
    method: str = restart("pynng", description="transport name")
    target: str = restart("tcp://127.0.0.1:5555", description="address to listen on")
    pattern: str = restart("pub", description="pub (fan-out) or push (lossless)")
    topics: list[str] = restart(["ind.ema"], min_length=1, description="topics to send")
    max_frame_bytes: int = restart(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    buffer_frames: int = restart(1024, ge=1, le=8192, description="frames queued per peer")
    linger_secs: float = restart(
        2.0, ge=0, le=600, description="at stop with no puller connected, wait this long for one"
    )
    allow_remote: bool = restart(False, description="listen on non-loopback addresses")


@dataclass
class _Tally:
    """What one publisher run sent and lost; carried to a replacement with the session id."""

    session_id: int = field(default_factory=new_session_id)
    frames_sent: int = 0
    records_sent: int = 0
    frames_lost: int = 0
    records_lost: int = 0


class Publisher(SinkStage):
    type_name = "publisher"
    Params = PublisherParams

    @classmethod
    def ports(cls, params: PublisherParams) -> tuple[dict[str, Port], dict[str, Port]]:
        return {topic: Port(None, topic) for topic in params.topics}, {}

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """What ``open`` refuses, found without opening a socket."""
        p = self.params
        transport = ctx.transports.get(p.method)
        if transport is None:
            known = ", ".join(sorted(ctx.transports)) or "none"
            return [("method", f"no such transport; registered: {known}")]
        problems = []
        if p.pattern not in transport.patterns:
            supported = ", ".join(transport.patterns)
            problems.append(("pattern", f"transport {p.method!r} supports {supported}"))
        address = listen_address_problem(p.target, p.allow_remote, "delivery.allow_remote")
        if address:
            problems.append(("target", address))
        return problems

    def open(self, ctx: StageContext) -> None:
        p = self.params
        transport = ctx.transports.get(p.method)
        if transport is None:
            raise TransportError(
                f"delivery.method = {p.method!r}: no such transport; registered: "
                f"{', '.join(sorted(ctx.transports)) or 'none'}"
            )
        if p.pattern not in transport.patterns:
            raise TransportError(
                f"delivery.pattern = {p.pattern!r}: transport {p.method!r} supports "
                f"{', '.join(transport.patterns)}"
            )
        check_loopback(p.target, p.allow_remote)
        self._tally = getattr(self, "_tally", None) or _Tally()
        self._topic_schemas = ctx.topic_schemas
        self._encoders: dict[str, FrameEncoder] = {}
        self._socket = transport.publisher(
            p.target, pattern=p.pattern, buffer_frames=p.buffer_frames
        )
        counting = hasattr(self._socket, "counters")  # a transport that can tell what arrived
        self._send = self._socket.send if counting else (lambda frame, _: self._socket.send(frame))
        self._telemetry = ctx.telemetry

    def _encoder(self, port: str) -> FrameEncoder:
        encoder = self._encoders.get(port)
        if encoder is None:
            topic = self.input_topics[port]
            encoder = self._encoders[port] = FrameEncoder(
                topic,
                self._topic_schemas[topic],
                self.params.max_frame_bytes,
                session_id=self._tally.session_id,
            )
        return encoder

    @property
    def frames_sent(self) -> int:
        return self._tally.frames_sent

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        send = self._send
        tally = self._tally
        trace = self._telemetry.current_trace() if self._telemetry is not None else (b"", 0, 0)
        encoder = self._encoder(port)
        unsent = len(batch)
        for frame in encoder.encode(batch, offset, trace):
            records = min(unsent, encoder.max_records)
            if send(frame, records) is False:  # interrupted: the pipeline stops hard
                tally.frames_lost += -(-unsent // encoder.max_records)
                tally.records_lost += unsent
                return
            tally.frames_sent += 1
            tally.records_sent += records
            unsent -= records

    def interrupt(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None and hasattr(socket, "interrupt"):
            socket.interrupt()

    def flush(self) -> None:
        """At the end of the sink's life: wait until peers have everything, else count it."""
        socket = getattr(self, "_socket", None)
        if socket is None or not hasattr(socket, "drain"):
            return
        if socket.drain(self.params.linger_secs):
            self._close_socket()

    def counters(self) -> dict[str, int]:
        tally = self._tally
        live = self._socket_counters()
        return {
            "peers": live.get("peers", 0),
            "frames_sent": tally.frames_sent,
            "frames_queued": live.get("frames_queued", 0),
            "frames_lost": tally.frames_lost + live.get("frames_lost", 0),
            "dropped": tally.records_lost + live.get("records_lost", 0),
        }

    def _socket_counters(self) -> dict[str, int]:
        socket = getattr(self, "_socket", None)
        if socket is None or not hasattr(socket, "counters"):
            return {}
        return socket.counters()

    def _close_socket(self) -> None:
        socket, self._socket = getattr(self, "_socket", None), None
        if socket is None:
            return
        socket.close()
        if not hasattr(socket, "counters"):
            return
        final = socket.counters()
        tally = self._tally
        frames, records = final["frames_lost"], final["records_lost"]
        tally.frames_lost += frames
        tally.records_lost += records
        if frames:
            what = f"{records:,} records" if self.params.pattern == "push" else "records"
            log.warning(
                "%s: %s frames (%s) sent with pattern %r were not delivered to %s %s "
                "before the socket closed",
                self.stage_id, f"{frames:,}", what, self.params.pattern,
                "a puller at" if self.params.pattern == "push" else "every subscriber of",
                self.params.target,
            )  # fmt: skip

    def snapshot(self) -> Any:
        return self._tally  # shared: the old instance's last flush still counts into it

    def restore(self, state: Any) -> None:
        if isinstance(state, _Tally):
            self._tally = state
            for encoder in self._encoders.values():
                encoder.session_id = state.session_id

    def close(self) -> None:
        self.interrupt()
        self._close_socket()


@hookimpl
def hftagg_register_stage_types(register):
    register(Publisher)


@hookimpl
def hftagg_register_config_sections(register):
    from hftagg.builtins.delivery._section import DELIVERY

    register(DELIVERY)
