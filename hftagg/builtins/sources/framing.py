"""Framing shared by the raw-feed sources (``tcp``, ``multicast``, ``pcap``).

Three ways of finding messages in raw bytes, all in compiled passes over a whole read:

- ``length``: each frame starts with an unsigned length prefix of ``length_bytes`` (1, 2 or 4)
  in ``byte_order``; ``length_includes_prefix`` says whether it counts itself (SBE's 2-byte
  ``length2`` framing and MDP3's message size do, most others do not);
- ``delimited``: frames end with ``delimiter`` (e.g. ``\\n``), the delimiter kept in the frame;
- ``fix``: FIX tag=value messages, cut with the FIX decoder's own framer (BeginString,
  BodyLength, CheckSum verified; garbage between messages is its own span).

:class:`StreamFramer` keeps the bytes of an unfinished frame across reads and the rest of an
oversized frame it is skipping, and returns ``(start, end, status)`` spans into the bytes it
was given plus what it kept. :class:`PacketHeader` reads the packet sequence number (MDP3:
``MsgSeqNum`` uint32 little-endian at offset 0, then ``SendingTime`` uint64) of whole
datagrams held in ``raw_chunk`` records, for the whole batch at once.

Frames go downstream as ``raw_chunk`` records with flags bit 0 set (one whole frame or
datagram per record), which ``sbe_decode`` and ``fix_decode`` take as they are; a frame longer
than a ``raw_chunk`` holds (``RAW_CHUNK_BYTES``) is oversized by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from hftagg.builtins.protocols.fix import kernels as fix_kernels
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.records.catalog import RAW_CHUNK, RAW_CHUNK_BYTES

__all__ = ["BAD_LENGTH", "GARBAGE", "OK", "OVERSIZED", "PacketHeader", "StreamFramer",
           "frames_to_chunks"]  # fmt: skip

OK, OVERSIZED, BAD_LENGTH, GARBAGE, BAD_FIX = 0, 1, 2, 3, 4


@numba.njit(**_NJIT)
def _length_spans(buf, n, width, big, includes, max_frame, spans):
    """Length-prefixed frames in ``buf[:n]``: ``(count, stop, skip)``; ``skip`` > 0 means the
    last span is an oversized frame whose remaining ``skip`` bytes are still to come."""
    p = 0
    count = 0
    while p + width <= n and count < spans.shape[0]:
        length = 0
        for k in range(width):
            b = np.int64(buf[p + (k if big else width - 1 - k)])
            length = (length << 8) | b
        total = length if includes else length + width
        if total < width or (includes and total == width and width > 1 and length == 0):
            spans[count, 0], spans[count, 1], spans[count, 2] = p, p + width, BAD_LENGTH
            count += 1
            p += width
            continue
        if total > max_frame:
            end = min(p + total, n)
            spans[count, 0], spans[count, 1], spans[count, 2] = p, end, OVERSIZED
            count += 1
            return count, end, p + total - end
        if p + total > n:
            break
        spans[count, 0], spans[count, 1], spans[count, 2] = p, p + total, OK
        count += 1
        p += total
    return count, p, 0


@numba.njit(**_NJIT)
def _delimited_spans(buf, n, delim, max_frame, spans):
    """Delimiter-terminated frames: ``(count, stop, skipping)``; an unterminated run longer
    than ``max_frame`` becomes an oversized span and ``skipping`` = 1 (drop to the delimiter)."""
    p = 0
    count = 0
    d = delim.shape[0]
    q = 0
    while count < spans.shape[0]:
        found = -1
        q = max(q, p)
        while q + d <= n:
            match = True
            for k in range(d):
                if buf[q + k] != delim[k]:
                    match = False
                    break
            if match:
                found = q
                break
            q += 1
        if found < 0:
            if n - p > max_frame:
                spans[count, 0], spans[count, 1], spans[count, 2] = p, n, OVERSIZED
                return count + 1, n, 1
            break
        end = found + d
        status = OVERSIZED if end - p > max_frame else OK
        spans[count, 0], spans[count, 1], spans[count, 2] = p, end, status
        count += 1
        p = end
    return count, p, 0


@numba.njit(**_NJIT)
def _skip_to_delimiter(buf, n, delim):
    """Where the frame being skipped ends (just past the next delimiter), or -1."""
    d = delim.shape[0]
    for q in range(n - d + 1):
        match = True
        for k in range(d):
            if buf[q + k] != delim[k]:
                match = False
                break
        if match:
            return q + d
    return -1


@dataclass
class StreamFramer:
    """Cut a byte stream into frames, keeping partial frames across :meth:`feed` calls."""

    kind: str = "length"  # "length" | "delimited" | "fix"
    length_bytes: int = 2
    big_endian: bool = False
    length_includes_prefix: bool = True
    delimiter: bytes = b"\n"
    max_frame_bytes: int = RAW_CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.kind not in ("length", "delimited", "fix"):
            raise ValueError(f"framing {self.kind!r}: use 'length', 'delimited' or 'fix'")
        if self.length_bytes not in (1, 2, 4):
            raise ValueError(f"length_bytes = {self.length_bytes}: use 1, 2 or 4")
        if not self.delimiter:
            raise ValueError("delimiter is empty: give the byte(s) that end each frame")
        self._pending = np.zeros(0, dtype=np.uint8)
        self._skip = 0  # bytes of an oversized frame still to drop (length framing)
        self._skipping = False  # dropping up to the next delimiter (delimited framing)
        self._delim = np.frombuffer(self.delimiter, dtype=np.uint8).copy()
        self._begin = np.frombuffer(b"", dtype=np.uint8)
        self._spans = np.zeros((1024, 3), dtype=np.int64)
        self.oversized_bytes = 0

    @property
    def skipping(self) -> int:
        """Bytes of an oversized length-prefixed frame still to drop."""
        return self._skip

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """``(buf, spans, dropped)``: the buffer the spans index (kept bytes + ``data``), the
        ``(start, end, status)`` spans of complete frames (``OVERSIZED`` spans too: what came
        of them), and how many bytes of an oversized frame were dropped without a span."""
        new = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
        dropped = 0
        if self._skip:
            cut = min(self._skip, len(new))
            self._skip -= cut
            dropped += cut
            new = new[cut:]
        if self._skipping:
            end = _skip_to_delimiter(new, len(new), self._delim)
            cut = len(new) if end < 0 else end
            self._skipping = end < 0
            dropped += cut
            new = new[cut:]
        self.oversized_bytes += dropped
        buf = np.concatenate((self._pending, new)) if len(self._pending) else new
        parts, stop = [], 0
        while True:
            count, stop2, more = self._cut(buf[stop:])
            spans = self._spans[:count].copy()
            spans[:, :2] += stop
            parts.append(spans)
            stop += stop2
            if more:
                self._note_skip(more)
                break
            if count < len(self._spans):
                break
        spans = np.concatenate(parts) if len(parts) > 1 else parts[0]
        over = spans[spans[:, 2] == OVERSIZED]
        self.oversized_bytes += int((over[:, 1] - over[:, 0]).sum())
        self._pending = buf[stop:].copy()
        if self.kind == "length" and len(self._pending) > self.max_frame_bytes:
            raise AssertionError("length framing kept more than one frame")  # invariant
        return buf, spans, dropped

    def _note_skip(self, more: int) -> None:
        if self.kind == "length":
            self._skip = more
        else:
            self._skipping = True

    def _cut(self, buf: np.ndarray) -> tuple[int, int, int]:
        n, spans = len(buf), self._spans
        if self.kind == "length":
            return _length_spans(buf, n, self.length_bytes, self.big_endian,
                                 self.length_includes_prefix, self.max_frame_bytes, spans)  # fmt: skip
        if self.kind == "delimited":
            return _delimited_spans(buf, n, self._delim, self.max_frame_bytes, spans)
        count, stop = fix_kernels.frame(buf, 0, n, self._begin, self.max_frame_bytes, False, spans)
        st = spans[:count, 2]
        over = spans[:count, 1] - spans[:count, 0] > self.max_frame_bytes
        st[over] = OVERSIZED
        st[(st != fix_kernels.OK) & ~over] = np.where(
            st[(st != fix_kernels.OK) & ~over] == fix_kernels.GARBAGE, GARBAGE, BAD_FIX
        )
        # the decoder's framer has its own statuses: keep OK spans whole, anything else is bad
        return count, stop, 0


def frames_to_chunks(buf: np.ndarray, spans: np.ndarray, ts_recv: int, stream_id: int,
                     first_seq: int) -> np.ndarray:  # fmt: skip
    """One ``raw_chunk`` per span (flags bit 0: a whole frame), the bytes copied once."""
    out = RAW_CHUNK.empty(len(spans))
    if not len(spans):
        return out
    lengths = (spans[:, 1] - spans[:, 0]).astype(np.int64)
    _gather(buf, spans[:, 0].astype(np.int64), lengths, out["data"])
    out["length"] = lengths
    out["flags"] = 1
    out["ts_recv"] = ts_recv
    out["ts_event"] = ts_recv
    out["seq"] = np.arange(first_seq, first_seq + len(spans), dtype=np.uint64)
    out["instrument_id"] = stream_id
    return out


@numba.njit(**_NJIT)
def _gather(buf, starts, lengths, data):
    for i in range(starts.shape[0]):
        s = starts[i]
        n = lengths[i]
        for k in range(n):
            data[i, k] = buf[s + k]


@dataclass(frozen=True)
class PacketHeader:
    """Where a datagram's packet sequence number is (MDP3: uint32 LE at offset 0)."""

    seq_offset: int = 0
    seq_bytes: int = 4
    big_endian: bool = False
    header_bytes: int = 12  # MDP3: MsgSeqNum uint32 + SendingTime uint64

    def sequences(self, packets: np.ndarray) -> np.ndarray:
        """The sequence number of every packet in a ``raw_chunk`` batch, as int64."""
        dt = np.dtype(f"{'>' if self.big_endian else '<'}u{self.seq_bytes}")
        raw = packets["data"][:, self.seq_offset : self.seq_offset + self.seq_bytes]
        return np.ascontiguousarray(raw).view(dt)[:, 0].astype(np.int64)

    def short(self, packets: np.ndarray) -> np.ndarray:
        """Packets too short to hold the header (they cannot be sequenced)."""
        need = max(self.header_bytes, self.seq_offset + self.seq_bytes)
        return packets["length"] < need


def warm() -> None:
    """Compile the framing kernels into the on-disk cache."""
    for kind in ("length", "delimited", "fix"):
        f = StreamFramer(kind=kind)
        f.feed(b"\x05\x00abc\n8=FIX.4.4\x019=5\x0135=0\x0110=000\x01")
    buf = np.arange(8, dtype=np.uint8)
    delim = np.frombuffer(b"\n", dtype=np.uint8).copy()
    for data in (np.frombuffer(b"ab\ncd", dtype=np.uint8), buf):  # read-only bytes, and arrays
        _skip_to_delimiter(data, len(data), delim)  # what an oversized delimited frame runs
    frames_to_chunks(buf, np.array([[0, 4, 0]], dtype=np.int64), 0, 0, 0)
