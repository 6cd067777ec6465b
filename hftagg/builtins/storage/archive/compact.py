"""Compaction of sealed segments to Parquet, and retention, in a background thread.

The store stage owns a :class:`Compactor` (``start()`` when it opens, ``wake()`` after it seals
a segment, ``stop()`` when it closes); nothing here runs on the append path. One pass
(:meth:`Compactor.run_once`):

1. the first pass heals the catalog (:meth:`Catalog.heal`);
2. every sealed segment under ``<path>/<topic>/`` becomes one Parquet file per UTC date, in this
   order, each step durable before the next:

   a. write ``.tmp``, fsync, rename to its final name, fsync the directory;
   b. catalog every file of the segment in one DuckDB transaction (segments go in batches of
      up to :data:`BATCH_SEGMENTS`: their files first, then one transaction for all);
   c. delete the segment, fsync its directory.

   A crash after (a) leaves a complete file with no row: healing catalogues it from its footer,
   and the segment, still there, is compacted again (same file names, replaced whole; its rows
   replaced in one transaction). A crash after (b) leaves a segment whose rows are all
   catalogued: it is deleted without being written again. No step deletes anything that is not
   already durable elsewhere, so a crash at any point loses nothing and duplicates nothing.
3. retention: a partition whose newest ``ts_event`` is older than the topic's retention is
   deleted, file first, then its row (a crash in between leaves a row whose file is gone,
   which healing prunes).

Live segments (not sealed) are never touched. The newest segment of a topic is the live one, so
the store keeps the first stream offset it needs for ``committed()`` in its own files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hftagg.builtins.storage.archive import segments
from hftagg.builtins.storage.archive.catalog import Catalog, HealReport
from hftagg.builtins.storage.archive.parquet import fsync_dir, write_partitions

__all__ = ["CompactionReport", "Compactor"]

log = logging.getLogger("hftagg.store.compact")

#: segments archived per catalog transaction (a DuckDB commit and checkpoint costs tens of ms,
#: which small segments would otherwise pay each)
BATCH_SEGMENTS = 64
BATCH_BYTES = 512 * 1024 * 1024


@dataclass
class CompactionReport:
    """What one pass did."""

    heal: HealReport | None = None
    compacted: list[str] = field(default_factory=list)  # segments turned into Parquet
    files: list[str] = field(default_factory=list)  # Parquet files written
    rows: int = 0
    already_archived: list[str] = field(default_factory=list)  # deleted, rows were catalogued
    expired: list[str] = field(default_factory=list)  # partitions removed by retention
    problems: list[str] = field(default_factory=list)  # segments that could not be compacted


class Compactor:
    """Archives the sealed segments of the store at ``root`` (see the module docstring).

    ``retention_ns``: per topic (``"*"``: every other topic), how long partitions are kept (by
    their newest ``ts_event`` against the wall clock); topics not in it are kept forever. The
    store changes it live with :meth:`set_retention`. ``interval_secs``: how often
    the thread looks for sealed segments when nobody calls :meth:`wake`.
    """

    def __init__(
        self,
        root: Path | str,
        retention_ns: dict[str, int] | None = None,
        interval_secs: float = 5.0,
        clock=time.time_ns,
        settle_ns: int = segments.SETTLE_NS,
    ) -> None:
        self.root = Path(root)
        self.catalog = Catalog(self.root)
        self.retention_ns = dict(retention_ns or {})
        self.interval_secs = interval_secs
        self._clock = clock
        self.settle_ns = settle_ns
        self._healed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: running totals for status lines: segments and rows archived, Parquet files written,
        #: partitions expired, segments with problems
        self.totals = {"segments": 0, "rows": 0, "files": 0, "expired": 0, "problems": 0}
        self.error: BaseException | None = None

    def set_retention(self, retention_ns: dict[str, int]) -> None:
        """New per-topic retention (ns), applied from the next pass."""
        self.retention_ns = dict(retention_ns)
        self.wake()

    # -- thread ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hftagg-compact", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for sealed segments now (the store calls this after sealing one)."""
        self._wake.set()

    def stop(self, final_pass: bool = True) -> None:
        """Stop the thread; with ``final_pass``, archive what was sealed meanwhile first."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join()
        self._stop.clear()  # the thread is gone; a final pass runs to its end
        if final_pass:
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the store is closing: say so, go on
                self.error = exc
                log.exception("final compaction pass of %s failed", self.root)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - logged, kept, retried next pass
                self.error = exc
                log.exception(
                    "compaction of %s failed; retrying in %ss", self.root, self.interval_secs
                )
            self._wake.wait(self.interval_secs)
            self._wake.clear()

    # -- one pass -------------------------------------------------------------------------

    def run_once(self) -> CompactionReport:
        report = CompactionReport()
        if not self._healed:
            report.heal = self.catalog.heal()
            self._healed = True
        ready = list(segments.sealed_segments(self.root, time.time_ns(), self.settle_ns))
        held = self.catalog.archived_sources() if ready else {}
        batch: list = []
        size = 0
        for info in ready:
            batch.append(info)
            size += info.count * info.record_size
            if len(batch) >= BATCH_SEGMENTS or size >= BATCH_BYTES:
                self._compact(batch, held, report)
                batch, size = [], 0
                if self._stop.is_set():
                    break  # stopping: the rest waits for the next pass (or run)
        if batch and not self._stop.is_set():
            self._compact(batch, held, report)
        self._expire(report)
        self._add(report)
        return report

    def _compact(self, infos: list, held: dict[str, int], report: CompactionReport) -> None:
        """Archive a batch of sealed segments: their files, then one catalog transaction,
        then the segments' deletion (the order the module docstring explains)."""
        written: dict[str, list] = {}
        for info in infos:
            source = Path(info.path).relative_to(self.root).as_posix()
            for problem in info.problems:
                report.problems.append(problem)
                log.warning("%s; archiving its %d good records", problem, info.count)
            if info.count and held.get(source) == info.count:
                report.already_archived.append(source)
            elif info.count:
                records = segments.records(info)
                topic = Path(info.path).parent.name
                written[source] = write_partitions(self.root, topic, info.schema, records, source)
                del records
        if written:
            self.catalog.replace_sources(written)
        for info in infos:
            os.unlink(info.path)
        for folder in {Path(info.path).parent for info in infos}:
            fsync_dir(folder)
        for info in infos:
            source = Path(info.path).relative_to(self.root).as_posix()
            parts = written.get(source, [])
            report.files.extend(p.file for p in parts)
            report.rows += info.count if parts else 0
            report.compacted.append(source)
            log.info("archived %s (%d records) to Parquet", source, info.count)

    def _expire(self, report: CompactionReport) -> None:
        now = self._clock()
        retention = dict(self.retention_ns)
        default = retention.pop("*", None)
        if default is not None:
            for topic in self.catalog.topics():
                retention.setdefault(topic, default)
        for topic, keep_ns in retention.items():
            old = self.catalog.partitions(topic, end=None)
            old = [p for p in old if p.ts_max < now - keep_ns]
            for part in old:
                path = self.root / part.file
                if path.exists():
                    path.unlink()
                    fsync_dir(path.parent)
            self.catalog.remove([p.file for p in old])
            for part in old:
                log.info("retention: removed %s (%s, %d rows)", part.file, topic, part.rows)
            report.expired.extend(p.file for p in old)

    def _add(self, report: CompactionReport) -> None:
        self.totals["segments"] += len(report.compacted)
        self.totals["rows"] += report.rows
        self.totals["files"] += len(report.files)
        self.totals["expired"] += len(report.expired)
        self.totals["problems"] += len(report.problems)
