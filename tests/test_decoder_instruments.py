"""Decoders map instruments through the registry: FIX Symbol (55) / SecurityID (48) text and
MDP3 SecurityID (SecurityDefinition Symbol when seen) become registry ids, in bulk per feed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.protocols.fix import kernels
from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe.mdp3 import BOOK, mdp3_packet
from hftagg.builtins.protocols.sbe.stages import SbeDecode
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import RAW_CHUNK
from hftagg.stages import StageContext


def fix_wire(msg_type: str, body, seq: int = 1) -> bytes:
    return m.encode("FIX.4.4", msg_type, "MD", "HFT", seq, body,
                    sending_time="20260102-03:04:05.678")  # fmt: skip


def test_fix_symbols_map_through_the_registry_whatever_the_split_points():
    registry = InstrumentRegistry()
    registry.define("ESZ6", "cme_fix", venue_symbol="ES.Z6")  # a defined venue spelling
    entries = [m.MdEntry("0", "1.5", 10, action="0", symbol=s)
               for s in ("ES.Z6", "EURUSD", "GBPUSD", "EURUSD", "AAPL")]  # fmt: skip
    data = fix_wire(*m.incremental_refresh(entries[:3]), seq=1) + fix_wire(
        *m.incremental_refresh(entries[3:]), seq=2
    )
    decoder = MarketDataDecoder(registry=registry, venue="cme_fix")
    cut = data.index(b"55=GBP") + 5  # a symbol split across two feeds
    book = np.concatenate([decoder.feed(data[:cut]).book, decoder.feed(data[cut:]).book])
    spellings = ["ES.Z6", "EURUSD", "GBPUSD", "EURUSD", "AAPL"]
    expected = registry.ids_for("cme_fix", spellings, define=False)
    assert expected.all()  # every spelling was defined by the decoder on first sight
    assert book["instrument_id"].tolist() == expected.tolist()
    assert registry.symbols_for(book["instrument_id"]).tolist() == [
        "ESZ6", "EURUSD", "GBPUSD", "EURUSD", "AAPL"]  # fmt: skip
    assert decoder.counters["unknown_instrument_entries"] == 0


def test_fix_pinned_symbol_ids_and_security_id_text_use_the_registry():
    registry = InstrumentRegistry()
    by_symbol = MarketDataDecoder({"EURUSD": 77, "GBPUSD": 0}, registry=registry, venue="lmax")
    out = by_symbol.feed(
        fix_wire(
            *m.incremental_refresh(
                [m.MdEntry("0", "1.5", 1, action="0", symbol=s) for s in ("EURUSD", "GBPUSD")]
            )
        )
    )
    assert out.book["instrument_id"].tolist() == [77, registry.id_of("GBPUSD", "lmax")]
    assert registry.label(77) == "EURUSD@lmax"

    body = [(268, 2), (279, 0), (269, 0), (48, 123456), (270, "9.25"), (271, 5),
            (279, 2), (269, 1), (48, 7), (270, "9.5"), (271, 0)]  # fmt: skip
    by_id = MarketDataDecoder(instrument_key="security_id", registry=registry, venue="cme")
    ids = by_id.feed(fix_wire("X", body)).book["instrument_id"]
    assert ids.tolist() == registry.ids_for("cme", ["123456", "7"], define=False).tolist()
    assert registry.symbols_for(ids).tolist() == ["123456", "7"]


MDP3 = Path(__file__).parents[1].parent / "shared" / "data" / "sbe" / "cme-mdp3-v9.xml"
needs_mdp3 = pytest.mark.skipif(not MDP3.is_file(), reason=f"shared SBE test data absent: {MDP3}")


def _chunks(packets: list[bytes]) -> np.ndarray:
    batch = RAW_CHUNK.empty(len(packets))
    for k, pkt in enumerate(packets):
        batch["data"][k, : len(pkt)] = np.frombuffer(pkt, dtype=np.uint8)
        batch["length"][k] = len(pkt)
    batch["flags"] = 1  # datagrams
    batch["instrument_id"] = 9  # the raw stream, not an instrument
    return batch


@needs_mdp3
def test_mdp3_security_ids_map_through_the_registry_with_definition_symbols():
    codec = SbeCodec(parse_schema(MDP3))

    def book(sid: int, rpt: int) -> bytes:
        entry = dict(MDEntryPx={"mantissa": 100 * 10**9}, MDEntrySize=1, SecurityID=sid,
                     RptSeq=rpt, NumberOfOrders=1, MDPriceLevel=1, MDUpdateAction=0,
                     MDEntryType="0")  # fmt: skip
        return codec.encode(BOOK, {"TransactTime": 10**18 + rpt, "MatchEventIndicator": 128,
                                   "NoMDEntries": [entry]})  # fmt: skip

    definition = codec.encode("MDInstrumentDefinitionFuture54",
                              {"Symbol": b"ESZ6", "SecurityID": 123456})  # fmt: skip
    registry = InstrumentRegistry()
    stage = SbeDecode(schema=str(MDP3), framing="mdp3")
    stage.open(StageContext(instruments=registry))
    # 777 is met before its definition; 123456 after; 42 never gets one
    first = stage.process(_chunks([mdp3_packet(1, 1, [book(777, 1), book(42, 1)])]))["book"]
    first_ids = first["instrument_id"].copy()
    late_def = codec.encode(
        "MDInstrumentDefinitionFuture54", {"Symbol": b"NQH7", "SecurityID": 777}
    )
    out = stage.process(_chunks([
        mdp3_packet(2, 2, [definition, late_def]),
        mdp3_packet(3, 3, [book(123456, 1), book(777, 2), book(42, 2), book(123456, 2)]),
    ]))  # fmt: skip
    assert "dead_letters" not in out and stage.instruments.definitions == 2  # read, not lost
    out = out["book"]
    spellings = ["123456", "777", "42", "123456"]
    expected = registry.ids_for("cme", spellings, define=False)
    assert expected.all() and out["instrument_id"].tolist() == expected.tolist()
    assert registry.symbols_for(out["instrument_id"]).tolist() == ["ESZ6", "NQH7", "42", "ESZ6"]
    # the id given to 777 before its definition still names it (kept as an alias)
    assert registry.label(int(first_ids[0])) == "NQH7@cme"
    assert registry.symbols_for(first_ids).tolist() == ["NQH7", "42"]
    assert out["seq"].tolist() == [1, 2, 2, 2]  # sequencing still per SecurityID


def test_fix_values_that_are_no_symbol_stay_unknown_and_are_counted():
    registry = InstrumentRegistry()
    decoder = MarketDataDecoder(registry=registry, venue="fix")
    assert len(decoder.feed(fix_wire("0", [])).book) == 0  # no Symbol in the bytes at all
    bad = [m.MdEntry("0", "1.5", 1, action="0", symbol=s) for s in (" BAD", "EURUSD")]
    for seq in (2, 3):  # the bad value is looked up once, then known to be no symbol
        out = decoder.feed(fix_wire(*m.incremental_refresh(bad), seq=seq))
        assert out.book["instrument_id"].tolist() == [registry.id_of("EURUSD", "fix")]
        assert out.dead_letters["reason"].tolist() == [kernels.UNKNOWN_INSTRUMENT]
    assert decoder.counters["unknown_instrument_entries"] == 2
    assert len(registry) == 1 and registry.lookup(" BAD") == []
