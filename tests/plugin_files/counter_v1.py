"""Test plugin, version 1: counts trades per batch; state = the running count."""

import numpy as np

from hftagg import Params, Port, Stage, hookimpl
from hftagg.records import INDICATOR

VERSION = 1


class Counter(Stage):
    type_name = "counter"
    Params = Params
    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("indicator", "ind.count")}

    def open(self, ctx):
        self.count = 0

    def process(self, batch):
        out = INDICATOR.empty(len(batch))
        for name in ("ts_event", "ts_recv", "seq", "instrument_id"):
            out[name] = batch[name]
        out["value"] = self.count + np.arange(1, len(batch) + 1) + VERSION * 1e9
        self.count += len(batch)
        return out

    def snapshot(self):
        return {"count": self.count}

    def restore(self, state):
        self.count = state["count"]


@hookimpl
def hftagg_register_stage_types(register):
    register(Counter)
