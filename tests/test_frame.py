"""Wire frames: round trip, splitting at the size limit, every malformation named; real sockets."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from hftagg.bus.frame import HEADER_SIZE, FrameEncoder, decode_frame, topic_prefix
from hftagg.client import subscribe
from hftagg.errors import FrameError
from hftagg.plugins.manager import load_plugins
from hftagg.records import INDICATOR, QUOTE, TRADE


@pytest.fixture(scope="module")
def host():
    return load_plugins([], entry_points=False)


def trades(n: int) -> np.ndarray:
    t = TRADE.empty(n)
    t["seq"] = np.arange(n)
    t["price"] = np.arange(n) * 10**9
    t["instrument_id"] = 3
    return t


def test_round_trip_is_zero_copy_and_exact(host):
    batch = trades(100)
    (frame,) = FrameEncoder("md.trades", TRADE).encode(
        batch, first_offset=1234, trace=(b"\x01" * 16, 99, 1)
    )
    assert len(frame) == HEADER_SIZE + 100 * TRADE.itemsize
    assert frame.startswith(topic_prefix("md.trades"))
    decoded = decode_frame(frame, host.schemas)
    assert decoded.topic == "md.trades" and decoded.schema is TRADE
    assert decoded.first_offset == 1234 and decoded.next_offset == 1334
    assert (decoded.trace_id, decoded.span_id, decoded.trace_flags) == (b"\x01" * 16, 99, 1)
    assert decoded.records.tobytes() == batch.tobytes()
    assert not decoded.records.flags.writeable  # a view on the received bytes
    assert abs(decoded.ts_send - time.time_ns()) < 60e9


def test_batches_larger_than_the_limit_split_with_consecutive_offsets(host):
    encoder = FrameEncoder("md.trades", TRADE, max_frame_bytes=HEADER_SIZE + 10 * TRADE.itemsize)
    frames = [decode_frame(f, host.schemas) for f in encoder.encode(trades(35), first_offset=0)]
    assert [len(f.records) for f in frames] == [10, 10, 10, 5]
    assert [f.first_offset for f in frames] == [0, 10, 20, 30]
    np.testing.assert_array_equal(np.concatenate([f.records for f in frames])["seq"], np.arange(35))


def test_limit_too_small_for_one_record_is_a_clear_error():
    with pytest.raises(FrameError, match="max_frame_bytes=100 cannot hold one trade@2 record"):
        FrameEncoder("md.trades", TRADE, max_frame_bytes=100)


def test_topic_longer_than_the_header_field_is_refused():
    with pytest.raises(FrameError, match="a topic must be 1..47 bytes"):
        FrameEncoder("x" * 48, TRADE)


def test_wrong_dtype_for_the_topic_is_refused():
    with pytest.raises(FrameError, match="is not schema trade@2"):
        list(FrameEncoder("md.trades", TRADE).encode(QUOTE.empty(1), 0))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: b"XYZ" + f[3:], "bad magic b'XYZ'"),
        (lambda f: f[:3] + b"\x07" + f[4:], "frame version 7 is not supported"),
        (lambda f: f[:-1], "truncated or corrupt"),
        (lambda f: f[:50], "shorter than the 128-byte header"),
        (lambda f: f[:52] + struct.pack("<I", 0xDEADBEEF) + f[56:], "unknown schema id 0xdeadbeef"),
        (lambda f: f[:56] + struct.pack("<I", 40) + f[60:], "record_size 40 does not match"),
    ],
)
def test_malformed_frames_are_named(host, mutate, message):
    (frame,) = FrameEncoder("md.trades", TRADE).encode(trades(4), 0)
    with pytest.raises(FrameError, match=message):
        decode_frame(mutate(frame), host.schemas)


def test_oversized_frame_is_refused(host):
    (frame,) = FrameEncoder("md.trades", TRADE).encode(trades(100), 0)
    with pytest.raises(FrameError, match="exceeds max_frame_bytes=1024"):
        decode_frame(frame, host.schemas, max_frame_bytes=1024)


def test_subscriber_gets_only_its_topic_over_real_pynng_sockets(host, address):
    transport = host.transports["pynng"]
    pub = transport.publisher(address, pattern="pub", buffer_frames=64)
    ema_enc = FrameEncoder("ind.ema", INDICATOR)
    emax_enc = FrameEncoder("ind.emax", INDICATOR)  # a topic whose name extends ind.ema
    try:
        with subscribe(address, "ind.ema", timeout_secs=0.5, host=host) as sub:
            deadline = time.monotonic() + 10
            got = []
            offset = 0
            while time.monotonic() < deadline and len(got) < 3:
                batch = INDICATOR.empty(5)
                batch["value"] = offset
                for f in emax_enc.encode(batch, offset):
                    pub.send(f)
                for f in ema_enc.encode(batch, offset):
                    pub.send(f)
                offset += 5
                frame = sub.next_frame(0.2)
                if frame is not None:
                    got.append(frame)
            assert len(got) >= 1
            assert {f.topic for f in got} == {"ind.ema"}
    finally:
        pub.close()


def test_client_counts_lost_records_between_frames(host, address):
    transport = host.transports["pynng"]
    pub = transport.publisher(address, pattern="push", buffer_frames=64)
    enc = FrameEncoder("ind.ema", INDICATOR)
    try:
        with subscribe(address, None, pattern="push", timeout_secs=5, host=host) as sub:
            for first in (0, 10, 25):  # records 20..24 never sent
                for f in enc.encode(INDICATOR.empty(10 if first < 25 else 3), first):
                    pub.send(f)
            counts = [len(sub.next_frame().records) for _ in range(3)]
            pub.send(b"garbage that is not a frame")
            for f in enc.encode(INDICATOR.empty(1), 28):
                pub.send(f)
            assert sub.next_frame() is not None
        assert counts == [10, 10, 3]
        assert sub.gaps == 5
        assert sub.bad_frames == 1
    finally:
        pub.close()
