"""Indicator kernels and stages against TA-Lib, pandas and numpy references written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
import talib

from hftagg.builtins.core.indicators.kernels import (
    AtrKernel,
    OlsKernel,
    RollingVwapKernel,
    RsiKernel,
    SessionVwapKernel,
    SmaKernel,
    VolatilityKernel,
    WmaKernel,
    ZScoreKernel,
)
from hftagg.builtins.core.indicators.stages import (
    Atr,
    Ols,
    RollingVwap,
    Rsi,
    SessionVwap,
    Sma,
    Volatility,
    Wma,
    ZScore,
)
from hftagg.records import BAR, INDICATOR, TRADE
from hftagg.stages import StageContext
from hftagg.testing import TestingSink, TestingSource, run_pipeline

IDS = np.array([7, 0, 2**32 - 1, 123_456], dtype=np.uint32)
DAY_NS = 86_400 * 10**9


# --------------------------------------------------------------------------- data and helpers


def random_trades(n: int, seed: int = 1, offset: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    trades = TRADE.empty(n)
    trades["instrument_id"] = rng.choice(IDS, n)
    trades["price"] = np.round((offset + np.cumsum(rng.normal(0, 0.05, n))) * 1e9)
    trades["size"] = rng.integers(1, 500, n)
    trades["ts_event"] = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 10**9, n))
    trades["seq"] = np.arange(n)
    return trades


def random_bars(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bars = BAR.empty(n)
    bars["instrument_id"] = rng.choice(IDS, n)
    close = np.round((100 + np.cumsum(rng.normal(0, 0.2, n))) * 1e9).astype(np.int64)
    opens = close + rng.integers(-(10**8), 10**8, n)
    bars["close"], bars["open"] = close, opens
    bars["high"] = np.maximum(close, opens) + rng.integers(0, 3 * 10**8, n)
    bars["low"] = np.minimum(close, opens) - rng.integers(0, 3 * 10**8, n)
    bars["seq"] = np.arange(n)
    return bars


def random_splits(records: np.ndarray, seed: int = 2) -> list[np.ndarray]:
    """Random cuts, with a run of single-record batches at the start."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(20, len(records)), size=len(records) // 30, replace=False))
    return [records[i : i + 1] for i in range(20)] + np.split(records[20:], cuts - 20)


def per_instrument(ids: np.ndarray, reference) -> np.ndarray:
    """``reference(mask)`` evaluated per instrument, scattered back to record order."""
    out = np.empty(ids.shape[0])
    for iid in np.unique(ids):
        mask = ids == iid
        out[mask] = reference(mask)
    return out


def assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float = 1e-9, atol: float = 0.0):
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True)


def feed(kernel, batches: list[np.ndarray], fields: tuple[str, ...]) -> np.ndarray:
    outs = [kernel.update(b["instrument_id"], *(b[f] for f in fields)) for b in batches]
    return np.concatenate(outs, axis=-1)


def through_pipeline(stage, batches, max_batch: int = 61) -> np.ndarray:
    out: list[np.ndarray] = []
    run_pipeline([TestingSource(batches), stage, TestingSink(out)], max_batch=max_batch)
    return np.concatenate(out)


def windows(x: np.ndarray, w: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, w)


def exact_ols(y: np.ndarray, x: np.ndarray, w: int) -> np.ndarray:
    """Two-pass least squares on every window: (slope, intercept at the oldest, r²)."""
    out = np.full((3, y.shape[0]), np.nan)
    if y.shape[0] < w:
        return out
    wy, wx = windows(y, w), windows(x, w)
    dx = wx - wx.mean(axis=1, keepdims=True)
    dy = wy - wy.mean(axis=1, keepdims=True)
    sxx, sxy, syy = (dx * dx).sum(1), (dx * dy).sum(1), (dy * dy).sum(1)
    slope = sxy / sxx
    out[0, w - 1 :] = slope
    out[1, w - 1 :] = wy.mean(1) - slope * (wx.mean(1) - wx[:, 0])
    out[2, w - 1 :] = sxy * sxy / (sxx * syy)
    return out


# --------------------------------------------------------------------------- TA-Lib


@pytest.mark.parametrize("window", [1, 2, 9, 40])
@pytest.mark.parametrize(("kernel", "reference"), [(SmaKernel, talib.SMA), (WmaKernel, talib.WMA)])
def test_moving_averages_match_talib_across_splits_and_instruments(kernel, reference, window):
    trades = random_trades(6000)
    ours = feed(kernel(window), random_splits(trades), ("price",))
    prices = trades["price"] * 1e-9
    theirs = per_instrument(trades["instrument_id"], lambda m: reference(prices[m], window))
    assert_close(ours, theirs)


@pytest.mark.parametrize("window", [2, 14, 50])
def test_rsi_matches_talib_across_splits_and_instruments(window):
    trades = random_trades(6000, seed=4)
    ours = feed(RsiKernel(window), random_splits(trades), ("price",))
    prices = trades["price"] * 1e-9
    theirs = per_instrument(trades["instrument_id"], lambda m: talib.RSI(prices[m], window))
    assert_close(ours, theirs)


@pytest.mark.parametrize("window", [1, 2, 14, 30])
def test_atr_matches_talib_over_bars(window):
    bars = random_bars(6000)
    ours = feed(AtrKernel(window), random_splits(bars), ("high", "low", "close"))
    h, lo, c = (bars[f] * 1e-9 for f in ("high", "low", "close"))
    theirs = per_instrument(bars["instrument_id"], lambda m: talib.ATR(h[m], lo[m], c[m], window))
    assert_close(ours, theirs)


# --------------------------------------------------------------------------- pandas and numpy


def grouped(trades: np.ndarray, series: pd.Series, apply) -> np.ndarray:
    return series.groupby(trades["instrument_id"]).transform(apply).to_numpy()


@pytest.mark.parametrize("window", [1, 3, 25])
def test_rolling_vwap_matches_pandas(window):
    trades = random_trades(5000, seed=5)
    ours = feed(RollingVwapKernel(window), random_splits(trades), ("price", "size"))
    price, size = trades["price"] * 1e-9, trades["size"].astype(np.float64)
    frame = pd.DataFrame({"pq": price * size, "q": size, "iid": trades["instrument_id"]})
    sums = frame.groupby("iid")[["pq", "q"]].rolling(window).sum().reset_index(level=0, drop=True)
    sums = sums.sort_index()
    assert_close(ours, (sums["pq"] / sums["q"]).to_numpy())


@pytest.mark.parametrize("window", [2, 20])
def test_zscore_matches_pandas(window):
    trades = random_trades(5000, seed=6)
    ours = feed(ZScoreKernel(window), random_splits(trades), ("price",))
    price = pd.Series(trades["price"] * 1e-9)

    def zscore(s: pd.Series) -> pd.Series:
        # rolling().apply on each window: pandas' online rolling std drifts by up to 1e-3
        # relative on this data (window 2), too far for a 1e-9 reference
        return s.rolling(window).apply(lambda a: (a[-1] - a.mean()) / a.std(ddof=1), raw=True)

    # z crosses zero, where a relative tolerance means nothing: 1e-9 in z units as well
    assert_close(ours, grouped(trades, price, zscore), atol=1e-9)


@pytest.mark.parametrize("window", [2, 20])
def test_volatility_matches_pandas_std_of_log_returns(window):
    trades = random_trades(5000, seed=7)
    ours = feed(VolatilityKernel(window), random_splits(trades), ("price",))
    price = pd.Series(trades["price"] * 1e-9)
    theirs = grouped(trades, price, lambda s: np.log(s).diff().rolling(window).std())
    assert_close(ours, theirs)


@pytest.mark.parametrize("window", [2, 3, 30])
def test_ols_on_index_matches_polyfit_on_each_window(window):
    trades = random_trades(3000, seed=8)
    ours = feed(OlsKernel(window), random_splits(trades), ("ts_event", "price"))
    price = trades["price"] * 1e-9
    for iid in IDS:
        mask = trades["instrument_id"] == iid
        y = price[mask]
        fits = np.array([np.polyfit(np.arange(window), yw, 1) for yw in windows(y, window)])
        r2 = np.array([np.corrcoef(np.arange(window), yw)[0, 1] ** 2 for yw in windows(y, window)])
        mine = ours[:, mask]
        assert np.isnan(mine[:, : window - 1]).all()
        np.testing.assert_allclose(mine[0, window - 1 :], fits[:, 0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mine[1, window - 1 :], fits[:, 1], rtol=1e-9)
        np.testing.assert_allclose(mine[2, window - 1 :], r2, rtol=1e-9, atol=1e-12)


def test_ols_on_time_matches_exact_least_squares():
    trades = random_trades(4000, seed=9)
    ours = feed(OlsKernel(16, x="time"), random_splits(trades), ("ts_event", "price"))
    price, ts = trades["price"] * 1e-9, trades["ts_event"]
    for iid in IDS:
        mask = trades["instrument_id"] == iid
        seconds = (ts[mask] - ts[mask][0]) * 1e-9
        np.testing.assert_allclose(ours[:, mask], exact_ols(price[mask], seconds, 16),
                                   rtol=1e-9, atol=1e-13)  # fmt: skip


def test_ols_drift_over_a_million_points_with_large_offsets_stays_below_1e_9():
    n, window = 1_000_000, 64
    rng = np.random.default_rng(10)
    prices = np.round((1e6 + np.cumsum(rng.normal(0, 0.02, n)) + 1e-4 * np.arange(n)) * 1e9)
    prices = prices.astype(np.int64)
    ids = np.full(n, 99, dtype=np.uint32)
    ts = np.zeros(n, dtype=np.int64)
    kernel = OlsKernel(window)
    ours = np.concatenate([kernel.update(ids[a : a + 50_000], ts[a : a + 50_000],
                                         prices[a : a + 50_000]) for a in range(0, n, 50_000)],
                          axis=1)  # fmt: skip
    # exact recomputation at a spread of positions and over the whole tail
    at = np.unique(np.concatenate([np.arange(window - 1, n, 997), np.arange(n - 3000, n)]))
    y = prices * 1e-9
    rows = windows(y, window)[at - window + 1]
    x = np.arange(window, dtype=np.float64)
    dx, dy = x - x.mean(), rows - rows.mean(axis=1, keepdims=True)
    sxx, sxy, syy = (dx * dx).sum(), (dy * dx).sum(1), (dy * dy).sum(1)
    slope = sxy / sxx
    np.testing.assert_allclose(ours[0, at], slope, rtol=1e-9)
    np.testing.assert_allclose(ours[1, at], rows.mean(1) - slope * x.mean(), rtol=1e-9)
    np.testing.assert_allclose(ours[2, at], sxy * sxy / (sxx * syy), rtol=1e-9)


def test_session_vwap_resets_each_utc_day_per_instrument():
    trades = random_trades(6000, seed=11)
    trades["ts_event"] = 1_700_000_000 * 10**9 + np.cumsum(np.full(6000, DAY_NS // 997))
    ours = feed(SessionVwapKernel(), random_splits(trades), ("ts_event", "price", "size"))
    frame = pd.DataFrame({"iid": trades["instrument_id"], "day": trades["ts_event"] // DAY_NS,
                          "q": trades["size"].astype(float)})  # fmt: skip
    frame["pq"] = trades["price"] * 1e-9 * frame["q"]
    cum = frame.groupby(["iid", "day"])[["pq", "q"]].cumsum()
    assert_close(ours, (cum["pq"] / cum["q"]).to_numpy())
    assert frame["day"].nunique() > 3


def test_session_vwap_offset_and_never_reset():
    trades = random_trades(500, seed=12)
    trades["ts_event"] = np.arange(500) * (DAY_NS // 100)
    never = SessionVwapKernel("never").update(trades["instrument_id"], trades["ts_event"],
                                              trades["price"], trades["size"])  # fmt: skip
    frame = pd.DataFrame({"iid": trades["instrument_id"], "q": trades["size"].astype(float)})
    frame["pq"] = trades["price"] * 1e-9 * frame["q"]
    cum = frame.groupby("iid")[["pq", "q"]].cumsum()
    assert_close(never, (cum["pq"] / cum["q"]).to_numpy())
    shifted = SessionVwapKernel("utc_day", offset_secs=6 * 3600)
    ours = shifted.update(trades["instrument_id"], trades["ts_event"], trades["price"],
                          trades["size"])  # fmt: skip
    frame["day"] = (trades["ts_event"] - 6 * 3600 * 10**9) // DAY_NS
    cum = frame.groupby(["iid", "day"])[["pq", "q"]].cumsum()
    assert_close(ours, (cum["pq"] / cum["q"]).to_numpy())


# --------------------------------------------------------------------------- through the runtime


def test_sma_stage_through_run_pipeline_equals_talib():
    trades = random_trades(4000, seed=13)
    result = through_pipeline(Sma(window=5), random_splits(trades))
    assert result.dtype == INDICATOR.dtype
    np.testing.assert_array_equal(result["seq"], trades["seq"])
    np.testing.assert_array_equal(result["ts_event"], trades["ts_event"])
    prices = trades["price"] * 1e-9
    theirs = per_instrument(trades["instrument_id"], lambda m: talib.SMA(prices[m], 5))
    assert_close(result["value"], theirs)


@pytest.mark.parametrize(
    ("stage", "kernel", "fields"),
    [
        (Wma(window=7), WmaKernel(7), ("price",)),
        (Rsi(window=14), RsiKernel(14), ("price",)),
        (ZScore(window=9), ZScoreKernel(9), ("price",)),
        (Volatility(window=9), VolatilityKernel(9), ("price",)),
        (RollingVwap(window=11), RollingVwapKernel(11), ("price", "size")),
        (SessionVwap(), SessionVwapKernel(), ("ts_event", "price", "size")),
    ],
)
def test_each_stage_through_run_pipeline_equals_its_kernel(stage, kernel, fields):
    trades = random_trades(3000, seed=14)
    result = through_pipeline(stage, random_splits(trades), max_batch=40)
    assert_close(result["value"], feed(kernel, [trades], fields))
    np.testing.assert_array_equal(result["instrument_id"], trades["instrument_id"])


def test_atr_stage_reads_bars_through_run_pipeline():
    bars = random_bars(2000)
    result = through_pipeline(Atr(window=14), random_splits(bars))
    h, lo, c = (bars[f] * 1e-9 for f in ("high", "low", "close"))
    theirs = per_instrument(bars["instrument_id"], lambda m: talib.ATR(h[m], lo[m], c[m], 14))
    assert_close(result["value"], theirs)


def test_ols_stage_publishes_slope_intercept_and_r2_topics():
    trades = random_trades(2000, seed=15)
    outs: dict[str, list] = {"slope": [], "intercept": [], "r2": []}
    sinks = [TestingSink(outs[k], stage_id=f"sink_{k}", topic=f"ind.ols_{k}") for k in outs]
    run_pipeline([TestingSource(random_splits(trades)), Ols(window=10), *sinks], max_batch=33)
    expected = OlsKernel(10).update(trades["instrument_id"], trades["ts_event"], trades["price"])
    for name, column in zip(outs, expected, strict=True):
        result = np.concatenate(outs[name])
        np.testing.assert_array_equal(result["seq"], trades["seq"])
        assert_close(result["value"], column)


def test_sma_stage_on_indicator_input_reads_value():
    trades = random_trades(1000, seed=16)
    mids = INDICATOR.empty(1000)
    for name in ("ts_event", "seq", "instrument_id"):
        mids[name] = trades[name]
    mids["value"] = trades["price"] * 1e-9
    stage = Sma(window=4, input="indicator")
    assert stage.input_topics == {"input": "ind.mid"}
    result = through_pipeline(stage, random_splits(mids))
    assert_close(result["value"], feed(SmaKernel(4), [trades], ("price",)))


# --------------------------------------------------------------------------- state and live changes

STAGES = [
    lambda: Sma(window=6), lambda: Wma(window=6), lambda: Rsi(window=6),
    lambda: ZScore(window=6), lambda: Volatility(window=6), lambda: RollingVwap(window=6),
    lambda: SessionVwap(), lambda: Ols(window=6, x="time"),
]  # fmt: skip


def run_stage(stage, batches) -> np.ndarray:
    out = []
    for batch in batches:  # copy each result at once: stages reuse their output buffers
        result = stage.process(batch)
        if isinstance(result, dict):
            out.append(np.stack([records["value"] for records in result.values()]))
        else:
            out.append(result["value"].copy())
    return np.concatenate(out, axis=-1)


def opened(factory):
    stage = factory()
    stage.open(StageContext(max_batch=64))
    return stage


@pytest.mark.parametrize("factory", STAGES)
def test_snapshot_restore_continues_identically(factory):
    batches = random_splits(random_trades(1500, seed=17))
    first, second = batches[: len(batches) // 2], batches[len(batches) // 2 :]
    straight = run_stage(opened(factory), batches)
    before = opened(factory)
    head = run_stage(before, first)
    after = factory()
    after.restore(before.snapshot())
    after.open(StageContext(max_batch=64))
    tail = run_stage(after, second)
    np.testing.assert_array_equal(np.concatenate([head, tail], axis=-1), straight)


def test_atr_snapshot_restore_continues_identically():
    batches = random_splits(random_bars(1000))
    straight = run_stage(opened(lambda: Atr(window=5)), batches)
    before = opened(lambda: Atr(window=5))
    head = run_stage(before, batches[:40])
    after = Atr(window=5)
    after.restore(before.snapshot())
    after.open(StageContext(max_batch=64))
    np.testing.assert_array_equal(np.concatenate([head, run_stage(after, batches[40:])]), straight)


@pytest.mark.parametrize(("old", "new"), [(10, 4), (4, 10), (7, 7)])
@pytest.mark.parametrize(("stage_type", "reference"), [(Sma, talib.SMA), (Wma, talib.WMA)])
def test_moving_average_window_change_keeps_the_newest_values(stage_type, reference, old, new):
    trades = random_trades(400, seed=18)
    trades["instrument_id"] = 5
    stage = opened(lambda: stage_type(window=old))
    head = run_stage(stage, [trades[:200]])
    stage.reconfigure(stage_type.Params(window=new))
    tail = run_stage(stage, [trades[200:]])
    prices = trades["price"] * 1e-9
    # documented: shrink -> the new-window value at once; grow -> NaN until the ring is full,
    # which is on the (new - old)-th record after the change
    expected = reference(prices, new)[200:]
    if new > old:
        expected[: new - old - 1] = np.nan
    assert_close(head, reference(prices, old)[:200])
    assert_close(tail, expected)


def wilder_rsi(prices: np.ndarray, window_at) -> np.ndarray:
    """Textbook RSI, written out, with the window given per record by ``window_at(i)``."""
    out = np.full(len(prices), np.nan)
    gains = losses = 0.0
    seeded = False
    for i in range(1, len(prices)):
        w = window_at(i)
        change = prices[i] - prices[i - 1]
        up, down = max(change, 0.0), max(-change, 0.0)
        if seeded:
            gains, losses = (gains * (w - 1) + up) / w, (losses * (w - 1) + down) / w
        else:
            gains, losses = gains + up, losses + down
            if i < w:
                continue
            gains, losses, seeded = gains / i, losses / i, True
        out[i] = 100 * gains / (gains + losses)
    return out


@pytest.mark.parametrize("change_at", [5, 300])  # during the warm-up, and after it
def test_rsi_window_change_continues_wilder_smoothing(change_at):
    trades = random_trades(600, seed=19)
    trades["instrument_id"] = 3
    stage = opened(lambda: Rsi(window=14))
    head = run_stage(stage, [trades[:change_at]])
    stage.reconfigure(Rsi.Params(window=4))
    tail = run_stage(stage, [trades[change_at:]])
    expected = wilder_rsi(trades["price"] * 1e-9, lambda i: 14 if i < change_at else 4)
    assert_close(np.concatenate([head, tail]), expected)


def test_ols_window_change_equals_a_fresh_run_over_the_newest_values():
    trades = random_trades(300, seed=20)
    trades["instrument_id"] = 1
    stage = opened(lambda: Ols(window=20))
    run_stage(stage, [trades[:150]])
    stage.reconfigure(Ols.Params(window=8))
    tail = run_stage(stage, [trades[150:]])
    expected = exact_ols(trades["price"] * 1e-9, np.arange(300, dtype=float), 8)[:, 150:]
    np.testing.assert_allclose(tail, expected, rtol=1e-9, atol=1e-12)


def test_restore_into_a_stage_with_another_window_applies_the_live_semantics():
    trades = random_trades(300, seed=21)
    trades["instrument_id"] = 8
    old = opened(lambda: Sma(window=10))
    run_stage(old, [trades[:150]])
    new = Sma(window=4)
    new.restore(old.snapshot())
    new.open(StageContext(max_batch=64))
    tail = run_stage(new, [trades[150:]])
    assert_close(tail, talib.SMA(trades["price"] * 1e-9, 4)[150:])


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Sma(window=0), "window"),
        (lambda: Sma(window=100_001), "window"),
        (lambda: Rsi(window=1), "window"),
        (lambda: ZScore(window=1), "window"),
        (lambda: Ols(window=5, x="price"), "x"),
        (lambda: Sma(window=5, input="quote"), "input"),
        (lambda: Sma(windw=5), "windw"),
        (lambda: SessionVwap(session_offset_secs=86_400), "session_offset_secs"),
        (lambda: SessionVwap(session_reset="weekly"), "session_reset"),
        (lambda: Atr(window="14"), "window"),
    ],
)
def test_bad_params_are_rejected_naming_the_parameter(make, name):
    with pytest.raises(pydantic.ValidationError, match=name):
        make()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: SmaKernel(0), "window"),
        (lambda: RsiKernel(1), "window"),
        (lambda: OlsKernel(5, x="price"), "x"),
        (lambda: SessionVwapKernel("weekly"), "session_reset"),
        (lambda: SmaKernel(3).set_window(0), "window"),
        (lambda: SmaKernel(3).update(np.zeros(2, np.int64), np.zeros(2)), "instrument_id"),
        (lambda: SmaKernel(3).update(np.zeros(2, np.uint32), np.zeros(2, np.int32)), "price"),
        (lambda: SmaKernel(3).restore(RsiKernel(3).snapshot()), "kernel"),
    ],
)
def test_bad_kernel_arguments_raise_value_errors_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_params_mark_windows_live_and_inputs_restart():
    assert Sma.Params.is_live("window") and not Sma.Params.is_live("input")
    assert Ols.Params.is_live("window") and not Ols.Params.is_live("x")
    assert SessionVwap.Params.is_live("session_reset")


def test_indicator_stages_are_registered_as_builtins():
    from hftagg.plugins.manager import load_plugins

    host = load_plugins([], entry_points=False)
    names = {"sma", "wma", "rsi", "atr", "rolling_vwap", "session_vwap", "zscore", "volatility",
             "ols"}  # fmt: skip
    assert names <= set(host.stage_types)


def test_many_instruments_grow_the_state_and_keep_it():
    rng = np.random.default_rng(22)
    ids = rng.choice(np.arange(5000, dtype=np.uint32) * 7919, 30_000)
    prices = rng.normal(100, 1, 30_000)
    kernel = SmaKernel(3)
    ours = np.concatenate([kernel.update(ids[a : a + 1000], prices[a : a + 1000])
                           for a in range(0, 30_000, 1000)])  # fmt: skip
    assert kernel.instrument_count == np.unique(ids).shape[0]
    assert_close(ours, per_instrument(ids, lambda m: talib.SMA(prices[m], 3)))
