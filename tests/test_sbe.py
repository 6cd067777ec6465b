"""SBE codecs: schema parsing, round trips, versions, CME MDP3, bad input, fuzzing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftagg.builtins.protocols import BUILTIN_DEFINITIONS
from hftagg.builtins.protocols.sbe import Reason, SbeCodec, frame, parse_schema
from hftagg.builtins.protocols.sbe.mdp3 import BOOK, TRADE_SUMMARY, mdp3_packet, mdp3_records
from hftagg.builtins.protocols.sbe.records import RecordDecoder, RecordEncoder
from hftagg.records.catalog import BOOK_UPDATE, MBP10, TRADE
from hftagg.records.fixed import QTY_UNITS

DATA = Path(__file__).parents[1].parent / "shared" / "data" / "sbe"
HFTAGG_MD = BUILTIN_DEFINITIONS / "sbe" / "hftagg-md.xml"
EXAMPLE = DATA / "example-schema.xml"
MDP3 = DATA / "cme-mdp3-v9.xml"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared SBE test data absent: {DATA}")
RECORDS = {s.name: s for s in (TRADE, BOOK_UPDATE, MBP10)}

CAR = dict(
    serialNumber=1234, modelYear=2013, available="T", code="A", someNumbers=[0, 1, 2, 3, 4],
    vehicleCode="abcdef", extras=["sunRoof", "cruiseControl"],
    engine=dict(capacity=2000, numCylinders=4, manufacturerCode="123", efficiency=35,
                boosterEnabled="T", booster=dict(BoostType="N", horsePower=200)),
    fuelFigures=[dict(speed=30, mpg=35.5, usageDescription=b"Urban Cycle"),
                 dict(speed=55, mpg=49.0, usageDescription=b"Combined Cycle")],
    performanceFigures=[
        dict(octaneRating=95, acceleration=[dict(mph=30, seconds=4.0), dict(mph=60, seconds=7.5)]),
        dict(octaneRating=99, acceleration=[dict(mph=100, seconds=12.25)]),
    ],
    manufacturer=b"Honda", model=b"Civic VTi", activationCode=b"abcdef",
)  # fmt: skip


def _trades(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = TRADE.empty(n)
    t["ts_event"] = rng.integers(0, 2**62, n)
    t["ts_recv"] = t["ts_event"] + rng.integers(0, 10**6, n)
    t["seq"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    t["instrument_id"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    t["side"] = rng.choice([ord("A"), ord("B"), ord("N")], n)
    t["flags"] = rng.integers(0, 256, n)
    t["price"] = rng.integers(-(2**62), 2**62, n)
    t["size"] = rng.integers(0, 2**63 - 1, n, dtype=np.int64)  # the whole 1e-8 quantity range
    return t


def _books(n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = BOOK_UPDATE.empty(n)
    for name in ("ts_event", "ts_recv", "price"):
        b[name] = rng.integers(0, 2**62, n)
    b["seq"] = np.arange(n)
    b["instrument_id"] = rng.integers(0, 100, n)
    b["action"] = rng.choice([ord(c) for c in "AMDRT"], n)
    b["side"] = rng.choice([ord("A"), ord("B")], n)
    b["depth"] = rng.integers(0, 10, n)
    b["size"] = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    return b


@pytest.fixture(scope="module")
def md() -> SbeCodec:
    return SbeCodec(parse_schema(HFTAGG_MD))


@pytest.fixture(scope="module")
def car_codec() -> SbeCodec:
    if not EXAMPLE.exists():
        pytest.skip(f"shared SBE test data absent: {EXAMPLE}")
    return SbeCodec(parse_schema(EXAMPLE))


# --------------------------------------------------------------------------- hftagg schema


def test_hftagg_md_messages_mirror_record_fields(md):
    for message, schema in (("Trade", TRADE), ("BookUpdate", BOOK_UPDATE), ("Mbp10", MBP10)):
        dt = md.root_dtype(message)
        assert list(dt.names) == list(schema.dtype.names)
        for name in dt.names:
            assert dt.fields[name][0] == schema.dtype.fields[name][0], (message, name)


@pytest.mark.parametrize("framing", ["length2", "sofh"])
def test_record_batches_round_trip_through_sbe(md, framing):
    trades, books = _trades(3000), _books(2000)
    mbp = MBP10.empty(50)
    mbp["bid_px"] = np.arange(500).reshape(50, 10)
    mbp["ask_ct"] = 7
    enc = RecordEncoder(md, framing)
    buf = np.concatenate(
        [
            enc.encode("trade", trades),
            enc.encode("book_update", books),
            enc.encode("mbp10", mbp),
            enc.encode("trade", trades[:5]),
        ]
    )
    out = RecordDecoder(md, RECORDS).records(md.scan(buf, framing))
    np.testing.assert_array_equal(out["trade"], np.concatenate([trades, trades[:5]]))
    np.testing.assert_array_equal(out["book_update"], books)
    np.testing.assert_array_equal(out["mbp10"], mbp)


def test_hftagg_md_bytes_match_the_sbe_package(md):
    sbe = pytest.importorskip("sbe")
    with open(HFTAGG_MD) as f:
        ref = sbe.Schema.parse(f)
    trades, books = _trades(40), _books(40)
    enc = RecordEncoder(md)
    for record, batch in (("trade", trades), ("book_update", books)):
        frames = enc.encode(record, batch).reshape(len(batch), -1)
        for row, rec in zip(frames, batch, strict=True):
            value = ref.decode(row[2:].tobytes()).value
            for name in ("ts_event", "ts_recv", "seq", "instrument_id", "price", "size"):
                assert value[name] == rec[name].item(), name
            side = {"Ask": ord("A"), "Bid": ord("B"), "None": ord("N")}[value["side"]]
            assert side == rec["side"]


# --------------------------------------------------------------------------- example schema


def test_example_car_round_trip_with_groups_var_data_sets_and_constants(car_codec):
    msg = car_codec.encode("Car", CAR)
    decoded = car_codec.decode(frame([msg, msg]))
    assert len(decoded.errors) == 0 and decoded.count == 2
    car = decoded.to_dicts(car_codec)[1]
    assert car["serialNumber"] == 1234 and car["someNumbers"] == [0, 1, 2, 3, 4]
    assert car["vehicleCode"] == b"abcdef" and car["code"] == ord("A")
    assert car["extras"] == 0b101  # sunRoof | cruiseControl
    assert car["discountedModel"] == ord("C")  # constant field via valueRef
    assert car["engine"]["maxRpm"] == 9000 and car["engine"]["fuel"] == "Petrol"
    assert car["engine"]["booster"] == {"BoostType": ord("N"), "horsePower": 200}
    assert [f["usageDescription"] for f in car["fuelFigures"]] == [
        b"Urban Cycle",
        b"Combined Cycle",
    ]
    assert [f["mpg"] for f in car["fuelFigures"]] == [35.5, 49.0]
    accel = [[a["mph"] for a in p["acceleration"]] for p in car["performanceFigures"]]
    assert accel == [[30, 60], [100]]
    assert (car["manufacturer"], car["model"], car["activationCode"]) == (
        b"Honda",
        b"Civic VTi",
        b"abcdef",
    )
    # independent check of the wire layout with struct (SBE spec offsets)
    bl, tid, sid, ver = struct.unpack_from("<4H", msg)
    assert (bl, tid, sid, ver) == (car_codec.schema.message("Car").block_length, 1, 1, 0)
    serial, year, available, code = struct.unpack_from("<QHBB", msg, 8)
    assert (serial, year, available, code) == (1234, 2013, 1, ord("A"))
    gbl, count = struct.unpack_from("<HH", msg, 8 + bl)
    speed, mpg = struct.unpack_from("<Hf", msg, 8 + bl + 4)
    assert (gbl, count, speed, mpg) == (6, 2, 30, 35.5)


def _v1_example() -> str:
    xml = EXAMPLE.read_text().replace('version="0"', 'version="1"', 1)
    xml = xml.replace(
        '<field name="engine" id="9" type="Engine"/>',
        '<field name="engine" id="9" type="Engine"/>\n'
        '<field name="cupHolders" id="30" type="uint8" sinceVersion="1"/>',
    )
    return xml.replace(
        '<field name="mpg" id="12" type="float"/>',
        '<field name="mpg" id="12" type="float"/>\n'
        '<field name="co2" id="31" type="uint16" sinceVersion="1"/>',
    )


def test_newer_sender_blocks_are_skipped_and_older_sender_fields_read_null(car_codec):
    v1 = SbeCodec(parse_schema(_v1_example()))
    newer = v1.encode(
        "Car",
        {**CAR, "cupHolders": 3, "fuelFigures": [{**f, "co2": 99} for f in CAR["fuelFigures"]]},
    )
    older = car_codec.encode("Car", CAR)
    # a v0 decoder reads a v1 message: larger root and group blocks skipped past
    as_v0 = car_codec.decode(frame([newer, older]))
    assert len(as_v0.errors) == 0
    for car in as_v0.to_dicts(car_codec):
        assert car["fuelFigures"][1]["usageDescription"] == b"Combined Cycle"
        assert car["manufacturer"] == b"Honda" and car["engine"]["capacity"] == 2000
    # a v1 decoder reads a v0 message: the fields it did not send are null
    new_car, old_car = v1.decode(frame([newer, older])).to_dicts(v1)
    assert new_car["cupHolders"] == 3 and new_car["fuelFigures"][0]["co2"] == 99
    assert old_car["cupHolders"] == 255 and old_car["fuelFigures"][0]["co2"] == 65535
    assert old_car["performanceFigures"][1]["acceleration"][0]["mph"] == 100


def test_big_endian_schema_round_trip(car_codec):
    xml = EXAMPLE.read_text().replace('byteOrder="littleEndian"', 'byteOrder="bigEndian"')
    big = SbeCodec(parse_schema(xml))
    msg = big.encode("Car", CAR)
    assert struct.unpack_from(">Q", msg, 8)[0] == 1234
    car = big.decode(frame([msg], "sofh", big_endian=True), "sofh").to_dicts(big)[0]
    assert car["performanceFigures"][0]["acceleration"][1]["seconds"] == 7.5
    assert car["model"] == b"Civic VTi"


# --------------------------------------------------------------------------- CME MDP3


def _mdp3_messages(codec: SbeCodec, rng) -> tuple[list[bytes], list[dict], list[dict]]:
    books, trades, messages = [], [], []
    rpt: dict[int, int] = {}  # one RptSeq per instrument, shared by book and trade entries

    def nxt(sid: int) -> int:
        rpt[sid] = rpt.get(sid, int(rng.integers(1, 2**30))) + 1
        return rpt[sid]

    for i in range(30):
        entries = [dict(MDEntryPx={"mantissa": int(rng.integers(1, 10**7)) * 10**7},
                        MDEntrySize=int(rng.integers(0, 10**6)), SecurityID=(sid := int(rng.integers(1, 99))),
                        RptSeq=nxt(sid), NumberOfOrders=int(rng.integers(1, 9)),
                        MDPriceLevel=int(rng.integers(1, 11)), MDUpdateAction=int(rng.integers(0, 3)),
                        MDEntryType=str(rng.choice(["0", "1"])))
                   for _ in range(int(rng.integers(1, 6)))]  # fmt: skip
        messages.append(codec.encode(BOOK, {"TransactTime": 10**18 + i, "MatchEventIndicator": 128,
                                            "NoMDEntries": entries}))  # fmt: skip
        books += [dict(e, TransactTime=10**18 + i) for e in entries]
        if i % 3 == 0:
            fills = [dict(MDEntryPx={"mantissa": int(rng.integers(1, 10**7)) * 10**7},
                          MDEntrySize=int(rng.integers(1, 500)), SecurityID=7, RptSeq=nxt(7),
                          NumberOfOrders=2, AggressorSide=int(rng.integers(0, 3)),
                          MDUpdateAction=0, MDTradeEntryID=i) for _ in range(2)]  # fmt: skip
            messages.append(codec.encode(TRADE_SUMMARY, {
                "TransactTime": 2 * 10**18 + i, "MatchEventIndicator": 1, "NoMDEntries": fills,
                "NoOrderIDEntries": [{"OrderID": 5, "LastQty": 1}]}))  # fmt: skip
            trades += [dict(f, TransactTime=2 * 10**18 + i) for f in fills]
    return messages, books, trades


@needs_data
def test_mdp3_packets_decode_to_book_updates_and_trades_matching_sbedecoder():
    sbedecoder = pytest.importorskip("sbedecoder")
    codec = SbeCodec(parse_schema(MDP3))
    messages, books, trades = _mdp3_messages(codec, np.random.default_rng(5))
    packets = [mdp3_packet(k, 77 + k, messages[k * 4 : (k + 1) * 4])
               for k in range(-(-len(messages) // 4))]  # fmt: skip
    buf = b"".join(packets)
    ends = np.cumsum([len(p) for p in packets])
    starts = ends - [len(p) for p in packets]
    decoded = codec.decode(buf, "mdp3", (starts, ends))
    assert len(decoded.errors) == 0
    recs = mdp3_records(codec, decoded, np.arange(len(packets), dtype=np.int64) * 1000)
    book, trade = recs["book_update"], recs["trade"]
    assert len(book) == len(books) and len(trade) == len(trades)
    # independent decoder on the same bytes
    schema = sbedecoder.MDPSchema()
    schema.parse(str(MDP3))
    parser = sbedecoder.SBEParser(sbedecoder.MDPMessageFactory(schema))
    ref_book, ref_trade = [], []
    for packet in packets:
        for msg in parser.parse(packet, offset=12):
            rows = [{f.name: f.value for f in e.fields} for e in msg.no_md_entries]
            for r in rows:
                r["transact_time"] = msg.transact_time.value
            (ref_book if msg.template_id.value == 46 else ref_trade).extend(rows)
    assert len(ref_book) == len(book) and len(ref_trade) == len(trade)
    side = {"Bid": ord("B"), "Offer": ord("A")}
    action = {"New": ord("A"), "Change": ord("M"), "Delete": ord("D")}
    for rec, ref in zip(book, ref_book, strict=True):
        assert rec["ts_event"] == ref["transact_time"]
        assert rec["price"] == round(ref["md_entry_px"] * 1e9)
        assert (
            rec["size"] == ref["md_entry_size"] * QTY_UNITS
            and rec["instrument_id"] == ref["security_id"]
        )
        assert rec["depth"] == ref["md_price_level"] - 1  # book seq: see the interleaved test
        assert rec["side"] == side[ref["md_entry_type"]]
        assert rec["action"] == action[ref["md_update_action"]]
    aggressor = {"No Aggressor": ord("N"), "Buy": ord("B"), "Sell": ord("A")}
    for rec, ref in zip(trade, ref_trade, strict=True):
        assert (
            rec["price"] == round(ref["md_entry_px"] * 1e9)
            and rec["size"] == ref["md_entry_size"] * QTY_UNITS
        )
        assert rec["side"] == aggressor[ref["aggressor_side"]] and rec["seq"] == ref["rpt_seq"]
    assert (book["flags"][np.r_[np.flatnonzero(np.diff(book["ts_event"])), len(book) - 1]]
            == 128).all()  # fmt: skip
    assert set(book["ts_recv"].tolist()) <= set(range(0, 1000 * len(packets), 1000))


@needs_data
def test_mdp3_truncated_packet_keeps_the_messages_before_the_cut():
    codec = SbeCodec(parse_schema(MDP3))
    messages, books, _ = _mdp3_messages(codec, np.random.default_rng(6))
    packet = mdp3_packet(1, 2, messages[:3])
    cut = packet[:-5]
    decoded = codec.decode(cut, "mdp3", ([0], [len(cut)]))
    assert decoded.count == 2
    assert decoded.errors["reason"].tolist() == [Reason.TRUNCATED]


# --------------------------------------------------------------------------- bad input


def _frames(md, records: list[tuple[str, np.ndarray]]) -> list[bytes]:
    enc = RecordEncoder(md)
    out = []
    for record, batch in records:
        raw = enc.encode(record, batch).reshape(len(batch), -1)
        out += [r.tobytes() for r in raw]
    return out


def test_bad_messages_become_dead_letters_and_good_ones_around_them_decode(md):
    trades = _trades(6)
    good = _frames(md, [("trade", trades)])
    wrong_schema = bytearray(good[0])
    wrong_schema[6] = 99
    unknown = bytearray(good[0])
    unknown[4] = 42
    small_block = bytearray(good[0])
    small_block[0:4] = struct.pack("<HH", 2 + 8 + 4, 4)
    small_block = small_block[: 2 + 8 + 4]
    bad_version = bytearray(good[0])
    stream = b"".join(
        [
            good[0],
            bytes(wrong_schema),
            good[1],
            bytes(unknown),
            good[2],
            bytes(small_block),
            good[3],
            b"\x01\x00",
            good[4],
            good[5][:-3],
        ]
    )
    sc = md.scan(np.frombuffer(stream, np.uint8), final=True)
    out = RecordDecoder(md, RECORDS).records(sc)
    np.testing.assert_array_equal(out["trade"], trades[:5])
    reasons = sc.errors["reason"].tolist()
    assert reasons == [Reason.WRONG_SCHEMA, Reason.UNKNOWN_TEMPLATE, Reason.BLOCK_TOO_SMALL,
                       Reason.BAD_FRAME, Reason.TRUNCATED]  # fmt: skip
    assert bad_version  # version handling is covered by the example-schema tests


def test_group_count_running_past_the_frame_is_a_dead_letter(car_codec):
    msg = bytearray(car_codec.encode("Car", CAR))
    bl = car_codec.schema.message("Car").block_length
    struct.pack_into("<H", msg, 8 + bl + 2, 60000)  # fuelFigures numInGroup
    good = car_codec.encode("Car", CAR)
    decoded = car_codec.decode(frame([good, bytes(msg), good]))
    assert decoded.count == 2
    assert decoded.errors["reason"].tolist() == [Reason.GROUP_OVERRUN]


def test_decode_stage_counts_dead_letters_and_keeps_split_frames(md):
    from hftagg.builtins.protocols.sbe.stages import SbeDecode
    from hftagg.records.catalog import RAW_CHUNK
    from hftagg.stages import StageContext

    trades = _trades(500)
    frames = _frames(md, [("trade", trades[:250])])
    stream = b"".join(frames) + b"\xff" * 7 + b"".join(_frames(md, [("trade", trades[250:])]))
    pieces = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    chunks = RAW_CHUNK.empty(len(pieces))
    for i, p in enumerate(pieces):
        chunks["data"][i, : len(p)] = np.frombuffer(p, np.uint8)
        chunks["length"][i] = len(p)
    stage = SbeDecode()
    stage.open(StageContext())
    outs = [stage.process(chunks[i : i + 3]) for i in range(0, len(chunks), 3)]
    got = np.concatenate([o["trades"] for o in outs if "trades" in o])
    np.testing.assert_array_equal(got, trades)
    dead = np.concatenate([o["dead_letters"] for o in outs if "dead_letters" in o])
    assert dead["reason"].tolist() == [Reason.BAD_FRAME]
    assert dead["raw_offset"][0] == len(b"".join(frames)) and dead["raw_length"][0] == 7
    assert stage.dead_letter_counts == {"bad frame": 1}
    assert len(stage.flush_pending()) == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes_never_crash(md, data):
    for framing in ("length2", "sofh"):
        sc = md.scan(np.frombuffer(data, np.uint8), framing, final=True)
        assert (sc.msg_end <= len(data)).all()
        covered = int((sc.msg_end - sc.msg_frame).sum() + sc.errors["length"].sum())
        assert covered == len(data)


_VALID = None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 10**6))  # fmt: skip
def test_fuzz_mutated_streams_decode_what_is_intact(md, car_codec, edits, cut):
    global _VALID
    if _VALID is None:
        _VALID = b"".join(_frames(md, [("trade", _trades(20)), ("book_update", _books(20))]))
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[: len(data) - cut % 200])
    sc = md.scan(np.frombuffer(data, np.uint8), final=True)
    out = RecordDecoder(md, RECORDS).records(sc)
    assert len(out["trade"]) + len(out["book_update"]) == len(sc.msg_slot)
    covered = int((sc.msg_end - sc.msg_frame).sum() + sc.errors["length"].sum())
    assert covered == len(data)
    if not edits and cut % 200 == 0:
        assert len(sc.msg_slot) == 40 and len(sc.errors) == 0
    car = bytearray(frame([car_codec.encode("Car", CAR)] * 3))
    for pos, value in edits:
        car[pos % len(car)] = value
    decoded = car_codec.decode(bytes(car[: len(car) - cut % 50]))
    assert decoded.count + len(decoded.errors) >= 1


def _interleaved_packets(codec: SbeCodec, lose: set[int] = frozenset()) -> list[bytes]:
    """A real channel's shape: per instrument one ``RptSeq`` shared by book, trade summary and
    volume entries (two instruments interleaved); ``lose``: packet numbers left out."""
    packets, rpt = [], {7: 0, 9: 0}

    def nxt(sid):
        rpt[sid] += 1
        return rpt[sid]

    for k in range(12):
        msgs = []
        for sid in (7, 9):
            levels = [dict(MDEntryPx={"mantissa": (100 + lvl) * 10**9}, MDEntrySize=5 + k,
                           SecurityID=sid, RptSeq=nxt(sid), NumberOfOrders=1,
                           MDPriceLevel=lvl + 1, MDUpdateAction=0 if k == 0 else 1,
                           MDEntryType="0") for lvl in range(2)]  # fmt: skip
            msgs.append(codec.encode(BOOK, {"TransactTime": 10**18 + k, "MatchEventIndicator": 0,
                                            "NoMDEntries": levels}))  # fmt: skip
            if k % 2:
                fill = dict(MDEntryPx={"mantissa": 101 * 10**9}, MDEntrySize=1, SecurityID=sid,
                            RptSeq=nxt(sid), NumberOfOrders=2, AggressorSide=1,
                            MDUpdateAction=0, MDTradeEntryID=k)  # fmt: skip
                msgs.append(codec.encode(TRADE_SUMMARY, {
                    "TransactTime": 10**18 + k, "MatchEventIndicator": 0, "NoMDEntries": [fill],
                    "NoOrderIDEntries": []}))  # fmt: skip
                vol = dict(MDEntrySize=k, SecurityID=sid, RptSeq=nxt(sid), MDUpdateAction=0)
                msgs.append(codec.encode("MDIncrementalRefreshVolume37", {
                    "TransactTime": 10**18 + k, "MatchEventIndicator": 128,
                    "NoMDEntries": [vol]}))  # fmt: skip
        if k not in lose:
            packets.append(mdp3_packet(k + 1, 10**18 + k, msgs))
    return packets


def _decode_and_book(packets: list[bytes], splits: int | None = None):
    from hftagg.builtins.core.book.stages import Book
    from hftagg.builtins.protocols.sbe.stages import SbeDecode
    from hftagg.records.catalog import RAW_CHUNK
    from hftagg.testing import run_stage

    chunks = RAW_CHUNK.empty(len(packets))
    for i, p in enumerate(packets):
        chunks["data"][i, : len(p)] = np.frombuffer(p, np.uint8)
        chunks["length"][i] = len(p)
        chunks["instrument_id"][i] = 1
    decode = SbeDecode(schema=str(MDP3), framing="mdp3")
    book_updates = run_stage(decode, chunks, splits=splits, max_split=3)["book"]
    return book_updates, run_stage(Book(), book_updates)


@needs_data
def test_mdp3_interleaved_trade_and_volume_entries_build_a_book_without_false_gaps():
    codec = SbeCodec(parse_schema(MDP3))
    updates, out = _decode_and_book(_interleaved_packets(codec))
    assert len(updates) == 12 * 2 * 2
    # SecurityIDs 7 and 9 become registry instruments on venue "cme" (spelled "7", "9")
    from hftagg.instruments import default_registry

    iid = dict(zip((7, 9), default_registry().ids_for("cme", ["7", "9"]).tolist(), strict=True))
    # book seq contiguous per instrument although RptSeq has trade/volume holes
    for sid in (iid[7], iid[9]):
        seq = updates["seq"][updates["instrument_id"] == sid]
        assert np.diff(seq.astype(np.int64)).tolist() == [1] * (len(seq) - 1)
    assert len(out["alerts"]) == 0, out["alerts"]["text"]
    assert len(out["bbo"]) > 0
    # the per-instrument RptSeq state carries across batches: random batch cuts, same seqs
    split, _ = _decode_and_book(_interleaved_packets(codec), splits=3)
    assert split["seq"].tolist() == updates["seq"].tolist()

    # a lost packet (entries of both instruments, RptSeq really missing) is still a gap
    updates, out = _decode_and_book(_interleaved_packets(codec, lose={5}))
    gaps = out["alerts"][out["alerts"]["text"] == b"book: sequence gap, book invalid until clear"]
    assert sorted(gaps["instrument_id"].tolist()) == sorted([iid[7], iid[9]])
    assert gaps["value"].tolist() == [4.0, 4.0]  # 2 book + 1 trade + 1 volume entries lost


@needs_data
def test_mdp3_a_late_packet_is_ignored_without_shifting_later_book_seqs():
    """Packet 5 arrives after packet 6 (A/B lines racing): its entries are stale and not
    applied, one gap is reported for what 6 skipped, and the book seqs after it go on from 6's
    without a second, false gap (a stale entry took a seq and shifted every later one)."""
    codec = SbeCodec(parse_schema(MDP3))
    packets = _interleaved_packets(codec)
    in_order, _ = _decode_and_book(packets)
    swapped = packets[:4] + [packets[5], packets[4]] + packets[6:]
    updates, out = _decode_and_book(swapped)
    gaps = out["alerts"][out["alerts"]["text"] == b"book: sequence gap, book invalid until clear"]
    assert len(gaps) == 2  # one per instrument, for what packet 6 skipped; none later
    # packet 5's book entries (2 instruments x 2 levels) are left out; every other update,
    # after the late packet too, keeps the instrument and seq it has in the in-order stream
    late = range(16, 20)
    assert updates["seq"].tolist() == np.delete(in_order["seq"], late).tolist()
    assert updates["instrument_id"].tolist() == np.delete(in_order["instrument_id"], late).tolist()


@needs_data
def test_mdp3_every_template_maps_to_a_record_or_is_a_counted_dead_letter():
    from hftagg.builtins.protocols.sbe.mdp3 import MAPPED
    from hftagg.builtins.protocols.sbe.stages import SbeDecode
    from hftagg.records.catalog import RAW_CHUNK
    from hftagg.stages import StageContext

    codec = SbeCodec(parse_schema(MDP3))
    messages = codec.schema.messages
    assert len(messages) == 29
    entry = dict(MDEntryPx={"mantissa": 12345678}, MDEntrySize=3, SecurityID=5, NumberOfOrders=1,
                 MDPriceLevel=1, MDUpdateAction=0, MDEntryType="1", AggressorSide=2)  # fmt: skip
    packets, rpt = [], 0
    for m in messages.values():
        name = m.name
        if name in MAPPED:
            rpt += 1
            body = codec.encode(name, {"TransactTime": 10**18, "MatchEventIndicator": 128,
                                       "NoMDEntries": [dict(entry, RptSeq=rpt)]})  # fmt: skip
        elif m.block_length == 0:  # AdminHeartbeat12: an empty body, header only
            body = struct.pack("<4H", 0, m.id, codec.schema.id, codec.schema.version)
        else:
            body = codec.encode(name, {})
        packets.append(mdp3_packet(len(packets) + 1, 0, [body]))
    chunks = RAW_CHUNK.empty(len(packets))
    for i, p in enumerate(packets):
        chunks["data"][i, : len(p)] = np.frombuffer(p, np.uint8)
        chunks["length"][i] = len(p)
    stage = SbeDecode(schema=str(MDP3), framing="mdp3")
    stage.open(StageContext())
    out = stage.process(chunks)
    book, trade, dead = out["book"], out["trades"], out["dead_letters"]
    assert len(book) == 2 and len(trade) == 2  # Book32 + Book46, TradeSummary42 + 48
    # PRICE (exponent -7) of the older templates and PRICE9 of the newer, both in 1e-9 units
    assert book["price"].tolist() == [12345678 * 100, 12345678]
    assert trade["price"].tolist() == [12345678 * 100, 12345678]
    assert book["seq"].tolist() == [1, 2] and (book["side"] == ord("A")).all()
    # instrument definitions are read by the instrument mapping (counted there)
    definitions = {m.id for m in messages.values() if m.name.startswith("MDInstrumentDef")}
    assert len(definitions) == 6 and stage.instruments.definitions == 6
    unmapped = {m.id for m in messages.values() if m.name not in MAPPED} - definitions
    assert (dead["reason"] == Reason.UNMAPPED_TEMPLATE).all()
    assert sorted(int(d.split(b"(")[1][:-1]) for d in dead["detail"]) == sorted(unmapped)
    assert stage.dead_letter_counts == {"unmapped template": 29 - 4 - 6}
    assert (dead["raw_length"] > 0).all()
