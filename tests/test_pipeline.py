"""The runtime: EMA through real rings, topological exactly-once, failures, the simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftagg import Port, Stage
from hftagg.builtins.core.indicators.stages import Ema
from hftagg.builtins.sources.simulator.stages import Simulator
from hftagg.records import INDICATOR, TRADE
from hftagg.runtime.pipeline import StageFailed
from hftagg.stages import StageContext
from hftagg.testing import TestingSink, TestingSource, run_pipeline


def random_trades(n: int, instruments: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    trades = TRADE.empty(n)
    trades["instrument_id"] = rng.choice(
        np.array([7, 42, 2**32 - 1, 0][:instruments], np.uint32), n
    )
    trades["price"] = (100 + np.cumsum(rng.normal(0, 0.05, n))) * 1e9
    trades["ts_event"] = np.arange(n) * 1000
    for iid in np.unique(trades["instrument_id"]):
        mask = trades["instrument_id"] == iid
        trades["seq"][mask] = np.arange(mask.sum())
    return trades


def split_randomly(records: np.ndarray, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(records)), size=len(records) // 20, replace=False))
    return np.split(records, cuts)


def pandas_ema(trades: np.ndarray, window: int) -> np.ndarray:
    df = pd.DataFrame({"iid": trades["instrument_id"], "px": trades["price"] * 1e-9})
    return (
        df.groupby("iid")["px"]
        .transform(lambda s: s.ewm(span=window, adjust=False).mean())
        .to_numpy()
    )


MODES = {  # how run_pipeline runs a graph: stepped on this thread, or with real threads
    "stepped": {"threaded": False},
    "threaded": {"threaded": True},
    "inline": {"threaded": True, "runtime": {"threading": "inline"}},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_ema_stage_matches_pandas_across_batches_and_instruments(mode):
    trades = random_trades(20_000, instruments=4)
    out: list[np.ndarray] = []
    summary = run_pipeline(
        [TestingSource(split_randomly(trades)), Ema(window=15), TestingSink(out)],
        max_batch=97,
        ring_capacity=256,
        **MODES[mode],
    )
    result = np.concatenate(out)
    assert result.dtype == INDICATOR.dtype
    np.testing.assert_array_equal(result["seq"], trades["seq"])
    np.testing.assert_array_equal(result["instrument_id"], trades["instrument_id"])
    np.testing.assert_allclose(result["value"], pandas_ema(trades, 15), rtol=1e-9)
    assert summary["stages"]["ema"]["records"] == len(trades)
    assert summary["stages"]["ema"]["batches"] > len(trades) // 97  # split at max_batch / wrap


class Scale(Stage):
    type_name = "scale"
    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("indicator", "x.scaled")}

    def __init__(self, factor: float, **kw):
        super().__init__(**kw)
        self.factor = factor
        self.seen = 0

    def process(self, batch):
        self.seen += len(batch)
        out = INDICATOR.empty(len(batch))
        out["seq"] = batch["seq"]
        out["value"] = batch["price"] * self.factor
        return out


class Join(Stage):
    """Consumes two topics: must see each batch of each exactly once."""

    type_name = "join"
    inputs = {"left": Port("indicator", "x.left"), "right": Port("indicator", "x.right")}
    outputs = {"output": Port("indicator", "x.joined")}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, int]] = []

    def process(self, batch, port):
        self.calls.append((port, len(batch)))
        out = batch.copy()
        out["value"] += 0 if port == "left" else 1e12
        return out


@pytest.mark.parametrize("mode", list(MODES))
def test_diamond_graph_runs_each_stage_once_per_batch_in_topological_order(mode):
    trades = random_trades(5_000, instruments=2)
    left = Scale(1.0, stage_id="left", topics={"output": "x.left"})
    right = Scale(2.0, stage_id="right", topics={"output": "x.right"})
    join = Join(stage_id="join")
    out: list[np.ndarray] = []
    source = TestingSource(split_randomly(trades), topic="md.trades")
    # listed out of order on purpose: the runtime orders core stages topologically
    run_pipeline(
        [source, join, right, left, TestingSink(out, topic="x.joined")],
        wire=False,
        max_batch=64,
        **MODES[mode],
    )
    assert left.seen == right.seen == len(trades)
    by_port = {p: sum(n for q, n in join.calls if q == p) for p in ("left", "right")}
    assert by_port == {"left": len(trades), "right": len(trades)}
    joined = np.concatenate(out)
    assert len(joined) == 2 * len(trades)
    lefts = joined[joined["value"] < 1e12]
    np.testing.assert_array_equal(np.sort(lefts["seq"]), np.sort(trades["seq"]))


class Boom(Stage):
    type_name = "boom"
    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("indicator", "x.boom")}

    def process(self, batch):
        raise ValueError("broken invariant in boom")


@pytest.mark.parametrize("mode", ["threaded", "inline"])
def test_a_stage_that_raises_stops_the_pipeline_naming_the_stage(mode):
    with pytest.raises(StageFailed) as info:
        run_pipeline(
            [TestingSource([random_trades(100, 1)]), Boom(stage_id="boomer"), TestingSink([])],
            timeout_secs=10,
            **MODES[mode],
        )
    assert "ValueError: broken invariant in boom" in str(info.value)


def simulate(batch_records: int, seed: int = 7, events: int = 30_000) -> dict[str, np.ndarray]:
    sim = Simulator(
        instruments=5,
        seed=seed,
        clock="simulated",
        rate=1e6,
        batch_records=batch_records,
        max_events=events,
    )
    sim.open(StageContext())
    sim._due = lambda: batch_records  # pace by count, not by wall clock
    streams: dict[str, list] = {"trades": [], "book": [], "quotes": []}
    while not sim.exhausted:
        for port, batch in sim.next_batch().items():
            streams[port].append(batch.copy())
    return {port: np.concatenate(b) for port, b in streams.items()}


def assert_same_records(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_simulator_is_deterministic_for_a_seed_whatever_the_batch_sizes():
    a = simulate(batch_records=1000)
    b = simulate(batch_records=333)
    for port in a:
        assert_same_records(a[port], b[port])
    c = simulate(batch_records=1000, seed=8)
    assert not np.array_equal(a["trades"]["price"][:100], c["trades"]["price"][:100])


def test_simulator_streams_are_plausible_market_data():
    s = simulate(batch_records=4096, events=50_000)
    total = sum(len(x) for x in (s["trades"], s["book"]))
    assert total == 50_000
    assert 0.2 < len(s["trades"]) / total < 0.3  # trade_probability 0.25
    for records in s.values():
        for iid in np.unique(records["instrument_id"]):
            seq = records["seq"][records["instrument_id"] == iid]
            np.testing.assert_array_equal(seq, np.arange(len(seq)))  # contiguous per instrument
        assert set(np.unique(records["instrument_id"])) == {1, 2, 3, 4, 5}
        assert np.all(records["ts_recv"] > records["ts_event"])
        assert np.all(np.diff(records["ts_recv"]) >= 0)
    quotes = s["quotes"]
    assert np.all(quotes["ask_px"] > quotes["bid_px"]) and np.all(quotes["bid_px"] > 0)
    trades = s["trades"]
    assert np.all(trades["price"] % 10_000_000 == 0)  # on the 0.01 tick grid
    assert set(np.unique(trades["side"])) == {ord("A"), ord("B")}


def test_simulator_snapshot_restore_continues_identically():
    sim = Simulator(instruments=3, seed=1, clock="simulated", max_events=0)
    sim.open(StageContext())
    sim._due = lambda: 500
    sim.next_batch()
    state = sim.snapshot()
    after = {p: b.copy() for p, b in sim.next_batch().items()}
    other = Simulator(instruments=3, seed=1, clock="simulated")
    other.open(StageContext())
    other._due = lambda: 500
    other.restore(state)
    again = other.next_batch()
    for port in after:
        assert_same_records(after[port], again[port])


def test_simulator_restored_under_a_new_seed_continues_seq_with_the_new_seeds_events():
    sim = Simulator(instruments=3, seed=1, clock="simulated", max_events=0)
    sim.open(StageContext())
    sim._due = lambda: 500
    first = sim.next_batch()["trades"].copy()
    state = sim.snapshot()
    same = sim.next_batch()["trades"].copy()
    reseeded = Simulator(instruments=3, seed=2, clock="simulated")
    reseeded.open(StageContext())
    reseeded._due = lambda: 500
    reseeded.restore(state)
    after = reseeded.next_batch()["trades"]
    for iid in np.unique(after["instrument_id"]):  # each instrument's seq runs on
        before = first["seq"][first["instrument_id"] == iid]
        seq = after["seq"][after["instrument_id"] == iid]
        start = before[-1] + 1 if len(before) else 0
        np.testing.assert_array_equal(seq, np.arange(start, start + len(seq)))
    assert len(after) != len(same) or not np.array_equal(after["price"], same["price"])


def test_simulator_pregenerated_replay_keeps_seq_contiguous():
    sim = Simulator(instruments=4, seed=3, rate=0, batch_records=1000, pregenerate=3)
    sim.open(StageContext())
    trades = np.concatenate([sim.next_batch()["trades"].copy() for _ in range(10)])
    for iid in np.unique(trades["instrument_id"]):
        seq = trades["seq"][trades["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    assert np.all(np.diff(trades["ts_recv"]) >= 0)


def test_a_lossy_sink_from_config_never_holds_the_pipeline_back(tmp_path):
    """policy = "drop_oldest": a slow sink skips (and counts) instead of applying backpressure.

    (Core stages share one thread, so a slow core stage slows its neighbours whatever its policy;
    slow consumers belong in sinks, which have their own threads.)"""
    from hftagg.runtime.assemble import assemble

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow.py").write_text("""
import time
from hftagg import Port, SinkStage, hookimpl

class Slow(SinkStage):
    type_name = "slow"
    inputs = {"input": Port("indicator", "ind.ema")}

    def write(self, batch, port, offset):
        time.sleep(0.05)

@hookimpl
def hftagg_register_stage_types(register):
    register(Slow)
""")
    config = tmp_path / "config.toml"
    config.write_text("""
[runtime]
ring_capacity = 1024
max_batch = 64
[data_sources.sim]
type = "simulator"
rate = 0
fields = ["trades"]
trade_probability = 1.0
max_events = 200000
[stages.slow]
type = "slow"
policy = "drop_oldest"
[delivery]
enabled = false
""")
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    finished = pipeline.wait(60)
    summary = pipeline.stop()
    assert finished, summary
    assert summary["stages"]["sim"]["records"] == 200_000  # the source was never held back
    assert summary["stages"]["ema"]["records"] == 200_000  # lossless neighbour saw everything
    slow = summary["stages"]["slow"]
    assert slow["drops"] > 100_000 and slow["records"] + slow["drops"] == 200_000


def test_unknown_policy_is_a_config_error(tmp_path):
    from hftagg.errors import ConfigError
    from hftagg.runtime.assemble import assemble

    config = tmp_path / "config.toml"
    config.write_text('[runtime]\nplugin_paths = []\n[delivery]\npolicy = "sometimes"\n')
    with pytest.raises(
        ConfigError,
        match="delivery.policy = 'sometimes': expected one of lossless, drop_oldest, latest_only",
    ):
        assemble(config, environ={})
