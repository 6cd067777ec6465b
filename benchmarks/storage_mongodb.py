"""MongoDB cases of ``python -m benchmarks storage``: the sink's bulk BSON encoding against
building one dict per record, and, when a server is given, ``insert_many`` of both.

``mongodb-encode``
    Trades (the storage benchmark's stream) in the pipeline's batches of 4,096, turned into what
    ``insert_many`` sends: hftagg builds a whole batch's BSON through numpy
    (:class:`~hftagg.builtins.storage.mongodb.documents.DocumentLayout`) and wraps each record's
    bytes in a ``RawBSONDocument``; the baseline builds the same documents as dicts
    (``Int64``, ``datetime``, ``Decimal128`` values) and encodes them with ``bson.encode`` (the
    C extension pymongo itself uses). Both produce byte-identical documents (a test checks it).
    Records/s; the details give the same without the Decimal128 copies.
``mongodb-insert``
    Only when ``HFTAGG_BENCH_MONGODB_URI`` names a server (a real one: the tests' local server is
    Python and would measure itself): ``insert_many(ordered=False)`` of the same documents into a
    plain collection with the sink's unique index, raw against dicts. Skipped with a message
    otherwise.

Figures are the best of a few runs on a machine others share: expect 10-20 % noise.
"""

from __future__ import annotations

import os
import sys
import time

import bson
import numpy as np

from benchmarks.bench_storage import SMALL, TOPIC, make_trades, split
from benchmarks.harness import Result
from hftagg.builtins.storage.mongodb.documents import DocumentLayout, documents_as_dicts
from hftagg.records import TRADE

__all__ = ["cases"]


def _best(work, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def encode_rates(records: np.ndarray, repeat: int, decimals: bool) -> tuple[float, float]:
    """(raw records/s, dict records/s) for ``records`` in batches of 4,096."""
    layout = DocumentLayout(TRADE, TOPIC, decimals=decimals)
    batches = split(records, SMALL)

    def raw() -> None:
        offset = 0
        for batch in batches:
            layout.raw_documents(batch, offset)
            offset += len(batch)

    def dicts() -> None:
        offset = 0
        for batch in batches:
            [bson.encode(d) for d in documents_as_dicts(layout, batch, offset)]
            offset += len(batch)

    n = len(records)
    return n / _best(raw, repeat), n / _best(dicts, repeat)


def insert_rates(uri: str, records: np.ndarray, repeat: int) -> tuple[float, float]:
    import pymongo

    layout = DocumentLayout(TRADE, TOPIC)
    batches = split(records, SMALL)
    with pymongo.MongoClient(uri) as client:
        db = client["hftagg_bench"]

        def run(build) -> None:
            db.drop_collection("trades")
            db["trades"].create_index([("stream", 1), ("offset", 1)], unique=True)
            offset = 0
            for batch in batches:
                db["trades"].insert_many(build(batch, offset), ordered=False)
                offset += len(batch)

        raw = _best(lambda: run(layout.raw_documents), repeat)
        dicts = _best(lambda: run(lambda b, o: documents_as_dicts(layout, b, o)), repeat)
        client.drop_database("hftagg_bench")
    return len(records) / raw, len(records) / dicts


def cases(quick: bool) -> list[Result]:
    n = 100_000 if quick else 1_000_000
    repeat = 2 if quick else 3
    records = make_trades(n)
    raw, dicts = encode_rates(records, repeat, decimals=True)
    raw_plain, dicts_plain = encode_rates(records, repeat, decimals=False)
    results = [
        Result(
            "mongodb-encode",
            raw,
            dicts,
            "dict per record + bson.encode",
            "rec/s",
            extra={
                "records": n,
                "batch": SMALL,
                "without_decimal128": {"hftagg": raw_plain, "baseline": dicts_plain},
            },
        )
    ]
    uri = os.environ.get("HFTAGG_BENCH_MONGODB_URI")
    if uri:
        raw_insert, dict_insert = insert_rates(uri, records[: n // 4], repeat)
        results.append(
            Result("mongodb-insert", raw_insert, dict_insert, "insert_many of dicts", "rec/s")
        )
    else:
        sys.stderr.write(
            "storage: mongodb-insert skipped: set HFTAGG_BENCH_MONGODB_URI=mongodb://... "
            "(a real server)\n"
        )
    return results
