"""hftagg store verify: torn segment tails, flipped bytes in segments and Parquet files, a
deleted Parquet file, a corrupt catalog -- each reported with file and byte offset, while the
good data stays readable."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from hftagg.builtins.storage.archive import read_archived
from hftagg.builtins.storage.archive.compact import Compactor
from hftagg.builtins.storage.archive.verify import verify_store
from hftagg.builtins.storage.store.segment import segment_name
from hftagg.records.catalog import TRADE
from tests.test_archive import DAY0, make_trades, write_segment


@pytest.fixture
def store(tmp_path):
    """md.trades: three segments archived (three dates), two sealed segments left."""
    root = tmp_path / "storage"
    batches = [make_trades(2000, DAY0 + i * 86_400 * 10**9, 10**6, seed=i) for i in range(5)]
    position = 0
    for i, batch in enumerate(batches):
        write_segment(root, "md.trades", position, batch)
        position += len(batch)
        if i == 2:
            Compactor(root, settle_ns=0).run_once()
    return root, batches


def flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_clean_store_verifies(store):
    root, _ = store

    report = verify_store(root)

    assert report.ok, [str(p) for p in report.problems]
    assert (report.segments, report.segment_records) == (2, 4000)
    assert (report.partitions, report.partition_rows) == (3, 6000)


def test_torn_segment_tail_named_with_file_and_offset(store):
    root, batches = store
    segment = root / "md.trades" / segment_name(8000)
    header = os.path.getsize(segment) - 2000 * TRADE.itemsize
    os.truncate(segment, header + 1500 * TRADE.itemsize + 10)

    report = verify_store(root)

    [problem] = report.problems
    assert problem.file == str(segment) and problem.offset == header + 1500 * TRADE.itemsize
    assert "torn tail" in problem.what and "500 lost" in problem.what


def test_flipped_timestamp_byte_in_a_segment_named_with_offset(store):
    root, _ = store
    segment = root / "md.trades" / segment_name(6000)
    header = os.path.getsize(segment) - 2000 * TRADE.itemsize
    record = header + 700 * TRADE.itemsize
    flip(segment, record + 7)  # the top byte of record 700's ts_event

    problems = verify_store(root).problems

    assert {p.file for p in problems} == {str(segment)}
    assert any(p.offset in (record, record + TRADE.itemsize) for p in problems)
    assert any("ts_event range" in p.what for p in problems)


def test_flipped_byte_in_parquet_named_with_row_group_column_and_offset(store):
    root, batches = store
    victim = root / "md.trades" / "date=2024-10-05" / f"{2000:020d}.parquet"
    chunk = pq.ParquetFile(victim).metadata.row_group(0).column(6)  # price
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    flip(victim, chunk.data_page_offset + 2000)  # inside the page's data (its CRC covers it)

    report = verify_store(root)

    [problem] = report.problems
    assert problem.file == str(victim) and problem.offset == start
    assert "CRC32C" in problem.what and "column 'price'" in problem.what
    readable = read_archived(root, "md.trades", TRADE, end=DAY0 + 86_400 * 10**9)
    assert np.array_equal(readable, batches[0])
    later = read_archived(root, "md.trades", TRADE, start=DAY0 + 2 * 86_400 * 10**9)
    assert np.array_equal(later, batches[2])


def test_deleted_parquet_reported_and_the_rest_readable(store):
    root, batches = store
    gone = root / "md.trades" / "date=2024-10-04" / f"{0:020d}.parquet"
    gone.unlink()

    [problem] = verify_store(root).problems

    assert problem.file == str(gone) and "2000 rows" in problem.what and "gone" in problem.what
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[1:3]))


def test_corrupt_catalog_reported_and_data_still_readable(store):
    root, batches = store
    catalog = root / "catalog.duckdb"
    flip(catalog, 0)
    flip(catalog, 100)

    problems = verify_store(root).problems

    assert [p.file for p in problems] == [str(catalog)]
    assert "cannot be opened" in problems[0].what
    assert np.array_equal(read_archived(root, "md.trades", TRADE), np.concatenate(batches[:3]))


def test_cli_exit_codes(store, capsys):
    from hftagg.cli import main

    root, _ = store
    assert main(["store", "verify", "--path", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "md.trades" / segment_name(8000)).write_bytes(b"not a segment")

    code = main(["store", "verify", "--path", str(root)])

    out = capsys.readouterr().out
    assert code == 1 and segment_name(8000) in out and "at byte 0" in out
