"""The write-ahead log: segment files of CRC32C-checked frames, one frame per source batch.

A log is a folder of segment files ``00000000.wal``, ``00000001.wal``, ... appended in order.
Every number is little-endian.

Segment header (32 bytes)::

    0   8s  magic b"HFTGWAL\\0"
    8   u16 format version (1)
    10  u16 header size (32)
    12  u32 segment index (its file name)
    16  i64 created, UNIX ns
    24  u32 CRC32C of bytes 0..24
    28  u32 zero

Frame (40-byte header, then ``length`` payload bytes)::

    0   u32 magic 0x46574748 (b"HGWF")
    4   u32 length: payload bytes
    8   u32 CRC32C of header bytes 12..40 followed by the payload
    12  u8  kind: 0 records, 1 stream declaration, 2 source position
    13  u8  zero
    14  u16 stream id (small integer, per log)
    16  u32 schema id (:attr:`hftagg.records.schema.Schema.schema_id`)
    20  u64 first offset: the stream offset of the first record
    28  u32 count: records in the payload
    32  u32 record size in bytes
    36  u32 zero

A records frame's payload is ``count`` raw records (``count * record size`` bytes), exactly as
the batch held them. A declaration frame's payload is UTF-8 JSON ``{"topic", "schema",
"descr", "next_offset"}``: it binds a stream id to a topic and dtype. Every segment declares,
before its first records, every stream the log knows (with its next offset then), so each
segment reads on its own and the newest one always knows where every stream stands, even when
older segments were deleted.

A source position frame (a source that can resume says where it stands after a batch: a file
and record index, a FIX MsgSeqNum) comes *before* that batch's records frames, in the same
write; its payload is UTF-8 JSON ``{"source", "position"}`` and its ``count`` is the number of
records frames that follow it. The group counts only when all of them are intact: a torn group
is cut whole, from its position frame, so a position never runs ahead of (or behind) the
records it describes.

Writing: one ``os.writev`` per batch (header and record bytes, no copy), CRC32C computed over
the batch bytes with the hardware instruction. ``fsync``: ``none`` (the OS writes back: safe
against a process crash, ``kill -9`` included, not a power loss), ``interval_ms`` (a
background thread calls ``fdatasync`` every ``interval_ms`` when something was written; a power
loss may lose that much), ``every_batch`` (``fdatasync`` before :meth:`WriteAheadLog.append`
returns).

Opening checks every frame (magic, length, CRC). At the first bad or incomplete frame the log is
cut there: the segment is truncated to its last good frame and later segments are renamed
``*.wal.cut`` (kept for inspection, never read again), and a warning names the file, the byte
offset, why, and how many bytes and segments were cut. Nothing is dropped silently:
:attr:`WriteAheadLog.recovery` holds what was cut.

Reading is sequential: :meth:`WriteAheadLog.read` maps the segments (``mmap``) and yields
``numpy.frombuffer`` views of each frame's records, no copy.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import numpy as np

from hftagg.errors import StorageError

__all__ = [
    "FSYNC_POLICIES",
    "Cut",
    "Recovery",
    "StreamInfo",
    "WriteAheadLog",
]

log = logging.getLogger("hftagg.wal")

FSYNC_POLICIES = ("none", "interval_ms", "every_batch")

SEGMENT_MAGIC = b"HFTGWAL\0"
FORMAT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sHHIqII")  # magic, version, size, index, created, crc, zero
FRAME_MAGIC = 0x46574748
FRAME_HEADER = struct.Struct("<IIIBBHIQIII")
KIND_RECORDS = 0
KIND_DECLARE = 1
KIND_POSITION = 2
SUFFIX = ".wal"
CUT_SUFFIX = ".wal.cut"
_MAX_FRAME = 1 << 31  # a length beyond this is garbage, not a frame


@dataclass
class StreamInfo:
    """One stream (a topic) in the log: its id, dtype and where its offsets stand."""

    topic: str
    stream_id: int
    schema_key: str
    schema_id: int
    dtype: np.dtype
    next_offset: int = 0  # the offset the next record appended gets
    last: np.ndarray | None = None  # the last record logged (a 1-record array), if known


@dataclass
class Cut:
    """What opening the log cut off: the file, where, why, how much."""

    file: str
    position: int
    reason: str
    bytes_cut: int
    segments_cut: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        more = (
            f"; later segments set aside: {', '.join(self.segments_cut)}"
            if self.segments_cut
            else ""
        )
        return (
            f"write-ahead log {self.file}: {self.reason} at byte {self.position}; "
            f"cut {self.bytes_cut} bytes from there{more}"
        )


@dataclass
class Recovery:
    """What opening found: segments, frames and records read, and any cut."""

    segments: int = 0
    frames: int = 0
    records: int = 0
    cut: Cut | None = None


@dataclass
class _Segment:
    index: int
    path: Path
    size: int = 0
    #: per stream id: the end offset of its last records frame here (what deletion looks at)
    ends: dict[int, int] = field(default_factory=dict)
    #: records frames only, 4 int64 each: position of the frame header, stream id, first
    #: offset, count (a flat array: 32 bytes a frame, not a Python tuple each)
    frames: array = field(default_factory=lambda: array("q"))
    #: per stream id: the first offset of its first records frame here
    starts: dict[int, int] = field(default_factory=dict)

    def add(self, position: int, stream: int, first: int, count: int) -> None:
        self.frames.extend((position, stream, first, count))
        self.starts.setdefault(stream, first)
        self.ends[stream] = first + count

    def table(self) -> np.ndarray:
        """The frames as an (n, 4) int64 array (a copy)."""
        return np.frombuffer(self.frames, np.int64).reshape(-1, 4).copy()


def _segment_header(index: int) -> bytes:
    head = struct.pack("<8sHHIq", SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER.size, index,
                       time.time_ns())  # fmt: skip
    return head + struct.pack("<II", crc32c.crc32c(head), 0)


def _frame_header(kind: int, stream: int, schema_id: int, first: int, count: int,
                  itemsize: int, payload) -> bytes:  # fmt: skip
    tail = FRAME_HEADER.pack(0, 0, 0, kind, 0, stream, schema_id, first, count, itemsize, 0)[12:]
    crc = crc32c.crc32c(payload, crc32c.crc32c(tail))
    return struct.pack("<III", FRAME_MAGIC, len(payload), crc) + tail


class WriteAheadLog:
    """A write-ahead log in folder ``path``. Open it (:meth:`open`) before use.

    ``segment_bytes``: a segment rolls over to the next file once it holds this much.
    Thread-safe: several sources may append from their own threads (one lock, held for one
    ``writev``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fsync: str = "interval_ms",
        interval_ms: float = 10.0,
        segment_bytes: int = 64 << 20,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise StorageError(
                f"write-ahead log {path}: fsync = {fsync!r}; use one of {', '.join(FSYNC_POLICIES)}"
            )
        self.path = Path(path)
        self.fsync = fsync
        self.interval_ms = interval_ms
        self.segment_bytes = segment_bytes
        self.streams: dict[str, StreamInfo] = {}
        self._by_id: dict[int, StreamInfo] = {}
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._dirty = False
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        self.recovery = Recovery()
        #: source name -> the position it logged with its last intact batch
        self.positions: dict[str, object] = {}
        self._group: dict | None = None  # a position group being scanned
        self.appended_batches = 0
        self.appended_bytes = 0
        self.syncs = 0
        self.deleted_segments = 0

    # -- opening and recovery -----------------------------------------------------------------

    def open(self) -> Recovery:
        """Read every segment, cut a bad tail, and get ready to append. Returns what it found."""
        self.path.mkdir(parents=True, exist_ok=True)
        paths = sorted(self.path.glob(f"*{SUFFIX}"))
        for i, path in enumerate(paths):
            segment = _Segment(int(path.stem), path)
            self._segments.append(segment)
            cut = self._scan(segment)
            if cut is not None:
                for later in paths[i + 1 :]:
                    aside = later.with_suffix(CUT_SUFFIX)
                    later.rename(aside)
                    cut.segments_cut.append(aside.name)
                self.recovery.cut = cut
                log.warning("%s", cut)
                break
        self.recovery.segments = len(self._segments)
        self._start_segment()
        if self.fsync == "interval_ms":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="hftagg-wal-fsync", daemon=True
            )
            self._flusher.start()
        return self.recovery

    def _scan(self, segment: _Segment) -> Cut | None:
        """Check one segment frame by frame; truncate it at the first bad frame."""
        with open(segment.path, "rb") as f:
            data = f.read()
        segment.size = len(data)
        reason = _bad_segment_header(data, segment.index)
        position = 0 if reason else SEGMENT_HEADER.size
        self._group = None
        while reason is None and position < len(data):
            reason, length = self._scan_frame(segment, data, position)
            if reason is None:
                position += FRAME_HEADER.size + length
        group, self._group = self._group, None
        if group is not None:  # a batch whose frames are not all there: cut it whole
            reason = reason or f"a batch group missing {group['left']} of its records frames"
            position = group["start"]
        if reason is None:
            return None
        with open(segment.path, "r+b") as f:
            f.truncate(position)
            os.fsync(f.fileno())
        cut = Cut(str(segment.path), position, reason, len(data) - position)
        segment.size = position
        if position == 0:  # nothing usable: the header itself was bad
            segment.path.unlink()
            self._segments.remove(segment)
        return cut

    def _scan_frame(self, segment: _Segment, data: bytes, pos: int) -> tuple[str | None, int]:
        if len(data) - pos < FRAME_HEADER.size:
            return f"an incomplete frame header ({len(data) - pos} of {FRAME_HEADER.size} bytes)", 0
        magic, length, crc, kind, _, stream, schema_id, first, count, itemsize, _ = (
            FRAME_HEADER.unpack_from(data, pos)
        )
        if magic != FRAME_MAGIC:
            return f"no frame magic (found 0x{magic:08x})", 0
        end = pos + FRAME_HEADER.size + length
        if length >= _MAX_FRAME or end > len(data):
            return (
                f"a torn frame ({length} payload bytes announced, {len(data) - pos - 40} there)",
                0,
            )
        body = memoryview(data)[pos + 12 : end]
        if crc32c.crc32c(body) != crc:
            return "a CRC32C mismatch (flipped bytes)", 0
        payload = body[FRAME_HEADER.size - 12 :]
        if kind == KIND_DECLARE:
            return self._declared(payload, stream, schema_id), length
        if kind == KIND_POSITION:
            return self._position_frame(payload, pos, count), length
        info = self._by_id.get(stream)
        if kind != KIND_RECORDS or info is None or count * itemsize != length:
            return f"a frame of unknown kind {kind} or undeclared stream {stream}", 0
        if itemsize != info.dtype.itemsize or first < info.next_offset:
            return f"a frame out of order (stream {info.topic}, offset {first})", 0
        group = self._group
        if group is None:
            self._apply(segment, info, pos, first, count, payload)
            return None, length
        group["frames"].append((info, pos, first, count, payload))
        group["left"] -= 1
        if not group["left"]:
            self._close_group(segment)
        return None, length

    def _apply(self, segment: _Segment, info: StreamInfo, pos: int, first: int, count: int,
               payload) -> None:  # fmt: skip
        """A scanned records frame counts: the stream's offsets move on."""
        info.next_offset = first + count
        if count:
            itemsize = info.dtype.itemsize
            info.last = np.frombuffer(payload, info.dtype, 1, (count - 1) * itemsize).copy()
        segment.add(pos, info.stream_id, first, count)
        self.recovery.frames += 1
        self.recovery.records += count

    def _position_frame(self, payload, pos: int, frames: int) -> str | None:
        if self._group is not None:
            return "a source position inside another batch's group"
        try:
            entry = json.loads(bytes(payload))
            source, value = entry["source"], entry["position"]
        except (ValueError, KeyError, TypeError) as exc:
            return f"an unreadable source position ({exc})"
        self._group = {"start": pos, "left": frames, "source": source, "value": value,
                       "frames": []}  # fmt: skip
        if not frames:
            self._close_group(None)
        return None

    def _close_group(self, segment: _Segment | None) -> None:
        group, self._group = self._group, None
        for info, pos, first, count, payload in group["frames"]:
            self._apply(segment, info, pos, first, count, payload)
        self.positions[group["source"]] = group["value"]

    def _declared(self, payload, stream: int, schema_id: int) -> str | None:
        try:
            decl = json.loads(bytes(payload))
            dtype = _dtype_of(decl["descr"])
        except (ValueError, KeyError, TypeError) as exc:
            return f"an unreadable stream declaration ({exc})"
        info = self._by_id.get(stream)
        if info is None:
            info = StreamInfo(decl["topic"], stream, decl["schema"], schema_id, dtype)
            self._by_id[stream] = info
            self.streams[info.topic] = info
        elif info.topic != decl["topic"] or info.schema_id != schema_id:
            return f"stream {stream} declared again as {decl['topic']!r}, not {info.topic!r}"
        info.next_offset = max(info.next_offset, int(decl["next_offset"]))
        return None

    # -- appending ------------------------------------------------------------------------------

    def stream(self, topic: str, schema) -> StreamInfo:
        """The stream of ``topic`` (``schema``: a :class:`~hftagg.records.schema.Schema`),
        declared now if new. A topic the log holds with another schema is an error."""
        info = self.streams.get(topic)
        if info is not None:
            if info.schema_id != schema.schema_id:
                raise StorageError(
                    f"write-ahead log {self.path}: topic {topic!r} is logged with schema "
                    f"{info.schema_key} but the pipeline now gives it {schema.key}; move the log "
                    f"folder aside (or let the sinks catch up first) before changing its schema"
                )
            info.dtype = schema.dtype  # the registry's (the declaration's is a plain copy)
            return info
        with self._lock:
            stream_id = max(self._by_id, default=-1) + 1
            info = StreamInfo(topic, stream_id, schema.key, schema.schema_id, schema.dtype)
            self._by_id[stream_id] = info
            self.streams[topic] = info
            self._write([self._declaration(info)])
        return info

    def _declaration(self, info: StreamInfo) -> bytes:
        descr = info.dtype.descr if info.dtype.names else []
        payload = json.dumps(
            {"topic": info.topic, "schema": info.schema_key, "descr": descr,
             "next_offset": info.next_offset}
        ).encode()  # fmt: skip
        return _frame_header(KIND_DECLARE, info.stream_id, info.schema_id, 0, 0, 0, payload) + (
            payload
        )

    def append(self, info: StreamInfo, batch: np.ndarray, first_offset: int | None = None) -> int:
        """Append one batch to ``info``'s stream; returns its first offset.

        ``first_offset`` (default: the stream's next) may skip ahead, never go back: a stream
        continues past offsets a sink already holds when the log lost its tail."""
        return self.append_many([(info, batch, first_offset)])[0]

    def append_many(
        self,
        items: list[tuple[StreamInfo, np.ndarray, int | None]],
        position: tuple[str, object] | None = None,
    ) -> list[int]:
        """Append several batches (one per stream, e.g. one source's ports) with one write.

        ``position``: ``(source name, JSON-able value)``, where that source stands after these
        batches; logged in front of them as one group (see the module docstring)."""
        buffers: list = []
        firsts = []
        with self._lock:
            if position is not None:
                payload = json.dumps({"source": position[0], "position": position[1]}).encode()
                head = _frame_header(KIND_POSITION, 0, 0, 0, len(items), 0, payload)
                buffers.append(head + payload)
            for info, batch, first in items:
                first = info.next_offset if first is None else first
                if first < info.next_offset:
                    raise StorageError(
                        f"write-ahead log {self.path}: stream {info.topic!r} is at offset "
                        f"{info.next_offset}; an append at {first} would go back"
                    )
                count = len(batch)
                payload = memoryview(np.ascontiguousarray(batch)).cast("B")
                buffers.append(
                    _frame_header(
                        KIND_RECORDS,
                        info.stream_id,
                        info.schema_id,
                        first,
                        count,
                        info.dtype.itemsize,
                        payload,
                    )  # fmt: skip
                )
                buffers.append(payload)
                firsts.append(first)
            at = self._write(buffers)
            if position is not None:
                at += len(buffers[0])
                self.positions[position[0]] = position[1]
            for (info, batch, _), first in zip(items, firsts, strict=True):
                count = len(batch)
                info.next_offset = first + count
                segment = self._segments[-1]
                segment.add(at, info.stream_id, first, count)
                at += FRAME_HEADER.size + count * info.dtype.itemsize
                if count:
                    info.last = batch[-1:]
            self.appended_batches += len(items)
        if self.fsync == "every_batch":
            self.sync()
        return firsts

    def _write(self, buffers: list) -> int:
        """Write ``buffers`` at the end of the active segment (lock held); returns where."""
        segment = self._segments[-1]
        size = sum(len(b) for b in buffers)
        if segment.frames and segment.size + size > self.segment_bytes:
            self._roll()
            segment = self._segments[-1]
        position = segment.size
        written = os.writev(self._fd, buffers)
        while written < size:  # a short write (rare): write the rest
            rest = b"".join(bytes(b) for b in buffers)[written:]
            written += os.write(self._fd, rest)
        segment.size += size
        self.appended_bytes += size
        self._dirty = True
        return position

    def _start_segment(self) -> None:
        """Open a new segment after the last one, declaring every known stream."""
        index = self._segments[-1].index + 1 if self._segments else 0
        path = self.path / f"{index:08d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, _segment_header(index))
        with self._sync_lock:
            self._fd = fd
        self._segments.append(_Segment(index, path, SEGMENT_HEADER.size))
        if self.fsync != "none":
            _fsync_dir(self.path)
        declarations = [self._declaration(info) for info in self._by_id.values()]
        if declarations:
            self._write(declarations)

    def _roll(self) -> None:
        """Seal the active segment and start the next (lock held)."""
        old = self._fd
        with self._sync_lock:
            if self.fsync != "none":
                os.fdatasync(old)
            os.close(old)
            self._fd = None  # (sync() skips until the next segment's descriptor is set)
        self._start_segment()

    # -- durability -----------------------------------------------------------------------------

    def sync(self) -> None:
        """Make everything appended so far durable (``fdatasync``)."""
        with self._sync_lock:
            fd = self._fd
            if fd is None or not self._dirty:
                return
            self._dirty = False
            os.fdatasync(fd)
            self.syncs += 1

    def _flush_loop(self) -> None:
        interval = self.interval_ms / 1000.0
        while not self._closing.wait(interval):
            try:
                self.sync()
            except OSError:
                log.exception("write-ahead log %s: fdatasync failed; retrying", self.path)

    def close(self) -> None:
        """Sync and close (appending after this is an error)."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            if self._fd is None:
                return
            if self.fsync != "none":
                self._dirty = True
                self.sync()
            with self._sync_lock:
                os.close(self._fd)
                self._fd = None

    # -- reading and deletion ----------------------------------------------------------------

    def read(
        self, topic: str, start: int = 0, end: int | None = None, max_records: int = 1 << 16
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first offset, records)`` of ``topic`` from offset ``start`` up to ``end``
        (default: everything appended when called), in order, in pieces of at most
        ``max_records``: read-only views into the mapped segment files."""
        info = self.streams.get(topic)
        if info is None:
            return
        end = info.next_offset if end is None else end
        with self._lock:
            segments = [(s.path, s.size, s.table()) for s in self._segments]
        for path, size, frames in segments:
            first, count = frames[:, 2], frames[:, 3]
            wanted = frames[
                (frames[:, 1] == info.stream_id) & (first + count > start) & (first < end)
            ]
            if not len(wanted):
                continue
            yield from self._read_segment(
                path, size, wanted.tolist(), info, start, end, max_records
            )

    @staticmethod
    def _read_segment(path, size, frames, info, start, end, max_records):
        """The views keep the mapping alive: it closes when the last one is gone."""
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        for position, _, first, count in frames:
            records = np.frombuffer(mm, info.dtype, count, position + FRAME_HEADER.size)
            lo, hi = max(start - first, 0), min(end - first, count)
            for at in range(lo, hi, max_records):
                yield first + at, records[at : min(at + max_records, hi)]

    def release(self, needed: dict[str, int]) -> int:
        """Delete sealed segments whose every records frame is below ``needed[topic]`` (the
        lowest offset any sink still needs; a topic not in ``needed`` is needed by no one).
        Returns how many were deleted. The active segment is never deleted."""
        deleted = 0
        with self._lock:
            while len(self._segments) > 1:
                segment = self._segments[0]
                for stream, end in segment.ends.items():
                    floor = needed.get(self._by_id[stream].topic)
                    if floor is not None and end > floor:
                        return deleted
                segment.path.unlink(missing_ok=True)
                self._segments.pop(0)
                deleted += 1
                self.deleted_segments += 1
        return deleted

    def first_offset(self, topic: str) -> int:
        """The oldest offset of ``topic`` the log still holds (its next offset when none)."""
        info = self.streams.get(topic)
        if info is None:
            return 0
        with self._lock:
            for segment in self._segments:
                if info.stream_id in segment.starts:
                    return segment.starts[info.stream_id]
        return info.next_offset

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def __repr__(self) -> str:
        return (
            f"WriteAheadLog({str(self.path)!r}, fsync={self.fsync!r}, streams={list(self.streams)})"
        )


def _bad_segment_header(data: bytes, index: int) -> str | None:
    if len(data) < SEGMENT_HEADER.size:
        return f"an incomplete segment header ({len(data)} of {SEGMENT_HEADER.size} bytes)"
    magic, version, size, found, _, crc, _ = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return f"no segment magic (found {magic!r})"
    if crc32c.crc32c(data[:24]) != crc:
        return "a segment header CRC32C mismatch"
    if version != FORMAT_VERSION or size != SEGMENT_HEADER.size:
        return f"format version {version} (this hftagg reads {FORMAT_VERSION}); upgrade hftagg"
    if found != index:
        return f"segment index {found} in a file named {index:08d}{SUFFIX}"
    return None


def _dtype_of(descr: list) -> np.dtype:
    """A dtype from its JSON ``descr`` (lists back to tuples, padding kept)."""

    def tuples(field: list) -> tuple:
        return tuple(tuples(x) if isinstance(x, list) and x and isinstance(x[0], list) else
                     tuple(x) if isinstance(x, list) else x for x in field)  # fmt: skip

    return np.dtype([tuples(f) for f in descr]) if descr else np.dtype(np.uint8)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
