"""EmaKernel and ema_series against independent references: pandas ewm, TA-Lib EMA, plain Python.

Every comparison feeds the kernel in batches (one record at a time, random splits, one big batch)
with several instruments interleaved, so state carried across batch boundaries is what is tested.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from hftagg.builtins.core.indicators.ema import EmaKernel, ema_series
from hftagg.kernels import warm_all
from hftagg.records import PRICE_SCALE, TRADE

from .compiled import entry_points, hftagg_modules, uncompiled

RTOL = 1e-9
SPLITS = ["one-batch", "size-1", "random"]


# --------------------------------------------------------------------------- references and helpers


def pandas_ema(ids: np.ndarray, x: np.ndarray, window: int) -> np.ndarray:
    """pandas ewm(span=window, adjust=False) per instrument, in the records' order."""
    grouped = pd.Series(x).groupby(ids).ewm(span=window, adjust=False).mean()
    return grouped.reset_index(level=0, drop=True).sort_index().to_numpy()


def talib_ema(ids: np.ndarray, x: np.ndarray, window: int) -> np.ndarray:
    """talib.EMA(timeperiod=window) per instrument, in the records' order."""
    out = np.empty(x.shape[0])
    for instrument in np.unique(ids):
        rows = ids == instrument
        out[rows] = talib.EMA(x[rows], timeperiod=window)
    return out


def python_ema(values: list[float], y: float, alpha: float) -> list[float]:
    """The recurrence continued from ``y``, one value at a time, in plain Python."""
    out = []
    for v in values:
        y = y + alpha * (v - y)
        out.append(y)
    return out


def split_points(n: int, how: str, rng: np.random.Generator) -> list[int]:
    if how == "one-batch":
        return [0, n]
    if how == "size-1":
        return list(range(n + 1))
    cuts = rng.choice(np.arange(1, n), size=min(n - 1, max(1, n // 50)), replace=False)
    return [0, *sorted(int(c) for c in cuts), n]


def feed(kernel: EmaKernel, ids: np.ndarray, prices: np.ndarray, bounds: list[int]) -> np.ndarray:
    """Run the batches ``ids[a:b], prices[a:b]`` and return the outputs end to end."""
    parts = [kernel.update(ids[a:b], prices[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    return np.concatenate(parts) if parts else np.empty(0)


def market(n: int, instruments: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved records: uint32 ids drawn from ``instruments``, int64 fixed-point prices."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(instruments, size=n).astype(np.uint32)
    real = 100.0 + np.cumsum(rng.normal(0.0, 0.05, size=n))
    return ids, np.round(real / PRICE_SCALE).astype(np.int64)


def as_input(prices: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(what the kernel is fed, the real prices the reference uses)."""
    real = prices * PRICE_SCALE
    return (prices, real) if dtype == "int64" else (real, real)


def assert_same_nan_and_close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, equal_nan=True)


INSTRUMENTS = np.array([3, 0, 77, 4_000_000_000, 12], dtype=np.uint32)


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("dtype", ["int64", "float64"])
@pytest.mark.parametrize("window", [1, 2, 5, 20, 100])
def test_ema_matches_pandas_across_batch_boundaries(window, dtype, split):
    ids, prices = market(1500, INSTRUMENTS, seed=window)
    fed, real = as_input(prices, dtype)
    bounds = split_points(ids.shape[0], split, np.random.default_rng(window))

    out = feed(EmaKernel(window), ids, fed, bounds)

    np.testing.assert_allclose(out, pandas_ema(ids, real, window), rtol=RTOL)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("dtype", ["int64", "float64"])
@pytest.mark.parametrize("window", [1, 2, 5, 30, 290, 400])
def test_ema_sma_seed_matches_talib_including_warmup(window, dtype, split):
    ids, prices = market(1500, INSTRUMENTS, seed=window + 1)
    fed, real = as_input(prices, dtype)
    bounds = split_points(ids.shape[0], split, np.random.default_rng(window))

    out = feed(EmaKernel(window, seed="sma"), ids, fed, bounds)

    expected = talib_ema(ids, real, window)
    assert_same_nan_and_close(out, expected)
    per_instrument = np.unique(ids, return_counts=True)[1]
    assert np.isnan(out).sum() == np.minimum(per_instrument, window - 1).sum()


def test_ema_sma_instrument_with_fewer_than_window_prices_stays_nan():
    kernel = EmaKernel(4, seed="sma")
    ids = np.array([1, 2, 1, 1, 2, 1], dtype=np.uint32)
    prices = np.array([1.0, 10.0, 2.0, 3.0, 20.0, 4.0])

    out = kernel.update(ids, prices)

    assert_same_nan_and_close(out, np.array([np.nan] * 5 + [2.5]))
    assert kernel.value(1) == 2.5
    assert np.isnan(kernel.value(2))


def test_ema_series_matches_pandas_and_the_kernel():
    rng = np.random.default_rng(5)
    x = 50.0 + np.cumsum(rng.normal(size=5000))

    out = ema_series(x, 12)

    np.testing.assert_allclose(out, pd.Series(x).ewm(span=12, adjust=False).mean(), rtol=RTOL)
    one = EmaKernel(12).update(np.zeros(x.shape[0], dtype=np.uint32), x)
    np.testing.assert_array_equal(out, one)


def test_ema_series_writes_into_the_given_buffer():
    x = np.array([1.0, 2.0, 4.0])
    buffer = np.full(8, -1.0)

    out = ema_series(x, 3, out=buffer)

    assert np.shares_memory(out, buffer) and out.shape == (3,)
    np.testing.assert_allclose(buffer[:3], [1.0, 1.5, 2.75], rtol=RTOL)
    assert (buffer[3:] == -1.0).all()


# --------------------------------------------------------------------------- live window change


@pytest.mark.parametrize("seed", ["first", "sma"])
def test_ema_window_change_applies_from_next_batch(seed):
    ids, prices = market(3000, INSTRUMENTS, seed=9)
    real = prices * PRICE_SCALE
    kernel = EmaKernel(10, seed=seed)
    before = feed(kernel, ids[:2000], prices[:2000], [0, 700, 2000])
    last = {int(i): float(before[ids[:2000] == i][-1]) for i in INSTRUMENTS}

    kernel.set_window(3)
    after = feed(kernel, ids[2000:], prices[2000:], [0, 1, 500, 1000])

    assert kernel.window == 3
    for instrument in INSTRUMENTS:
        rows = ids[2000:] == instrument
        expected = python_ema(list(real[2000:][rows]), last[int(instrument)], 2.0 / (3 + 1))
        np.testing.assert_allclose(after[rows], expected, rtol=RTOL)


def test_ema_window_grown_during_sma_warmup_completes_at_the_new_window():
    kernel = EmaKernel(4, seed="sma")
    prices = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    first = kernel.update(np.full(2, 5, dtype=np.uint32), np.array(prices[:2]))

    kernel.set_window(6)
    rest = kernel.update(np.full(5, 5, dtype=np.uint32), np.array(prices[2:]))

    sma = sum(prices[:6]) / 6
    expected = [np.nan] * 5 + [sma] + python_ema(prices[6:], sma, 2.0 / 7)
    assert_same_nan_and_close(np.concatenate([first, rest]), np.array(expected))


def test_ema_window_shrunk_below_warmup_count_seeds_on_next_price_with_all_values():
    kernel = EmaKernel(10, seed="sma")
    prices = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    first = kernel.update(np.zeros(5, dtype=np.uint32), np.array(prices[:5]))

    kernel.set_window(3)
    rest = kernel.update(np.zeros(2, dtype=np.uint32), np.array(prices[5:]))

    sma = sum(prices[:6]) / 6
    expected = [np.nan] * 5 + [sma] + python_ema(prices[6:], sma, 2.0 / 4)
    assert_same_nan_and_close(np.concatenate([first, rest]), np.array(expected))


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize("seed", ["first", "sma"])
def test_ema_restored_kernel_continues_identically(seed):
    ids, prices = market(4000, np.arange(300, dtype=np.uint32) * 7919, seed=3)
    uninterrupted = EmaKernel(25, seed=seed)
    uninterrupted.update(ids[:2500], prices[:2500])
    state = uninterrupted.snapshot()
    uninterrupted.update(ids[:10], prices[:10])  # later changes must not leak into the snapshot
    uninterrupted.restore(state)

    restored = EmaKernel(3, seed="first" if seed == "sma" else "sma")
    restored.restore(state)

    assert (restored.window, restored.seed) == (25, seed)
    np.testing.assert_array_equal(
        restored.update(ids[2500:], prices[2500:]), uninterrupted.update(ids[2500:], prices[2500:])
    )


def test_ema_snapshot_is_plain_arrays_and_ints():
    kernel = EmaKernel(5, seed="sma")
    kernel.update(np.array([9, 4, 9], dtype=np.uint32), np.array([1.0, 2.0, 3.0]))

    state = kernel.snapshot()

    assert state["window"] == 5 and state["seed"] == "sma"
    np.testing.assert_array_equal(state["instrument_id"], [9, 4])
    np.testing.assert_array_equal(state["count"], [2, 1])
    np.testing.assert_array_equal(state["warmup_sum"], [4.0, 2.0])
    np.testing.assert_array_equal(state["seeded"], [False, False])
    assert all(isinstance(v, int | str | np.ndarray) for v in state.values())


@pytest.mark.parametrize("key", ["window", "seed", "instrument_id", "value", "count", "seeded"])
def test_ema_restore_names_the_missing_key(key):
    kernel = EmaKernel(5)
    kernel.update(np.array([1], dtype=np.uint32), np.array([1.0]))
    state = kernel.snapshot()
    del state[key]

    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        EmaKernel(5).restore(state)


def test_ema_restore_rejects_arrays_of_different_lengths():
    kernel = EmaKernel(5)
    kernel.update(np.array([1, 2], dtype=np.uint32), np.array([1.0, 2.0]))
    state = kernel.snapshot()
    state["value"] = state["value"][:1]

    with pytest.raises(ValueError, match=r"'value' has shape \(1,\), expected \(2,\)"):
        EmaKernel(5).restore(state)


def test_ema_value_is_nan_until_seen_then_the_latest_output():
    kernel = EmaKernel(3)
    assert np.isnan(kernel.value(42))

    out = kernel.update(np.array([42, 7, 42], dtype=np.uint32), np.array([1.0, 5.0, 3.0]))

    assert kernel.value(42) == out[2] == 2.0
    assert kernel.value(7) == 5.0
    assert np.isnan(kernel.value(8))


# --------------------------------------------------------------------------- scale and layout


def test_ema_many_instruments_across_the_uint32_range():
    rng = np.random.default_rng(11)
    universe = np.unique(rng.integers(1, 2**32 - 1, size=12_000, dtype=np.uint64))[:9_998]
    universe = np.concatenate([[0, 2**32 - 1], universe]).astype(np.uint32)
    ids, prices = market(120_000, universe, seed=11)
    ids[: universe.shape[0]] = universe  # every id appears at least once
    real = prices * PRICE_SCALE
    kernel = EmaKernel(8)

    out = feed(kernel, ids, prices, split_points(ids.shape[0], "random", rng))

    assert kernel.instrument_count == 10_000
    expected = pandas_ema(ids, real, 8)
    np.testing.assert_allclose(out, expected, rtol=RTOL)
    last = pd.Series(expected).groupby(ids).last()
    for instrument in (0, 2**32 - 1, int(universe[5000])):
        assert kernel.value(instrument) == pytest.approx(last[instrument], rel=RTOL)


@pytest.mark.parametrize("seed", ["first", "sma"])
def test_ema_accepts_strided_record_fields_without_copying(seed):
    ids, prices = market(3000, INSTRUMENTS, seed=4)
    batch = TRADE.empty(ids.shape[0])
    batch["instrument_id"], batch["price"] = ids, prices
    real = np.zeros(ids.shape[0], dtype=[("instrument_id", "<u4"), ("px", "<f8"), ("pad", "u1")])
    real["instrument_id"], real["px"] = ids, prices * PRICE_SCALE
    assert not batch["price"].flags.c_contiguous and not real["px"].flags.aligned
    buffer = np.empty(5000)

    from_fields = feed(EmaKernel(7, seed), batch["instrument_id"], batch["price"], [0, 1000, 3000])
    from_real = EmaKernel(7, seed).update(real["instrument_id"], real["px"], out=buffer)

    expected = feed(EmaKernel(7, seed), ids, prices, [0, 1000, 3000])
    np.testing.assert_array_equal(from_fields, expected)
    np.testing.assert_allclose(from_real, expected, rtol=RTOL, equal_nan=True)
    assert np.shares_memory(from_real, buffer)


def test_ema_empty_batch_returns_empty_and_changes_nothing():
    kernel = EmaKernel(3)

    out = kernel.update(np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.int64))

    assert out.shape == (0,) and kernel.instrument_count == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("window", "shown"),
    [(0, "got 0"), (-3, "got -3"), (2.5, r"got 2\.5 \(float\)"), (True, r"got True \(bool\)"),
     ("20", r"got '20' \(str\)"), (None, r"got None \(NoneType\)")],
)  # fmt: skip
def test_ema_rejects_a_bad_window_naming_it(window, shown):
    message = rf"window must be an integer >= 1, {shown}"
    with pytest.raises(ValueError, match=message):
        EmaKernel(window)
    with pytest.raises(ValueError, match=message):
        EmaKernel(5).set_window(window)
    with pytest.raises(ValueError, match=message):
        ema_series(np.ones(3), window)


def test_ema_rejected_window_change_keeps_the_old_window():
    kernel = EmaKernel(5)

    with pytest.raises(ValueError):
        kernel.set_window(0)

    assert kernel.window == 5


@pytest.mark.parametrize("seed", ["SMA", "pandas", "", None])
def test_ema_rejects_an_unknown_seed_naming_it(seed):
    with pytest.raises(ValueError, match=rf"seed must be 'first' .* or 'sma' .*, got {seed!r}"):
        EmaKernel(5, seed=seed)


def test_ema_rejects_mismatched_lengths_naming_both():
    with pytest.raises(
        ValueError, match="instrument_id and price must have the same length, got 5 and 4"
    ):
        EmaKernel(5).update(np.zeros(5, dtype=np.uint32), np.zeros(4))


@pytest.mark.parametrize(
    ("ids", "prices", "message"),
    [
        (
            np.zeros(3, dtype=np.int64),
            np.zeros(3),
            "instrument_id must be a uint32 numpy array, got int64",
        ),
        (
            np.zeros(3, dtype=np.uint32),
            np.zeros(3, dtype=np.float32),
            "price must be an int64 .* got float32",
        ),
        (np.zeros(3, dtype=np.uint32), [1.0, 2.0, 3.0], "price must be an int64 .* got list"),
    ],
)
def test_ema_rejects_wrong_dtypes_naming_the_argument(ids, prices, message):
    with pytest.raises(ValueError, match=message):
        EmaKernel(5).update(ids, prices)


def test_ema_rejects_an_output_buffer_that_is_too_short():
    with pytest.raises(ValueError, match="out has length 2, too short for a batch of 3 records"):
        EmaKernel(5).update(np.zeros(3, dtype=np.uint32), np.zeros(3), out=np.empty(2))


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 60),
    st.lists(st.integers(0, 120), max_size=10),
)
def test_ema_random_sequences_and_splits_agree_with_pandas(records, window, cuts):
    ids = np.array([i * 1_000_003 for i, _ in records], dtype=np.uint32)
    x = np.array([p for _, p in records])
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})

    out = feed(EmaKernel(window), ids, x, bounds)

    np.testing.assert_allclose(out, pandas_ema(ids, x, window), rtol=RTOL)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 10**15)),  # int64 fixed-point up to 1e6
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 30),
    st.lists(st.integers(0, 120), max_size=10),
)
def test_ema_sma_random_sequences_and_splits_agree_with_talib(records, window, cuts):
    ids = np.array([2**32 - 1 - i for i, _ in records], dtype=np.uint32)
    prices = np.array([p for _, p in records], dtype=np.int64)
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})

    out = feed(EmaKernel(window, seed="sma"), ids, prices, bounds)

    assert_same_nan_and_close(out, talib_ema(ids, prices * PRICE_SCALE, window))


def test_warm_all_compiles_every_kernel():
    modules = hftagg_modules()

    warm_all()

    assert len(entry_points(modules)) >= 20  # the kernels were found, not an empty check
    assert uncompiled(modules) == []
