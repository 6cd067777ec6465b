"""Bar consolidators against pandas and plain-Python references, batch splits and the runtime."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest

from hftagg import Port, Stage
from hftagg.builtins.core.bars.kernels import (
    TickBarKernel,
    TimeBarKernel,
    VolumeBarKernel,
    parse_duration,
)
from hftagg.builtins.core.bars.stages import CascadeBars, TickBars, TimeBars, VolumeBars
from hftagg.builtins.core.indicators.stages import Atr
from hftagg.records import BAR, INDICATOR, TRADE
from hftagg.stages import StageContext
from hftagg.testing import TestingSink, TestingSource, run_pipeline

IDS = np.array([7, 0, 2**32 - 1, 123_456], dtype=np.uint32)
S = 10**9
M = 60 * S
T0 = 1_700_000_000 * S
FIELDS = ("ts_event", "instrument_id", "timeframe_ns", "open", "high", "low", "close", "volume",
          "trade_count", "synthetic")  # fmt: skip


# --------------------------------------------------------------------------- data and references


def random_trades(n: int, tf: int, seed: int = 1, gaps: bool = True) -> np.ndarray:
    """Trades over several instruments, ts_event increasing, with gaps of several bars."""
    rng = np.random.default_rng(seed)
    trades = TRADE.empty(n)
    trades["instrument_id"] = rng.choice(IDS, n)
    trades["price"] = np.round(100 + np.cumsum(rng.normal(0, 0.05, n)), 2) * S
    trades["size"] = rng.integers(0, 500, n)
    steps = rng.integers(1, max(tf // 6, 2), n)
    if gaps:
        steps[rng.random(n) < 0.01] += 7 * tf
    trades["ts_event"] = T0 + 12_345 + np.cumsum(steps)
    trades["ts_recv"] = trades["ts_event"] + 1000
    trades["seq"] = np.arange(n)
    return trades


def random_splits(records: np.ndarray, seed: int = 2, parts: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(records)), size=parts, replace=False))
    return [records[:1], *np.split(records[1:], cuts[cuts > 1] - 1)]


def pandas_bars(trades: np.ndarray, tf: int) -> pd.DataFrame:
    df = pd.DataFrame({f: trades[f] for f in ("instrument_id", "ts_event", "price", "size")})
    df["start"] = (df["ts_event"] // tf) * tf
    df["pq"] = df["price"] * 1e-9 * df["size"]
    g = df.groupby(["instrument_id", "start"], sort=True)
    out = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"),
                close=("price", "last"), volume=("size", "sum"), trade_count=("price", "count"),
                pq=("pq", "sum")).reset_index()  # fmt: skip
    out["vwap"] = out["pq"] / out["volume"]
    out["synthetic"] = 0
    return out


def with_synthetic(real: pd.DataFrame, tf: int, cap: int, clock: int | None) -> pd.DataFrame:
    """Add flat bars for whole intervals without trades, after each real bar, at most ``cap``."""
    rows = []
    for iid, bars in real.groupby("instrument_id"):
        starts, closes = bars["start"].to_numpy(), bars["close"].to_numpy()
        limits = list(starts[1:]) + [None]
        for start, close, limit in zip(starts, closes, limits, strict=True):
            k = start + tf
            made = 0
            while made < cap and (k < limit if limit is not None else
                                  clock is not None and k + tf <= clock):  # fmt: skip
                rows.append((iid, k, close, close, close, close, 0, 0, np.nan, 1))
                k += tf
                made += 1
    cols = ["instrument_id", "start", "open", "high", "low", "close", "volume", "trade_count",
            "vwap", "synthetic"]  # fmt: skip
    both = pd.concat([real[cols], pd.DataFrame(rows, columns=cols)], ignore_index=True)
    return both.sort_values(["instrument_id", "start"], ignore_index=True)


def as_frame(bars: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({f: bars[f] for f in (*FIELDS, "vwap", "seq", "ts_recv")})
    df["start"] = df["ts_event"] - df["timeframe_ns"]
    return df.sort_values(["instrument_id", "ts_event"], kind="stable", ignore_index=True)


def assert_bars_equal(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert len(ours) == len(ref)
    for f in ("instrument_id", "start", "open", "high", "low", "close", "volume", "trade_count",
              "synthetic"):  # fmt: skip
        np.testing.assert_array_equal(ours[f].to_numpy(np.int64), ref[f].to_numpy(np.int64), f)
    np.testing.assert_allclose(ours["vwap"], ref["vwap"], rtol=1e-12, equal_nan=True)


def run_kernel(kernel, batches, flush: bool = True) -> tuple[np.ndarray, np.ndarray]:
    closed, partial = [], []
    for batch in batches:
        c, p = kernel.update(batch)
        closed.append(c.copy())
        partial.append(p.copy())
    if flush:
        closed.append(kernel.flush().copy())
    return np.concatenate(closed), np.concatenate(partial)


def assert_same_records(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --------------------------------------------------------------------------- time bars


@pytest.mark.parametrize("timeframe", ["1s", "1m", "5m", "1h", "1d"])
@pytest.mark.parametrize("close_on", ["next_trade", "any_event"])
def test_time_bars_equal_pandas_groupby_with_synthetic_gaps(timeframe, close_on):
    tf = parse_duration(timeframe)
    trades = random_trades(4000, tf, seed=len(timeframe))
    kernel = TimeBarKernel(tf, close_on=close_on, max_synthetic=5)
    closed, _ = run_kernel(kernel, random_splits(trades))
    clock = int(trades["ts_event"].max()) if close_on == "any_event" else None
    ref = with_synthetic(pandas_bars(trades, tf), tf, cap=5, clock=clock)
    ours = as_frame(closed)
    assert_bars_equal(ours, ref)
    assert (ours["synthetic"] == 1).sum() > 0
    assert np.all(closed["timeframe_ns"] == tf)
    for iid in IDS:  # seq numbers every bar of an instrument, synthetic ones included
        seq = ours["seq"][ours["instrument_id"] == iid].to_numpy()
        np.testing.assert_array_equal(seq, np.arange(len(seq)))


def test_any_event_closes_bars_in_time_order_on_the_stream_clock():
    trades = random_trades(3000, M, seed=5)
    closed, _ = run_kernel(TimeBarKernel(M), random_splits(trades), flush=False)
    assert np.all(np.diff(closed["ts_event"]) >= 0)
    # each bar is emitted by the first trade at or after its end (of any instrument)
    trigger = np.searchsorted(trades["ts_event"], closed["ts_event"], side="left")
    np.testing.assert_array_equal(closed["ts_recv"], trades["ts_recv"][trigger])


def test_next_trade_leaves_a_quiet_instruments_bar_open_and_any_event_closes_it():
    trades = TRADE.empty(3)
    trades["instrument_id"] = [1, 2, 2]
    trades["ts_event"] = [10, M + 5, 3 * M]
    trades["price"] = [5 * S, 6 * S, 7 * S]
    trades["size"] = 1
    lazy, _ = TimeBarKernel(M, close_on="next_trade").update(trades)
    assert list(lazy["instrument_id"]) == [2, 2]  # 2's bar at 1m, and its synthetic at 2m
    eager, _ = TimeBarKernel(M, close_on="any_event", emit_synthetic=False).update(trades)
    assert list(zip(eager["instrument_id"], eager["ts_event"], strict=True)) == [(1, M), (2, 2 * M)]


def test_grace_delays_the_clock_close_and_late_trades_are_counted_not_applied():
    trades = TRADE.empty(4)
    trades["instrument_id"] = [1, 2, 1, 1]
    trades["ts_event"] = [10, M + 10, M - 5, 2 * M]
    trades["price"] = [1 * S, 2 * S, 3 * S, 4 * S]
    trades["size"] = 1
    kernel = TimeBarKernel(M, grace_ns=20, emit_synthetic=False)
    closed, _ = kernel.update(trades)
    # with 20 ns of grace the trade at M - 5 still lands in instrument 1's first bar
    assert closed["high"][0] == 3 * S and closed["trade_count"][0] == 2
    strict = TimeBarKernel(M, emit_synthetic=False)
    closed, _ = strict.update(trades)
    assert closed["trade_count"][0] == 1 and strict.late_records == 1


def test_offset_aligns_daily_bars_to_a_session_start():
    tf, offset = parse_duration("1d"), parse_duration("22h")
    trades = random_trades(2000, tf, seed=9)
    closed, _ = run_kernel(TimeBarKernel(tf, offset_ns=offset, emit_synthetic=False), [trades])
    shifted = trades.copy()
    shifted["ts_event"] -= offset
    ref = pandas_bars(shifted, tf)
    ref["start"] += offset
    assert_bars_equal(as_frame(closed), ref)


def test_heartbeat_advance_closes_due_bars_even_in_next_trade_mode():
    trades = random_trades(500, M, seed=4, gaps=False)
    kernel = TimeBarKernel(M, close_on="next_trade", emit_synthetic=False)
    kernel.update(trades)
    closed = kernel.advance(int(trades["ts_event"].max()) + 2 * M).copy()
    assert set(closed["instrument_id"]) == set(IDS) and len(kernel.flush()) == 0


def test_synthetic_cap_bounds_a_long_gap():
    trades = TRADE.empty(2)
    trades["instrument_id"] = 3
    trades["ts_event"] = [0, 10**6 * S]
    trades["price"] = S
    closed, _ = TimeBarKernel(S, max_synthetic=100, close_on="next_trade").update(trades)
    assert len(closed) == 101 and closed["synthetic"].sum() == 100


def test_replay_gives_identical_bars_whatever_the_batch_split():
    trades = random_trades(5000, M, seed=11)
    runs = []
    for seed, parts in ((1, 5), (2, 400), (3, 4999)):
        kernel = TimeBarKernel(M, emit="tick", max_synthetic=3)
        runs.append(run_kernel(kernel, random_splits(trades, seed, parts)))
    for closed, partial in runs[1:]:
        assert_same_records(closed, runs[0][0])
        assert_same_records(partial, runs[0][1])


def test_partial_bars_on_tick_and_price_move_are_the_bar_so_far():
    trades = random_trades(2000, M, seed=12, gaps=False)
    trades["price"][1::3] = trades["price"][0:-1:3]  # repeat some prices: no move
    closed, ticks = run_kernel(TimeBarKernel(M, emit="tick"), [trades])
    assert len(ticks) == len(trades)
    np.testing.assert_array_equal(ticks["close"], trades["price"])
    np.testing.assert_array_equal(ticks["ts_event"], trades["ts_event"])
    # the last partial of each bar is the closed bar
    last = as_frame(ticks).groupby(["instrument_id", "seq"]).last().reset_index()
    ref = as_frame(closed[closed["synthetic"] == 0])
    for f in ("open", "high", "low", "close", "volume", "trade_count"):
        np.testing.assert_array_equal(last[f], ref[f], f)
    _, moves = run_kernel(TimeBarKernel(M, emit="price_move"), [trades])
    assert 0 < len(moves) < len(ticks)
    closed_only, none = run_kernel(TimeBarKernel(M), [trades])
    assert len(none) == 0
    assert_same_records(closed_only, closed)


# --------------------------------------------------------------------------- tick and volume bars


def python_count_bars(trades, threshold, by_volume, split):
    out = []
    for iid in np.unique(trades["instrument_id"]):
        rows = trades[trades["instrument_id"] == iid]
        bar: list = []
        for p, q in zip(rows["price"].tolist(), rows["size"].tolist(), strict=True):
            parts = [q]
            if by_volume and split:
                room = threshold - sum(x for _, x in bar)
                parts = []
                while q >= room and q > 0:
                    parts.append(room)
                    q -= room
                    room = threshold
                if q > 0 or not parts:
                    parts.append(q)
            for part in parts:
                bar.append((p, part))
                level = sum(x for _, x in bar) if by_volume else len(bar)
                if level >= threshold:
                    out.append((iid, bar))
                    bar = []
        if bar:
            out.append((iid, bar))
    return out


@pytest.mark.parametrize(("kernel", "by_volume", "split"), [
    (TickBarKernel(7), False, False),
    (VolumeBarKernel(1000), True, True),
    (VolumeBarKernel(1000, split=False), True, False),
])  # fmt: skip
def test_tick_and_volume_bars_equal_a_python_reference(kernel, by_volume, split):
    trades = random_trades(3000, M, seed=21)
    trades["size"][::50] = 2500  # some trades fill several volume bars
    closed, _ = run_kernel(kernel, random_splits(trades))
    ref = python_count_bars(trades, kernel.threshold, by_volume, split)
    ours = as_frame(closed)
    ref_rows = sorted((iid, i) for i, (iid, _) in enumerate(ref))
    assert len(ours) == len(ref)
    for row, (_, i) in zip(ours.itertuples(), ref_rows, strict=True):
        prices = [p for p, _ in ref[i][1]]
        sizes = [q for _, q in ref[i][1]]
        assert (row.open, row.high, row.low, row.close) == (prices[0], max(prices), min(prices),
                                                            prices[-1])  # fmt: skip
        assert (row.volume, row.trade_count) == (sum(sizes), len(sizes))
        if sum(sizes):
            vwap = sum(p * q for p, q in ref[i][1]) / sum(sizes) * 1e-9
            assert row.vwap == pytest.approx(vwap, rel=1e-12)
    if split:
        assert np.all(closed["volume"][:-4] <= 1000)


def test_lowering_the_tick_threshold_live_closes_the_bar_before_the_next_trade():
    trades = random_trades(10, M, seed=3)
    trades["instrument_id"] = 1
    kernel = TickBarKernel(8)
    closed, _ = kernel.update(trades[:5])
    assert len(closed) == 0
    kernel.configure(3, split=False)
    closed, _ = kernel.update(trades[5:6])
    assert list(closed["trade_count"]) == [5]
    assert closed["ts_event"][0] == trades["ts_event"][4]


# --------------------------------------------------------------------------- cascading


@pytest.mark.parametrize("close_on", ["next_trade", "any_event"])
def test_cascaded_5m_and_15m_bars_equal_bars_built_from_the_trades(close_on):
    trades = random_trades(20_000, M, seed=31)
    batches = random_splits(trades, parts=300)
    kw = {"close_on": close_on}
    one, _ = run_kernel(TimeBarKernel(M, **kw), batches, flush=False)
    five_direct, _ = run_kernel(TimeBarKernel(5 * M, **kw), batches, flush=False)
    fifteen_direct, _ = run_kernel(TimeBarKernel(15 * M, **kw), batches, flush=False)
    five, _ = run_kernel(TimeBarKernel(5 * M, from_bars=True, **kw), random_splits(one),
                         flush=False)  # fmt: skip
    fifteen, _ = run_kernel(TimeBarKernel(15 * M, from_bars=True, **kw), [five], flush=False)
    for ours, direct in ((five, five_direct), (fifteen, fifteen_direct)):
        a, b = as_frame(ours), as_frame(direct)
        assert len(a) == len(b) > 100
        for f in (*FIELDS, "seq", "ts_recv"):
            np.testing.assert_array_equal(a[f], b[f], f)
        np.testing.assert_allclose(a["vwap"], b["vwap"], rtol=1e-12, equal_nan=True)


def test_cascade_rejects_input_bars_that_straddle_its_boundaries():
    trades = random_trades(500, M, seed=2)
    seven, _ = TimeBarKernel(7 * M).update(trades)
    with pytest.raises(ValueError, match="does not fit in one"):
        TimeBarKernel(5 * M, from_bars=True).update(seven.copy())


# --------------------------------------------------------------------------- state and params


@pytest.mark.parametrize("make", [
    lambda: TimeBarKernel(M, emit="tick", max_synthetic=4),
    lambda: TimeBarKernel(M, close_on="next_trade"),
    lambda: VolumeBarKernel(700, emit="price_move"),
    lambda: TickBarKernel(9),
])  # fmt: skip
def test_snapshot_restore_continues_identically(make):
    trades = random_trades(6000, M, seed=41)
    first, rest = trades[:2500], trades[2500:]
    kernel = make()
    kernel.update(first)
    state = kernel.snapshot()
    expected = run_kernel(kernel, random_splits(rest))
    other = make()
    other.update(random_trades(100, M, seed=99))  # state to be replaced
    other.restore(state)
    got = run_kernel(other, random_splits(rest, seed=8))
    assert_same_records(got[0], expected[0])
    assert_same_records(got[1], expected[1])


@pytest.mark.parametrize(("params", "name", "value"), [
    ({"timeframe": "7x"}, "timeframe", "7x"),
    ({"timeframe": "1M"}, "timeframe", "1M"),
    ({"timeframe": "0s"}, "timeframe", "0s"),
    ({"timeframe": "1m", "offset": "2m"}, "offset", "2m"),
    ({"grace": "soon"}, "grace", "soon"),
    ({"close_on": "wall_clock"}, "close_on", "wall_clock"),
    ({"emit": "always"}, "emit", "always"),
    ({"max_synthetic": -1}, "max_synthetic", "-1"),
    ({"timeframes": "1m"}, "timeframes", "1m"),
])  # fmt: skip
def test_bad_params_name_the_parameter_and_the_value(params, name, value):
    with pytest.raises(pydantic.ValidationError) as info:
        TimeBars(**params)
    assert name in str(info.value) and value in str(info.value)


def test_bad_count_params_and_live_flags():
    with pytest.raises(pydantic.ValidationError, match="ticks"):
        TickBars(ticks=0)
    with pytest.raises(pydantic.ValidationError, match="volume"):
        VolumeBars(volume=0)
    params = TimeBars.Params
    assert not params.is_live("timeframe") and params.is_live("close_on")
    assert params(timeframe="5m").timeframe_ns == 5 * M
    assert CascadeBars(timeframe="15m").output_topics == {
        "output": "md.bars_15m", "partial": "md.bars_15m_partial",
        "dead_letters": "dead_letters.cascade_bars_15m"}  # fmt: skip


# --------------------------------------------------------------------------- through the runtime


def test_time_bars_stage_through_the_runtime_equals_the_kernel():
    trades = random_trades(8000, M, seed=51)
    out: list[np.ndarray] = []
    stage = TimeBars(timeframe="1m")
    run_pipeline([TestingSource(random_splits(trades, parts=200)), stage, TestingSink(out)],
                 max_batch=97)  # fmt: skip
    expected, _ = run_kernel(TimeBarKernel(M), [trades], flush=False)
    assert_same_records(np.concatenate(out), expected)
    assert len(stage.flush()) == len(IDS)


def test_live_reconfigure_switches_on_partial_bars_from_the_next_batch():
    trades = random_trades(1000, M, seed=52)
    stage = TimeBars(timeframe="1m")
    stage.open(StageContext())
    assert len(stage.process(trades[:500])["partial"]) == 0
    stage.reconfigure(TimeBars.Params(timeframe="1m", emit="tick"))
    assert len(stage.process(trades[500:])["partial"]) == 500


class Pair(Stage):
    """Reads 5m bars and ATR values; records each call."""

    type_name = "pair"
    inputs = {"bars": Port("bar", "md.bars_5m"), "atr": Port("indicator", "ind.atr")}
    outputs = {"output": Port("indicator", "x.pair")}

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, int]] = []

    def process(self, batch, port):
        self.calls.append((port, len(batch)))
        out = INDICATOR.empty(len(batch))
        out["seq"] = batch["seq"]
        out["value"] = 0.0 if port == "bars" else 1.0
        return out


def test_diamond_trades_to_bars_to_cascade_and_atr_to_a_two_input_stage():
    trades = random_trades(20_000, M, seed=61)
    bars = TimeBars(timeframe="1m", stage_id="bars_1m")
    cascade = CascadeBars(timeframe="5m", stage_id="bars_5m")
    atr = Atr(window=3, stage_id="atr")
    pair = Pair(stage_id="pair")
    out: list[np.ndarray] = []
    source = TestingSource(random_splits(trades, parts=300), topic="md.trades")
    run_pipeline([source, pair, atr, cascade, bars, TestingSink(out, topic="x.pair")],
                 wire=False, max_batch=64)  # fmt: skip
    one, _ = run_kernel(TimeBarKernel(M), [trades], flush=False)
    five, _ = run_kernel(TimeBarKernel(5 * M), [trades], flush=False)
    by_port = {p: sum(n for q, n in pair.calls if q == p) for p in ("bars", "atr")}
    assert by_port == {"bars": len(five), "atr": len(one)}
    joined = np.concatenate(out)
    assert len(joined) == len(one) + len(five)
    assert BAR.dtype == one.dtype
