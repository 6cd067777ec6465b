"""A venue adapter in a real pipeline: ``hftagg run`` (subprocess) with the ``binance`` source
pointed at local WebSocket and REST servers, its verified book read by the ``book`` stage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_binance import FakeBinance, RestServer, stream
from tests.ws_server import WsServer


@pytest.mark.slow
def test_binance_book_through_hftagg_run(tmp_path):
    venue = FakeBinance()
    session = stream(venue, 3000, lose={1500}, hold={100: 1, 1600: 2})
    with RestServer(venue) as rest, WsServer(session) as ws:
        config = tmp_path / "config.toml"
        config.write_text(f"""
[data_sources.binance]
type = "binance"
endpoint = "{ws.url}"
rest_endpoint = "{rest.url}"
symbols = ["BTCUSDT"]
fields = ["trades", "book", "alerts"]

[stages.book]
type = "book"
""")
        summary = tmp_path / "summary.json"
        run = subprocess.run(
            [sys.executable, "-m", "hftagg", "-c", str(config), "run", "--duration", "6",
             "--quiet", "--summary-json", str(summary)],
            capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    stages = json.loads(summary.read_text())["stages"]
    source, book = stages["binance"], stages["book"]
    assert source["messages"] == 3000  # one event lost, plus the subscription answer
    assert source["book_gaps"] == 1
    assert source["book_syncs"] == 2 and source["snapshot_failures"] == 0
    assert book["records_in"] == source["records_decoded"] > 1000
    assert book["failures"] == 0 and source["failures"] == 0
