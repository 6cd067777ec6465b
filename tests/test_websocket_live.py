"""Issue 13 item 5: WebSocket sources added to and removed from a running ``hftagg run`` (a
real subprocess watching its config.toml) start and stop without loss in the other sources."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.storage.store.reader import read
from tests.conftest import hftagg_cmd
from tests.test_live_reload import _Lines
from tests.ws_server import WsServer

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CONFIG = """\
[runtime]
max_batch = 512
status_interval_secs = 0.2

[data_sources.sim]
type = "simulator"
topic_prefix = "sim"
fields = ["trades"]
instruments = 4
rate = 5000
seed = 3

[data_sources.ws1]
type = "websocket"
topic_prefix = "md"             # md.trades also feeds the default ema stage
endpoint = "{url}/ws1"
subscribe = ['{{"method":"SUBSCRIBE","params":["all@trade"],"id":1}}']
venue = "binance"
mapping = {{ symbol = "s", price = "p", size = "q", side = "m", ts_event = "T" }}
match = {{ e = "trade" }}
side_values = {{ true = "A", false = "B" }}
{extra}
[stages.store]
type = "store"
path = "./storage"
topics = ["sim.trades", "md.trades"]

[delivery]
enabled = false

[telemetry]
prometheus = false
"""
WS2 = """
[data_sources.ws2]
type = "websocket"
topic_prefix = "ws2"
endpoint = "{url}/ws2"
venue = "binance"
mapping = {{ symbol = "s", price = "p", size = "q", ts_event = "T" }}
"""


def write_whole(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def stream_trades(ws, server) -> None:
    """Trades until the connection closes; the price of the k-th is k (to check for loss)."""
    path = ws.request.path
    sent = server.sent.setdefault(path, [])
    k = 0
    while True:
        k += 1
        message = {"e": "trade", "s": SYMBOLS[k % 3], "p": f"{k}", "q": "0.5",
                   "T": 1_700_000_000_000 + k, "m": k % 2 == 0}  # fmt: skip
        try:
            await ws.send(json.dumps(message))
        except Exception:
            return
        sent.append(k)
        if k % 20 == 0:
            await asyncio.sleep(0.01)


@pytest.mark.slow
def test_websocket_source_added_and_removed_while_running_loses_nothing_in_the_others(tmp_path):
    server = WsServer(stream_trades)
    server.sent = {}
    server.start()
    config = tmp_path / "config.toml"
    url = f"ws://127.0.0.1:{server.port}"
    write_whole(config, CONFIG.format(url=url, extra=""))
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--status-interval", "0.2",
                   "--summary-json", str(tmp_path / "summary.json")),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    try:
        out.wait(lambda x: x.startswith("[") and "ws1 " in x, "a first status line", timeout=90)
        for _ in range(2):  # add ws2, then remove it, twice
            at = len(err.lines)
            write_whole(config, CONFIG.format(url=url, extra=WS2.format(url=url)))
            err.wait(lambda x: "applied:" in x and "ws2: added" in x, "ws2 added", at, 60)
            before = len(server.sent.get("/ws2", []))
            deadline = time.monotonic() + 30
            while len(server.sent.get("/ws2", [])) < before + 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            at = len(err.lines)
            write_whole(config, CONFIG.format(url=url, extra=""))
            err.wait(lambda x: "applied:" in x and "ws2: removed" in x, "ws2 removed", at, 60)
            time.sleep(0.3)
        mark = len(server.sent["/ws1"])  # sent to ws1 before the stop began: all must be kept
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "\n".join(err.lines[-30:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    assert not [x for x in err.lines if "Traceback" in x], err.lines
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["ws2"]["state"] == "removed"
    assert summary["stages"]["ws2"]["records"] > 0
    # ws1 kept one connection throughout, and every trade it was sent is stored, once, in order
    assert server.connections == 3  # ws1 once, ws2 twice
    ws1 = read("md.trades", path=tmp_path / "storage")
    ws1 = np.asarray(ws1)
    prices = (ws1["price"] // 10**9).tolist()
    sent = server.sent["/ws1"]
    assert prices == sent[: len(prices)]  # in order, none twice, none missing...
    assert len(prices) >= mark  # ...through both changes (what came during the stop may not)
    for iid in np.unique(ws1["instrument_id"]):
        seq = ws1["seq"][ws1["instrument_id"] == iid]
        assert (np.diff(seq.astype(np.int64)) == 1).all() and seq[0] == 1
    sim = read("sim.trades", path=tmp_path / "storage")
    sim = np.asarray(sim)
    assert len(sim) > 0
    for iid in np.unique(sim["instrument_id"]):
        seq = sim["seq"][sim["instrument_id"] == iid].astype(np.int64)
        assert (np.diff(seq) == 1).all(), f"sim instrument {iid}: a gap in seq"
