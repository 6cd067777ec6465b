"""Time bars: trades/s of hftagg's 1m bar kernel against pandas on the same data, one run.

10 M trades (1 M with --quick) over 16 instruments, about 10 trades per instrument per second,
fed to ``TimeBarKernel`` (1m, ``close_on="any_event"``, synthetic bars on) in batches of 65 536
trades, against pandas ``groupby([instrument_id, floor(ts_event, 1m)])`` with first/max/min/
last/sum/count and VWAP on the whole array at once (the baseline needs no state across batches
and emits no synthetic bars, so it does less work). Both results are checked equal first.
Target: 50 M trades/s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.harness import Result, best_rate
from hftagg.builtins.core.bars.kernels import TimeBarKernel
from hftagg.records import QTY_UNITS, TRADE

MINUTE = 60 * 10**9
BATCH = 65_536
INSTRUMENTS = 16


def _trades(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    trades = TRADE.empty(n)
    trades["instrument_id"] = rng.integers(1, INSTRUMENTS + 1, n, dtype=np.uint32) * 1009
    trades["price"] = np.round(100 + np.cumsum(rng.normal(0, 0.01, n)), 2) * 1e9
    trades["size"] = rng.integers(1, 1000, n) * QTY_UNITS  # 1e-8 fixed-point quantities
    trades["ts_event"] = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 12_500_000, n))
    trades["ts_recv"] = trades["ts_event"] + 5000
    return trades


def _pandas(trades: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({f: trades[f] for f in ("instrument_id", "ts_event", "price", "size")})
    df["start"] = (df["ts_event"] // MINUTE) * MINUTE
    df["pq"] = df["price"] * 1e-9 * df["size"]
    out = df.groupby(["instrument_id", "start"]).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"),
        close=("price", "last"), volume=("size", "sum"), trade_count=("price", "count"),
        pq=("pq", "sum"),
    )  # fmt: skip
    out["vwap"] = out["pq"] / out["volume"]
    return out


def _hftagg(trades: np.ndarray) -> np.ndarray:
    kernel = TimeBarKernel(MINUTE)
    closed = [kernel.update(trades[i : i + BATCH])[0].copy() for i in range(0, len(trades), BATCH)]
    closed.append(kernel.flush().copy())
    return np.concatenate(closed)


def _check(ours: np.ndarray, ref: pd.DataFrame) -> None:
    real = ours[ours["synthetic"] == 0]
    order = np.lexsort((real["ts_event"], real["instrument_id"]))
    real = real[order]
    for name in ("open", "high", "low", "close", "volume", "trade_count"):
        if not np.array_equal(real[name], ref[name].to_numpy()):
            raise AssertionError(f"bars: hftagg and pandas disagree on {name}")
    if not np.allclose(real["vwap"], ref["vwap"].to_numpy(), rtol=1e-12):
        raise AssertionError("bars: hftagg and pandas disagree on vwap")


def run(quick: bool = False) -> list[Result]:
    n = 1_000_000 if quick else 10_000_000
    repeat = 3 if quick else 5
    trades = _trades(n)
    ours = _hftagg(trades)
    _check(ours, _pandas(trades))

    def work_hftagg() -> int:
        kernel = TimeBarKernel(MINUTE)
        for i in range(0, n, BATCH):
            kernel.update(trades[i : i + BATCH])
        return n

    def work_pandas() -> int:
        _pandas(trades)
        return n

    rate = best_rate(work_hftagg, repeat)
    baseline = best_rate(work_pandas, 2 if quick else 3)
    return [
        Result(
            "bars-1m-time", float(f"{rate:.4g}"), float(f"{baseline:.4g}"),
            "pandas groupby", "trades/s", target=50e6,
            extra={"trades": n, "instruments": INSTRUMENTS, "batch": BATCH,
                   "bars": int(len(ours)), "synthetic": int(ours["synthetic"].sum())},
        )
    ]  # fmt: skip
