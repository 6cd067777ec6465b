"""Built-in plugin: the ``store`` sink, which keeps topics in segment files under ``path``.

Each input topic is appended to its own folder of segments (format and layout in
:mod:`~hftagg.builtins.storage.store.segment` and :mod:`~hftagg.builtins.storage.store.layout`).
Python runs once per batch: one ``pwrite`` of the batch's bytes, then the header's count. A
segment is sealed (truncated to its records, flagged) when the next batch would not fit in
``segment_bytes``, when it is older than ``segment_age_secs`` (checked once a second on any
topic's batch, so an idle topic's segment seals too while others flow), when the stream offsets
jump (a segment holds contiguous offsets), and when the stage closes.

Offsets and idempotency. ``write(batch, port, offset)`` gets each batch's first stream offset.
When the runtime says stream offsets are durable across runs (the write-ahead log is on:
``StageContext.durable_offsets``), segments are written with epoch 0 and the durable flag, the
store finds at open the next offset it needs per topic from its last durable segment, reports
it through :meth:`Store.committed`, and skips what it already holds (a batch overlapping that
offset is trimmed), so a replay after a crash duplicates nothing. Without the log, offsets
restart at 0 each run: every run gets a new epoch (its start time in ns), begins new segments
after what is stored, and ``committed`` reports the offsets of the current run only.

What "held" means: the records are in the page cache when ``write`` returns, so a process crash
(even ``kill -9``) loses nothing counted. ``fsync`` defaults to ``none`` because the write-ahead
log is where durability against power loss is bought (with its own fsync policy); a store used
without it takes ``seal`` (each sealed segment and its STATE fsynced: ~50 ms per 64 MiB on the
sink's thread here) or ``every_batch``.

Archiving (``archive = true``): the catalog's :class:`Compactor` runs in a background thread,
started at open when there is work (sealed segments left, a catalog to heal), else at the first
seal, woken after each seal and stopped without a last pass at close (what the end of a run
seals is archived by the next run), so a short run or a benchmark does not pay for it.

One process writes a topic at a time (``<topic>/LOCK``); a live segment left by a crashed
writer is sealed at the next open, cut to its committed records, with a log line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from hftagg.builtins.storage.store.kernels import warm as warm_kernels
from hftagg.builtins.storage.store.layout import (
    TopicLock,
    archived_end,
    read_state,
    segment_infos,
    topic_dir,
    topic_problem,
    write_state,
)
from hftagg.builtins.storage.store.segment import (
    SEGMENT_SUFFIX,
    TEMPORARY_SUFFIX,
    SegmentInfo,
    SegmentWriter,
    seal_abandoned,
    segment_name,
)
from hftagg.errors import StorageError
from hftagg.hookspecs import hookimpl
from hftagg.records.schema import Schema
from hftagg.stages import Params, Port, SinkStage, StageContext, live, restart

__all__ = ["Store", "StoreParams", "parse_duration_secs"]

log = logging.getLogger("hftagg.storage")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration_secs(text: str) -> float | None:
    """``"7d"`` -> 604800.0; ``"forever"`` -> ``None``. Units: s, m, h, d, w."""
    if text.strip().lower() == "forever":
        return None
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"retention {text!r} is not a duration: write a positive number and a unit "
            f"(s, m, h, d, w), e.g. '7d' or '12h', or 'forever'"
        )
    return float(match.group(1)) * _UNIT_SECS[match.group(2)]


class StoreParams(Params):
    path: str = restart("./storage", description="store folder (relative: to the working dir)")
    topics: list[str] = restart(
        ["md.trades"], min_length=1, description="topics to store, one folder each"
    )
    segment_bytes: int = live(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024**3,
        description="seal a segment when the next batch would pass this size",
    )
    segment_age_secs: float = live(
        3600.0, ge=0, description="seal a segment this old at its next batch (0: no age limit)"
    )
    retention: dict[str, str] = live(
        {},
        description="per topic (or '*'): how long archived data is kept, e.g. '7d', 'forever'",
    )
    fsync: Literal["none", "seal", "every_batch"] = live(
        "none",
        description="fsync never (page cache: survives a process crash), sealed segments, or "
        "every batch",
    )
    archive: bool = restart(
        True, description="compact sealed segments to Parquet (zstd) with a DuckDB catalog"
    )
    archive_interval_secs: float = restart(
        5.0, gt=0, le=3600, description="how often the archiver looks for sealed segments"
    )

    @field_validator("topics")
    @classmethod
    def _topics_name_folders(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            problem = topic_problem(topic)
            if problem:
                raise ValueError(problem)
        if len(set(topics)) != len(topics):
            raise ValueError(f"topics {topics} lists a topic twice")
        return topics

    @field_validator("retention")
    @classmethod
    def _retention_durations(cls, retention: dict[str, str]) -> dict[str, str]:
        for duration in retention.values():
            parse_duration_secs(duration)
        return retention

    def retention_secs(self, topic: str) -> float | None:
        """How long ``topic``'s data is kept (``None``: forever); the catalog enforces it."""
        duration = self.retention.get(topic, self.retention.get("*", "forever"))
        return parse_duration_secs(duration)

    def retention_ns(self) -> dict[str, int]:
        """Finite retentions in ns, per topic and ``"*"`` (what the archiver takes)."""
        out = {}
        for topic, duration in self.retention.items():
            secs = parse_duration_secs(duration)
            if secs is not None:
                out[topic] = int(secs * 1e9)
        return out


@dataclass
class _Topic:
    """One stored topic: its folder, lock, schema, live writer and where it stands."""

    topic: str
    folder: Path
    schema: Schema
    lock: TopicLock
    position: int  # store position of the next record
    next_offset: int  # stream offset of the next record this run (durable: across runs)
    writer: SegmentWriter | None = None
    records: int = 0
    duplicates: int = 0
    sealed: int = 0


class Store(SinkStage):
    """Keeps topics in numpy-readable segment files under ``path``, archived to Parquet.

    Read them back with ``hftagg.read``, ``hftagg store ls`` and ``hftagg query``."""

    kind = "storage"
    type_name = "store"
    Params = StoreParams

    @classmethod
    def ports(cls, params: StoreParams) -> tuple[dict[str, Port], dict[str, Port]]:
        return {topic: Port(None, topic) for topic in params.topics}, {}

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """What ``open`` refuses, found without writing: a path that is a file, a topic whose
        stored schema differs from the one the pipeline sends, an unknown retention topic."""
        p = self.params
        problems = []
        root = Path(p.path)
        if root.exists() and not root.is_dir():
            problems.append(("path", f"{root} exists and is not a folder; choose another path"))
            return problems
        unknown = sorted(set(p.retention) - set(p.topics) - {"*"})
        if unknown:
            problems.append(
                ("retention", f"names topics not stored here: {unknown}; stored: {p.topics}")
            )
        for topic in self.input_topics.values():
            schema = ctx.topic_schemas.get(topic)
            if schema is None:
                continue
            try:
                infos = segment_infos(p.path, topic, [schema])
            except StorageError as exc:
                problems.append(("path", str(exc)))
                continue
            mismatch = _schema_mismatch(root, topic, schema, infos)
            if mismatch:
                problems.append(("topics", mismatch))
        return problems

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self._durable = ctx.durable_offsets
        self._epoch = 0 if self._durable else time.time_ns()
        self._topics: dict[str, _Topic] = {}
        self._compactor = None
        self._age_check_at = 0.0
        warm_kernels()  # loaded from numba's cache now, not at the first batch
        try:
            for port, topic in self.input_topics.items():
                schema = ctx.topic_schemas.get(topic)
                if schema is None:
                    raise StorageError(
                        f"stage {self.stage_id!r}: topic {topic!r} has no schema in this graph; "
                        f"store only topics some stage produces"
                    )
                self._topics[port] = self._open_topic(Path(p.path), topic, schema)
            if p.archive and _archive_work(Path(p.path), self._topics.values()):
                self._compactor = _start_archiver(p)  # leftovers to archive, a catalog to heal
        except BaseException:
            self.close()
            raise

    def _open_topic(self, root: Path, topic: str, schema: Schema) -> _Topic:
        folder = topic_dir(root, topic)
        folder.mkdir(parents=True, exist_ok=True)
        lock = TopicLock(folder)
        try:
            for making in folder.glob(f"*{SEGMENT_SUFFIX}{TEMPORARY_SUFFIX}"):
                making.unlink()  # a segment whose making a crash interrupted: it held nothing
            infos = [self._recover(info) for info in segment_infos(root, topic, [schema])]
            mismatch = _schema_mismatch(root, topic, schema, infos)
            if mismatch:
                raise StorageError(mismatch)
        except BaseException:
            lock.release()
            raise
        # where the topic stands: its last segment, else STATE (written at each seal, so it
        # survives the archiving of every segment); positions go on after archived rows too
        last = infos[-1] if infos else None
        state = read_state(folder) or {}
        tail = {"position": 0, "end_offset": 0, "durable": False, **state}
        from_last = last is not None and last.position + last.count >= tail["position"]
        if from_last:
            tail = {
                "position": last.position + last.count,
                "end_offset": last.end_offset,
                "durable": last.durable_offsets,
            }
        if from_last and last.sealed and any(state.get(k) != v for k, v in tail.items()):
            # the last segment is sealed (by its writer, or just now by _recover) but STATE
            # does not say so yet (a crash came between): write it before the archiver may
            # delete that segment, or the next open would take the older STATE and re-append
            # the stream offsets the archive already holds (read twice, issue 11)
            write_state(folder, {**tail, "epoch": last.epoch}, fsync=True)
        for info in infos:
            if info.sealed and info.count == 0:
                # holds nothing (a kill came between a segment's making and its first records,
                # or between sealing an empty one and deleting it): its position is the next
                # segment's, so it goes now (STATE, just written, has what it told)
                os.unlink(info.path)
                log.info("%s: removed %s, an empty segment a crash left", self.stage_id, info.path)
        position = max(tail["position"], archived_end(root, topic))
        next_offset = tail["end_offset"] if self._durable and tail["durable"] else 0
        return _Topic(topic, folder, schema, lock, position, next_offset)

    def _recover(self, info: SegmentInfo) -> SegmentInfo:
        for problem in info.problems:
            log.warning("%s: %s", self.stage_id, problem)
        if info.sealed or info.format_version < 1:
            return info
        sealed = seal_abandoned(info)
        log.warning(
            "%s: sealed %s, left live by a writer that stopped without closing it (%d records "
            "kept, stream offsets %d..%d)",
            self.stage_id, info.path, info.count, info.first_offset, info.end_offset,
        )  # fmt: skip
        return sealed

    # -- the hot path: once per batch ----------------------------------------------------------

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        t = self._topics[port]
        n = len(batch)
        if not n:
            return  # no segment for nothing (a kill would leave it empty, at the next position)
        if self._durable and offset < t.next_offset:
            held = min(n, t.next_offset - offset)
            t.duplicates += held
            if held == n:
                return
            batch, offset, n = batch[held:], offset + held, n - held
        start, total = offset, n
        writer = t.writer
        if writer is None or offset != writer.end_offset or self._too_old(writer):
            writer = self._roll(t, offset)
        while True:
            room = writer.room
            if n <= room:
                writer.append(batch)
                break
            if room:
                writer.append(batch[:room])
                batch, offset, n = batch[room:], offset + room, n - room
            writer = self._roll(t, offset)
        if self.params.fsync == "every_batch":
            writer.sync()
        t.records += total
        t.next_offset = start + total
        if self.params.segment_age_secs and time.monotonic() >= self._age_check_at:
            self._seal_aged()

    def _seal_aged(self) -> None:
        """Seal the live segments past ``segment_age_secs`` of every topic, idle ones included
        (checked at most once a second, from any topic's batch)."""
        self._age_check_at = time.monotonic() + 1.0
        for t in self._topics.values():
            if t.writer is not None and self._too_old(t.writer):
                self._seal(t)

    def _too_old(self, writer: SegmentWriter) -> bool:
        age = self.params.segment_age_secs
        return bool(age) and time.monotonic() - writer.created > age

    def _roll(self, t: _Topic, offset: int) -> SegmentWriter:
        self._seal(t)
        t.writer = SegmentWriter(
            t.folder / segment_name(t.position),
            schema=t.schema,
            topic=t.topic,
            position=t.position,
            first_offset=offset,
            epoch=self._epoch,
            max_bytes=self.params.segment_bytes,
            durable_offsets=self._durable,
            meta={"stage": self.stage_id},
        )
        return t.writer

    def _seal(self, t: _Topic, closing: bool = False) -> None:
        writer, t.writer = t.writer, None
        if writer is None:
            return
        t.position += writer.count
        if writer.count == 0:  # nothing in it: leave no empty file behind
            writer.seal()
            os.unlink(writer.path)
            return
        fsync = self.params.fsync != "none"
        writer.seal(fsync=fsync)
        t.sealed += 1
        state = {
            "position": t.position,
            "end_offset": writer.end_offset,
            "epoch": self._epoch,
            "durable": self._durable,
        }
        write_state(t.folder, state, fsync)
        if closing or not self.params.archive:
            return  # what is sealed at the end is archived by the next run
        if self._compactor is None:
            self._compactor = _start_archiver(self.params)  # first seal: start it now
        else:
            self._compactor.wake()

    # -- offsets, lifecycle, counters ------------------------------------------------------------

    def committed(self) -> dict[str, int]:
        """Per input port: the next stream offset the store needs; it holds everything below
        (since the last open when offsets are not durable)."""
        return {port: t.next_offset for port, t in getattr(self, "_topics", {}).items()}

    def flush(self) -> None:
        """Seal every live segment (the sink's thread is ending)."""
        for t in getattr(self, "_topics", {}).values():
            self._seal(t, closing=True)

    def close(self) -> None:
        for t in getattr(self, "_topics", {}).values():
            self._seal(t, closing=True)
            t.lock.release()
        compactor, self._compactor = getattr(self, "_compactor", None), None
        if compactor is not None:
            compactor.stop(final_pass=False)  # a quick stop; the next run archives the rest

    def reconfigure(self, params: StoreParams) -> None:
        if params.retention != self.params.retention and self._compactor is not None:
            self._compactor.set_retention(params.retention_ns())
        self.params = params

    def counters(self) -> dict[str, int]:
        topics = getattr(self, "_topics", {}).values()
        return {
            "records_stored": sum(t.records for t in topics),
            "segments_sealed": sum(t.sealed for t in topics),
            "duplicates_skipped": sum(t.duplicates for t in topics),
        }

    def snapshot(self) -> Any:
        """The epoch and offsets, so a replacement continues this run's segments' numbering."""
        return {"epoch": self._epoch, "next": self.committed()}

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            return
        self._epoch = state.get("epoch", self._epoch)
        for port, offset in state.get("next", {}).items():
            if port in self._topics:
                self._topics[port].next_offset = offset


def _archive_work(root: Path, topics: Any) -> bool:
    """Whether the archiver has work at open: a catalog to heal or sealed segments left."""
    if (root / "catalog.duckdb").exists():
        return True
    return any(info.sealed for t in topics for info in segment_infos(root, t.topic, [t.schema]))


def _start_archiver(params: StoreParams) -> Any:
    """The catalog's background compactor for this store (``None`` without pyarrow/duckdb)."""
    try:
        from hftagg.builtins.storage.archive.compact import Compactor
    except ImportError as exc:
        log.warning("store %s: not archiving to Parquet (%s); segments are kept", params.path, exc)
        return None
    compactor = Compactor(
        Path(params.path),
        retention_ns=params.retention_ns(),
        interval_secs=params.archive_interval_secs,
    )
    compactor.start()
    return compactor


def _schema_mismatch(root: Path, topic: str, schema: Schema, infos: list[SegmentInfo]) -> str:
    stored = {info.schema.key for info in infos if info.schema.schema_id != schema.schema_id}
    if not stored:
        return ""
    return (
        f"{root / topic} holds {', '.join(sorted(stored))} records but the pipeline sends "
        f"{schema.key} on {topic!r}: move that folder away or store to another path"
    )


@hookimpl
def hftagg_register_stage_types(register):
    register(Store)
