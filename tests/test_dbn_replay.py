"""The dbn_replay source and the DBN decoder on bad input: dead letters, pacing, the runtime."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftagg.builtins.protocols.dbn import DbnDecoder, Reason, RType, decode_file
from hftagg.builtins.protocols.dbn.layouts import LAYOUTS
from hftagg.builtins.protocols.dbn.replay import DbnReplay
from hftagg.stages import StageContext
from hftagg.testing import TestingSink, run_pipeline

zstandard = pytest.importorskip("zstandard", reason="zstandard reads the .dbn.zst test files")

DATA = Path(__file__).parents[1].parent / "shared" / "data" / "dbn"
TRADES = DATA / "test_data.trades.v3.dbn.zst"
needs_data = pytest.mark.skipif(
    not TRADES.exists(), reason=f"shared DBN test data not found at {DATA}"
)

_TRADE = LAYOUTS[(RType.MBP_0, 3)]


def _plain(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()


def _trades_stream(n: int, gap_ns: int = 1_000_000) -> tuple[bytes, int]:
    """A DBN 3 trades stream of ``n`` records built from the shared file: (bytes, metadata size)."""
    raw = _plain(TRADES)
    body = len(raw) - 2 * _TRADE.itemsize
    rec = np.frombuffer(raw, dtype=_TRADE, count=1, offset=body).copy()
    recs = np.repeat(rec, n)
    recs["ts_recv"] = rec["ts_recv"][0] + np.arange(n, dtype=np.uint64) * np.uint64(gap_ns)
    recs["ts_event"] = recs["ts_recv"] - np.uint64(1000)
    recs["sequence"] = np.arange(n, dtype=np.uint32) + 100
    return raw[:body] + recs.tobytes(), body


def _decode_bytes(data: bytes) -> dict[str, np.ndarray]:
    decoder = DbnDecoder(name="test.dbn")
    for i in range(0, len(data), 37):  # odd piece sizes: records span feeds
        decoder.feed(data[i : i + 37])
    decoder.finish()
    parts: dict[str, list] = {}
    while decoder.available or decoder.has_dead_letters:
        for port, batch in decoder.take(5).items():
            parts.setdefault(port, []).append(batch)
    return {port: np.concatenate(b) for port, b in parts.items()}


def _reasons(out) -> list[int]:
    return [
        int(r) for r in out.get("dead_letters", np.empty(0, dtype=[("reason", "u4")]))["reason"]
    ]


# --------------------------------------------------------------------------- bad input


@needs_data
def test_unknown_rtype_is_dead_lettered_and_the_records_around_it_decoded():
    data, start = _trades_stream(5)
    buf = bytearray(data)
    buf[start + 2 * _TRADE.itemsize + 1] = 0x42  # third record: an rtype DBN does not have
    out = _decode_bytes(bytes(buf))
    assert list(out["trades"]["seq"]) == [100, 101, 103, 104]
    assert _reasons(out) == [Reason.UNKNOWN_RTYPE]
    dead = out["dead_letters"][0]
    assert dead["raw_offset"] == start + 2 * _TRADE.itemsize
    assert dead["raw_length"] == _TRADE.itemsize
    assert b"0x42" in dead["detail"]


@needs_data
def test_known_but_unmapped_rtype_is_dead_lettered_with_its_own_reason():
    data, start = _trades_stream(3)
    buf = bytearray(data)
    buf[start + 1] = RType.ERROR  # a live gateway message: no market data in it
    out = _decode_bytes(bytes(buf))
    assert list(out["trades"]["seq"]) == [101, 102]
    assert _reasons(out) == [Reason.UNMAPPED_RTYPE]


@needs_data
def test_truncated_stream_keeps_the_whole_records_and_dead_letters_the_rest():
    data, start = _trades_stream(4)
    out = _decode_bytes(data[: start + 3 * _TRADE.itemsize + 10])
    assert list(out["trades"]["seq"]) == [100, 101, 102]
    assert _reasons(out) == [Reason.TRUNCATED]
    assert out["dead_letters"]["raw_length"][0] == 10


@needs_data
def test_record_length_past_the_end_is_truncated():
    data, start = _trades_stream(3)
    buf = bytearray(data)
    buf[start + 2 * _TRADE.itemsize] = 200  # last record claims 800 bytes
    out = _decode_bytes(bytes(buf))
    assert list(out["trades"]["seq"]) == [100, 101]
    assert _reasons(out) == [Reason.TRUNCATED]


@needs_data
def test_zero_length_record_stops_the_stream_with_bad_length():
    data, start = _trades_stream(4)
    buf = bytearray(data)
    buf[start + _TRADE.itemsize] = 0
    out = _decode_bytes(bytes(buf))
    assert list(out["trades"]["seq"]) == [100]
    assert _reasons(out) == [Reason.BAD_LENGTH]
    assert out["dead_letters"]["raw_offset"][0] == start + _TRADE.itemsize


@needs_data
@pytest.mark.parametrize("piece", [7, 37, 100, 10_000])
def test_bad_length_dead_letter_covers_the_rest_of_the_stream_whatever_the_pieces(piece):
    data, start = _trades_stream(20)
    buf = bytearray(data)
    bad = start + 3 * _TRADE.itemsize
    buf[bad] = 1
    decoder = DbnDecoder(name="test.dbn")
    for i in range(0, len(buf), piece):
        decoder.feed(bytes(buf[i : i + piece]))
    assert not decoder.done  # the dead letter waits for the end of the stream
    decoder.finish()
    dead = decoder.take(100)["dead_letters"]
    assert dead[["reason", "raw_offset", "raw_length"]].tolist() == [
        (Reason.BAD_LENGTH, bad, len(buf) - bad)
    ]
    assert decoder.done


@needs_data
def test_short_record_for_its_rtype_is_skipped():
    data, start = _trades_stream(3)
    buf = bytearray(data)
    # second record: an MBO rtype needs 56 bytes, the record has 48
    buf[start + _TRADE.itemsize + 1] = RType.MBO
    out = _decode_bytes(bytes(buf))
    assert list(out["trades"]["seq"]) == [100, 102]
    assert _reasons(out) == [Reason.SHORT_RECORD]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"XYZ\x03" + bytes(200), Reason.BAD_MAGIC),
        (b"DBN\x07" + bytes(200), Reason.BAD_VERSION),
        (b"DBN\x03\xff\x00\x00\x00" + bytes(100), Reason.TRUNCATED),
    ],
    ids=["bad-magic", "bad-version", "metadata-past-the-end"],
)
def test_unusable_stream_gives_one_dead_letter(data, reason):
    out = _decode_bytes(data)
    assert _reasons(out) == [reason]
    assert "trades" not in out


@needs_data
def test_truncated_and_corrupt_zstd_files_are_dead_lettered(tmp_path):
    compressed = TRADES.read_bytes()
    cut = tmp_path / "cut.dbn.zst"
    cut.write_bytes(compressed[: len(compressed) - 12])
    corrupt = tmp_path / "corrupt.dbn.zst"
    corrupt.write_bytes(compressed[:20] + bytes(range(200, 256)) + compressed[76:])
    for path in (cut, corrupt):
        outs = list(decode_file(path))
        reasons = [int(r) for o in outs for r in o.get("dead_letters", {"reason": []})["reason"]]
        assert reasons and set(reasons) <= {Reason.TRUNCATED, Reason.DECOMPRESS}, path.name


@needs_data
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_streams_never_crash_or_hang(data):
    stream, _ = _trades_stream(6)
    buf = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    started = time.monotonic()
    out = _decode_bytes(bytes(buf[:cut]))
    assert time.monotonic() - started < 5
    decoded = sum(len(b) for p, b in out.items() if p != "dead_letters")
    assert decoded <= 6 * 2  # a trades record can at most become a trade (or mbp-1: 3 outputs)
    for dead in out.get("dead_letters", []):
        assert dead["reason"] in vars(Reason).values()


# --------------------------------------------------------------------------- the source stage


def _drain(stage: DbnReplay, limit: int = 10_000) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for _ in range(limit):
        if stage.exhausted:
            break
        batch = stage.next_batch()
        for port, b in (batch or {}).items():
            out.setdefault(port, []).append(b)
    return out


@needs_data
def test_replay_of_a_glob_emits_each_file_in_name_order():
    stage = DbnReplay(path=str(DATA / "test_data.*.v3.dbn.zst"), batch_records=1)
    _, outputs = stage.ports(stage.params)
    assert {
        "trades",
        "quotes",
        "book",
        "mbo",
        "depth",
        "ohlcv",
        "definitions",
        "statistics",
        "imbalance",
        "dead_letters",
    } == set(outputs)
    stage.open(StageContext())
    out = _drain(stage)
    assert sum(len(b) for b in out["trades"]) == 2 + 2  # trades and tbbo (no T in mbp-1/10)
    assert sum(len(b) for b in out["ohlcv"]) == 6
    assert "dead_letters" not in out
    assert max(len(b) for bs in out.values() for b in bs) <= 3  # batch_records=1 record in


@needs_data
def test_loop_replays_the_file_again():
    stage = DbnReplay(path=str(TRADES), loop=True)
    stage.open(StageContext())
    seen = []
    for _ in range(3):
        seen.extend((stage.next_batch() or {}).get("trades", {"seq": []})["seq"])
    assert len(seen) == 6 and seen[:2] == seen[2:4]
    assert not stage.exhausted


@needs_data
def test_ports_follow_the_file_schema():
    stage = DbnReplay(path=str(TRADES))
    assert set(stage.ports(stage.params)[1]) == {"trades", "dead_letters"}
    with pytest.raises(ValueError, match="matches no file"):
        DbnReplay(path=str(DATA / "nothing-*.dbn"))


@needs_data
@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_pacing_releases_records_at_the_recorded_pace_without_blocking(tmp_path, speed):
    data, _ = _trades_stream(3, gap_ns=200_000_000)  # 200 ms apart
    path = tmp_path / "paced.dbn"
    path.write_bytes(data)
    stage = DbnReplay(path=str(path), speed=speed)
    stage.open(StageContext())
    first = stage.next_batch()
    assert len(first["trades"]) == 1
    t0 = time.monotonic()
    assert stage.next_batch() is None  # not due yet, and the call returns at once
    assert time.monotonic() - t0 < 0.05
    wake = stage.next_awake()
    assert wake is not None
    assert wake - time.monotonic() == pytest.approx(0.2 / speed, abs=0.05)
    time.sleep(max(wake - time.monotonic(), 0) + 0.002)
    assert len(stage.next_batch()["trades"]) == 1


@needs_data
def test_snapshot_and_restore_resume_at_the_same_record(tmp_path):
    data, _ = _trades_stream(10)
    path = tmp_path / "ten.dbn"
    path.write_bytes(data)
    first = DbnReplay(path=str(path), batch_records=4)
    first.open(StageContext())
    head = first.next_batch()["trades"]["seq"].tolist()
    second = DbnReplay(path=str(path), batch_records=4)
    second.open(StageContext())
    second.restore(first.snapshot())
    rest = [s for b in _drain(second)["trades"] for s in b["seq"].tolist()]
    assert head + rest == list(range(100, 110))


@needs_data
def test_replay_through_run_pipeline_reaches_a_sink():
    out: list[np.ndarray] = []
    run_pipeline(
        stages=[DbnReplay(path=str(TRADES)), TestingSink(out, topic="md.trades")], wire=False
    )
    assert sum(len(b) for b in out) == 2


@needs_data
def test_config_file_runs_dbn_replay_into_the_ema_stage(tmp_path):
    from hftagg.runtime.assemble import assemble

    config = tmp_path / "config.toml"
    config.write_text(
        "[data_sources.replay]\n"
        'type = "dbn_replay"\n'
        f'path = "{TRADES}"\n'
        "speed = 0\n\n"
        "[processing]\n"
        "use_mock_data = false\n\n"
        "[delivery]\n"
        "enabled = false\n"
    )
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    try:
        assert pipeline.wait(30), "the replay did not finish"
    finally:
        summary = pipeline.stop()
    assert summary["stages"]["replay"]["records_out"] == 2
    assert summary["stages"]["ema"]["records"] == 2
    assert summary["stages"]["ema"]["records_out"] == 2


@needs_data
def test_a_relative_replay_glob_is_relative_to_the_config_file_not_the_current_folder(
    tmp_path, monkeypatch
):
    from hftagg.runtime.assemble import assemble

    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    shutil.copy(TRADES, folder / "data" / TRADES.name)
    config = folder / "config.toml"
    config.write_text(
        '[data_sources.replay]\ntype = "dbn_replay"\npath = "data/*.dbn.zst"\nspeed = 0\n\n'
        "[delivery]\nenabled = false\n"
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder

    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    try:
        assert pipeline.wait(30), "the replay did not finish"
    finally:
        summary = pipeline.stop()

    assert summary["stages"]["replay"]["records_out"] == 2


# --------------------------------------------------------------------------- merging, gaps


def _trades_at(offsets_ns: list[int], first_seq: int) -> bytes:
    """A DBN 3 trades stream with records at the shared file's first time + ``offsets_ns``."""
    raw = _plain(TRADES)
    body = len(raw) - 2 * _TRADE.itemsize
    rec = np.frombuffer(raw, dtype=_TRADE, count=1, offset=body).copy()
    recs = np.repeat(rec, len(offsets_ns))
    recs["ts_event"] = rec["ts_event"][0] + np.asarray(offsets_ns, dtype=np.uint64)
    recs["ts_recv"] = recs["ts_event"] + np.uint64(500)
    recs["sequence"] = np.arange(len(offsets_ns), dtype=np.uint32) + first_seq
    return raw[:body] + recs.tobytes()


@needs_data
@pytest.mark.parametrize("batch_records", [1, 3, 4096])
def test_a_glob_replays_merged_by_ts_event_ties_in_file_order(tmp_path, batch_records):
    ms = 1_000_000
    (tmp_path / "a.dbn").write_bytes(_trades_at([0, 2 * ms, 4 * ms, 6 * ms, 8 * ms], 100))
    (tmp_path / "b.dbn").write_bytes(_trades_at([1 * ms, 3 * ms, 6 * ms, 9 * ms, 10 * ms], 200))
    stage = DbnReplay(path=str(tmp_path / "*.dbn"), batch_records=batch_records)
    stage.open(StageContext())
    batches = _drain(stage)["trades"]
    seqs = [int(s) for b in batches for s in b["seq"]]
    assert seqs == [100, 200, 101, 201, 102, 103, 202, 104, 203, 204]  # 6 ms: a before b
    ts = np.concatenate([b["ts_event"] for b in batches])
    assert (np.diff(ts) >= 0).all()
    assert max(len(b) for b in batches) <= batch_records
    assert stage.counters["records"] == 10 and stage.counters["files"] == 2
    assert stage.progress()["percent"] == 100.0


@needs_data
def test_merged_replay_resumes_each_file_at_its_own_record(tmp_path):
    ms = 1_000_000
    (tmp_path / "a.dbn").write_bytes(_trades_at([0, 2 * ms, 4 * ms, 6 * ms], 100))
    (tmp_path / "b.dbn").write_bytes(_trades_at([1 * ms, 3 * ms, 5 * ms], 200))
    first = DbnReplay(path=str(tmp_path / "*.dbn"), batch_records=3)
    first.open(StageContext())
    head = [int(s) for s in first.next_batch()["trades"]["seq"]]
    second = DbnReplay(path=str(tmp_path / "*.dbn"), batch_records=3)
    second.open(StageContext())
    second.restore(first.snapshot())
    rest = [int(s) for b in _drain(second)["trades"] for s in b["seq"]]
    assert head == [100, 200, 101]
    assert head + rest == [100, 200, 101, 201, 102, 202, 103]


@needs_data
@pytest.mark.parametrize("max_gap_s", [1.0, 0.0])
def test_a_long_gap_is_capped_at_max_gap_s_counted_and_logged(tmp_path, caplog, max_gap_s):
    hour = 3600 * 1_000_000_000
    (tmp_path / "gap.dbn").write_bytes(_trades_at([0, hour, hour + 1000], 100))
    stage = DbnReplay(path=str(tmp_path / "gap.dbn"), speed=1.0, max_gap_s=max_gap_s)
    stage.open(StageContext())
    assert stage.progress() == {"percent": 0.0, "clock": "-", "records": 0}
    with caplog.at_level("INFO", logger="hftagg.builtins.protocols.dbn.replay"):
        assert len(stage.next_batch()["trades"]) == 1
        assert stage.next_batch() is None  # the next record is not due yet
    wait = stage.next_awake() - time.monotonic()  # the wake-up the stage asks for
    progress = stage.progress()
    assert progress["records"] == 1 and progress["clock"].endswith("Z")
    if max_gap_s:
        assert 0 < wait <= max_gap_s
        assert stage.counters["gaps_skipped"] == 1
        assert stage.counters["gap_seconds_skipped"] == pytest.approx(3599.0)
        assert "skipping a 3600.0 s gap" in caplog.text
        assert stage.next_batch() is None  # asked again early: the same gap is not recounted
        assert stage.counters["gaps_skipped"] == 1
    else:
        assert wait > 3000  # max_gap_s = 0: the recorded hour is waited out
        assert stage.counters["gaps_skipped"] == 0 and "gap" not in caplog.text


@needs_data
def test_paced_merged_replay_releases_the_earliest_file_first_and_caps_gaps_between_files(
    tmp_path,
):
    hour = 3600 * 1_000_000_000
    (tmp_path / "a.dbn").write_bytes(_trades_at([hour, 3 * hour], 100))
    (tmp_path / "b.dbn").write_bytes(_trades_at([0, 2 * hour], 200))
    stage = DbnReplay(path=str(tmp_path / "*.dbn"), speed=1.0, max_gap_s=0.5)
    stage.open(StageContext())
    assert [int(s) for s in stage.next_batch()["trades"]["seq"]] == [200]  # b's, the earliest
    assert stage.next_batch() is None
    assert 0 < stage.next_awake() - time.monotonic() <= 0.5  # not an hour: the gap is capped
    assert stage.counters["gaps_skipped"] == 1
    assert stage.position()["taken"] == [0, 1]
