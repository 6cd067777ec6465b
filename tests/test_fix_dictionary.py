"""FIX dictionaries as data: the QuickFIX XML loader, session validation with its Reject reasons,
and the market-data decoder reading its tags and enums from a (venue) dictionary."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
import simplefix

from hftagg.builtins.protocols import BUILTIN_DEFINITIONS
from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.protocols.fix.dictionary import load_dictionary, resolve
from hftagg.builtins.protocols.fix.session import Acceptor
from hftagg.builtins.protocols.fix.stages import FixDecode
from hftagg.builtins.protocols.fix.validate import validate
from hftagg.errors import ConfigError, SchemaError
from hftagg.testing import TestingSink, TestingSource, run_pipeline
from tests.test_fix_pipeline import chunks
from tests.test_fix_session import CLIENT, SERVER, Recorder, _until

FIX44 = load_dictionary("fix/FIX44.xml")
V_OK = [(262, "R"), (263, "1"), (264, 0), (267, 1), (269, "0"), (146, 1), (55, "EURUSD")]

# A venue dictionary: MDEntryPx on tag 9270, MDEntryType J = a trade, Q = an indicative price.
VENUE_XML = """<fix type='FIX' major='4' minor='4' servicepack='0'>
 <header>
  <field name='BeginString' required='Y'/><field name='BodyLength' required='Y'/>
  <field name='MsgType' required='Y'/><field name='SenderCompID' required='Y'/>
  <field name='TargetCompID' required='Y'/><field name='MsgSeqNum' required='Y'/>
  <field name='SendingTime' required='Y'/>
 </header>
 <trailer><field name='CheckSum' required='Y'/></trailer>
 <messages>
  <message name='MarketDataIncrementalRefresh' msgtype='X' msgcat='app'>
   <group name='NoMDEntries' required='Y'>
    <field name='MDUpdateAction' required='Y'/><field name='MDEntryType' required='N'/>
    <component name='Instrument' required='N'/><field name='RptSeq' required='N'/>
    <field name='MDEntryPx' required='N'/><field name='MDEntrySize' required='N'/>
   </group>
  </message>
 </messages>
 <components>
  <component name='Instrument'><field name='Symbol' required='N'/></component>
 </components>
 <fields>
  <field number='8' name='BeginString' type='STRING'/>
  <field number='9' name='BodyLength' type='LENGTH'/>
  <field number='10' name='CheckSum' type='STRING'/>
  <field number='34' name='MsgSeqNum' type='SEQNUM'/>
  <field number='35' name='MsgType' type='STRING'/>
  <field number='49' name='SenderCompID' type='STRING'/>
  <field number='52' name='SendingTime' type='UTCTIMESTAMP'/>
  <field number='55' name='Symbol' type='STRING'/>
  <field number='56' name='TargetCompID' type='STRING'/>
  <field number='83' name='RptSeq' type='INT'/>
  <field number='268' name='NoMDEntries' type='NUMINGROUP'/>
  <field number='269' name='MDEntryType' type='CHAR'>
   <value enum='0' description='BID'/><value enum='1' description='OFFER'/>
   <value enum='2' description='TRADE'/><value enum='J' description='TRADE'/>
   <value enum='Q' description='INDICATIVE_PRICE'/>
  </field>
  <field number='271' name='MDEntrySize' type='QTY'/>
  <field number='279' name='MDUpdateAction' type='CHAR'>
   <value enum='0' description='NEW'/><value enum='1' description='CHANGE'/>
   <value enum='2' description='DELETE'/>
  </field>
  <field number='9270' name='MDEntryPx' type='PRICE'/>
 </fields>
</fix>
"""


def _pairs(msg_type: str, body) -> list[tuple[bytes, bytes]]:
    parser = simplefix.FixParser(allow_empty_values=True)
    parser.append_buffer(m.encode("FIX.4.4", msg_type, "A", "B", 1, body))
    return parser.get_message().pairs


def _venue_stream() -> bytes:
    body = [(268, 4),
            (279, "0"), (269, "0"), (55, "EURUSD"), (83, 1), (9270, "1.25"), (271, 5),
            (279, "0"), (269, "J"), (83, 2), (9270, "1.26"), (271, 2),
            (279, "0"), (269, "Q"), (83, 3), (9270, "1.27"), (271, 1),
            (279, "2"), (269, "1"), (83, 4), (9270, "1.30"), (271, 0)]  # fmt: skip
    return m.encode("FIX.4.4", "X", "MD", "HFT", 1, body)


# --------------------------------------------------------------------------- loader


def test_fix44_dictionary_loads_fields_groups_and_components_flattened():
    d = FIX44
    assert d.begin_string == "FIX.4.4" and d.fields[270].name == "MDEntryPx"
    assert d.fields[269].values["2"] == "TRADE" and d.tag("MDEntrySize") == 271
    assert d.header.required == {8, 9, 34, 35, 49, 52, 56} and 10 in d.trailer.required
    x = d.messages["X"]
    assert x.category == "app" and x.required == {268}
    entries = x.groups[268]
    assert entries.delimiter == 279 and {269, 270, 271, 55}.issubset(entries.members)
    assert entries.required == {279}  # Instrument is optional there: Symbol is not required
    request = d.messages["V"]
    assert request.required == {146, 262, 263, 264, 267}
    assert request.groups[146].delimiter == 55 and request.groups[267].delimiter == 269
    assert d.messages["A"].category == "admin"


def test_relative_dictionary_paths_resolve_to_the_built_in_definitions(tmp_path):
    assert resolve("fix/FIX44.xml") == BUILTIN_DEFINITIONS / "fix" / "FIX44.xml"
    assert resolve(tmp_path / "x.xml") == tmp_path / "x.xml"
    assert (
        "The QuickFIX Software License, Version 1.0\n"
        in (BUILTIN_DEFINITIONS / "fix" / "NOTICE").read_text()
    )


def test_missing_or_broken_dictionary_names_the_file(tmp_path):
    with pytest.raises(SchemaError, match="nope.xml"):
        load_dictionary("fix/nope.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<fix><messages><message name='X' msgtype='X'><field name='Nope'/>"
                   "</message></messages><fields/></fix>")  # fmt: skip
    with pytest.raises(SchemaError, match="Nope"):
        load_dictionary(bad)
    stage = FixDecode(dictionary=str(tmp_path / "missing.xml"))
    with pytest.raises(ConfigError, match="missing.xml"):
        stage.open(None)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("msg_type", "body", "reason", "tag"),
    [
        ("ZZ", [(58, "x")], 11, 35),  # MsgType not in the dictionary
        ("V", [t for t in V_OK if t[0] != 263], 1, 263),  # required tag missing
        ("V", [*V_OK, (38, "5")], 2, 38),  # OrderQty is not part of V
        ("V", [*V_OK, (4999, "x")], 0, 4999),  # not in the dictionary at all
        ("V", [(263, "9") if t[0] == 263 else t for t in V_OK], 5, 263),  # not in the enum
        ("V", [(264, "deep") if t[0] == 264 else t for t in V_OK], 6, 264),  # INT
        ("V", [*V_OK, (60, "2026-01-01")], 6, 60),  # UTCTimestamp
        ("X", [(268, 1), (279, "0"), (270, "1.5x")], 6, 270),  # PRICE (a float)
        ("V", [(267, 2) if t[0] == 267 else t for t in V_OK], 16, 267),  # group count
        ("W", [(55, "EURUSD"), (268, 1), (270, "1.5")], 16, 268),  # entry without delimiter
        ("V", [*V_OK[:4], (269, ""), *V_OK[5:]], 4, 269),  # tag without a value
    ],
)
def test_validate_answers_each_quickfix_reject_reason(msg_type, body, reason, tag):
    problem = validate(FIX44, _pairs(msg_type, body))
    assert problem is not None and (problem.reason, problem.tag) == (reason, tag), problem


def test_validate_accepts_good_messages_and_skips_user_defined_tags_by_default():
    assert validate(FIX44, _pairs("V", V_OK)) is None
    assert validate(FIX44, _pairs(*m.snapshot("EURUSD", [m.MdEntry("0", "1.5", 3)]))) is None
    assert validate(FIX44, _pairs("V", [*V_OK, (5999, "x")])) is None
    checked = validate(FIX44, _pairs("V", [*V_OK, (5999, "x")]), user_defined=True)
    assert checked is not None and checked.reason == 0


def test_session_with_validate_rejects_each_defect_with_quickfix_reasons():
    server = replace(SERVER, validate=True)

    async def scenario():
        client_app, server_app = Recorder(), Recorder()
        acceptor = Acceptor([server], server_app)
        port = await acceptor.start("127.0.0.1", 0)
        from hftagg.builtins.protocols.fix.session import connect

        client = await connect("127.0.0.1", port, CLIENT, client_app)
        session = acceptor.sessions[-1]
        defects = [
            ("ZZ", [(58, "x")]),
            ("V", [t for t in V_OK if t[0] != 263]),
            ("V", [*V_OK, (38, "5")]),
            ("V", [*V_OK, (4999, "x")]),
            ("V", [(263, "9") if t[0] == 263 else t for t in V_OK]),
            ("V", [(264, "deep") if t[0] == 264 else t for t in V_OK]),
        ]
        for msg_type, body in defects:
            await client.send(msg_type, body)
        unserved = await client.send("Y", [(262, "R")])  # in FIX 4.4, not served here: 35=j
        await client.send("V", V_OK)  # valid: reaches the application
        await _until(lambda: len(server_app.app) == 1 and len(client_app.app) == 1)
        rejects = [(x.get(373), x.get(371)) for x in client_app.admin if x.get(35) == b"3"]
        assert rejects == [(b"11", b"35"), (b"1", b"263"), (b"2", b"38"), (b"0", b"4999"),
                           (b"5", b"263"), (b"6", b"264")]  # fmt: skip
        business = client_app.app[0]
        assert business.get(35) == b"j" and business.get(380) == b"3"
        assert business.get(372) == b"Y" and int(business.get(45)) == unserved
        assert session.active and session.store.next_target_seq == client.store.next_sender_seq
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- decoder


def test_decoder_reads_price_tag_and_entry_types_from_a_venue_dictionary(tmp_path):
    path = tmp_path / "venue.xml"
    path.write_text(VENUE_XML)
    out = MarketDataDecoder({"EURUSD": 1}, dictionary=path).feed(_venue_stream())
    assert len(out.dead_letters) == 0
    assert out.book["action"].tobytes() == b"AD"
    assert out.book["price"].tolist() == [1_250_000_000, 1_300_000_000]
    assert out.trades["price"].tolist() == [1_260_000_000] and out.trades["size"].tolist() == [
        2 * 10**8
    ]
    standard = MarketDataDecoder({"EURUSD": 1}).feed(_venue_stream())  # FIX44: 270 missing
    assert len(standard.dead_letters) == 1 and len(standard.book) == 0


def test_fix_decode_stage_takes_the_dictionary_from_its_params(tmp_path):
    path = tmp_path / "venue.xml"
    path.write_text(VENUE_XML)
    book, trades = [], []
    stage = FixDecode(symbols={"EURUSD": 1}, dictionary=str(path))
    run_pipeline([
        TestingSource([chunks(_venue_stream(), 17)], schema="raw_chunk"),
        stage,
        TestingSink(book, topic="md.book"),
        TestingSink(trades, stage_id="trades", topic="md.trades"),
    ])  # fmt: skip
    prices = np.concatenate(book)["price"].tolist() if book else []
    assert prices == [1_250_000_000, 1_300_000_000]
    assert np.concatenate(trades)["price"].tolist() == [1_260_000_000]
    assert stage.counters["other_entry_types"] == 1  # Q: an indicative price, skipped


def test_delete_thru_and_delete_from_are_dead_letters_and_snapshot_trades_are_not_emitted():
    decoder = MarketDataDecoder({"EURUSD": 1})
    for seq, action in ((1, "3"), (2, "4")):
        msg_type, body = m.incremental_refresh([m.MdEntry("0", "1.5", 0, symbol="EURUSD",
                                                          action=action)])  # fmt: skip
        out = decoder.feed(m.encode("FIX.4.4", msg_type, "MD", "HFT", seq, body))
        assert len(out.book) == 0 and out.dead_letters["detail"][0].startswith(b"bad_value")
    msg_type, body = m.snapshot("EURUSD", [m.MdEntry("0", "1.5", 3), m.MdEntry("2", "1.6", 1)])
    out = decoder.feed(m.encode("FIX.4.4", msg_type, "MD", "HFT", 3, body))
    assert out.book["action"].tobytes() == b"RA" and len(out.trades) == 0
    assert decoder.counters["other_entry_types"] == 1
