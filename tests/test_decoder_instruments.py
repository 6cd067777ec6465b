"""Decoders map instruments through the registry: FIX Symbol (55) / SecurityID (48) text and
MDP3 SecurityID (SecurityDefinition Symbol when seen) become registry ids, in bulk per feed."""

from __future__ import annotations

import numpy as np

from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.instruments import InstrumentRegistry


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
