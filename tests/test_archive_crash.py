"""Nothing read twice across a kill at any step of archiving (issue 11's durability contract).

Each test plays three runs of a store with durable stream offsets (the write-ahead log's case)
on real files: run 1 stores records and is killed with a live segment; run 2 opens (sealing
that segment, as after any crash), archives up to a given step of the compactor and is killed
there; run 3 opens, is replayed from an offset before what it holds, closes, and the archive
heals and finishes. After every run each ``(stream, seq)`` must be readable exactly once through
``hftagg.read`` and through the DuckDB views of ``hftagg query``.

A kill is what ``kill -9`` leaves: the files as written (the page cache survives the process)
and the topic locks released by the kernel; nothing is sealed or closed.
"""

from __future__ import annotations

import numpy as np
import pytest

import hftagg
from hftagg.builtins.storage.archive import partitions, read_archived
from hftagg.builtins.storage.archive.catalog import Catalog
from hftagg.builtins.storage.archive.compact import Compactor
from hftagg.builtins.storage.archive.parquet import NS_PER_DAY, write_partitions
from hftagg.builtins.storage.archive.query import open_query
from hftagg.builtins.storage.archive.segments import records as segment_records
from hftagg.builtins.storage.archive.segments import sealed_segments
from hftagg.builtins.storage.store.layout import list_segments
from hftagg.builtins.storage.store.segment import SegmentWriter, segment_name
from hftagg.builtins.storage.store.stage import Store, StoreParams
from hftagg.records.catalog import TRADE
from hftagg.stages import StageContext

DAY0 = 20_000 * NS_PER_DAY
TOTAL = 6_000
#: how far run 2 gets through archiving before it is killed (none, then each durable step of
#: the compactor: Parquet written, catalogued, segment deleted)
STEPS = ("none", "written", "catalogued", "deleted")


def trades(n: int) -> np.ndarray:
    """Trades whose ``ts_event`` crosses UTC midnight inside the second segment."""
    rng = np.random.default_rng(5)
    out = TRADE.empty(n)
    out["ts_event"] = DAY0 - 2_000 * 10**6 + np.arange(n, dtype=np.int64) * 10**6
    out["ts_recv"] = out["ts_event"] + 1_000
    out["seq"] = np.arange(n, dtype=np.uint64)
    out["instrument_id"] = rng.integers(1, 5, n)
    out["price"] = rng.integers(1, 10**6, n) * 10**7
    out["size"] = rng.integers(1, 10**4, n) * 10**6
    out["side"] = np.where(rng.random(n) < 0.5, ord("B"), ord("A"))
    return out


def open_store(root) -> Store:
    # 64 KiB segments: 1280 trades each
    store = Store(StoreParams(path=str(root), topics=["md.x"], segment_bytes=64 * 1024,
                              archive=False))  # fmt: skip
    store.open(StageContext(topic_schemas={"md.x": TRADE}, durable_offsets=True))
    return store


def kill(store: Store) -> None:
    """What SIGKILL leaves: nothing sealed, nothing closed, the locks released."""
    for t in store._topics.values():
        t.lock.release()
    store._topics = {}


def write(store: Store, records: np.ndarray, first: int, end: int, batch: int = 500) -> None:
    for offset in range(first, end, batch):
        store.write(records[offset : min(end, offset + batch)], "md.x", offset)


def archive_until(root, step: str) -> None:
    """Run the compactor's steps over every sealed segment, stopping after ``step``."""
    if step == "none":
        return
    if step == "deleted":
        Compactor(root, settle_ns=0).run_once()
        return
    written = {}
    for info in sealed_segments(root, settle_ns=0):
        source = f"md.x/{info.path.name}"
        written[source] = write_partitions(root, "md.x", TRADE, segment_records(info), source)
    if step == "catalogued":
        Catalog(root).replace_sources(written)


def assert_each_once(root, want: np.ndarray, when: str) -> None:
    got = hftagg.read("md.x", path=root)
    seq = np.sort(got["seq"].astype(np.int64))
    assert len(seq) == len(np.unique(seq)), f"{when}: {len(seq) - len(np.unique(seq))} read twice"
    assert np.array_equal(seq, want["seq"].astype(np.int64)), f"{when}: {len(got)} records"
    session = open_query(root)
    try:
        rows, distinct = session.sql("SELECT count(*), count(DISTINCT seq) FROM md_x").fetchall()[0]
    finally:
        session.close()
    assert (rows, distinct) == (len(want), len(want)), f"{when}: hftagg query sees {rows} rows"


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_each_archiving_step_then_a_replay_keeps_every_record_once(tmp_path, step):
    root = tmp_path / "storage"
    records = trades(TOTAL)

    first = open_store(root)
    write(first, records, 0, 3_000)  # two sealed segments and a live one of 440
    kill(first)
    assert_each_once(root, records[:3_000], "after run 1")

    second = open_store(root)  # seals the live segment a kill left
    archive_until(root, step)
    kill(second)  # killed before anything else happened: no write, no seal
    assert_each_once(root, records[:3_000], f"after run 2 killed once {step}")

    third = open_store(root)
    committed = third.committed()
    write(third, records, 2_000, TOTAL)  # the log replays from before what the store holds
    third.close()
    assert committed == {"md.x": 3_000}, f"killed once {step}"
    assert third.counters()["duplicates_skipped"] == 1_000
    assert_each_once(root, records, f"after run 3 (killed once {step})")

    Compactor(root, settle_ns=0).run_once()  # heal, archive the rest
    assert list_segments(root, "md.x") == []
    assert_each_once(root, records, f"after archiving everything (killed once {step})")
    assert np.array_equal(hftagg.read("md.x", path=root), records)  # and in stored order


def test_a_segment_whose_dates_interleave_at_midnight_reads_back_in_stored_order(tmp_path):
    root = tmp_path / "storage"
    records = trades(3_000)
    jitter = np.random.default_rng(9).integers(-20, 20, len(records)) * 10**6  # venues' clocks
    records["ts_event"] += jitter  # near midnight the two dates alternate in stored order
    store = Store(StoreParams(path=str(root), topics=["md.x"], archive=False))
    store.open(StageContext(topic_schemas={"md.x": TRADE}))
    write(store, records, 0, len(records))
    store.close()

    Compactor(root, settle_ns=0).run_once()

    parts = partitions(root, "md.x")
    ts = records["ts_event"]
    near = (ts >= DAY0 - 10 * 10**6) & (ts < DAY0 + 10 * 10**6)
    late = (ts >= DAY0) & np.isin(records["instrument_id"], [2, 3])
    assert len(parts) == 2 and all(p.source_rows() is not None for p in parts)
    assert list_segments(root, "md.x") == []
    assert np.array_equal(hftagg.read("md.x", path=root), records)
    assert np.array_equal(read_archived(root, "md.x", TRADE), records)
    window = hftagg.read("md.x", start=DAY0 - 10 * 10**6, end=DAY0 + 10 * 10**6, path=root)
    assert np.array_equal(window, records[near])
    assert np.array_equal(hftagg.read("md.x", start=DAY0, instruments=[2, 3], path=root),
                          records[late])  # fmt: skip


@pytest.mark.parametrize("sealed", [False, True], ids=["live", "sealed"])
def test_an_empty_segment_a_kill_left_is_removed_not_collided_with(tmp_path, sealed):
    root = tmp_path / "storage"
    records = trades(2_000)
    first = open_store(root)
    write(first, records, 0, 1_000)
    first.write(records[:0], "md.x", 1_000)  # an empty batch makes no segment
    kill(first)
    assert len(list_segments(root, "md.x")) == 1
    # what a kill between making the next segment and its first records leaves (or, sealed,
    # between sealing an empty segment and deleting it)
    empty = SegmentWriter(root / "md.x" / segment_name(1_000), schema=TRADE, topic="md.x",
                          position=1_000, first_offset=1_000, epoch=0, max_bytes=64 * 1024,
                          durable_offsets=True)  # fmt: skip
    if sealed:
        empty.seal()

    second = open_store(root)
    committed = second.committed()
    write(second, records, 1_000, 2_000)
    second.close()
    empty.seal()  # the "killed" writer's descriptor

    assert committed == {"md.x": 1_000}
    assert [p.name for p in list_segments(root, "md.x")] == [segment_name(0), segment_name(1_000)]
    assert_each_once(root, records, "after the empty segment")
    assert np.array_equal(hftagg.read("md.x", path=root), records)
