"""Test plugin: a core stage that holds its batch while ``OPEN`` is clear (a stage stuck in one
batch: a slow computation, a first batch compiling) and passes quotes through otherwise."""

import threading

from hftagg import Params, Port, Stage, hookimpl, live

OPEN = threading.Event()
OPEN.set()
HOLDING = threading.Event()


class GateParams(Params):
    note: int = live(0)


class Gate(Stage):
    kind = "analytics"
    type_name = "gate"
    Params = GateParams
    inputs = {"quotes": Port("quote", "md.quotes")}
    outputs = {"output": Port("quote", "gated.quotes")}

    def process(self, batch):
        if not OPEN.is_set():
            HOLDING.set()
            OPEN.wait()
        return {"output": batch.copy()}


@hookimpl
def hftagg_register_stage_types(register):
    register(Gate)
