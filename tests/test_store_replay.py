"""store_replay: merge order across topics, time-range and instrument filters against a numpy
reference, pacing by ts_event through next_awake (on a fake clock), progress, and a stored run
of the default pipeline's topics replayed through the same graph, record for record."""

from __future__ import annotations

import os
import tomllib

import numpy as np
import pytest

import hftagg
from hftagg.builtins.storage.store.segment import SegmentWriter, segment_name
from hftagg.builtins.storage.store_replay.merge import INT64_MIN, merge_keys, merge_step
from hftagg.builtins.storage.store_replay.stage import StoreReplay, StoreReplayParams
from hftagg.builtins.storage.store_replay.streams import parse_time_ns
from hftagg.cli.config_edit import full_validator
from hftagg.errors import ConfigError, StorageError
from hftagg.records import BOOK_UPDATE, QUOTE, TRADE
from hftagg.runtime.assemble import assemble
from hftagg.runtime.status import StatusReporter, format_summary
from hftagg.stages import SourcePosition, StageContext
from hftagg.testing import FakeClock, TestingSink, clear_collected, collected, run_pipeline

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _stream(schema, n, *, seed, step=1000, instruments=4, ties=False):
    """``n`` records of ``schema`` with increasing ts_event (``ties``: many equal ones) and a
    distinct ``seq`` per record, so every record is identifiable."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=schema.dtype)
    gaps = rng.integers(0, 3, n) * step if ties else rng.integers(1, step, n)
    out["ts_event"] = T0 + np.cumsum(gaps)
    out["ts_recv"] = out["ts_event"] + 10
    out["seq"] = np.arange(n, dtype=np.uint64) + 1 + seed * 1_000_000
    out["instrument_id"] = rng.integers(0, instruments, n).astype(np.uint32) + 100
    return out


def _store(root, topic, schema, records, *, per_segment=1000, batch=97):
    """Write ``records`` into ``root/topic`` as the store lays it out: segments of at most
    ``per_segment`` records, appended in batches of ``batch``."""
    folder = root / topic
    folder.mkdir(parents=True)
    position = 0
    while position < len(records):
        chunk = records[position : position + per_segment]
        writer = SegmentWriter(
            folder / segment_name(position),
            schema=schema,
            topic=topic,
            position=position,
            first_offset=position,
            epoch=1,
            max_bytes=4096 * 2 + per_segment * schema.itemsize,
        )
        for i in range(0, len(chunk), batch):
            writer.append(chunk[i : i + batch])
        writer.seal()
        position += len(chunk)


def _join(arrays):
    """Batches joined byte for byte (``np.concatenate`` copies fields, not the padding)."""
    arrays = list(arrays)
    void = np.dtype((np.void, arrays[0].dtype.itemsize))
    return np.concatenate([a.view(void) for a in arrays]).view(arrays[0].dtype)


def _same_records(a, b):
    """Every field equal (rings and sinks copy fields; a dtype's padding bytes are not data)."""
    return a.dtype == b.dtype and all(np.array_equal(a[f], b[f]) for f in a.dtype.names)


def _replay_all(stage, ctx=None):
    """Every batch ``stage`` gives until exhausted (speed 0), as a list of {topic: array}."""
    stage.open(ctx or StageContext())
    return _replay_all_opened(stage)


def _replay_all_opened(stage):
    batches = []
    while not stage.exhausted:
        out = stage.next_batch()
        if out:
            batches.append(out)
    return batches


def _reference_merge(streams):
    """Records of every topic in (ts_event, topic index, stream position) order."""
    ts = np.concatenate([s["ts_event"] for s in streams])
    topic = np.concatenate([np.full(len(s), i) for i, s in enumerate(streams)])
    pos = np.concatenate([np.arange(len(s)) for s in streams])
    order = np.lexsort((pos, topic, ts))
    return topic[order], pos[order]


def _flatten(batches, topics):
    """(topic index, seq) per record in emitted order; within a batch, topics are interleaved
    by ts_event (the merged order of the batch's stretch)."""
    topic_idx, seqs, ts = [], [], []
    for batch in batches:
        parts = [(topics.index(t), b) for t, b in batch.items()]
        t_i = np.concatenate([np.full(len(b), i) for i, b in parts])
        s_i = np.concatenate([b["seq"] for _, b in parts])
        e_i = np.concatenate([b["ts_event"] for _, b in parts])
        order = np.lexsort((t_i, e_i))
        topic_idx.append(t_i[order])
        seqs.append(s_i[order])
        ts.append(e_i[order])
    return np.concatenate(topic_idx), np.concatenate(seqs), np.concatenate(ts)


# -- merge --------------------------------------------------------------------------------------


def test_merge_step_emits_only_what_no_unread_record_can_precede():
    a = np.array([1, 5, 9], dtype=np.int64)  # more of topic 0 follows (keys >= 9)
    b = np.array([2, 9, 30], dtype=np.int64)  # topic 1 is complete

    run, after = merge_step([a, b], [INT64_MIN, INT64_MIN], [True, False])

    # 9 of topic 0 is the boundary; 9 of topic 1 ties with it and sorts after (topic order),
    # so it waits, as does 30
    assert run.keys.tolist() == [1, 2, 5, 9]
    assert run.take(4).tolist() == [3, 1]
    assert after.tolist() == [9, 2]


def test_merge_keys_keep_a_topics_order_when_ts_event_steps_back():
    ts = np.array([10, 12, 11, 15], dtype=np.int64)

    assert merge_keys(ts, floor=13).tolist() == [13, 13, 13, 15]
    assert merge_keys(ts, floor=INT64_MIN).tolist() == [10, 12, 12, 15]


@pytest.mark.parametrize("seed", range(6))
def test_the_merge_kernel_orders_as_a_stable_argsort_of_running_max_keys(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    windows = [
        np.cumsum(rng.integers(-2, 4, int(rng.integers(0, 60)))).astype(np.int64) for _ in range(k)
    ]  # ties and steps back
    floors = rng.integers(-3, 3, k).astype(np.int64)
    more = [bool(len(w)) and bool(rng.integers(0, 2)) for w in windows]

    run, after = merge_step(windows, floors, more)

    keys = [merge_keys(w, f) for w, f in zip(windows, floors, strict=True)]
    flat = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    topic = np.repeat(np.arange(k), [len(w) for w in windows])
    order = np.argsort(flat, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    ends = np.cumsum([len(w) for w in windows]) - 1
    final = min([rank[ends[t]] + 1 for t in range(k) if more[t]], default=len(flat))
    assert run.topic.tolist() == topic[order][:final].tolist()
    assert run.keys.tolist() == flat[order][:final].tolist()
    for t in range(k):
        mine = keys[t][: int((run.topic == t).sum())]
        assert after[t] == (mine[-1] if len(mine) else floors[t])


@pytest.mark.parametrize("batch", [1, 7, 256, 4096])
def test_topics_merge_by_ts_event_then_topic_order_then_stream_position(tmp_path, batch):
    trades = _stream(TRADE, 2500, seed=1, ties=True)
    book = _stream(BOOK_UPDATE, 3100, seed=2, ties=True)
    quotes = _stream(QUOTE, 700, seed=3, step=5000, ties=True)
    for topic, schema, records in (
        ("md.trades", TRADE, trades),
        ("md.book", BOOK_UPDATE, book),
        ("md.quotes", QUOTE, quotes),
    ):
        _store(tmp_path, topic, schema, records, per_segment=900)
    topics = ["md.book", "md.trades", "md.quotes"]  # tie order: book first
    stage = StoreReplay(StoreReplayParams(path=str(tmp_path), topics=topics, batch=batch))

    batches = _replay_all(stage)

    want_topic, want_pos = _reference_merge([book, trades, quotes])
    got_topic, got_seq, _ = _flatten(batches, topics)
    starts = np.cumsum([0, len(book), len(trades)])
    want_seq = np.concatenate([book["seq"], trades["seq"], quotes["seq"]])[
        starts[want_topic] + want_pos
    ]
    assert got_topic.tolist() == want_topic.tolist()
    assert np.array_equal(got_seq, want_seq)
    assert max(sum(len(b) for b in out.values()) for out in batches) <= batch
    per_topic = {t: _join(b[t] for b in batches if t in b) for t in topics}
    assert per_topic["md.trades"].tobytes() == trades.tobytes()  # every field, byte for byte
    assert per_topic["md.book"].tobytes() == book.tobytes()


def test_strict_order_hands_every_record_over_in_exactly_the_merged_order(tmp_path):
    trades = _stream(TRADE, 900, seed=21, ties=True)
    book = _stream(BOOK_UPDATE, 1300, seed=22, ties=True)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=400)
    _store(tmp_path, "md.book", BOOK_UPDATE, book, per_segment=400)
    topics = ["md.trades", "md.book"]
    params = StoreReplayParams(path=str(tmp_path), topics=topics, batch=64, strict_order=True)

    batches = _replay_all(StoreReplay(params))

    assert all(len(b) == 1 for b in batches)  # one topic per batch: a run of the merged order
    got = [(topics.index(t), int(s)) for b in batches for t, a in b.items() for s in a["seq"]]
    want_topic, want_pos = _reference_merge([trades, book])
    want = [
        (int(t), int([trades, book][t]["seq"][p]))
        for t, p in zip(want_topic, want_pos, strict=True)
    ]
    assert got == want
    assert max(len(a) for b in batches for a in b.values()) <= 64


# -- filters ------------------------------------------------------------------------------------


def test_time_range_and_instruments_match_a_numpy_reference(tmp_path):
    trades = _stream(TRADE, 20_000, seed=4, instruments=9)
    book = _stream(BOOK_UPDATE, 15_000, seed=5, step=1500, instruments=9)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=3000)
    _store(tmp_path, "md.book", BOOK_UPDATE, book, per_segment=4000)
    start, end = T0 + 3_000_000, T0 + 7_000_123
    wanted = [101, 104, 108]
    params = StoreReplayParams(
        path=str(tmp_path),
        topics=["md.trades", "md.book"],
        start="2026-01-01T00:00:00.003Z",
        end=str(end),
        instruments=wanted,
        batch=512,
    )

    batches = _replay_all(StoreReplay(params))

    for topic, records in (("md.trades", trades), ("md.book", book)):
        keep = (
            (records["ts_event"] >= start)
            & (records["ts_event"] < end)
            & np.isin(records["instrument_id"], wanted)
        )
        got = _join(b[topic] for b in batches if topic in b)
        assert len(got) and got.tobytes() == records[keep].tobytes()


def test_iso_times_parse_to_utc_nanoseconds():
    assert parse_time_ns("2026-01-01T00:00:00Z", "start", 0) == T0
    assert parse_time_ns("2026-01-01T01:00:00.000000005+01:00", "start", 0) == T0 + 5
    assert parse_time_ns("2026-01-01", "start", 0) == T0
    assert parse_time_ns(str(T0 + 7), "end", 0) == T0 + 7
    assert parse_time_ns(None, "end", -1) == -1
    with pytest.raises(ValueError, match="start = 'yesterday' is not a time"):
        parse_time_ns("yesterday", "start", 0)


def test_a_topic_the_store_lacks_is_named_with_what_it_holds(tmp_path):
    _store(tmp_path, "md.trades", TRADE, _stream(TRADE, 10, seed=6))

    with pytest.raises(ValueError, match=r"no topic 'md\.bok'.*md\.trades"):
        StoreReplay(StoreReplayParams(path=str(tmp_path), topics=["md.bok"]))


def test_an_empty_time_range_is_refused_with_both_bounds():
    with pytest.raises(ValueError, match="is not before end"):
        StoreReplayParams(topics=["md.trades"], start=T0 + 5, end=T0)


# -- pacing and progress ------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [1.0, 2.0, 10.0])
def test_speed_paces_by_ts_event_through_next_awake(tmp_path, speed):
    # two topics with irregular gaps (0 to 20 ms, bursts of equal ts_event), on a fake clock
    trades = _stream(TRADE, 60, seed=7)
    book = _stream(BOOK_UPDATE, 90, seed=8)
    rng = np.random.default_rng(9)
    for records in (trades, book):
        records["ts_event"] = T0 + np.cumsum(rng.integers(0, 3, len(records)) * 10_000_000) // 2
    _store(tmp_path, "md.trades", TRADE, trades)
    _store(tmp_path, "md.book", BOOK_UPDATE, book)
    clock = FakeClock(start_ns=5 * 10**9)
    params = StoreReplayParams(path=str(tmp_path), topics=["md.trades", "md.book"], speed=speed)
    stage = StoreReplay(params)
    emitted, waits = [], []

    with clock.patch("hftagg.builtins.storage.store_replay.stage"):
        stage.open(StageContext())
        while not stage.exhausted:
            out = stage.next_batch()
            if out:
                emitted.append((clock.monotonic_ns(), out))
                continue
            wake = stage.next_awake()
            if wake is not None:  # what the runtime's source loop does: wait until then
                waits.append(wake - clock.monotonic())
                clock.advance(max(wake - clock.monotonic(), 0.0))

    # every record, in order; none before it was due, none more than 1 ms after (the fake
    # clock only moves when the source asks to be woken: no wait was spun for)
    for topic, records in (("md.trades", trades), ("md.book", book)):
        assert _join(o[topic] for _, o in emitted if topic in o).tobytes() == records.tobytes()
    first = min(int(trades["ts_event"][0]), int(book["ts_event"][0]))
    wall0 = emitted[0][0]
    for wall, out in emitted:
        for batch in out.values():
            due = (batch["ts_event"] - first) / speed
            assert (wall - wall0 >= due - 1).all() and (wall - wall0 - due < 1_000_000).all()
    distinct = len(np.unique(np.concatenate([trades["ts_event"], book["ts_event"]])))
    assert len(emitted) == distinct  # one batch per instant: each waited for, none early
    assert len(waits) == distinct - 1 and all(w > 0 for w in waits)
    assert stage.progress()["percent"] == 100.0


def test_progress_reports_share_of_the_time_range_and_the_replay_clock(tmp_path):
    trades = _stream(TRADE, 1000, seed=8)
    trades["ts_event"] = T0 + np.arange(1000, dtype=np.int64) * 1_000_000  # 1 ms apart
    _store(tmp_path, "md.trades", TRADE, trades)
    stage = StoreReplay(StoreReplayParams(path=str(tmp_path), topics=["md.trades"], batch=250))
    stage.open(StageContext())

    stage.next_batch()
    first = stage.progress()
    while not stage.exhausted:
        stage.next_batch()

    assert first["records"] == 250 and first["clock"] == "2026-01-01T00:00:00.249000000Z"
    assert first["percent"] == pytest.approx(24.9, abs=0.1)
    assert stage.progress() == {
        "percent": 100.0,
        "clock": "2026-01-01T00:00:00.999000000Z",
        "records": 1000,
    }


def test_replay_feeds_a_graph_through_the_runtime(tmp_path):
    trades = _stream(TRADE, 5000, seed=9)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=1200)
    out = []
    replay = StoreReplay(
        StoreReplayParams(path=str(tmp_path), topics=["md.trades"], batch=333), stage_id="replay"
    )

    summary = run_pipeline([replay, TestingSink(out, topic="md.trades")])

    assert _same_records(_join(out), trades)
    assert summary["stages"]["replay"]["records"] == 5000


def test_resume_continues_after_what_the_log_holds_and_checks_its_last_record(tmp_path):
    trades = _stream(TRADE, 3000, seed=12, ties=True)
    book = _stream(BOOK_UPDATE, 2000, seed=13, ties=True)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=700)
    _store(tmp_path, "md.book", BOOK_UPDATE, book, per_segment=700)
    params = StoreReplayParams(path=str(tmp_path), topics=["md.trades", "md.book"], batch=300)
    whole = _replay_all(StoreReplay(params))
    logged = whole[:7]  # what a write-ahead log held when the process died
    offsets = {t: sum(len(b[t]) for b in logged if t in b) for t in ("md.trades", "md.book")}
    last = {t: _join(b[t] for b in logged if t in b)[-1:] for t in offsets}

    again = StoreReplay(params)
    again.open(StageContext())
    again.resume(SourcePosition(offsets, last))
    rest = _replay_all_opened(again)

    for topic, records in (("md.trades", trades), ("md.book", book)):
        joined = _join(
            [b[topic] for b in logged if topic in b] + [b[topic] for b in rest if topic in b]
        )
        assert joined.tobytes() == records.tobytes(), topic
    assert again.progress()["records"] == len(trades) + len(book)
    moved = StoreReplay(params)
    moved.open(StageContext())
    wrong = {t: v.copy() for t, v in last.items()}
    wrong["md.book"]["seq"] += 1
    with pytest.raises(StorageError, match=r"resuming md\.book.*store changed"):
        moved.resume(SourcePosition(offsets, wrong))


# -- a stored run replayed through the same graph -----------------------------------------------

LIVE = """
[data_sources.sim]
type = "simulator"
topic_prefix = "sim"
fields = ["trades", "book"]
clock = "simulated"
rate = 0
max_events = 40000
instruments = 6
seed = 11

[processing]
ema_window = 20

[stages.sbe_out]
type = "sbe_encode"
schema = "sbe/hftagg-md.xml"
topics = { trades = "sim.trades", book = "sim.book", output = "raw.sbe" }

[stages.sbe_in]
type = "sbe_decode"
schema = "sbe/hftagg-md.xml"
topics = { input = "raw.sbe" }

[stages.keep]
type = "store"
path = "{store}"
topics = ["md.trades", "md.book", "ind.ema"]

[delivery]
enabled = false
"""

REPLAY = """
[data_sources.replay]
type = "store_replay"
path = "{store}"
topics = ["md.trades", "md.book"]
batch = 1000

[processing]
ema_window = 20

[stages.out]
type = "testing_sink"
key = "replayed"
streams = ["md.trades", "md.book", "ind.ema"]

[delivery]
enabled = false
"""


def _run_config(path, text, store):
    path.write_text(text.replace("{store}", str(store)))
    pipeline = assemble(path, environ={}).pipeline()
    pipeline.start()
    assert pipeline.wait(120), "the pipeline did not finish"
    summary = pipeline.stop()
    return summary, StatusReporter(pipeline).line()


def test_a_stored_run_replays_through_the_same_graph_record_for_record(tmp_path):
    # Arrange: the default pipeline's path (simulator -> SBE -> md.* -> EMA) kept by a store
    store = tmp_path / "storage"
    _run_config(tmp_path / "live.toml", LIVE, store)
    clear_collected("replayed")

    # Act: replay md.trades and md.book from the store into the same EMA stage
    summary, status = _run_config(tmp_path / "replay.toml", REPLAY, store)

    # Assert: the same inputs, and EMA computes exactly what it computed live, same seq
    for topic in ("md.trades", "md.book", "ind.ema"):
        live, again = hftagg.read(topic, path=store), collected("replayed", topic)
        assert len(live) > 1000, topic
        assert _same_records(np.asarray(again), np.asarray(live)), topic
    replay = summary["stages"]["replay"]
    assert replay["progress"]["percent"] == 100.0
    assert replay["progress"]["records"] == replay["records"]
    assert "replayed 100.0% (up to 20" in format_summary(summary)
    assert "replay " in status and "100.0% at 20" in status


def test_config_edits_find_the_store_relative_to_the_config_file(tmp_path, monkeypatch):
    _store(tmp_path, "md.trades", TRADE, _stream(TRADE, 10, seed=14))
    config = tmp_path / "replay.toml"
    config.write_text(
        '[data_sources.replay]\ntype = "store_replay"\npath = "."\ntopics = ["md.trades"]\n'
        "[delivery]\nenabled = false\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    full_validator(config)(tomllib.loads(config.read_text()))  # raises if the store is not found

    with pytest.raises(ConfigError, match="holds no topic 'md.trades'"):
        full_validator(elsewhere / "replay.toml")(tomllib.loads(config.read_text()))


def test_a_torn_segment_tail_is_logged_and_the_records_before_it_replay(tmp_path, caplog):
    trades = _stream(TRADE, 500, seed=15)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=500)
    segment = next((tmp_path / "md.trades").glob("*.seg"))
    os.truncate(segment, segment.stat().st_size - TRADE.itemsize - 5)  # a crash mid-record

    with caplog.at_level("WARNING", logger="hftagg.storage"):
        batches = _replay_all(
            StoreReplay(StoreReplayParams(path=str(tmp_path), topics=["md.trades"]))
        )

    assert _join(b["md.trades"] for b in batches).tobytes() == trades[:498].tobytes()
    assert f"{segment}: torn tail at byte" in caplog.text


RESUMING = """
[delivery]
enabled = false
[data_sources.replay]
type = "store_replay"
path = "{store}"
topics = ["md.trades", "md.book"]
batch = 256
{end}
[stages.keep]
type = "store"
path = "{out}"
topics = ["md.trades", "md.book"]
[durability]
wal = true
path = "{wal}"
"""


def test_with_the_write_ahead_log_a_restarted_replay_resumes_after_what_it_logged(tmp_path):
    # Arrange: a store of two topics; a first run that stops half way (at `end`), logged
    trades = _stream(TRADE, 6000, seed=16)
    book = _stream(BOOK_UPDATE, 4000, seed=17, step=1500)
    store, out = tmp_path / "store", tmp_path / "out"
    _store(store, "md.trades", TRADE, trades, per_segment=2500)
    _store(store, "md.book", BOOK_UPDATE, book, per_segment=2500)
    middle = int(trades["ts_event"][3000])
    config = tmp_path / "replay.toml"
    text = RESUMING.replace("{store}", str(store)).replace("{out}", str(out))
    text = text.replace("{wal}", str(tmp_path / "wal"))
    config.write_text(text.replace("{end}", f"end = {middle}"))
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    assert pipeline.wait(60)
    first = pipeline.stop()

    # Act: the same replay without the end: it resumes after what the log holds
    config.write_text(text.replace("{end}", ""))
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    assert pipeline.wait(60)
    second = pipeline.stop()

    # Assert: the store the replay wrote holds every record once, in order
    assert first["stages"]["replay"]["records"] == 3000 + int((book["ts_event"] < middle).sum())
    assert second["durability"]["resumed"] == ["replay"]
    assert second["stages"]["replay"]["records"] == 10_000 - first["stages"]["replay"]["records"]
    assert second["stages"]["replay"]["progress"]["records"] == 10_000
    for topic, records in (("md.trades", trades), ("md.book", book)):
        assert _same_records(np.asarray(hftagg.read(topic, path=out)), records), topic


def test_a_segment_being_created_by_a_running_store_is_left_out(tmp_path):
    trades = _stream(TRADE, 300, seed=18)
    _store(tmp_path, "md.trades", TRADE, trades, per_segment=100)
    newest = tmp_path / "md.trades" / segment_name(300)
    newest.write_bytes(bytes(8192))  # preallocated, header not written yet

    batches = _replay_all(StoreReplay(StoreReplayParams(path=str(tmp_path), topics=["md.trades"])))

    assert _join(b["md.trades"] for b in batches).tobytes() == trades.tobytes()
    newest.rename(tmp_path / "md.trades" / segment_name(150))
    with pytest.raises(StorageError, match="not an hftagg segment"):  # not the newest: corrupt
        StoreReplay(StoreReplayParams(path=str(tmp_path), topics=["md.trades"])).open(
            StageContext()
        )


def test_archived_parquet_partitions_replay_with_the_live_segments_each_record_once(tmp_path):
    from hftagg.builtins.storage.archive.compact import Compactor

    # Arrange: trades across midnight in sealed segments, archived to Parquet (one file per
    # UTC date: a segment that spans midnight becomes two), then a live segment after them
    trades = _stream(TRADE, 3000, seed=19, step=2 * 10**8)  # ~5 min, from 23:57:30
    trades["ts_event"] += 86_400 * 10**9 - 150 * 10**9
    book = _stream(BOOK_UPDATE, 2000, seed=20, step=3 * 10**8)
    book["ts_event"] += 86_400 * 10**9 - 150 * 10**9
    _store(tmp_path, "md.trades", TRADE, trades[:2400], per_segment=800)
    _store(tmp_path, "md.book", BOOK_UPDATE, book, per_segment=900)
    report = Compactor(tmp_path, settle_ns=0).run_once()
    live = SegmentWriter(
        tmp_path / "md.trades" / segment_name(2400),
        schema=TRADE,
        topic="md.trades",
        position=2400,
        first_offset=2400,
        epoch=1,
        max_bytes=1 << 20,
    )
    live.append(trades[2400:])
    start = int(trades["ts_event"][500])
    params = StoreReplayParams(
        path=str(tmp_path), topics=["md.trades", "md.book"], start=start, batch=700
    )

    # Act
    batches = _replay_all(StoreReplay(params))
    live.seal()

    # Assert: Parquet and segments together, in stored order, merged as always
    assert report.rows == 2400 + 2000 and len(list(tmp_path.rglob("*.parquet"))) >= 5
    assert [p.name for p in (tmp_path / "md.trades").glob("*.seg")] == [segment_name(2400)]
    for topic, records in (("md.trades", trades), ("md.book", book)):
        want = records[records["ts_event"] >= start]
        assert _same_records(_join(b[topic] for b in batches if topic in b), want), topic
    got_topic, _, ts = _flatten(batches, ["md.trades", "md.book"])
    assert (np.diff(ts) >= 0).all() and set(got_topic.tolist()) == {0, 1}


def test_a_config_naming_a_topic_the_store_lacks_gets_one_problem_naming_what_it_holds(tmp_path):
    _store(tmp_path, "md.trades", TRADE, _stream(TRADE, 10, seed=23))
    config = tmp_path / "replay.toml"
    config.write_text(
        '[data_sources.replay]\ntype = "store_replay"\npath = "."\ntopics = ["md.trades", "md.bok"]\n'
        "[delivery]\nenabled = false\n"  # the EMA of the defaults reads md.trades
    )

    with pytest.raises(ConfigError) as caught:
        assemble(config, environ={})

    assert len(caught.value.problems) == 1  # not also "no stage produces md.trades"
    assert "holds no topic 'md.bok' (topics stored there: md.trades)" in str(caught.value)
