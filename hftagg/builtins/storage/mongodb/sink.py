"""Built-in plugin: the ``mongodb`` sink, which keeps topics in MongoDB collections.

PyMongo's async API (``pymongo.AsyncMongoClient``, the successor of Motor) on an asyncio loop the
sink runs in its own thread. The connection URI comes from the environment variable named by
``uri_env`` (secrets never sit in config files); ``database`` and ``topics`` say where and what;
``collections`` renames (default: the topic with ``.`` -> ``_``, ``md.trades`` -> ``md_trades``).

Collections. Where the server has them (``buildInfo`` version >= 5.0) and ``timeseries = true``,
each collection is a time-series collection: ``timeField`` ``ts_event`` (a BSON date; the exact
nanoseconds are ``ts_event_ns``), ``metaField`` ``instrument``, ``granularity`` as configured and
``expireAfterSeconds`` when ``expire_after_secs`` is set. Otherwise (an older server, a create the
server refuses, or ``timeseries = false``) a plain collection with a unique index on
``(stream, epoch, offset)`` and an index on ``(instrument, ts_event)``. An existing collection is used
as it is.

Idempotence. Every document is keyed by ``(stream, epoch, offset)`` -- the topic, the run
(``epoch`` 0 when the write-ahead log makes offsets durable; the run's start time otherwise, as
offsets then restart at 0 each run) and the record's stream offset -- so a replay (after a crash,
with the write-ahead log) writes nothing twice:

- plain collections: the unique index refuses a document already held; the inserts are
  ``ordered=False``, so the rest of the batch goes in, and each duplicate-key error (code 11000)
  counts as ``already_held``, not as a failure;
- time-series collections, where MongoDB allows no unique index: the sink asks, once per stream
  when it starts, for the highest offset held; a batch at or below it (a replay, or the retry of
  an insert whose outcome is unknown) first reads which of its offsets are held (one indexed
  ``find`` per batch) and inserts only the others.

With durable offsets the sink reports ``committed()`` offsets (what the server acknowledged),
so the write-ahead log replays into it only what it may be missing; at start it is what the
collection holds without a gap (one count and one indexed lookup per stream).

Any other write error (a document the server refuses) fails the stage with the server's message,
naming collection, offset and code: nothing is dropped silently.

Encoding is in bulk (:mod:`.documents`): the BSON bytes of a whole batch are built through numpy
and inserted as ``RawBSONDocument`` s, in chunks of ``max_documents_per_insert``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hftagg.errors import StorageError
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SinkStage, StageContext, restart

from .documents import DocumentLayout

__all__ = ["MongoSink", "MongoSinkParams", "server_version"]

log = logging.getLogger("hftagg.storage.mongodb")

DUPLICATE_KEY = 11000
TIMESERIES_MIN_VERSION = (5, 0)
_BAD_COLLECTION = re.compile(r"^$|\$|\x00|^system\.")


class MongoSinkParams(Params):
    uri_env: str = restart(
        "HFTAGG_MONGODB_URI",
        min_length=1,
        description="environment variable holding the connection URI (mongodb://host:27017)",
    )
    database: str = restart("hftagg", min_length=1, description="database name")
    topics: list[str] = restart(["md.trades"], min_length=1, description="topics to keep")
    collections: dict[str, str] = restart(
        {}, description="topic -> collection name (default: the topic with '.' -> '_')"
    )
    timeseries: bool = restart(
        True, description="time-series collections where the server has them (MongoDB >= 5.0)"
    )
    granularity: Literal["seconds", "minutes", "hours"] = restart(
        "seconds", description="time-series bucket granularity"
    )
    expire_after_secs: int = restart(
        0, ge=0, description="time-series retention (expireAfterSeconds); 0 keeps everything"
    )
    decimals: bool = restart(
        True, description="add <field>_dec Decimal128 copies of prices and quantities"
    )
    max_documents_per_insert: int = restart(
        10_000, ge=1, le=100_000, description="documents per insert command"
    )
    timeout_secs: float = restart(
        10.0, gt=0, le=600, description="server selection, connect and socket timeout"
    )


@dataclass
class _Target:
    """Where one input port goes and what is known about it there."""

    topic: str
    collection: str
    layout: DocumentLayout
    timeseries: bool = False
    held_upto: int = -1  # the highest offset the collection may hold for this stream
    next_offset: int = 0  # everything below is acknowledged by the server

    @property
    def key(self) -> dict[str, Any]:
        return {"stream": self.topic, "epoch": self.layout.epoch}


def collection_name(topic: str, params: MongoSinkParams) -> str:
    return params.collections.get(topic, topic.replace(".", "_"))


def server_version(info: dict[str, Any]) -> tuple[int, ...]:
    """``buildInfo``'s version as a tuple of ints (``versionArray`` when present)."""
    parts = info.get("versionArray") or str(info.get("version", "0")).split("-")[0].split(".")
    return tuple(int(p) for p in list(parts)[:3])


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    return re.sub(r"(mongodb(?:\+srv)?://[^:/@]+):[^@]*@", r"\1:***@", uri)


class MongoSink(SinkStage):
    kind = "storage"
    type_name = "mongodb"
    Params = MongoSinkParams

    def __init__(
        self,
        params: Params | None = None,
        *,
        stage_id: str | None = None,
        topics: dict[str, str] | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """``MongoSink(topics=["md.trades"], database=...)`` in Python: a list of topics is the
        parameter; a dict stays the port -> topic mapping every stage takes."""
        if isinstance(topics, list | tuple):
            params = MongoSinkParams(topics=list(topics), **kwargs)
            kwargs, topics = {}, None
        super().__init__(params, stage_id=stage_id, topics=topics, **kwargs)

    @classmethod
    def ports(cls, params: MongoSinkParams) -> tuple[dict[str, Port], dict[str, Port]]:
        return {topic: Port(None, topic) for topic in params.topics}, {}

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        p = self.params
        problems = []
        if not os.environ.get(p.uri_env):
            problems.append(
                (
                    "uri_env",
                    f"environment variable {p.uri_env} is not set; export it with the "
                    f"connection URI, e.g. {p.uri_env}=mongodb://127.0.0.1:27017",
                )
            )
        unknown = sorted(set(p.collections) - set(p.topics))
        if unknown:
            problems.append(("collections", f"names topics not in topics: {unknown}"))
        for topic in p.topics:
            name = collection_name(topic, p)
            if _BAD_COLLECTION.search(name):
                problems.append(
                    (
                        "collections",
                        f"{name!r} (for {topic}) is not a valid collection name: no '$', no "
                        f"NUL, not empty, not starting with 'system.'",
                    )
                )
        return problems

    def open(self, ctx: StageContext) -> None:
        problems = self.check(ctx)
        if problems:
            key, text = problems[0]
            raise StorageError(f"stage {self.stage_id!r} (mongodb): {key}: {text}")
        p = self.params
        self._uri = os.environ[p.uri_env]
        self._targets: dict[str, _Target] = {}
        self.durable = bool(getattr(ctx, "durable_offsets", False))
        epoch = 0 if self.durable else time.time_ns()
        for port, topic in self.input_topics.items():
            schema = ctx.topic_schemas[topic]
            layout = DocumentLayout(schema, topic, epoch=epoch, decimals=p.decimals)
            self._targets[port] = _Target(topic, collection_name(topic, p), layout)
        self._loop = asyncio.new_event_loop()
        self._client: Any = None
        self._db: Any = None
        self._task: asyncio.Task | None = None
        self.inserted = 0
        self.already_held = 0
        self.version: tuple[int, ...] = ()

    # -- the loop ------------------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        """Run ``coro`` on the sink's loop in the calling (the sink's) thread."""
        self._task = self._loop.create_task(coro)
        try:
            return self._loop.run_until_complete(self._task)
        finally:
            self._task = None

    async def _connect(self) -> None:
        from pymongo import AsyncMongoClient

        ms = int(self.params.timeout_secs * 1000)
        self._client = AsyncMongoClient(
            self._uri,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            appname="hftagg",
            tz_aware=True,
        )
        self._db = self._client[self.params.database]
        self.version = server_version(await self._db.command("buildInfo"))
        for target in self._targets.values():
            await self._prepare(target)

    async def _prepare(self, target: _Target) -> None:
        """Create (or find) the target's collection and its indexes; learn what it holds."""
        db, p = self._db, self.params
        found = await (await db.list_collections(filter={"name": target.collection})).to_list()
        if found:
            target.timeseries = found[0].get("type") == "timeseries"
        elif p.timeseries and self.version >= TIMESERIES_MIN_VERSION:
            target.timeseries = await self._create_timeseries(target)
        coll = db[target.collection]
        key = [("stream", 1), ("epoch", 1), ("offset", 1)]
        if target.timeseries:
            await coll.create_index(key)
        else:
            await coll.create_index(key, unique=True)
            await coll.create_index([("instrument", 1), ("ts_event", 1)])
        if self.durable:  # a fresh epoch holds nothing yet
            last = await coll.find_one(target.key, {"offset": 1}, sort=[("offset", -1)])
            target.held_upto = -1 if last is None else int(last["offset"])
            if target.held_upto >= 0:
                count = await coll.count_documents(target.key)
                # no gap below the highest offset: everything up to it is held
                target.next_offset = target.held_upto + 1 if count == target.held_upto + 1 else 0
        kind = "time-series" if target.timeseries else "plain"
        log.info(
            "mongodb %s: %s -> %s collection %s",
            self.stage_id,
            target.topic,
            kind,
            target.collection,
        )

    async def _create_timeseries(self, target: _Target) -> bool:
        from pymongo.errors import OperationFailure

        p = self.params
        options: dict[str, Any] = {
            "timeseries": {
                "timeField": "ts_event",
                "metaField": "instrument",
                "granularity": p.granularity,
            }
        }
        if p.expire_after_secs:
            options["expireAfterSeconds"] = p.expire_after_secs
        try:
            await self._db.create_collection(target.collection, **options)
        except OperationFailure as exc:
            if exc.code == 48:  # NamespaceExists: created meanwhile; look again
                found = await (
                    await self._db.list_collections(filter={"name": target.collection})
                ).to_list()
                return bool(found) and found[0].get("type") == "timeseries"
            log.warning(
                "mongodb %s: the server refused a time-series collection %s (%s, code %s); "
                "using a plain collection with a unique (stream, offset) index",
                self.stage_id,
                target.collection,
                exc,
                exc.code,
            )
            return False
        return True

    # -- writing -------------------------------------------------------------------------------

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        self._run(self._write(self._targets[port], batch, offset))

    async def _write(self, target: _Target, batch: np.ndarray, offset: int) -> None:
        if self._client is None:
            await self._connect()
        end = offset + len(batch)
        try:
            if target.timeseries and offset <= target.held_upto:
                batch, offsets = await self._not_held(target, batch, offset)
            else:
                offsets = None
            step = self.params.max_documents_per_insert
            for start in range(0, len(batch), step):
                part = batch[start : start + step]
                first = offset + start if offsets is None else offsets[start : start + step]
                await self._insert(target, target.layout.raw_documents(part, first), first)
        finally:
            # written, or (an interrupted insert) perhaps written: a later batch at or below
            # this offset (a replay, a retry) first checks what is held
            target.held_upto = max(target.held_upto, end - 1)
        target.next_offset = max(target.next_offset, end)

    async def _not_held(self, target: _Target, batch: np.ndarray, offset: int):
        """The records of ``batch`` the (time-series) collection does not hold yet."""
        end = offset + len(batch)
        cursor = self._db[target.collection].find(
            {**target.key, "offset": {"$gte": offset, "$lt": end}}, {"offset": 1}
        )
        held = np.array([d["offset"] async for d in cursor], dtype=np.int64)
        offsets = np.arange(offset, end, dtype=np.int64)
        missing = ~np.isin(offsets, held)
        self.already_held += int(len(batch) - missing.sum())
        return batch[missing], offsets[missing]

    async def _insert(self, target: _Target, docs: list, first: int | np.ndarray) -> None:
        from pymongo.errors import BulkWriteError

        if not docs:
            return
        try:
            result = await self._db[target.collection].insert_many(docs, ordered=False)
            self.inserted += len(result.inserted_ids) if result.inserted_ids else len(docs)
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            self.inserted += details.get("nInserted", 0)
            self.already_held += len(errors) - len(others)
            if others:
                error = others[0]
                index = error.get("index", 0)
                at = first[index] if isinstance(first, np.ndarray) else first + index
                raise StorageError(
                    f"stage {self.stage_id!r} (mongodb): {len(others)} of {len(docs)} documents "
                    f"refused by {self.params.database}.{target.collection}; first at offset "
                    f"{at} of {target.topic}: {error.get('errmsg')} (code {error.get('code')})"
                ) from exc

    def committed(self) -> dict[str, int] | None:
        """Per port, the next offset the server has not acknowledged (durable offsets only)."""
        if not self.durable:
            return None
        return {port: target.next_offset for port, target in self._targets.items()}

    def flush(self) -> None:
        """Nothing buffered: every ``write`` returns once the server acknowledged it."""

    def interrupt(self) -> None:
        task = self._task
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)

    def counters(self) -> dict[str, int]:
        return {"inserted": self.inserted, "already_held": self.already_held}

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed():
            return
        if self._client is not None:
            loop.run_until_complete(self._client.close())
            self._client = None
        loop.close()


@hookimpl
def hftagg_register_stage_types(register: Callable[[type], None]) -> None:
    register(MongoSink)
