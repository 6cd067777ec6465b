"""Rings sized in bytes (``runtime.ring_bytes``), none for unread topics, the old key still read."""

from __future__ import annotations

from pathlib import Path

from hftagg.records.catalog import RAW_CHUNK
from hftagg.runtime.assemble import assemble
from hftagg.runtime.status import format_ring_memory

CONFIG = """
[runtime]
plugin_paths = []
max_batch = 256
{runtime}

[data_sources.sim]
type = "simulator"
rate = 0
max_events = 20000

[stages.encode]
type = "sbe_encode"
topics = {{ trades = "md.trades", book = "md.book", output = "raw.sbe" }}

[stages.decode]
type = "sbe_decode"
topics = {{ input = "raw.sbe", trades = "dec.trades", book = "dec.book", mbp10 = "dec.mbp10", dead_letters = "dead.sbe" }}

[delivery]
enabled = false

[telemetry]
prometheus = false
"""


def pipeline_for(tmp_path: Path, runtime: str):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(runtime=runtime))
    assembled = assemble(config, environ={})
    return assembled, assembled.pipeline()


def test_rings_hold_what_fits_in_ring_bytes_and_unread_topics_get_none(tmp_path):
    assembled, pipeline = pipeline_for(tmp_path, "ring_bytes = 65536")
    memory = pipeline.ring_memory()
    rings = memory["rings"]
    # read by the ema and the encoder: 65536 B / 48 B = 1365 records -> 1024, a power of two
    assert rings["md.trades"] == {"records": 1024, "record_bytes": 48, "bytes": 1024 * 48}
    # 4 KiB raw chunks between two core stages: at least max_batch, not 65536 of them (256 MiB)
    assert rings["raw.sbe"]["record_bytes"] == RAW_CHUNK.dtype.itemsize
    assert rings["raw.sbe"]["records"] == 256
    # nobody reads the decoder's outputs, the quotes or the dead letters: no ring, no memory
    assert memory["unread_topics"] == sorted(
        ["md.quotes", "dec.trades", "dec.book", "dec.mbp10", "dead.sbe", "ind.ema"]
    )
    assert set(rings) == {"md.trades", "md.book", "raw.sbe"}
    assert memory["total_bytes"] == sum(r["bytes"] for r in rings.values())
    assert assembled.spec.notes == []
    lines = format_ring_memory(memory)
    assert lines[0] == f"ring memory: {memory['total_bytes'] / 2**20:.1f} MiB in 3 rings"
    assert "no ring (nobody reads them" in lines[-1] and "dec.trades" in lines[-1]


def test_records_written_to_a_topic_nobody_reads_are_counted_not_kept(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[runtime]\nplugin_paths = []\nring_bytes = 65536\n[data_sources.sim]\ntype = "
        '"simulator"\nrate = 0\nmax_events = 20000\n[delivery]\nenabled = false\n'
        "[telemetry]\nprometheus = false\n"
    )
    pipeline = assemble(config, environ={}).pipeline()
    assert set(pipeline.rings) == {"md.trades"}  # the EMA's input; book and quotes: nobody
    pipeline.start()
    assert pipeline.wait(60)
    summary = pipeline.stop()
    assert summary["stages"]["sim"]["records"] > summary["stages"]["ema"]["records"] > 0
    assert summary["stages"]["ema"]["records_out"] == summary["stages"]["ema"]["records"]


def test_the_deprecated_ring_capacity_still_counts_records_and_says_so(tmp_path):
    assembled, pipeline = pipeline_for(tmp_path, "ring_capacity = 2048")
    assert pipeline.ring_memory()["rings"]["md.trades"]["records"] == 2048
    assert pipeline.ring_memory()["rings"]["raw.sbe"]["records"] == 2048
    (note,) = assembled.spec.notes
    assert note.startswith(
        f"{tmp_path / 'config.toml'}: runtime.ring_capacity = 2048 is deprecated"
    )
    assert "use runtime.ring_bytes" in note


def test_ring_capacity_set_beside_ring_bytes_wins_and_the_note_says_so(tmp_path):
    assembled, pipeline = pipeline_for(tmp_path, "ring_bytes = 65536\nring_capacity = 2048")
    assert pipeline.ring_memory()["rings"]["md.trades"]["records"] == 2048
    (note,) = assembled.spec.notes
    assert note.endswith("(it still applies until then; it overrides runtime.ring_bytes = 65536)")
