"""SBE decoding: messages/s of hftagg's compiled decoder against pure-Python SBE decoders.

- ``sbe-decode-hftagg-md``: a stream of framed hftagg market-data messages (3 book updates per
  trade, 2-byte length prefix) decoded in batches of 4096 messages into ``trade`` and
  ``book_update`` record batches (compiled scan + compiled field gather), against the PyPI
  ``sbe`` package decoding the same messages one by one (``Schema.decode``; a sample, rate
  extrapolated). Both results are checked against the encoded records.
- ``sbe-decode-cme-mdp3`` (needs the shared CME schema): MDP3 packets of
  ``MDIncrementalRefreshBook46`` messages (4 entries each) decoded into ``book_update`` records,
  against ``sbedecoder`` (the PyPI MDP3 decoder) walking the same packets; rates in messages/s.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Result, best_rate
from hftagg.builtins.protocols import BUILTIN_DEFINITIONS
from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe.mdp3 import BOOK, mdp3_packet, mdp3_records
from hftagg.builtins.protocols.sbe.records import RecordDecoder, RecordEncoder
from hftagg.records.catalog import BOOK_UPDATE, TRADE

ROOT = Path(__file__).resolve().parents[1]
HFTAGG_MD = BUILTIN_DEFINITIONS / "sbe" / "hftagg-md.xml"
MDP3 = ROOT.parent / "shared" / "data" / "sbe" / "cme-mdp3-v9.xml"
BATCH = 4096
TARGET = 20e6


def _stream(codec: SbeCodec, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    kinds = rng.random(n) < 0.25
    trades, books = TRADE.empty(int(kinds.sum())), BOOK_UPDATE.empty(int((~kinds).sum()))
    for batch in (trades, books):
        m = len(batch)
        batch["ts_event"] = np.arange(m) * 1000
        batch["ts_recv"] = batch["ts_event"] + 50
        batch["seq"] = np.arange(m)
        batch["instrument_id"] = rng.integers(1, 9, m)
        batch["price"] = rng.integers(90, 110, m) * 10**9
        batch["size"] = rng.integers(1, 1000, m) * 10**8  # 1e-8 fixed-point quantities
        batch["side"] = ord("B")
    books["action"] = ord("M")
    enc = RecordEncoder(codec)
    t_frames = enc.encode("trade", trades).reshape(len(trades), -1)
    b_frames = enc.encode("book_update", books).reshape(len(books), -1)
    order_t = np.flatnonzero(kinds)
    order_b = np.flatnonzero(~kinds)
    parts = [None] * n
    for i, row in zip(order_t.tolist(), t_frames, strict=True):
        parts[i] = row
    for i, row in zip(order_b.tolist(), b_frames, strict=True):
        parts[i] = row
    lengths = np.array([len(p) for p in parts])
    return np.concatenate(parts), np.cumsum(lengths), trades, books


def _hftagg_md(quick: bool) -> Result:
    codec = SbeCodec(parse_schema(HFTAGG_MD))
    decoder = RecordDecoder(codec, {"trade": TRADE, "book_update": BOOK_UPDATE})
    n = 400_000 if quick else 4_000_000
    buf, ends, trades, books = _stream(codec, n)
    cuts = np.concatenate(([0], ends[BATCH - 1 :: BATCH], [len(buf)] if n % BATCH else []))
    cuts = np.unique(cuts).astype(np.int64)

    def work() -> int:
        nt = nb = 0
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            out = decoder.records(codec.scan(buf[a:b]))
            nt += len(out["trade"])
            nb += len(out["book_update"])
        assert (nt, nb) == (len(trades), len(books))
        return nt + nb

    work()
    rate = best_rate(work, repeat=3 if quick else 5)
    check = decoder.records(codec.scan(buf[: cuts[1]]))
    assert (check["trade"] == trades[: len(check["trade"])]).all()

    import sbe

    with open(HFTAGG_MD) as f:
        ref = sbe.Schema.parse(f)
    sample = 20_000 if quick else 100_000
    starts = np.concatenate(([0], ends[:-1]))
    msgs = [buf[s + 2 : e].tobytes() for s, e in zip(starts[:sample].tolist(),
                                                      ends[:sample].tolist(), strict=True)]  # fmt: skip
    t0 = time.perf_counter()
    decoded = [ref.decode(m) for m in msgs]
    baseline = sample / (time.perf_counter() - t0)
    first_trade = next(d for d in decoded if d.message_name == "Trade").value
    assert first_trade["price"] == trades["price"][0]
    return Result(
        "sbe-decode-hftagg-md",
        rate,
        baseline,
        "sbe (PyPI) Schema.decode",
        "msg/s",
        target=TARGET,
        extra={"messages": n, "batch": BATCH, "bytes_per_message": round(len(buf) / n, 1)},
    )


def _mdp3(quick: bool) -> Result | None:
    if not MDP3.exists():
        return None
    import sbedecoder

    codec = SbeCodec(parse_schema(MDP3))
    rng = np.random.default_rng(1)
    entry = {
        "MDEntryPx": {"mantissa": 0},
        "MDEntrySize": 5,
        "SecurityID": 7,
        "RptSeq": 1,
        "NumberOfOrders": 1,
        "MDPriceLevel": 1,
        "MDUpdateAction": 1,
        "MDEntryType": "0",
    }
    templates = []
    for k in range(64):
        entries = [dict(entry, MDEntryPx={"mantissa": int(rng.integers(1, 10**6)) * 10**7},
                        RptSeq=k * 4 + j) for j in range(4)]  # fmt: skip
        templates.append(codec.encode(BOOK, {"TransactTime": k, "MatchEventIndicator": 128,
                                             "NoMDEntries": entries}))  # fmt: skip
    n_packets = 5_000 if quick else 50_000
    packets = [mdp3_packet(p, p, templates[(p * 3) % 64 : (p * 3) % 64 + 3])
               for p in range(n_packets)]  # fmt: skip
    sizes = np.array([len(p) for p in packets])
    ends = np.cumsum(sizes)
    starts = ends - sizes
    buf = np.frombuffer(b"".join(packets), dtype=np.uint8)
    ts = np.zeros(n_packets, dtype=np.int64)
    n_msgs = 3 * n_packets

    def work() -> int:
        done = 0
        for a in range(0, n_packets, 1024):
            b = min(a + 1024, n_packets)
            seg = (starts[a:b] - starts[a], ends[a:b] - starts[a])
            d = codec.decode(buf[starts[a] : ends[b - 1]], "mdp3", seg)
            mdp3_records(codec, d, ts[a:b])
            done += d.count
        return done

    work()
    rate = best_rate(work, repeat=3)
    schema = sbedecoder.MDPSchema()
    schema.parse(str(MDP3))
    parser = sbedecoder.SBEParser(sbedecoder.MDPMessageFactory(schema))
    sample = packets[: 2000 if quick else 5000]
    t0 = time.perf_counter()
    count = 0
    for p in sample:
        for msg in parser.parse(p, offset=12):
            for e in msg.no_md_entries:
                e.md_entry_px.value  # noqa: B018 - decode the fields as a consumer would
                e.md_entry_size.value  # noqa: B018
            count += 1
    baseline = count / (time.perf_counter() - t0)
    return Result(
        "sbe-decode-cme-mdp3",
        rate,
        baseline,
        "sbedecoder (PyPI)",
        "msg/s",
        extra={"messages": n_msgs, "entries_per_message": 4},
    )


def run(quick: bool = False) -> list[Result]:
    results = [_hftagg_md(quick)]
    mdp3 = _mdp3(quick)
    if mdp3 is not None:
        results.append(mdp3)
    return results
