"""Built-in plugin: the pynng transport (nng pub/sub for fan-out, push/pull for lossless).

``push``: one or more pullers share the stream; ``send`` blocks while nng's queue is full
(backpressure all the way to the ring). nng discards what is still queued when a socket closes,
so ``drain`` waits until every frame sent has been written to a puller's connection, counting
from nng's per-pipe statistics; what cannot be delivered (no puller) is counted, never hidden.

``pub``: every subscriber gets every frame; nng drops frames for a subscriber whose queue is
full. The publisher cannot see which frames, but it can count how many: for each subscriber,
frames sent since it connected minus frames nng wrote to its connection. That is final when the
subscriber disconnects or the publisher stops; while both run, only what exceeds the queue
(plus the frame being written) is certainly lost and is reported. It is a lower bound: the
subscriber's own socket drops frames too when its application reads slowly, which only the
subscriber sees -- exactly, by record, in ``hftagg.client``'s ``gaps``.

Latency settings (measured with ``hftagg bench latency`` and a bare pub/sub hop between two
processes, one 0.5 kB frame a millisecond, 2 cores shared with other work): Nagle is off
(``tcp_nodelay``, set explicitly on both ends: a frame is sent when it is built, never held for
the next); both queues are bounded in frames (``buffer_frames``: the publisher's per
subscriber, the subscriber's own), so a slow reader costs memory up to that bound and then
loses (pub) or pushes back (push) instead of letting latency grow without limit; the subscriber
blocks in nng's receive with the GIL released (no poll loop: on two shared cores spinning takes
the CPU the publisher needs; not measured as a separate option).
``ipc://`` skips the TCP stack: the bare hop's median fell from ~90 us (tcp loopback) to
~75 us; the tails are the scheduler's on a loaded machine either way.

Receiving: the socket's receive limit is the frame size limit, so nng refuses an oversized
message before reading it: it drops the connection and redials. nng counts that with every
other dropped connection (a publisher that stops, too), so ``dropped_connections`` reports
them together; nng gives no finer count.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import pynng
from pynng import _nng

from hftagg.bus.frame import HEADER_SIZE, topic_prefixes
from hftagg.errors import TransportError
from hftagg.hookspecs import hookimpl

__all__ = ["PynngTransport"]

log = logging.getLogger("hftagg.delivery")
_lib, _ffi = _nng.lib, _nng.ffi

#: how long one blocking send waits before it checks whether it was interrupted
SEND_POLL_MS = 100


def _stat_fields(stat) -> dict[str, int]:
    out = {}
    child = _lib.nng_stat_child(stat)
    while child != _ffi.NULL:
        if _lib.nng_stat_type(child) != _lib.NNG_STAT_STRING:
            out[_ffi.string(_lib.nng_stat_name(child)).decode()] = _lib.nng_stat_value(child)
        child = _lib.nng_stat_next(child)
    return out


def socket_stats(socket_id: int) -> tuple[dict[int, tuple[int, int]], int]:
    """nng's statistics for one socket: ``{pipe id: (tx_msgs, rx_msgs)}`` and the number of
    established connections its dialers lost (nng's ``other``: a message over the receive
    limit, or the peer closing).
    """
    root = _ffi.new("nng_stat **")
    if _lib.nng_stats_get(root) != 0:
        return {}, 0
    pipes: dict[int, tuple[int, int]] = {}
    errors = 0
    try:
        stat = _lib.nng_stat_child(root[0])
        while stat != _ffi.NULL:
            kind = _ffi.string(_lib.nng_stat_name(stat))
            if kind in (b"pipe", b"dialer"):
                fields = _stat_fields(stat)
                if fields.get("socket") == socket_id:
                    if kind == b"pipe":
                        pipes[fields["id"]] = (fields.get("tx_msgs", 0), fields.get("rx_msgs", 0))
                    elif kind == b"dialer":
                        errors += fields.get("other", 0)
            stat = _lib.nng_stat_next(stat)
    finally:
        _lib.nng_stats_free(root[0])
    return pipes, errors


class _Publisher:
    """A pub or push socket that knows how much of what it sent reached its peers."""

    def __init__(self, pattern: str, address: str, buffer_frames: int) -> None:
        cls = pynng.Pub0 if pattern == "pub" else pynng.Push0
        self.pattern = pattern
        self.buffer_frames = buffer_frames
        self.frames_sent = 0
        self.records_sent = 0
        self.frames_lost = 0  # pub: to subscribers that left; both: discarded at close
        self.records_lost = 0  # push only (pub cannot know which frames a subscriber missed)
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._closed = False
        self._closed_tx = 0  # frames written by pipes that are gone
        self._pipes_gone = 0
        self._gone: set[int] = set()
        self._joined_at: dict[int, int] = {}  # pub: pipe id -> frames_sent when it connected
        # record counts of the most recent frames: the undelivered ones are the newest
        self._recent: collections.deque[int] = collections.deque(maxlen=buffer_frames + 1024)
        self._socket = cls(send_buffer_size=buffer_frames, send_timeout=SEND_POLL_MS)
        self._socket.tcp_nodelay = True  # nng's default too: said here, where it matters
        self._id = _lib.nng_socket_id(self._socket.socket)
        self._socket.add_post_pipe_connect_cb(self._on_connect)
        self._socket.add_post_pipe_remove_cb(self._on_remove)
        try:
            self._socket.listen(address)
        except pynng.NNGException as exc:
            self._socket.close()
            raise TransportError(f"pynng cannot listen on {address!r}: {exc}") from exc

    # -- nng callbacks (nng's threads) ---------------------------------------------------------

    def _on_connect(self, pipe) -> None:
        with self._lock:
            self._joined_at[pipe.id] = self.frames_sent

    def _on_remove(self, pipe) -> None:
        tx = socket_stats(self._id)[0].get(pipe.id, (0, 0))[0]
        with self._lock:
            self._gone.add(pipe.id)
            self._pipes_gone += 1  # push: it may have taken the frame it was writing
            self._closed_tx += tx
            joined = self._joined_at.pop(pipe.id, None)
            if self.pattern == "pub" and joined is not None:
                self.frames_lost += max(0, self.frames_sent - joined - tx)

    # -- sending ------------------------------------------------------------------------------

    def send(self, frame: bytes, records: int = 0) -> bool:
        """Send one frame; ``push`` blocks while no puller has room. False if interrupted."""
        while True:
            try:
                self._socket.send(frame)
            except pynng.Timeout:
                if self._interrupted.is_set():
                    return False
                continue
            except pynng.Closed:
                return False
            self.frames_sent += 1
            self.records_sent += records
            self._recent.append(records)
            return True

    def interrupt(self) -> None:
        """Make a blocked ``send`` or ``drain`` give up within ``SEND_POLL_MS``."""
        self._interrupted.set()

    # -- accounting ---------------------------------------------------------------------------

    def _lags(self) -> tuple[int, list[int], int]:
        """push: frames not yet written to any puller; pub: per subscriber, frames not written;
        and the number of connected peers."""
        pipes, _ = socket_stats(self._id)
        with self._lock:
            live = {pid: tx for pid, (tx, _) in pipes.items() if pid not in self._gone}
            if self.pattern == "push":
                queued = max(0, self.frames_sent - self._closed_tx - sum(live.values()))
                return queued, [], len(live)
            lags = [
                max(0, self.frames_sent - self._joined_at.get(pid, self.frames_sent) - tx)
                for pid, tx in live.items()
            ]
            return 0, lags, len(live)

    def peers(self) -> int:
        return len(socket_stats(self._id)[0])

    def counters(self) -> dict[str, int]:
        """Frames sent, still queued in nng, and lost (push: records lost too)."""
        if self._closed:
            queued, certain = 0, 0
        else:
            queued, lags, _ = self._lags()
            if self.pattern == "pub":  # beyond the queue and the frame being written: lost
                queued = sum(lags)
            certain = sum(max(0, lag - self.buffer_frames - 1) for lag in lags)
        return {
            "peers": 0 if self._closed else self.peers(),
            "frames_sent": self.frames_sent,
            "records_sent": self.records_sent,
            "frames_queued": queued,
            "frames_lost": self.frames_lost + certain,
            "records_lost": self.records_lost,
        }

    def _newest_records(self, frames: int) -> int:
        recent = list(self._recent)[-frames:] if frames else []
        missing = frames - len(recent)
        mean = sum(self._recent) / len(self._recent) if self._recent else 0
        return sum(recent) + round(missing * mean)

    def drain(self, idle_secs: float) -> int:
        """Wait until everything sent has been written to peers. Returns the frames still
        undelivered when it gives up: on an interrupt (the pipeline's drain timeout), or after
        ``idle_secs`` without progress when no puller is connected (or what is left is no more
        than the frames pullers that went away may have taken with them). A connected puller
        that is merely slow is waited for. pub: a lag that stops shrinking for 0.2 s is frames
        nng dropped."""
        idle = idle_secs if self.pattern == "push" else min(idle_secs, 0.2)
        last, since = None, time.monotonic()
        while True:
            queued, lags, peers = self._lags()
            pending = queued if self.pattern == "push" else sum(lags)
            if not pending or self._interrupted.is_set():
                return pending
            now = time.monotonic()
            if pending != last:
                last, since = pending, now
            hopeless = self.pattern == "pub" or not peers or pending <= self._pipes_gone
            if hopeless and now - since > idle:
                return pending
            time.sleep(0.005)

    def close(self) -> int:
        """Close the socket; what nng still held is counted as lost. Returns those frames."""
        if self._closed:
            return 0
        queued, lags, _ = self._lags()
        lost = queued if self.pattern == "push" else sum(lags)
        if self.pattern == "push":
            self.records_lost += self._newest_records(queued)
        self.frames_lost += lost
        with self._lock:  # subscribers closed from here on were counted just now
            self._joined_at.clear()
        self._interrupted.set()
        self._closed = True
        self._socket.close()  # never under self._lock: nng calls _on_remove while closing
        return lost


class _Subscriber:
    def __init__(self, socket: pynng.Socket) -> None:
        self._socket = socket
        self._id = _lib.nng_socket_id(socket.socket)

    def recv(self, timeout_secs: float | None = None) -> bytes | None:
        self._socket.recv_timeout = -1 if timeout_secs is None else max(1, int(timeout_secs * 1e3))
        try:
            return self._socket.recv()
        except pynng.Timeout:
            return None
        except RuntimeError as exc:  # pynng cannot unpack a 0-byte message (a NULL buffer)
            if "NULL" in str(exc):
                return b""
            raise

    def dropped_connections(self) -> int:
        """Connections lost: a message over the receive limit, or the publisher went away."""
        return socket_stats(self._id)[1]

    def close(self) -> None:
        self._socket.close()


class PynngTransport:
    name = "pynng"
    patterns = ("pub", "push")

    def publisher(self, address: str, *, pattern: str = "pub", buffer_frames: int = 1024):
        if pattern not in self.patterns:
            raise TransportError(
                f"pynng pattern {pattern!r} is unknown; use one of {self.patterns}"
            )
        return _Publisher(pattern, address, buffer_frames)

    def subscriber(
        self,
        address: str,
        topics: list[str] | None = None,
        *,
        pattern: str = "pub",
        buffer_frames: int = 1024,
        max_frame_bytes: int | None = None,
    ):
        if pattern == "pub":
            socket = pynng.Sub0(recv_buffer_size=buffer_frames)
            for topic in topics or [None]:
                for prefix in topic_prefixes(topic):
                    socket.subscribe(prefix)
        elif pattern == "push":
            socket = pynng.Pull0(recv_buffer_size=buffer_frames)
        else:
            raise TransportError(
                f"pynng pattern {pattern!r} is unknown; use one of {self.patterns}"
            )
        socket.tcp_nodelay = True
        if max_frame_bytes is not None:
            socket.recv_max_size = max(max_frame_bytes, HEADER_SIZE)
        try:
            socket.dial(address, block=False)
        except pynng.NNGException as exc:
            socket.close()
            raise TransportError(f"pynng cannot dial {address!r}: {exc}") from exc
        return _Subscriber(socket)


@hookimpl
def hftagg_register_transports(register):
    register(PynngTransport())
