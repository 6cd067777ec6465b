"""Built-in plugin: the ``multicast`` source, UDP multicast lines A and B arbitrated into packets.

A reader thread joins both groups (``group_a``:``port_a``, ``group_b``:``port_b``) on
``interface`` and receives datagrams straight into ``raw_chunk`` rows (one datagram per row,
flags bit 0 set), noting the line of each. ``next_batch`` (the pipeline thread) takes what has
arrived and arbitrates it in one compiled pass (:mod:`.arbitration`): first copy wins,
duplicates are dropped and counted, holes filled by the other line are counted as recovered,
and numbers every live line has passed without delivering are reported as gap alerts with the
missing range. The packets go on in arrival order, with ``seq`` = the packet sequence number,
to e.g. ``sbe_decode`` with ``framing = "mdp3"``.

A group that is not a multicast address (224.0.0.0/4) is bound as a unicast UDP address: one
line can then be fed by a unicast sender (tests on hosts where multicast cannot route; the
arbitration is the same). Leave ``group_b`` empty for a single line (gap detection only).

Nothing is dropped silently: a datagram longer than a ``raw_chunk`` (4064 bytes) or shorter
than the packet header is a dead letter; packets the reader could not hand over because the
pipeline fell ``max_pending_packets`` behind are counted (``overflow``) and show as gaps.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import selectors
import socket
import threading
import time

import numpy as np

from hftagg.builtins.sources.multicast.packets import PacketFeed, PacketParams, packet_ports
from hftagg.errors import ConfigError, Problem
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import RAW_CHUNK, RAW_CHUNK_BYTES
from hftagg.stages import SourceStage, StageContext, restart

__all__ = ["Multicast", "MulticastParams"]

log = logging.getLogger("hftagg.multicast")


class MulticastParams(PacketParams):
    group_a: str = restart("239.255.0.1", description="line A multicast group (or unicast addr)")
    port_a: int = restart(31001, ge=1, le=65535)
    group_b: str = restart("", description="line B group; empty: a single line")
    port_b: int = restart(31002, ge=1, le=65535)
    interface: str = restart("127.0.0.1", description="local interface address to join on")
    receive_buffer_bytes: int = restart(8 << 20, ge=65536, description="SO_RCVBUF per line")
    max_pending_packets: int = restart(
        65536, ge=16, le=1 << 20, description="received, not yet taken; beyond: overflow"
    )


class _Inbox:
    """Datagrams the reader thread received and the pipeline has not taken: two sets of rows,
    the reader fills one while the pipeline reads the other (swapped by :meth:`take`)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self._sets = [self._new_set(256), self._new_set(256)]
        self.rows, self.lines, self.sizes = self._sets[0]
        self._current = 0
        self.count = 0
        self.overflow = 0

    @staticmethod
    def _new_set(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return RAW_CHUNK.empty(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)

    def slot(self) -> int:
        """Index of the next free row (grown as needed), or -1 when full. Call with the lock."""
        if self.count == len(self.rows):
            if self.count >= self.capacity:
                return -1
            grow = min(2 * len(self.rows), self.capacity)
            rows, lines, sizes = self._new_set(grow)
            rows[: self.count] = self.rows[: self.count]
            lines[: self.count] = self.lines[: self.count]
            sizes[: self.count] = self.sizes[: self.count]
            self.rows, self.lines, self.sizes = rows, lines, sizes
            self._sets[self._current] = (rows, lines, sizes)
        return self.count

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What arrived, as views valid until the next ``take`` (no copy of the rows)."""
        with self.lock:
            n = self.count
            if not n:
                return self.rows[:0], self.lines[:0], self.sizes[:0]
            out = self.rows[:n], self.lines[:n], self.sizes[:n]
            self._current ^= 1
            self.rows, self.lines, self.sizes = self._sets[self._current]
            self.count = 0
            return out


def _is_multicast(address: str) -> bool:
    return ipaddress.ip_address(address).is_multicast


def open_line(group: str, port: int, interface: str, rcvbuf: int) -> socket.socket:
    """A non-blocking UDP socket receiving ``group:port`` (joined on ``interface``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((group, port))
    if _is_multicast(group):
        membership = socket.inet_aton(group) + socket.inet_aton(interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock


class Multicast(SourceStage):
    """UDP multicast feed on lines A and B, arbitrated with packet gap detection."""

    type_name = "multicast"
    Params = MulticastParams
    outputs = packet_ports("multicast")

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        problems = []
        p = self.params
        for key in ("group_a", "group_b", "interface"):
            value = getattr(p, key)
            if key == "group_b" and not value:
                continue
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                problems.append((key, f"{value!r} is not an IPv4 address (e.g. 239.255.0.1)"))
        if p.window & (p.window - 1):
            problems.append(("window", f"{p.window} is not a power of two; use e.g. 65536"))
        return problems

    def open(self, ctx: StageContext) -> None:
        p = self.params
        problems = self.check(ctx)
        if problems:
            raise ConfigError([Problem(f"{self.stage_id}.{k}", getattr(p, k), text)
                               for k, text in problems])  # fmt: skip
        lines = [(p.group_a, p.port_a)] + ([(p.group_b, p.port_b)] if p.group_b else [])
        self.feed = PacketFeed(p, len(lines))
        self.inbox = _Inbox(p.max_pending_packets)
        self.sockets = []
        try:
            for group, port in lines:
                self.sockets.append(open_line(group, port, p.interface, p.receive_buffer_bytes))
        except OSError as exc:
            self.close()
            raise ConfigError(f"stage {self.stage_id!r}: cannot receive {group}:{port} on "
                              f"interface {p.interface}: {exc}; check the address is local or "
                              f"a multicast group, and the port is free") from exc  # fmt: skip
        self._stop = threading.Event()
        self.failed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._read, name=f"multicast:{self.stage_id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    # -- reader thread ------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            self._read_lines()
        except Exception:  # say so loudly: without this thread nothing more arrives
            log.exception("multicast %s: the receiving thread failed; no more packets will "
                          "arrive until the stage restarts", self.stage_id)  # fmt: skip
            self.failed = True
            raise

    def _read_lines(self) -> None:
        sel = selectors.DefaultSelector()
        for line, sock in enumerate(self.sockets):
            sel.register(sock, selectors.EVENT_READ, line)
        sel.register(self._wake_r, selectors.EVENT_READ, -1)
        try:
            while not self._stop.is_set():
                got = 0
                for key, _ in sel.select(timeout=1.0):
                    if key.data >= 0:
                        got += self._drain(key.fileobj, key.data)
                if got:
                    self.wake()
        finally:
            sel.close()

    def _drain(self, sock: socket.socket, line: int) -> int:
        """Receive every datagram waiting on ``sock`` into inbox rows; returns how many."""
        inbox = self.inbox
        got = 0
        with inbox.lock:
            while True:
                i = inbox.slot()
                if i < 0:
                    try:
                        sock.recv(1)  # no room: the datagram is counted, not kept
                    except BlockingIOError:
                        break
                    inbox.overflow += 1
                    continue
                row = inbox.rows["data"][i]  # the datagram lands in the record: no copy
                try:
                    size = sock.recv_into(row, RAW_CHUNK_BYTES, socket.MSG_TRUNC)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.warning("multicast %s line %d: %s", self.stage_id, line, exc)
                    break
                rec = inbox.rows[i]
                rec["length"] = min(size, RAW_CHUNK_BYTES)
                rec["flags"] = 1
                rec["ts_recv"] = time.time_ns()
                rec["ts_event"] = rec["ts_recv"]
                inbox.lines[i] = line
                inbox.sizes[i] = size
                inbox.count += 1
                got += 1
        return got

    # -- SourceStage ----------------------------------------------------------------------------

    def next_awake(self) -> float | None:
        # holes still undecided: look again soon, so a silent line's timeout is noticed
        if self.feed.arbiter.undecided:
            return time.monotonic() + 0.05
        if self.feed.watching:  # a live line: notice when it goes silent
            return time.monotonic() + self.params.line_timeout_ms / 2e3
        return math.inf

    def next_batch(self) -> dict[str, np.ndarray] | None:
        rows, lines, sizes = self.inbox.take()
        if not len(rows) and not self.feed.watching:
            return None
        out = self.feed.process(rows, lines, sizes, time.time_ns())
        return out or None

    def metrics(self) -> dict[str, int]:
        """Arbitration counters (delivered, duplicates, recovered, lost, gaps, late, resets),
        dead letters and ``overflow`` (datagrams the reader had no room for)."""
        c = self.feed.counters if hasattr(self, "feed") else {}
        overflow = self.inbox.overflow if hasattr(self, "inbox") else 0
        return {**c, "overflow": overflow}

    def snapshot(self) -> dict:
        return {"arbiter": self.feed.arbiter.snapshot()}

    def restore(self, state: dict) -> None:
        self.feed.arbiter.restore(state["arbiter"])

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._wake_w.send(b"x")
            self._thread.join(timeout=5.0)
            self._wake_r.close()
            self._wake_w.close()
        for sock in getattr(self, "sockets", []):
            sock.close()


@hookimpl
def hftagg_register_stage_types(register):
    register(Multicast)
