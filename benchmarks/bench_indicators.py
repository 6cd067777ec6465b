"""Indicator kernels: elements/s of hftagg's compiled indicators against baselines, one run.

- ``rolling-ols``: ``OlsKernel.update`` (slope, intercept, r², window 100) on one random-walk
  series of 1 M prices (200 k with --quick), against numpy: ``sliding_window_view`` and a
  vectorised least-squares solve of every window (``windows @ pinv(X).T`` for the coefficients,
  r² from the windows' centred sums of squares). Target ratio: >= 100x (in ``extra``).
- ``sma`` and ``rsi``: ``SmaKernel`` / ``RsiKernel`` on 10 M prices (1 M with --quick), window 20
  and 14, against ``talib.SMA`` / ``talib.RSI`` on the same float64 array. TA-Lib is a C loop over
  one series; hftagg's kernels also look up the instrument and keep per-instrument state (one
  instrument here, so the lookup is skipped while the id repeats).

Every rate is the best of several runs after a warm-up call. Each benchmark checks that hftagg
and the baseline agree (1e-9 relative) before timing.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Result, best_rate
from hftagg.builtins.core.indicators.kernels import OlsKernel, RsiKernel, SmaKernel

OLS_WINDOW = 100
OLS_TARGET_RATIO = 100.0
BATCH = 4096


def _prices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 + np.cumsum(rng.normal(0.0, 0.01, size=n))


def _round(rate: float) -> float:
    return float(f"{rate:.4g}")


def _check(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest relative difference; fails the benchmark if it is above 1e-9."""
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        raise AssertionError(f"{name}: hftagg and the baseline have NaN in different places")
    ok = ~np.isnan(theirs) & (theirs != 0)
    worst = float(np.max(np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok])))
    if worst > 1e-9:
        raise AssertionError(f"{name}: hftagg and the baseline disagree (max rel diff {worst:g})")
    return worst


def _batched_rate(update, n: int, repeat: int) -> float:
    def work() -> int:
        for start in range(0, n, BATCH):
            update(start, min(start + BATCH, n))
        return n

    work()
    return best_rate(work, repeat)


# --------------------------------------------------------------------------- rolling OLS


def numpy_rolling_ols(y: np.ndarray, window: int) -> np.ndarray:
    """(3, n): slope, intercept (at each window's oldest point), r², NaN for the first window-1."""
    wins = np.lib.stride_tricks.sliding_window_view(y, window)
    design = np.column_stack([np.arange(window, dtype=np.float64), np.ones(window)])
    coef = wins @ np.linalg.pinv(design).T  # least squares of every window at once
    centred = wins - wins.mean(axis=1, keepdims=True)
    x = design[:, 0] - design[:, 0].mean()
    ss_tot = np.einsum("ij,ij->i", centred, centred)
    out = np.full((3, y.shape[0]), np.nan)
    out[0, window - 1 :] = coef[:, 0]
    out[1, window - 1 :] = coef[:, 1]
    out[2, window - 1 :] = coef[:, 0] ** 2 * (x @ x) / ss_tot
    return out


def bench_ols(n: int, repeat: int) -> Result:
    y = _prices(n, seed=1)
    ids = np.zeros(n, dtype=np.uint32)
    ts = np.zeros(n, dtype=np.int64)
    out = np.empty((3, n))

    def ours_once() -> int:
        OlsKernel(OLS_WINDOW).update(ids, ts, y, out=out)
        return n

    ours_once()
    theirs_values = numpy_rolling_ols(y, OLS_WINDOW)
    # the pinv solve loses digits when a window's slope (and so r²) is close to 0, compare the
    # windows whose slope is not tiny; the tests check every window against exact least squares
    worst = _check("rolling-ols intercept", out[1], theirs_values[1])
    fitted = np.abs(theirs_values[0]) > 1e-3
    for row, what in ((0, "slope"), (2, "r2")):
        worst = max(
            worst, _check(f"rolling-ols {what}", out[row][fitted], theirs_values[row][fitted])
        )
    ours = best_rate(ours_once, repeat)
    theirs = best_rate(lambda: numpy_rolling_ols(y, OLS_WINDOW).shape[1], max(2, repeat // 2))
    kernel = OlsKernel(OLS_WINDOW)
    batched = _batched_rate(lambda a, b: kernel.update(ids[a:b], ts[a:b], y[a:b], out=out[:, a:]),
                            n, repeat)  # fmt: skip
    ratio = ours / theirs
    return Result(
        name="rolling-ols",
        hftagg=ours,
        baseline=theirs,
        baseline_name="numpy sliding_window lstsq",
        unit="el/s",
        extra={
            "target ratio": f">= {OLS_TARGET_RATIO:g}x: {'met' if ratio >= OLS_TARGET_RATIO else 'MISSED'}",
            f"hftagg in batches of {BATCH} el/s": _round(batched),
            "elements": n,
            "window": OLS_WINDOW,
            "outputs": "slope, intercept, r2 (all three, both sides)",
            "max rel diff vs numpy (|slope| > 1e-3)": worst,
        },
    )


# --------------------------------------------------------------------------- vs TA-Lib


def _bench_talib(name: str, kernel_type, reference, window: int, n: int, repeat: int) -> Result:
    x = _prices(n, seed=2)
    ids = np.zeros(n, dtype=np.uint32)
    out = np.empty(n)

    def ours_once() -> int:
        kernel_type(window).update(ids, x, out=out)
        return n

    ours_once()
    worst = _check(name, out, reference(x, window))
    ours = best_rate(ours_once, repeat)
    theirs = best_rate(lambda: len(reference(x, window)), repeat)
    kernel = kernel_type(window)
    batched = _batched_rate(lambda a, b: kernel.update(ids[a:b], x[a:b], out=out[a:]), n, repeat)
    return Result(
        name=name,
        hftagg=ours,
        baseline=theirs,
        baseline_name=f"talib.{reference.__name__}",
        unit="el/s",
        extra={
            f"hftagg in batches of {BATCH} el/s": _round(batched),
            "elements": n,
            "window": window,
            "max rel diff vs TA-Lib": worst,
        },
    )


def run(quick: bool = False) -> list[Result]:
    import talib

    repeat = 3 if quick else 5
    n = 1_000_000 if quick else 10_000_000
    return [
        bench_ols(200_000 if quick else 1_000_000, repeat),
        _bench_talib("sma", SmaKernel, talib.SMA, 20, n, repeat),
        _bench_talib("rsi", RsiKernel, talib.RSI, 14, n, repeat),
    ]
