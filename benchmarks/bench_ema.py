"""EMA kernels: elements/s of hftagg's compiled EMA against pandas (and TA-Lib), same data, one run.

- ``ema``: ``ema_series`` on one float64 random-walk series of 10 M prices (1 M with --quick),
  window 20, against ``pandas.Series.ewm(span=20, adjust=False).mean()`` and ``talib.EMA``.
- ``ema-64-instruments``: ``EmaKernel.update`` on 10 M records of 64 instruments interleaved at
  random, int64 fixed-point prices (scale 1e-9), against pandas ``groupby(id).ewm(...).mean()``
  on the same records, brought back to record order so both produce the same array.

Every rate is the best of several runs after a warm-up call (numba compiles on the first call).
Each benchmark also checks that hftagg and the baseline agree to 1e-9 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.harness import Result, best_rate
from hftagg.builtins.core.indicators.ema import EmaKernel, ema_series
from hftagg.records import PRICE_SCALE

WINDOW = 20
INSTRUMENTS = 64
BATCH = 4096
TARGET = 400e6


def _prices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 + np.cumsum(rng.normal(0.0, 0.01, size=n))


def _round(rate: float) -> float:
    """A rate to 4 significant digits, still a number in --json output."""
    return float(f"{rate:.4g}")


def _check(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest relative difference; fails the benchmark if it is above 1e-9."""
    ok = ~np.isnan(theirs)
    worst = float(np.max(np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok])))
    if worst > 1e-9 or not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        raise AssertionError(f"{name}: hftagg and the baseline disagree (max rel diff {worst:g})")
    return worst


def bench_series(n: int, repeat: int) -> Result:
    import talib

    x = _prices(n)
    out = np.empty(n)
    ema_series(x, WINDOW, out)
    ours = best_rate(lambda: ema_series(x, WINDOW, out).shape[0], repeat)
    reference = pd.Series(x).ewm(span=WINDOW, adjust=False).mean().to_numpy()
    worst = _check("ema", out, reference)
    theirs = best_rate(lambda: len(pd.Series(x).ewm(span=WINDOW, adjust=False).mean()), repeat)
    ta = best_rate(lambda: len(talib.EMA(x, timeperiod=WINDOW)), repeat)
    return Result(
        name="ema",
        hftagg=ours,
        baseline=theirs,
        baseline_name="pandas ewm",
        unit="el/s",
        target=TARGET,
        extra={
            "talib EMA el/s": _round(ta),
            "elements": n,
            "window": WINDOW,
            "max rel diff vs pandas": worst,
        },
    )


def _records(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    universe = rng.choice(2**32, size=INSTRUMENTS, replace=False).astype(np.uint32)
    ids = universe[rng.integers(0, INSTRUMENTS, size=n)]
    return ids, np.round(_prices(n, seed=2) / PRICE_SCALE).astype(np.int64)


def _kernel_rate(ids: np.ndarray, prices: np.ndarray, out: np.ndarray, repeat: int, **kw) -> float:
    """EmaKernel.update rate on the whole array at once, or in batches of ``batch``."""
    batch = kw.pop("batch", ids.shape[0])
    kernel = EmaKernel(WINDOW, **kw)
    n = ids.shape[0]

    def work() -> int:
        for start in range(0, n, batch):
            kernel.update(ids[start : start + batch], prices[start : start + batch], out[start:])
        return n

    work()
    return best_rate(work, repeat)


def _pandas_grouped(ids: np.ndarray, prices: np.ndarray) -> np.ndarray:
    grouped = pd.Series(prices * PRICE_SCALE).groupby(ids).ewm(span=WINDOW, adjust=False).mean()
    return grouped.reset_index(level=0, drop=True).sort_index().to_numpy()


def bench_instruments(n: int, repeat: int) -> Result:
    ids, prices = _records(n)
    out = np.empty(n)
    ours = _kernel_rate(ids, prices, out, repeat)
    worst = _check(
        "ema-64-instruments", EmaKernel(WINDOW).update(ids, prices), _pandas_grouped(ids, prices)
    )
    theirs = best_rate(lambda: len(_pandas_grouped(ids, prices)), max(2, repeat // 2))
    one_id = np.zeros(n, dtype=np.uint32)
    return Result(
        name=f"ema-{INSTRUMENTS}-instruments",
        hftagg=ours,
        baseline=theirs,
        baseline_name="pandas groupby-ewm",
        unit="el/s",
        extra={
            "records": n,
            "prices": "int64 fixed-point 1e-9, instruments interleaved at random",
            f"hftagg in batches of {BATCH} el/s": _round(
                _kernel_rate(ids, prices, out, repeat, batch=BATCH)
            ),
            "hftagg seed=sma el/s": _round(_kernel_rate(ids, prices, out, repeat, seed="sma")),
            "hftagg 1 instrument el/s": _round(_kernel_rate(one_id, prices, out, repeat)),
            "max rel diff vs pandas": worst,
        },
    )


def run(quick: bool) -> list[Result]:
    n = 1_000_000 if quick else 10_000_000
    repeat = 3 if quick else 7
    return [bench_series(n, repeat), bench_instruments(n, repeat)]
