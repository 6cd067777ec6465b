"""Built-in plugin: the publisher sink, which sends topics to other processes as frames.

``[delivery]`` in config.toml maps onto it: ``method`` picks a registered transport (``pynng``),
``target`` is the address to listen on (loopback unless ``allow_remote = true``), ``pattern`` is
``pub`` (fan-out) or ``push`` (lossless, with backpressure), ``topics`` what to send. Each batch
becomes one frame (split at ``max_frame_bytes``) whose header carries the schema id and the
stream offset of its first record, so a subscriber can check it lost nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hftagg.bus.frame import FrameEncoder
from hftagg.bus.transport import check_loopback
from hftagg.errors import TransportError
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SinkStage, StageContext, restart

__all__ = ["Publisher", "PublisherParams"]


class PublisherParams(Params):
    method: str = restart("pynng", description="transport name")
    target: str = restart("tcp://127.0.0.1:5555", description="address to listen on")
    pattern: str = restart("pub", description="pub (fan-out) or push (lossless)")
    topics: list[str] = restart(["ind.ema"], min_length=1, description="topics to send")
    max_frame_bytes: int = restart(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    buffer_frames: int = restart(1024, ge=1, le=8192, description="frames queued per peer")
    allow_remote: bool = restart(False, description="listen on non-loopback addresses")


class Publisher(SinkStage):
    type_name = "publisher"
    Params = PublisherParams

    @classmethod
    def ports(cls, params: PublisherParams) -> tuple[dict[str, Port], dict[str, Port]]:
        return {topic: Port(None, topic) for topic in params.topics}, {}

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
        self._encoders = {
            port: FrameEncoder(topic, ctx.topic_schemas[topic], p.max_frame_bytes)
            for port, topic in self.input_topics.items()
        }
        self._socket = transport.publisher(
            p.target, pattern=p.pattern, buffer_frames=p.buffer_frames
        )
        self._telemetry = ctx.telemetry
        self.frames_sent = 0

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        send = self._socket.send
        trace = self._telemetry.current_trace() if self._telemetry is not None else (b"", 0, 0)
        for frame in self._encoders[port].encode(batch, offset, trace):
            send(frame)
            self.frames_sent += 1

    def close(self) -> None:
        socket: Any = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
            self._socket = None


@hookimpl
def hftagg_register_stage_types(register):
    register(Publisher)
