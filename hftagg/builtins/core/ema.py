"""Built-in plugin: the EMA stage, per instrument, over trade prices.

``window`` is live: a change applies from the next batch; each instrument's current EMA is kept
and continues with the new smoothing factor ``alpha = 2 / (window + 1)`` (no re-warm-up).
``seed = "first"`` follows pandas ``ewm(span=window, adjust=False)`` (the first price seeds the
EMA); ``seed = "sma"`` follows TA-Lib (NaN for the first window-1 prices, then the SMA seed).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hftagg.hookspecs import hookimpl
from hftagg.kernels.ema import EmaKernel
from hftagg.records.catalog import INDICATOR, copy_header
from hftagg.stages import KernelStage, Params, Port, StageContext, live, restart

__all__ = ["Ema", "EmaParams"]


class EmaParams(Params):
    window: int = live(
        20, ge=1, le=1_000_000, description="EMA span in records (alpha = 2/(window+1))"
    )
    seed: Literal["first", "sma"] = restart(
        "first", description="warm-up: pandas (first) or TA-Lib (sma)"
    )


class Ema(KernelStage):
    type_name = "ema"
    Params = EmaParams
    inputs = {"input": Port("trade", "md.trades", "trades whose price is averaged")}
    outputs = {"output": Port("indicator", "ind.ema", "EMA after each trade, same header")}

    def make_kernel(self, params: EmaParams) -> EmaKernel:
        return EmaKernel(params.window, seed=params.seed)

    def configure_kernel(self, kernel: EmaKernel, params: EmaParams) -> None:
        kernel.set_window(params.window)
        kernel.set_seed(params.seed)  # a restored snapshot carries its own seed

    def open_buffers(self, ctx: StageContext) -> None:
        self._out = INDICATOR.empty(ctx.max_batch)
        self._values = np.empty(ctx.max_batch, dtype=np.float64)

    def process(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n > len(self._out):
            self._out = INDICATOR.empty(n)
            self._values = np.empty(n, dtype=np.float64)
        out = self._out[:n]
        copy_header(batch, out)
        out["value"] = self.kernel.update(batch["instrument_id"], batch["price"], out=self._values)
        return out


@hookimpl
def hftagg_register_stage_types(register):
    register(Ema)
