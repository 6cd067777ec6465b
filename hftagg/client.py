"""Subscribe to a running pipeline from another process::

    from hftagg.client import subscribe

    with subscribe("tcp://127.0.0.1:5555", "ind.ema") as sub:
        for batch in sub:            # numpy record batches (read-only views on the frames)
            print(batch["value"][-1])

The subscription checks every frame and keeps counts, so "nothing lost" is something you can
verify (per topic, from the stream offsets and the publisher's session id in each frame):

- ``gaps``: records missing between frames (a ``pub`` subscriber that could not keep up);
- ``duplicates``: records received again (overlapping offsets from the same publisher run);
- ``restarts``: the publisher started a new run (offsets start over; neither a gap nor a
  duplicate). Frames from publishers older than frame version 2 carry no session id, so for
  them a restart shows as duplicates.
- ``bad_frames``: frames that could not be decoded (``bad_reasons`` says why, by kind), and
  frames whose offset jumps further than the publisher could have sent since its previous
  frame (at most one record per nanosecond of ``ts_send``): a forged or corrupt offset is
  skipped instead of poisoning ``gaps``.
- ``dropped_connections``: a frame larger than ``max_frame_bytes`` is refused by the
  transport before it is read (no memory spent on it): nng drops the connection and redials.
  nng counts that together with a publisher going away, so it is reported here, not in
  ``bad_frames``; the records it carried show up in ``gaps``.
- ``other_topics``: frames of topics other than the one asked for (a ``push`` puller receives
  every topic the publisher sends), skipped.

And it measures delivery latency as the subscriber sees it, on its own clock, the moment a frame
is received (before decoding): ``latency`` is ``ts_recv`` (the pipeline's receive time of each
record) to that moment, per record -- the whole path from the feed handler to this process;
``transport_latency`` is the frame header's ``ts_send`` (when the publisher built the frame) to
that moment, per frame -- the pynng hop alone. Both are :class:`LatencyStats` (``p50``,
``p99``, ``p999``, ``max``, ``summary()``)::

    with subscribe("tcp://127.0.0.1:5555", "ind.ema", timeout_secs=5) as sub:
        for batch in sub:
            pass
    print(sub.latency.summary())   # {'count': ..., 'p50_ns': ..., 'p99_ns': ..., ...}

Both clocks are the machine's UNIX clock, so the figures are exact on one host; across hosts
they include the clocks' offset (keep them PTP/NTP-synchronised). Records whose ``ts_recv`` is
0 (never stamped) are counted in ``latency.unmeasured`` instead.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from hftagg.bus.frame import DEFAULT_MAX_FRAME_BYTES, Frame, decode_frame
from hftagg.errors import FrameError
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.records.schema import SchemaRegistry
from hftagg.telemetry.histogram import Histogram, quantile_from_counts

__all__ = ["LatencyStats", "Subscription", "subscribe"]

#: a gap is plausible up to one record per nanosecond between two frames' ts_send, plus this
PLAUSIBLE_GAP_SLACK = 1 << 20


#: every record of a frame up to this many is observed; a larger frame contributes an evenly
#: strided sample of about this many, each weighted so counts still add up (max stays exact)
LATENCY_EXACT_UP_TO = 1024


class LatencyStats:
    """A latency distribution in nanoseconds: log buckets (ten per decade, 1 us .. 1 s, the
    runtime's own histogram) plus the exact minimum and maximum. Quantiles are interpolated
    within their bucket (within ~26 %, as Prometheus' ``histogram_quantile``); values under
    1 us fall in the first bucket, values over 1 s are reported as 1 s but ``max`` is exact.

    ``interval()`` returns the figures since its previous call (for a live display) while the
    object keeps the totals since the subscription started.
    """

    def __init__(self) -> None:
        self.histogram = Histogram()
        self.max = float("nan")  # ns; nan until something was observed
        self.min = float("nan")
        self.unmeasured = 0  # records without a ts_recv stamp (0)
        self._mark_counts = self.histogram.counts.copy()
        self._mark_sum = 0
        self._mark_unmeasured = 0
        self._window_max = float("nan")
        self._window_min = float("nan")

    @property
    def count(self) -> int:
        return self.histogram.count

    def observe(self, values: np.ndarray) -> None:
        """Latencies (int64 ns) of one batch; exact for up to ``LATENCY_EXACT_UP_TO`` values,
        a weighted strided sample of larger batches."""
        n = len(values)
        if not n:
            return
        high, low = float(values.max()), float(values.min())
        self.max = high if not self.max >= high else self.max  # nan-safe max
        self.min = low if not self.min <= low else self.min
        self._window_max = high if not self._window_max >= high else self._window_max
        self._window_min = low if not self._window_min <= low else self._window_min
        if n > LATENCY_EXACT_UP_TO:
            sample = values[:: -(-n // LATENCY_EXACT_UP_TO)]
            self.histogram.observe_many(sample, n / len(sample))
        else:
            self.histogram.observe_many(values)

    def observe_one(self, value: int) -> None:
        """One latency in ns (about a microsecond: no numpy on this path)."""
        self.histogram.observe(value)
        self.max = value if not self.max >= value else self.max
        self.min = value if not self.min <= value else self.min
        self._window_max = value if not self._window_max >= value else self._window_max
        self._window_min = value if not self._window_min <= value else self._window_min

    def observe_recv(self, ts_recv: np.ndarray, now_ns: int) -> None:
        """Records stamped ``ts_recv`` received at ``now_ns``; unstamped ones are counted."""
        stamped = ts_recv[ts_recv != 0] if not ts_recv.all() else ts_recv
        self.unmeasured += len(ts_recv) - len(stamped)
        self.observe(now_ns - stamped)

    def quantile(self, q: float) -> float:
        """Quantile ``q`` (0..1) in ns, kept within the exact min and max; nan when empty."""
        return _clamp(self.histogram.quantile(q), self.min, self.max)

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def p999(self) -> float:
        return self.quantile(0.999)

    @property
    def mean(self) -> float:
        return self.histogram.sum / self.count if self.count else float("nan")

    def summary(self) -> dict:
        """``count``, ``unmeasured`` and ``p50_ns``/``p99_ns``/``p99_9_ns``/``max_ns``/
        ``min_ns``/``mean_ns`` (floats; nan when empty): JSON-friendly."""
        return {
            "count": self.count,
            "unmeasured": self.unmeasured,
            "p50_ns": self.p50,
            "p99_ns": self.p99,
            "p99_9_ns": self.p999,
            "max_ns": self.max,
            "min_ns": self.min,
            "mean_ns": self.mean,
        }

    def interval(self) -> dict:
        """Like ``summary`` but for what was observed since the previous ``interval()``."""
        counts = self.histogram.counts - self._mark_counts
        bounds = self.histogram.bounds
        count = int(counts.sum())
        total = self.histogram.sum - self._mark_sum
        low, high = self._window_min, self._window_max
        out = {
            "count": count,
            "unmeasured": self.unmeasured - self._mark_unmeasured,
            "p50_ns": _clamp(quantile_from_counts(bounds, counts, 0.5), low, high),
            "p99_ns": _clamp(quantile_from_counts(bounds, counts, 0.99), low, high),
            "p99_9_ns": _clamp(quantile_from_counts(bounds, counts, 0.999), low, high),
            "max_ns": high,
            "min_ns": low,
            "mean_ns": total / count if count else float("nan"),
        }
        self._mark_counts = self.histogram.counts.copy()
        self._mark_sum = self.histogram.sum
        self._mark_unmeasured = self.unmeasured
        self._window_max = self._window_min = float("nan")
        return out


def _clamp(value: float, low: float, high: float) -> float:
    """A bucket-interpolated quantile kept within the exact extremes (nan-safe)."""
    if value != value or low != low:
        return value
    return min(max(value, low), high)


def format_latency(figures: dict) -> str:
    """``p50 41.2 us  p99 180 us  p99.9 1.20 ms  max 2.31 ms  (n=120,000)`` from a summary."""
    if not figures["count"]:
        return "no records measured" + (
            f" ({figures['unmeasured']:,} without ts_recv)" if figures.get("unmeasured") else ""
        )
    parts = [
        f"{label} {format_ns(figures[key])}"
        for label, key in (("p50", "p50_ns"), ("p99", "p99_ns"), ("p99.9", "p99_9_ns"))
    ]
    parts.append(f"max {format_ns(figures['max_ns'])}")
    text = "  ".join(parts) + f"  (n={figures['count']:,})"
    if figures.get("unmeasured"):
        text += f" ({figures['unmeasured']:,} without ts_recv)"
    return text


def format_ns(ns: float) -> str:
    """A duration in ns, readable: ``850 ns``, ``41.2 us``, ``1.20 ms``, ``2.50 s``."""
    if ns != ns:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            value = ns / scale
            return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
    return f"{ns:.0f} ns"


@dataclass
class _Stream:
    session_id: int
    next_offset: int
    ts_send: int


def _reason(exc: FrameError) -> str:
    """A short kind for a frame error, for ``bad_reasons``."""
    text = str(exc)
    for key, kind in (
        ("shorter than", "truncated"),
        ("truncated or corrupt", "truncated"),
        ("exceeds max_frame_bytes", "oversized"),
        ("bad magic", "not_a_frame"),
        ("frame version", "version"),
        ("topic field", "topic"),
        ("record_size", "record_size"),
        ("schema", "schema"),
    ):
        if key in text:
            return kind
    return "other"


class Subscription:
    """An open subscription: iterate for batches, or call ``next_frame`` for headers too."""

    def __init__(
        self,
        address: str,
        topic: str | Sequence[str] | None,
        *,
        transport: str = "pynng",
        pattern: str = "pub",
        timeout_secs: float | None = None,
        schemas: SchemaRegistry | None = None,
        host: PluginHost | None = None,
        buffer_frames: int = 8192,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        host = host or load_plugins([], entry_points=True)
        self.schemas = schemas or host.schemas
        topics = [topic] if isinstance(topic, str) else list(topic or [])
        self.topic = topic if isinstance(topic, str) or topic is None else topics
        self.topics = frozenset(topics) or None  # None: every topic
        self.address = address
        self.timeout_secs = timeout_secs
        self.max_frame_bytes = max_frame_bytes
        factory = host.transports[transport].subscriber
        topics = topics or None
        try:
            self._socket = factory(
                address,
                topics,
                pattern=pattern,
                buffer_frames=buffer_frames,
                max_frame_bytes=max_frame_bytes,
            )
        except TypeError:  # a transport without a receive limit: frames are checked after
            self._socket = factory(address, topics, pattern=pattern, buffer_frames=buffer_frames)
        self.frames = 0
        self.records = 0
        self.gaps = 0  # records missing between consecutive frames of a topic
        self.duplicates = 0  # records received again within one publisher run
        self.restarts = 0  # the publisher of a topic started a new run
        self.other_topics = 0
        self.bad_reasons: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._streams: dict[str, _Stream] = {}
        self.latency = LatencyStats()  # ts_recv -> receive, per record
        self.transport_latency = LatencyStats()  # ts_send -> receive, per frame (pynng hop)

    @property
    def dropped_connections(self) -> int:
        """Connections lost: a frame over ``max_frame_bytes`` (refused unread) or a publisher
        that went away (the transport redials)."""
        counter = getattr(self._socket, "dropped_connections", None)
        return counter() if counter is not None else 0

    @property
    def bad_frames(self) -> int:
        return sum(self.bad_reasons.values())

    def _bad(self, kind: str, message: str) -> None:
        self.bad_reasons[kind] += 1
        self.last_error = message

    def next_frame(self, timeout_secs: float | None = None) -> Frame | None:
        """The next valid frame, or ``None`` on timeout. Bad frames are counted and skipped."""
        while True:
            data = self._socket.recv(
                timeout_secs if timeout_secs is not None else self.timeout_secs
            )
            if data is None:
                return None
            received_ns = time.time_ns()
            try:
                frame = decode_frame(data, self.schemas, self.max_frame_bytes)
            except FrameError as exc:
                self._bad(_reason(exc), str(exc))
                continue
            if self.topics is not None and frame.topic not in self.topics:
                self.other_topics += 1
                continue
            if self._track(frame):
                self.frames += 1
                self.records += len(frame.records)
                self._measure(frame, received_ns)
                return frame

    def _measure(self, frame: Frame, received_ns: int) -> None:
        self.transport_latency.observe_one(received_ns - frame.ts_send)
        records = frame.records
        if records.dtype.names and "ts_recv" in records.dtype.names:
            self.latency.observe_recv(records["ts_recv"], received_ns)
        else:
            self.latency.unmeasured += len(records)

    def _track(self, frame: Frame) -> bool:
        """Update gaps, duplicates and restarts; False if the frame's offset is implausible."""
        stream = self._streams.get(frame.topic)
        count = len(frame.records)
        if stream is None or stream.session_id != frame.session_id:
            if stream is not None:
                self.restarts += 1
            self._streams[frame.topic] = _Stream(
                frame.session_id, frame.first_offset + count, frame.ts_send
            )
            return True
        expected = stream.next_offset
        first = frame.first_offset
        if first > expected:
            jump = first - expected
            if jump > max(0, frame.ts_send - stream.ts_send) + PLAUSIBLE_GAP_SLACK:
                self._bad(
                    "offset",
                    f"topic {frame.topic!r}: frame offset {first} jumps {jump} records past "
                    f"the expected {expected}, more than the publisher could have sent",
                )
                return False
            self.gaps += jump
        elif first < expected:
            self.duplicates += min(expected, first + count) - first
        stream.next_offset = max(expected, first + count)
        stream.ts_send = max(stream.ts_send, frame.ts_send)
        return True

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame.records

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def subscribe(address: str, topic: str | Sequence[str] | None, **kwargs) -> Subscription:
    """Subscribe to ``topic`` (a list: several; ``None``: all) at ``address``; iterate to get
    batches (``next_frame`` also says which topic a batch is from).

    Keyword arguments: ``pattern`` (``pub``/``push``), ``timeout_secs`` (stop iterating after
    that long without a frame; default: wait forever), ``transport`` (default ``pynng``),
    ``max_frame_bytes`` (the receive limit, default 4 MiB: match the publisher's).
    """
    return Subscription(address, topic, **kwargs)
