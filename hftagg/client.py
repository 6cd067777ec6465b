"""Subscribe to a running pipeline from another process::

    from hftagg.client import subscribe

    with subscribe("tcp://127.0.0.1:5555", "ind.ema") as sub:
        for batch in sub:            # numpy record batches (read-only views on the frames)
            print(batch["value"][-1])

The subscription checks frame offsets: ``sub.gaps`` counts the records lost between frames (a
``pub`` subscriber that could not keep up), so "nothing lost" is something you can verify.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hftagg.bus.frame import Frame, decode_frame
from hftagg.errors import FrameError
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.records.schema import SchemaRegistry

__all__ = ["Subscription", "subscribe"]


class Subscription:
    """An open subscription: iterate for batches, or call ``next_frame`` for headers too."""

    def __init__(
        self,
        address: str,
        topic: str | None,
        *,
        transport: str = "pynng",
        pattern: str = "pub",
        timeout_secs: float | None = None,
        schemas: SchemaRegistry | None = None,
        host: PluginHost | None = None,
        buffer_frames: int = 8192,
    ) -> None:
        host = host or load_plugins([], entry_points=True)
        self.schemas = schemas or host.schemas
        self.topic = topic
        self.timeout_secs = timeout_secs
        self._socket = host.transports[transport].subscriber(
            address, [topic] if topic else None, pattern=pattern, buffer_frames=buffer_frames
        )
        self.frames = 0
        self.records = 0
        self.gaps = 0  # records missing between consecutive frames of a topic
        self.bad_frames = 0
        self._next_offset: dict[str, int] = {}

    def next_frame(self, timeout_secs: float | None = None) -> Frame | None:
        """The next valid frame, or ``None`` on timeout. Malformed frames are counted, skipped."""
        while True:
            data = self._socket.recv(
                timeout_secs if timeout_secs is not None else self.timeout_secs
            )
            if data is None:
                return None
            try:
                frame = decode_frame(data, self.schemas)
            except FrameError:
                self.bad_frames += 1
                continue
            expected = self._next_offset.get(frame.topic)
            if expected is not None and frame.first_offset > expected:
                self.gaps += frame.first_offset - expected
            self._next_offset[frame.topic] = frame.next_offset
            self.frames += 1
            self.records += len(frame.records)
            return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame.records

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def subscribe(address: str, topic: str | None, **kwargs) -> Subscription:
    """Subscribe to ``topic`` (``None``: all topics) at ``address``; iterate to get batches.

    Keyword arguments: ``pattern`` (``pub``/``push``), ``timeout_secs`` (stop iterating after
    that long without a frame; default: wait forever), ``transport`` (default ``pynng``).
    """
    return Subscription(address, topic, **kwargs)
