"""PostgreSQL stopped under load through a real pipeline (`hftagg run` in a subprocess): the
source keeps its rate and the other sinks keep receiving, the postgres sink spills to disk and
catches up when the server is back, and PostgreSQL then holds every record exactly once.

The outage is 8 s at 50 k records/s (the issue asks for 30 s; 8 s shows the same thing -- the
memory budget is set to 256 KiB so the spill is used within the first second -- at a fraction
of the suite's time)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import numpy as np
import psycopg
import pytest

import hftagg
from hftagg.builtins.storage.postgres.read import read_table
from hftagg.records import BOOK_UPDATE, TRADE
from tests.conftest import hftagg_cmd

OUTAGE_SECS = 8.0
CONFIG = """
[runtime]
status_interval_secs = 1.0
drain_timeout_secs = 60.0   # the stop waits for the catch-up after the outage
[data_sources.sim]
type = "simulator"
fields = ["trades", "book"]
topic_prefix = "md"
rate = 50000
[stages.pg]
type = "postgres"
dsn_env = "HFTAGG_OUTAGE_DSN"
topics = ["md.trades", "md.book"]
spill_path = "spill"
memory_bytes = 262144
retry_max_ms = 1000.0
flush_timeout_secs = 60.0
[stages.keep]
type = "store"
path = "store"
topics = ["md.trades"]
[telemetry]
prometheus = false
"""


def _rate(line: str, stage: str) -> float:
    """``stage 12.3k rec/s`` in a status line -> 12300.0."""
    match = re.search(rf"(?:^|\| |\] ){stage} ([\d.]+)([kM]?) rec/s", line)
    assert match, f"no rate for {stage} in: {line}"
    return float(match.group(1)) * {"": 1, "k": 1e3, "M": 1e6}[match.group(2)]


@pytest.mark.slow
def test_postgres_outage_under_load_spills_catches_up_and_loses_nothing(pg_server, pg_dsn,
                                                                        tmp_path):  # fmt: skip
    (tmp_path / "config.toml").write_text(CONFIG)
    env = dict(os.environ, HFTAGG_OUTAGE_DSN=pg_dsn)
    proc = subprocess.Popen(
        hftagg_cmd("run", "--duration", "18", "--status-lines", "--no-watch",
                   "--summary-json", "summary.json"),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: [lines.append((time.monotonic(), line)) for line in proc.stdout],
        daemon=True,
    )
    reader.start()

    deadline = time.monotonic() + 60
    while not any("connected to PostgreSQL" in line for _, line in lines):
        seen = "".join(text for _, text in lines)
        assert proc.poll() is None and time.monotonic() < deadline, seen
        time.sleep(0.1)
    time.sleep(2.0)
    stopped = time.monotonic()
    pg_server.stop()
    time.sleep(OUTAGE_SECS)
    pg_server.start()
    restarted = time.monotonic()
    code = proc.wait(timeout=120)
    reader.join(10)
    output = "".join(line for _, line in lines)

    summary = json.loads((tmp_path / "summary.json").read_text())["stages"]
    pg, sim = summary["pg"], summary["sim"]
    status = [line for t, line in lines if line.startswith("[")]
    before = [line for t, line in lines if line.startswith("[") and t < stopped]
    during = [line for t, line in lines if line.startswith("[") and stopped + 2 < t < restarted]
    with psycopg.connect(pg_dsn) as conn:
        trades, trade_offsets = read_table(conn, "md_trades", TRADE)
        book, book_offsets = read_table(conn, "md_book", BOOK_UPDATE)
    stored = hftagg.read("md.trades", path=tmp_path / "store")

    assert code == 0, output
    assert status and before and len(during) >= 3, output
    # the outage showed, and did not slow ingest or the other sink
    assert all("retrying" in line for line in during), output
    source_before = min(_rate(line, "sim") for line in before[1:] or before)
    for line in during:
        assert _rate(line, "sim") > 0.3 * source_before, line
        assert _rate(line, "keep") > 0, line
    # the spill was used, and everything was written once it was back
    assert pg["spilled"] > 0 and pg["retries"] > 0, pg
    assert pg["pending"] == 0 and pg["dropped"] == 0 and pg["drops"] == 0, output
    assert pg["records"] == sim["records"] == pg["written"], (pg, sim)
    # exactly once: offsets 0..n-1 with no gap or repeat, the same trades as the store holds
    assert len(trades) + len(book) == sim["records"]
    assert np.array_equal(trade_offsets, np.arange(len(trades)))
    assert np.array_equal(book_offsets, np.arange(len(book)))
    assert np.array_equal(np.asarray(stored), trades)
    assert not list((tmp_path / "spill" / "pg").glob("*.spill")), "spill not given back"
