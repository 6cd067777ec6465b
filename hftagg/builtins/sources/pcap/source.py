"""Built-in plugin: the ``pcap`` source, a packet capture of feed lines replayed through
A/B arbitration.

The capture (classic pcap or pcapng, :mod:`.capture`) is read and indexed in bulk; UDP
datagrams to ``group_a``:``port_a`` (and ``group_b``:``port_b``, a capture of both lines)
become packets on line A (B), everything else is skipped and counted. They then go through
exactly the live ``multicast`` source's path (:class:`~hftagg.builtins.sources.multicast.
packets.PacketFeed`): first copy wins, duplicates dropped, gaps reported as alerts, with
``ts_recv`` = the capture time, and a line counted as silent by capture time. At the end of
the capture every remaining hole is decided (reported) and the source is exhausted.

Pacing (``speed``, live): 0 replays as fast as the pipeline takes it; 1.0 at the recorded
pace; N at N times it.

Instruments: a ``raw_chunk`` is not an instrument. Its ``instrument_id`` is the ``stream_id``
param (which stream the bytes belong to: the decoders keep their per-stream state by it, and
dead letters name it); the decoders map what the bytes describe through the instrument registry
(``fix_decode``: Symbol (55); ``sbe_decode`` with ``cme_mdp3``: SecurityID), not the raw sources.
"""

from __future__ import annotations

import time

import numpy as np

from hftagg.builtins.sources.framing import _gather
from hftagg.builtins.sources.multicast.packets import PacketFeed, PacketParams, packet_ports
from hftagg.builtins.sources.pcap.capture import open_capture, target_arrays, udp_lines
from hftagg.config.paths import config_relative
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import RAW_CHUNK, RAW_CHUNK_BYTES
from hftagg.stages import SourceStage, StageContext, live, restart

__all__ = ["Pcap", "PcapParams"]


class PcapParams(PacketParams):
    path: str = restart(..., description="pcap or pcapng file, relative to the config file")
    group_a: str = restart("239.255.0.1", description="line A destination address")
    port_a: int = restart(31001, ge=1, le=65535)
    group_b: str = restart("", description="line B destination; empty: a single line")
    port_b: int = restart(31002, ge=1, le=65535)
    speed: float = live(
        0.0, ge=0, le=1e9, description="0 = as fast as possible, 1.0 = recorded pace, N = N x"
    )
    batch_packets: int = live(4096, ge=1, le=1 << 20, description="largest batch per call")


class Pcap(SourceStage):
    """A capture of one or two feed lines, replayed through A/B arbitration."""

    type_name = "pcap"
    Params = PcapParams
    outputs = packet_ports("pcap")

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        path = config_relative(self.params.path)
        if not path.is_file():
            return [("path", f"no such capture file: {path}; give a pcap/pcapng path "
                             f"(relative to the config file)")]  # fmt: skip
        return []

    def open(self, ctx: StageContext) -> None:
        p = self.params
        cap = open_capture(config_relative(p.path))
        targets = [(p.group_a, p.port_a)] + ([(p.group_b, p.port_b)] if p.group_b else [])
        groups, ports = target_arrays(targets)
        n = len(cap)
        line, at, size = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        fragments = udp_lines(cap.buf, cap.offsets, cap.lengths, cap.links, groups, ports,
                              line, at, size)  # fmt: skip
        mine = line >= 0
        self._buf = cap.buf
        self._at, self._size = at[mine], size[mine]
        self._line, self._ts = line[mine], cap.ts[mine]
        self.feed = PacketFeed(p, len(targets))
        self.counts = {"captured": n, "matched": int(mine.sum()), "skipped": int((~mine).sum()),
                       "fragments": int(fragments), "truncated_capture": int(cap.truncated)}  # fmt: skip
        self._pos = 0
        self._anchor: tuple[float, int] | None = None
        self._next_awake: float | None = None
        self._done = False

    def reconfigure(self, params: PcapParams) -> None:
        if params.speed != self.params.speed:
            self._anchor = None
        self.params = params

    def _due(self, n: int) -> int:
        p = self.params
        self._next_awake = None
        if p.speed == 0 or n == 0:
            return n
        ts = self._ts[self._pos : self._pos + n]
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, int(ts[0]))
        wall0, ts0 = self._anchor
        due = int(np.searchsorted(ts, ts0 + (now - wall0) * p.speed * 1e9, side="right"))
        if due == 0:
            self._next_awake = wall0 + (int(ts[0]) - ts0) / (p.speed * 1e9)
        return due

    def next_awake(self) -> float | None:
        return self._next_awake

    def next_batch(self) -> dict[str, np.ndarray] | None:
        if self._done:
            return None
        left = len(self._at) - self._pos
        if left == 0:
            self._done = True
            last = int(self._ts[-1]) if len(self._ts) else 0
            return self.feed.flush(last) or None
        n = self._due(min(self.params.batch_packets, left))
        if n == 0:
            return None
        sl = slice(self._pos, self._pos + n)
        self._pos += n
        sizes = self._size[sl]
        rows = RAW_CHUNK.empty(n)
        lengths = np.minimum(sizes, RAW_CHUNK_BYTES)
        _gather(self._buf, self._at[sl], lengths, rows["data"])
        rows["length"] = lengths
        rows["flags"] = 1
        rows["ts_recv"] = self._ts[sl]
        rows["ts_event"] = self._ts[sl]
        return self.feed.process(rows, self._line[sl], sizes, int(self._ts[sl][-1])) or None

    @property
    def exhausted(self) -> bool:
        return self._done

    def progress(self) -> dict | None:
        total = len(self._at) if hasattr(self, "_at") else 0
        if not total:
            return None
        return {"percent": 100.0 * self._pos / total, "records": self._pos}

    def metrics(self) -> dict[str, int]:
        """Capture counts (captured, matched, skipped, fragments) and arbitration counters."""
        if not hasattr(self, "feed"):
            return {}
        return {**self.counts, **self.feed.counters}


@hookimpl
def hftagg_register_stage_types(register):
    register(Pcap)
