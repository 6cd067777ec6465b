"""Reading stored topics back: :func:`read` (exported as ``hftagg.read``) and
:class:`StoredRecords`, the record array it returns.

``read`` takes the topic's segments in store order, skips those whose ``ts_event`` range misses
the window, and cuts each time-ordered segment with ``np.searchsorted`` (an unordered one with a
mask). One segment and no instrument filter gives a view of the memory-mapped file (zero-copy);
otherwise the pieces are concatenated once. Archived partitions (Parquet, listed by the catalog
through :func:`~hftagg.builtins.storage.store.layout.archived_partitions`) merge in by store
position; a segment present both ways (being archived right now) is read from its live copy.

The window is half-open, ``start <= ts_event < end``; ``start``/``end`` are UNIX ns, or anything
with a UTC meaning: ``datetime`` (naive means UTC), ISO strings, ``numpy.datetime64``,
``pandas.Timestamp``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hftagg.builtins.storage.store.layout import (
    archived_partitions,
    list_segments,
    list_topics,
    segment_infos,
)
from hftagg.builtins.storage.store.segment import SegmentInfo, open_records
from hftagg.errors import StorageError
from hftagg.records.schema import Schema

__all__ = ["DEFAULT_PATH", "StoredRecords", "read", "to_ns"]

log = logging.getLogger("hftagg.storage")

#: where ``read`` and ``hftagg store ls`` look when no path is given (the default config's)
DEFAULT_PATH = "./storage"


class StoredRecords(np.ndarray):
    """A record array read from the store: a plain numpy structured array (a view of the
    memory-mapped segment when possible) that knows its ``schema`` and ``topic``, with
    conversions to Arrow, pandas and polars (UTC timestamps, exact decimal prices and sizes).
    ``problems`` lists what reading found wrong (torn tails), each naming file and offset."""

    schema: Schema | None
    topic: str
    problems: tuple[str, ...]

    def __new__(
        cls, array: np.ndarray, schema: Schema, topic: str, problems: Iterable[str] = ()
    ) -> StoredRecords:
        obj = np.asarray(array).view(cls)
        obj.schema, obj.topic, obj.problems = schema, topic, tuple(problems)
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.schema = getattr(obj, "schema", None)
        self.topic = getattr(obj, "topic", "")
        self.problems = getattr(obj, "problems", ())

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        if isinstance(key, str) or (isinstance(key, list) and key and isinstance(key[0], str)):
            return out.view(np.ndarray)  # a column is a plain array
        return out

    def __reduce__(self) -> Any:
        return (StoredRecords, (np.asarray(self).copy(), self.schema, self.topic, self.problems))

    def to_arrow(self):
        """A ``pyarrow.Table``: UTC timestamps, ``decimal128`` prices and sizes."""
        from hftagg.records.arrow import to_arrow_table

        return to_arrow_table(self.view(np.ndarray), self._schema())

    def to_pandas(self):
        """A ``pandas.DataFrame``: ``datetime64[ns, UTC]`` times; prices and sizes as exact
        decimals (Arrow-backed ``decimal128`` columns)."""
        import pandas as pd
        import pyarrow as pa

        def mapper(arrow_type):
            nested = pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type)
            if pa.types.is_decimal(arrow_type) or nested:
                return pd.ArrowDtype(arrow_type)
            return None

        return self.to_arrow().to_pandas(types_mapper=mapper)

    def to_polars(self):
        """A ``polars.DataFrame``: ``Datetime(ns, UTC)`` times, ``Decimal`` prices and sizes."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def _schema(self) -> Schema:
        if self.schema is None:
            raise StorageError("these records lost their schema; read them with hftagg.read")
        return self.schema


def to_ns(value: Any) -> int | None:
    """UNIX ns from ns, ``datetime`` (naive = UTC), ISO text, ``datetime64`` or a Timestamp."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise StorageError(
                f"time {value!r} is not ISO 8601; write e.g. '2026-12-02T10:00:00Z' or UNIX ns"
            ) from None
    if hasattr(value, "value") and hasattr(value, "tz_localize"):  # pandas.Timestamp
        return int(value.value) if value.tzinfo else int(value.tz_localize("UTC").value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ns]").astype(np.int64))
    raise StorageError(
        f"time {value!r} ({type(value).__name__}): give UNIX ns, a datetime, ISO text, "
        f"numpy.datetime64 or pandas.Timestamp"
    )


def read(
    topic: str,
    start: Any = None,
    end: Any = None,
    instruments: Iterable[int] | None = None,
    path: str | Path | None = None,
    schemas: Iterable[Schema] = (),
) -> StoredRecords:
    """The records of ``topic`` stored under ``path`` (default ``./storage``) with
    ``start <= ts_event < end`` and ``instrument_id`` in ``instruments`` (all when ``None``),
    in store order. Zero-copy when the result is one contiguous piece of one segment."""
    root = Path(path if path is not None else DEFAULT_PATH)
    lo, hi = to_ns(start), to_ns(end)
    wanted = None if instruments is None else np.unique(np.asarray(list(instruments), np.uint32))
    for attempt in range(3):
        try:
            return _read(root, topic, lo, hi, wanted, list(schemas))
        except FileNotFoundError:  # a segment was archived and deleted while being read
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _read(
    root: Path,
    topic: str,
    lo: int | None,
    hi: int | None,
    wanted: np.ndarray | None,
    schemas: list[Schema],
) -> StoredRecords:
    infos = _segments(root, topic, schemas)
    # a segment being archived right now is there both ways for a moment: its live copy wins
    live = [(info.position, info.position + max(info.count, 1)) for info in infos]
    parts = [
        p for p in archived_partitions(root, topic) if not any(a <= p.position < b for a, b in live)
    ]
    schema = _one_schema(infos, parts, schemas, root, topic)
    groups: dict[int, list] = {}  # the partitions of one archived segment (its dates)
    for p in parts:
        groups.setdefault(p.position, []).append(p)
    sources: list[tuple[int, Any]] = [(position, g) for position, g in groups.items()]
    sources += [(info.position, info) for info in infos]
    sources.sort(key=lambda item: item[0])  # store order; a partition before its segment's
    pieces: list[np.ndarray] = []
    problems: list[str] = []
    for _, source in sources:
        if isinstance(source, list):
            pieces.extend(_read_archived_segment(source, schema, lo, hi, wanted))
            continue
        if not _overlaps(source, lo, hi):
            continue
        if isinstance(source, SegmentInfo):
            problems.extend(source.problems)
            if source.count:
                pieces.append(_filter(open_records(source), lo, hi, wanted, source.ts_ordered))
        else:
            chosen = None if wanted is None else wanted.tolist()
            pieces.append(source.read(schema, lo, hi, chosen))
    for problem in problems:
        log.warning("hftagg.read(%r): %s", topic, problem)
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        data = np.zeros(0, schema.dtype)
    elif len(pieces) == 1:
        data = pieces[0]
    else:
        data = np.concatenate(pieces)
    return StoredRecords(data, schema, topic, problems)


def _read_archived_segment(
    group: list, schema: Schema, lo: int | None, hi: int | None, wanted: np.ndarray | None
) -> list[np.ndarray]:
    """The records in range of one archived segment's partitions, in the segment's order: its
    date files in turn, or (when its dates interleave near midnight) merged back by row."""
    group = [p for p in group if _overlaps(p, lo, hi)]
    if len(group) > 1 and hasattr(group[0], "source_rows"):
        from hftagg.builtins.storage.archive import merge_segment

        merged = merge_segment(group, schema)
        if merged is not None:
            return [_filter(merged, lo, hi, wanted, ordered=False)]
    chosen = None if wanted is None else wanted.tolist()
    return [p.read(schema, lo, hi, chosen) for p in group]


def _segments(root: Path, topic: str, schemas: list[Schema]) -> list[SegmentInfo]:
    if not list_segments(root, topic) and not archived_partitions(root, topic):
        stored = ", ".join(list_topics(root)) or "none"
        raise StorageError(
            f"no stored topic {topic!r} under {root}; stored topics there: {stored} "
            f"(pass path= to read another store)"
        )
    return segment_infos(root, topic, list(schemas))


def _one_schema(
    infos: list[SegmentInfo], parts: list, schemas: list[Schema], root: Path, topic: str
) -> Schema:
    found = {info.schema.schema_id: info.schema for info in infos}
    if len(found) > 1:
        keys = sorted(s.key for s in found.values())
        raise StorageError(
            f"{root / topic} mixes schemas {keys}; read one with a copy of the folder holding "
            f"only its segments"
        )
    keys = {p.entry.schema for p in parts}
    if found:
        schema = next(iter(found.values()))
        if keys - {schema.key}:
            raise StorageError(
                f"{root / topic}: archived partitions hold {sorted(keys)} but its segments "
                f"{schema.key}; move one of them away"
            )
        return schema
    from hftagg.records.catalog import BUILTIN_SCHEMAS

    for schema in [*schemas, *BUILTIN_SCHEMAS]:
        if keys == {schema.key}:
            return schema
    raise StorageError(
        f"{root / topic}: archived partitions hold {sorted(keys)}, a schema this process does "
        f"not know; pass schemas=[...] with the plugin's schema"
    )


def _overlaps(info: Any, lo: int | None, hi: int | None) -> bool:
    if info.ts_min == 0 and info.ts_max == 0:
        return True  # no time range recorded (format 0)
    return (lo is None or info.ts_max >= lo) and (hi is None or info.ts_min < hi)


def _filter(
    records: np.ndarray, lo: int | None, hi: int | None, wanted: np.ndarray | None, ordered: bool
) -> np.ndarray:
    if lo is not None or hi is not None:
        ts = records["ts_event"]
        if ordered:
            a = 0 if lo is None else int(np.searchsorted(ts, lo, "left"))
            b = len(ts) if hi is None else int(np.searchsorted(ts, hi, "left"))
            records = records[a:b]
        else:
            keep = np.ones(len(ts), bool)
            if lo is not None:
                keep &= ts >= lo
            if hi is not None:
                keep &= ts < hi
            records = records[keep]
    if wanted is not None:
        records = records[np.isin(records["instrument_id"], wanted)]
    return records
