"""The ``store`` sink and ``hftagg.read``: every built-in schema through a real pipeline and
back, filters against a numpy reference, zero-copy reads, offsets and idempotency, recovery
after a writer died, conversions to Arrow, pandas and polars."""

from __future__ import annotations

import decimal
import os
import time

import numpy as np
import pyarrow as pa
import pytest

import hftagg
from hftagg.builtins.storage.store.layout import list_segments
from hftagg.builtins.storage.store.segment import read_header
from hftagg.builtins.storage.store.stage import Store, StoreParams, parse_duration_secs
from hftagg.errors import StorageError
from hftagg.records.catalog import BUILTIN_SCHEMAS, TRADE
from hftagg.stages import StageContext
from hftagg.testing import TestingSource, run_pipeline

T0 = 1_780_000_000_000_000_000


def _filled(schema, n, seed=0):
    """Records with every field random (padding zero), ts_event increasing."""
    rng = np.random.default_rng(seed)
    out = schema.empty(n)
    for name in schema.dtype.names:
        field = out[name]
        raw = rng.integers(0, 256, field.nbytes, dtype=np.uint8)
        out[name] = raw.view(field.dtype).reshape(field.shape)
    out["ts_event"] = T0 + np.cumsum(rng.integers(1, 1_000_000, n))
    return out


def _trades(n, instruments=8, seed=1):
    rng = np.random.default_rng(seed)
    out = TRADE.empty(n)
    out["ts_event"] = T0 + np.cumsum(rng.integers(0, 5_000_000, n))
    out["ts_recv"] = out["ts_event"] + 1000
    out["seq"] = np.arange(n)
    out["instrument_id"] = rng.integers(1, instruments + 1, n)
    out["price"] = rng.integers(1, 10**6, n) * 10**7
    out["size"] = rng.integers(1, 10**4, n) * 10**6
    out["side"] = np.where(rng.random(n) < 0.5, ord("B"), ord("A"))
    return out


def _store(tmp_path, batches, schema=TRADE, **params):
    source = TestingSource(batches, schema=schema.key, topic="md.x")
    params.setdefault("archive", False)  # segments stay where the test looks for them
    store = Store(StoreParams(path=str(tmp_path), topics=["md.x"], **params))
    summary = run_pipeline([source, store])
    return store, summary


def _split(records, sizes):
    cuts = np.cumsum(sizes)[:-1]
    return np.split(records, cuts)


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.key)
def test_every_builtin_schema_round_trips_through_the_store(tmp_path, schema):
    records = _filled(schema, 600, seed=schema.schema_id % 1000)
    batches = _split(records, [1, 99, 300, 200])

    store, _ = _store(tmp_path, batches, schema=schema, segment_bytes=64 * 1024)
    back = hftagg.read("md.x", path=tmp_path)

    assert back.schema.schema_id == schema.schema_id and back.topic == "md.x"
    for name in schema.dtype.names:  # bytewise (NaN payloads too); padding is not data
        assert back[name].tobytes() == records[name].tobytes(), name
    assert store.counters()["records_stored"] == 600
    if schema.itemsize * 600 > 64 * 1024:
        assert len(list_segments(tmp_path, "md.x")) > 1


def test_time_and_instrument_filters_match_a_numpy_reference(tmp_path):
    records = _trades(20_000)
    _store(tmp_path, _split(records, [4096] * 4 + [3616]), segment_bytes=128 * 1024)
    ts = records["ts_event"]
    start, end = int(ts[3_000]), int(ts[17_000])

    window = hftagg.read("md.x", start=start, end=end, path=tmp_path)
    picked = hftagg.read("md.x", start=start, end=end, instruments=[2, 5], path=tmp_path)
    nothing = hftagg.read("md.x", start=int(ts[-1]) + 1, path=tmp_path)

    in_window = (ts >= start) & (ts < end)
    assert len(list_segments(tmp_path, "md.x")) > 5
    assert np.array_equal(window, records[in_window])
    assert np.array_equal(picked, records[in_window & np.isin(records["instrument_id"], [2, 5])])
    assert len(nothing) == 0 and nothing.dtype == TRADE.dtype


def test_unordered_segments_are_filtered_with_a_mask(tmp_path):
    records = _trades(5_000)
    shuffled = records[np.random.default_rng(3).permutation(len(records))]
    _store(tmp_path, _split(shuffled, [1000] * 5))
    ts = shuffled["ts_event"]
    start, end = int(np.quantile(ts, 0.2)), int(np.quantile(ts, 0.6))

    back = hftagg.read("md.x", start=start, end=end, path=tmp_path)

    assert not read_header(list_segments(tmp_path, "md.x")[0]).ts_ordered
    assert np.array_equal(back, shuffled[(ts >= start) & (ts < end)])


def test_one_segment_reads_zero_copy_from_the_memory_map(tmp_path):
    records = _trades(3_000)
    _store(tmp_path, [records])

    back = hftagg.read("md.x", start=int(records["ts_event"][100]), path=tmp_path)

    base = back
    while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    assert np.array_equal(back, records[100:])


def _open(tmp_path, durable, topics=("md.x",), archive=False):
    store = Store(StoreParams(path=str(tmp_path), topics=list(topics), archive=archive))
    store.open(StageContext(topic_schemas={t: TRADE for t in topics}, durable_offsets=durable))
    return store


def test_with_durable_offsets_a_replay_skips_what_is_held(tmp_path):
    records = _trades(3_000)
    first = _open(tmp_path, durable=True)
    first.write(records[:1_000], "md.x", 0)
    first.write(records[1_000:2_000], "md.x", 1_000)
    first.close()

    second = _open(tmp_path, durable=True)
    committed = second.committed()
    second.write(records[500:1_500], "md.x", 500)  # all held: skipped
    second.write(records[1_500:3_000], "md.x", 1_500)  # half held: trimmed
    second.close()

    assert committed == {"md.x": 2_000}
    assert second.counters()["duplicates_skipped"] == 1_000 + 500
    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)
    infos = [read_header(p) for p in list_segments(tmp_path, "md.x")]
    assert [(i.first_offset, i.count, i.epoch) for i in infos] == [(0, 2000, 0), (2000, 1000, 0)]


def test_without_durable_offsets_each_run_appends_in_its_own_epoch(tmp_path):
    records = _trades(2_000)
    first = _open(tmp_path, durable=False)
    first.write(records[:1_000], "md.x", 0)
    first.close()
    second = _open(tmp_path, durable=False)
    second.write(records[1_000:], "md.x", 0)  # offsets restart with the run
    second.close()

    infos = [read_header(p) for p in list_segments(tmp_path, "md.x")]

    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)
    assert [(i.position, i.first_offset) for i in infos] == [(0, 0), (1_000, 0)]
    assert infos[0].epoch != infos[1].epoch and not infos[0].durable_offsets


def test_an_offset_jump_starts_a_new_segment(tmp_path):
    records = _trades(300)
    store = _open(tmp_path, durable=False)
    store.write(records[:100], "md.x", 0)
    store.write(records[100:], "md.x", 150)  # 50 offsets skipped by a lossy reader
    store.close()

    infos = [read_header(p) for p in list_segments(tmp_path, "md.x")]

    assert [(i.first_offset, i.count) for i in infos] == [(0, 100), (150, 200)]


def test_a_live_segment_left_by_a_dead_writer_is_sealed_at_the_next_open(tmp_path, caplog):
    records = _trades(1_000)
    dead = _open(tmp_path, durable=True)
    dead.write(records, "md.x", 0)
    dead._topics["md.x"].lock.release()  # the process died: its lock went, its segment is live
    live = read_header(list_segments(tmp_path, "md.x")[0])

    again = _open(tmp_path, durable=True)
    committed = again.committed()
    again.close()

    sealed = read_header(list_segments(tmp_path, "md.x")[0])
    assert not live.sealed and sealed.sealed and sealed.count == 1_000
    assert committed == {"md.x": 1_000}
    assert "left live by a writer that stopped" in caplog.text and str(live.path) in caplog.text
    assert os.path.getsize(live.path) == sealed.header_bytes + 1_000 * TRADE.itemsize


def test_a_topic_has_one_writer_at_a_time(tmp_path):
    first = _open(tmp_path, durable=False)
    try:
        with pytest.raises(StorageError, match="being written by another process") as err:
            _open(tmp_path, durable=False)
    finally:
        first.close()

    assert f"pid {os.getpid()}" in str(err.value) and "md.x" in str(err.value)


def test_a_torn_tail_is_reported_and_the_good_prefix_read(tmp_path, caplog):
    records = _trades(1_000)
    _store(tmp_path, [records])
    path = list_segments(tmp_path, "md.x")[0]
    header_bytes = read_header(path).header_bytes
    os.truncate(path, header_bytes + 600 * TRADE.itemsize + 5)

    back = hftagg.read("md.x", path=tmp_path)

    assert np.array_equal(back, records[:600])
    assert len(back.problems) == 1 and str(path) in back.problems[0]
    assert f"torn tail at byte {header_bytes + 600 * TRADE.itemsize}" in caplog.text


def test_conversions_give_utc_times_and_exact_decimals(tmp_path):
    records = _trades(500)
    _store(tmp_path, [records])
    back = hftagg.read("md.x", instruments=[3], path=tmp_path)

    table = back.to_arrow()
    frame = back.to_pandas()
    polars_frame = back.to_polars()

    assert table.schema.field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert pa.types.is_decimal(table.schema.field("price").type)
    assert str(frame["ts_event"].dtype) == "datetime64[ns, UTC]"
    assert frame["price"].iloc[0] == decimal.Decimal(int(back["price"][0])).scaleb(-9)
    assert frame["size"].iloc[0] == decimal.Decimal(int(back["size"][0])).scaleb(-8)
    assert str(polars_frame.schema["ts_event"]) == "Datetime(time_unit='ns', time_zone='UTC')"
    assert polars_frame.schema["price"].is_decimal() and len(polars_frame) == len(back)
    assert (frame["instrument_id"] == 3).all() and len(frame) == len(back) > 0


def test_times_are_accepted_as_datetimes_text_and_numpy(tmp_path):
    records = _trades(2_000)
    _store(tmp_path, [records])
    start = int(records["ts_event"][500]) // 1000 * 1000  # microsecond resolution for datetime
    as_datetime = np.datetime64(start, "ns").astype("datetime64[us]").item()

    by_ns = hftagg.read("md.x", start=start, path=tmp_path)
    by_datetime = hftagg.read("md.x", start=as_datetime, path=tmp_path)
    by_text = hftagg.read("md.x", start=as_datetime.isoformat() + "Z", path=tmp_path)
    by_numpy = hftagg.read("md.x", start=np.datetime64(start, "ns"), path=tmp_path)

    assert len(by_ns) == len(by_datetime) == len(by_text) == len(by_numpy) > 0


def test_reading_an_unknown_topic_names_what_is_stored(tmp_path):
    _store(tmp_path, [_trades(10)])

    with pytest.raises(StorageError, match="no stored topic 'md.nope'") as err:
        hftagg.read("md.nope", path=tmp_path)

    assert "md.x" in str(err.value)


def test_params_are_validated_with_the_fix_in_the_message():
    with pytest.raises(ValueError, match="'7 days' is not a duration"):
        StoreParams(retention={"md.x": "7 days"})
    with pytest.raises(ValueError, match="cannot be stored"):
        StoreParams(topics=["../etc"])
    params = StoreParams(topics=["md.x", "md.y"], retention={"md.x": "12h", "*": "7d"})

    assert params.retention_secs("md.x") == 12 * 3600
    assert params.retention_secs("md.y") == 7 * 86400
    assert parse_duration_secs("forever") is None


def test_read_merges_archived_parquet_and_live_segments_in_store_order(tmp_path):
    from hftagg.builtins.storage.archive.compact import Compactor

    records = _trades(12_000)
    _store(tmp_path, _split(records[:8192], [4096, 4096]), segment_bytes=128 * 1024)
    Compactor(tmp_path, settle_ns=0).run_once()  # the sealed segments go to Parquet
    archived = len(list_segments(tmp_path, "md.x"))
    later = _open(tmp_path, durable=False)
    later.write(records[8192:], "md.x", 0)  # still live while read
    ts = records["ts_event"]
    start, end = int(ts[2_000]), int(ts[11_000])

    everything = hftagg.read("md.x", path=tmp_path)
    window = hftagg.read("md.x", start=start, end=end, instruments=[1, 4], path=tmp_path)
    later.close()

    keep = (ts >= start) & (ts < end) & np.isin(records["instrument_id"], [1, 4])
    assert archived == 0 and (tmp_path / "catalog.duckdb").exists()
    assert np.array_equal(everything, records)
    assert np.array_equal(window, records[keep])


def test_offsets_and_positions_survive_the_archiving_of_every_segment(tmp_path):
    from hftagg.builtins.storage.archive.compact import Compactor

    records = _trades(3_000)
    first = _open(tmp_path, durable=True)
    first.write(records[:2_000], "md.x", 0)
    first.close()
    Compactor(tmp_path, settle_ns=0).run_once()

    second = _open(tmp_path, durable=True)
    committed = second.committed()
    second.write(records[1_000:], "md.x", 1_000)  # a replay from an older offset
    second.close()

    assert list_segments(tmp_path, "md.x")[0].name == "00000000000000002000.seg"
    assert committed == {"md.x": 2_000}
    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)


def test_the_archiver_runs_beside_the_writer_and_nothing_is_lost_or_doubled(tmp_path):
    records = _trades(40_000)
    store = Store(
        StoreParams(
            path=str(tmp_path), topics=["md.x"], segment_bytes=64 * 1024, retention={"*": "30d"}
        )
    )
    store.open(StageContext(topic_schemas={"md.x": TRADE}))
    for i, batch in enumerate(_split(records, [1000] * 40)):
        store.write(batch, "md.x", i * 1000)
        if i == 20:
            during = hftagg.read("md.x", path=tmp_path)  # segments may vanish meanwhile
    compactor = store._compactor
    store.close()

    assert compactor is not None and compactor.error is None
    assert np.array_equal(during, records[: len(during)]) and len(during) >= 20_000
    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)


def test_a_topic_holding_another_schema_is_refused_with_the_fix(tmp_path):
    from hftagg.records.catalog import QUOTE

    _store(tmp_path, [_trades(10)])
    (tmp_path / "md.x" / "00000000000000000010.seg.tmp").write_bytes(b"")  # a crash mid-make
    store = Store(StoreParams(path=str(tmp_path), topics=["md.x"], archive=False))
    ctx = StageContext(topic_schemas={"md.x": QUOTE})

    problems = store.check(ctx)
    with pytest.raises(StorageError, match="holds trade@2 records but the pipeline sends quote@2"):
        store.open(ctx)
    reopened = _open(tmp_path, durable=False)
    reopened.close()

    assert problems and problems[0][0] == "topics" and "move that folder away" in problems[0][1]
    assert not list((tmp_path / "md.x").glob("*.tmp"))


@pytest.mark.parametrize("fsync", ["none", "seal", "every_batch"])
def test_every_fsync_policy_stores_the_same_records(tmp_path, fsync):
    records = _trades(3_000)

    store, _ = _store(tmp_path, _split(records, [700] * 4 + [200]), fsync=fsync)

    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)
    assert store.counters()["records_stored"] == 3_000


def test_segment_size_and_retention_change_live(tmp_path):
    records = _trades(6_000)
    store = _open(tmp_path, durable=False)
    store.write(records[:3_000], "md.x", 0)
    smaller = store.params.model_copy(update={"segment_bytes": 64 * 1024, "retention": {"*": "1d"}})

    store.reconfigure(smaller)
    store._seal(store._topics["md.x"])  # the live segment keeps its size; new ones get the new
    store.write(records[3_000:], "md.x", 3_000)
    store.close()

    sizes = [read_header(p).count for p in list_segments(tmp_path, "md.x")]
    assert sizes[0] == 3_000 and max(sizes[1:]) == (64 * 1024 - 4096) // TRADE.itemsize
    assert store.params.retention_secs("md.x") == 86_400
    assert np.array_equal(hftagg.read("md.x", path=tmp_path), records)


def test_retention_for_a_topic_not_stored_is_a_check_problem(tmp_path):
    store = Store(StoreParams(path=str(tmp_path), topics=["md.x"], retention={"md.y": "1d"}))

    problems = store.check(StageContext(topic_schemas={"md.x": TRADE}))

    assert problems == [("retention", "names topics not stored here: ['md.y']; stored: ['md.x']")]


def test_an_idle_topics_segment_seals_by_age_while_another_topic_flows(tmp_path):
    records = _trades(200)
    store = Store(
        StoreParams(
            path=str(tmp_path), topics=["md.x", "md.y"], segment_age_secs=0.05, archive=False
        )
    )
    store.open(StageContext(topic_schemas={"md.x": TRADE, "md.y": TRADE}))
    store.write(records[:100], "md.y", 0)  # md.y then goes quiet
    deadline = time.monotonic() + 30
    offset = 0
    while store._topics["md.y"].writer is not None and time.monotonic() < deadline:
        store.write(records[:1], "md.x", offset)
        offset += 1
        time.sleep(0.01)
    idle = read_header(list_segments(tmp_path, "md.y")[0])
    store.close()

    assert idle.sealed and idle.count == 100
