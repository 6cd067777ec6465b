"""SBE stages in a pipeline built from config.toml: simulator -> sbe_encode -> sbe_decode -> EMA."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from hftagg.runtime.assemble import assemble

CAPTURE_PLUGIN = """
import numpy as np
from hftagg import hookimpl
from hftagg.stages import Params, Port, SinkStage


class CaptureParams(Params):
    path: str


class Capture(SinkStage):
    type_name = "npy_capture"
    Params = CaptureParams
    inputs = {"input": Port(None, "md.trades")}

    def open(self, ctx):
        self.parts = []

    def write(self, batch, port, offset):
        self.parts.append(batch.copy())

    def close(self):
        if self.parts:
            np.save(self.params.path, np.concatenate(self.parts))


@hookimpl
def hftagg_register_stage_types(register):
    register(Capture)
"""

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
topics = {{ trades = "sim.trades", book = "sim.book", output = "raw.sbe" }}

[stages.sbe_in]
type = "sbe_decode"
schema = "sbe/hftagg-md.xml"
framing = "length2"
topics = {{ input = "raw.sbe" }}

[stages.cap_sim]
type = "npy_capture"
path = "{sim}"
topics = {{ input = "sim.trades" }}

[stages.cap_decoded]
type = "npy_capture"
path = "{dec}"
topics = {{ input = "md.trades" }}

[stages.cap_book]
type = "npy_capture"
path = "{book}"
topics = {{ input = "md.book" }}

[stages.cap_sim_book]
type = "npy_capture"
path = "{sim_book}"
topics = {{ input = "sim.book" }}

[delivery]
enabled = false
"""


def test_config_pipeline_decodes_simulator_trades_field_by_field(tmp_path: Path):
    # Arrange: a config.toml with the SBE round trip, and a capture sink plugin next to it
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "capture.py").write_text(CAPTURE_PLUGIN)
    paths = {k: tmp_path / f"{k}.npy" for k in ("sim", "dec", "book", "sim_book")}
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(CONFIG.format(**{k: str(v) for k, v in paths.items()})))
    # Act
    assembled = assemble(config, environ={})
    ids = {n.id for n in assembled.graph.core}
    pipeline = assembled.pipeline()
    pipeline.start()
    pipeline.wait(60)
    pipeline.stop()
    # Assert: every simulated trade and book update came back through SBE unchanged, and EMA ran
    assert {"sbe_out", "sbe_in", "ema"} <= ids
    sim, dec = np.load(paths["sim"]), np.load(paths["dec"])
    assert len(sim) > 5000
    assert dec.dtype == sim.dtype
    for name in sim.dtype.names:
        np.testing.assert_array_equal(dec[name], sim[name], err_msg=name)
    np.testing.assert_array_equal(np.load(paths["book"]), np.load(paths["sim_book"]))
