"""Test plugin: a sink that checks per-instrument ``seq`` is contiguous on each stream it reads
and writes what it found as JSON to ``out`` when it closes (for runs in another process)."""

import json

import numpy as np

from hftagg import Params, Port, SinkStage, hookimpl, restart


class SeqCheckParams(Params):
    streams: list[str] = restart(["md.trades"])
    out: str = restart("seqcheck.json")


class SeqCheck(SinkStage):
    type_name = "seqcheck"
    Params = SeqCheckParams

    @classmethod
    def ports(cls, params):
        return {t: Port(None, t) for t in params.streams}, {}

    def open(self, ctx):
        self.next_seq = {t: {} for t in self.params.streams}
        self.found = {t: {"records": 0, "gaps": 0, "repeats": 0} for t in self.params.streams}

    def write(self, batch, port, offset):
        expected, found = self.next_seq[port], self.found[port]
        found["records"] += len(batch)
        for iid in np.unique(batch["instrument_id"]).tolist():
            seq = batch["seq"][batch["instrument_id"] == iid].astype(np.int64)
            start = expected.get(iid, 0)
            steps = np.diff(np.concatenate([[start - 1], seq]))
            found["gaps"] += int(np.count_nonzero(steps > 1))
            found["repeats"] += int(np.count_nonzero(steps < 1))
            expected[iid] = int(seq[-1]) + 1

    def close(self):
        with open(self.params.out, "w") as f:
            json.dump(self.found, f)


@hookimpl
def hftagg_register_stage_types(register):
    register(SeqCheck)
