"""SBE stages in a pipeline built from config.toml: simulator -> sbe_encode -> sbe_decode -> EMA."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from hftagg.runtime.assemble import assemble
from hftagg.testing import clear_collected, collected

CONFIG = """
[runtime]
plugin_paths = ["plugins"]

[data_sources.sim]
type = "simulator"
topic_prefix = "sim"         # raw simulator streams: sim.trades, sim.book
fields = ["trades", "book"]
clock = "simulated"
rate = 0
max_events = 30000
seed = 7

[processing]
use_mock_data = false
ema_window = 20

[stages.sbe_out]
type = "sbe_encode"
schema = "sbe/hftagg-md.xml"
framing = "length2"
topics = { trades = "sim.trades", book = "sim.book", output = "raw.sbe" }

[stages.sbe_in]
type = "sbe_decode"
schema = "sbe/hftagg-md.xml"
framing = "length2"
topics = { input = "raw.sbe" }

[stages.capture]
type = "testing_sink"        # hftagg.testing: read back with collected("sbe", topic)
key = "sbe"
streams = ["sim.trades", "md.trades", "md.book", "sim.book"]

[delivery]
enabled = false
"""


def test_config_pipeline_decodes_simulator_trades_field_by_field(tmp_path: Path):
    # Arrange: a config.toml with the SBE round trip and a testing sink on four topics
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(CONFIG))
    clear_collected("sbe")
    # Act
    assembled = assemble(config, environ={})
    ids = {n.id for n in assembled.graph.core}
    pipeline = assembled.pipeline()
    pipeline.start()
    pipeline.wait(60)
    pipeline.stop()
    # Assert: every simulated trade and book update came back through SBE unchanged, and EMA ran
    assert {"sbe_out", "sbe_in", "ema"} <= ids
    sim, dec = collected("sbe", "sim.trades"), collected("sbe", "md.trades")
    assert len(sim) > 5000
    assert dec.dtype == sim.dtype
    for name in sim.dtype.names:
        np.testing.assert_array_equal(dec[name], sim[name], err_msg=name)
    np.testing.assert_array_equal(collected("sbe", "md.book"), collected("sbe", "sim.book"))
