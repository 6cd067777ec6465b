"""The subscriber's own latency measurement: frames with known ``ts_recv`` offsets over real
pynng sockets, checked against bounds taken from this process's clock around send and receive.

The histogram has ten log buckets per decade, so a quantile is exact to its bucket: each check
allows the bucket the true value falls in, and the true value itself is bracketed by the clock
read before the send and after the receive (no assumption about how fast the machine is).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hftagg.bus.frame import FrameEncoder
from hftagg.client import LatencyStats, format_latency, format_ns, subscribe
from hftagg.plugins.manager import load_plugins
from hftagg.records import INDICATOR
from hftagg.telemetry.histogram import LATENCY_BOUNDS_NS

MS = 1_000_000


@pytest.fixture(scope="module")
def host():
    return load_plugins([], entry_points=False)


@pytest.fixture
def push(host, address):
    publisher = host.transports["pynng"].publisher(address, pattern="push", buffer_frames=64)
    yield publisher
    publisher.close()


def wait_connected(publisher, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while publisher.peers() < 1:
        assert time.monotonic() < deadline, "the subscriber never connected"
        time.sleep(0.01)


def stamped(ages_ns: np.ndarray, now_ns: int) -> np.ndarray:
    """Records received by the pipeline ``ages_ns`` before ``now_ns``."""
    batch = INDICATOR.empty(len(ages_ns))
    batch["seq"] = np.arange(len(ages_ns))
    batch["ts_recv"] = now_ns - ages_ns
    batch["ts_event"] = batch["ts_recv"] - 1000
    return batch


def bucket_range(low_ns: float, high_ns: float) -> tuple[float, float]:
    """The histogram's reach for a true value in [low, high]: from the lower bound of low's
    bucket to the upper bound of high's (interpolation stays inside a bucket)."""
    bounds = LATENCY_BOUNDS_NS
    i = int(np.searchsorted(bounds, low_ns, side="left"))
    j = int(np.searchsorted(bounds, high_ns, side="left"))
    return (float(bounds[i - 1]) if i else 0.0), float(bounds[min(j, len(bounds) - 1)])


def test_latency_quantiles_and_max_match_known_ts_recv_offsets(host, address, push):
    # 1000 records: 900 received 10 ms ago, 90 at 100 ms, 9 at 300 ms and one 700 ms ago
    ages = np.repeat(np.array([10, 100, 300, 700]) * MS, [900, 90, 9, 1])
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=10, host=host) as sub:
        wait_connected(push)
        built = time.time_ns()
        (data,) = FrameEncoder("ind.ema", INDICATOR, session_id=3).encode(stamped(ages, built), 0)
        push.send(data)
        frame = sub.next_frame()
        after = time.time_ns()
    assert frame is not None and len(frame.records) == 1000
    delay = after - built  # each record's true latency is its age plus at most this
    lat = sub.latency
    assert lat.count == 1000 and lat.unmeasured == 0
    for q, age in ((0.5, 10 * MS), (0.99, 100 * MS), (0.999, 300 * MS)):
        low, high = bucket_range(age, age + delay)
        assert low <= lat.quantile(q) <= high, (q, lat.quantile(q), low, high)
    assert 700 * MS <= lat.max <= 700 * MS + delay  # exact, not bucketed
    assert 10 * MS <= lat.min <= 10 * MS + delay
    assert lat.p50 == lat.quantile(0.5) and lat.p999 == lat.quantile(0.999)
    # the pynng hop alone: one value per frame, from the header's ts_send
    assert sub.transport_latency.count == 1
    assert 0 <= sub.transport_latency.max <= delay


def test_records_without_ts_recv_are_counted_not_measured(host, address, push):
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=10, host=host) as sub:
        wait_connected(push)
        batch = stamped(np.full(6, 5 * MS), time.time_ns())
        batch["ts_recv"][:2] = 0  # never stamped: no latency to speak of
        (data,) = FrameEncoder("ind.ema", INDICATOR, session_id=3).encode(batch, 0)
        push.send(data)
        assert sub.next_frame() is not None
    assert (sub.latency.count, sub.latency.unmeasured) == (4, 2)
    assert sub.latency.min >= 5 * MS
    assert "(2 without ts_recv)" in format_latency(sub.latency.summary())


def test_a_large_frame_is_sampled_but_counts_and_max_stay_whole(host, address, push):
    ages = np.full(50_000, 2 * MS)
    ages[12_345] = 900 * MS  # one straggler the sample may miss: max must not
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=10, host=host) as sub:
        wait_connected(push)
        built = time.time_ns()
        (data,) = FrameEncoder("ind.ema", INDICATOR, session_id=3).encode(stamped(ages, built), 0)
        push.send(data)
        assert sub.next_frame() is not None
        delay = time.time_ns() - built
    assert sub.latency.count == 50_000
    assert 900 * MS <= sub.latency.max <= 900 * MS + delay
    low, high = bucket_range(2 * MS, 2 * MS + delay)
    assert low <= sub.latency.p50 <= high


def test_interval_reports_only_what_arrived_since_the_previous_call():
    stats = LatencyStats()
    stats.observe(np.full(100, 50_000, dtype=np.int64))  # 50 us
    first = stats.interval()
    stats.observe(np.full(10, 5 * MS, dtype=np.int64))
    second = stats.interval()
    empty = stats.interval()
    assert first["count"] == 100 and first["max_ns"] == 50_000
    assert second["count"] == 10 and second["max_ns"] == 5 * MS
    assert bucket_range(5 * MS, 5 * MS)[0] <= second["p50_ns"] <= 5 * MS
    assert empty["count"] == 0 and math.isnan(empty["p99_ns"])
    assert stats.count == 110 and stats.max == 5 * MS  # totals are kept
    assert format_latency(empty) == "no records measured"


def test_durations_print_in_readable_units():
    assert [format_ns(v) for v in (850, 41_230, 1_200_000, 2.5e9, float("nan"))] == [
        "850 ns",
        "41.2 us",
        "1.2 ms",
        "2.5 s",
        "-",
    ]
