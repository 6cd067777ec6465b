"""pcap replay: captures written with dpkt (classic pcap and pcapng) of lines A and B replay
through the same arbitration as the live multicast source."""

from __future__ import annotations

import socket

import dpkt
import numpy as np
import pytest

from hftagg.builtins.sources.multicast.packets import GAP_ALERT
from hftagg.builtins.sources.pcap.capture import CaptureError, open_capture
from hftagg.builtins.sources.pcap.source import Pcap
from hftagg.instruments import InstrumentRegistry
from hftagg.stages import StageContext

GROUP_A, GROUP_B, PORT_A, PORT_B = "239.1.1.1", "239.1.1.2", 14310, 15310


def _frame(payload: bytes, group: str, port: int, vlan: bool = False, proto=dpkt.ip.IP_PROTO_UDP):
    udp = dpkt.udp.UDP(sport=5000, dport=port, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton(group), p=proto,
                    data=udp)  # fmt: skip
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(dst=b"\x01\x00\x5e\x01\x01\x01", src=b"\x02" * 6, data=ip,
                                 type=dpkt.ethernet.ETH_TYPE_IP)  # fmt: skip
    raw = bytes(eth)
    if vlan:  # an 802.1Q tag before the IPv4 ethertype
        raw = raw[:12] + b"\x81\x00\x00\x64" + raw[12:]
    return raw


def _packet(seq: int) -> bytes:
    return seq.to_bytes(4, "little") + (10**18 + seq).to_bytes(8, "little") + b"m" * (seq % 50)


def _write(path, ng: bool, lost_a=(), lost_b=()) -> list[bytes]:
    """A capture of both lines (B 2 packets behind A) plus traffic that is not the feed."""
    sent = {}
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f) if ng else dpkt.pcap.Writer(f, nano=True)
        t = 1_700_000_000.0
        for k in range(1, 61):
            sent[k] = _packet(k)
            if k not in lost_a:
                w.writepkt(_frame(sent[k], GROUP_A, PORT_A, vlan=k % 2 == 0), ts=t + k * 1e-3)
            w.writepkt(_frame(b"noise", GROUP_A, 9999), ts=t + k * 1e-3)
            if k > 2 and k - 2 not in lost_b:
                w.writepkt(_frame(sent[k - 2], GROUP_B, PORT_B), ts=t + k * 1e-3 + 1e-4)
        for k in (59, 60):
            if k not in lost_b:
                w.writepkt(_frame(sent[k], GROUP_B, PORT_B), ts=t + 0.07)
    return sent


def _replay(path, **params) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    source = Pcap(path=str(path), group_a=GROUP_A, port_a=PORT_A, group_b=GROUP_B,
                  port_b=PORT_B, batch_packets=7, stage_id="cap", **params)  # fmt: skip
    source.open(StageContext(instruments=InstrumentRegistry()))
    got: dict[str, list] = {}
    for _ in range(1000):
        for port, records in (source.next_batch() or {}).items():
            got.setdefault(port, []).append(records.copy())  # views: valid until the next call
        if source.exhausted:
            break
    return {k: np.concatenate(v) for k, v in got.items()}, source.metrics()


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_a_capture_of_both_lines_replays_equal_to_the_packets_sent_with_the_gap_reported(
    tmp_path, ng
):
    path = tmp_path / ("lines.pcapng" if ng else "lines.pcap")
    sent = _write(path, ng, lost_a={4, 20, 21, 33}, lost_b={9, 20, 21, 40})

    got, m = _replay(path)

    packets = got["packets"]
    payloads = {int(p["seq"]): bytes(p["data"][: p["length"]]) for p in packets}
    assert payloads == {k: v for k, v in sent.items() if k not in (20, 21)}
    assert len(packets) == 58  # each once: duplicates dropped
    assert got["alerts"]["code"].tolist() == [GAP_ALERT]
    assert got["alerts"]["text"][0] == b"gap 20..21 (2 lost)"
    # capture time in ns (dpkt writes a float timestamp: within a microsecond)
    assert abs(int(packets["ts_recv"][0]) - 1_700_000_000_001_000_000) < 1_000
    assert m["skipped"] == 60 and m["lost"] == 2 and m["duplicates"] == 60 * 2 - 8 - 58


def test_a_file_that_is_no_capture_is_refused_naming_it(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"this is not a packet capture at all")

    with pytest.raises(CaptureError, match="notes.txt.*neither pcap"):
        open_capture(bad)
