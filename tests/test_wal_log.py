"""The write-ahead log format: append, read back, recover from torn tails and flipped bytes,
roll segments over and delete what every sink has committed past."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from hftagg.builtins.storage.wal.log import (
    FRAME_HEADER,
    SEGMENT_HEADER,
    WriteAheadLog,
)
from hftagg.records.catalog import QUOTE, TRADE


def trades(first_seq: int, n: int) -> np.ndarray:
    batch = TRADE.empty(n)
    batch["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    batch["price"] = batch["seq"].astype(np.int64) * 1_000
    batch["instrument_id"] = 7
    return batch


def read_all(wal: WriteAheadLog, topic: str, start: int = 0) -> np.ndarray:
    pieces = [np.array(b) for _, b in wal.read(topic, start)]
    dtype = wal.streams[topic].dtype
    return np.concatenate(pieces) if pieces else np.empty(0, dtype)


def reopen(path, **kw) -> WriteAheadLog:
    wal = WriteAheadLog(path, **kw)
    wal.open()
    return wal


@pytest.mark.parametrize("fsync", ["none", "interval_ms", "every_batch"])
def test_appended_batches_read_back_identical_after_reopen(tmp_path, fsync):
    wal = reopen(tmp_path, fsync=fsync, interval_ms=1)
    t, q = wal.stream("md.trades", TRADE), wal.stream("md.quotes", QUOTE)
    assert wal.append(t, trades(0, 100)) == 0
    assert wal.append_many([(t, trades(100, 50), None), (q, QUOTE.empty(3), None)]) == [100, 0]
    wal.close()

    wal = reopen(tmp_path, fsync=fsync)
    assert wal.recovery.cut is None
    assert wal.streams["md.trades"].next_offset == 150
    assert wal.streams["md.quotes"].next_offset == 3
    got = read_all(wal, "md.trades")
    assert got.tobytes() == trades(0, 150).tobytes()
    assert int(wal.streams["md.trades"].last["seq"][0]) == 149
    # reading from an offset inside a frame slices it
    assert read_all(wal, "md.trades", start=120)["seq"].tolist() == list(range(120, 150))
    wal.close()


def test_offsets_continue_across_reopen_and_may_skip_ahead(tmp_path):
    wal = reopen(tmp_path)
    wal.append(wal.stream("md.trades", TRADE), trades(0, 10))
    wal.close()
    wal = reopen(tmp_path)
    info = wal.stream("md.trades", TRADE)
    assert wal.append(info, trades(10, 5)) == 10
    assert wal.append(info, trades(100, 5), first_offset=100) == 100  # a gap a sink holds
    with pytest.raises(Exception, match="would go back"):
        wal.append(info, trades(0, 1), first_offset=50)
    wal.close()
    offsets = [o for o, _ in reopen(tmp_path).read("md.trades")]
    assert offsets == [0, 10, 100]


def test_torn_tail_is_cut_to_the_last_good_frame_and_logged(tmp_path, caplog):
    wal = reopen(tmp_path, fsync="none")
    info = wal.stream("md.trades", TRADE)
    for i in range(5):
        wal.append(info, trades(i * 10, 10))
    wal.close()
    segment = sorted(tmp_path.glob("*.wal"))[0]
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size - 7)  # the last frame is torn

    with caplog.at_level(logging.WARNING, logger="hftagg.wal"):
        wal = reopen(tmp_path)
    cut = wal.recovery.cut
    assert cut is not None and "torn frame" in cut.reason
    frame = FRAME_HEADER.size + 10 * TRADE.itemsize
    assert cut.position == size - frame and cut.bytes_cut == frame - 7
    assert str(segment) in caplog.text and f"byte {cut.position}" in caplog.text
    assert wal.streams["md.trades"].next_offset == 40
    assert read_all(wal, "md.trades")["seq"].tolist() == list(range(40))
    assert segment.stat().st_size == cut.position


def test_flipped_byte_is_detected_and_later_segments_set_aside(tmp_path, caplog):
    wal = reopen(tmp_path, segment_bytes=4096)
    info = wal.stream("md.trades", TRADE)
    for i in range(20):
        wal.append(info, trades(i * 20, 20))  # ~1 KB frames: several segments
    wal.close()
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) >= 4
    victim = segments[1]
    with open(victim, "r+b") as f:  # one byte inside the second records frame's payload
        data = bytearray(f.read())
        pos = SEGMENT_HEADER.size
        while data[pos + 12] != 0:  # skip declarations to the first records frame
            pos += FRAME_HEADER.size + int.from_bytes(data[pos + 4 : pos + 8], "little")
        second = pos + FRAME_HEADER.size + 20 * TRADE.itemsize
        data[second + FRAME_HEADER.size + 5] ^= 0xFF
        f.seek(0)
        f.write(data)

    with caplog.at_level(logging.WARNING, logger="hftagg.wal"):
        wal = reopen(tmp_path)
    cut = wal.recovery.cut
    assert cut is not None and "CRC32C" in cut.reason and cut.position == second
    assert cut.file == str(victim) and len(cut.segments_cut) == len(segments) - 2
    assert "CRC32C" in caplog.text and victim.name in caplog.text
    seqs = read_all(wal, "md.trades")["seq"]
    assert seqs.tolist() == list(range(len(seqs)))  # everything before the flip, in order
    assert wal.streams["md.trades"].next_offset == len(seqs)
    assert sorted(p.name for p in tmp_path.glob("*.wal.cut")) == cut.segments_cut


def test_release_deletes_only_segments_every_sink_committed_past(tmp_path):
    wal = reopen(tmp_path, segment_bytes=4096)
    t, q = wal.stream("md.trades", TRADE), wal.stream("md.quotes", QUOTE)
    for i in range(30):
        wal.append_many([(t, trades(i * 20, 20), None), (q, QUOTE.empty(1), None)])
    before = wal.segment_count
    assert wal.release({"md.trades": 0, "md.quotes": 0}) == 0
    deleted = wal.release({"md.trades": 300, "md.quotes": 30})
    assert 0 < deleted < before
    first = wal.first_offset("md.trades")
    assert 0 < first <= 300
    wal.release({"md.trades": 600, "md.quotes": 30})
    assert wal.segment_count == 1  # only the active segment is left
    wal.close()
    # the newest segment declares every stream: offsets survive deleting the old ones
    wal = reopen(tmp_path)
    assert wal.streams["md.trades"].next_offset == 600
    assert wal.streams["md.quotes"].next_offset == 30
    assert wal.append(wal.stream("md.trades", TRADE), trades(600, 1)) == 600


def test_schema_change_for_a_logged_topic_is_refused_with_the_fix(tmp_path):
    wal = reopen(tmp_path)
    wal.stream("md.trades", TRADE)
    with pytest.raises(Exception, match="move the log folder aside"):
        wal.stream("md.trades", QUOTE)
    wal.close()


def test_every_batch_policy_syncs_each_append(tmp_path):
    wal = reopen(tmp_path, fsync="every_batch")
    info = wal.stream("md.trades", TRADE)
    for i in range(3):
        wal.append(info, trades(i, 1))
    assert wal.syncs >= 3
    wal.close()
    assert os.path.getsize(sorted(tmp_path.glob("*.wal"))[-1]) > 0


def test_source_position_counts_only_with_all_of_its_batch(tmp_path, caplog):
    wal = reopen(tmp_path, fsync="none")
    t, q = wal.stream("md.trades", TRADE), wal.stream("md.quotes", QUOTE)
    wal.append_many([(t, trades(0, 10), None), (q, QUOTE.empty(2), None)], ("feed", {"n": 1}))
    wal.append_many([(t, trades(10, 10), None), (q, QUOTE.empty(2), None)], ("feed", {"n": 2}))
    wal.close()
    assert reopen(tmp_path).positions == {"feed": {"n": 2}}
    segment = sorted(tmp_path.glob("*.wal"))[0]
    with open(segment, "r+b") as f:  # the second batch's quotes frame is torn
        f.truncate(segment.stat().st_size - 30)
    for later in sorted(tmp_path.glob("*.wal"))[1:]:
        later.unlink()  # (the empty segments the reopen above started)

    with caplog.at_level(logging.WARNING, logger="hftagg.wal"):
        wal = reopen(tmp_path)

    # the whole second batch is cut: its intact trades frame too, and its position
    assert wal.positions == {"feed": {"n": 1}}
    assert wal.streams["md.trades"].next_offset == 10
    assert wal.streams["md.quotes"].next_offset == 2
    assert "torn frame" in wal.recovery.cut.reason
    assert read_all(wal, "md.trades")["seq"].tolist() == list(range(10))
