"""Subscribe to a running pipeline from another process::

    from hftagg.client import subscribe

    with subscribe("tcp://127.0.0.1:5555", "ind.ema") as sub:
        for batch in sub:            # numpy record batches (read-only views on the frames)
            print(batch["value"][-1])

The subscription checks every frame and keeps counts, so "nothing lost" is something you can
verify (per topic, from the stream offsets and the publisher's session id in each frame):

- ``gaps``: records missing between frames (a ``pub`` subscriber that could not keep up);
- ``duplicates``: records received again (overlapping offsets from the same publisher run);
- ``restarts``: the publisher started a new run (offsets start over; neither a gap nor a
  duplicate). Frames from publishers older than frame version 2 carry no session id, so for
  them a restart shows as duplicates.
- ``bad_frames``: frames that could not be decoded (``bad_reasons`` says why, by kind), and
  frames whose offset jumps further than the publisher could have sent since its previous
  frame (at most one record per nanosecond of ``ts_send``): a forged or corrupt offset is
  skipped instead of poisoning ``gaps``.
- ``dropped_connections``: a frame larger than ``max_frame_bytes`` is refused by the
  transport before it is read (no memory spent on it): nng drops the connection and redials.
  nng counts that together with a publisher going away, so it is reported here, not in
  ``bad_frames``; the records it carried show up in ``gaps``.
- ``other_topics``: frames of topics other than the one asked for (a ``push`` puller receives
  every topic the publisher sends), skipped.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from hftagg.bus.frame import DEFAULT_MAX_FRAME_BYTES, Frame, decode_frame
from hftagg.errors import FrameError
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.records.schema import SchemaRegistry

__all__ = ["Subscription", "subscribe"]

#: a gap is plausible up to one record per nanosecond between two frames' ts_send, plus this
PLAUSIBLE_GAP_SLACK = 1 << 20


@dataclass
class _Stream:
    session_id: int
    next_offset: int
    ts_send: int


def _reason(exc: FrameError) -> str:
    """A short kind for a frame error, for ``bad_reasons``."""
    text = str(exc)
    for key, kind in (
        ("shorter than", "truncated"),
        ("truncated or corrupt", "truncated"),
        ("exceeds max_frame_bytes", "oversized"),
        ("bad magic", "not_a_frame"),
        ("frame version", "version"),
        ("topic field", "topic"),
        ("record_size", "record_size"),
        ("schema", "schema"),
    ):
        if key in text:
            return kind
    return "other"


class Subscription:
    """An open subscription: iterate for batches, or call ``next_frame`` for headers too."""

    def __init__(
        self,
        address: str,
        topic: str | Sequence[str] | None,
        *,
        transport: str = "pynng",
        pattern: str = "pub",
        timeout_secs: float | None = None,
        schemas: SchemaRegistry | None = None,
        host: PluginHost | None = None,
        buffer_frames: int = 8192,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        host = host or load_plugins([], entry_points=True)
        self.schemas = schemas or host.schemas
        topics = [topic] if isinstance(topic, str) else list(topic or [])
        self.topic = topic if isinstance(topic, str) or topic is None else topics
        self.topics = frozenset(topics) or None  # None: every topic
        self.address = address
        self.timeout_secs = timeout_secs
        self.max_frame_bytes = max_frame_bytes
        factory = host.transports[transport].subscriber
        topics = topics or None
        try:
            self._socket = factory(
                address,
                topics,
                pattern=pattern,
                buffer_frames=buffer_frames,
                max_frame_bytes=max_frame_bytes,
            )
        except TypeError:  # a transport without a receive limit: frames are checked after
            self._socket = factory(address, topics, pattern=pattern, buffer_frames=buffer_frames)
        self.frames = 0
        self.records = 0
        self.gaps = 0  # records missing between consecutive frames of a topic
        self.duplicates = 0  # records received again within one publisher run
        self.restarts = 0  # the publisher of a topic started a new run
        self.other_topics = 0
        self.bad_reasons: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._streams: dict[str, _Stream] = {}

    @property
    def dropped_connections(self) -> int:
        """Connections lost: a frame over ``max_frame_bytes`` (refused unread) or a publisher
        that went away (the transport redials)."""
        counter = getattr(self._socket, "dropped_connections", None)
        return counter() if counter is not None else 0

    @property
    def bad_frames(self) -> int:
        return sum(self.bad_reasons.values())

    def _bad(self, kind: str, message: str) -> None:
        self.bad_reasons[kind] += 1
        self.last_error = message

    def next_frame(self, timeout_secs: float | None = None) -> Frame | None:
        """The next valid frame, or ``None`` on timeout. Bad frames are counted and skipped."""
        while True:
            data = self._socket.recv(
                timeout_secs if timeout_secs is not None else self.timeout_secs
            )
            if data is None:
                return None
            try:
                frame = decode_frame(data, self.schemas, self.max_frame_bytes)
            except FrameError as exc:
                self._bad(_reason(exc), str(exc))
                continue
            if self.topics is not None and frame.topic not in self.topics:
                self.other_topics += 1
                continue
            if self._track(frame):
                self.frames += 1
                self.records += len(frame.records)
                return frame

    def _track(self, frame: Frame) -> bool:
        """Update gaps, duplicates and restarts; False if the frame's offset is implausible."""
        stream = self._streams.get(frame.topic)
        count = len(frame.records)
        if stream is None or stream.session_id != frame.session_id:
            if stream is not None:
                self.restarts += 1
            self._streams[frame.topic] = _Stream(
                frame.session_id, frame.first_offset + count, frame.ts_send
            )
            return True
        expected = stream.next_offset
        first = frame.first_offset
        if first > expected:
            jump = first - expected
            if jump > max(0, frame.ts_send - stream.ts_send) + PLAUSIBLE_GAP_SLACK:
                self._bad(
                    "offset",
                    f"topic {frame.topic!r}: frame offset {first} jumps {jump} records past "
                    f"the expected {expected}, more than the publisher could have sent",
                )
                return False
            self.gaps += jump
        elif first < expected:
            self.duplicates += min(expected, first + count) - first
        stream.next_offset = max(expected, first + count)
        stream.ts_send = max(stream.ts_send, frame.ts_send)
        return True

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


def subscribe(address: str, topic: str | Sequence[str] | None, **kwargs) -> Subscription:
    """Subscribe to ``topic`` (a list: several; ``None``: all) at ``address``; iterate to get
    batches (``next_frame`` also says which topic a batch is from).

    Keyword arguments: ``pattern`` (``pub``/``push``), ``timeout_secs`` (stop iterating after
    that long without a frame; default: wait forever), ``transport`` (default ``pynng``),
    ``max_frame_bytes`` (the receive limit, default 4 MiB: match the publisher's).
    """
    return Subscription(address, topic, **kwargs)
