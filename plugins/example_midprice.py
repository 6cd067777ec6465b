"""Example plugin: mid price and spread from quotes, per instrument.

Copy this file (say to plugins/my_stage.py), change ``type_name`` and ``process``, restart, and
your stage shows in ``hftagg plugins`` and can be used from config.toml::

    [stages.mid]
    type = "example_midprice"
    bps = false          # spread in price units (false) or basis points of the mid (true)

Each quote becomes one ``indicator`` record on ``ind.mid`` (the mid) and one on ``ind.spread``,
with the quote's header (so ``seq`` stays contiguous per instrument). Work is vectorised: Python
runs once per batch.
"""

import numpy as np

from hftagg import Params, Port, Stage, hookimpl, live
from hftagg.records import INDICATOR, PRICE_SCALE, copy_header


class MidPriceParams(Params):
    bps: bool = live(False, description="spread in basis points of the mid instead of price")


class MidPrice(Stage):
    kind = "analytics"
    type_name = "example_midprice"
    Params = MidPriceParams
    inputs = {"quotes": Port("quote", "md.quotes")}
    outputs = {"mid": Port("indicator", "ind.mid"), "spread": Port("indicator", "ind.spread")}

    def process(self, batch):
        mid = INDICATOR.empty(len(batch))
        spread = INDICATOR.empty(len(batch))
        copy_header(batch, mid)
        copy_header(batch, spread)
        bid = batch["bid_px"] * PRICE_SCALE
        ask = batch["ask_px"] * PRICE_SCALE
        mid["value"] = (bid + ask) / 2
        spread["value"] = ask - bid
        if self.params.bps:
            with np.errstate(divide="ignore", invalid="ignore"):
                spread["value"] = spread["value"] / mid["value"] * 1e4
        return {"mid": mid, "spread": spread}


@hookimpl
def hftagg_register_stage_types(register):
    register(MidPrice)
