"""`hftagg run` in a subprocess: two loopback multicast lines arbitrated and decoded by
`sbe_decode` into the default pipeline, counters read back from the run summary."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe.mdp3 import TRADE_SUMMARY, mdp3_packet

from .conftest import hftagg_cmd

MDP3 = Path(__file__).parents[1].parent / "shared" / "data" / "sbe" / "cme-mdp3-v9.xml"
pytestmark = [
    pytest.mark.slow,  # runs hftagg in a subprocess
    pytest.mark.skipif(not MDP3.is_file(), reason=f"shared SBE test data absent: {MDP3}"),
]

CONFIG = """
[runtime]
plugin_paths = []

[data_sources.cme]
type = "multicast"
group_a = "239.255.9.1"
port_a = {port_a}
group_b = "239.255.9.2"
port_b = {port_b}
interface = "127.0.0.1"
line_timeout_ms = 60000
topic_prefix = "cme"

[stages.cme_decode]
type = "sbe_decode"
schema = "{schema}"
framing = "mdp3"
topics = {{ input = "cme.packets" }}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _packets(n: int) -> list[bytes]:
    codec = SbeCodec(parse_schema(MDP3))
    out = []
    for k in range(1, n + 1):
        fill = dict(MDEntryPx={"mantissa": (100 + k) * 10**9}, MDEntrySize=k, SecurityID=7,
                    RptSeq=k, NumberOfOrders=1, AggressorSide=1, MDUpdateAction=0,
                    MDTradeEntryID=k)  # fmt: skip
        msg = codec.encode(TRADE_SUMMARY, {"TransactTime": 10**18 + k, "MatchEventIndicator": 1,
                                           "NoMDEntries": [fill], "NoOrderIDEntries": []})  # fmt: skip
        out.append(mdp3_packet(k, 10**18 + k, [msg]))
    return out


def test_hftagg_run_arbitrates_two_multicast_lines_and_decodes_the_trades(tmp_path):
    port_a, port_b = _free_port(), _free_port()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(port_a=port_a, port_b=port_b, schema=MDP3))
    summary = tmp_path / "s.json"
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--duration", "8", "--no-watch",
                   "--summary-json", str(summary)),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("hftagg: running"), line + proc.stderr.read()
        time.sleep(1.0)  # the source has joined both groups once the pipeline runs
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        for k, pkt in enumerate(_packets(300), start=1):
            if k % 30 != 0:  # line A loses every 30th
                tx.sendto(pkt, ("239.255.9.1", port_a))
            if k % 45 != 0:  # line B every 45th: both lose 90, 180, 270
                tx.sendto(pkt, ("239.255.9.2", port_b))
        tx.close()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    stages = json.loads(summary.read_text())["stages"]
    cme, decode = stages["cme"], stages["cme_decode"]
    assert cme["delivered"] == 297 and cme["lost"] == 3 and cme["gaps"] == 3
    assert cme["duplicates"] == 600 - 10 - 6 - 297 and cme["overflow"] == 0
    assert decode["records_in"] == 297
    assert stages["ema"]["records_in"] == 297  # one trade per packet, into the default EMA
