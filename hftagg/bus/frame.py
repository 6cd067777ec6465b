"""The wire frame: a fixed 128-byte header followed by raw record bytes. No pickle, ever.

Layout (little-endian)::

    offset size field
    0      3    magic b"HFG"
    3      1    frame format version (2; version 1 frames are still read)
    4      48   topic, UTF-8, NUL-padded (so a pub/sub prefix of magic+topic+NUL selects a topic)
    52     4    schema_id   (fingerprint of schema name, version and field layout)
    56     4    record_size (bytes per record; checked against the schema)
    60     4    record_count
    64     8    first_offset (stream offset of the first record in its topic; gaps are detectable)
    72     8    ts_send (UNIX ns when the frame was built)
    80     16   trace_id    (W3C trace context; zero when not traced)
    96     8    span_id
    104    1    trace_flags
    105    7    reserved (zero)
    112    8    session_id  (version 2: random per publisher start, never 0; version 1: 0)
    120    8    reserved (zero)
    128    ...  record_count * record_size bytes of records

``session_id`` tells a subscriber that offsets started over (the publisher restarted), so a
restart is not mistaken for lost or duplicated records. Version 1 had zeros there, so one
layout reads both versions.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hftagg.errors import FrameError, SchemaError
from hftagg.records.schema import Schema, SchemaRegistry

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_TOPIC_BYTES",
    "Frame",
    "FrameEncoder",
    "decode_frame",
    "new_session_id",
    "topic_prefix",
    "topic_prefixes",
]

MAGIC = b"HFG"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_SIZE = 128
MAX_TOPIC_BYTES = 47  # one NUL always follows the topic
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
_HEADER = struct.Struct("<3sB48sIIIQQ16sQB7xQ8x")
assert _HEADER.size == HEADER_SIZE


def _topic_bytes(topic: str) -> bytes:
    raw = topic.encode()
    if not raw or len(raw) > MAX_TOPIC_BYTES:
        raise FrameError(
            f"topic {topic!r} is {len(raw)} bytes; a topic must be 1..{MAX_TOPIC_BYTES} bytes"
        )
    return raw


def topic_prefix(topic: str | None, version: int = VERSION) -> bytes:
    """The byte prefix that selects exactly ``topic`` (or every topic when ``None``)."""
    if topic is None:
        return MAGIC + bytes([version])
    return MAGIC + bytes([version]) + _topic_bytes(topic) + b"\0"


def topic_prefixes(topic: str | None) -> list[bytes]:
    """One prefix per readable frame version: subscribe to all, to hear older publishers."""
    return [topic_prefix(topic, version) for version in READABLE_VERSIONS]


def new_session_id() -> int:
    """A random non-zero 64-bit id for one publisher run."""
    return secrets.randbits(64) or 1


@dataclass(frozen=True)
class Frame:
    """A decoded frame. ``records`` is a read-only view on the received bytes (no copy)."""

    topic: str
    schema: Schema
    records: np.ndarray
    first_offset: int
    ts_send: int
    trace_id: bytes
    span_id: int
    trace_flags: int
    session_id: int = 0
    version: int = VERSION

    @property
    def next_offset(self) -> int:
        return self.first_offset + len(self.records)

    def span_context(self):
        """The sender's span as a remote OpenTelemetry SpanContext, or None when not traced.

        Continue the trace with ``trace.set_span_in_context(trace.NonRecordingSpan(ctx))``.
        """
        if not self.span_id or not any(self.trace_id):
            return None
        from opentelemetry.trace import SpanContext, TraceFlags

        return SpanContext(
            int.from_bytes(self.trace_id, "big"),
            self.span_id,
            is_remote=True,
            trace_flags=TraceFlags(self.trace_flags),
        )


class FrameEncoder:
    """Encodes batches of one topic and schema into frames no larger than ``max_frame_bytes``."""

    def __init__(
        self,
        topic: str,
        schema: Schema,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        session_id: int | None = None,
    ):
        self.topic = topic
        self.session_id = new_session_id() if session_id is None else session_id
        self.schema = schema
        self._topic = _topic_bytes(topic)
        self.max_records = (max_frame_bytes - HEADER_SIZE) // schema.itemsize
        if self.max_records < 1:
            raise FrameError(
                f"max_frame_bytes={max_frame_bytes} cannot hold one {schema.key} record "
                f"({HEADER_SIZE + schema.itemsize} bytes needed); raise max_frame_bytes"
            )

    def encode(
        self,
        batch: np.ndarray,
        first_offset: int,
        trace: tuple[bytes, int, int] = (b"", 0, 0),
    ) -> Iterator[bytes]:
        """Frames for ``batch`` (split at the size limit); one memcpy of the records per frame."""
        if batch.dtype != self.schema.dtype:
            raise FrameError(
                f"topic {self.topic!r}: batch dtype {batch.dtype} is not schema {self.schema.key}"
            )
        raw = np.ascontiguousarray(batch).view(np.uint8)
        size = self.schema.itemsize
        trace_id, span_id, flags = trace
        now = time.time_ns()
        for start in range(0, len(batch), self.max_records):
            count = min(self.max_records, len(batch) - start)
            header = _HEADER.pack(
                MAGIC, VERSION, self._topic, self.schema.schema_id, size, count,
                first_offset + start, now, trace_id, span_id, flags, self.session_id,
            )  # fmt: skip
            yield b"".join((header, raw[start * size : (start + count) * size].data))


def decode_frame(
    data: bytes, registry: SchemaRegistry, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Frame:
    """Decode and check one frame; ``FrameError`` says exactly what is wrong with it."""
    if len(data) > max_frame_bytes:
        raise FrameError(f"frame of {len(data)} bytes exceeds max_frame_bytes={max_frame_bytes}")
    if len(data) < HEADER_SIZE:
        raise FrameError(
            f"frame of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    (magic, version, topic, schema_id, size, count, first, ts_send, trace_id, span_id, flags,
     session) = _HEADER.unpack_from(data)  # fmt: skip
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r} (expected {MAGIC!r}): not an hftagg frame")
    if version not in READABLE_VERSIONS:
        raise FrameError(
            f"frame version {version} is not supported (this build reads {READABLE_VERSIONS})"
        )
    name = _decode_topic(topic)
    try:
        schema = registry.by_id(schema_id)
    except SchemaError as exc:
        raise FrameError(str(exc)) from exc
    if size != schema.itemsize:
        raise FrameError(
            f"record_size {size} does not match schema {schema.key} ({schema.itemsize} bytes)"
        )
    if len(data) != HEADER_SIZE + count * size:
        raise FrameError(
            f"frame carries {len(data) - HEADER_SIZE} record bytes but its header says "
            f"{count} x {size} = {count * size}: truncated or corrupt"
        )
    records = np.frombuffer(data, dtype=schema.dtype, count=count, offset=HEADER_SIZE)
    return Frame(name, schema, records, first, ts_send, trace_id, span_id, flags, session, version)


def _decode_topic(field: bytes) -> str:
    raw, _, rest = field.partition(b"\0")
    if not raw or any(rest):
        raise FrameError(f"topic field {field.rstrip(bytes(1))!r} is not one NUL-padded name")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise FrameError(f"topic field {raw!r} is not UTF-8 ({exc.reason})") from exc
