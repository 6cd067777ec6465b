"""``on_error``: a stage that raises stops the pipeline (default) or is isolated, and the rest runs.

Real pipelines from a real config.toml and a plugin file: the simulator feeds trades to a stage
that raises on every batch holding a "poison" trade (``seq % 997 == 996`` for instrument 1), to
the EMA, and to a capture sink that also keeps the isolated stage's dead letters.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hftagg.errors import ConfigError
from hftagg.records.reasons import REASONS, RuntimeReason
from hftagg.runtime.assemble import assemble
from hftagg.runtime.pipeline import StageFailed
from hftagg.runtime.status import StatusReporter, format_summary
from hftagg.telemetry.core import Telemetry
from hftagg.telemetry.prometheus import render_prometheus

HERE = Path(__file__).parent
EVENTS = 60_000

POISON = """
import numpy as np
from hftagg import Port, Stage, hookimpl

class Poison(Stage):
    type_name = "poison"
    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("trade", "md.checked")}

    def process(self, batch):
        bad = (batch["instrument_id"] == 1) & (batch["seq"] % 997 == 996)
        if bad.any():
            raise ValueError(f"poison trade at seq {int(batch['seq'][bad][0])}")
        return batch.copy()

@hookimpl
def hftagg_register_stage_types(register):
    register(Poison)
"""

CONFIG = """
[runtime]
plugin_paths = ["plugins"]
max_batch = 256

[data_sources.sim]
type = "simulator"
instruments = 3
rate = 0
clock = "simulated"
max_events = {events}
trade_probability = 0.5

[stages.poison]
type = "poison"
{on_error}

[stages.capture]
type = "capture"
key = "{key}"
streams = {streams}

[delivery]
enabled = false

[telemetry]
prometheus = false
"""


def write_config(root: Path, on_error: str, key: str, streams: list[str]) -> Path:
    plugins = root / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "poison.py").write_text(POISON)
    shutil.copy(HERE / "plugin_files" / "capture.py", plugins / "capture.py")
    config = root / "config.toml"
    text = CONFIG.format(events=EVENTS, on_error=on_error, key=key, streams=streams)
    config.write_text(text)
    return config


def captured(key: str) -> np.ndarray:
    chunks = sorted(sys.modules["hftagg_plugins.capture"].CAPTURED[key], key=lambda c: c[0])
    return np.concatenate([b for _, b in chunks]) if chunks else np.empty(0)


def test_by_default_a_stage_that_raises_stops_the_pipeline_naming_it(tmp_path):
    config = write_config(tmp_path, "", "stop", ["md.checked"])
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    pipeline.wait(60)
    with pytest.raises(StageFailed) as info:
        pipeline.stop()
    assert "core failed" in str(info.value)
    assert "ValueError: poison trade at seq 996" in str(info.value)


@pytest.mark.slow
def test_isolate_sends_the_failing_batch_to_dead_letters_and_the_rest_runs_on(tmp_path):
    streams = ["md.trades", "md.checked", "ind.ema", "dead_letters.isolated.poison"]
    config = write_config(tmp_path, 'on_error = "isolate"', "isolate", streams)
    telemetry = Telemetry()
    pipeline = assemble(config, environ={}).pipeline(telemetry=telemetry)
    reporter = StatusReporter(pipeline)
    pipeline.start()
    assert pipeline.wait(120), "the pipeline did not finish"
    status = reporter.line()
    table = reporter.table()
    metrics = render_prometheus(pipeline)
    summary = pipeline.stop()

    trades, checked = captured("isolate:md.trades"), captured("isolate:md.checked")
    ema, dead = captured("isolate:ind.ema"), captured("isolate:dead_letters.isolated.poison")
    # the rest ran on: every trade reached the EMA, per instrument in order, none lost
    for iid in np.unique(trades["instrument_id"]):
        seq = trades["seq"][trades["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    assert summary["stages"]["ema"]["records"] == len(trades) > EVENTS // 3
    np.testing.assert_array_equal(ema["seq"], trades["seq"])
    poison = (trades["instrument_id"] == 1) & (trades["seq"] % 997 == 996)
    assert poison.sum() >= 3  # several poison trades, so several failed batches
    # every trade is either passed on by the isolated stage or dead-lettered, exactly once,
    # and every poison trade is among the dead letters
    is_dead = np.zeros(len(trades), dtype=bool)
    is_dead[dead["raw_offset"]] = True
    assert is_dead.sum() == len(dead)  # no offset twice
    np.testing.assert_array_equal(checked, trades[~is_dead])
    assert is_dead[poison].all()
    # the dead letters say what, where and why
    np.testing.assert_array_equal(dead["seq"], trades["seq"][dead["raw_offset"]])
    np.testing.assert_array_equal(
        dead["instrument_id"], trades["instrument_id"][dead["raw_offset"]]
    )
    assert set(dead["reason"]) == {RuntimeReason.STAGE_FAILED}
    assert REASONS.name(dead["reason"][0]) == "runtime.stage_failed"
    assert set(dead["raw_length"]) == {trades.dtype.itemsize}
    assert all(d.startswith(b"ValueError: poison trade at seq ") for d in dead["detail"])
    # it kept processing the batches after a failure
    assert checked["seq"][checked["instrument_id"] == 1].max() > 996
    # marked failed in the summary, the status and the metrics
    entry = summary["stages"]["poison"]
    assert entry["state"] == "failed" and 1 <= entry["failures"] <= poison.sum()
    assert entry["error"].startswith("ValueError: poison trade at seq")
    assert entry["dead_letters"] == len(dead)
    assert "poison" in status and "FAILED" in status and f"dead {len(dead)}" in status
    assert any(row.startswith("poison") and row.endswith("FAILED") for row in table.splitlines())
    assert 'hftagg_stage_failed{stage="poison"} 1' in metrics
    assert 'hftagg_stage_failed{stage="ema"} 0' in metrics
    assert f'hftagg_stage_failures_total{{stage="poison"}} {entry["failures"]}' in metrics
    assert "FAILED: ValueError: poison trade" in format_summary(summary)


def test_an_unknown_on_error_value_is_a_config_error_naming_the_choices(tmp_path):
    config = write_config(tmp_path, 'on_error = "ignore"', "bad", ["md.checked"])
    with pytest.raises(ConfigError) as info:
        assemble(config, environ={})
    assert str(info.value.problems[0]) == (
        f"{config}: stages.poison.on_error = 'ignore': expected \"stop\" (a raising stage "
        f'stops the pipeline) or "isolate" (its input batch goes to dead letters with the '
        f"exception and the rest runs on)"
    )


FLAKY_SINK = """
from hftagg import Port, SinkStage, hookimpl

class FlakySink(SinkStage):
    type_name = "flaky_sink"
    inputs = {"input": Port("trade", "md.trades")}
    written = 0

    def write(self, batch, port, offset):
        if (batch["seq"] % 500 == 499).any():
            raise ConnectionError("backend refused the batch")
        FlakySink.written += len(batch)

@hookimpl
def hftagg_register_stage_types(register):
    register(FlakySink)
"""


def test_an_isolated_sink_dead_letters_the_batches_it_failed_to_write(tmp_path):
    config = write_config(tmp_path, "", "sink", ["md.trades", "dead_letters.isolated.out"])
    (tmp_path / "plugins" / "flaky_sink.py").write_text(FLAKY_SINK)
    text = config.read_text().replace("[delivery]", '[stages.out]\ntype = "flaky_sink"\n'
                                      'on_error = "isolate"\n\n[delivery]')  # fmt: skip
    config.write_text(text.replace('[stages.poison]\ntype = "poison"\n', ""))
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    assert pipeline.wait(120), "the pipeline did not finish"
    summary = pipeline.stop()
    trades, dead = captured("sink:md.trades"), captured("sink:dead_letters.isolated.out")
    written = sys.modules["hftagg_plugins.flaky_sink"].FlakySink.written
    assert len(dead) > 0 and written + len(dead) == len(trades)  # each record once, one way
    assert (dead["seq"] % 500 == 499).any()
    assert all(d == b"ConnectionError: backend refused the batch" for d in dead["detail"])
    out = summary["stages"]["out"]
    assert out["state"] == "failed" and out["failures"] >= 1
    assert out["records"] == len(trades) and out["dead_letters"] == len(dead)
