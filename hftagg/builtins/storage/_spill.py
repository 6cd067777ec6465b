"""The local spill of an external sink: batches its backend could not take yet, on disk, in order.

An external sink (PostgreSQL, MongoDB) keeps what it has not sent in memory up to a budget; past
it, batches go here instead of blocking ingest or being dropped, and the writer sends them from
here once the backend is back, in the order they arrived. Nothing here is fsynced: the spill
rides out an outage, the write-ahead log (``[durability]``) is what survives a crash.

Layout: ``<folder>/<number:012d>.spill`` segment files of frames, read in number order; a
segment is closed at ``segment_bytes`` and deleted once every frame in it has been sent, so disk
is given back while the backlog drains. A frame is the raw record bytes of one batch behind a
fixed little-endian header::

    magic "HSPL"  u16 version  u16 port name length  u32 record count  u32 record size
    i64 first stream offset  u32 CRC32C of the payload  u32 CRC32C of the header so far
    port name (UTF-8)  payload (count * record size bytes)

Frames left by a previous run (stopped while its backend was down) are found at open and read
first. Damage is reported with the file and byte offset, and counted in ``lost_records``: a bad
header or a torn tail ends that file's readable part at open; a payload whose CRC does not
match when read is skipped alone (its header, checked by its own CRC, still frames the rest).
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np

__all__ = ["Spill", "SpillFrame"]

log = logging.getLogger("hftagg.storage.spill")

MAGIC = b"HSPL"
VERSION = 1
_HEAD = struct.Struct("<4sHHIIqI")  # magic, version, name length, count, record size, offset, crc
_HEAD_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _HEAD_CRC.size
FIRST_SEGMENT = 10**9  # numbers below it are left for prepend()


@dataclass(frozen=True)
class _Entry:
    """Where one unread frame is, and what it holds."""

    seg: int
    pos: int
    nbytes: int  # the whole frame, header included
    port: str
    offset: int
    count: int


@dataclass
class SpillFrame:
    """One batch read back: its port, first stream offset, and records."""

    port: str
    offset: int
    records: np.ndarray
    entry: _Entry


class Spill:
    """Frames appended by the sink's thread and read back, in order, by the writer thread.

    Not thread-safe on its own: the external sink calls it under its lock."""

    def __init__(self, folder: Path, dtypes: dict[str, np.dtype], segment_bytes: int = 64 << 20):
        self.folder = Path(folder)
        self.dtypes = dtypes
        self.segment_bytes = segment_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lost_records = 0  # damaged frames, reported in the log with file and offset
        self.records = 0  # records appended, not yet consumed
        self.bytes = 0  # bytes of frames not yet consumed
        self._index: deque[_Entry] = deque()  # unread frames, in order
        self._segments: list[int] = []
        self._fds: dict[int, int] = {}  # open read handles
        self._write_fd: int | None = None
        self._write_seg = -1
        self._write_pos = 0
        for seg in sorted(int(p.stem) for p in self.folder.glob("*.spill")):
            self._segments.append(seg)
            self._scan(seg)

    # -- writing -------------------------------------------------------------------------------

    def append(self, port: str, offset: int, batch: np.ndarray) -> int:
        """Append one batch at the end; returns the bytes written."""
        if self._write_fd is None or self._write_pos >= self.segment_bytes:
            self._roll()
        head, payload = self._frame(port, offset, batch)
        os.write(self._write_fd, head)
        os.write(self._write_fd, payload)
        n = len(head) + payload.nbytes
        self._add(_Entry(self._write_seg, self._write_pos, n, port, offset, len(batch)), batch)
        self._write_pos += n
        return n

    def prepend(self, batches: list[tuple[str, int, np.ndarray]]) -> None:
        """Put ``(port, offset, records)`` batches *before* everything spilled (what was still in
        memory at a stop is older than what is on disk), in a segment of their own."""
        if not batches:
            return
        seg = (self._segments[0] - 1) if self._segments else FIRST_SEGMENT - 1
        entries = []
        pos = 0
        with open(self._path(seg), "wb") as f:
            for port, offset, records in batches:
                head, payload = self._frame(port, offset, records)
                f.write(head)
                f.write(payload)
                n = len(head) + payload.nbytes
                entries.append((_Entry(seg, pos, n, port, offset, len(records)), records))
                pos += n
        self._segments.insert(0, seg)
        for entry, records in reversed(entries):
            self._index.appendleft(entry)
            self.records += len(records)
            self.bytes += entry.nbytes

    def _add(self, entry: _Entry, batch: np.ndarray) -> None:
        self._index.append(entry)
        self.records += entry.count
        self.bytes += entry.nbytes

    @staticmethod
    def _frame(port: str, offset: int, batch: np.ndarray) -> tuple[bytes, memoryview]:
        name = port.encode()
        payload = memoryview(np.ascontiguousarray(batch)).cast("B")
        head = _HEAD.pack(
            MAGIC, VERSION, len(name), len(batch), batch.dtype.itemsize, offset,
            crc32c.crc32c(payload),
        )  # fmt: skip
        return head + _HEAD_CRC.pack(crc32c.crc32c(head)) + name, payload

    def _roll(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
        self._write_seg = max(self._segments[-1] + 1 if self._segments else 0, FIRST_SEGMENT)
        self._segments.append(self._write_seg)
        path = self._path(self._write_seg)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_pos = 0

    # -- reading -------------------------------------------------------------------------------

    def first_offsets(self) -> dict[str, int]:
        """Per port, the first stream offset still unread (frames are in order)."""
        out: dict[str, int] = {}
        for entry in self._index:
            out.setdefault(entry.port, entry.offset)
        return out

    def peek(self, max_records: int) -> list[SpillFrame]:
        """The next frames in order, up to ``max_records`` records (at least one frame when
        any is there); nothing is consumed until ``consume``. Damaged ones are dropped here."""
        frames: list[SpillFrame] = []
        total = 0
        i = 0
        while i < len(self._index):
            entry = self._index[i]
            if frames and total + entry.count > max_records:
                break
            records = self._read(entry)
            if records is None:
                del self._index[i]
                self._drop(entry)
                continue
            frames.append(SpillFrame(entry.port, entry.offset, records, entry))
            total += entry.count
            i += 1
        return frames

    def consume(self, frames: list[SpillFrame]) -> None:
        """Mark ``frames`` (from ``peek``) sent; segments with nothing unread are deleted."""
        for frame in frames:
            entry = frame.entry
            if self._index and self._index[0] is entry:
                self._index.popleft()
            else:  # a prepend put older frames in front meanwhile
                self._index.remove(entry)
            self.records -= entry.count
            self.bytes -= entry.nbytes
        self._delete_read_segments()

    def _read(self, entry: _Entry) -> np.ndarray | None:
        fd = self._fds.get(entry.seg)
        if fd is None:
            fd = self._fds[entry.seg] = os.open(self._path(entry.seg), os.O_RDONLY)
        data = os.pread(fd, entry.nbytes, entry.pos)
        head_len = HEADER_BYTES + len(entry.port.encode())
        payload = data[head_len:]
        dtype = self.dtypes.get(entry.port)
        problem = None
        if len(data) < entry.nbytes:
            problem = "the file ends inside this frame"
        elif dtype is None:
            problem = f"port {entry.port!r} is not one of this sink's ({', '.join(self.dtypes)})"
        elif dtype.itemsize * entry.count != len(payload):
            problem = (
                f"record size {len(payload) // max(entry.count, 1)} B, expected {dtype.itemsize}"
            )
        elif crc32c.crc32c(payload) != _HEAD.unpack_from(data)[6]:
            problem = "payload checksum mismatch"
        if problem:
            log.error(
                "spill %s: %s in the frame at byte %d (%d records of %s from offset %d lost)",
                self._path(entry.seg), problem, entry.pos, entry.count, entry.port, entry.offset,
            )  # fmt: skip
            return None
        return np.frombuffer(payload, dtype=dtype)

    def _drop(self, entry: _Entry) -> None:
        self.lost_records += entry.count
        self.records -= entry.count
        self.bytes -= entry.nbytes

    def _scan(self, seg: int) -> None:
        """Index the frames of a segment left by an earlier run (headers checked by CRC)."""
        path = self._path(seg)
        size = path.stat().st_size
        pos = 0
        with open(path, "rb") as f:
            while pos < size:
                f.seek(pos)
                head = f.read(HEADER_BYTES)
                if len(head) < HEADER_BYTES:
                    break
                magic, _version, name_len, count, rsize, offset, _crc = _HEAD.unpack_from(head)
                (head_crc,) = _HEAD_CRC.unpack_from(head, _HEAD.size)
                if magic != MAGIC or head_crc != crc32c.crc32c(head[: _HEAD.size]):
                    break
                port = f.read(name_len).decode(errors="replace")
                nbytes = HEADER_BYTES + name_len + count * rsize
                if pos + nbytes > size:
                    break
                self._index.append(_Entry(seg, pos, nbytes, port, offset, count))
                self.records += count
                self.bytes += nbytes
                pos += nbytes
        if pos < size:
            log.error(
                "spill %s: unreadable from byte %d (a torn or damaged frame): %d bytes skipped",
                path, pos, size - pos,
            )  # fmt: skip

    def _delete_read_segments(self) -> None:
        first = self._index[0].seg if self._index else None
        for seg in list(self._segments):
            if seg == self._write_seg or (first is not None and seg >= first):
                continue
            self._forget(seg)
        if not self._index and self._write_fd is not None and self._write_pos:
            # drained: start the segment being written over instead of growing it
            os.ftruncate(self._write_fd, 0)
            self._write_pos = 0

    def _forget(self, seg: int) -> None:
        fd = self._fds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        self._path(seg).unlink(missing_ok=True)
        self._segments.remove(seg)

    def _path(self, seg: int) -> Path:
        return self.folder / f"{seg:012d}.spill"

    def close(self) -> None:
        """Close the files; delete them when nothing is left unread."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
            self._write_seg = -1
        if not self._index:
            for seg in list(self._segments):
                self._path(seg).unlink(missing_ok=True)
            self._segments.clear()
