"""Durability: the write-ahead log at ingest, offsets that survive a restart, replay into sinks.

With ``[durability] wal = true`` every batch a source hands over is appended to the write-ahead
log (:mod:`hftagg.builtins.storage.wal`) *before* any stage sees it, and stream offsets become
durable: each source topic's ring is numbered from the log's offsets, so record ``k`` of
``md.trades`` is offset ``k`` in every run.

Sinks take part through ``SinkStage.committed()`` (per input port: the next offset still
needed; everything below is durably written). At start, after every stage has opened:

1. the log is opened (a torn tail or flipped bytes are cut, with a warning naming file and byte);
2. each participating sink says what it holds; for each source topic the runtime replays the log
   from the lowest offset a participating sink needs, through the topic's ring (the source's
   thread publishes the logged records before any new ones, without logging them again);
3. each sink is handed only what it needs: the pipeline skips, per sink and port, offsets below
   what the sink committed (and a sink that does not take part -- a publisher -- gets no replayed
   records of a source topic at all: it starts at the live offsets);
4. each source that can resume (``SourceStage.resume``) continues after the last logged record
   (a simulator continues its event stream and sequence numbers, a replay skips what it gave).

What is guaranteed (``kill -9`` at any moment; any fsync policy protects against a process
crash because the OS holds written pages; only ``every_batch`` protects against power loss):

- **Source topics**: every record a source handed over reaches every participating (idempotent)
  sink exactly once, at the same offset in every run: nothing lost, nothing duplicated.
- **Derived topics** (written by core stages): core stages restart with empty state and recompute
  from the replayed source records. When a participating sink reads a derived topic, the replay
  starts at the oldest record the log holds and the log keeps every segment (no deletion), so
  deterministic, single-input stages recompute the same records at the same offsets in every
  run and that sink, too, gets each exactly once. Stages with several inputs may interleave them
  differently after a restart; their outputs are then only at-least-once. Without such a sink,
  segments are deleted once every participating sink committed past them; derived topics are
  then recomputed from the lowest committed source offset and their offsets restart.
- Consumers that do not take part (delivery) may see derived records of the replayed range again.
- If the log lost its tail (power loss with ``interval_ms``/``none``) but a sink holds more, the
  stream continues after what the sink holds (offsets are never reused) and the records missing
  from the log are counted as ``unavailable`` and logged; likewise records a sink needs from
  before the oldest segment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hftagg.builtins.storage.wal.log import StreamInfo, WriteAheadLog
from hftagg.config.paths import config_relative
from hftagg.errors import HftaggError, StageFailed
from hftagg.stages.base import SourcePosition, SourceStage
from hftagg.stages.params import Params, restart

if TYPE_CHECKING:
    from hftagg.runtime.graph import Node
    from hftagg.runtime.pipeline import Pipeline

__all__ = ["Durability", "DurabilitySection", "durability_from"]

log = logging.getLogger("hftagg.durability")

RELEASE_INTERVAL_SECS = 1.0  # how often sinks are asked what they committed


class DurabilitySection(Params):
    """``[durability]``: the write-ahead log (all keys need a restart)."""

    wal: bool = restart(
        False, description="append every source batch to a write-ahead log before stages see it"
    )
    path: str = restart("wal", description="the log's folder (relative to the config file)")
    fsync: Literal["none", "interval_ms", "every_batch"] = restart(
        "interval_ms",
        description="none: the OS writes back (safe against kill -9, not power loss); "
        "interval_ms: fdatasync every interval_ms; every_batch: before stages see the batch",
    )
    interval_ms: float = restart(10.0, gt=0, le=60_000, description="fsync period (interval_ms)")
    segment_bytes: int = restart(
        64 << 20, ge=1 << 16, le=1 << 36, description="a log segment rolls over at this size"
    )


def durability_from(raw: dict[str, Any]) -> Durability | None:
    """The durability of a config (its raw ``[durability]`` table, already validated by the
    section's model when the spec was parsed); None when the log is off."""
    table = raw.get("durability")
    settings = DurabilitySection(**table) if isinstance(table, dict) else DurabilitySection()
    return Durability(settings) if settings.wal else None


class Durability:
    """The runtime's side of the write-ahead log for one pipeline."""

    def __init__(self, settings: DurabilitySection) -> None:
        self.settings = settings
        self.log = WriteAheadLog(
            config_relative(settings.path),
            fsync=settings.fsync,
            interval_ms=settings.interval_ms,
            segment_bytes=settings.segment_bytes,
        )
        self.streams: dict[str, StreamInfo] = {}  # source topic -> its stream in the log
        self.participants: dict[str, Any] = {}  # sink id -> its stage
        self.recompute = False  # a participating sink reads a derived topic
        self._replay: dict[str, list[tuple[str, Iterator]]] = {}  # source id -> queue
        self._max_batch = 4096
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prepared = False
        self.replayed = 0  # records published again from the log
        self.unavailable = 0  # records a sink needed that the log no longer had
        self.resumed: list[str] = []  # sources that resumed from the log
        self._failed_commits: set[str] = set()

    # -- start --------------------------------------------------------------------------------

    def prepare(self, pipeline: Pipeline) -> None:
        """Open the log, number the source rings, plan the replay, resume the sources. Called
        once, after every stage opened and before any thread starts."""
        if self._prepared:
            return
        self._prepared = True
        self._max_batch = pipeline.max_batch
        recovery = self.log.open()
        graph = pipeline.graph
        for node in graph.sources:
            for topic in node.outputs.values():
                if topic in graph.topics:
                    self.streams[topic] = self.log.stream(topic, graph.topics[topic])
        commits = self._commits(graph.sinks)
        self.recompute = any(
            topic not in self.streams for sid in commits for topic in self._inputs(graph, sid)
        )
        starts = {topic: self._plan_topic(topic, commits) for topic in self.streams}
        self._number_rings(pipeline, starts)
        self._set_floors(pipeline, commits, starts)
        self._resume_sources(graph.sources)
        log.info(
            "write-ahead log %s: %d segments, %d records; %d to replay; sinks taking part: %s%s",
            self.log.path,
            recovery.segments,
            recovery.records,
            sum(self.streams[t].next_offset - s for t, s in starts.items()),
            ", ".join(commits) or "none",
            " (a sink reads a derived topic: replay from the oldest record, segments kept)"
            if self.recompute
            else "",
        )

    @staticmethod
    def _inputs(graph, sink_id: str) -> list[str]:
        return [t for n in graph.sinks if n.id == sink_id for t in n.inputs.values()]

    def _commits(self, sinks: list[Node]) -> dict[str, dict[str, int]]:
        """Per participating sink, per input port: the next offset it needs."""
        commits = {}
        for node in sinks:
            try:
                held = node.stage.committed()
            except Exception as exc:
                raise StageFailed(
                    f"stage {node.id!r} ({node.stage.type_name}): committed() failed: {exc}; "
                    f"the runtime cannot tell what to replay to it"
                ) from exc
            if held is None:
                continue
            self.participants[node.id] = node.stage
            commits[node.id] = {port: int(held.get(port, 0)) for port in node.inputs}
        return commits

    def _needs(self, topic: str, commits: dict[str, dict[str, int]]) -> list[int]:
        return [
            offset
            for sid, ports in commits.items()
            for port, offset in ports.items()
            if self._port_topic(sid, port) == topic
        ]

    def _port_topic(self, sink_id: str, port: str) -> str | None:
        stage = self.participants.get(sink_id)
        return None if stage is None else stage.input_topics.get(port)

    def _plan_topic(self, topic: str, commits: dict[str, dict[str, int]]) -> int:
        """The offset ``topic``'s replay starts at (its ring's first offset)."""
        info = self.streams[topic]
        end = info.next_offset
        base = self.log.first_offset(topic)
        needs = self._needs(topic, commits)
        ahead = max(needs, default=end)
        if ahead > end:  # a sink holds records the log lost: never reuse their offsets
            lost = sum(max(0, min(ahead, n) - end) for n in needs if n < ahead)
            self.unavailable += lost
            log.warning(
                "write-ahead log %s: a sink holds %s up to offset %d but the log ends at %d "
                "(its tail was lost: a power loss with fsync = %r?); the stream continues at "
                "%d and %d records other sinks needed are unavailable",
                self.log.path, topic, ahead, end, self.settings.fsync, ahead, lost,
            )  # fmt: skip
            info.next_offset = ahead
            return ahead
        for need in needs:
            if need < base:
                self.unavailable += base - need
                log.warning(
                    "write-ahead log %s: a sink needs %s from offset %d but the log starts at "
                    "%d: %d records cannot be replayed to it",
                    self.log.path, topic, need, base, base - need,
                )  # fmt: skip
        if self.recompute:
            return base
        return min(max(min(needs, default=end), base), end)

    def _number_rings(self, pipeline: Pipeline, starts: dict[str, int]) -> None:
        producer = {t: n for n in pipeline.graph.sources for t in n.outputs.values()}
        for topic, start in starts.items():
            ring = pipeline.rings.get(topic)
            if ring is None:
                continue
            ring.start_at(start)
            end = self.streams[topic].next_offset
            if start < end:
                node = producer[topic]
                port = next(p for p, t in node.outputs.items() if t == topic)
                pieces = self.log.read(topic, start, end, self._max_batch)
                self._replay.setdefault(node.id, []).append((port, pieces))

    def _set_floors(self, pipeline: Pipeline, commits, starts: dict[str, int]) -> None:
        """Per sink and port, the offset below which it gets nothing: what it committed (a
        participant) or the live offset of a source topic (a sink that does not take part)."""
        for node in pipeline.graph.sinks:
            floors = {}
            for port, topic in node.inputs.items():
                if node.id in commits:
                    floor = commits[node.id][port]
                elif topic in self.streams:
                    floor = self.streams[topic].next_offset
                else:
                    continue
                if floor > starts.get(topic, 0):
                    floors[port] = floor
            if floors:
                pipeline.sink_floors[node.id] = floors

    def _resume_sources(self, sources: list[Node]) -> None:
        for node in sources:
            ports = {p: self.streams[t] for p, t in node.outputs.items() if t in self.streams}
            if not any(info.next_offset for info in ports.values()):
                continue  # nothing logged yet: a fresh start
            if not getattr(node.stage, "resumable", False):
                continue
            position = SourcePosition(
                {p: info.next_offset for p, info in ports.items()},
                {p: info.last for p, info in ports.items() if info.last is not None},
                self.log.positions.get(node.id),
            )
            try:
                node.stage.resume(position)
            except HftaggError as exc:
                raise StageFailed(f"stage {node.id!r} cannot resume: {exc}") from exc
            self.resumed.append(node.id)
            log.info("source %s resumes after %s", node.id, position.offsets)

    # -- the source threads' hook ----------------------------------------------------------

    def next_batch(self, node: Node, pipeline: Pipeline) -> dict[str, np.ndarray] | None:
        """The source's next batch: logged records still to replay first (not logged again),
        then what the source gives, appended to the log before it is returned."""
        queue = self._replay.get(node.id)
        while queue:
            port, pieces = queue[0]
            piece = next(pieces, None)
            if piece is None:
                queue.pop(0)
                continue
            self.replayed += len(piece[1])
            return {port: piece[1]}
        stage = node.stage
        out = stage.next_batch()
        if out is None:
            return None
        out = pipeline._as_ports(node, out)
        items = []
        for port, batch in out.items():
            info = self.streams.get(node.outputs.get(port, ""))
            if info is not None and len(batch):
                items.append((info, batch, None))
        if items:
            position = None
            if type(stage).position is not SourceStage.position:
                position = (node.id, stage.position())
            self.log.append_many(items, position)
        return out

    # -- housekeeping ---------------------------------------------------------------------------

    def start(self) -> None:
        """Delete log segments every participating sink has committed past, once a second."""
        self._thread = threading.Thread(
            target=self._housekeeping, name="hftagg-durability", daemon=True
        )
        self._thread.start()

    def _housekeeping(self) -> None:
        while not self._stop.wait(RELEASE_INTERVAL_SECS):
            self.release()

    def needed(self) -> dict[str, int] | None:
        """Per source topic, the lowest offset a participating sink still needs (None: keep
        everything, a participating sink reads a derived topic)."""
        if self.recompute:
            return None
        needed: dict[str, int] = {}
        for sid, stage in self.participants.items():
            try:
                held = stage.committed() or {}
            except Exception:
                if sid not in self._failed_commits:
                    self._failed_commits.add(sid)
                    log.exception("sink %s: committed() failed; its log segments are kept", sid)
                return None
            for port, topic in stage.input_topics.items():
                if topic in self.streams:
                    offset = int(held.get(port, 0))
                    needed[topic] = min(needed.get(topic, offset), offset)
        return needed

    def release(self) -> int:
        needed = self.needed()
        return 0 if needed is None else self.log.release(needed)

    def close(self) -> None:
        """After the sinks flushed: a last release, then sync and close the log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._prepared:
            try:
                self.release()
            finally:
                self.log.close()

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.log.path),
            "fsync": self.settings.fsync,
            "logged_batches": self.log.appended_batches,
            "logged_bytes": self.log.appended_bytes,
            "syncs": self.log.syncs,
            "segments": self.log.segment_count,
            "deleted_segments": self.log.deleted_segments,
            "replayed": self.replayed,
            "unavailable": self.unavailable,
            "cut": str(self.log.recovery.cut) if self.log.recovery.cut else None,
            "participants": sorted(self.participants),
            "resumed": self.resumed,
        }
