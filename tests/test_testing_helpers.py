"""hftagg.testing: run_stage, ScriptedSource, random splits, FakeClock, and the testing_sink
stage type used from a config file."""

from __future__ import annotations

import numpy as np
import pytest

from hftagg.builtins.core.indicators.stages import Ema
from hftagg.builtins.sources.simulator import stages as simulator
from hftagg.builtins.sources.simulator.stages import Simulator
from hftagg.records import TRADE
from hftagg.runtime.assemble import assemble
from hftagg.stages import StageContext
from hftagg.testing import (
    FakeClock,
    ScriptedSource,
    TestingSink,
    clear_collected,
    collected,
    random_splits,
    run_pipeline,
    run_stage,
)

from .test_pipeline import random_trades


def test_run_stage_returns_each_output_port_and_ignores_batch_boundaries():
    trades = random_trades(3000, instruments=3)

    whole = run_stage(Ema(window=5), trades)
    for seed in (1, 2, 3):
        split = run_stage(Ema(window=5), trades, splits=seed, max_split=50)
        np.testing.assert_array_equal(split["output"], whole["output"])

    assert list(whole) == ["output"]
    assert len(whole["output"]) == len(trades)
    np.testing.assert_array_equal(whole["output"]["seq"], trades["seq"])


def test_random_splits_are_reproducible_and_cover_every_record():
    trades = random_trades(500, instruments=2)

    first = random_splits(trades, seed=9, max_size=40)

    assert [len(b) for b in first] == [len(b) for b in random_splits(trades, 9, 40)]
    assert max(len(b) for b in first) <= 40 and len(first) > 500 // 40
    np.testing.assert_array_equal(np.concatenate(first), trades)


def test_run_stage_names_a_wrong_port():
    with pytest.raises(ValueError, match=r"has no input port\(s\) \['quotes'\]"):
        run_stage(Ema(window=5), {"quotes": TRADE.empty(1)})


def test_scripted_source_hook_runs_at_exact_stream_points():
    trades = random_trades(400, instruments=1)
    batches = np.array_split(trades, 4)
    out: list[np.ndarray] = []
    ema = Ema(window=3)
    seen_before: list[int] = []
    marks: list[str] = []

    def on_batch(index: int, batch: np.ndarray) -> None:
        seen_before.append(sum(len(b) for b in out))
        if index == 2:
            ema.reconfigure(ema.Params(window=50))

    script = [batches[0], batches[1], lambda: marks.append("between 1 and 2"), *batches[2:]]
    run_pipeline([ScriptedSource(script, on_batch=on_batch), ema, TestingSink(out)])

    # single-threaded stepping: every earlier batch went all the way through first
    assert seen_before == [0, 100, 200, 300]
    assert marks == ["between 1 and 2"]
    values = np.concatenate(out)["value"]
    prices = trades["price"] * 1e-9
    expected = np.empty(len(trades))
    expected[0] = prices[0]
    for i in range(1, len(trades)):
        alpha = 2 / (3 + 1) if i < 200 else 2 / (50 + 1)
        expected[i] = (1 - alpha) * expected[i - 1] + alpha * prices[i]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_fake_clock_paces_the_simulator_and_stamps_its_records():
    clock = FakeClock(start_ns=1_000_000_000_000)
    with clock.patch(simulator):
        sim = Simulator(rate=1000, clock="wall", instruments=2)
        sim.open(StageContext())
        assert sim.next_batch() is None  # no time has passed: nothing is due
        clock.advance(0.25)
        out = sim.next_batch()
    assert simulator.time is not clock  # restored
    assert sim._emitted == 250
    stamps = np.concatenate([b["ts_recv"] for b in out.values() if len(b)])
    assert stamps.min() >= 1_000_000_000_000 and stamps.max() <= 1_000_250_000_000


def test_fake_clock_refuses_to_go_back_and_to_patch_a_module_without_time():
    clock = FakeClock()
    with pytest.raises(ValueError, match="would move the clock back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="has no 'import time' to replace"), clock.patch("json"):
        pass


def test_testing_sink_from_config_collects_by_key(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[data_sources.sim]\ntype = 'simulator'\nrate = 0\nmax_events = 20000\n"
        "[processing]\nema_window = 4\n[delivery]\nenabled = false\n"
        "[stages.out]\ntype = 'testing_sink'\nstreams = ['md.trades', 'ind.ema']\nkey = 'k1'\n"
    )
    clear_collected("k1")
    assembled = assemble(config, environ={})
    pipeline = assembled.pipeline()
    pipeline.start()
    pipeline.wait(60)
    summary = pipeline.stop()

    trades, ema = collected("k1", "md.trades"), collected("k1", "ind.ema")
    assert len(trades) == summary["stages"]["ema"]["records"] > 0
    np.testing.assert_array_equal(ema["seq"], trades["seq"])
    with pytest.raises(KeyError, match="name the topic"):
        collected("k1")
    clear_collected("k1")
    with pytest.raises(KeyError, match="has no topic 'ind.ema'"):
        collected("k1", "ind.ema")
