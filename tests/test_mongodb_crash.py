"""Crash test for the ``mongodb`` sink: ``hftagg run`` with the write-ahead log and the sink
(against the local wire-protocol server), killed with SIGKILL at random moments and restarted;
afterwards MongoDB holds every trade and book update exactly once -- what one uninterrupted run
of the same simulator gives, offsets 0..n-1 each once -- and counted what a replay resent as
``already_held`` instead of storing it twice.

The simulator runs on its simulated clock and resumes from the log (as in ``test_crash.py``), so
the reference is a fresh simulator drawing the same number of events in this process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.storage.mongodb.documents import records_from_documents
from hftagg.records.catalog import BOOK_UPDATE, TRADE

from .mongo_fake import MongoFake

KILLS = 3
TOPICS = {"md.trades": ("trades", TRADE), "md.book": ("book", BOOK_UPDATE)}
URI_ENV = "HFTAGG_CRASH_MONGODB_URI"

CONFIG = """
[runtime]
status_interval_secs = 0.25
drain_timeout_secs = {flush}
[telemetry]
prometheus = false
[delivery]
enabled = false
[data_sources.sim]
type = "simulator"
fields = ["trades", "book"]
rate = 20000
instruments = 8
clock = "simulated"
seed = 5
[stages.mongo]
type = "mongodb"
uri_env = "HFTAGG_CRASH_MONGODB_URI"
database = "crash"
topics = ["md.trades", "md.book"]
flush_timeout_secs = {flush}
[durability]
wal = true
path = "wal"
fsync = "interval_ms"
interval_ms = 10
segment_bytes = 1048576
"""


def start(folder: Path, uri: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hftagg", "run", "--config", "config.toml", "--no-watch",
         "--quiet", *args],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, URI_ENV: uri},
    )  # fmt: skip


def run_and_kill(folder: Path, uri: str, rng: random.Random) -> str:
    proc = start(folder, uri)
    opened = threading.Event()
    lines: list[str] = []

    def drain() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "write-ahead log" in line:
                opened.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert opened.wait(120), "".join(lines)
    delay = rng.uniform(0.2, 1.5)
    time.sleep(delay)
    assert proc.poll() is None, f"hftagg run ended before it was killed:\n{''.join(lines)}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    proc.stdout.close()
    return f"{delay:.2f}s"


def reference(events: int) -> dict[str, np.ndarray]:
    from hftagg.builtins.sources.simulator.stages import Simulator

    sim = Simulator(rate=20_000, instruments=8, clock="simulated", seed=5)
    sim.open(None)
    out: dict[str, list[np.ndarray]] = {port: [] for port, _ in TOPICS.values()}
    for first in range(0, events, 4096):
        for port, batch in sim._draw(min(4096, events - first))[0].items():
            if port in out:
                out[port].append(batch.copy())
    return {topic: np.concatenate(out[port]) for topic, (port, _) in TOPICS.items()}


def in_stream_order(records: np.ndarray) -> np.ndarray:
    return records[np.lexsort((records["seq"], records["instrument_id"]))]


@pytest.mark.slow
def test_kill_9_with_the_log_leaves_mongodb_holding_each_record_once(tmp_path):
    (tmp_path / "config.toml").write_text(CONFIG.format(flush=10.0))
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    with MongoFake() as server:
        moments = [run_and_kill(tmp_path, server.uri, rng) for _ in range(KILLS)]
        # the last run stops only once MongoDB took everything (a loaded machine may lag)
        (tmp_path / "config.toml").write_text(CONFIG.format(flush=120.0))
        final = start(tmp_path, server.uri, "--duration", "1", "--summary-json", "s.json")
        output, _ = final.communicate(timeout=180)
        assert final.returncode == 0, output
        docs = {t: server.documents("crash", t.replace(".", "_")) for t in TOPICS}
    held = {}
    for topic, (_, schema) in TOPICS.items():
        offsets = np.sort(np.array([d["offset"] for d in docs[topic]], dtype=np.int64))
        assert np.array_equal(offsets, np.arange(len(offsets))), f"{topic}: offsets not 0..n-1 once"
        held[topic] = in_stream_order(records_from_documents(docs[topic], schema))
    events = sum(len(r) for r in held.values())
    want = {t: in_stream_order(r) for t, r in reference(events).items()}
    summary = json.loads((tmp_path / "s.json").read_text())["stages"]["mongo"]
    print(f"\nkilled at {moments}; {events} events; last run: {summary}")
    for topic in TOPICS:
        got, expected = held[topic], want[topic]
        assert len(got) == len(expected), f"{topic}: {len(got)} held, {len(expected)} wanted"
        for name in expected.dtype.names:
            assert np.array_equal(got[name], expected[name]), f"{topic}.{name} differs"
    assert summary["pending"] == 0 and summary["dropped"] == 0, summary
