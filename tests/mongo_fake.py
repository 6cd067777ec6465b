"""A small local MongoDB server for tests: MongoDB's documented wire protocol over asyncio TCP.

MongoDB cannot be installed on the test machines, so the ``mongodb`` sink is tested against this
server (and against a real one whenever ``HFTAGG_TEST_MONGODB_URI`` is set). It speaks:

- **OP_MSG** (opcode 2013): ``flagBits`` (bit 0 ``checksumPresent``: the trailing CRC-32C is
  checked and a bad one closes the connection, as mongod does; bit 1 ``moreToCome``: no reply,
  for unacknowledged writes), a kind 0 body section and kind 1 document sequences (their
  identifier, ``documents`` for ``insert``, becomes a field of the command);
- the legacy **OP_QUERY** ``isMaster``/``hello`` handshake on ``admin.$cmd`` (answered with
  OP_REPLY, opcode 1), which older drivers send first.

Commands: ``hello``/``isMaster``, ``ping``, ``buildInfo`` (the ``version`` given), ``listCollections``
(``filter`` on ``name``/``type``, time-series options reported), ``create`` (time-series options
checked and stored; refused like MongoDB < 5.0 when the version is older; on 5.x indexed
only on their time and meta fields), ``insert`` (ordered or
not: with ``ordered=false`` it goes on after a duplicate key and reports one ``writeErrors`` entry,
code 11000, per failed index), ``find``/``getMore``/``killCursors`` (equality and
``$gt/$gte/$lt/$lte/$in/$ne`` filters on top-level fields, ``sort``, ``projection``, ``skip``,
``limit``, ``batchSize``), ``count``, ``aggregate`` (what ``count_documents`` sends), ``createIndexes``/``listIndexes`` (unique indexes enforced on
insert; refused on time-series collections, as MongoDB does), ``drop``, ``dropDatabase``,
``endSessions``; anything else gets ``CommandNotFound`` (code 59). Documents are kept in memory
as decoded BSON and survive :meth:`MongoFake.stop`/:meth:`MongoFake.start`, which close and reopen
the listener on the same port and drop every open connection (an outage)::

    server = MongoFake().start()
    client = pymongo.MongoClient(server.uri)
    ...
    server.stop()          # the database is down: connections refused
    server.start()         # back, same port, same data
    server.close()
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import bson
import crc32c
from bson import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId

__all__ = ["MongoFake"]

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
CHECKSUM_PRESENT = 1
MORE_TO_COME = 2
_HEADER = struct.Struct("<iiii")
_DECODE = CodecOptions(document_class=dict, tz_aware=False)


class CommandError(Exception):
    """A command failure, answered as ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.code_name, self.message = code, code_name, message

    def reply(self) -> dict[str, Any]:
        return {"ok": 0.0, "errmsg": self.message, "code": self.code, "codeName": self.code_name}


@dataclass
class Index:
    name: str
    key: dict[str, Any]
    unique: bool = False
    held: dict[tuple, int] = field(default_factory=dict)  # key values -> count (unique only)

    def values(self, doc: dict[str, Any]) -> tuple:
        return tuple(_freeze(doc.get(k)) for k in self.key)

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": 2, "key": self.key, "name": self.name}
        if self.unique:
            out["unique"] = True
        return out


@dataclass
class Collection:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)
    indexes: dict[str, Index] = field(default_factory=dict)

    @property
    def timeseries(self) -> dict[str, Any] | None:
        return self.options.get("timeseries")

    def __post_init__(self) -> None:
        if self.timeseries is None:
            self.indexes["_id_"] = Index("_id_", {"_id": 1}, unique=True)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _key_text(key: dict[str, Any], values: tuple) -> str:
    parts = ", ".join(f"{k}: {v!r}" for k, v in zip(key, values, strict=True))
    return "{ " + parts + " }"


# -- filters, sorting, projection ------------------------------------------------------------------


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "$in":
        return have in want
    if op == "$nin":
        return have not in want
    if op == "$ne":
        return have != want
    if op == "$eq":
        return have == want
    if op == "$exists":
        return (have is not None) == bool(want)
    if have is None:
        return False
    try:
        if op == "$gt":
            return have > want
        if op == "$gte":
            return have >= want
        if op == "$lt":
            return have < want
        if op == "$lte":
            return have <= want
    except TypeError:
        return False
    raise CommandError(
        2,
        "BadValue",
        f"unknown operator: {op} (this test server supports "
        "$eq $ne $gt $gte $lt $lte $in $nin $exists)",
    )


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for name, want in query.items():
        if name == "$and":
            if not all(_matches(doc, q) for q in want):
                return False
            continue
        have = doc.get(name)
        if isinstance(want, dict) and want and all(k.startswith("$") for k in want):
            if not all(_compare(op, have, value) for op, value in want.items()):
                return False
        elif have != want:
            return False
    return True


def _sorted(docs: list[dict[str, Any]], sort: dict[str, Any] | None) -> list[dict[str, Any]]:
    for name, direction in reversed(list((sort or {}).items())):
        docs = sorted(
            docs, key=lambda d, n=name: (d.get(n) is not None, d.get(n)), reverse=direction < 0
        )
    return docs


def _project(doc: dict[str, Any], projection: dict[str, Any] | None) -> dict[str, Any]:
    if not projection:
        return doc
    include = {k for k, v in projection.items() if v and k != "_id"}
    if include:
        out = {k: doc[k] for k in doc if k in include}
        if projection.get("_id", 1) and "_id" in doc:
            out = {"_id": doc["_id"], **out}
        return out
    exclude = {k for k, v in projection.items() if not v}
    return {k: v for k, v in doc.items() if k not in exclude}


# -- the server ------------------------------------------------------------------------------------


class MongoFake:
    """An in-memory MongoDB wire-protocol server on loopback (see the module docstring)."""

    def __init__(self, port: int = 0, *, version: str = "7.0.0", host: str = "127.0.0.1") -> None:
        self.host, self.port, self.version = host, port, version
        self.databases: dict[str, dict[str, Collection]] = {}
        self.commands: list[str] = []  # every command name received, in order
        self.checksummed = 0  # OP_MSGs received with a valid CRC-32C
        self._cursors: dict[int, list[dict[str, Any]]] = {}
        self._cursor_ids = itertools.count(1_000_001)
        self._connection_ids = itertools.count(1)
        self._reply_ids = itertools.count(1)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mongo-fake", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def wire_version(self) -> int:
        major, minor = (int(p) for p in self.version.split(".")[:2])
        table = {(4, 4): 9, (5, 0): 13, (6, 0): 17, (7, 0): 21, (8, 0): 25}
        return table.get((major, minor), 21 if major >= 7 else 9)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> MongoFake:
        """Listen (again) on ``port`` (0 the first time: any free one, kept for restarts)."""
        self._call(self._start())
        return self

    async def _start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening and drop every connection; the data stays (an outage, not a wipe)."""
        self._call(self._stop())

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._cursors.clear()

    def close(self) -> None:
        """Stop and end the server's thread."""
        if not self._loop.is_closed():
            self.stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> MongoFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests read ---------------------------------------------------------------------------

    def collection(self, database: str, name: str) -> Collection | None:
        with self._lock:
            return self.databases.get(database, {}).get(name)

    def documents(self, database: str, name: str) -> list[dict[str, Any]]:
        """A copy of the documents held in ``database.name`` (insertion order)."""
        with self._lock:
            coll = self.databases.get(database, {}).get(name)
            return list(coll.documents) if coll else []

    # -- connections -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        connection_id = next(self._connection_ids)
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = _HEADER.unpack(header)
                if not 16 < length <= 48_000_000:
                    return
                body = await reader.readexactly(length - 16)
                reply = self._handle(opcode, header + body, body, connection_id)
                if reply is None:
                    continue
                writer.write(self._frame(reply, request_id, opcode))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _handle(self, opcode: int, message: bytes, body: bytes, connection_id: int) -> Any:
        if opcode == OP_MSG:
            flags = struct.unpack_from("<I", body)[0]
            if flags & CHECKSUM_PRESENT:
                (want,) = struct.unpack_from("<I", message, len(message) - 4)
                if crc32c.crc32c(message[:-4]) != want:
                    raise ConnectionError("OP_MSG checksum mismatch: closing the connection")
                self.checksummed += 1
                body = body[:-4]
            command = self._sections(body)
            reply = self._dispatch(command, connection_id)
            return None if flags & MORE_TO_COME else reply
        if opcode == OP_QUERY:
            return self._legacy_query(body, connection_id)
        raise ConnectionError(f"opcode {opcode} is not served by this test server")

    @staticmethod
    def _sections(body: bytes) -> dict[str, Any]:
        command: dict[str, Any] = {}
        sequences: dict[str, list[dict[str, Any]]] = {}
        pos = 4
        while pos < len(body):
            kind = body[pos]
            pos += 1
            (size,) = struct.unpack_from("<i", body, pos)
            if kind == 0:
                command = bson.decode(body[pos : pos + size], _DECODE)
            elif kind == 1:
                end = body.index(b"\x00", pos + 4)
                name = body[pos + 4 : end].decode()
                sequences[name] = bson.decode_all(body[end + 1 : pos + size], _DECODE)
            else:
                raise ConnectionError(f"OP_MSG section kind {kind} is invalid (0 or 1)")
            pos += size
        command.update(sequences)
        return command

    def _legacy_query(self, body: bytes, connection_id: int) -> dict[str, Any]:
        end = body.index(b"\x00", 4)
        collection = body[4:end].decode()
        start = end + 1 + 8
        (size,) = struct.unpack_from("<i", body, start)
        query = bson.decode(body[start : start + size], _DECODE)
        if "$query" in query:
            query = query["$query"]
        name = next(iter(query), "")
        if not collection.endswith(".$cmd") or name.lower() not in ("ismaster", "hello"):
            return CommandError(
                352,
                "UnsupportedOpQueryCommand",
                f"Unsupported OP_QUERY command: {name}. The client driver may require an upgrade.",
            ).reply()
        return self._dispatch(query, connection_id)

    def _frame(self, reply: dict[str, Any], request_id: int, opcode: int) -> bytes:
        doc = bson.encode(reply)
        if opcode == OP_QUERY:
            payload = struct.pack("<iqii", 0, 0, 0, 1) + doc
            op = OP_REPLY
        else:
            payload = struct.pack("<IB", 0, 0) + doc
            op = OP_MSG
        own_id = next(self._reply_ids) & 0x7FFFFFFF
        return _HEADER.pack(16 + len(payload), own_id, request_id, op) + payload

    # -- commands ----------------------------------------------------------------------------------

    def _dispatch(self, command: dict[str, Any], connection_id: int) -> dict[str, Any]:
        name = next(iter(command), "")
        self.commands.append(name)
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        try:
            if handler is None:
                raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
            with self._lock:
                reply = handler(command, command.get("$db", "admin"), connection_id)
        except CommandError as exc:
            return exc.reply()
        reply.setdefault("ok", 1.0)
        return reply

    def _cmd_hello(self, command: dict, db: str, connection_id: int) -> dict:
        legacy = next(iter(command)).lower() == "ismaster"
        return {
            "ismaster" if legacy else "isWritablePrimary": True,
            "helloOk": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": connection_id,
            "minWireVersion": 0,
            "maxWireVersion": self.wire_version,
            "readOnly": False,
        }

    _cmd_ismaster = _cmd_hello

    def _cmd_ping(self, command: dict, db: str, connection_id: int) -> dict:
        return {}

    def _cmd_buildinfo(self, command: dict, db: str, connection_id: int) -> dict:
        parts = [int(p) for p in self.version.split(".")] + [0, 0]
        return {
            "version": self.version,
            "versionArray": parts[:3] + [0],
            "bits": 64,
            "maxBsonObjectSize": 16 * 1024 * 1024,
        }

    def _cmd_endsessions(self, command: dict, db: str, connection_id: int) -> dict:
        return {}

    def _cmd_listcollections(self, command: dict, db: str, connection_id: int) -> dict:
        query = command.get("filter") or {}
        batch = []
        for coll in self.databases.get(db, {}).values():
            info = {
                "name": coll.name,
                "type": "timeseries" if coll.timeseries else "collection",
                "options": coll.options,
                "info": {"readOnly": False},
            }
            if _matches(info, query):
                batch.append(
                    {"name": coll.name, "type": info["type"]} if command.get("nameOnly") else info
                )
        return {"cursor": {"id": Int64(0), "ns": f"{db}.$cmd.listCollections", "firstBatch": batch}}

    def _cmd_create(self, command: dict, db: str, connection_id: int) -> dict:
        name = command["create"]
        options = {
            k: v
            for k, v in command.items()
            if k
            not in (
                "create",
                "$db",
                "lsid",
                "$readPreference",
                "writeConcern",
                "$clusterTime",
                "txnNumber",
            )
        }
        timeseries = options.get("timeseries")
        if timeseries is not None:
            if self.wire_version < 13:
                raise CommandError(
                    40415, "Location40415", "BSON field 'create.timeseries' is an unknown field."
                )
            if "timeField" not in timeseries:
                raise CommandError(
                    40414,
                    "Location40414",
                    "BSON field 'create.timeseries.timeField' is missing but a required field",
                )
            timeseries.setdefault("granularity", "seconds")
            timeseries.setdefault("bucketMaxSpanSeconds", 3600)
        collections = self.databases.setdefault(db, {})
        existing = collections.get(name)
        if existing is not None:
            if existing.options == options:
                return {}
            raise CommandError(
                48,
                "NamespaceExists",
                f"Collection {db}.{name} already exists with different options",
            )
        collections[name] = Collection(name, options)
        return {}

    def _collection(self, db: str, name: str, create: bool = False) -> Collection | None:
        collections = self.databases.setdefault(db, {})
        if name not in collections and create:
            collections[name] = Collection(name)
        return collections.get(name)

    def _cmd_insert(self, command: dict, db: str, connection_id: int) -> dict:
        coll = self._collection(db, command["insert"], create=True)
        ordered = command.get("ordered", True)
        inserted, errors = 0, []
        for index, doc in enumerate(command.get("documents", [])):
            try:
                self._insert_one(db, coll, doc)
                inserted += 1
            except CommandError as exc:
                errors.append({"index": index, "code": exc.code, "errmsg": exc.message})
                if ordered:
                    break
        reply: dict[str, Any] = {"n": inserted}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _insert_one(self, db: str, coll: Collection, doc: dict[str, Any]) -> None:
        ts = coll.timeseries
        if ts is not None and not isinstance(doc.get(ts["timeField"]), datetime.datetime):
            raise CommandError(
                2,
                "BadValue",
                f"'{ts['timeField']}' must be present and contain a valid BSON UTC datetime value",
            )
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
        keys = []
        for index in coll.indexes.values():
            if not index.unique:
                continue
            values = index.values(doc)
            if values in index.held:
                raise CommandError(
                    11000,
                    "DuplicateKey",
                    f"E11000 duplicate key error collection: {db}.{coll.name} index: "
                    f"{index.name} dup key: {_key_text(index.key, values)}",
                )
            keys.append((index, values))
        for index, values in keys:
            index.held[values] = 1
        coll.documents.append(doc)

    def _cmd_find(self, command: dict, db: str, connection_id: int) -> dict:
        coll = self._collection(db, command["find"])
        docs = [
            d for d in (coll.documents if coll else []) if _matches(d, command.get("filter") or {})
        ]
        docs = _sorted(docs, command.get("sort"))
        skip = command.get("skip", 0)
        docs = docs[skip:]
        limit = abs(command.get("limit", 0))
        if limit:
            docs = docs[:limit]
        docs = [_project(d, command.get("projection")) for d in docs]
        return self._first_batch(
            db,
            command["find"],
            docs,
            command.get("batchSize", 101),
            single=command.get("singleBatch", False),
        )

    def _first_batch(self, db: str, name: str, docs: list, size: int, single: bool) -> dict:
        first, rest = docs[:size], docs[size:]
        cursor_id = 0
        if rest and not single:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = rest
        return {"cursor": {"id": Int64(cursor_id), "ns": f"{db}.{name}", "firstBatch": first}}

    def _cmd_getmore(self, command: dict, db: str, connection_id: int) -> dict:
        cursor_id = int(command["getMore"])
        rest = self._cursors.pop(cursor_id, None)
        if rest is None:
            raise CommandError(43, "CursorNotFound", f"cursor id {cursor_id} not found")
        size = command.get("batchSize") or len(rest)
        batch, rest = rest[:size], rest[size:]
        if rest:
            self._cursors[cursor_id] = rest
        return {
            "cursor": {
                "id": Int64(cursor_id if rest else 0),
                "ns": f"{db}.{command['collection']}",
                "nextBatch": batch,
            }
        }

    def _cmd_killcursors(self, command: dict, db: str, connection_id: int) -> dict:
        killed = [c for c in command.get("cursors", []) if self._cursors.pop(int(c), None)]
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": [],
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    def _cmd_count(self, command: dict, db: str, connection_id: int) -> dict:
        coll = self._collection(db, command["count"])
        query = command.get("query") or {}
        return {"n": sum(_matches(d, query) for d in (coll.documents if coll else []))}

    def _cmd_aggregate(self, command: dict, db: str, connection_id: int) -> dict:
        """``$match``, ``$sort``, ``$skip``, ``$limit`` and a ``$group`` with a constant ``_id``
        and ``$sum`` accumulators (what ``count_documents`` sends)."""
        coll = self._collection(db, command["aggregate"])
        docs = list(coll.documents if coll else [])
        for stage in command.get("pipeline", []):
            (op, arg), *_ = stage.items()
            if op == "$match":
                docs = [d for d in docs if _matches(d, arg)]
            elif op == "$sort":
                docs = _sorted(docs, arg)
            elif op == "$skip":
                docs = docs[arg:]
            elif op == "$limit":
                docs = docs[:arg]
            elif op == "$group" and not isinstance(arg.get("_id"), str):
                out = {"_id": arg["_id"]}
                for name, acc in arg.items():
                    if name != "_id":
                        value = acc["$sum"]
                        out[name] = sum(
                            d.get(value[1:], 0) if isinstance(value, str) else value for d in docs
                        )
                docs = [out] if docs else []
            else:
                raise CommandError(
                    40324,
                    "Location40324",
                    f"Unrecognized pipeline stage name: {op!r} (this "
                    "test server has $match $sort $skip $limit and a constant-_id $group)",
                )
        size = command.get("cursor", {}).get("batchSize", 101)
        return self._first_batch(db, command["aggregate"], docs, size, single=False)

    def _cmd_createindexes(self, command: dict, db: str, connection_id: int) -> dict:
        created = command["createIndexes"] not in self.databases.get(db, {})
        coll = self._collection(db, command["createIndexes"], create=True)
        before = len(coll.indexes)
        for spec in command.get("indexes", []):
            key = dict(spec["key"])
            name = spec.get("name") or "_".join(f"{k}_{v}" for k, v in key.items())
            unique = bool(spec.get("unique", False))
            if unique and coll.timeseries is not None:
                raise CommandError(
                    72,
                    "InvalidOptions",
                    "Unique indexes are not supported on time-series collections",
                )
            ts = coll.timeseries
            allowed = {ts["timeField"], ts.get("metaField")} if ts else set()
            if ts and self.wire_version < 17 and not set(key) <= allowed:
                raise CommandError(
                    67,
                    "CannotCreateIndex",
                    "Indexes on time-series collections may only be created on the metaField "
                    "and timeField (MongoDB < 6.0)",
                )
            existing = coll.indexes.get(name)
            if existing is not None:
                if existing.key != key or existing.unique != unique:
                    raise CommandError(
                        86,
                        "IndexKeySpecsConflict",
                        f"An existing index has the same name ({name}) as the "
                        f"requested index but different options",
                    )
                continue
            index = Index(name, key, unique)
            if unique:
                for doc in coll.documents:
                    values = index.values(doc)
                    if values in index.held:
                        raise CommandError(
                            11000,
                            "DuplicateKey",
                            f"E11000 duplicate key error collection: {db}."
                            f"{coll.name} index: {name} dup key: "
                            f"{_key_text(key, values)}",
                        )
                    index.held[values] = 1
            coll.indexes[name] = index
        return {
            "createdCollectionAutomatically": created,
            "numIndexesBefore": before,
            "numIndexesAfter": len(coll.indexes),
        }

    def _cmd_listindexes(self, command: dict, db: str, connection_id: int) -> dict:
        coll = self._collection(db, command["listIndexes"])
        if coll is None:
            raise CommandError(
                26, "NamespaceNotFound", f"ns does not exist: {db}.{command['listIndexes']}"
            )
        specs = [i.spec() for i in coll.indexes.values()]
        return self._first_batch(db, coll.name, specs, 1000, single=True)

    def _cmd_drop(self, command: dict, db: str, connection_id: int) -> dict:
        coll = self.databases.get(db, {}).pop(command["drop"], None)
        return {"nIndexesWas": len(coll.indexes) if coll else 0, "ns": f"{db}.{command['drop']}"}

    def _cmd_dropdatabase(self, command: dict, db: str, connection_id: int) -> dict:
        self.databases.pop(db, None)
        return {"dropped": db}
