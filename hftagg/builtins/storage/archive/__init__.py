"""The store's archive: sealed segments compacted to Parquet (zstd), a DuckDB catalog of the
partitions that heals itself, retention, and reading archived records back.

- :mod:`.parquet`: one partition file per topic, UTC date and source segment; written
  crash-safely; read back with row-group skipping;
- :mod:`.catalog`: ``<path>/catalog.duckdb`` and its healing (``quarantine/``);
- :mod:`.compact`: the background compactor the store stage runs, and retention;
- :mod:`.segments`: the archive's view of the store's segment files.

:func:`partitions` and :func:`read_archived` are what ``hftagg.read`` reads archived data
through; importing this package registers the partition lister with the store's layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from hftagg.builtins.storage.archive.catalog import Catalog, CatalogUnusable
from hftagg.builtins.storage.archive.parquet import (
    PartitionFile,
    describe,
    read_partition,
    source_rows,
)
from hftagg.builtins.storage.store.layout import register_partition_lister
from hftagg.errors import StorageError
from hftagg.records.schema import Schema

log = logging.getLogger("hftagg.store")

__all__ = ["ArchivedPartition", "merge_segment", "partitions", "read_archived"]


@dataclass(frozen=True)
class ArchivedPartition:
    """A catalogued Parquet partition, located: ``path`` (absolute), ``position`` (the store
    position of its source segment: every partition of one segment has the segment's, so a
    reader tells an archived segment from a live one by it, and the rows of one position add up
    to the segment's count). Partitions of one segment sort by ``entry.source_row``, the index
    in the segment of their first record.
    """

    entry: PartitionFile
    path: Path

    @property
    def schema_key(self) -> str:
        return self.entry.schema

    @property
    def ts_min(self) -> int:
        return self.entry.ts_min

    @property
    def ts_max(self) -> int:
        return self.entry.ts_max

    @property
    def rows(self) -> int:
        return self.entry.rows

    @property
    def instruments(self) -> tuple[int, ...]:
        return self.entry.instruments

    @property
    def position(self) -> int:
        stem = Path(self.entry.source).stem
        return int(stem) if stem.isdigit() else 0

    def source_rows(self) -> np.ndarray | None:
        """Indices in the source segment of this file's rows when they are not one run (the
        segment's dates interleave near midnight); ``None`` when they are."""
        try:
            return source_rows(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"{self.path}: archived partition footer cannot be read: {exc}; run "
                f"hftagg store verify"
            ) from exc

    def read(
        self,
        schema: Schema,
        start: int | None = None,
        end: int | None = None,
        instruments: list[int] | None = None,
    ) -> np.ndarray:
        """Its records with ``start <= ts_event < end`` of ``instruments``, in stored order;
        :class:`StorageError` naming the file when it cannot be read."""
        try:
            return read_partition(self.path, schema, start, end, instruments)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"{self.path}: archived partition ({self.entry.rows} rows of "
                f"{self.entry.topic}, {self.entry.date}) cannot be read: {exc}; run "
                f"hftagg store verify"
            ) from exc


def partitions(
    path: str | Path,
    topic: str,
    start: int | None = None,
    end: int | None = None,
    instruments: list[int] | None = None,
) -> list[ArchivedPartition]:
    """The archived partitions of ``topic`` that may hold ``start <= ts_event < end`` (ns) of
    ``instruments``, in store order (source segment position, then date)."""
    root = Path(path)
    if (root / "catalog.duckdb").exists():
        try:
            found = Catalog(root).partitions(topic, start, end, instruments)
        except CatalogUnusable as exc:
            log.warning("%s; reading the partition files found on disk instead", exc)
            found = _scan(root, topic, start, end, instruments)
    else:  # never archived, or the catalog was lost: the files say what there is
        found = _scan(root, topic, start, end, instruments)
        if found:
            log.warning(
                "%s has no catalog.duckdb: read %d partition file(s) of %s found on disk (the "
                "store rebuilds the catalog when it next starts)",
                root,
                len(found),
                topic,
            )
    located = [ArchivedPartition(p, root / p.file) for p in found]
    return sorted(located, key=lambda p: (p.position, p.entry.source_row, p.entry.date))


def _scan(root: Path, topic: str, start, end, instruments) -> list[PartitionFile]:
    """Partition entries described from the files themselves (when the catalog is unusable)."""
    found = []
    for file in sorted((root / topic).glob("date=*/*.parquet")):
        try:
            entry = describe(root, file)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is named and skipped
            log.warning("skipped %s: unreadable: %s", file, exc)
            continue
        if start is not None and entry.ts_max < start:
            continue
        if end is not None and entry.ts_min >= end:
            continue
        if instruments is not None and not set(entry.instruments) & set(instruments):
            continue
        found.append(entry)
    return found


def read_archived(
    path: str | Path,
    topic: str,
    schema: Schema,
    start: int | None = None,
    end: int | None = None,
    instruments: list[int] | None = None,
    exclude_positions: set[int] | frozenset[int] = frozenset(),
) -> np.ndarray:
    """Every archived record of ``topic`` in range, in store order, as one record array.

    ``exclude_positions``: positions of segments the caller is reading live (a segment being
    archived right now exists both ways for a moment; its live copy wins). A partition that
    cannot be read is skipped with a warning naming the file and the rows it holds, so the
    good data stays readable."""
    parts = []
    groups: dict[int, list[ArchivedPartition]] = {}
    for p in partitions(path, topic, start, end, instruments):
        if p.position not in exclude_positions:
            groups.setdefault(p.position, []).append(p)
    for group in groups.values():
        try:
            merged = merge_segment(group, schema) if len(group) > 1 else None
            if merged is not None:
                parts.append(_filter(merged, start, end, instruments))
                continue
            for p in group:
                parts.append(p.read(schema, start, end, instruments))
        except StorageError as exc:
            log.warning("skipped: %s", exc)
    return np.concatenate(parts) if parts else schema.empty(0)


def _filter(records: np.ndarray, start, end, instruments) -> np.ndarray:
    keep = np.ones(len(records), bool)
    if start is not None:
        keep &= records["ts_event"] >= start
    if end is not None:
        keep &= records["ts_event"] < end
    if instruments is not None:
        keep &= np.isin(records["instrument_id"], np.asarray(instruments, np.uint32))
    return records[keep]


def merge_segment(group: list, schema: Schema) -> np.ndarray | None:
    """The records of one source segment's partitions (``group``, one position) back in the
    segment's order, when the segment's dates interleaved near midnight (so the files are not
    runs of it); ``None`` when they are runs, which read in ``source_row`` order already are.
    Works on any subset of the segment's files (a time window may skip one). Whole files are
    read (only such a segment's files pay it); the caller filters."""
    rows = [p.source_rows() for p in group]
    if all(r is None for r in rows):
        return None
    records, where = [], []
    for part, at in zip(group, rows, strict=True):
        got = part.read(schema)
        if at is None:  # a file that is one run of the segment
            at = np.arange(part.entry.source_row, part.entry.source_row + len(got))
        if len(at) != len(got):
            raise StorageError(
                f"{part.path}: its footer names {len(at)} rows of its segment but it holds "
                f"{len(got)}; run hftagg store verify"
            )
        records.append(got)
        where.append(at)
    return np.concatenate(records)[np.argsort(np.concatenate(where), kind="stable")]


def _lister(root: Path, topic: str) -> list[ArchivedPartition]:
    return partitions(root, topic)


register_partition_lister(_lister)
