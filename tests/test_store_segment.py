"""The segment format: written by SegmentWriter, read by read_header/open_records and by numpy
alone; torn tails found with file and offset; format version 0 still read."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hftagg.builtins.storage.store.segment import (
    HEADER_DTYPE,
    HEADER_V0_DTYPE,
    SegmentWriter,
    open_records,
    read_header,
    seal_abandoned,
    segment_name,
)
from hftagg.errors import StorageError
from hftagg.records.catalog import BUILTIN_SCHEMAS, MBP10, TRADE


def _records(schema, n, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 255, size=n * schema.itemsize, dtype=np.uint8)
    batch = raw.view(schema.dtype).copy()
    batch["ts_event"] = np.sort(rng.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9, n))
    return batch


def _write(folder, schema, batches, *, max_bytes=1 << 20, first_offset=0, seal=True):
    writer = SegmentWriter(
        folder / segment_name(0),
        schema=schema,
        topic="md.x",
        position=0,
        first_offset=first_offset,
        epoch=7,
        max_bytes=max_bytes,
    )
    for batch in batches:
        writer.append(batch)
    if seal:
        writer.seal()
    return writer


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.key)
def test_every_builtin_schema_round_trips_through_a_segment(tmp_path, schema):
    batches = [_records(schema, n, seed=n) for n in (1, 17, 40)]
    _write(tmp_path, schema, batches, max_bytes=1 << 22)

    info = read_header(tmp_path / segment_name(0))
    back = open_records(info)

    assert info.schema.schema_id == schema.schema_id and info.sealed and not info.problems
    assert info.count == 58 and info.first_offset == 0 and info.epoch == 7
    assert back.tobytes() == b"".join(b.tobytes() for b in batches)
    assert os.path.getsize(info.path) == info.header_bytes + 58 * schema.itemsize


def test_segment_reads_with_numpy_memmap_alone(tmp_path):
    batch = _records(TRADE, 1000)
    _write(tmp_path, TRADE, [batch], seal=False)  # a live, preallocated segment
    path = tmp_path / segment_name(0)

    h = np.memmap(path, dtype=HEADER_DTYPE, mode="r", shape=(1,))[0]
    records = np.memmap(
        path, dtype=TRADE.dtype, mode="r", offset=int(h["header_bytes"]), shape=(int(h["count"]),)
    )

    assert h["magic"] == b"HFTAGSEG" and h["format_version"] == 1
    assert np.array_equal(records, batch)
    assert h["ts_min"] == batch["ts_event"][0] and h["ts_max"] == batch["ts_event"][-1]


def test_time_order_flag_and_range_follow_the_data(tmp_path):
    ordered = _records(TRADE, 100)
    shuffled = ordered[::-1].copy()
    _write(tmp_path, TRADE, [ordered, shuffled])

    info = read_header(tmp_path / segment_name(0))

    assert not info.ts_ordered
    assert info.ts_min == ordered["ts_event"].min() and info.ts_max == ordered["ts_event"].max()


def test_torn_tail_is_reported_with_file_and_offset_and_the_prefix_stays_readable(tmp_path):
    batch = _records(MBP10, 10)
    writer = _write(tmp_path, MBP10, [batch])
    path = writer.path
    cut = writer.header_bytes + 7 * MBP10.itemsize + 100  # inside record 7
    os.truncate(path, cut)

    info = read_header(path)
    good = open_records(info)

    assert info.count == 7 and len(info.problems) == 1
    problem = info.problems[0]
    assert str(path) in problem and f"byte {writer.header_bytes + 7 * MBP10.itemsize}" in problem
    assert "10 records" in problem and "3 lost" in problem
    assert np.array_equal(good, batch[:7])


def test_an_abandoned_live_segment_is_sealed_to_its_committed_records(tmp_path):
    batch = _records(TRADE, 50)
    writer = _write(tmp_path, TRADE, [batch], seal=False, max_bytes=1 << 20)
    os.pwrite(writer._fd, _records(TRADE, 5, seed=3).tobytes(), writer.bytes_written)  # uncounted
    live = read_header(writer.path)

    sealed = seal_abandoned(live)

    assert not live.sealed and live.count == 50
    assert sealed.sealed and sealed.count == 50 and not sealed.problems
    assert os.path.getsize(writer.path) == writer.bytes_written
    assert np.array_equal(open_records(sealed), batch)


def _write_v0_frozen(path, schema, records, first_offset):
    """Format version 0 exactly as the first prototype wrote it (frozen: never change this)."""
    head = np.zeros(1, HEADER_V0_DTYPE)
    head["magic"] = b"HFTAGSEG"
    head["format_version"] = 0
    head["record_size"] = schema.itemsize
    head["schema_id"] = schema.schema_id
    head["schema_version"] = schema.version
    head["first_offset"] = first_offset
    head["count"] = len(records)
    head["created_ns"] = 1_700_000_000_000_000_000
    head["schema_name"] = schema.name.encode()
    with open(path, "wb") as f:
        f.write(head.tobytes())
        f.write(records.tobytes())


def test_format_version_0_segments_keep_reading(tmp_path):
    folder = tmp_path / "md.trades"
    folder.mkdir()
    batch = _records(TRADE, 33)
    _write_v0_frozen(folder / segment_name(100), TRADE, batch, first_offset=500)

    info = read_header(folder / segment_name(100))

    assert info.format_version == 0 and info.header_bytes == 64 and info.sealed
    assert info.position == 100 and info.first_offset == 500 and info.topic == "md.trades"
    assert np.array_equal(open_records(info), batch)


def test_not_a_segment_and_a_future_version_are_named_errors(tmp_path):
    junk = tmp_path / "junk.seg"
    junk.write_bytes(b"hello world, not a segment")
    future = tmp_path / "future.seg"
    future.write_bytes(b"HFTAGSEG" + (99).to_bytes(2, "little") + bytes(200))

    with pytest.raises(StorageError, match="not an hftagg segment") as not_segment:
        read_header(junk)
    with pytest.raises(StorageError, match="version 99 is newer") as newer:
        read_header(future)

    assert str(junk) in str(not_segment.value) and str(future) in str(newer.value)
