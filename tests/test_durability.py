"""Durability in the runtime: offsets continue across restarts, sources resume after the log,
participating sinks get exactly what they miss replayed, the others only live records.

Real pipelines (threads, rings, the simulator, a durable file sink from tests/plugin_files) in
this process; the kill -9 crash test is tests/test_crash.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.storage.wal.log import WriteAheadLog
from hftagg.errors import ConfigError
from hftagg.records.catalog import BOOK_UPDATE, TRADE
from hftagg.runtime.assemble import assemble
from hftagg.testing import clear_collected, collected

HERE = Path(__file__).parent
TOPICS = ("md.trades", "md.book")

CONFIG = """
[runtime]
plugin_paths = ["plugins"]
[delivery]
enabled = false
[data_sources.sim]
type = "simulator"
rate = 0
batch_records = 512
clock = "simulated"
instruments = 4
max_events = {events}
[stages.keep]
type = "durable_files"
path = "kept"
topics = ["md.trades", "md.book"]
[stages.watch]
type = "testing_sink"
key = "watch"
streams = ["md.trades"]
[durability]
wal = true
path = "wal"
fsync = "{fsync}"
segment_bytes = 65536
"""


def write_config(folder: Path, events: int, fsync: str = "interval_ms") -> Path:
    plugins = folder / "plugins"
    plugins.mkdir(exist_ok=True)
    shutil.copy(HERE / "plugin_files" / "durable_files.py", plugins / "durable_files.py")
    path = folder / "config.toml"
    path.write_text(CONFIG.format(events=events, fsync=fsync))
    return path


def run_once(config: Path) -> dict:
    cwd = os.getcwd()
    os.chdir(config.parent)  # the sink's path is relative to the working folder
    try:
        pipeline = assemble(config).pipeline()
        pipeline.start()
        assert pipeline.wait(timeout=60), "the bounded simulator did not finish"
        return pipeline.stop()
    finally:
        os.chdir(cwd)


def kept(folder: Path, topic: str) -> np.ndarray:
    dtype = (TRADE if topic == "md.trades" else BOOK_UPDATE).dtype
    return np.fromfile(folder / "kept" / f"{topic}.bin", dtype)


def same(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal record for record, field by field (padding bytes aside)."""
    return len(got) == len(want) and all(
        np.array_equal(got[name], want[name], equal_nan=want[name].dtype.kind == "f")
        for name in want.dtype.names
    )


def reference(events: int) -> dict[str, np.ndarray]:
    """What one uninterrupted run of the same simulator gives."""
    from hftagg.builtins.sources.simulator.stages import Simulator

    sim = Simulator(rate=0, batch_records=512, clock="simulated", instruments=4, max_events=events)
    sim.open(None)
    out = {"md.trades": [], "md.book": []}
    while not sim.exhausted:
        batch = sim.next_batch()
        out["md.trades"].append(batch["trades"].copy())
        out["md.book"].append(batch["book"].copy())
    return {t: np.concatenate(b) for t, b in out.items()}


@pytest.fixture
def folder(tmp_path):
    clear_collected("watch")
    yield tmp_path
    clear_collected("watch")


def test_restart_continues_offsets_and_the_simulator_after_the_log(folder):
    config = write_config(folder, events=5_000)
    first = run_once(config)
    assert first["durability"]["logged_batches"] > 0 and first["durability"]["replayed"] == 0

    config.write_text(config.read_text().replace("max_events = 5000", "max_events = 12000"))
    second = run_once(config)

    assert second["durability"]["resumed"] == ["sim"]
    assert second["durability"]["replayed"] == 0  # the sink held everything
    expected = reference(12_000)
    for topic in TOPICS:
        assert same(kept(folder, topic), expected[topic]), topic


def test_sink_that_lost_its_tail_gets_exactly_the_missing_records_replayed(folder):
    config = write_config(folder, events=6_000)
    run_once(config)
    trades = folder / "kept" / "md.trades.bin"
    held = trades.stat().st_size // TRADE.itemsize
    wal = WriteAheadLog(folder / "wal")
    wal.open()
    oldest = wal.first_offset("md.trades")  # segments below were deleted: the sink had them
    wal.close()
    keep = (oldest + held) // 2
    assert oldest < keep < held
    with open(trades, "r+b") as f:  # as if its last writes never reached the disk
        f.truncate(keep * TRADE.itemsize)
    clear_collected("watch")

    summary = run_once(config)  # max_events reached: the source gives nothing new

    assert summary["durability"]["replayed"] == held - keep
    expected = reference(6_000)
    for topic in TOPICS:
        assert same(kept(folder, topic), expected[topic]), topic
    # the testing sink does not take part: it gets no replayed record
    with pytest.raises(KeyError, match="has no topic 'md.trades'"):
        collected("watch", "md.trades")


def test_torn_log_tail_is_cut_and_the_stream_continues_after_what_the_sink_holds(folder, caplog):
    config = write_config(folder, events=4_000, fsync="every_batch")
    run_once(config)
    wal = WriteAheadLog(folder / "wal")
    wal.open()  # (starts an empty segment, set aside by the cut below)
    stream = wal.streams["md.trades"].stream_id
    segment = next(s for s in reversed(wal._segments) if stream in s.starts)
    frames = segment.table()
    position = int(frames[frames[:, 1] == stream][-1, 0])
    wal.close()
    with open(segment.path, "r+b") as f:  # tear the last trades frame
        f.truncate(position + 60)
    config.write_text(config.read_text().replace("max_events = 4000", "max_events = 9000"))

    summary = run_once(config)

    assert summary["durability"]["cut"] and "torn frame" in summary["durability"]["cut"]
    expected = reference(9_000)
    for topic in TOPICS:  # the sink held the cut records: nothing lost, nothing twice
        got = kept(folder, topic)
        assert same(got, expected[topic]), topic


def test_durability_keys_are_checked_with_the_key_value_and_choices(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[durability]\nwal = true\nfsync = "always"\ninterval = 5\n')
    with pytest.raises(ConfigError) as err:
        assemble(path)
    text = str(err.value)
    assert "durability.fsync = 'always'" in text and "every_batch" in text
    assert "durability.interval" in text


def test_without_a_participating_sink_the_log_keeps_only_the_active_segment(folder):
    config = write_config(folder, events=20_000)
    config.write_text(config.read_text().replace('type = "durable_files"', 'type = "testing_sink"')
                      .replace('path = "kept"\ntopics = ["md.trades", "md.book"]',
                               'streams = ["md.book"]'))  # fmt: skip
    summary = run_once(config)
    assert summary["durability"]["participants"] == []
    assert summary["durability"]["logged_bytes"] > 4 * 65536  # several segments were written
    assert len(list((folder / "wal").glob("*.wal"))) == 1  # and deleted at the last release


DBN = HERE.parents[1] / "shared" / "data" / "dbn"


@pytest.mark.skipif(not DBN.exists(), reason=f"shared DBN test data not found at {DBN}")
def test_dbn_replay_resumes_at_the_record_after_its_last_logged_batch():
    pytest.importorskip("zstandard")
    from hftagg.builtins.protocols.dbn.replay import DbnReplay
    from hftagg.stages import SourcePosition, StageContext

    def drain(source, limit=None):
        out, positions = [], []
        while not source.exhausted and (limit is None or len(out) < limit):
            batch = source.next_batch()
            if batch:
                out.append({p: b.copy() for p, b in batch.items()})
                positions.append(source.position())
        return out, positions

    files = str(DBN / "test_data.*.v3.dbn.zst")  # several files: resuming crosses them
    whole = DbnReplay(path=files, batch_records=1)
    whole.open(StageContext())
    expected, _ = drain(whole)
    first = DbnReplay(path=files, batch_records=1)
    first.open(StageContext())
    head, positions = drain(first, limit=len(expected) // 2)

    second = DbnReplay(path=files, batch_records=1)
    second.open(StageContext())
    second.resume(SourcePosition({}, {}, positions[-1]))
    tail, _ = drain(second)

    assert len(expected) > 10 and head and tail
    got = head + tail
    assert [sorted(b) for b in got] == [sorted(b) for b in expected]
    for mine, theirs in zip(got, expected, strict=True):
        for port in theirs:
            assert same(mine[port], theirs[port]), port


@pytest.mark.skipif(not DBN.exists(), reason=f"shared DBN test data not found at {DBN}")
def test_dbn_replay_run_again_with_the_log_gives_nothing_twice(folder):
    pytest.importorskip("zstandard")
    plugins = folder / "plugins"
    plugins.mkdir()
    shutil.copy(HERE / "plugin_files" / "durable_files.py", plugins / "durable_files.py")
    config = folder / "config.toml"
    config.write_text(
        f"""
[runtime]
plugin_paths = ["plugins"]
[delivery]
enabled = false
[data_sources.feed]
type = "dbn_replay"
path = "{DBN / "test_data.*.v3.dbn.zst"}"
[stages.keep]
type = "durable_files"
path = "kept"
topics = ["md.trades", "md.quotes"]
[durability]
wal = true
"""
    )
    run_once(config)
    once = {t: kept(folder, t) for t in ("md.trades",)}
    quotes = (folder / "kept" / "md.quotes.bin").stat().st_size

    summary = run_once(config)

    assert summary["durability"]["resumed"] == ["feed"]
    assert summary["stages"]["feed"]["records"] == 0  # it resumed after its last record
    assert same(kept(folder, "md.trades"), once["md.trades"]) and len(once["md.trades"]) > 0
    assert (folder / "kept" / "md.quotes.bin").stat().st_size == quotes > 0


DERIVED = """
[runtime]
plugin_paths = ["plugins"]
[delivery]
enabled = false
[processing]
ema_window = 5
[data_sources.sim]
type = "simulator"
rate = 0
batch_records = 256
clock = "simulated"
instruments = 4
max_events = {events}
[stages.keep]
type = "durable_files"
path = "kept"
topics = ["md.trades", "ind.ema"]
[durability]
wal = true
path = "wal"
segment_bytes = 65536
checkpoint_interval_secs = 0.05
"""


def test_a_sink_of_a_derived_topic_gets_it_exactly_once_across_restarts(tmp_path):
    from hftagg.records.catalog import INDICATOR

    def run(folder: Path, events: int) -> dict:
        config = write_config(folder, events)
        config.write_text(DERIVED.format(events=events))
        return run_once(config)

    whole = tmp_path / "whole"
    whole.mkdir()
    run(whole, 30_000)
    parts = tmp_path / "parts"
    parts.mkdir()
    first = run(parts, 12_000)
    second = run(parts, 30_000)

    assert first["durability"]["checkpoints_taken"] >= 1
    assert second["durability"]["restored"] == ["ema"]  # the core continued from its state
    ema = np.fromfile(parts / "kept" / "ind.ema.bin", INDICATOR.dtype)
    want = np.fromfile(whole / "kept" / "ind.ema.bin", INDICATOR.dtype)
    assert len(ema) > 1000 and same(ema, want)
    assert same(kept(parts, "md.trades"), kept(whole, "md.trades"))
    # the log keeps only what the checkpoint and the sink still need
    wal = WriteAheadLog(parts / "wal")
    wal.open()
    assert wal.first_offset("md.trades") > 0
    wal.close()
