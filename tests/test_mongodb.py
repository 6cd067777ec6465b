"""The ``mongodb`` sink: bulk BSON encoding, time-series or plain collections, idempotent
``ordered=False`` inserts, and the local wire-protocol server it is tested against.

Every test that needs a server runs against ``tests/mongo_fake.py`` (MongoDB's OP_MSG protocol,
served locally) and, when ``HFTAGG_TEST_MONGODB_URI`` names one, against a real MongoDB too.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import uuid

import bson
import crc32c
import numpy as np
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument

from hftagg.builtins.storage.mongodb.documents import DocumentLayout, records_from_documents
from hftagg.builtins.storage.mongodb.sink import MongoSink
from hftagg.errors import StageFailed, StorageError
from hftagg.records.catalog import BUILTIN_SCHEMAS, TRADE
from hftagg.stages import StageContext
from hftagg.testing import TestingSource, run_pipeline

from .conftest import free_port, hftagg_cmd
from .mongo_fake import MongoFake

REAL_URI = os.environ.get("HFTAGG_TEST_MONGODB_URI")
URI_ENV = "HFTAGG_TEST_SINK_MONGODB_URI"


def random_records(schema, n: int, seed: int = 7, *, extreme: bool = False) -> np.ndarray:
    """``n`` records whose every field is random bytes (negative, extreme, non-ASCII). Unless
    ``extreme``, ``ts_event`` is a time in 2026 (what a time-series collection buckets) and NaNs
    are the canonical one (a server may not keep NaN payload bits); with it, any int64 time
    and NaN payloads too."""
    rng = np.random.default_rng(seed)
    out = schema.empty(n)
    for name in schema.dtype.names:
        dtype = schema.dtype.fields[name][0]
        raw = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8)
        out[name] = raw.view(dtype.base).reshape(out[name].shape)
        if not extreme and dtype.base.kind == "f":
            out[name] = np.where(np.isnan(out[name]), np.nan, out[name])
    if not extreme:
        out["ts_event"] = 1_767_225_600_000_000_000 + rng.integers(0, 86_400 * 10**9, n)
    return out


def same_records(a: np.ndarray, b: np.ndarray) -> bool:
    """Field by field, bit for bit (NaN payloads included; padding bytes ignored)."""
    return a.dtype == b.dtype and all(
        np.array_equal(
            np.ascontiguousarray(a[n]).view(np.uint8), np.ascontiguousarray(b[n]).view(np.uint8)
        )
        for n in a.dtype.names
    )


@pytest.fixture(scope="module")
def fake_server():
    with MongoFake() as server:
        yield server


@pytest.fixture(params=["fake", "real"])
def mongo(request, fake_server, monkeypatch):
    """``(uri, database)`` on the local server, then on a real one when the environment gives
    one; the sink reads the URI from ``HFTAGG_TEST_SINK_MONGODB_URI``."""
    if request.param == "real" and not REAL_URI:
        pytest.skip("set HFTAGG_TEST_MONGODB_URI=mongodb://... to run against a real MongoDB")
    uri = fake_server.uri if request.param == "fake" else REAL_URI
    database = f"hftagg_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(URI_ENV, uri)
    yield uri, database
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(database)


def read_back(uri: str, database: str, collection: str, schema) -> np.ndarray:
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        docs = list(client[database][collection].find({}, sort=[("offset", 1)]))
    return records_from_documents(docs, schema)


@pytest.fixture(autouse=True)
def _spill_in_tmp(tmp_path, monkeypatch):
    """The sinks' default spill folder (./storage/spill) lands in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def sink(database: str, topics: list[str], **params) -> MongoSink:
    return MongoSink(stage_id="mongo", uri_env=URI_ENV, database=database, topics=topics, **params)


# -- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.name)
def test_bulk_bson_is_byte_for_byte_what_pymongo_encodes_from_dicts(schema):
    batch = random_records(schema, 300, extreme=True)
    layout = DocumentLayout(schema, "md.test")

    data, bounds = layout.encode(batch, 1_000)

    expected = [bson.encode(d) for d in layout.dict_documents(batch, 1_000)]
    assert data == b"".join(expected)
    assert [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)] == expected
    docs = [bson.decode(d) for d in expected]
    assert same_records(records_from_documents(docs, schema), batch)


def test_decimal128_copies_are_the_exact_decimal_of_the_fixed_point_value():
    batch = TRADE.empty(3)
    batch["price"] = [101_250_000_000, -1, np.iinfo(np.int64).min]
    batch["size"] = [1, 0, np.iinfo(np.int64).max]

    raw = DocumentLayout(TRADE, "md.trades").raw_documents(batch, 0)
    docs = [bson.decode(d.raw) for d in raw]

    assert all(
        isinstance(d, RawBSONDocument) and dict(d) == e for d, e in zip(raw, docs, strict=True)
    )

    assert [str(d["price_dec"]) for d in docs] == [
        "101.250000000",
        "-1E-9",
        "-9223372036.854775808",
    ]
    assert [str(d["size_dec"]) for d in docs] == ["1E-8", "0E-8", "92233720368.54775807"]
    assert [d["ts_event"].year for d in docs] == [1970] * 3 and docs[0]["offset"] == 0


# -- the sink against a server -----------------------------------------------------------------


def test_every_builtin_schema_round_trips_through_mongodb(mongo):
    uri, database = mongo
    records = {s: random_records(s, 257, seed=i) for i, s in enumerate(BUILTIN_SCHEMAS)}
    sources = [
        TestingSource([r[:100], r[100:]], stage_id=f"src_{s.name}", topic=f"rt.{s.name}")
        for s, r in records.items()
    ]
    mongo_sink = sink(database, [f"rt.{s.name}" for s in BUILTIN_SCHEMAS])

    summary = run_pipeline([*sources, mongo_sink], wire=False, threaded=True)

    counters = mongo_sink.counters()
    assert (counters["inserted"], counters["already_held"]) == (257 * len(records), 0)
    assert (counters["pending"], counters["spilled"], counters["dropped"]) == (0, 0, 0)
    for schema, expected in records.items():
        back = read_back(uri, database, f"rt_{schema.name}", schema)
        assert same_records(back, expected), schema.name
    assert summary is not None


def test_timeseries_collection_created_with_ts_event_and_instrument(mongo):
    uri, database = mongo
    batch = random_records(TRADE, 10)
    batch["ts_event"] = np.arange(10) + 1_700_000_000_000_000_000

    run_pipeline(
        [
            TestingSource([batch], topic="md.trades"),
            sink(
                database,
                ["md.trades"],
                collections={"md.trades": "trades"},
                granularity="minutes",
                expire_after_secs=86_400,
            ),
        ],
        wire=False,
        threaded=True,
    )

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        (info,) = client[database].list_collections(filter={"name": "trades"})
        docs = list(client[database]["trades"].find({"instrument": int(batch["instrument_id"][0])}))
    assert info["type"] == "timeseries"
    options = info["options"]["timeseries"]
    assert (options["timeField"], options["metaField"]) == ("ts_event", "instrument")
    assert options["granularity"] == "minutes"
    assert info["options"]["expireAfterSeconds"] == 86_400
    assert docs and docs[0]["ts_event_ns"] == batch["ts_event"][0]


@pytest.mark.parametrize("version", ["4.4.0", "5.0.0"])
def test_server_without_indexed_timeseries_gets_a_plain_collection_with_unique_key(version):
    """4.4 has no time-series collections; 5.0 cannot index (stream, offset) in one."""
    with MongoFake(version=version) as old_server:
        os.environ[URI_ENV] = old_server.uri
        try:
            run_pipeline(
                [
                    TestingSource([random_records(TRADE, 5)], topic="md.trades"),
                    sink("old", ["md.trades"]),
                ],
                wire=False,
                threaded=True,
            )
        finally:
            del os.environ[URI_ENV]
        coll = old_server.collection("old", "md_trades")
    assert coll is not None and coll.timeseries is None and len(coll.documents) == 5
    unique = [i.key for i in coll.indexes.values() if i.unique]
    assert {"stream": 1, "offset": 1} in unique


@pytest.mark.parametrize("timeseries", [True, False], ids=["timeseries", "plain"])
def test_resent_offsets_count_as_already_held_and_the_rest_goes_in(mongo, timeseries):
    """An unordered insert cut short (a crash) left offsets 50..99 of 0..149 in the collection:
    with durable offsets the sink sends from the first gap, the held ones are refused (unique
    index) or skipped (time-series), the rest go in, each record exactly once."""
    uri, database = mongo
    records = random_records(TRADE, 150)
    layout = DocumentLayout(TRADE, "md.trades")
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        if timeseries:
            client[database].create_collection(
                "md_trades", timeseries={"timeField": "ts_event", "metaField": "instrument"}
            )
        client[database]["md_trades"].insert_many(layout.raw_documents(records[50:100], 50))
    mongo_sink = sink(database, ["md.trades"], timeseries=timeseries)
    mongo_sink.open(StageContext(topic_schemas={"md.trades": TRADE}, durable_offsets=True))
    try:
        committed_at_open = mongo_sink.committed()

        mongo_sink.write(records, "md.trades", 0)  # the log replays from the first gap
        mongo_sink.flush()

        counters = mongo_sink.counters()
        committed = mongo_sink.committed()
    finally:
        mongo_sink.close()
    assert committed_at_open == {"md.trades": 0} and committed == {"md.trades": 150}
    assert (counters["inserted"], counters["already_held"], counters["pending"]) == (100, 50, 0)
    back = read_back(uri, database, "md_trades", TRADE)
    assert same_records(back, records)


def test_documents_the_server_refuses_fail_the_stage_naming_them(mongo):
    uri, database = mongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        # a collection made by someone else, for another layout: its timeField is not ours
        client[database].create_collection("md_trades", timeseries={"timeField": "time"})
    mongo_sink = sink(database, ["md.trades"], flush_timeout_secs=1.0, retry_max_ms=200.0)
    mongo_sink.open(StageContext(topic_schemas={"md.trades": TRADE}))
    refused = (
        r"3 of 3 documents refused by .*md_trades; first at offset 0 of md\.trades: "
        r".*time.*\(code \d+\); they stay queued"
    )
    try:
        mongo_sink.write(random_records(TRADE, 3), "md.trades", 0)

        with pytest.raises(StageFailed, match=refused):
            mongo_sink.flush()
        with pytest.raises(StageFailed, match=refused):
            mongo_sink.write(random_records(TRADE, 3), "md.trades", 3)
    finally:
        mongo_sink.close()
    counters = mongo_sink.counters()
    assert counters["inserted"] == 0 and counters["pending"] == 3  # kept in the spill, not lost


def test_missing_uri_variable_is_named_with_the_fix(monkeypatch):
    monkeypatch.delenv("NO_SUCH_MONGO_URI", raising=False)
    mongo_sink = MongoSink(uri_env="NO_SUCH_MONGO_URI", topics=["md.trades"])

    problems = mongo_sink.check(StageContext(topic_schemas={"md.trades": TRADE}))

    assert problems and problems[0][0] == "uri_env"
    assert "NO_SUCH_MONGO_URI is not set" in problems[0][1]
    assert "mongodb://" in problems[0][1]


# -- the local server's protocol ---------------------------------------------------------------


def _message(opcode: int, payload: bytes, request_id: int = 7) -> bytes:
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, opcode) + payload


def _exchange(port: int, message: bytes) -> tuple[tuple[int, ...], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(message)
        header = conn.recv(16, socket.MSG_WAITALL)
        length, _, response_to, opcode = struct.unpack("<iiii", header)
        body = conn.recv(length - 16, socket.MSG_WAITALL)
    return (response_to, opcode), body


def test_fake_answers_the_legacy_op_query_handshake(fake_server):
    query = bson.encode({"isMaster": 1, "helloOk": True})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query

    (response_to, opcode), body = _exchange(fake_server.port, _message(2004, payload, 41))

    assert (response_to, opcode) == (41, 1)  # OP_REPLY
    flags, cursor_id, start, returned = struct.unpack_from("<iqii", body)
    reply = bson.decode(body[20:])
    assert returned == 1 and reply["ismaster"] is True and reply["maxWireVersion"] >= 9


def test_fake_checks_op_msg_checksums_and_reads_document_sequences(fake_server):
    docs = [{"stream": "s", "offset": i} for i in range(3)]
    sequence = b"documents\x00" + b"".join(bson.encode(d) for d in docs)
    body = bson.encode({"insert": "seq", "ordered": False, "$db": "wire"})
    payload = struct.pack("<I", 1) + b"\x00" + body
    payload += b"\x01" + struct.pack("<i", 4 + len(sequence)) + sequence
    message = _message(2013, payload)
    message = struct.pack("<i", len(message) + 4) + message[4:]
    checked = fake_server.checksummed

    (_, opcode), reply = _exchange(
        fake_server.port, message + struct.pack("<I", crc32c.crc32c(message))
    )

    assert opcode == 2013 and bson.decode(reply[5:]) == {"n": 3, "ok": 1.0}
    assert fake_server.checksummed == checked + 1
    corrupt = message[:-1] + bytes([message[-1] ^ 1])
    with pytest.raises((ConnectionError, struct.error, OSError)):
        _exchange(fake_server.port, corrupt + struct.pack("<I", crc32c.crc32c(message)))


def test_insert_unordered_reports_each_duplicate_and_goes_on(mongo):
    uri, database = mongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        coll = client[database]["dups"]
        coll.create_index([("stream", 1), ("offset", 1)], unique=True)
        docs = [{"stream": "a", "offset": i % 4} for i in range(8)]

        with pytest.raises(pymongo.errors.BulkWriteError) as caught:
            coll.insert_many(docs, ordered=False)

        held = sorted(d["offset"] for d in coll.find({}, {"offset": 1}))
    details = caught.value.details
    assert details["nInserted"] == 4 and held == [0, 1, 2, 3]
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [
        (i, 11000) for i in range(4, 8)
    ]


def test_unknown_command_is_command_not_found(mongo):
    uri, database = mongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        with pytest.raises(pymongo.errors.OperationFailure) as caught:
            client[database].command("noSuchCommandHere")
    assert caught.value.code == 59


# -- outage ------------------------------------------------------------------------------------

OUTAGE_CONFIG = """
[runtime]
status_interval_secs = 0.25

[data_sources.sim]
type = "simulator"
format = "native"
fields = ["trades"]
topic_prefix = "md"
instruments = 4
rate = {rate}
seed = 7

[stages.mongo]
type = "mongodb"
uri_env = "{uri_env}"
database = "outage"
topics = ["md.trades"]
memory_bytes = 65536            # 1,024 trades: an outage of a second spills
spill_path = "{spill}"
retry_initial_ms = 50.0
retry_max_ms = 400.0
timeout_secs = 1.0
flush_timeout_secs = 60.0

[delivery]
target = "{address}"
topics = ["ind.ema"]

[telemetry]
prometheus = true
prometheus_address = "{metrics}"
"""


def _sink_counters(metrics: str) -> dict[str, int]:
    """The mongo sink's counters from a running pipeline's ``/metrics.json`` ({} if not up)."""
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics.json", timeout=2) as response:
            stages = json.load(response)["stages"]
    except OSError:
        return {}
    return next((s["counters"] for s in stages if s["stage"] == "mongo"), {})


@pytest.mark.slow
def test_mongodb_outage_under_load_spills_and_catches_up_exactly_once(
    fake_server, tmp_path, address
):
    """The server goes away for 3 s while the simulator produces 20,000 trades/s through a
    real ``hftagg run``: ingest runs on (the source's count is what a run without outage
    makes), the backlog spills to disk, the sink retries, and after the server is back the
    collection holds every offset exactly once, equal to what the source produced."""
    config = tmp_path / "config.toml"
    metrics = f"127.0.0.1:{free_port()}"
    config.write_text(
        OUTAGE_CONFIG.format(
            rate=20_000, uri_env=URI_ENV, spill=tmp_path / "spill", address=address, metrics=metrics
        )
    )
    env = {**os.environ, URI_ENV: fake_server.uri}
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--duration", "9", "--status-lines",
                   "--summary-json", str(tmp_path / "s.json")),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while len(fake_server.documents("outage", "md_trades")) < 5_000:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        fake_server.stop()
        during = []
        outage_end = time.monotonic() + 3.0
        while time.monotonic() < outage_end:
            during.append(_sink_counters(metrics))
            time.sleep(0.25)
        fake_server.start()
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    summary = json.loads((tmp_path / "s.json").read_text())["stages"]
    produced = summary["sim"]["records_out"]
    docs = fake_server.documents("outage", "md_trades")
    offsets = np.sort(np.array([d["offset"] for d in docs], dtype=np.int64))
    assert len(offsets) == produced, output
    assert np.array_equal(offsets, np.arange(produced)), "every offset exactly once"
    seqs = {(d["instrument"], d["seq"]) for d in docs}
    assert len(seqs) == produced  # no record stored twice under another offset
    mongo = summary["mongo"]
    assert mongo["retries"] >= 1 and mongo["spilled"] > 0 and mongo["pending"] == 0, mongo
    # an insert whose acknowledgement the outage cut off was resent: its documents were there
    # already (counted already_held, stored once)
    assert mongo["inserted"] + mongo["already_held"] == produced and mongo["dropped"] == 0, mongo
    # during the outage the backlog grew past what memory holds and went to disk
    assert max(c.get("pending", 0) for c in during) > 1_024, during
    assert max(c.get("spill_bytes", 0) for c in during) > 0, during
    assert not during[-1].get("connected", 1), during
    # ingest did not wait for MongoDB: a quarter of the 20,000 events/s are trades
    assert produced >= 0.7 * 5_000 * 9, output


def test_network_errors_and_stepdowns_are_retried_refusals_are_not():
    from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure

    mongo_sink = MongoSink(topics=["md.trades"])

    retried = [AutoReconnect("gone"), NetworkTimeout("slow"), ConnectionResetError()]
    retried += [OperationFailure("shutting down", code=11600), OperationFailure("x", code=10107)]
    refused = [OperationFailure("bad value", code=2), OperationFailure("index", code=86)]

    assert all(mongo_sink.retryable(e) for e in retried)
    assert not any(mongo_sink.retryable(e) for e in refused)
    assert not mongo_sink.retryable(StorageError("3 of 3 documents refused"))
