"""What the packet sources (``multicast`` live, ``pcap`` replayed) share: arbitrated packets
into ``raw_chunk`` records, gap alerts, dead letters for unusable datagrams, reason codes.

Instruments: a ``raw_chunk`` is not an instrument. Its ``instrument_id`` is the ``stream_id``
param (which stream the bytes belong to: the decoders keep their per-stream state by it, and
dead letters name it); the decoders map what the bytes describe through the instrument registry
(``fix_decode``: Symbol (55); ``sbe_decode`` with ``cme_mdp3``: SecurityID), not the raw sources.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.builtins.sources.framing import PacketHeader
from hftagg.builtins.sources.multicast.arbitration import GAP, Arbiter
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.records.catalog import ALERT, DEAD_LETTER, RAW_CHUNK, RAW_CHUNK_BYTES
from hftagg.records.reasons import REASONS
from hftagg.stages import Params, Port, restart

__all__ = ["GAP_ALERT", "LINE_DOWN", "LINE_UP", "OVERSIZED", "PacketFeed", "PacketParams", "RESET_ALERT", "SHORT",
           "TRUNCATED_FRAME", "packet_ports"]  # fmt: skip

REASONS.claim("rawfeeds", 0x1600, 0x16FF)
OVERSIZED = 0x1601
SHORT = 0x1602
TRUNCATED_FRAME = 0x1603
BAD_LENGTH = 0x1604
GARBAGE = 0x1605
BAD_FIX = 0x1606
_DATA_AT = RAW_CHUNK.dtype.fields["data"][1]
GAP_ALERT = 0x1680
RESET_ALERT = 0x1681
LINE_DOWN = 0x1682
DISCONNECTED = 0x1683
CONNECTED = 0x1684
LINE_UP = 0x1685
REASONS.register_all("rawfeeds", {
    OVERSIZED: ("oversized", "a datagram or frame longer than the source accepts", 1),
    SHORT: ("short_packet", "a datagram shorter than its packet header", 1),
    TRUNCATED_FRAME: ("truncated_frame", "the stream ended inside a frame", 1),
    BAD_LENGTH: ("bad_length", "a length prefix smaller than the prefix itself", 1),
    GARBAGE: ("garbage", "bytes between frames that are no frame", 1),
    BAD_FIX: ("bad_fix_frame", "a FIX message with a bad BeginString, BodyLength or CheckSum", 1),
    GAP_ALERT: ("packet_gap", "packets lost on every line (first..last missing)", 2),
    RESET_ALERT: ("sequence_reset", "the packet sequence restarted (old..new)", 1),
    LINE_DOWN: ("line_down", "a feed line went silent for line_timeout_ms", 1),
    LINE_UP: ("line_up", "a silent feed line receives again", 0),
    DISCONNECTED: ("disconnected", "the TCP connection closed; reconnecting", 1),
    CONNECTED: ("connected", "the TCP connection is up", 0),
})  # fmt: skip


class PacketParams(Params):
    """Packet sequencing and arbitration parameters (both packet sources)."""

    seq_offset: int = restart(0, ge=0, le=1024, description="packet sequence number offset")
    seq_bytes: int = restart(4, ge=1, le=8, description="its width: 4 (MDP3) or 8")
    seq_byte_order: str = restart("little", pattern="^(little|big)$")
    header_bytes: int = restart(12, ge=1, le=1024, description="shorter packets are refused")
    window: int = restart(
        1 << 16, ge=2, le=1 << 24, description="sequence numbers tracked for holes (power of 2)"
    )
    line_timeout_ms: float = restart(
        1000.0, gt=0, description="a line silent this long is not waited for to decide gaps"
    )
    reorder_packets: int = restart(
        0, ge=0, le=1 << 16, description="a hole waits until every live line is this far past"
    )
    stream_id: int = restart(0, ge=0, le=2**32 - 1, description="raw_chunk instrument_id")


def packet_ports(name: str) -> dict[str, Port]:
    return {
        "packets": Port("raw_chunk", f"raw.{name}", "arbitrated packets, one per raw_chunk"),
        "alerts": Port("alert", f"alerts.{name}", "packet gaps (first..last missing), resets"),
        "dead_letters": Port("dead_letter", f"dead_letters.{name}",
                             "oversized or too-short datagrams"),
    }  # fmt: skip


@numba.njit(**_NJIT)
def compact_packets(src, keep, lengths, data_at, dst, dst_len):
    """Copy kept rows of ``src`` (raw_chunk rows as bytes) to the front of ``dst``: the
    fields before ``data`` and ``lengths[i]`` data bytes; zero what ``dst_len`` says a longer
    packet left in the row. Returns how many rows were written."""
    j = 0
    for i in range(src.shape[0]):
        if not keep[i]:
            continue
        n = data_at + min(lengths[i], RAW_CHUNK_BYTES)
        for b in range(n):
            dst[j, b] = src[i, b]
        for b in range(n, data_at + dst_len[j]):
            dst[j, b] = 0
        dst_len[j] = n - data_at
        j += 1
    return j


class PacketFeed:
    """Arbitrate a batch of datagrams (``raw_chunk`` rows with their line) into outputs."""

    def __init__(self, p: PacketParams, lines: int) -> None:
        if p.window & (p.window - 1):
            raise ValueError(f"window = {p.window}: use a power of two (e.g. {1 << 16})")
        self.header = PacketHeader(p.seq_offset, p.seq_bytes, p.seq_byte_order == "big",
                                   p.header_bytes)  # fmt: skip
        self.arbiter = Arbiter(lines, p.window, int(p.line_timeout_ms * 1e6), p.reorder_packets)
        self.stream_id = p.stream_id
        self.gaps: list[tuple[int, int]] = []  # every gap so far (first, last), for status
        self.resets: list[tuple[int, int]] = []
        self.dead = {"oversized": 0, "short_packet": 0}
        self._alerts = 0
        self._up = np.zeros(lines, dtype=np.bool_)  # lines alive after the last batch
        self._ever = np.zeros(lines, dtype=np.bool_)  # lines that ever received
        self.line_changes = 0
        self._out = RAW_CHUNK.empty(0)
        self._out_len = np.zeros(0, dtype=np.int64)

    def process(self, packets: np.ndarray, lines: np.ndarray, sizes: np.ndarray,
                now_ns: int) -> dict[str, np.ndarray]:  # fmt: skip
        """``sizes``: each datagram's real size (larger than ``RAW_CHUNK_BYTES``: oversized).

        The ``packets`` output is a view on a buffer this feed reuses: valid until the next
        call (the runtime copies a source's batch into its ring before asking again)."""
        out: dict[str, np.ndarray] = {}
        over = sizes > RAW_CHUNK_BYTES
        short = ~over & self.header.short(packets)
        ok = ~(over | short)
        seqs = self.header.sequences(packets)
        keep, events = self.arbiter.process(seqs, lines, packets["ts_recv"], now_ns, ok)
        if keep.any():
            kept = self._compact(packets, keep)
            kept["seq"] = seqs[keep].astype(np.uint64)
            kept["instrument_id"] = self.stream_id
            kept["flags"] |= 1
            out["packets"] = kept
        ts = int(packets["ts_recv"][-1]) if len(packets) else now_ns
        alerts = [self.alerts(events, ts)] if len(events) else []
        line_alerts = self._line_alerts(ts)
        if line_alerts is not None:
            alerts.append(line_alerts)
        if alerts:
            out["alerts"] = np.concatenate(alerts) if len(alerts) > 1 else alerts[0]
        if not ok.all():
            out["dead_letters"] = self._dead(packets, sizes, over, short)
        return out

    def _compact(self, packets: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The kept packets, copied into this feed's reused output buffer: only each one's
        header fields and ``length`` bytes are moved (a ``raw_chunk`` row is 4 KB whatever the
        datagram's size), and only what a longer earlier packet left in a row is zeroed."""
        k = int(keep.sum())
        if len(self._out) < k:
            self._out = RAW_CHUNK.empty(max(k, 2 * len(self._out)))
            self._out_len = np.zeros(len(self._out), dtype=np.int64)
        src = np.ascontiguousarray(packets)
        compact_packets(src.view(np.uint8).reshape(len(src), RAW_CHUNK.itemsize), keep,
                        src["length"].astype(np.int64), _DATA_AT,
                        self._out.view(np.uint8).reshape(len(self._out), RAW_CHUNK.itemsize),
                        self._out_len)  # fmt: skip
        return self._out[:k]

    def flush(self, now_ns: int) -> dict[str, np.ndarray]:
        events = self.arbiter.flush()
        return {"alerts": self.alerts(events, now_ns)} if len(events) else {}

    def alerts(self, events: np.ndarray, ts: int) -> np.ndarray:
        """One alert per gap / reset event (events are rare: Python per event is fine)."""
        out = ALERT.empty(len(events))
        out["ts_event"] = ts
        out["ts_recv"] = ts
        out["seq"] = np.arange(self._alerts, self._alerts + len(events), dtype=np.uint64)
        self._alerts += len(events)
        out["instrument_id"] = self.stream_id
        texts = []
        for first, last, kind in events.tolist():
            if kind == GAP:
                self.gaps.append((first, last))
                texts.append(f"gap {first}..{last} ({last - first + 1} lost)".encode())
            else:
                self.resets.append((first, last))
                texts.append(f"sequence reset {first} -> {last}".encode())
        gap = events[:, 2] == GAP
        out["code"] = np.where(gap, GAP_ALERT, RESET_ALERT)
        out["severity"] = np.where(gap, 2, 1)
        out["value"] = np.where(gap, events[:, 1] - events[:, 0] + 1, events[:, 1])
        out["text"] = texts
        return out

    @property
    def watching(self) -> bool:
        """Whether a batch with no packets can still change something (a hole to decide, a
        live line that may go silent)."""
        return self.arbiter.undecided or bool(self._up.any())

    def _line_alerts(self, ts: int) -> np.ndarray | None:
        """``line_down`` when a live line went silent, ``line_up`` when a silent one is back."""
        alive = self.arbiter.alive
        down = self._up & ~alive
        back = ~self._up & alive & self._ever
        self._ever |= alive
        self._up = alive.copy()
        changed = np.flatnonzero(down | back)
        if not len(changed):
            return None
        self.line_changes += len(changed)
        out = ALERT.empty(len(changed))
        out["ts_event"] = ts
        out["ts_recv"] = ts
        out["seq"] = np.arange(self._alerts, self._alerts + len(changed), dtype=np.uint64)
        self._alerts += len(changed)
        out["instrument_id"] = self.stream_id
        is_down = down[changed]
        out["code"] = np.where(is_down, LINE_DOWN, LINE_UP)
        out["severity"] = np.where(is_down, 1, 0)
        out["value"] = changed
        out["text"] = [f"line {'AB'[k] if k < 2 else k} {'down' if d else 'up'}".encode()
                       for k, d in zip(changed.tolist(), is_down.tolist(), strict=True)]  # fmt: skip
        return out

    def _dead(self, packets, sizes, over, short) -> np.ndarray:
        bad = over | short
        dl = DEAD_LETTER.empty(int(bad.sum()))
        dl["ts_recv"] = packets["ts_recv"][bad]
        dl["ts_event"] = dl["ts_recv"]
        dl["instrument_id"] = self.stream_id
        dl["source_id"] = self.stream_id
        dl["reason"] = np.where(over[bad], OVERSIZED, SHORT)
        dl["raw_length"] = np.minimum(sizes[bad], 2**32 - 1)
        dl["detail"] = np.where(over[bad], b"datagram larger than a raw_chunk (4064 bytes)",
                                b"datagram shorter than the packet header")  # fmt: skip
        self.dead["oversized"] += int(over.sum())
        self.dead["short_packet"] += int(short.sum())
        return dl

    @property
    def counters(self) -> dict[str, int]:
        return {**self.arbiter.counters, **{f"dead_{k}": v for k, v in self.dead.items()}}


def warm() -> None:
    """Compile the packet compaction kernel into the on-disk cache."""
    feed = PacketFeed(PacketParams(window=16), 2)
    rows = RAW_CHUNK.empty(2)
    rows["length"] = 12
    feed.process(rows, np.array([0, 1]), np.array([12, 12]), 0)
