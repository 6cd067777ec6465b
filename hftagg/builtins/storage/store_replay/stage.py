"""Built-in plugin: ``store_replay``, a source that replays what a ``store`` stage kept.

It publishes each stored topic on the topic it was stored from, so the graph that ran live runs
on the replay unchanged: the same records, byte for byte (``seq`` included), in the same order
per topic. As the pipeline's source (a ``[data_sources]`` table's ``topic_prefix`` does not
apply: the topics are the stored ones)::

    [data_sources.replay]
    type = "store_replay"
    path = "storage"                     # the store's folder, relative to the config file
    topics = ["md.trades", "md.book"]    # one output port per topic (the port is the topic)
    start = "2026-01-02T09:30:00Z"       # ISO-8601 UTC or UNIX ns; inclusive (default: all)
    end = "2026-01-02T10:00:00Z"         # exclusive
    instruments = [1234, 5678]           # instrument ids (default: all)
    speed = 0                            # 0 as fast as possible, 1 real time, N N x faster
    batch = 4096                         # most records per batch, over all topics

Reading (:mod:`.streams`): archived Parquet partitions and live segments in store order, each
record once; segments outside the range are not opened; a torn segment tail is logged and the
records before it replay. The segments' record counts are read when the stage opens.

Order across topics: by ``ts_event``, ties broken by the order of ``topics`` and then by stream
position (see :mod:`.merge`); a topic's own order is always its stored order. Each batch is one
stretch of that merged order, handed to the pipeline as one array per topic; the runtime runs
every stage once per batch in topological order, so a stage reading several topics sees them a
batch at a time. ``strict_order = true`` makes each batch one topic's consecutive records (a
run of the merged order), so such a stage sees every record in exactly the merged order, at the
cost of smaller batches where topics interleave closely.

Pacing (``speed`` > 0): the first record replayed anchors the clock; a record is due
``(ts_event - first ts_event) / speed`` after it. ``next_batch`` never blocks: it returns what is
due (at most ``batch``) and ``next_awake`` says when the next record is; a change of ``speed``
(live) re-anchors at the last record replayed. Progress (``progress()``, shown in status lines
and the summary): the share of the time range replayed and the replay clock (the ``ts_event``
of the last record out). ``exhausted`` once every topic is replayed.

With the write-ahead log on, a restarted replay resumes (:meth:`StoreReplay.resume`) after the
records the log holds, per topic, and refuses if the store no longer matches the log.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationInfo, field_validator, model_validator

from hftagg.builtins.storage.store.layout import list_topics, segment_infos
from hftagg.builtins.storage.store_replay.merge import merge_step
from hftagg.builtins.storage.store_replay.streams import (
    INT64_MAX,
    INT64_MIN,
    TopicStream,
    format_time_ns,
    parse_time_ns,
    topic_parts,
)
from hftagg.config.paths import config_relative
from hftagg.errors import StorageError
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SourcePosition, SourceStage, StageContext, live, restart

__all__ = ["StoreReplay", "StoreReplayParams"]


class StoreReplayParams(Params):
    path: str = restart("storage", description="the store's folder, relative to the config file")
    topics: list[str] = restart(
        [], description="stored topics to replay, each on its own topic; order breaks time ties"
    )
    start: int | str | None = restart(
        None, description="first ts_event replayed: ISO-8601 UTC or UNIX ns (default: all)"
    )
    end: int | str | None = restart(
        None, description="ts_event where the replay stops, exclusive (default: all)"
    )
    instruments: list[int] = restart([], description="instrument ids to replay (default: all)")
    speed: float = live(
        0.0, ge=0, le=1e9, description="0 = as fast as possible, 1 = real time, N = N x faster"
    )
    batch: int = live(4096, ge=1, le=1 << 20, description="most records per batch, all topics")
    strict_order: bool = live(
        False,
        description="each batch holds one topic's consecutive records, so stages reading "
        "several topics see them in exactly the merged order (smaller batches)",
    )

    @field_validator("topics")
    @classmethod
    def _topics_named_once(cls, topics: list[str]) -> list[str]:
        if not topics:
            raise ValueError('name the stored topics to replay, e.g. ["md.trades", "md.book"]')
        if len(set(topics)) != len(topics):
            raise ValueError(f"{topics} names a topic twice; name each once")
        return topics

    @field_validator("start", "end")
    @classmethod
    def _a_time(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        parse_time_ns(value, info.field_name, 0)
        return value

    @model_validator(mode="after")
    def _a_range(self) -> StoreReplayParams:
        start, end = self.range_ns
        if start >= end:
            raise ValueError(
                f"start {self.start!r} is not before end {self.end!r}: the range [start, end) "
                f"is empty; swap them or widen it"
            )
        return self

    @property
    def range_ns(self) -> tuple[int, int]:
        return parse_time_ns(self.start, "start", INT64_MIN), parse_time_ns(
            self.end, "end", INT64_MAX
        )


def _topic_schema_key(root: Path, topic: str) -> str:
    """The schema key of ``topic`` as stored; a clear error when the store lacks it."""
    parts = topic_parts(root, topic)
    if not parts:
        stored = ", ".join(t for t in list_topics(root) if topic_parts(root, t)) or "none"
        raise ValueError(
            f"store_replay: the store at {root} holds no topic {topic!r} (topics stored there: "
            f"{stored}); fix 'topics' or 'path'"
        )
    return parts[0].schema.key


def _skip(stream: TopicStream, n: int, stage_id: str, port: str) -> np.ndarray | None:
    """Drop the next ``n`` records of ``stream`` (keeping its merge key); the last one, or
    ``None`` when ``n`` is 0."""
    left, last = n, None
    while left:
        k = stream.available(min(left, 1 << 16))
        if k == 0:
            raise StorageError(
                f"store_replay {stage_id!r}: the write-ahead log holds {n} records of {port} "
                f"but the store has only {n - left} in the replayed range; the store or the "
                f"range changed since: clear the log's state or restore the store"
            )
        chunk = stream.peek(k)
        stream.floor = max(stream.floor, int(chunk["ts_event"].max()))
        last = chunk[-1:].copy()
        stream.advance(k)
        left -= k
    return last


def _check_same(replayed: np.ndarray, logged: np.ndarray, stage_id: str, port: str) -> None:
    fields = [f for f in ("ts_event", "seq", "instrument_id") if f in replayed.dtype.names]
    if any(replayed[f][0] != logged[f][0] for f in fields):
        got = {f: int(replayed[f][0]) for f in fields}
        want = {f: int(logged[f][0]) for f in fields}
        raise StorageError(
            f"store_replay {stage_id!r}: resuming {port}, the store's record at the log's "
            f"offset is {got} but the log's last record is {want}; the store changed since "
            f"the log was written: restore it, or start afresh without the log's state"
        )


class StoreReplay(SourceStage):
    kind = "source"
    type_name = "store_replay"
    Params = StoreReplayParams
    outputs: dict[str, Port] = {}

    def __init__(self, params: StoreReplayParams | None = None, **kwargs: Any) -> None:
        # each topic is replayed on the topic it was stored from: a [data_sources] table's
        # topic_prefix (which would map port "md.trades" to "md.md.trades") does not apply
        kwargs.pop("topics", None)
        super().__init__(params, **kwargs)
        root = config_relative(self.params.path)
        for topic in self.params.topics:
            _topic_schema_key(root, topic)  # a topic the store lacks: say which ones it has

    @classmethod
    def ports(cls, params: StoreReplayParams) -> tuple[dict[str, Port], dict[str, Port]]:
        root = config_relative(params.path)
        outputs = {}
        for topic in params.topics:
            try:
                schema = _topic_schema_key(root, topic)
            except (ValueError, StorageError):
                schema = None  # the constructor says what is wrong
            outputs[topic] = Port(schema, topic, "as stored, same records and seq")
        return {}, outputs

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """Every segment of every topic must have a readable header."""
        root = config_relative(self.params.path)
        problems = []
        for topic in self.params.topics:
            try:
                segment_infos(root, topic)
            except StorageError as exc:
                problems.append(("path", str(exc)))
        return problems

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self, ctx: StageContext) -> None:
        p = self.params
        root = config_relative(p.path)
        start, end = p.range_ns
        ids = np.asarray(p.instruments, dtype=np.uint32) if p.instruments else None
        self._ports = list(self.output_topics)  # port = stored topic, in tie-break order
        self._streams = [TopicStream(t, topic_parts(root, t), start, end, ids) for t in p.topics]
        self._run = None  # the merged stretch being emitted
        self._windows: list[np.ndarray] = []  # per topic: its records in the current stretch
        self._anchor: tuple[int, int] | None = None  # (monotonic ns, key): pacing origin
        self._next_awake: float | None = None
        self._done = False
        self.records_out = 0
        self.clock_ns: int | None = None  # merge key of the last record out
        self.first_ns: int | None = None
        self.last_ns = max((s.ts_last for s in self._streams), default=start)

    # -- merging ---------------------------------------------------------------------------------

    def _refill(self) -> bool:
        """Merge the next stretch; False when every topic is replayed."""
        n = self.params.batch
        streams = self._streams
        counts = [s.available(n) for s in streams]
        if not any(counts):
            return False
        windows = [s.peek(c) for s, c in zip(streams, counts, strict=True)]
        more = [c == n and s.more_after(n) for s, c in zip(streams, counts, strict=True)]
        floors = [s.floor for s in streams]
        self._run, after = merge_step([w["ts_event"] for w in windows], floors, more)
        for stream, floor in zip(streams, after.tolist(), strict=True):
            stream.floor = floor  # the stretch is emitted whole before the next one is merged
        self._windows = windows
        self._taken = [0] * len(streams)
        return True

    def _due(self, limit: int) -> int:
        """How many of the next ``limit`` merged records are due at ``speed``."""
        speed = self.params.speed
        self._next_awake = None
        if speed == 0:
            return limit
        keys = self._run.peek_keys()[:limit]
        now = time.monotonic_ns()
        if self._anchor is None:
            self._anchor = (now, int(keys[0]))
        wall0, key0 = self._anchor
        reached = key0 + int((now - wall0) * speed)
        due = int(np.searchsorted(keys, reached, side="right"))
        if due == 0:
            self._next_awake = (wall0 + (int(keys[0]) - key0) / speed) / 1e9
        return due

    def next_batch(self) -> dict[str, np.ndarray] | None:
        if self._done:
            return None
        if self._run is None or not len(self._run):
            if not self._refill():
                self._done = True
                return None
        limit = min(self.params.batch, len(self._run))
        if self.params.strict_order:
            limit = self._run.same_topic(limit)
        n = self._due(limit)
        if n == 0:
            return None
        keys = self._run.peek_keys()
        if self.first_ns is None:
            self.first_ns = int(keys[0])
        last_key = int(keys[n - 1])
        counts = self._run.take(n)
        out = {}
        for t, c in enumerate(counts.tolist()):
            if not c:
                continue
            a = self._taken[t]
            out[self._ports[t]] = self._windows[t][a : a + c]
            self._taken[t] = a + c
        if not len(self._run):
            for t, stream in enumerate(self._streams):
                stream.advance(self._taken[t])  # the windows' views are not used past here
        self.clock_ns = last_key
        self.records_out += n
        return out

    def next_awake(self) -> float | None:
        if self._next_awake is None:
            return None
        return max(self._next_awake, time.monotonic() + 0.0002)

    @property
    def exhausted(self) -> bool:
        return self._done

    #: the write-ahead log can resume it: it skips what the log holds, topic by topic
    resumable = True

    def resume(self, position: SourcePosition) -> None:
        """Continue after what the write-ahead log holds: skip, per topic, the number of
        records the log has of it (the log holds a prefix of the merged order, so the skipped
        counts meet at one point of it), checking that the last one skipped is the record the
        log holds last -- a store changed since would otherwise replay the wrong records."""
        self.first_ns = min(
            (int(s.peek(1)["ts_event"][0]) for s in self._streams if s.available(1)), default=None
        )
        for port, stream in zip(self._ports, self._streams, strict=True):
            skipped = _skip(stream, position.offsets.get(port, 0), self.stage_id, port)
            logged = position.last.get(port)
            if skipped is not None and logged is not None:
                _check_same(skipped, logged, self.stage_id, port)
            self.records_out += position.offsets.get(port, 0)
            if skipped is not None:
                self.clock_ns = max(self.clock_ns or INT64_MIN, stream.floor)

    def reconfigure(self, params: StoreReplayParams) -> None:
        if params.speed != self.params.speed:  # re-anchor at the last record replayed
            self._anchor = None if self.clock_ns is None else (time.monotonic_ns(), self.clock_ns)
        self.params = params

    # -- progress --------------------------------------------------------------------------------

    def progress(self) -> dict:
        """``percent`` of the time range replayed, the replay ``clock`` (UTC) and ``records``."""
        if self.first_ns is None:
            return {"percent": 100.0 if self._done else 0.0, "clock": "-", "records": 0}
        span = max(self.last_ns - self.first_ns, 1)
        share = 100.0 if self._done else 100.0 * (self.clock_ns - self.first_ns) / span
        return {
            "percent": round(min(share, 100.0), 1),
            "clock": format_time_ns(self.clock_ns),
            "records": self.records_out,
        }


@hookimpl
def hftagg_register_stage_types(register):
    register(StoreReplay)
