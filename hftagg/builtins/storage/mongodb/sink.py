"""Built-in plugin: the ``mongodb`` sink, which keeps topics in MongoDB collections.

PyMongo's async API (``pymongo.AsyncMongoClient``, the successor of Motor) on an asyncio loop the
sink runs in its own thread. The connection URI comes from the environment variable named by
``uri_env`` (secrets never sit in config files); ``database`` and ``topics`` say where and what;
``collections`` renames (default: the topic with ``.`` -> ``_``, ``md.trades`` -> ``md_trades``).

Collections. Where the server has them and ``timeseries = true``, each collection is a
time-series collection (``buildInfo`` version >= 6.0: 5.0 has time-series collections but indexes
only on their time and meta fields, and the replay lookups need one on ``(stream, offset)``): ``timeField`` ``ts_event`` (a BSON date; the exact
nanoseconds are ``ts_event_ns``), ``metaField`` ``instrument``, ``granularity`` as configured and
``expireAfterSeconds`` when ``expire_after_secs`` is set. Otherwise (an older server, a create the
server refuses, or ``timeseries = false``) a plain collection with a unique index on
``(stream, offset)`` and an index on ``(instrument, ts_event)``. An existing collection is used
as it is.

Outages (the shared external-sink base, :mod:`hftagg.builtins.storage._external`): ``write``
only queues the batch (memory, then a spill on local disk); the base's writer thread -- where
this sink's asyncio loop and client live -- sends it with capped exponential backoff and jitter,
keeps the cursor through an outage and catches up when MongoDB is back. ``connect`` tells the
base, per stream, the next offset the collection holds, derived from the documents themselves
(the highest ``offset``, checked by a count to have no gap below it), so it is exact without a
separate bookkeeping document or a transaction.

Idempotence. Every document is keyed by ``(stream, offset)`` -- the topic and the record's
stream offset (the write-ahead log's durable offset, or without it numbered on after what the
collection holds) -- so a resent or replayed record is never stored twice:

- plain collections: the unique index refuses a document already held; the inserts are
  ``ordered=False``, so the rest of the batch goes in, and each duplicate-key error (code 11000)
  counts as ``already_held``, not as a failure;
- time-series collections, where MongoDB allows no unique index: a batch at or below the highest
  offset the collection may hold (a retry after an insert whose outcome is unknown, a replay)
  first reads which of its offsets are held (one indexed ``find``) and inserts only the others.

Any other write error (a document the server refuses) cannot be fixed by retrying
(``retryable``): the records stay queued (kept in the spill) and the stage fails at its next
``write`` or ``flush`` with the server's message naming collection, offset and code. Nothing is
dropped silently.

Encoding is in bulk (:mod:`.documents`): the BSON bytes of a whole batch are built through numpy
and inserted as ``RawBSONDocument`` s, in chunks of ``max_documents_per_insert``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hftagg.builtins.storage._external import ExternalParams, ExternalSink
from hftagg.errors import StorageError
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, StageContext, restart

from .documents import DocumentLayout

__all__ = ["MongoSink", "MongoSinkParams", "server_version"]

log = logging.getLogger("hftagg.storage.mongodb")

DUPLICATE_KEY = 11000
NAMESPACE_EXISTS = 48
TIMESERIES_MIN_VERSION = (6, 0)  # secondary indexes on measurement fields
#: server error codes that mean "not now" (shutdown, stepdown, network, timeouts): retried
RETRYABLE_CODES = frozenset(
    {6, 7, 50, 63, 89, 91, 150, 189, 234, 262, 462, 9001, 10107, 11600, 11602, 13388, 13435, 13436}
)
_BAD_COLLECTION = re.compile(r"^$|\$|\x00|^system\.")


class MongoSinkParams(ExternalParams):
    uri_env: str = restart(
        "HFTAGG_MONGODB_URI",
        min_length=1,
        description="environment variable holding the connection URI (mongodb://host:27017)",
    )
    database: str = restart("hftagg", min_length=1, description="database name")
    collections: dict[str, str] = restart(
        {}, description="topic -> collection name (default: the topic with '.' -> '_')"
    )
    timeseries: bool = restart(
        True, description="time-series collections where the server has them (MongoDB >= 6.0)"
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


def collection_name(topic: str, params: MongoSinkParams) -> str:
    return params.collections.get(topic, topic.replace(".", "_"))


def server_version(info: dict[str, Any]) -> tuple[int, ...]:
    """``buildInfo``'s version as a tuple of ints (``versionArray`` when present)."""
    parts = info.get("versionArray") or str(info.get("version", "0")).split("-")[0].split(".")
    return tuple(int(p) for p in list(parts)[:3])


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    return re.sub(r"(mongodb(?:\+srv)?://[^:/@]+):[^@]*@", r"\1:***@", uri)


class MongoSink(ExternalSink):
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
        for port, topic in self.input_topics.items():
            layout = DocumentLayout(ctx.topic_schemas[topic], topic, decimals=p.decimals)
            self._targets[port] = _Target(topic, collection_name(topic, p), layout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._db: Any = None
        self._reconnect = False
        self.inserted = 0
        self.already_held = 0
        self.version: tuple[int, ...] = ()
        super().open(ctx)

    def backend_name(self) -> str:
        return f"MongoDB {redact(self._uri)} database {self.params.database}"

    def retryable(self, exc: BaseException) -> bool:
        """MongoDB away (network errors, timeouts, a primary stepping down, a shutdown):
        retry. A document refused, an index in the way, a bug: stop the stage."""
        from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

        if isinstance(exc, StorageError):
            return False
        if isinstance(exc, ConnectionFailure | OSError | asyncio.TimeoutError):
            return True  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
        if isinstance(exc, OperationFailure):
            return exc.code in RETRYABLE_CODES or exc.has_error_label("RetryableWriteError")
        return isinstance(exc, PyMongoError) and exc.timeout

    def counters(self) -> dict[str, int]:
        return {**super().counters(), "inserted": self.inserted, "already_held": self.already_held}

    def close(self) -> None:
        super().close()  # joins the writer thread, which disconnected
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()

    # -- the writer thread (the base's): the asyncio loop and the client live here ----------------

    def _run_async(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def connect(self) -> dict[str, int]:
        held = self._run_async(self._open_client())
        if self._reconnect:
            # the base's own count stays right: an insert cut off by the failure may have gone
            # in, and read back from the documents it would move offsets past records the base
            # resends (without durable offsets they would then be stored twice, renumbered)
            return dict(self._held)
        self._reconnect = True
        return held

    def send(self, port: str, records: np.ndarray, offset: int) -> None:
        self._run_async(self._send_records(self._targets[port], records, offset))

    def disconnect(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            self._run_async(client.close())

    async def _open_client(self) -> dict[str, int]:
        from pymongo import AsyncMongoClient

        ms = int(self.params.timeout_secs * 1000)
        client = AsyncMongoClient(
            self._uri,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            appname="hftagg",
        )
        try:
            db = client[self.params.database]
            self.version = server_version(await db.command("buildInfo"))
            held = {}
            for target in self._targets.values():
                held[target.topic] = await self._prepare(db, target)
        except BaseException:
            await client.close()
            raise
        self._client, self._db = client, db
        return held

    async def _prepare(self, db: Any, target: _Target) -> int:
        """Create (or find) the target's collection and indexes; returns the next offset the
        collection holds for the stream (everything below it is there)."""
        found = await (await db.list_collections(filter={"name": target.collection})).to_list()
        if found:
            target.timeseries = found[0].get("type") == "timeseries"
        elif self.params.timeseries and self.version >= TIMESERIES_MIN_VERSION:
            target.timeseries = await self._create_timeseries(db, target)
        coll = db[target.collection]
        key = [("stream", 1), ("offset", 1)]
        if target.timeseries and self.version >= TIMESERIES_MIN_VERSION:
            await coll.create_index(key)
        elif target.timeseries:
            log.warning(
                "stage %r: %s is a time-series collection on MongoDB %s, which cannot index "
                "(stream, offset): a replayed batch is checked against it by a scan",
                self.stage_id, target.collection, ".".join(map(str, self.version)),
            )  # fmt: skip
        else:
            await coll.create_index(key, unique=True)
            await coll.create_index([("instrument", 1), ("ts_event", 1)])
        kind = "time-series" if target.timeseries else "plain"
        log.info("stage %r: %s -> %s collection %s", self.stage_id, target.topic, kind,
                 target.collection)  # fmt: skip
        return await self._held_offset(coll, target)

    async def _held_offset(self, coll: Any, target: _Target) -> int:
        """The next offset held for the stream: the highest plus one when nothing is missing
        below it (one count); after an interrupted unordered insert left a gap, without the
        log (offsets number on) still the highest plus one, with it the first gap (a binary
        search of counts), so the log replays what is missing."""
        stream = {"stream": target.topic}
        last = await coll.find_one(stream, {"offset": 1}, sort=[("offset", -1)])
        if last is None:
            return 0
        top = int(last["offset"])
        target.held_upto = max(target.held_upto, top)
        if not self.durable or await coll.count_documents(stream) == top + 1:
            return top + 1
        low, high = 0, top  # invariant: everything below low is held; something below high is not
        while low < high:
            mid = (low + high + 1) // 2
            below = await coll.count_documents({**stream, "offset": {"$lt": mid}})
            low, high = (mid, high) if below == mid else (low, mid - 1)
        return low

    async def _create_timeseries(self, db: Any, target: _Target) -> bool:
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
            await db.create_collection(target.collection, check_exists=False, **options)
        except OperationFailure as exc:
            if self.retryable(exc):  # the server is away or stepping down: not a refusal
                raise
            if exc.code == NAMESPACE_EXISTS:  # created meanwhile; look again
                found = await (
                    await db.list_collections(filter={"name": target.collection})
                ).to_list()
                return bool(found) and found[0].get("type") == "timeseries"
            log.warning(
                "stage %r: the server refused a time-series collection %s (%s, code %s); "
                "using a plain collection with a unique (stream, offset) index",
                self.stage_id, target.collection, exc, exc.code,
            )  # fmt: skip
            return False
        return True

    async def _send_records(self, target: _Target, batch: np.ndarray, offset: int) -> None:
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
            # this offset (a retry, a replay) first checks what is held
            target.held_upto = max(target.held_upto, end - 1)

    async def _not_held(self, target: _Target, batch: np.ndarray, offset: int):
        """The records of ``batch`` the (time-series) collection does not hold yet."""
        end = offset + len(batch)
        cursor = self._db[target.collection].find(
            {"stream": target.topic, "offset": {"$gte": offset, "$lt": end}}, {"offset": 1}
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
            await self._db[target.collection].insert_many(docs, ordered=False)
            self.inserted += len(docs)
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
                    f"{at} of {target.topic}: {error.get('errmsg')} (code {error.get('code')}); "
                    f"they stay queued -- fix the collection (or drop it to let the sink "
                    f"create it) and restart"
                ) from exc


@hookimpl
def hftagg_register_stage_types(register: Callable[[type], None]) -> None:
    register(MongoSink)
