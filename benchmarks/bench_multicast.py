"""Multicast A/B feed: packets/s through line arbitration (and SBE decode), hftagg vs Python.

Both lines carry the same MDP3-style packets (12-byte header: MsgSeqNum uint32 + SendingTime
uint64, then one ``MDIncrementalRefreshBook46`` message of 2 entries); each line loses about 1%
of them independently (0.01% on both: real gaps), line B arrives 3 packets behind A. The
packets are ``raw_chunk`` rows, as the ``multicast`` source receives them, arbitrated in
batches of 4096 arrivals.

- ``multicast-arbitration``: arrivals/s through hftagg's arbitration (:class:`PacketFeed`:
  header read in numpy, one compiled pass for first-copy-wins, duplicates, recovery and gaps)
  against a per-packet Python loop doing the same (``int.from_bytes`` on the header, a set of
  seen numbers, the same gap rule) and producing the same output (the winning packets'
  ``raw_chunk`` records with ``seq`` set). Both pay for moving 4 KB records, which bounds
  the ratio: a ``raw_chunk`` row is 4096 bytes whatever the packet's size.
- ``multicast-arbitration-decode`` (needs the shared CME MDP3 schema): the same, each batch's
  winning packets then decoded by ``sbe_decode`` (``framing = "mdp3"``) into book updates,
  against the Python loop + the same decoder. Rates in arrivals/s (both lines' packets).

Numbers on a shared 2-core machine are noisy: the best of several runs is reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.harness import Result, best_rate
from hftagg.builtins.sources.multicast.packets import PacketFeed, PacketParams
from hftagg.records.catalog import RAW_CHUNK

ROOT = Path(__file__).resolve().parents[1]
MDP3 = ROOT.parent / "shared" / "data" / "sbe" / "cme-mdp3-v9.xml"
BATCH = 4096


def _round(packet: bytes, per_round: int, seed: int):
    """One round of arrivals on both lines: rows (a template packet), lines, relative seqs."""
    rng = np.random.default_rng(seed)
    seqs = np.arange(per_round, dtype=np.int64)
    both = rng.random(per_round) < 1e-4
    on_a = (rng.random(per_round) >= 0.01) & ~both
    on_b = (rng.random(per_round) >= 0.01) & ~both
    a, b = seqs[on_a], seqs[on_b]
    # interleave: B is 3 packets behind A
    key = np.concatenate((a * 2.0, (b + 3) * 2.0 + 1))
    order = np.argsort(key, kind="stable")
    arrival = np.concatenate((a, b))[order]
    lines = np.concatenate((np.zeros(len(a), np.int64), np.ones(len(b), np.int64)))[order]
    rows = RAW_CHUNK.empty(len(arrival))
    raw = np.frombuffer(packet, dtype=np.uint8)
    rows["data"][:, : len(raw)] = raw
    rows["length"] = len(raw)
    rows["flags"] = 1
    return rows, lines, arrival


def _set_seqs(rows: np.ndarray, seqs: np.ndarray) -> None:
    rows["data"][:, :4] = seqs.astype("<u4").view(np.uint8).reshape(-1, 4)


class _PythonArbiter:
    """The baseline: one Python step per packet, same rule (first copy wins; a number is lost
    once both lines have passed it)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.base = -1
        self.line_hi = [-1, -1]
        self.hi = -1
        self.lost = 0

    def packets(self, rows: np.ndarray, lines: np.ndarray) -> list[int]:
        keep = []
        data, line_list = rows["data"], lines.tolist()
        for i in range(len(rows)):
            s = int.from_bytes(data[i, :4].tobytes(), "little")
            line = line_list[i]
            if self.base < 0:
                self.base = s
            if s not in self.seen and s >= self.base:
                self.seen.add(s)
                keep.append(i)
                self.hi = max(self.hi, s)
            if s > self.line_hi[line]:
                self.line_hi[line] = s
            bound = min(self.line_hi)
            while self.base <= bound:
                if self.base in self.seen:
                    self.seen.discard(self.base)
                else:
                    self.lost += 1
                self.base += 1
        return keep


def _decoder():
    if not MDP3.is_file():
        return None, None
    from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
    from hftagg.builtins.protocols.sbe.mdp3 import BOOK, mdp3_packet
    from hftagg.builtins.protocols.sbe.stages import SbeDecode
    from hftagg.stages import StageContext

    codec = SbeCodec(parse_schema(MDP3))
    entry = dict(MDEntryPx={"mantissa": 4_500_250_000_000}, MDEntrySize=12, SecurityID=7,
                 RptSeq=1, NumberOfOrders=3, MDPriceLevel=1, MDUpdateAction=1,
                 MDEntryType="0")  # fmt: skip
    msg = codec.encode(BOOK, {"TransactTime": 10**18, "MatchEventIndicator": 128,
                              "NoMDEntries": [entry, dict(entry, MDEntryType="1")]})  # fmt: skip
    stage = SbeDecode(schema=str(MDP3), framing="mdp3")
    stage.open(StageContext())
    return mdp3_packet(0, 10**18, [msg]), stage


def _measure(quick: bool, decode) -> tuple[float, float, dict]:
    packet, stage = decode if decode is not None else (bytes(40), None)
    per_round = BATCH * 2
    rounds = 6 if quick else 30
    rows, lines, rel = _round(packet, per_round, seed=1)
    cuts = list(range(0, len(rows), BATCH))
    expect = len(np.unique(rel))

    def hftagg_work() -> int:
        feed = PacketFeed(PacketParams(), 2)
        done = decoded = 0
        for r in range(rounds):
            _set_seqs(rows, rel + r * per_round)
            for a in cuts:
                out = feed.process(rows[a : a + BATCH], lines[a : a + BATCH],
                                   rows["length"][a : a + BATCH].astype(np.int64), 0)  # fmt: skip
                if stage is not None and "packets" in out:
                    decoded += len(stage.process(out["packets"]).get("book", ()))
                done += min(BATCH, len(rows) - a)
        assert feed.counters["delivered"] == rounds * expect
        assert stage is None or decoded == 2 * rounds * expect
        return done

    def python_work() -> int:
        arb = _PythonArbiter()
        done = decoded = kept = 0
        for r in range(rounds):
            _set_seqs(rows, rel + r * per_round)
            for a in cuts:
                part = rows[a : a + BATCH]
                keep = arb.packets(part, lines[a : a + BATCH])
                kept += len(keep)
                won = part[keep]  # the same output as hftagg's: the winning packets' records
                won["seq"] = [int.from_bytes(won["data"][i, :4].tobytes(), "little")
                              for i in range(len(won))]  # fmt: skip
                if stage is not None and keep:
                    decoded += len(stage.process(won).get("book", ()))
                done += len(part)
        assert kept == rounds * expect
        return done

    hftagg_work()
    repeat = 3 if quick else 5
    fast = best_rate(hftagg_work, repeat)
    slow = best_rate(python_work, 2 if quick else 3)
    extra = {"arrivals": rounds * len(rows), "batch": BATCH, "loss_per_line": "1%",
             "lost_on_both": "0.01%"}  # fmt: skip
    return fast, slow, extra


def run(quick: bool = False) -> list[Result]:
    fast, slow, extra = _measure(quick, None)
    results = [Result("multicast-arbitration", fast, slow, "per-packet Python arbitration",
                      "packets/s", extra=extra)]  # fmt: skip
    packet, stage = _decoder()
    if stage is not None:
        fast, slow, extra = _measure(quick, (packet, stage))
        results.append(Result("multicast-arbitration-decode", fast, slow,
                              "per-packet Python arbitration + the same sbe_decode",
                              "packets/s", extra=extra))  # fmt: skip
    return results
