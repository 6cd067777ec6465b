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
- **Derived topics** (written by core stages), when a participating sink reads one: every
  ``checkpoint_interval_secs`` the core thread is parked at a batch boundary where every core
  reader of a source topic stands at the same offset, and the runtime takes a checkpoint: those
  source offsets, every derived topic's next offset, and each core stage's ``snapshot()``
  (pickled to a local file the runtime itself writes, ``<path>/checkpoint``). A checkpoint is
  adopted (written, atomically) once every participating sink committed each derived topic up
  to it. On restart the core stages ``restore()`` the adopted checkpoint, the source rings start
  at its offsets (a source-topic sink that needs older records gets them from the log before
  anything runs), derived rings continue at its derived offsets, and the core recomputes from
  there. Deterministic single-input stages so produce the same records at the same offsets
  again, and each participating sink gets every derived record exactly once. Stages with
  several inputs may interleave them differently after a restart (at-least-once for them). The
  log keeps what the adopted checkpoint and the sinks still need; without a checkpoint yet, the
  core recomputes from the oldest record the log holds (and nothing is deleted until one is
  adopted). Core stages not in the checkpoint (added by a live change) start empty.
- **Derived topics without such a sink**: core stages restart empty and recompute from the
  lowest offset a participating sink needs; derived offsets restart.
- Consumers that do not take part (delivery) may see derived records of the replayed range again.
- If the log lost its tail (power loss with ``interval_ms``/``none``) but a sink holds more, the
  stream continues after what the sink holds (offsets are never reused) and the records missing
  from the log are counted as ``unavailable`` and logged; likewise records a sink needs from
  before the oldest segment.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
CHECKPOINT_FILE = "checkpoint"
CHECKPOINT_VERSION = 1
_PENDING = 8  # checkpoints taken but not yet adoptable, kept at most
_ALIGN_TRIES = 20  # parks per checkpoint to find the core readers aligned


@dataclass
class Checkpoint:
    """The core's state at a batch boundary: source offsets it had consumed (per topic, every
    core reader at the same one), every derived topic's next offset, and each core stage's
    pickled ``snapshot()`` (stage id -> (type name, bytes))."""

    source: dict[str, int]
    derived: dict[str, int]
    stages: dict[str, tuple[str, bytes]]
    created_ns: int


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
    checkpoint_interval_secs: float = restart(
        10.0,
        gt=0,
        le=86_400,
        description="how often the core stages' state is checkpointed when a sink that takes "
        "part reads a derived topic (the log is kept from the last checkpoint on)",
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
        self._pipeline: Pipeline | None = None
        self.checkpoint: Checkpoint | None = None  # the adopted one (what a restart uses)
        self._pending: list[Checkpoint] = []
        self._core_topics: set[str] = set()  # source topics some core stage reads
        self._last_checkpoint = 0.0
        self.checkpoints_taken = 0
        self.checkpoints_skipped = 0  # the core readers were never aligned when tried
        self.restored: list[str] = []  # core stages restored from the checkpoint

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
        self._pipeline = pipeline
        commits = self._commits(graph.sinks)
        self.recompute = any(
            topic not in self.streams for sid in commits for topic in self._inputs(graph, sid)
        )
        self._core_topics = {t for n in graph.core for t in n.inputs.values() if t in self.streams}
        derived: dict[str, int] = {}
        if self.recompute:
            self.checkpoint = self._load_checkpoint()
            derived = self._restore_core(graph)
        starts = {topic: self._plan_topic(topic, commits) for topic in self.streams}
        self._direct_replay(pipeline, commits, starts)
        self._number_rings(pipeline, starts)
        for topic, offset in derived.items():
            if topic in pipeline.rings:
                pipeline.rings[topic].start_at(offset)
        self._set_floors(pipeline, commits, {**derived, **starts})
        self._resume_sources(graph.sources)
        log.info(
            "write-ahead log %s: %d segments, %d records; %d to replay; sinks taking part: %s%s",
            self.log.path,
            recovery.segments,
            recovery.records,
            sum(self.streams[t].next_offset - s for t, s in starts.items()),
            ", ".join(commits) or "none",
            (
                f" (a sink reads a derived topic: the core recomputes from "
                f"{'its checkpoint' if self.checkpoint else 'the oldest record logged'})"
            )
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
        if self.recompute and topic in self._core_topics:
            # the core resumes where its checkpoint was taken (or recomputes from the start)
            start = self.checkpoint.source.get(topic, base) if self.checkpoint else base
            return min(max(start, base), end)
        return min(max(min(needs, default=end), base), end)

    def _direct_replay(self, pipeline: Pipeline, commits, starts: dict[str, int]) -> None:
        """Records a source-topic sink needs from before its ring's first offset (the core's
        checkpoint is past them): written to it from the log now, before anything runs."""
        for node in pipeline.graph.sinks:
            for port, need in commits.get(node.id, {}).items():
                topic = node.inputs[port]
                if topic not in self.streams or need >= starts[topic]:
                    continue
                begin = max(need, self.log.first_offset(topic))
                for offset, piece in self.log.read(topic, begin, starts[topic], self._max_batch):
                    node.stage.write(piece, port, offset)
                    self.replayed += len(piece)

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

    # -- checkpoints of the core (derived topics) ----------------------------------------------

    def _load_checkpoint(self) -> Checkpoint | None:
        path = self.log.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
            if data.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {data.get('version')}, not {CHECKPOINT_VERSION}")
            return data["checkpoint"]
        except Exception as exc:
            log.warning(
                "write-ahead log %s: checkpoint %s cannot be read (%s); the core recomputes "
                "from the oldest record logged",
                self.log.path, path, exc,
            )  # fmt: skip
            return None

    def _restore_core(self, graph) -> dict[str, int]:
        """Core stages take their checkpointed state; returns derived topic -> first offset."""
        cp = self.checkpoint
        if cp is None:
            return {}
        for node in graph.core:
            saved = cp.stages.get(node.id)
            if saved is None or saved[0] != node.stage.type_name:
                continue
            try:
                node.stage.restore(pickle.loads(saved[1]))
            except Exception as exc:
                raise StageFailed(
                    f"stage {node.id!r} ({node.stage.type_name}) cannot restore its state from "
                    f"the write-ahead log's checkpoint {self.log.path / CHECKPOINT_FILE}: {exc}; "
                    f"move that file aside to recompute from the oldest record logged"
                ) from exc
            self.restored.append(node.id)
        return dict(cp.derived)

    def take_checkpoint(self) -> Checkpoint | None:
        """Park the core thread at a batch boundary where its readers of each source topic are
        aligned, and capture a checkpoint (None: not running, or never aligned)."""
        pipeline = self._pipeline
        core = pipeline.workers.get("core") if pipeline is not None else None
        # A live change parks the core too: skip while it does. Inline mode parks by taking
        # the core lock, which excludes the two. With a core thread, a change that asks to
        # park during the milliseconds a capture takes finds the core released by this unpark
        # and times out (a retryable ApplyError: saving again applies it); only two park
        # requests in the same instant could overlap.
        if core is None or not core.alive or core.park_requested:
            return None
        for _ in range(_ALIGN_TRIES):
            if not core.park(1.0) or not core.alive:
                core.unpark()
                return None
            try:
                checkpoint = self._capture(pipeline)
            finally:
                core.unpark()
            if checkpoint is not None:
                self.checkpoints_taken += 1
                return checkpoint
            time.sleep(0.002)
        self.checkpoints_skipped += 1
        return None

    def _capture(self, pipeline: Pipeline) -> Checkpoint | None:
        graph = pipeline.graph
        source: dict[str, int] = {}
        for node in graph.core:
            for _, reader in pipeline.readers[node.id]:
                topic = reader.ring.name
                if topic in self.streams:
                    if source.setdefault(topic, reader.cursor) != reader.cursor:
                        return None
                elif reader.cursor != reader.ring.published:
                    return None
        core_ids = {node.id for node in graph.core}
        derived = {
            topic: ring.published
            for topic, ring in pipeline.rings.items()
            if graph.producer.get(topic) in core_ids
        }
        stages = {
            node.id: (node.stage.type_name, pickle.dumps(node.stage.snapshot()))
            for node in graph.core
        }
        return Checkpoint(source, derived, stages, time.time_ns())

    def _adopt(self, held: dict[str, dict[str, int]]) -> None:
        """Adopt the newest pending checkpoint every participating sink has committed each
        derived topic up to (``held``: sink id -> port -> committed)."""
        ready = None
        for checkpoint in self._pending:
            if all(
                held.get(sid, {}).get(port, 0) >= checkpoint.derived.get(topic, 0)
                for sid, stage in self.participants.items()
                for port, topic in stage.input_topics.items()
                if topic not in self.streams
            ):
                ready = checkpoint
        if ready is None:
            return
        self._pending = [c for c in self._pending if c.created_ns > ready.created_ns]
        path = self.log.path / CHECKPOINT_FILE
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as f:
            pickle.dump({"version": CHECKPOINT_VERSION, "checkpoint": ready}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        fd = os.open(self.log.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.checkpoint = ready

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
        interval = min(RELEASE_INTERVAL_SECS, self.settings.checkpoint_interval_secs)
        while not self._stop.wait(interval):
            try:
                self._tick()
            except Exception:
                log.exception("write-ahead log %s: housekeeping failed; retrying", self.log.path)

    def _tick(self) -> None:
        if self.recompute:
            now = time.monotonic()
            if now - self._last_checkpoint >= self.settings.checkpoint_interval_secs:
                self._last_checkpoint = now
                checkpoint = self.take_checkpoint()
                if checkpoint is not None:
                    self._pending = [*self._pending, checkpoint][-_PENDING:]
        self.release()

    def _held(self) -> dict[str, dict[str, int]] | None:
        """What every participating sink committed (None: one of them failed to say)."""
        held = {}
        for sid, stage in self.participants.items():
            try:
                held[sid] = {p: int(o) for p, o in (stage.committed() or {}).items()}
            except Exception:
                if sid not in self._failed_commits:
                    self._failed_commits.add(sid)
                    log.exception("sink %s: committed() failed; its log segments are kept", sid)
                return None
        return held

    def needed(self, held: dict[str, dict[str, int]]) -> dict[str, int] | None:
        """Per source topic, the lowest offset still needed: by a participating sink, or by
        the core's adopted checkpoint (None: keep everything, no checkpoint adopted yet)."""
        if self.recompute and self.checkpoint is None:
            return None
        needed: dict[str, int] = {}
        if self.recompute:
            needed.update({t: o for t, o in self.checkpoint.source.items() if t in self.streams})
        for sid, stage in self.participants.items():
            for port, topic in stage.input_topics.items():
                if topic in self.streams:
                    offset = held[sid].get(port, 0)
                    needed[topic] = min(needed.get(topic, offset), offset)
        return needed

    def release(self) -> int:
        """Adopt what checkpoint can be, then delete the log segments nothing needs."""
        held = self._held()
        if held is None:
            return 0
        if self._pending:
            self._adopt(held)
        needed = self.needed(held)
        return 0 if needed is None else self.log.release(needed)

    def close(self) -> None:
        """After the sinks flushed: a last release, then sync and close the log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._prepared:
            try:
                self._final_checkpoint()
                self.release()
            finally:
                self.log.close()

    def _final_checkpoint(self) -> None:
        """After a drained stop the core thread has ended with its readers at the end: a last
        checkpoint there lets the next start skip recomputing what this run did."""
        pipeline = self._pipeline
        core = pipeline.workers.get("core") if pipeline is not None else None
        if not self.recompute or core is None or core.alive:
            return
        try:
            checkpoint = self._capture(pipeline)
        except Exception:
            log.exception("write-ahead log %s: the last checkpoint failed", self.log.path)
            return
        if checkpoint is not None:
            self.checkpoints_taken += 1
            self._pending.append(checkpoint)

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
            "checkpoints_taken": self.checkpoints_taken,
            "checkpoints_skipped": self.checkpoints_skipped,
            "checkpoint_adopted": self.checkpoint is not None,
            "restored": self.restored,
        }
