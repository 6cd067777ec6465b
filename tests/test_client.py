"""The subscriber client against hostile and unusual input, and the publisher's loss counts.

Real pynng sockets in this process: bad frames of every kind are counted and skipped, the topic
is checked, the receive limit is the frame limit, and gaps, duplicates and publisher restarts
are reported separately. A pub publisher counts what nng dropped for a slow subscriber.
"""

from __future__ import annotations

import time

import numpy as np
import pynng
import pytest

from hftagg.bus.frame import HEADER_SIZE, FrameEncoder, decode_frame
from hftagg.client import subscribe
from hftagg.plugins.manager import load_plugins
from hftagg.records import INDICATOR


@pytest.fixture(scope="module")
def host():
    return load_plugins([], entry_points=False)


def values(first: int, n: int) -> np.ndarray:
    batch = INDICATOR.empty(n)
    batch["seq"] = np.arange(first, first + n)
    batch["value"] = np.arange(first, first + n)
    return batch


def frame(first: int, n: int = 10, topic: str = "ind.ema", session: int = 7) -> bytes:
    (data,) = FrameEncoder(topic, INDICATOR, session_id=session).encode(values(first, n), first)
    return data


def as_version_1(data: bytes) -> bytes:
    """What a version-1 publisher sent: version byte 1, zeros where the session id is now."""
    raw = bytearray(data)
    raw[3] = 1
    raw[112:120] = bytes(8)
    return bytes(raw)


def wait_connected(publisher, peers: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while publisher.peers() < peers:
        assert time.monotonic() < deadline, "the subscriber never connected"
        time.sleep(0.01)


@pytest.fixture
def push(host, address):
    publisher = host.transports["pynng"].publisher(address, pattern="push", buffer_frames=64)
    yield publisher
    publisher.close()


def test_version_1_frames_still_decode_with_no_session():
    old = decode_frame(as_version_1(frame(0)), load_plugins([], entry_points=False).schemas)
    assert (old.version, old.session_id, old.first_offset) == (1, 0, 0)
    assert old.records["value"].tolist() == list(range(10))


def test_a_pub_subscriber_hears_a_version_1_publisher(host, address):
    publisher = pynng.Pub0(listen=address)
    try:
        with subscribe(address, "ind.ema", timeout_secs=0.2, host=host) as sub:
            got = None
            deadline = time.monotonic() + 10
            while got is None and time.monotonic() < deadline:
                publisher.send(as_version_1(frame(0)))
                got = sub.next_frame()
        assert got is not None and got.version == 1 and got.topic == "ind.ema"
    finally:
        publisher.close()


def test_hostile_frames_are_counted_and_skipped_and_good_ones_flow(host, address, push):
    not_utf8 = bytearray(frame(0))
    not_utf8[4:8] = b"\xff\xfe\xfd\xfc"
    hostile = [
        b"",  # 0 bytes: pynng itself cannot unpack it
        bytes(not_utf8),
        b"HFG\x02" + bytes(HEADER_SIZE - 4),  # empty topic
        frame(0)[:-3],  # truncated
        b"not a frame at all" * 10,
    ]
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=5, host=host) as sub:
        wait_connected(push)
        for data in hostile:
            push.send(data)
        push.send(frame(0))
        good = sub.next_frame()
    assert good is not None and good.records["value"].tolist() == list(range(10))
    assert sub.bad_frames == 5
    assert sub.bad_reasons == {"truncated": 2, "topic": 2, "not_a_frame": 1}
    assert sub.gaps == sub.duplicates == 0


def test_a_push_subscriber_skips_other_topics(host, address, push):
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=5, host=host) as sub:
        wait_connected(push)
        push.send(frame(0, topic="ind.emax"))  # a name that extends the one asked for
        push.send(frame(0, topic="md.other"))
        push.send(frame(0))
        got = sub.next_frame()
    assert got.topic == "ind.ema"
    assert sub.other_topics == 2 and sub.frames == 1 and sub.bad_frames == 0


def test_the_receive_limit_is_the_frame_limit_and_oversized_frames_are_never_read(
    host, address, push
):
    limit = 64 * 1024
    with subscribe(
        address, None, pattern="push", timeout_secs=5, host=host, max_frame_bytes=limit
    ) as sub:
        assert sub._socket._socket.recv_max_size == limit  # nng refuses more, unread
        wait_connected(push)
        push.send(frame(0, n=(2 * limit) // INDICATOR.itemsize))  # 128 KiB
        # frames right behind it may go down with the dropped connection: send until one
        # arrives over the redialled one
        got, offset, deadline = None, 3276, time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            push.send(frame(offset))
            offset += 10
            got = sub.next_frame(0.5)
        assert got is not None and got.first_offset >= 3276  # after the redial
        assert sub.dropped_connections >= 1
        assert sub.frames == 1 and sub.bad_frames == 0


def test_gaps_duplicates_and_restarts_are_counted_apart(host, address, push):
    with subscribe(address, "ind.ema", pattern="push", timeout_secs=5, host=host) as sub:
        wait_connected(push)
        for data in (
            frame(0),
            frame(10),
            frame(25),  # records 20..24 lost: a gap of 5
            frame(30),  # 30..34 again (5 duplicates), 35..39 new
            frame(30),  # all 10 again
            frame(35),  # 35..39 again (5 duplicates), 40..44 new
            frame(2**63, session=7),  # a forged offset: skipped, gaps untouched
            frame(45),
            frame(0, session=8),  # the publisher restarted: offsets start over
            frame(10, session=8),
        ):
            push.send(data)
        got = [sub.next_frame() for _ in range(9)]
    assert all(f is not None for f in got)
    assert [f.first_offset for f in got][-2:] == [0, 10]
    assert sub.gaps == 5
    assert sub.duplicates == 20
    assert sub.restarts == 1
    assert sub.bad_reasons == {"offset": 1}
    assert "jumps" in sub.last_error and "ind.ema" in sub.last_error


def test_a_pub_publisher_counts_what_nng_dropped_for_a_slow_subscriber(host, address):
    publisher = host.transports["pynng"].publisher(address, pattern="pub", buffer_frames=4)
    try:
        sub = subscribe(address, "ind.ema", timeout_secs=1.0, host=host, buffer_frames=2)
        wait_connected(publisher)
        offset, deadline = 0, time.monotonic() + 10

        def send() -> None:
            nonlocal offset
            publisher.send(frame(offset, n=1000), 1000)
            offset += 1000

        while (first := sub.next_frame(0.05)) is None:  # gaps count from the first frame
            assert time.monotonic() < deadline, "the subscriber never got a frame"
            send()
        # Act: a burst far larger than the queues while the subscriber reads nothing
        for _ in range(400):
            send()
        time.sleep(0.5)
        while sub.next_frame(0.5) is not None:
            pass
        send()  # one more, so the subscriber sees every loss as a gap
        assert sub.next_frame(5.0) is not None
        running = publisher.counters()["frames_lost"]  # a lower bound while connected
        sub.close()
        while publisher.peers() and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        final = publisher.counters()
    finally:
        publisher.close()
    # Assert: the subscriber counts its loss exactly; the publisher counts the part nng dropped
    # on its side (the subscriber's own socket queue may drop more, which only it can see)
    lost_frames = (offset - first.first_offset) // 1000 - sub.frames
    assert sub.gaps == lost_frames * 1000 > 0
    assert sub.duplicates == 0
    assert 0 < running <= final["frames_lost"] <= final["frames_sent"] - sub.frames
