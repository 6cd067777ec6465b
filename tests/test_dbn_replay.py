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
