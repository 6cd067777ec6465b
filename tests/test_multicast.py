"""UDP multicast A/B arbitration: first copy wins, duplicates, recovery, gaps, resets; the live
source on loopback multicast feeding ``sbe_decode`` (CME MDP3 packets)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe.mdp3 import BOOK, mdp3_packet
from hftagg.builtins.protocols.sbe.stages import SbeDecode
from hftagg.builtins.sources.multicast.arbitration import GAP, RESET, Arbiter
from hftagg.builtins.sources.multicast.packets import (
    GAP_ALERT,
    LINE_DOWN,
    LINE_UP,
    OVERSIZED,
    SHORT,
    PacketFeed,
    PacketParams,
)
from hftagg.builtins.sources.multicast.source import Multicast
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import ALERT, RAW_CHUNK
from hftagg.stages import StageContext
from hftagg.testing import run_stage

MDP3 = Path(__file__).parents[1].parent / "shared" / "data" / "sbe" / "cme-mdp3-v9.xml"
needs_mdp3 = pytest.mark.skipif(not MDP3.is_file(), reason=f"shared SBE test data absent: {MDP3}")


def _interleave(a: list[int], b: list[int], lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Line A's packets with line B's ``lag`` packets behind, in arrival order."""
    seqs, lines = [], []
    for i in range(max(len(a), len(b) + lag)):
        if i < len(a):
            seqs.append(a[i]), lines.append(0)
        if 0 <= i - lag < len(b):
            seqs.append(b[i - lag]), lines.append(1)
    return np.array(seqs, dtype=np.int64), np.array(lines, dtype=np.int64)


def _run(arb: Arbiter, seqs, lines, ts=None, now=0, splits=()):
    """Arbitrate in batches cut at ``splits``; returns (delivered seqs, events)."""
    ts = np.zeros(len(seqs), np.int64) if ts is None else ts
    delivered, events = [], []
    for part in np.split(np.arange(len(seqs)), list(splits)):
        keep, ev = arb.process(seqs[part], lines[part], ts[part], now)
        delivered += seqs[part][keep].tolist()
        events += ev.tolist()
    return delivered, events


def test_first_copy_wins_and_a_packet_lost_on_both_lines_is_one_gap():
    a = [s for s in range(1, 21) if s not in (3, 7, 12)]
    b = [s for s in range(1, 21) if s not in (5, 7, 13, 14)]
    seqs, lines = _interleave(a, b, lag=2)
    arb = Arbiter()

    delivered, events = _run(arb, seqs, lines)

    assert delivered == [s for s in dict.fromkeys(seqs.tolist())]  # first copy, arrival order
    assert sorted(delivered) == [s for s in range(1, 21) if s != 7]
    assert events == [[7, 7, GAP]]
    c = arb.counters
    assert c["delivered"] == 19 and c["lost"] == 1 and c["gaps"] == 1
    assert c["duplicates"] == len(seqs) - 19
    # 3 and 12 lost on A came from B after A had moved past them; 5, 13, 14 came first on A
    assert c["recovered"] == 2


def test_packets_lost_on_either_line_alone_are_recovered_without_any_gap():
    a = [s for s in range(100, 200) if s % 7]
    b = [s for s in range(100, 200) if s % 11 or not s % 7]  # never both
    seqs, lines = _interleave(a, b, lag=5)
    arb = Arbiter()

    delivered, events = _run(arb, seqs, lines, splits=[3, 50, 51, 120])

    assert sorted(delivered) == list(range(100, 200))
    assert events == []
    assert arb.counters["lost"] == 0 and arb.counters["duplicates"] == len(seqs) - 100


def test_a_run_lost_on_both_lines_is_reported_once_with_its_range():
    a = [s for s in range(1, 51) if not 20 <= s <= 29]
    b = [s for s in range(1, 51) if not 18 <= s <= 31]
    seqs, lines = _interleave(a, b, lag=0)
    arb = Arbiter()

    delivered, events = _run(arb, seqs, lines, splits=[10, 30])

    assert events == [[20, 29, GAP]]
    assert arb.counters["lost"] == 10 and arb.counters["gaps"] == 1
    assert sorted(delivered) == [s for s in range(1, 51) if not 20 <= s <= 29]


def test_reordering_on_one_line_within_reorder_packets_is_recovered_not_a_gap():
    seqs = np.array([1, 2, 4, 3, 5, 7, 6, 8], dtype=np.int64)
    tolerant, strict = Arbiter(lines=1, reorder=2), Arbiter(lines=1)

    delivered, events = _run(tolerant, seqs, np.zeros(8, np.int64))
    strict_delivered, strict_events = _run(strict, seqs, np.zeros(8, np.int64))

    assert delivered == seqs.tolist() == strict_delivered
    assert events == [] and tolerant.counters["recovered"] == 2
    # with no tolerance a single line decides each hole at once; the fill is late, not lost
    assert strict_events == [[3, 3, GAP], [6, 6, GAP]] and strict.counters["late"] == 2


def test_any_batch_cut_gives_the_same_result_as_one_batch():
    rng = np.random.default_rng(3)
    a = [s for s in range(1, 2001) if rng.random() > 0.05]
    b = [s for s in range(1, 2001) if rng.random() > 0.05]
    seqs, lines = _interleave(a, b, lag=3)
    whole = Arbiter()
    expected = _run(whole, seqs, lines)
    cuts = sorted(rng.choice(len(seqs), 40, replace=False).tolist())

    cut = Arbiter()
    got = _run(cut, seqs, lines, splits=cuts)

    assert got == expected and cut.counters == whole.counters
    lost = set(range(1, 2001)) - set(a) - set(b)
    assert cut.counters["lost"] == len(lost)
    assert {s for first, last, _ in got[1] for s in range(first, last + 1)} == lost


def test_a_silent_line_is_not_waited_for_after_its_timeout():
    arb = Arbiter(line_timeout_ns=1_000)
    # both lines alive at t=0, then only A speaks at t=10_000: B is silent beyond its timeout
    _run(arb, np.array([1, 1]), np.array([0, 1]), ts=np.array([0, 0]), now=0)
    seqs = np.array([2, 4, 5])

    delivered, events = _run(arb, seqs, np.zeros(3, np.int64), ts=np.full(3, 10_000),
                             now=10_000)  # fmt: skip

    assert delivered == [2, 4, 5] and events == [[3, 3, GAP]]


def test_while_both_lines_are_alive_a_hole_waits_for_the_other_line():
    arb = Arbiter(line_timeout_ns=10**12)
    _run(arb, np.array([1, 1]), np.array([0, 1]))

    _, events = _run(arb, np.array([2, 4, 5]), np.zeros(3, np.int64))
    assert events == [] and arb.undecided
    delivered, events = _run(arb, np.array([2, 3]), np.ones(2, np.int64))

    assert delivered == [3] and events == [] and arb.counters["recovered"] == 1


def test_a_sequence_reset_is_reported_and_numbering_restarts():
    arb = Arbiter(lines=1, window=16)
    seqs = np.array([1000, 1001, 1002, 1, 2, 3], dtype=np.int64)

    delivered, events = _run(arb, seqs, np.zeros(6, np.int64))

    assert delivered == seqs.tolist()
    assert events == [[1002, 1, RESET]] and arb.counters["resets"] == 1


def test_a_packet_beyond_the_window_forces_the_decision_on_old_holes():
    arb = Arbiter(window=16, line_timeout_ns=10**12)
    _run(arb, np.array([1, 1]), np.array([0, 1]))
    # line A jumps ahead; B (alive) lags at 1: only the window decides that 2..9 are lost
    delivered, events = _run(arb, np.array([10, 30]), np.zeros(2, np.int64))

    assert delivered == [10, 30]
    assert [2, 9, GAP] in events and arb.counters["window_forced"] >= 8


# --------------------------------------------------------------------------- live source


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s


def _collect(source: Multicast, until, timeout: float = 10.0) -> dict[str, list[np.ndarray]]:
    got: dict[str, list[np.ndarray]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = source.next_batch() or {}
        for port, records in out.items():
            got.setdefault(port, []).append(records.copy())  # views: valid until the next call
        if until(got):
            break
        time.sleep(0.01)
    return got


def _count(got, port) -> int:
    return sum(len(r) for r in got.get(port, []))


def _mdp3_packets(n: int) -> list[bytes]:
    codec = SbeCodec(parse_schema(MDP3))
    packets = []
    for k in range(n):
        entry = dict(MDEntryPx={"mantissa": (100 + k) * 10**9}, MDEntrySize=k + 1,
                     SecurityID=7, RptSeq=k + 1, NumberOfOrders=1, MDPriceLevel=1,
                     MDUpdateAction=0, MDEntryType="0")  # fmt: skip
        msg = codec.encode(BOOK, {"TransactTime": 10**18 + k, "MatchEventIndicator": 128,
                                  "NoMDEntries": [entry]})  # fmt: skip
        packets.append(mdp3_packet(k + 1, 10**18 + k, [msg]))
    return packets


@needs_mdp3
def test_loopback_multicast_lines_a_and_b_feed_sbe_decode_with_the_lost_packet_reported():
    packets = _mdp3_packets(40)
    lost_a, lost_b = {5, 17, 30}, {9, 17, 31}
    port_a, port_b = _free_udp_port(), _free_udp_port()
    source = Multicast(group_a="239.255.7.1", port_a=port_a, group_b="239.255.7.2",
                       port_b=port_b, line_timeout_ms=60_000.0, stage_id="cme")  # fmt: skip
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        tx = _sender()
        for k, pkt in enumerate(packets, start=1):
            if k not in lost_a:
                tx.sendto(pkt, ("239.255.7.1", port_a))
            if k not in lost_b:
                tx.sendto(pkt, ("239.255.7.2", port_b))
        tx.sendto(b"\x01\x00", ("239.255.7.1", port_a))  # shorter than the packet header
        tx.close()
        got = _collect(source, lambda g: _count(g, "alerts") >= 1 and _count(g, "packets") >= 39
                       and _count(g, "dead_letters") >= 1)  # fmt: skip
    finally:
        source.close()

    out = np.concatenate(got["packets"])
    assert sorted(out["seq"].tolist()) == [k for k in range(1, 41) if k != 17]
    assert (out["flags"] & 1).all()
    alert = np.concatenate(got["alerts"])
    assert alert["code"].tolist() == [GAP_ALERT] and alert["text"][0] == b"gap 17..17 (1 lost)"
    assert np.concatenate(got["dead_letters"])["reason"].tolist() == [SHORT]
    m = source.metrics()
    assert m["lost"] == 1 and m["duplicates"] == 80 - 6 - 39 and m["overflow"] == 0

    # the arbitrated packets decode exactly like the packets that were not lost
    # (MDP3 RptSeq rule: an entry arriving after its successor is stale and not applied)
    decoded = run_stage(SbeDecode(schema=str(MDP3), framing="mdp3"), out)["book"]
    assert np.diff(decoded["seq"].astype(np.int64)).min() > 0
    late = set(range(1, 41)) - set(decoded["seq"].tolist()) - {17}
    arrived = out["seq"].tolist()
    # only late ones left out: each arrived after some packet with a higher sequence number
    first_after = {k: min(arrived.index(j) for j in arrived if j > k) for k in late}
    assert all(arrived.index(k) > first_after[k] for k in late), (late, arrived)
    assert decoded["price"].tolist() == [(99 + k) * 10**9 for k in decoded["seq"].tolist()]


def test_a_datagram_larger_than_a_raw_chunk_is_a_dead_letter_and_unicast_lines_work():
    port = _free_udp_port()
    source = Multicast(group_a="127.0.0.1", port_a=port, stage_id="uni")  # unicast fallback
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(mdp3_packet(1, 0, [b"x" * 5000]), ("127.0.0.1", port))
            tx.sendto(mdp3_packet(2, 0, [b"y" * 10]), ("127.0.0.1", port))
        got = _collect(source, lambda g: _count(g, "packets") + _count(g, "dead_letters") >= 2)
    finally:
        source.close()

    dead = np.concatenate(got["dead_letters"])
    assert dead["reason"].tolist() == [OVERSIZED] and dead["raw_length"][0] == 5014
    assert np.concatenate(got["packets"])["seq"].tolist() == [2]


def _rows(seqs: list[int], ts: int) -> np.ndarray:
    rows = RAW_CHUNK.empty(len(seqs))
    for i, s in enumerate(seqs):
        pkt = mdp3_packet(s, ts, [b"\x00" * 8])
        rows["data"][i, : len(pkt)] = np.frombuffer(pkt, np.uint8)
        rows["length"][i] = len(pkt)
    rows["ts_recv"] = ts
    return rows


def test_a_line_going_silent_and_coming_back_is_alerted_and_its_gap_decided_by_the_other():
    feed = PacketFeed(PacketParams(line_timeout_ms=1.0), lines=2)
    ms = 1_000_000

    def step(seqs, lines, t):
        rows = _rows(seqs, t)
        out = feed.process(rows, np.array(lines, np.int64), rows["length"].astype(np.int64), t)
        return out.get("alerts", ALERT.empty(0))

    assert len(step([1, 1], [0, 1], 0)) == 0
    # line B silent from here on; line A loses 3: decided once B is past its timeout
    assert len(step([2, 4], [0, 0], ms // 2)) == 0
    alerts = step([5], [0], 3 * ms)
    assert alerts["code"].tolist() == [GAP_ALERT, LINE_DOWN] and alerts["value"][1] == 1
    alerts = step([6, 6], [0, 1], 3 * ms + 10)

    assert alerts["code"].tolist() == [LINE_UP] and alerts["text"][0] == b"line B up"
    assert feed.arbiter.counters["lost"] == 1
