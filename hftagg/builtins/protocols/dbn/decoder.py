"""Incremental DBN decoding: bytes in, hftagg batches (and dead letters) out.

:class:`DbnDecoder` takes the decompressed byte stream in pieces of any size (``feed``), parses
the metadata, finds record boundaries in compiled code (:mod:`hftagg.builtins.protocols.dbn.kernels`) and, on
``take(n)``, decodes the next ``n`` records: records are grouped by ``(rtype, length)``, each
group read as a numpy structured array (a zero-copy view when the run is contiguous, one
compiled gather otherwise) and mapped to hftagg records by field copies
(:mod:`hftagg.builtins.protocols.dbn.mapping`). Python runs per group per batch, never per record.

Bad input becomes ``dead_letter`` records (port ``dead_letters``) with a reason code from
:class:`~hftagg.builtins.protocols.dbn.reasons.Reason`, the byte offset in the decompressed stream and
the length; good records around them are decoded:

- bad magic, unsupported version, truncated metadata: the stream is unusable (one dead letter);
- a symbol section that does not add up: one ``BAD_METADATA`` dead letter, records still read;
- unknown rtype, an rtype hftagg does not map, a record shorter than its layout: that record
  is skipped (its length is known) with one dead letter;
- symbol mappings (the metadata's, and ``SymbolMappingMsg`` records) go to ``on_symbols``
  (``dbn_replay`` defines them in the instrument registry), or without it are dead-lettered
  as unmapped;
- a length byte below 4 (16 bytes): nothing after it can be framed; one ``BAD_LENGTH`` dead
  letter covers the rest of the stream, reported when the stream ends (``finish``) so its
  length does not depend on how the bytes were fed;
- the stream ends inside a record (or a zstd frame): one ``TRUNCATED`` dead letter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from hftagg.builtins.protocols.dbn.kernels import (
    FRAME_BAD_LENGTH,
    frame_records,
    gather_rows,
    gather_u64,
)
from hftagg.builtins.protocols.dbn.layouts import (
    TS_RECV_OFFSET,
    UNDEF_TIMESTAMP,
    RType,
    layout,
    record_dtype,
)
from hftagg.builtins.protocols.dbn.mapping import REJECTED, Counters, map_records
from hftagg.builtins.protocols.dbn.metadata import (
    DbnFormatError,
    DbnMetadata,
    metadata_size,
    parse_metadata,
)
from hftagg.builtins.protocols.dbn.reasons import REASON_TEXT, Reason
from hftagg.builtins.protocols.dbn.symbols import (
    mapping_records,
    metadata_pairs,
    symbol_mapping_dtype,
)
from hftagg.records.catalog import DEAD_LETTER
from hftagg.records.fixed import FixedReason

__all__ = ["DEAD_LETTER_PORT", "DbnDecoder"]

DEAD_LETTER_PORT = "dead_letters"
_KNOWN_RTYPES = frozenset(
    (
        0x00,
        0x01,
        0x0A,
        0x11,
        0x12,
        0x13,
        0x14,
        0x15,
        0x16,
        0x17,
        0x18,
        0x20,
        0x21,
        0x22,
        0x23,
        0x24,
        0xA0,
        0xB1,
        0xC0,
        0xC1,
        0xC2,
        0xC3,
        0xC4,
        0xC5,
    )
)
_FRAME_AHEAD = 1 << 16  # records framed per frame() call at most


class DbnDecoder:
    """Decode one DBN stream incrementally.

    ``source_id`` and ``name`` label its dead letters (e.g. the file's index and name).
    """

    def __init__(
        self,
        *,
        source_id: int = 0,
        name: str = "",
        counters: Counters | None = None,
        on_symbols: Callable[[str, np.ndarray, list[str]], None] | None = None,
    ):
        #: called with (dataset, instrument ids, symbols) for the metadata's symbol mappings
        #: and for SymbolMappingMsg records (which then are not dead-lettered); None: those
        #: records are dead-lettered as unmapped
        self.on_symbols = on_symbols
        self.source_id = source_id
        self.name = os.path.basename(name) or "<stream>"
        self.metadata: DbnMetadata | None = None
        self.failed = False  # the rest of the stream cannot be decoded
        self.finished = False
        self.counters = counters or Counters()
        self.stats = {"records": 0, "dead_letters": 0, "bytes": 0}
        self._buf = b""
        self._base = 0  # stream offset of self._buf[0]
        self._frame_pos = 0  # where framing resumes in self._buf
        self._offsets = np.empty(0, dtype=np.int64)  # framed, not yet taken
        self._next = 0
        self._dead: list[np.ndarray] = []
        self._dead_seq = 0
        # after a bad length byte: [offset, bytes to the end, detail], reported by finish()
        self._unreadable: list | None = None

    # -- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append decompressed bytes and frame the whole records they complete."""
        if self.finished or not data:
            return
        self.stats["bytes"] += len(data)
        if self._unreadable is not None:
            self._unreadable[1] += len(data)  # counted into the one dead letter, not kept
            return
        if self.failed:
            return
        keep = (
            int(self._offsets[self._next]) if self._next < len(self._offsets) else self._frame_pos
        )
        if keep:
            self._offsets = self._offsets[self._next :] - keep
            self._next = 0
            self._frame_pos -= keep
            self._base += keep
            self._buf = self._buf[keep:] + data
        else:
            self._buf += data
        self._frame()

    def finish(self, truncated_frame: bool = False) -> None:
        """The stream has ended (``truncated_frame``: its zstd frame was cut short)."""
        if self.finished:
            return
        self._frame()
        self.finished = True
        if self._unreadable is not None:
            pos, length, why = self._unreadable
            self._unreadable = None
            self._dead_letter(
                Reason.BAD_LENGTH, pos, length, f"{REASON_TEXT[Reason.BAD_LENGTH]}: {why}"
            )
        if self.failed:
            return
        rest = len(self._buf) - self._frame_pos
        if self.metadata is None:
            self._fail(
                Reason.TRUNCATED,
                0,
                len(self._buf),
                f"stream ends inside the metadata ({len(self._buf)} bytes)",
            )
        elif rest:
            header = self._header_at(self._frame_pos)
            self._dead_letter(
                Reason.TRUNCATED,
                self._frame_pos,
                rest,
                f"last record needs {self._buf[self._frame_pos] * 4} bytes, {rest} left",
                *header,
            )
        elif truncated_frame:
            self._dead_letter(
                Reason.TRUNCATED,
                self._frame_pos,
                0,
                "zstd frame ends early (records before it decoded)",
            )

    def fail(self, reason: int, detail: str) -> None:
        """Mark the stream unusable from the current position (e.g. corrupt compression)."""
        if not self.failed:
            self._fail(reason, self._frame_pos, len(self._buf) - self._frame_pos, detail)

    # -- output ----------------------------------------------------------------------------------

    @property
    def available(self) -> int:
        """Records framed and not yet taken."""
        return len(self._offsets) - self._next

    @property
    def has_dead_letters(self) -> bool:
        return bool(self._dead)

    @property
    def done(self) -> bool:
        """Finished (or failed) and everything taken."""
        return ((self.finished or self.failed) and not self.available and not self._dead
                and self._unreadable is None)  # fmt: skip

    def pace_times(self, n: int, by: str = "ts_recv") -> np.ndarray:
        """``ts_recv`` (or ``ts_event``) of the next ``n`` records as int64, for pacing.

        Records without ``ts_recv`` (OHLCV) and undefined stamps give the previous record's.
        """
        offs = self._offsets[self._next : self._next + n]
        raw = np.frombuffer(self._buf, dtype=np.uint8)
        if by == "ts_recv":
            field = TS_RECV_OFFSET[raw[offs + 1]]
            field = np.where(field + 8 <= raw[offs].astype(np.int64) * 4, field, 8)
        else:
            field = np.full(len(offs), 8, dtype=np.int64)
        ts = gather_u64(raw, offs, field, np.empty(len(offs), dtype=np.uint64))
        ts = np.where(ts == UNDEF_TIMESTAMP, 0, ts).astype(np.int64)
        return np.maximum.accumulate(ts) if len(ts) else ts

    def skip(self, n: int) -> int:
        """Drop the next ``n`` framed records undecoded (a restore resuming mid-file)."""
        n = min(n, self.available)
        self._next += n
        self.stats["records"] += n
        return n

    def take(self, n: int) -> dict[str, np.ndarray]:
        """Decode the next ``n`` framed records (fewer if fewer are framed) into batches per port.

        Dead letters found so far come on port ``dead_letters`` with any ``n`` (also 0).
        """
        n = min(n, self.available)
        out: dict[str, np.ndarray] = {}
        if n:
            offs = self._offsets[self._next : self._next + n]
            self._next += n
            out = self._decode(offs)
            self.stats["records"] += n
        if self._dead:
            dead = self._dead[0] if len(self._dead) == 1 else np.concatenate(self._dead)
            self._dead = []
            out[DEAD_LETTER_PORT] = dead
        return out

    # -- framing ---------------------------------------------------------------------------------

    def _frame(self) -> None:
        if self.failed:
            return
        if self.metadata is None and not self._read_metadata():
            return
        raw = np.frombuffer(self._buf, dtype=np.uint8)
        end = len(raw)
        while True:
            room = np.empty(min(_FRAME_AHEAD, max((end - self._frame_pos) // 16, 1)), np.int64)
            count, pos, status = frame_records(raw, self._frame_pos, end, len(room), room)
            self._frame_pos = int(pos)
            if count:
                self._offsets = np.concatenate((self._offsets[self._next :], room[:count]))
                self._next = 0
            if status == FRAME_BAD_LENGTH:
                # nothing after it can be framed: one dead letter from here to the end of the
                # stream, whatever the pieces it came in (finish() reports it)
                self.failed = True
                why = f"record length byte {raw[self._frame_pos]} (< 4 words)"
                self._unreadable = [self._frame_pos, end - self._frame_pos, why]
                return
            if count < len(room) or pos >= end:
                return

    def _read_metadata(self) -> bool:
        try:
            size = metadata_size(self._buf[:8])
            if size is None or len(self._buf) < size:
                return False
            self.metadata = parse_metadata(self._buf[:size])
        except DbnFormatError as exc:
            self._fail(exc.reason, 0, len(self._buf), str(exc))
            return False
        for problem in self.metadata.problems:
            self._dead_letter(Reason.BAD_METADATA, 0, size, problem)
        if self.on_symbols is not None:
            ids, names = metadata_pairs(self.metadata)
            if len(ids):
                self.on_symbols(self.metadata.dataset, ids, names)
        self._frame_pos = size
        return True

    # -- decoding --------------------------------------------------------------------------------

    def _decode(self, offs: np.ndarray) -> dict[str, np.ndarray]:
        raw = np.frombuffer(self._buf, dtype=np.uint8)
        rtypes = raw[offs + 1]
        lengths = raw[offs]
        if (rtypes == rtypes[0]).all() and (lengths == lengths[0]).all():
            groups = [(int(rtypes[0]), int(lengths[0]) * 4, None)]
        else:
            keys = rtypes.astype(np.int32) << 8 | lengths
            groups = [
                (int(k) >> 8, (int(k) & 0xFF) * 4, np.flatnonzero(keys == k))
                for k in np.unique(keys)
            ]
        parts: dict[str, list[tuple[np.ndarray | None, np.ndarray]]] = {}
        for rtype, length, rows in groups:
            group_offs = offs if rows is None else offs[rows]
            if rtype == RType.SYMBOL_MAPPING and self._symbol_mappings(raw, group_offs, length):
                continue
            rec = self._records(raw, group_offs, rtype, length)
            if rec is None:
                continue
            mapped = map_records(rec, rtype, self.metadata.schema, self.counters)
            rejected = mapped.pop(REJECTED, None)
            if rejected is not None:
                self._unrepresentable(group_offs, length, *rejected)
            for port, (sub, batch) in mapped.items():
                if len(batch):
                    index = rows if sub is None else (sub if rows is None else rows[sub])
                    parts.setdefault(port, []).append((index, batch))
        return {port: _merge(pieces) for port, pieces in parts.items()}

    def _symbol_mappings(self, raw: np.ndarray, offs: np.ndarray, length: int) -> bool:
        """SymbolMappingMsg records to ``on_symbols``; False (dead-letter them) without one."""
        dtype = symbol_mapping_dtype(self.metadata.version)
        if self.on_symbols is None or length < dtype.itemsize:
            return False
        rows = gather_rows(raw, offs, length, np.empty(len(offs) * length, dtype=np.uint8))
        rec = rows.reshape(len(offs), length)[:, : dtype.itemsize].copy().view(dtype).ravel()
        self.on_symbols(self.metadata.dataset, *mapping_records(rec))
        return True

    def _records(self, raw: np.ndarray, offs: np.ndarray, rtype: int, length: int):
        """The records at ``offs`` as a structured array, or ``None`` (dead-lettered)."""
        dtype = record_dtype(rtype, self.metadata.version, length)
        if dtype is None:
            if rtype not in _KNOWN_RTYPES:
                reason, why = Reason.UNKNOWN_RTYPE, f"unknown rtype 0x{rtype:02x}"
            elif layout(rtype, self.metadata.version) is None:
                reason, why = Reason.UNMAPPED_RTYPE, f"rtype 0x{rtype:02x} is not mapped"
            else:
                reason = Reason.SHORT_RECORD
                why = f"rtype 0x{rtype:02x} record of {length} bytes is too short"
            self._dead_letters(reason, offs, length, why)
            return None
        start = int(offs[0])
        if int(offs[-1]) - start == (len(offs) - 1) * length:  # one contiguous run: a view
            return np.frombuffer(self._buf, dtype=dtype, count=len(offs), offset=start)
        rows = gather_rows(raw, offs, length, np.empty(len(offs) * length, dtype=np.uint8))
        return rows.view(dtype)

    # -- dead letters ----------------------------------------------------------------------------

    def _header_at(self, pos: int) -> tuple[int, int]:
        """(ts_event, instrument_id) of the record header at ``pos``, zeros if incomplete."""
        if pos + 16 > len(self._buf):
            return 0, 0
        head = np.frombuffer(self._buf, dtype=np.uint8, count=16, offset=pos)
        return int(head[8:16].view("<u8")[0]), int(head[4:8].view("<u4")[0])

    def _dead_letters(self, reason: int, offs: np.ndarray, length: int, why: str) -> None:
        n = len(offs)
        dead = DEAD_LETTER.empty(n)
        raw = np.frombuffer(self._buf, dtype=np.uint8)
        dead["ts_event"] = gather_u64(raw, offs, np.full(n, 8, np.int64), np.empty(n, np.uint64))
        dead["ts_recv"] = time.time_ns()
        dead["seq"] = np.arange(self._dead_seq, self._dead_seq + n, dtype=np.uint64)
        ids = gather_u64(raw, offs, np.full(n, 4, np.int64), np.empty(n, np.uint64))
        dead["instrument_id"] = ids & np.uint64(0xFFFFFFFF)
        dead["reason"] = reason
        dead["raw_offset"] = offs + self._base
        dead["raw_length"] = length
        dead["source_id"] = self.source_id
        dead["detail"] = self._detail(why)
        self._dead_seq += n
        self.stats["dead_letters"] += n
        self._dead.append(dead)

    def _unrepresentable(self, offs: np.ndarray, length: int, rows, details) -> None:
        """Dead letters for records holding a value hftagg's fixed-point fields cannot hold."""
        for row, detail in zip(rows.tolist(), details, strict=True):
            self._dead_letters(FixedReason.OUT_OF_RANGE, offs[row : row + 1], length,
                               detail.decode())  # fmt: skip

    def _dead_letter(
        self,
        reason: int,
        pos: int,
        length: int,
        why: str,
        ts_event: int = 0,
        instrument_id: int = 0,
    ) -> None:
        dead = DEAD_LETTER.empty(1)
        dead["ts_event"] = np.uint64(ts_event).astype(np.int64)
        dead["ts_recv"] = time.time_ns()
        dead["seq"] = self._dead_seq
        dead["instrument_id"] = instrument_id
        dead["reason"] = reason
        dead["raw_offset"] = pos + self._base
        dead["raw_length"] = min(length, 0xFFFFFFFF)
        dead["source_id"] = self.source_id
        dead["detail"] = self._detail(why)
        self._dead_seq += 1
        self.stats["dead_letters"] += 1
        self._dead.append(dead)

    def _fail(self, reason: int, pos: int, length: int, why: str) -> None:
        self._dead_letter(reason, pos, length, f"{REASON_TEXT[reason]}: {why}")
        self.failed = True

    def _detail(self, why: str) -> bytes:
        return f"{self.name}: {why}".encode("ascii", "replace")[:64]


def _merge(pieces: list[tuple[np.ndarray | None, np.ndarray]]) -> np.ndarray:
    """One port's batch from several rtype groups, back in stream order."""
    if len(pieces) == 1:
        return pieces[0][1]
    index = np.concatenate([i for i, _ in pieces])
    batch = np.concatenate([b for _, b in pieces])
    return batch[np.argsort(index, kind="stable")]
