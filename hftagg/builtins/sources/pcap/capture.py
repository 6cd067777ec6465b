"""Packet captures read in bulk: classic pcap and pcapng indexed, Ethernet/IPv4/UDP filtered.

The formats are simple enough to parse directly (no per-packet Python object): one compiled
walk indexes every packet record (offset, captured length, timestamp), a second one decodes
the link, IPv4 and UDP headers of all of them at once and says which line (``targets``: a
destination group and port per line) each UDP payload belongs to.

Supported: classic pcap (either byte order, microsecond or nanosecond timestamps) and pcapng
(little-endian sections; Enhanced and Simple Packet Blocks; ``if_tsresol`` per interface);
link types Ethernet (with 802.1Q VLAN tags), raw IPv4 and Linux cooked capture. IP fragments
are not reassembled: they are counted (``fragments``), never silently taken as whole packets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from hftagg.errors import StorageError as CaptureError  # a data file that cannot be read
from hftagg.kernels.options import NJIT as _NJIT

__all__ = ["Capture", "CaptureError", "open_capture", "udp_lines"]

# ``CaptureError`` is :class:`hftagg.errors.StorageError` (a file that cannot be read), under
# the name callers of this module expect

LINK_ETHERNET, LINK_RAW, LINK_RAW_IPV4, LINK_SLL = 1, 101, 228, 113


@numba.njit(inline="always", **_NJIT)
def _u32(buf, p, big):
    if big:
        return (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (
            np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])  # fmt: skip
    return (np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16) | (
        np.int64(buf[p + 1]) << 8) | np.int64(buf[p])  # fmt: skip


@numba.njit(inline="always", **_NJIT)
def _u16be(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@numba.njit(**_NJIT)
def index_pcap(buf, big, frac_ns, offsets, lengths, ts):
    """Classic pcap records after the 24-byte header: ``(count, truncated)``."""
    p = 24
    n = 0
    while p + 16 <= buf.shape[0] and n < offsets.shape[0]:
        sec = _u32(buf, p, big)
        frac = _u32(buf, p + 4, big)
        incl = _u32(buf, p + 8, big)
        if p + 16 + incl > buf.shape[0]:
            return n, True
        offsets[n] = p + 16
        lengths[n] = incl
        ts[n] = sec * 1_000_000_000 + frac * frac_ns
        n += 1
        p += 16 + incl
    return n, p < buf.shape[0]


@numba.njit(**_NJIT)
def index_pcapng(buf, offsets, lengths, ts_raw, iface, idb_at):
    """pcapng blocks (little-endian): EPB/SPB packets and IDB positions:
    ``(packets, idbs, truncated)``; ``ts_raw`` in each interface's own units."""
    p = 0
    n = 0
    k = 0
    while p + 12 <= buf.shape[0] and n < offsets.shape[0]:
        kind = _u32(buf, p, False)
        total = _u32(buf, p + 4, False)
        if total < 12 or p + total > buf.shape[0]:
            return n, k, True
        if kind == 6:  # Enhanced Packet Block
            iface[n] = _u32(buf, p + 8, False)
            ts_raw[n] = (_u32(buf, p + 12, False) << 32) | _u32(buf, p + 16, False)
            lengths[n] = _u32(buf, p + 20, False)
            offsets[n] = p + 28
            n += 1
        elif kind == 3:  # Simple Packet Block: no timestamp, interface 0
            iface[n] = 0
            ts_raw[n] = 0
            lengths[n] = min(_u32(buf, p + 8, False), total - 16)
            offsets[n] = p + 12
            n += 1
        elif kind == 1 and k < idb_at.shape[0]:
            idb_at[k] = p
            k += 1
        p += total
    return n, k, p < buf.shape[0]


@numba.njit(inline="always", **_NJIT)
def _ip_start(buf, p, end, link):
    """Where the IPv4 header of a packet at ``p`` starts (-1: not IPv4 over a known link)."""
    if link == 1:
        ethertype = _u16be(buf, p + 12) if p + 14 <= end else 0
        p += 14
        while ethertype == 0x8100 and p + 4 <= end:
            ethertype = _u16be(buf, p + 2)
            p += 4
        return p if ethertype == 0x0800 else -1
    if link == 113:
        return p + 16 if p + 16 <= end and _u16be(buf, p + 14) == 0x0800 else -1
    return p if link == 101 or link == 228 else -1


@numba.njit(**_NJIT)
def udp_lines(buf, offsets, lengths, links, groups, ports, line, payload_at, payload_len):
    """Per packet: which target (group, port) its UDP datagram goes to (-1: none, -2: an IP
    fragment), and where its payload is. ``links``: the link type of each packet."""
    fragments = 0
    for i in range(offsets.shape[0]):
        line[i] = -1
        end = offsets[i] + lengths[i]
        p = _ip_start(buf, offsets[i], end, links[i])
        if p < 0:
            continue
        if p + 20 > end or (buf[p] >> 4) != 4 or buf[p + 9] != 17:
            continue
        ihl = (buf[p] & 15) * 4
        flags_frag = _u16be(buf, p + 6)
        if (flags_frag & 0x3FFF) != 0:  # more fragments, or a fragment offset
            line[i] = -2
            fragments += 1
            continue
        dst = (np.int64(buf[p + 16]) << 24) | (np.int64(buf[p + 17]) << 16) | (
            np.int64(buf[p + 18]) << 8) | np.int64(buf[p + 19])  # fmt: skip
        u = p + ihl
        if u + 8 > end:
            continue
        dport = _u16be(buf, u + 2)
        ulen = _u16be(buf, u + 4)
        for t in range(groups.shape[0]):
            if groups[t] == dst and ports[t] == dport:
                line[i] = t
                payload_at[i] = u + 8
                payload_len[i] = min(ulen - 8, end - u - 8)
                break
    return fragments


@dataclass
class Capture:
    """An indexed capture: every packet's offset, captured length, time and link type."""

    path: Path
    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    ts: np.ndarray
    links: np.ndarray
    truncated: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def open_capture(path: str | Path) -> Capture:
    """Read and index a pcap or pcapng file (kept in memory as one byte array)."""
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
    if len(buf) < 24:
        raise CaptureError(f"{path}: {len(buf)} bytes is too short for a pcap or pcapng header")
    magic = bytes(buf[:4])
    if magic == b"\x0a\x0d\x0d\x0a":
        return _pcapng(path, buf)
    kinds = {b"\xd4\xc3\xb2\xa1": (False, 1000), b"\xa1\xb2\xc3\xd4": (True, 1000),
             b"\x4d\x3c\xb2\xa1": (False, 1), b"\xa1\xb2\x3c\x4d": (True, 1)}  # fmt: skip
    if magic not in kinds:
        raise CaptureError(f"{path}: magic {magic.hex()} is neither pcap (a1b2c3d4, a1b23c4d) "
                           f"nor pcapng (0a0d0d0a); give a capture file")  # fmt: skip
    big, frac_ns = kinds[magic]
    link = int.from_bytes(bytes(buf[20:24]), "big" if big else "little") & 0xFFFF
    cap = max(len(buf) // 16, 1)
    offsets, lengths, ts = (np.zeros(cap, np.int64) for _ in range(3))
    n, truncated = index_pcap(buf, big, frac_ns, offsets, lengths, ts)
    return Capture(path, buf, offsets[:n], lengths[:n], ts[:n], np.full(n, link, np.int64),
                   truncated)  # fmt: skip


def _pcapng(path: Path, buf: np.ndarray) -> Capture:
    if bytes(buf[8:12]) != b"\x4d\x3c\x2b\x1a":
        raise CaptureError(f"{path}: a big-endian pcapng section; only little-endian pcapng "
                           f"is read (convert it with `editcap -F pcapng`)")  # fmt: skip
    cap = max(len(buf) // 16, 1)
    offsets, lengths, ts_raw, iface = (np.zeros(cap, np.int64) for _ in range(4))
    idb_at = np.zeros(256, np.int64)
    n, k, truncated = index_pcapng(buf, offsets, lengths, ts_raw, iface, idb_at)
    link_of, unit_of = [], []
    for at in idb_at[:k].tolist():  # interfaces are few: Python per interface
        link_of.append(int.from_bytes(bytes(buf[at + 8 : at + 10]), "little"))
        unit_of.append(_tsresol_ns(buf, at))
    if n and not k:
        raise CaptureError(f"{path}: packets but no Interface Description Block")
    iface = iface[:n]
    if n and iface.max() >= k:
        raise CaptureError(f"{path}: a packet names interface {int(iface.max())}, "
                           f"only {k} are described")  # fmt: skip
    links = np.array(link_of, np.int64)[iface] if n else np.zeros(0, np.int64)
    units = np.array(unit_of, np.float64)[iface] if n else np.zeros(0)
    ts = np.round(ts_raw[:n].astype(np.float64) * units).astype(np.int64)
    exact = units == 1000.0  # the default microseconds: exact integer arithmetic
    ts[exact] = ts_raw[:n][exact] * 1000
    return Capture(path, buf, offsets[:n], lengths[:n], ts, links, truncated)


def _tsresol_ns(buf: np.ndarray, at: int) -> float:
    """Nanoseconds per timestamp unit of the IDB at ``at`` (option 9, default microseconds)."""
    total = int.from_bytes(bytes(buf[at + 4 : at + 8]), "little")
    p, end = at + 16, at + total - 4
    while p + 4 <= end:
        code = int.from_bytes(bytes(buf[p : p + 2]), "little")
        size = int.from_bytes(bytes(buf[p + 2 : p + 4]), "little")
        if code == 0:
            break
        if code == 9 and size >= 1:
            v = int(buf[p + 4])
            return 1e9 * (2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v)
        p += 4 + (size + 3) // 4 * 4
    return 1000.0


def target_arrays(targets: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    groups = np.array([int(ipaddress.IPv4Address(g)) for g, _ in targets], dtype=np.int64)
    ports = np.array([p for _, p in targets], dtype=np.int64)
    return groups, ports


def warm() -> None:
    """Compile the capture kernels into the on-disk cache."""
    buf = np.zeros(64, dtype=np.uint8)
    z = np.zeros(4, np.int64)
    index_pcap(buf, False, 1000, z, z.copy(), z.copy())
    index_pcapng(buf, z, z.copy(), z.copy(), z.copy(), z.copy())
    udp_lines(buf, z[:1], z[:1] + 40, z[:1] + 1, z[:1], z[:1], z[:1].copy(), z[:1].copy(),
              z[:1].copy())  # fmt: skip
