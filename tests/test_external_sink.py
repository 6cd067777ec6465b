"""The shared machinery of external sinks: ingest never waits, spill in order, retry, catch up,
idempotent replays, what is left at a stop kept for the next run; and the spill file itself.

The backend here is a test one (a dict in memory that can be "down"); the PostgreSQL and
MongoDB sinks run the same machinery against real servers in their own tests."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hftagg.builtins.storage._external import ExternalParams, ExternalSink
from hftagg.builtins.storage._spill import Spill
from hftagg.records import TRADE
from hftagg.stages import StageContext


class MemoryDb:
    """A database in a dict: stream -> {offset: record}; `up` says whether it answers."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, bytes]] = {}
        self.up = threading.Event()
        self.up.set()
        self.sends = 0


class MemorySink(ExternalSink):
    type_name = "memory_test_sink"

    def __init__(self, db: MemoryDb, **params) -> None:
        super().__init__(self.Params(**params), stage_id="mem")
        self.db = db

    def connect(self) -> dict[str, int]:
        if not self.db.up.is_set():
            raise ConnectionError("database down")
        return {s: max(rows) + 1 for s, rows in self.db.rows.items() if rows}

    def send(self, port, records, offset):
        if not self.db.up.is_set():
            raise ConnectionError("database down")
        rows = self.db.rows.setdefault(self.input_topics[port], {})
        for i, record in enumerate(records):
            assert offset + i not in rows, f"offset {offset + i} written twice"
            rows[offset + i] = record.tobytes()
        self.db.sends += 1


def trades(first: int, n: int) -> np.ndarray:
    batch = TRADE.empty(n)
    batch["seq"] = np.arange(first, first + n)
    batch["price"] = batch["seq"] * 7
    return batch


def ctx(durable: bool = False) -> StageContext:
    return StageContext(topic_schemas={"md.trades": TRADE}, durable_offsets=durable)


def params(tmp_path, **kw) -> dict:
    base = dict(
        topics=["md.trades"],
        spill_path=str(tmp_path / "spill"),
        memory_bytes=1 << 16,
        retry_initial_ms=5.0,
        retry_max_ms=50.0,
        connect_timeout_secs=1.0,
        flush_timeout_secs=10.0,
    )
    base.update(kw)
    return base


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def seqs(db: MemoryDb) -> list[int]:
    rows = db.rows.get("md.trades", {})
    return [int(np.frombuffer(rows[k], TRADE.dtype)["seq"][0]) for k in sorted(rows)]


def test_params_are_the_shared_external_params():
    assert issubclass(MemorySink.Params, ExternalParams)
    assert MemorySink.kind == "storage"


def test_backend_down_writes_never_wait_spill_in_order_and_catch_up(tmp_path):
    db = MemoryDb()
    db.up.clear()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx())

    t0 = time.perf_counter()
    for i in range(100):  # 100 x 100 trades of 64 B = 640 kB, ten times the memory budget
        sink.write(trades(i * 100, 100), "md.trades", i * 100)
    took = time.perf_counter() - t0
    during = sink.counters()
    db.up.set()
    sink.flush()
    after = sink.counters()
    sink.close()

    assert took < 5.0  # no write waited for the backoff (a retry is 5-50 ms)
    assert during["connected"] == 0 and during["pending"] == 10_000
    assert during["spilled"] > 5_000 and during["spill_bytes"] > 0
    assert after["pending"] == 0 and after["written"] == 10_000 and after["dropped"] == 0
    assert after["retries"] >= 1 and after["connected"] == 1
    assert seqs(db) == list(range(10_000))  # every record once, in order, offsets 0..9999
    assert sorted(db.rows["md.trades"]) == list(range(10_000))
    assert list((tmp_path / "spill" / "mem").glob("*.spill")) == []  # disk given back


def test_outage_in_the_middle_keeps_the_cursor_and_loses_nothing(tmp_path):
    db = MemoryDb()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx())
    for i in range(20):
        sink.write(trades(i * 50, 50), "md.trades", i * 50)
        if i == 5:
            assert wait_until(lambda: sink.counters()["pending"] == 0)
            db.up.clear()
        if i == 15:
            db.up.set()
    sink.flush()
    sink.close()

    assert seqs(db) == list(range(1000))


def test_without_durable_offsets_a_second_run_numbers_on_after_the_first(tmp_path):
    db = MemoryDb()
    for run in range(2):
        sink = MemorySink(db, **params(tmp_path))
        sink.open(ctx(durable=False))
        sink.write(trades(run * 10, 10), "md.trades", 0)  # ring offsets restart at 0
        sink.flush()
        sink.close()

    assert sorted(db.rows["md.trades"]) == list(range(20))
    assert seqs(db) == list(range(20))


def test_durable_offsets_a_replay_skips_what_the_backend_holds(tmp_path):
    db = MemoryDb()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx(durable=True))
    sink.write(trades(0, 100), "md.trades", 0)
    sink.flush()
    sink.close()

    replay = MemorySink(db, **params(tmp_path))
    replay.open(ctx(durable=True))
    committed = replay.committed()
    replay.write(trades(60, 100), "md.trades", 60)  # overlaps 60..99
    replay.flush()
    after = replay.committed()
    replay.close()

    assert committed == {"md.trades": 100}
    assert seqs(db) == list(range(160))
    assert after == {"md.trades": 160}


def test_committed_stays_below_what_is_not_yet_in_the_backend(tmp_path):
    db = MemoryDb()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx(durable=True))
    sink.write(trades(0, 10), "md.trades", 0)
    sink.flush()
    db.up.clear()
    sink.write(trades(10, 10), "md.trades", 10)
    stuck = sink.committed()
    db.up.set()
    sink.flush()
    sink.close()

    assert stuck == {"md.trades": 10}


def test_backlog_left_at_a_stop_is_kept_on_disk_and_sent_first_next_run(tmp_path, caplog):
    db = MemoryDb()
    db.up.clear()
    sink = MemorySink(db, **params(tmp_path, flush_timeout_secs=0.2))
    sink.open(ctx())
    for i in range(30):  # some stay in memory, the rest spill
        sink.write(trades(i * 100, 100), "md.trades", i * 100)
    sink.flush()
    sink.close()
    kept = list((tmp_path / "spill" / "mem").glob("*.spill"))

    db.up.set()
    nxt = MemorySink(db, **params(tmp_path))
    nxt.open(ctx())
    nxt.write(trades(3000, 100), "md.trades", 0)
    nxt.flush()
    nxt.close()

    assert kept and "kept in the spill" in caplog.text
    assert db.rows.get("md.trades") and seqs(db) == list(range(3100))


def test_spill_reads_back_in_order_across_segments_and_reopen(tmp_path):
    spill = Spill(tmp_path, {"t": TRADE.dtype}, segment_bytes=2000)
    for i in range(10):
        spill.append("t", i * 5, trades(i * 5, 5))
    spill.close()

    again = Spill(tmp_path, {"t": TRADE.dtype}, segment_bytes=2000)
    got = []
    while again.records:
        frames = again.peek(12)
        got += [int(s) for f in frames for s in f.records["seq"]]
        again.consume(frames)

    assert len(list(tmp_path.glob("*.spill"))) <= 1
    assert got == list(range(50))


def test_spill_corruption_is_reported_counted_and_the_rest_still_reads(tmp_path, caplog):
    spill = Spill(tmp_path, {"t": TRADE.dtype}, segment_bytes=1000)
    for i in range(6):
        spill.append("t", i * 5, trades(i * 5, 5))
    spill.close()
    first = sorted(tmp_path.glob("*.spill"))[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0xFF  # a payload byte of the last frame of the first segment
    first.write_bytes(bytes(data))
    last = sorted(tmp_path.glob("*.spill"))[-1]
    with open(last, "ab") as f:
        f.write(b"HSPL torn")  # a frame cut short by a crash

    again = Spill(tmp_path, {"t": TRADE.dtype}, segment_bytes=1000)
    got = []
    while True:
        frames = again.peek(100)
        if not frames:
            break
        got += [int(s) for f in frames for s in f.records["seq"]]
        again.consume(frames)

    lost = sorted(set(range(30)) - set(got))
    assert again.lost_records == 5 and len(lost) == 5
    assert got == [s for s in range(30) if s not in lost]  # the rest, in order
    assert "payload checksum mismatch" in caplog.text and first.name in caplog.text
    assert "unreadable from byte" in caplog.text and last.name in caplog.text


@pytest.mark.parametrize("durable", [False, True])
def test_no_port_of_another_schema_mixes(tmp_path, durable):
    db = MemoryDb()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx(durable))
    sink.write(trades(0, 3), "md.trades", 0)
    sink.flush()
    sink.close()

    assert list(db.rows) == ["md.trades"]
    assert len(db.rows["md.trades"]) == 3


def test_outage_counters_show_in_status_metrics_and_top(tmp_path):
    from collections import defaultdict

    from rich.console import Console

    from hftagg.runtime.status import external_note
    from hftagg.telemetry.prometheus import _sink_series
    from hftagg.telemetry.top import _external_table

    db = MemoryDb()
    db.up.clear()
    sink = MemorySink(db, **params(tmp_path))
    sink.open(ctx())
    for i in range(30):
        sink.write(trades(i * 100, 100), "md.trades", i * 100)
    counters = sink.counters()
    db.up.set()
    sink.flush()
    sink.close()

    note = external_note(counters)
    series = defaultdict(list)
    _sink_series(series, "mem", counters)
    console = Console(record=True, width=120)
    console.print(_external_table([{"stage": "mem", "counters": counters}]))
    top = console.export_text()

    assert note.startswith("retrying (") and "pending 3.0k" in note and "on disk" in note
    assert series["hftagg_sink_connected"] == ['hftagg_sink_connected{stage="mem"} 0']
    assert series["hftagg_sink_pending_records"] == [
        'hftagg_sink_pending_records{stage="mem"} 3000'
    ]
    assert "retrying" in top and "database sinks" in top
    assert external_note(sink.counters()) == ""  # caught up: nothing to say


def test_without_durable_offsets_the_sink_does_not_take_part_in_replays(tmp_path):
    sink = MemorySink(MemoryDb(), **params(tmp_path))
    sink.open(ctx(durable=False))
    sink.write(trades(0, 5), "md.trades", 0)
    sink.flush()
    committed = sink.committed()
    sink.close()

    assert committed is None
