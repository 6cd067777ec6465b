"""The DuckDB catalog of archived partitions (``<path>/catalog.duckdb``), and its self-healing.

One table, ``partitions``: one row per Parquet file (topic, schema, UTC date, ``ts_event``
range, rows, bytes, CRC32C, instruments, source segment). The files are the truth and the
catalog an index over them: :meth:`Catalog.heal` (run when a store opens) makes the index match
the files again after any crash or manual damage:

- a file with no row (a crash between rename and insert, or a lost catalog) is described from
  its own footer and catalogued;
- a row whose file vanished is pruned, with a warning naming the file and its rows;
- a file that cannot be read (bad footer, bad page CRC, not an hftagg partition, a size or
  footer row count that differs from the catalogued one) is moved to ``<path>/quarantine/`` with a log line naming
  the file and the reason, and its row removed;
- a catalog file DuckDB cannot open, or one of another layout (an older hftagg's), is moved to
  quarantine too and rebuilt from the files (the files carry everything it holds);
- ``.tmp`` files left by an interrupted write are removed.

DuckDB allows one writing process per database file, and the pipeline's store and a user's
``hftagg query`` or ``hftagg store verify`` are different processes: every operation opens the
database, does its work in one transaction and closes it again, retrying for a few seconds
while another process holds the lock, so the store never keeps readers out for long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from hftagg.builtins.storage.archive.parquet import PartitionFile, describe, fsync_dir
from hftagg.errors import CatalogUnusable, StorageError

__all__ = ["CATALOG_FILE", "QUARANTINE_DIR", "Catalog", "CatalogUnusable", "HealReport"]

log = logging.getLogger("hftagg.store.catalog")

CATALOG_FILE = "catalog.duckdb"
QUARANTINE_DIR = "quarantine"
LOCK_WAIT_SECS = 10.0
#: DuckDB's words for "another connection has it" (another process, or this one in another mode)
_BUSY = ("conflicting lock", "could not set lock", "different configuration")
_PROCESS_LOCKS: dict[Path, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(file: Path) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(file.resolve(), threading.Lock())


_COLUMNS = (
    "file VARCHAR PRIMARY KEY, topic VARCHAR NOT NULL, schema VARCHAR NOT NULL, "
    "date DATE NOT NULL, ts_min BIGINT NOT NULL, ts_max BIGINT NOT NULL, rows BIGINT NOT NULL, "
    "bytes BIGINT NOT NULL, checksum UBIGINT NOT NULL, instruments UINTEGER[] NOT NULL, "
    "source VARCHAR NOT NULL, source_row BIGINT NOT NULL"
)
_FIELDS = tuple(PartitionFile.__dataclass_fields__)


@dataclass
class HealReport:
    """What :meth:`Catalog.heal` found and did (each list names files)."""

    added: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    temporary_removed: list[str] = field(default_factory=list)
    catalog_rebuilt: str = ""  # why, when the catalog file itself was unusable

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.pruned
            or self.quarantined
            or self.temporary_removed
            or self.catalog_rebuilt
        )


def _row(p: PartitionFile) -> tuple:
    return tuple(list(p.instruments) if f == "instruments" else getattr(p, f) for f in _FIELDS)


def _partition(row: tuple) -> PartitionFile:
    values = dict(zip(_FIELDS, row, strict=True))
    values["date"] = str(values["date"])
    values["instruments"] = tuple(values["instruments"])
    return PartitionFile(**values)


def _footer_problem(path: Path, part: PartitionFile) -> str:
    """Why a catalogued file is unusable, from its size and footer alone ("" when it is
    fine); a full CRC check of every file is ``hftagg store verify``'s job, not every start's."""
    size = path.stat().st_size
    if size != part.bytes:
        return f"size {size} bytes, catalogued as {part.bytes}"
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - any failure to read the footer
        return f"unreadable footer: {type(exc).__name__}: {exc}"
    if rows != part.rows:
        return f"{rows} rows in its footer, catalogued as {part.rows}"
    return ""


class Catalog:
    """The partitions of one store path (``root``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.file = self.root / CATALOG_FILE

    # -- connections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation. Threads of this process take turns (DuckDB refuses
        a read-only and a read-write connection to one file in one process); other processes
        holding the file are waited for up to :data:`LOCK_WAIT_SECS`."""
        with _process_lock(self.file):
            con = self._open(read_only)
            try:
                yield con
            finally:
                con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.file.exists():
            con = duckdb.connect(":memory:")
            con.execute(f"CREATE TABLE partitions ({_COLUMNS})")
            return con
        deadline = time.monotonic() + LOCK_WAIT_SECS
        while True:
            try:
                con = duckdb.connect(str(self.file), read_only=read_only)
                break
            except duckdb.Error as exc:
                text = str(exc).lower()
                busy = any(mark in text for mark in _BUSY)
                if busy and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if busy or "permission denied" in text:
                    raise StorageError(
                        f"{self.file}: cannot open the catalog ({exc}); if another hftagg "
                        f"process holds it, retry when it is idle"
                    ) from exc
                raise CatalogUnusable(
                    f"{self.file}: the catalog cannot be opened ({exc}); the store rebuilds it "
                    f"from the Parquet files when it next opens (hftagg store verify reports it)"
                ) from exc
        if not read_only:
            con.execute(f"CREATE TABLE IF NOT EXISTS partitions ({_COLUMNS})")
        return con

    # -- reading -------------------------------------------------------------------------

    def partitions(
        self,
        topic: str | None = None,
        start: int | None = None,
        end: int | None = None,
        instruments: Iterable[int] | None = None,
    ) -> list[PartitionFile]:
        """Partitions of ``topic`` (all topics if None) that may hold records with
        ``start <= ts_event < end`` of one of ``instruments``, oldest first."""
        where, args = ["TRUE"], []
        if topic is not None:
            where.append("topic = ?")
            args.append(topic)
        if start is not None:
            where.append("ts_max >= ?")
            args.append(int(start))
        if end is not None:
            where.append("ts_min < ?")
            args.append(int(end))
        if instruments is not None:
            where.append("list_has_any(instruments, ?::UINTEGER[])")
            args.append([int(i) for i in instruments])
        sql = f"SELECT {', '.join(_FIELDS)} FROM partitions WHERE {' AND '.join(where)}"
        with self._connect(read_only=True) as con:
            rows = con.execute(sql + " ORDER BY topic, ts_min, file", args).fetchall()
        return [_partition(r) for r in rows]

    def topics(self) -> list[str]:
        with self._connect(read_only=True) as con:
            rows = con.execute("SELECT DISTINCT topic FROM partitions ORDER BY 1").fetchall()
            return [r[0] for r in rows]

    def archived_sources(self) -> dict[str, int]:
        """Rows catalogued per source segment."""
        with self._connect(read_only=True) as con:
            sql = "SELECT source, sum(rows) FROM partitions GROUP BY source"
            return {source: int(rows) for source, rows in con.execute(sql).fetchall()}

    def replace_source(self, source: str, parts: list[PartitionFile]) -> None:
        """Catalog ``parts`` as everything segment ``source`` became (see
        :meth:`replace_sources`)."""
        self.replace_sources({source: parts})

    def replace_sources(self, sources: dict[str, list[PartitionFile]]) -> None:
        """Catalog what each segment became, all in one transaction; rows of an earlier,
        interrupted attempt at the same segments (or files) are replaced."""
        parts = [p for group in sources.values() for p in group]
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("DELETE FROM partitions WHERE list_contains(?, source)", [list(sources)])
            self._insert(con, parts)
            con.execute("COMMIT")

    def add_files(self, parts: list[PartitionFile]) -> None:
        """Catalog files found on disk (replacing rows of the same file names), at once."""
        if not parts:
            return
        with self._connect() as con:
            con.execute("BEGIN")
            self._insert(con, parts)
            con.execute("COMMIT")

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, parts: list[PartitionFile]) -> None:
        if not parts:
            return
        con.execute(
            "DELETE FROM partitions WHERE list_contains(?, file)", [[p.file for p in parts]]
        )
        marks = ", ".join("?" * len(_FIELDS))
        con.executemany(f"INSERT INTO partitions VALUES ({marks})", [_row(p) for p in parts])

    def remove(self, files: list[str]) -> None:
        if not files:
            return
        with self._connect() as con:
            con.execute("DELETE FROM partitions WHERE list_contains(?, file)", [files])

    # -- healing -------------------------------------------------------------------------

    def quarantine(self, relative: str, reason: str) -> Path:
        """Move a file of the store into ``<root>/quarantine/`` (keeping its relative path),
        logging the file and the reason."""
        source = self.root / relative
        target = self.root / QUARANTINE_DIR / relative
        if target.exists():
            target = target.with_name(f"{target.name}.{int(time.time() * 1e3)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        fsync_dir(source.parent)
        log.warning("quarantined %s -> %s: %s", source, target, reason)
        return target

    def _open_or_rebuild(self, report: HealReport) -> None:
        if not self.file.exists():
            return
        reason = ""
        try:
            with self._connect() as con:
                sql = "SELECT column_name FROM duckdb_columns() WHERE table_name = 'partitions'"
                columns = tuple(r[0] for r in con.execute(sql).fetchall())
            if columns != _FIELDS:
                reason = f"its partitions table has columns {columns}, this hftagg writes {_FIELDS}"
        except CatalogUnusable as exc:
            reason = f"DuckDB cannot open it: {exc.__cause__}"
        if not reason:
            return
        for extra in (self.file.with_name(self.file.name + ".wal"),):
            if extra.exists():
                self.quarantine(extra.name, reason)
        self.quarantine(self.file.name, reason)
        report.catalog_rebuilt = reason
        log.warning("rebuilding %s from the Parquet files", self.file)

    def _data_files(self) -> tuple[list[Path], list[Path]]:
        parquet, temporary = [], []
        quarantine = self.root / QUARANTINE_DIR
        for directory, _dirs, names in os.walk(self.root):
            here = Path(directory)
            if here == quarantine or quarantine in here.parents:
                continue
            if not here.name.startswith("date="):
                continue
            for name in names:
                if name.endswith(".tmp"):
                    temporary.append(here / name)
                elif name.endswith(".parquet"):
                    parquet.append(here / name)
        return sorted(parquet), sorted(temporary)

    def heal(self) -> HealReport:
        """Make the catalog match the files (see the module docstring); returns what it did."""
        report = HealReport()
        if not self.root.exists():
            return report
        self._open_or_rebuild(report)
        parquet, temporary = self._data_files()
        for tmp in temporary:
            tmp.unlink()
            report.temporary_removed.append(tmp.relative_to(self.root).as_posix())
            log.warning("removed %s: an interrupted Parquet write", tmp)
        on_disk = {p.relative_to(self.root).as_posix(): p for p in parquet}
        known = {p.file: p for p in self.partitions()}
        for name, part in known.items():
            if name not in on_disk:
                report.pruned.append(name)
                log.warning(
                    "catalog entry %s (%s, %d rows, %s) pruned: the file is gone",
                    name,
                    part.topic,
                    part.rows,
                    part.date,
                )
            else:
                reason = _footer_problem(on_disk[name], part)
                if reason:
                    self.quarantine(name, reason)
                    report.quarantined.append((name, reason))
        self.remove(report.pruned + [f for f, _ in report.quarantined])
        found = []
        for name, path in on_disk.items():
            if name in known:
                continue
            try:
                part = describe(self.root, path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file goes to quarantine
                reason = f"unreadable: {type(exc).__name__}: {exc}"
                self.quarantine(name, reason)
                report.quarantined.append((name, reason))
                continue
            found.append(part)
            report.added.append(name)
            log.info("catalogued %s (%d rows) from its footer", name, part.rows)
        self.add_files(found)
        return report
