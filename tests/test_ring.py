"""The in-process ring bus: wraparound, policies, backpressure, zero-copy, real threads."""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from hftagg.bus import Policy, Reader, Ring
from hftagg.errors import BusError, BusTimeout

DTYPE = np.dtype([("seq", "<u8"), ("a", "<i8"), ("b", "<f8"), ("c", "<i8")])
JOIN_SECS = 20


@pytest.fixture
def frequent_thread_switches():
    """Hand the GIL over every 10 µs, so interleavings that are rare in production are common."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def records(start: int, n: int) -> np.ndarray:
    """``n`` records whose fields are all derived from their stream offset ``seq``."""
    out = np.empty(n, DTYPE)
    seq = np.arange(start, start + n, dtype=np.int64)
    out["seq"] = seq
    out["a"] = seq * 3
    out["b"] = seq * 0.5
    out["c"] = -seq
    return out


def assert_records(batch: np.ndarray, start: int) -> None:
    """``batch`` is exactly the records ``start .. start + len(batch)``, every field intact."""
    assert batch.dtype == DTYPE
    np.testing.assert_array_equal(batch, records(start, len(batch)))


def drain(reader: Reader, max_records: int = 1 << 20) -> np.ndarray:
    """Everything a reader can read now, as one array."""
    parts = []
    while len(batch := reader.read(max_records)):
        parts.append(batch)
    return np.concatenate(parts) if parts else np.empty(0, DTYPE)


def start_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def publish_in_batches(ring: Ring, stream: np.ndarray, size: int) -> None:
    for i in range(0, len(stream), size):
        ring.publish(stream[i : i + size])


def publish_in_thread(ring: Ring, batch: np.ndarray, **kwargs) -> tuple[threading.Thread, dict]:
    """Publish from another thread; the dict gets ``offset`` or ``error``."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["offset"] = ring.publish(batch, **kwargs)
        except Exception as exc:  # handed back to the test
            outcome["error"] = exc

    return start_thread(work), outcome


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "got"), [(1, 2), (2, 2), (3, 4), (1000, 1024), (4096, 4096)])
def test_capacity_is_rounded_up_to_a_power_of_two(asked, got):
    ring = Ring(DTYPE, asked, name="t")

    assert ring.capacity == got
    assert ring.itemsize == 32
    assert ring.dtype == DTYPE
    assert ring.published == 0


@pytest.mark.parametrize("capacity", [0, -4, 2.5, True])
def test_a_capacity_that_is_not_a_positive_int_is_refused(capacity):
    with pytest.raises(BusError, match="ring 'quotes': capacity"):
        Ring(DTYPE, capacity, name="quotes")


def test_a_buffer_that_is_too_small_is_refused_with_the_size_needed():
    with pytest.raises(BusError, match=r"ring 'x'.*512 bytes.*got 100 bytes"):
        Ring(DTYPE, 16, name="x", buffer=bytearray(100))


# -- wraparound and zero-copy ---------------------------------------------------------------


def test_contents_stay_intact_across_many_wraps_with_batches_straddling_the_end():
    ring = Ring(DTYPE, 16, name="wrap")
    reader = ring.subscribe("r")
    rng = np.random.default_rng(7)
    straddled = 0
    received = []

    for _ in range(2000):
        n = int(rng.integers(1, 17))
        offset = ring.publish(records(ring.published, n))
        straddled += (offset % 16) + n > 16
        received.append(drain(reader, int(rng.integers(1, 20))))

    stream = np.concatenate(received)
    assert straddled > 100
    assert len(stream) == ring.published > 2000 // 16 * 16
    assert_records(stream, 0)


def test_lossless_poll_is_a_read_only_view_into_the_ring_buffer():
    storage = np.zeros(8 * DTYPE.itemsize, np.uint8)
    ring = Ring(DTYPE, 8, name="view", buffer=storage)
    reader = ring.subscribe("r")
    ring.publish(records(0, 5))

    batch = reader.poll(10)

    assert_records(batch, 0)
    assert np.shares_memory(batch, storage)
    assert not batch.flags.writeable
    assert batch.flags.c_contiguous


def test_lossless_poll_stops_at_the_end_of_the_buffer_and_the_rest_comes_next_poll():
    ring = Ring(DTYPE, 8, name="end")
    reader = ring.subscribe("r")
    ring.publish(records(0, 6))
    reader.poll(6)
    reader.commit()
    ring.publish(records(6, 5))  # slots 6, 7, then 0, 1, 2

    first = reader.poll(100)
    reader.commit()
    second = reader.poll(100)

    assert_records(first, 6)
    assert len(first) == 2
    assert_records(second, 8)
    assert len(second) == 3


def test_a_lossless_view_stays_valid_until_commit_even_when_the_writer_wants_its_slots():
    ring = Ring(DTYPE, 4, name="pin")
    reader = ring.subscribe("r")
    ring.publish(records(0, 4))
    view = reader.poll(4)

    with pytest.raises(BusTimeout):
        ring.publish(records(4, 1), timeout=0.05)

    assert_records(view, 0)
    reader.commit(1)
    ring.publish(records(4, 1), timeout=1)
    assert_records(reader.poll(4), 1)


def test_polling_twice_without_commit_returns_the_same_records():
    ring = Ring(DTYPE, 8, name="again")
    reader = ring.subscribe("r")
    ring.publish(records(0, 3))

    first = reader.poll(8).copy()
    second = reader.poll(8)

    np.testing.assert_array_equal(first, second)
    assert reader.cursor == 0


def test_partial_commit_advances_only_past_the_records_committed():
    ring = Ring(DTYPE, 8, name="part")
    reader = ring.subscribe("r")
    ring.publish(records(0, 5))

    reader.poll(5)
    reader.commit(2)

    assert reader.cursor == 2
    assert reader.backlog() == 3
    assert_records(reader.poll(8), 2)


def test_committing_more_than_was_polled_is_an_error_naming_reader_and_ring():
    ring = Ring(DTYPE, 8, name="trades")
    reader = ring.subscribe("ema")
    ring.publish(records(0, 3))
    reader.poll(2)

    with pytest.raises(BusError, match=r"reader 'ema' on ring 'trades': commit\(3\).*2 records"):
        reader.commit(3)


def test_read_returns_a_copy_the_caller_keeps_and_commits():
    ring = Ring(DTYPE, 4, name="copy")
    reader = ring.subscribe("r")
    ring.publish(records(0, 4))

    kept = reader.read(4)
    ring.publish(records(4, 4))  # overwrites every slot

    assert reader.cursor == 4
    assert not np.shares_memory(kept, reader.poll(4))
    assert_records(kept, 0)


def test_poll_returns_an_empty_array_of_the_ring_dtype_when_nothing_is_new():
    ring = Ring(DTYPE, 8, name="idle")
    readers = [ring.subscribe(p.value, p) for p in Policy]

    for reader in readers:
        batch = reader.poll(10)
        assert len(batch) == 0
        assert batch.dtype == DTYPE


# -- publish errors and options -------------------------------------------------------------


def test_publish_rejects_another_dtype_naming_the_ring_and_both_dtypes():
    ring = Ring(DTYPE, 8, name="quotes")
    wrong = np.zeros(3, [("seq", "<u8"), ("a", "<i4")])

    with pytest.raises(BusError) as info:
        ring.publish(wrong)

    message = str(info.value)
    assert "ring 'quotes'" in message
    assert str(DTYPE) in message
    assert str(wrong.dtype) in message
    assert ring.published == 0


def test_publish_accepts_a_non_contiguous_batch_and_returns_its_first_offset():
    ring = Ring(DTYPE, 16, name="strided")
    reader = ring.subscribe("r")
    ring.publish(records(0, 2))

    offset = ring.publish(records(2, 10)[::2])

    assert offset == 2
    np.testing.assert_array_equal(
        drain(reader), np.concatenate([records(0, 2), records(2, 10)[::2]])
    )


def test_publish_from_a_blocked_call_returns_when_stop_is_set():
    ring = Ring(DTYPE, 8, name="stopping")
    ring.subscribe("never-reads")
    stop = threading.Event()

    thread, outcome = publish_in_thread(ring, records(0, 20), stop=stop)
    time.sleep(0.05)
    assert thread.is_alive()
    stop.set()
    thread.join(JOIN_SECS)

    assert not thread.is_alive()
    assert outcome == {"offset": 0}
    assert ring.published == 8  # what fitted before it blocked, nothing after


def test_publishing_an_empty_batch_changes_nothing():
    ring = Ring(DTYPE, 8, name="empty")
    event = threading.Event()
    ring.add_waiter(event)
    ring.publish(records(0, 3))
    event.clear()

    offset = ring.publish(records(3, 0))

    assert offset == ring.published == 3
    assert not event.is_set()


def test_waiters_are_set_on_publish_until_removed():
    ring = Ring(DTYPE, 8, name="wake")
    event = threading.Event()
    ring.add_waiter(event)

    ring.publish(records(0, 1))
    assert event.is_set()

    event.clear()
    ring.remove_waiter(event)
    ring.publish(records(1, 1))
    assert not event.is_set()


# -- backpressure ---------------------------------------------------------------------------


def test_lossless_reader_blocks_writer_until_it_commits():
    ring = Ring(DTYPE, 8, name="bp")
    reader = ring.subscribe("slow")
    ring.publish(records(0, 8))
    assert ring.free_space() == 0

    thread, outcome = publish_in_thread(ring, records(8, 4), timeout=JOIN_SECS)
    time.sleep(0.05)
    assert thread.is_alive()
    assert ring.published == 8

    reader.poll(4)
    reader.commit()
    thread.join(JOIN_SECS)

    assert outcome == {"offset": 8}
    assert ring.published == 12
    assert_records(drain(reader), 4)


def test_publish_times_out_naming_the_ring_the_pending_count_and_the_slowest_reader():
    ring = Ring(DTYPE, 8, name="trades")
    fast = ring.subscribe("fast")
    ring.subscribe("slow")
    ring.publish(records(0, 8))
    drain(fast)

    started = time.monotonic()
    with pytest.raises(BusTimeout) as info:
        ring.publish(records(8, 5), timeout=0.1)

    assert 0.1 <= time.monotonic() - started < 2
    message = str(info.value)
    assert "ring 'trades'" in message
    assert "5 records pending" in message
    assert "slowest reader 'slow'" in message


def test_free_space_is_what_the_slowest_lossless_reader_allows():
    ring = Ring(DTYPE, 16, name="space")
    fast = ring.subscribe("fast")
    slow = ring.subscribe("slow")
    ring.subscribe("lossy", Policy.DROP_OLDEST)
    ring.publish(records(0, 10))

    drain(fast)
    slow.poll(3)
    slow.commit()

    assert ring.free_space() == 16 - 7
    ring.unsubscribe(slow)
    assert ring.free_space() == 16
    ring.unsubscribe(fast)
    assert ring.free_space() == 16


def test_unsubscribing_a_lagging_reader_releases_a_blocked_writer():
    ring = Ring(DTYPE, 4, name="gone")
    lagging = ring.subscribe("lagging")
    ring.publish(records(0, 4))

    thread, outcome = publish_in_thread(ring, records(4, 4), timeout=JOIN_SECS)
    time.sleep(0.05)
    ring.unsubscribe(lagging)
    thread.join(JOIN_SECS)

    assert outcome == {"offset": 4}
    assert ring.readers == []


def test_unsubscribing_an_unknown_reader_is_an_error():
    ring = Ring(DTYPE, 4, name="a")
    stranger = Ring(DTYPE, 4, name="b").subscribe("stranger")

    with pytest.raises(BusError, match="ring 'a': reader 'stranger' is not subscribed"):
        ring.unsubscribe(stranger)


def test_a_blocked_writer_wakes_promptly_when_the_reader_commits():
    ring = Ring(DTYPE, 8, name="latency")
    reader = ring.subscribe("r")
    delays = []

    def write_one(done: threading.Event) -> None:
        ring.publish(records(ring.published, 1), timeout=JOIN_SECS)
        done.set()

    for _ in range(30):
        ring.publish(records(ring.published, ring.free_space()))  # fill the ring
        done = threading.Event()
        thread = start_thread(write_one, done)
        time.sleep(0.002)  # let it block
        reader.poll(1)
        committed = time.perf_counter()
        reader.commit()
        done.wait(JOIN_SECS)  # this thread sleeps, so the writer can take the GIL
        delays.append(time.perf_counter() - committed)
        thread.join(JOIN_SECS)
        drain(reader)

    assert ring.published == 30 * 9
    assert statistics.median(delays) < 0.002, delays


def test_a_batch_larger_than_the_ring_goes_through_while_a_lossless_reader_consumes():
    ring = Ring(DTYPE, 16, name="big")
    reader = ring.subscribe("r")
    wake = threading.Event()
    ring.add_waiter(wake)
    received = []

    def consume() -> None:
        total = 0
        while total < 5000:
            wake.clear()
            batch = reader.read(7)
            if not len(batch):
                wake.wait(0.05)
            received.append(batch)
            total += len(batch)

    consumer = start_thread(consume)
    offset = ring.publish(records(0, 5000), timeout=JOIN_SECS)
    consumer.join(JOIN_SECS)

    assert offset == 0
    assert ring.published == 5000
    assert_records(np.concatenate(received), 0)


def test_a_batch_larger_than_the_ring_without_lossless_readers_leaves_its_tail():
    ring = Ring(DTYPE, 16, name="big")
    reader = ring.subscribe("lossy", "drop_oldest", start="earliest")

    ring.publish(records(0, 1000))

    assert ring.published == 1000
    assert_records(reader.poll(1000), 1000 - 16)
    assert reader.skipped == 1000 - 16


# -- many readers, real threads -------------------------------------------------------------


def test_lossless_readers_at_different_speeds_each_see_every_record_once_in_order():
    ring = Ring(DTYPE, 64, name="fan")
    total = 20_000
    speeds = {"fast": (1000, 0.0), "medium": (50, 0.0), "slow": (300, 0.0005), "tiny": (3, 0.0)}
    received: dict[str, list[np.ndarray]] = {name: [] for name in speeds}

    def consume(reader: Reader, max_records: int, pause: float) -> None:
        wake = threading.Event()
        ring.add_waiter(wake)
        seen = 0
        while seen < total:
            wake.clear()
            batch = reader.read(max_records)
            if not len(batch):
                wake.wait(0.05)
                continue
            received[reader.name].append(batch)
            seen += len(batch)
            if pause:
                time.sleep(pause)

    threads = [
        start_thread(consume, ring.subscribe(name), max_records, pause)
        for name, (max_records, pause) in speeds.items()
    ]
    rng = np.random.default_rng(3)
    while ring.published < total:
        n = min(int(rng.integers(1, 200)), total - ring.published)
        ring.publish(records(ring.published, n), timeout=JOIN_SECS)
    for thread in threads:
        thread.join(JOIN_SECS)

    for name, batches in received.items():
        stream = np.concatenate(batches)
        assert len(stream) == total, name
        assert_records(stream, 0)


def test_five_million_records_reach_three_consumers_intact():
    ring = Ring(DTYPE, 4096, name="soak")
    total = 5_000_000
    maxima = {"a": 100, "b": 1024, "c": 10_000}
    counts: dict[str, int] = {}
    errors: list[str] = []

    def consume(reader: Reader, max_records: int) -> None:
        wake = threading.Event()
        ring.add_waiter(wake)
        expected = 0
        while expected < total:
            wake.clear()
            batch = reader.poll(max_records)
            n = len(batch)
            if not n:
                wake.wait(0.05)
                continue
            seq = batch["seq"]
            if seq[0] != expected or not np.array_equal(seq, np.arange(expected, expected + n)):
                errors.append(f"{reader.name}: batch at {expected} holds {seq[:3]}...")
                return
            if batch["a"][-1] != 3 * (expected + n - 1):
                errors.append(f"{reader.name}: field a torn at {expected + n - 1}")
                return
            expected += n
            reader.commit()
        counts[reader.name] = expected

    readers = [ring.subscribe(name) for name in maxima]
    threads = [start_thread(consume, r, maxima[r.name]) for r in readers]
    template = records(0, 6000)
    sizes = [1, 17, 1024, 6000, 333]  # 6000 is more than the ring holds
    i = 0
    while ring.published < total:
        n = min(sizes[i % len(sizes)], total - ring.published)
        batch = template[:n]
        batch["seq"] = np.arange(ring.published, ring.published + n)
        batch["a"] = batch["seq"] * 3
        ring.publish(batch, timeout=JOIN_SECS)
        i += 1
    for thread in threads:
        thread.join(JOIN_SECS)

    assert errors == []
    assert counts == {"a": total, "b": total, "c": total}


def test_subscribing_earliest_while_the_writer_publishes_never_sees_an_overwritten_record(
    frequent_thread_switches,
):
    ring = Ring(DTYPE, 64, name="live")
    stop = threading.Event()

    def write() -> None:
        keeper = ring.subscribe("keeper")  # a lossless reader that always keeps up
        while not stop.is_set():
            ring.publish(records(ring.published, 13), stop=stop)
            drain(keeper)

    writer = start_thread(write)
    deadline = time.monotonic() + 30
    rounds = 0
    try:  # at least 2000 rounds, and until the writer has lapped the ring many times
        while (rounds < 2000 or ring.published <= 2000) and time.monotonic() < deadline:
            rounds += 1
            late = ring.subscribe("late", start="earliest")
            start = late.cursor
            batch = late.read(64)
            ring.unsubscribe(late)
            assert_records(batch, start)
    finally:
        stop.set()
        writer.join(JOIN_SECS)
    assert ring.published > 2000


# -- lossy policies -------------------------------------------------------------------------


def test_drop_oldest_reader_skips_and_counts_exactly_what_was_overwritten():
    ring = Ring(DTYPE, 8, name="lossy")
    reader = ring.subscribe("r", Policy.DROP_OLDEST)
    ring.publish(records(0, 20))
    assert reader.backlog() == 8

    first = reader.poll(5)
    second = reader.poll(100)
    ring.publish(records(20, 3))
    third = reader.poll(100)

    assert_records(first, 12)
    assert_records(second, 17)
    assert_records(third, 20)
    assert reader.skipped == 12
    assert reader.cursor == 23
    assert reader.backlog() == 0


def test_latest_only_reader_gets_just_the_newest_record_and_counts_the_rest():
    ring = Ring(DTYPE, 8, name="latest")
    reader = ring.subscribe("r", "latest_only")

    ring.publish(records(0, 5))
    first = reader.poll(100)
    nothing = reader.poll(100)
    ring.publish(records(5, 30))  # laps the ring too
    second = reader.poll(100)
    ring.publish(records(35, 1))
    third = reader.poll(100)

    assert_records(first, 4)
    assert len(nothing) == 0
    assert_records(second, 34)
    assert_records(third, 35)
    assert reader.skipped == 4 + 29
    assert reader.policy is Policy.LATEST_ONLY


def test_lossy_readers_never_block_the_writer():
    ring = Ring(DTYPE, 8, name="free")
    ring.subscribe("drop", Policy.DROP_OLDEST)
    ring.subscribe("latest", Policy.LATEST_ONLY)

    for i in range(100):
        ring.publish(records(10 * i, 10), timeout=0.5)

    assert ring.published == 1000
    assert ring.free_space() == 8


def test_lossy_commit_is_a_safe_no_op():
    ring = Ring(DTYPE, 8, name="noop")
    reader = ring.subscribe("r", Policy.DROP_OLDEST)
    ring.publish(records(0, 3))

    reader.poll(2)
    reader.commit()
    reader.commit(5)

    assert reader.cursor == 2
    assert_records(reader.read(8), 2)


@pytest.mark.parametrize("policy", [Policy.DROP_OLDEST, Policy.LATEST_ONLY])
def test_a_lossy_reader_racing_the_writer_gets_only_intact_records_and_counts_the_rest(
    policy, frequent_thread_switches
):
    rounds, total = 50, 300_000
    stream = records(0, total)
    torn: list[str] = []
    accounted = 0

    for _ in range(rounds):
        ring = Ring(DTYPE, 256, name="race")
        reader = ring.subscribe("r", policy)
        writer = start_thread(publish_in_batches, ring, stream, 200)
        while writer.is_alive() or reader.backlog():
            batch = reader.poll(200)
            # every record returned is the one at its stream offset: nothing lapped mid-copy
            if not np.array_equal(batch, stream[reader.cursor - len(batch) : reader.cursor]):
                torn.append(f"{policy}: batch ending at {reader.cursor} holds {batch['seq'][:3]}")
            accounted += len(batch)
        writer.join(JOIN_SECS)
        accounted += reader.skipped

    assert torn == []
    assert accounted == rounds * total


# -- subscriptions --------------------------------------------------------------------------


def test_subscribe_next_sees_only_records_published_after_it():
    ring = Ring(DTYPE, 16, name="next")
    ring.publish(records(0, 5))

    reader = ring.subscribe("r")
    ring.publish(records(5, 2))

    assert reader.cursor == 5
    assert_records(reader.poll(10), 5)


def test_subscribe_earliest_starts_at_the_oldest_record_still_in_the_ring():
    ring = Ring(DTYPE, 16, name="early")
    ring.publish(records(0, 40))

    reader = ring.subscribe("r", start="earliest")

    assert reader.cursor == 40 - 16
    assert_records(drain(reader), 40 - 16)


def test_subscribe_at_an_explicit_offset_resumes_there():
    ring = Ring(DTYPE, 16, name="resume")
    ring.publish(records(0, 30))

    reader = ring.subscribe("r", start=20)
    saved = ring.subscribe("saved", start=np.int64(25))  # e.g. a cursor kept across a rebuild

    assert_records(drain(reader), 20)
    assert_records(drain(saved), 25)
    assert reader.cursor == saved.cursor == 30


def test_a_lossless_reader_subscribed_at_earliest_holds_back_a_writer_that_had_room():
    ring = Ring(DTYPE, 8, name="gate")
    keeper = ring.subscribe("keeper")
    ring.publish(records(0, 8))
    drain(keeper)
    ring.publish(records(8, 1))  # the writer now knows the keeper is at 8
    drain(keeper)

    late = ring.subscribe("late", start="earliest")
    with pytest.raises(BusTimeout, match="slowest reader 'late'"):
        ring.publish(records(9, 1), timeout=0.05)

    assert late.cursor == 1
    assert_records(drain(late), 1)


def test_subscribe_earliest_skips_slots_a_claim_is_about_to_overwrite():
    ring = Ring(DTYPE, 8, name="claimed")
    ring.publish(records(0, 8))
    slots = ring.claim(4)  # a write in flight over the slots of records 0..3

    late = ring.subscribe("late", start="earliest")
    with pytest.raises(BusError, match="oldest available is 4"):
        ring.subscribe("resumed", start=0)
    slots[:] = records(8, 4)
    ring.commit(4)

    assert late.cursor == 4
    assert_records(drain(late), 4)


def test_subscribe_at_an_offset_no_longer_in_the_ring_names_ring_offset_and_oldest():
    ring = Ring(DTYPE, 16, name="trades")
    ring.publish(records(0, 30))

    with pytest.raises(BusError, match=r"ring 'trades'.*offset 13.*oldest available is 14"):
        ring.subscribe("r", start=13)
    with pytest.raises(BusError, match=r"offset 31.*the next is 30"):
        ring.subscribe("r", start=31)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "sometimes"}, r"policy 'sometimes'; use one of lossless, drop_oldest"),
        ({"start": "latest"}, r"start='latest'; use 'next', 'earliest' or a stream offset"),
    ],
)
def test_subscribe_refuses_an_unknown_policy_or_start(kwargs, match):
    ring = Ring(DTYPE, 16, name="r")

    with pytest.raises(BusError, match=match):
        ring.subscribe("x", **kwargs)


def test_readers_lists_the_subscriptions_with_their_policies():
    ring = Ring(DTYPE, 16, name="list")

    a = ring.subscribe("a")
    b = ring.subscribe("b", "drop_oldest")

    assert ring.readers == [a, b]
    assert (a.policy, b.policy) == (Policy.LOSSLESS, Policy.DROP_OLDEST)
    assert a.ring is ring


# -- claim / commit -------------------------------------------------------------------------


def test_claim_and_commit_publish_records_written_in_place():
    ring = Ring(DTYPE, 8, name="claim")
    reader = ring.subscribe("r")

    slots = ring.claim(5)
    slots[:] = records(0, 5)
    ring.commit(3)

    assert len(slots) == 5
    assert slots.flags.writeable
    assert ring.published == 3
    assert_records(reader.read(8), 0)


def test_claim_stops_at_the_wrap_and_at_the_free_space_and_never_blocks():
    ring = Ring(DTYPE, 8, name="claim")
    reader = ring.subscribe("r")
    ring.publish(records(0, 6))
    reader.poll(2)
    reader.commit()  # reader at 2: the writer may go up to offset 10

    at_wrap = ring.claim(10)
    at_wrap[:] = records(6, 2)
    ring.commit(2)
    short = ring.claim(10)
    short[:] = records(8, 2)
    ring.commit(2)
    full = ring.claim(10)

    assert len(at_wrap) == 2
    assert len(short) == 2
    assert len(full) == 0
    assert_records(drain(reader), 2)


def test_committing_more_than_was_claimed_is_an_error():
    ring = Ring(DTYPE, 8, name="claim")
    ring.claim(2)

    with pytest.raises(BusError, match=r"ring 'claim': commit\(3\).*2 slots"):
        ring.commit(3)


# -- shared memory --------------------------------------------------------------------------


def test_a_shared_memory_buffer_holds_the_records_in_the_ring_layout():
    shm = shared_memory.SharedMemory(create=True, size=16 * DTYPE.itemsize)
    try:
        ring = Ring(DTYPE, 16, name="shm", buffer=shm.buf)
        reader = ring.subscribe("r")
        ring.publish(records(0, 16))
        drain(reader)
        ring.publish(records(16, 4))  # wraps into slots 0..3

        other = np.ndarray(16, DTYPE, buffer=shm.buf)  # as another process would map it
        assert_records(other[:4], 16)
        assert_records(other[4:], 4)
        assert np.shares_memory(reader.poll(16), other)
        del other
    finally:
        ring = reader = None
        gc.collect()  # the ring's views must go before the segment can close
        shm.close()
        shm.unlink()
