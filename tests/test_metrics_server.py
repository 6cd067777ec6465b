"""The metrics HTTP server under idle, abandoned and excess connections (real sockets)."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
import urllib.request

import pytest

from hftagg.plugins.manager import load_plugins
from hftagg.records import TRADE
from hftagg.runtime.graph import graph_from_stages
from hftagg.runtime.pipeline import Pipeline
from hftagg.telemetry.prometheus import MetricsServer
from hftagg.testing import TestingSink, TestingSource


def make_server(idle_timeout_secs: float) -> MetricsServer:
    host = load_plugins([], entry_points=False)
    stages = [TestingSource([TRADE.empty(3)]), TestingSink([], topic="test.source")]
    pipeline = Pipeline(graph_from_stages(stages, host), host=host)
    return MetricsServer(
        pipeline, "127.0.0.1:0", max_connections=8, idle_timeout_secs=idle_timeout_secs
    ).start()


@pytest.fixture
def server():
    server = make_server(idle_timeout_secs=0.5)
    yield server
    server.stop()


def connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return response.read().decode()


def test_connections_beyond_the_cap_get_503_and_no_thread():
    server = make_server(idle_timeout_secs=60)  # nobody frees a slot during the test
    try:
        threads_before = threading.active_count()
        # Act: 30 clients connect and send nothing
        clients = [connect(server.address) for _ in range(30)]
        refused, waiting = [], set(clients)
        deadline = time.monotonic() + 30
        while len(refused) < 22 and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.1)
            for sock in ready:
                refused.append(sock.recv(1024))
                waiting.discard(sock)
        time.sleep(0.2)  # (a 23rd answer would show here)
        refused += [sock.recv(1024) for sock in select.select(list(waiting), [], [], 0)[0]]
        threads_while_idle = threading.active_count()
        # Assert: 8 held (one thread each), the other 22 told to retry and closed
        assert len(refused) == 22
        assert all(a.startswith(b"HTTP/1.0 503 Service Unavailable") for a in refused)
        assert threads_while_idle - threads_before == 8
        assert server._httpd.refused == 22
        for sock in clients:
            sock.close()
    finally:
        server.stop()


def test_idle_connections_are_closed_after_the_timeout(server):
    threads_before = threading.active_count()
    idle = [connect(server.address) for _ in range(5)]
    for sock in idle:
        sock.settimeout(30)
        assert sock.recv(1024) == b""  # closed by the server (a hang would raise here)
        sock.close()
    deadline = time.monotonic() + 30
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before
    assert "hftagg_uptime_seconds" in scrape(server.address)  # still serving


def test_clients_that_hang_up_early_print_no_traceback(server, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="hftagg.telemetry")
    for _ in range(5):
        sock = connect(server.address)
        sock.sendall(b"GET /metrics HTTP/1.0\r\n")  # an unfinished request, then gone
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST: the server's read fails with ConnectionResetError
    sock = connect(server.address)
    sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    sock.close()  # gone before the answer is written
    time.sleep(1.0)
    assert "hftagg_uptime_seconds" in scrape(server.address)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_publisher_counters_are_served(address):
    from hftagg.builtins.delivery.pynng.publisher import Publisher, PublisherParams
    from hftagg.records import INDICATOR

    host = load_plugins([], entry_points=False)
    source = TestingSource([INDICATOR.empty(5)], schema="indicator")
    publisher = Publisher(PublisherParams(target=address, pattern="push", topics=["test.source"]))
    pipeline = Pipeline(graph_from_stages([source, publisher], host), host=host)
    pipeline.open()
    server = MetricsServer(pipeline, "127.0.0.1:0").start()
    try:
        (source_node,) = pipeline.graph.sources
        (sink_node,) = pipeline.graph.sinks
        pipeline.pump_source(source_node)
        pipeline.pump_sink(sink_node)  # one frame, queued: nobody pulls
        text = scrape(server.address)
    finally:
        server.stop()
        publisher.close()
    assert 'hftagg_delivery_frames_total{stage="publisher",state="sent"} 1' in text
    assert 'hftagg_delivery_frames_total{stage="publisher",state="lost"} 0' in text
    assert 'hftagg_delivery_frames_queued{stage="publisher"} 1' in text
    assert 'hftagg_delivery_peers{stage="publisher"} 0' in text
    assert 'hftagg_sink_dropped_records_total{stage="publisher"} 0' in text
