"""Reading one stored topic in store order, filtered by time range and instruments, in pieces.

A :class:`TopicStream` walks a topic's segment files (``<store>/<topic>/<position>.seg``, in
name order, which is store order) and serves its matching records through ``peek(n)`` /
``advance(n)``. Segments whose header's ``ts_event`` range misses ``[start, end)`` are never
opened. In a segment flagged ``ts_event`` non-decreasing the range is found by binary search and
served as zero-copy slices of the memory map; otherwise (or with an instrument filter) each piece
is masked in one vectorised pass. The record count of every segment is read once, when the
stream opens: records appended later are not replayed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hftagg.builtins.storage.store.layout import archived_partitions, list_segments
from hftagg.builtins.storage.store.segment import (
    MAGIC,
    SegmentInfo,
    open_records,
    read_header,
)
from hftagg.errors import StorageError
from hftagg.records.schema import Schema

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Part",
    "TopicStream",
    "format_time_ns",
    "parse_time_ns",
    "topic_parts",
]

log = logging.getLogger("hftagg.storage")

INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)
PIECE = 1 << 16  # records masked per pass when filtering
_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)


def parse_time_ns(value: int | str | None, key: str, default: int) -> int:
    """UNIX ns from ``value``: an integer (ns), a string of digits (ns), or ISO-8601
    (``2026-01-02``, ``2026-01-02T09:30:00.123456789Z``, ``...+01:00``; no offset means UTC).
    ``None`` gives ``default``. A bad value raises ``ValueError`` naming ``key``."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    offset_ns = 0
    match = _OFFSET.search(text)
    if match:
        zone = match.group(1).upper().replace(":", "")
        text = text[: match.start()]
        if zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            offset_ns = sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * 1_000_000_000
    try:
        ns = int(np.datetime64(text, "ns").astype(np.int64))
    except ValueError:
        raise ValueError(
            f"{key} = {value!r} is not a time: give UNIX nanoseconds (1767225600000000000) or "
            f"ISO-8601 in UTC ('2026-01-01T00:00:00Z', '2026-01-01T09:30:00.250+01:00')"
        ) from None
    return ns - offset_ns


def format_time_ns(ns: int) -> str:
    """``2026-01-01T00:00:01.500000000Z``."""
    return str(np.datetime64(int(ns), "ns")) + "Z"


@dataclass(frozen=True)
class Part:
    """A stretch of a topic in the store: a segment, or a Parquet partition archived from one.
    ``position`` is the store position of its first record; ``load()`` gives its records."""

    name: str
    position: int
    count: int
    ts_min: int
    ts_max: int
    ordered: bool  # ts_event never decreases inside (binary search is valid)
    load: Callable[[], np.ndarray]
    schema: Schema | None = None
    problems: tuple[str, ...] = ()  # what reading its header found (a torn tail)


def _segment_part(info: SegmentInfo) -> Part:
    ranged = not (info.ts_min == 0 and info.ts_max == 0)  # format version 0 records no range
    return Part(
        name=str(info.path),
        position=info.position,
        count=info.count,
        ts_min=info.ts_min if ranged else INT64_MIN,
        ts_max=info.ts_max if ranged else INT64_MAX,
        ordered=info.ts_ordered,
        load=lambda: open_records(info),
        schema=info.schema,
        problems=info.problems,
    )


def _partition_part(partition: Any, schema: Schema) -> Part:
    return Part(
        name=str(partition.path),
        position=int(partition.position),
        count=int(partition.rows),
        ts_min=int(partition.ts_min),
        ts_max=int(partition.ts_max),
        ordered=False,  # checked when loaded
        load=lambda: partition.read(schema),
        schema=schema,
    )


def _segment_infos(root: Path, topic: str) -> list[SegmentInfo]:
    """The headers of ``topic``'s segments; the newest file may be a segment its writer is
    creating right now (a running pipeline writes the store): without a header yet, it is left
    out instead of failing the replay."""
    paths = list_segments(root, topic)
    infos = []
    for i, path in enumerate(paths):
        try:
            infos.append(read_header(path))
        except StorageError:
            if i < len(paths) - 1 or not _being_created(path):
                raise
            log.debug("store_replay %s: %s has no header yet (being created); skipped", topic, path)
    return infos


def _being_created(path: Path) -> bool:
    """Empty, or preallocated with no header written yet (zeros where the magic goes)."""
    with open(path, "rb") as file:
        return not file.read(len(MAGIC)).strip(b"\0")


def topic_parts(root: Path, topic: str) -> list[Part]:
    """``topic``'s archived Parquet partitions and live segments in store order, each record
    once: a segment compacts to one partition per UTC date, all at the segment's position, and
    once archived its live copy (if still there) is skipped."""
    with contextlib.suppress(ImportError):  # registers the catalog's partition lister
        import hftagg.builtins.storage.archive  # noqa: F401
    infos = _segment_infos(root, topic)
    schema = infos[0].schema if infos else None
    archived = archived_partitions(root, topic)
    if schema is None and archived:
        schema = _schema_by_key(getattr(archived[0], "schema_key", None), root / topic)
    parts = [_partition_part(p, schema) for p in archived]
    positions = {p.position for p in parts}
    parts += [_segment_part(i) for i in infos if i.position not in positions]
    return sorted(parts, key=lambda p: p.position)  # stable: a segment's dates stay in order


def _schema_by_key(key: str | None, folder: Path) -> Schema:
    from hftagg.records.catalog import BUILTIN_SCHEMAS

    for schema in BUILTIN_SCHEMAS:
        if schema.key == key:
            return schema
    raise StorageError(f"{folder}: cannot tell the schema of its archived partitions ({key!r})")


class TopicStream:
    """The records of one topic in ``[start, end)`` (and of ``instruments`` when given), in
    store order."""

    def __init__(
        self,
        topic: str,
        parts: list[Part],
        start: int,
        end: int,
        instruments: np.ndarray | None,
    ) -> None:
        self.topic = topic
        self.start, self.end = start, end
        self.instruments = instruments
        self.dtype = parts[0].schema.dtype if parts else None
        self._parts = deque(p for p in parts if self._overlaps(p))
        for part in self._parts:
            for problem in part.problems:  # a torn tail: the records before it replay
                log.warning("store_replay %s: %s", topic, problem)
        #: the latest ``ts_event`` the replayed range can reach (for progress)
        reach = max((p.ts_max for p in self._parts), default=start)
        self.ts_last = min(end - 1, reach)
        self._pieces: deque[np.ndarray] = deque()
        self._buffered = 0
        self._current: np.ndarray | None = None  # the open part's records still to filter
        self._ordered = False
        self.floor = INT64_MIN  # merge key of the last record handed out

    def _overlaps(self, part: Part) -> bool:
        return part.count > 0 and part.ts_max >= self.start and part.ts_min < self.end

    # -- filling ---------------------------------------------------------------------------------

    def _open_next(self) -> bool:
        while self._parts:
            part = self._parts.popleft()
            records = part.load()
            if records.dtype != self.dtype:
                raise StorageError(
                    f"{part.name}: records of dtype {records.dtype} in a topic whose first "
                    f"segment holds {self.dtype}; replay one schema per topic (move the older "
                    f"segments to another store)"
                )
            records = records[: part.count]
            ts = records["ts_event"]
            self._ordered = part.ordered or bool(np.all(ts[1:] >= ts[:-1]))
            if self._ordered:
                lo = int(np.searchsorted(ts, self.start, side="left"))
                hi = int(np.searchsorted(ts, self.end, side="left"))
                records = records[lo:hi]
            if len(records):
                self._current = records
                return True
        return False

    def _pull(self) -> bool:
        """Add one piece of matching records to the buffer; False when the topic has no more."""
        while True:
            if self._current is None or not len(self._current):
                self._current = None
                if not self._open_next():
                    return False
            raw = self._current[:PIECE] if self._needs_mask() else self._current
            self._current = self._current[len(raw) :]
            piece = self._filter(raw)
            if len(piece):
                self._pieces.append(piece)
                self._buffered += len(piece)
                return True

    def _needs_mask(self) -> bool:
        return self.instruments is not None or not self._ordered

    def _filter(self, raw: np.ndarray) -> np.ndarray:
        if not self._needs_mask():
            return raw  # ordered and already cut to [start, end) by binary search
        keep = np.ones(len(raw), dtype=bool)
        if not self._ordered:
            ts = raw["ts_event"]
            keep &= (ts >= self.start) & (ts < self.end)
        if self.instruments is not None:
            keep &= np.isin(raw["instrument_id"], self.instruments)
        if keep.all():
            return raw
        # as raw bytes: a field-wise copy would leave the dtype's padding uninitialised
        return raw.view(np.dtype((np.void, raw.dtype.itemsize)))[keep].view(raw.dtype)

    # -- reading ---------------------------------------------------------------------------------

    def available(self, n: int) -> int:
        """How many of the next ``n`` records exist (reads ahead as needed)."""
        while self._buffered < n and self._pull():
            pass
        return min(n, self._buffered)

    def more_after(self, n: int) -> bool:
        """Whether records follow the next ``n``."""
        return self.available(n + 1) > n

    def peek(self, n: int) -> np.ndarray:
        """The next ``n`` records (fewer at the end): a zero-copy view when they lie in one
        piece, else one concatenated copy."""
        n = self.available(n)
        first = self._pieces[0] if self._pieces else None
        if first is None:
            return np.zeros(0, dtype=self.dtype)
        if len(first) >= n:
            return first[:n]
        parts, left = [], n
        for piece in self._pieces:
            parts.append(piece[:left])
            left -= len(parts[-1])
            if not left:
                break
        # as raw bytes: a field-wise copy would leave the dtype's padding uninitialised
        void = np.dtype((np.void, self.dtype.itemsize))
        return np.concatenate([part.view(void) for part in parts]).view(self.dtype)

    def advance(self, n: int) -> None:
        """Drop the next ``n`` records (at most what is buffered)."""
        self._buffered -= n
        while n:
            first = self._pieces[0]
            if len(first) <= n:
                self._pieces.popleft()
                n -= len(first)
            else:
                self._pieces[0] = first[n:]
                n = 0

    @property
    def done(self) -> bool:
        return not self._buffered and not self._pull()
