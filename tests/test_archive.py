"""The archive: sealed segments -> Parquet partitions + DuckDB catalog, crash-safe ordering,
self-healing at start, retention, and archived data read back equal to what pandas, polars and
DuckDB read from the same files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hftagg
from hftagg.builtins.storage.archive import partitions, read_archived
from hftagg.builtins.storage.archive.catalog import Catalog
from hftagg.builtins.storage.archive.compact import Compactor
from hftagg.builtins.storage.archive.parquet import NS_PER_DAY, read_partition, write_partitions
from hftagg.builtins.storage.store.segment import SegmentWriter, segment_name
from hftagg.records.arrow import from_arrow_table, to_arrow_table
from hftagg.records.catalog import BUILTIN_SCHEMAS, TRADE
from tests.test_arrow import _equal_nan, _random_records

DAY0 = 20_000 * NS_PER_DAY  # 2024-10-04 00:00 UTC


def make_trades(n: int, start_ns: int, step_ns: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = TRADE.empty(n)
    out["ts_event"] = start_ns + np.arange(n, dtype=np.int64) * step_ns
    out["ts_recv"] = out["ts_event"] + 1000
    out["seq"] = np.arange(n, dtype=np.uint64) + 1
    out["instrument_id"] = rng.integers(1, 5, n)
    out["side"] = rng.choice([ord("A"), ord("B")], n)
    out["price"] = rng.integers(-(10**15), 10**15, n)
    out["size"] = rng.integers(1, 10**12, n)
    return out


def write_segment(root: Path, topic: str, position: int, records, seal: bool = True):
    folder = root / topic
    folder.mkdir(parents=True, exist_ok=True)
    writer = SegmentWriter(
        folder / segment_name(position),
        schema=TRADE,
        topic=topic,
        position=position,
        first_offset=position,
        epoch=1,
        max_bytes=1 << 20,
    )
    writer.append(records)
    if seal:
        writer.seal(fsync=True)
    return writer


@pytest.fixture
def store(tmp_path):
    """Three sealed segments of md.trades (the second spans midnight) and a live fourth."""
    root = tmp_path / "storage"
    batches = [
        make_trades(1000, DAY0 - 5 * 60 * 10**9, 10**8, seed=1),  # day -1, last 5 minutes
        make_trades(1000, DAY0 - 50 * 10**9, 10**8, seed=2),  # crosses midnight
        make_trades(1000, DAY0 + 3600 * 10**9, 10**6, seed=3),
        make_trades(500, DAY0 + 7200 * 10**9, 10**6, seed=4),
    ]
    writers = []
    position = 0
    for i, batch in enumerate(batches):
        writers.append(write_segment(root, "md.trades", position, batch, seal=i < 3))

        position += len(batch)
    yield root, batches
    writers[-1].seal()


def compactor(root, **kw) -> Compactor:
    return Compactor(root, settle_ns=0, **kw)


def test_sealed_segments_become_parquet_by_date_and_live_one_stays(store):
    root, batches = store

    report = compactor(root).run_once()

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert files == [
        "md.trades/date=2024-10-03/00000000000000000000.parquet",
        "md.trades/date=2024-10-03/00000000000000001000.parquet",
        "md.trades/date=2024-10-04/00000000000000001000.parquet",
        "md.trades/date=2024-10-04/00000000000000002000.parquet",
    ]
    assert report.rows == 3000 and len(report.compacted) == 3
    assert sorted(p.name for p in (root / "md.trades").glob("*.seg")) == [segment_name(3000)]
    archived = read_archived(root, "md.trades", TRADE)
    assert np.array_equal(archived, np.concatenate(batches[:3]))
    entries = Catalog(root).partitions("md.trades")
    assert sum(e.rows for e in entries) == 3000
    assert entries[0].instruments == (1, 2, 3, 4) and entries[0].schema == "trade@2"
    located = partitions(root, "md.trades")
    assert [(p.position, p.entry.source_row) for p in located] == [
        (0, 0),
        (1000, 0),
        (1000, 500),
        (2000, 0),
    ]


def test_parquet_files_carry_zstd_row_group_statistics_and_page_checksums(store):
    root, _ = store
    compactor(root).run_once()
    file = next(root.rglob("*.parquet"))

    meta = pq.ParquetFile(file).metadata
    column_names = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)]
    ts = meta.row_group(0).column(column_names.index("ts_event"))
    instrument = meta.row_group(0).column(column_names.index("instrument_id"))

    assert ts.compression == "ZSTD"
    assert ts.statistics.has_min_max and instrument.statistics.has_min_max
    assert meta.metadata[b"hftagg.topic"] == b"md.trades"


def test_time_and_instrument_filters_match_a_numpy_reference(store):
    root, batches = store
    compactor(root).run_once()
    every = np.concatenate(batches[:3])
    start, end = DAY0 - 30 * 10**9, DAY0 + 3600 * 10**9 + 5 * 10**8

    got = read_archived(root, "md.trades", TRADE, start, end, [2, 3])

    mask = (every["ts_event"] >= start) & (every["ts_event"] < end)
    mask &= np.isin(every["instrument_id"], [2, 3])
    assert len(got) > 0 and np.array_equal(got, every[mask])
    assert [p.entry.date for p in partitions(root, "md.trades", start=DAY0)] == [
        "2024-10-04",
        "2024-10-04",
    ]


def test_hftagg_read_equals_pandas_polars_and_duckdb_on_the_same_files(store):
    root, batches = store
    compactor(root).run_once()
    files = [str(p.path) for p in partitions(root, "md.trades")]
    ours = np.asarray(hftagg.read("md.trades", path=root, end=DAY0 + 7200 * 10**9))
    assert np.array_equal(ours, np.concatenate(batches[:3]))
    reference = to_arrow_table(ours, TRADE)

    by_pandas = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    by_polars = pl.concat([pl.read_parquet(f) for f in files])
    by_duckdb = duckdb.sql(f"SELECT * FROM read_parquet({files}, hive_partitioning=false)")

    assert by_pandas.equals(reference.to_pandas())
    assert str(by_pandas["ts_event"].dtype) == "datetime64[ns, UTC]"
    assert by_pandas["price"].iloc[0] == Decimal(int(ours["price"][0])).scaleb(-9)
    assert np.array_equal(from_arrow_table(pa.Table.from_pandas(by_pandas), TRADE), ours)
    assert by_polars.equals(pl.from_arrow(reference))
    assert by_polars.schema["price"] == pl.Decimal(19, 9)
    assert np.array_equal(from_arrow_table(by_polars.to_arrow(), TRADE), ours)
    assert by_duckdb.types[by_duckdb.columns.index("price")] == "DECIMAL(19,9)"
    assert np.array_equal(from_arrow_table(_arrow(by_duckdb), TRADE), ours)


def _arrow(relation) -> pa.Table:
    result = relation.arrow()
    return result.read_all() if hasattr(result, "read_all") else result


def test_crash_after_parquet_written_before_catalogued(store, caplog):
    root, batches = store
    # the first step of compacting segment 0 completed: its Parquet file exists, uncatalogued
    write_partitions(root, "md.trades", TRADE, batches[0], f"md.trades/{segment_name(0)}")
    (root / "md.trades" / "date=2024-10-03" / ".x.parquet.1234.tmp").write_bytes(b"partial")

    with caplog.at_level(logging.INFO, logger="hftagg.store"):
        report = compactor(root).run_once()

    assert report.heal.added == ["md.trades/date=2024-10-03/00000000000000000000.parquet"]
    assert report.heal.temporary_removed == ["md.trades/date=2024-10-03/.x.parquet.1234.tmp"]
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))
    assert "interrupted Parquet write" in caplog.text


def test_crash_after_catalogued_before_segment_deleted(store):
    root, batches = store
    source = f"md.trades/{segment_name(0)}"
    Catalog(root).replace_source(
        source, write_partitions(root, "md.trades", TRADE, batches[0], source)
    )
    mtime = next(root.rglob("*.parquet")).stat().st_mtime_ns

    report = compactor(root).run_once()

    assert report.already_archived == [source]
    assert next(root.rglob("00000000000000000000.parquet")).stat().st_mtime_ns == mtime
    assert not (root / source).exists()
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


def test_deleted_parquet_is_pruned_and_named(store, caplog):
    root, batches = store
    compactor(root).run_once()
    gone = root / "md.trades/date=2024-10-04/00000000000000002000.parquet"
    gone.unlink()

    with caplog.at_level(logging.WARNING, logger="hftagg.store"):
        report = Catalog(root).heal()

    assert report.pruned == ["md.trades/date=2024-10-04/00000000000000002000.parquet"]
    assert "00000000000000002000.parquet" in caplog.text and "1000 rows" in caplog.text
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:2]))


def test_unreadable_uncatalogued_file_is_quarantined_with_reason(store, caplog):
    root, batches = store
    compactor(root).run_once()
    stray = root / "md.trades/date=2024-10-04/99999999999999999999.parquet"
    stray.write_bytes(b"PAR1 not really parquet PAR1")

    with caplog.at_level(logging.WARNING, logger="hftagg.store"):
        report = Catalog(root).heal()

    assert [f for f, _ in report.quarantined] == [stray.relative_to(root).as_posix()]
    assert (root / "quarantine" / stray.relative_to(root)).exists() and not stray.exists()
    assert "99999999999999999999.parquet" in caplog.text and "unreadable" in caplog.text
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


def test_corrupt_catalog_is_quarantined_and_rebuilt_from_the_files(store, caplog):
    root, batches = store
    compactor(root).run_once()
    before = Catalog(root).partitions()
    (root / "catalog.duckdb").write_bytes(os.urandom(20000))

    with caplog.at_level(logging.WARNING, logger="hftagg.store"):
        report = Catalog(root).heal()

    assert report.catalog_rebuilt and len(report.added) == 4
    assert Catalog(root).partitions() == before
    assert (root / "quarantine" / "catalog.duckdb").exists()
    assert "catalog.duckdb" in caplog.text
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


def test_retention_deletes_partitions_older_than_the_topic_keeps(store):
    root, batches = store
    now = DAY0 + 3 * 3600 * 10**9
    keep_two_hours = {"md.trades": 2 * 3600 * 10**9}

    report = compactor(root, retention_ns=keep_two_hours, clock=lambda: now).run_once()

    assert report.expired == [
        "md.trades/date=2024-10-03/00000000000000000000.parquet",
        "md.trades/date=2024-10-03/00000000000000001000.parquet",
        "md.trades/date=2024-10-04/00000000000000001000.parquet",
    ]
    remaining = sorted(p.name for p in root.rglob("*.parquet"))
    assert remaining == ["00000000000000002000.parquet"]
    assert np.array_equal(read_archived(root, "md.trades", TRADE), batches[2])


def test_retention_star_applies_to_every_topic_not_named(store):
    root, batches = store
    write_segment(root, "md.book", 0, make_trades(10, DAY0 - NS_PER_DAY, 10**6))
    now = DAY0 + 3 * 3600 * 10**9
    keep = {"*": 2 * 3600 * 10**9, "md.book": 10 * NS_PER_DAY}

    report = compactor(root, retention_ns=keep, clock=lambda: now).run_once()

    assert len(report.expired) == 3 and all(f.startswith("md.trades/") for f in report.expired)
    assert len(read_archived(root, "md.book", TRADE)) == 10


def test_background_thread_archives_after_wake_and_on_stop(store):
    root, batches = store
    worker = compactor(root, interval_secs=3600)

    worker.start()
    worker.stop()

    assert worker.totals["segments"] == 3 and worker.totals["rows"] == 3000
    assert worker.error is None
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


def test_a_busy_catalog_is_waited_for_never_quarantined(store):
    root, batches = store
    compactor(root).run_once()
    reader = duckdb.connect(str(root / "catalog.duckdb"), read_only=True)  # another mode
    done = threading.Event()
    result = {}

    def heal():
        result["report"] = Catalog(root).heal()
        done.set()

    worker = threading.Thread(target=heal)
    worker.start()
    assert not done.wait(0.3)  # waiting for the read-only connection to go
    reader.close()
    worker.join()

    assert not result["report"].changed
    assert not (root / "quarantine").exists()
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


_COMPACT_FOREVER = """
import sys
from hftagg.builtins.storage.archive.compact import Compactor
compactor = Compactor(sys.argv[1], settle_ns=0)
while True:
    compactor.run_once()
"""


@pytest.mark.slow
def test_kill_9_during_compaction_loses_and_duplicates_nothing(tmp_path):
    root = tmp_path / "storage"
    batches = [make_trades(20_000, DAY0 + i * 3600 * 10**9, 10**5, seed=i) for i in range(16)]
    for i, batch in enumerate(batches):
        write_segment(root, "md.trades", i * 20_000, batch)
    child = subprocess.Popen([sys.executable, "-c", _COMPACT_FOREVER, str(root)])
    try:
        while not any(root.rglob("*.parquet")) and child.poll() is None:
            time.sleep(0.01)
        time.sleep(0.05)  # somewhere in the middle of the next segments
    finally:
        child.kill()
        child.wait()

    report = compactor(root).run_once()

    assert child.returncode == -9  # killed wherever it was: the outcome must not depend on it
    assert not list((root / "md.trades").glob("*.seg"))
    assert np.array_equal(hftagg.read("md.trades", path=root), np.concatenate(batches))
    assert not list(root.rglob("*.tmp")) and report.heal is not None


def test_catalogued_file_with_a_damaged_footer_is_quarantined_at_start(store, caplog):
    root, batches = store
    compactor(root).run_once()
    victim = root / "md.trades/date=2024-10-04/00000000000000002000.parquet"
    size = victim.stat().st_size
    with open(victim, "r+b") as f:  # the footer length: same size, unreadable footer
        f.seek(size - 5)
        f.write(b"\x7f")

    with caplog.at_level(logging.WARNING, logger="hftagg.store"):
        report = Catalog(root).heal()

    [(name, reason)] = report.quarantined
    assert name == victim.relative_to(root).as_posix() and "unreadable footer" in reason
    assert "00000000000000002000.parquet" in caplog.text and "unreadable footer" in caplog.text
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:2]))


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.key)
def test_every_builtin_schema_round_trips_through_a_parquet_partition(tmp_path, schema):
    records = _random_records(schema, 300, seed=11)
    records["ts_event"] = DAY0 + np.arange(300) * 10**9  # one date

    [part] = write_partitions(tmp_path, "x.y", schema, records, f"x.y/{segment_name(0)}")
    back = read_partition(tmp_path / part.file, schema)

    assert part.rows == 300 and part.schema == schema.key
    assert _equal_nan(back, records)


def test_a_catalog_of_another_layout_is_rebuilt_from_the_files(store):
    root, batches = store
    compactor(root).run_once()
    before = Catalog(root).partitions()
    with duckdb.connect(str(root / "catalog.duckdb")) as con:
        con.execute("ALTER TABLE partitions DROP COLUMN source_row")

    report = Catalog(root).heal()

    assert "source_row" in report.catalog_rebuilt and len(report.added) == 4
    assert Catalog(root).partitions() == before


def test_a_deleted_catalog_still_reads_from_the_files_then_heals(store):
    root, batches = store
    compactor(root).run_once()
    before = Catalog(root).partitions()
    (root / "catalog.duckdb").unlink()

    got = read_archived(root, "md.trades", TRADE)
    report = Catalog(root).heal()

    assert np.array_equal(got, np.concatenate(batches[:3]))
    assert len(report.added) == 4 and Catalog(root).partitions() == before
