"""Test plugin: a sink that keeps copies of what it receives in ``CAPTURED[key]``."""

from hftagg import Params, Port, SinkStage, hookimpl, restart

CAPTURED: dict[str, list] = {}


class CaptureParams(Params):
    streams: list[str] = restart(["ind.ema"])
    key: str = restart("default")


class Capture(SinkStage):
    type_name = "capture"
    Params = CaptureParams

    @classmethod
    def ports(cls, params):
        return {t: Port(None, t) for t in params.streams}, {}

    def open(self, ctx):
        for topic in self.params.streams:
            CAPTURED.setdefault(f"{self.params.key}:{topic}", [])

    def write(self, batch, port, offset):
        CAPTURED[f"{self.params.key}:{port}"].append((offset, batch.copy()))


@hookimpl
def hftagg_register_stage_types(register):
    register(Capture)
