"""FIX framing and the compiled market-data decoder, cross-checked against simplefix."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftagg.builtins.protocols.fix import kernels
from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import Framer, MarketDataDecoder, build_symbol_table

SYMBOLS = {"EURUSD": 1, "GBPUSD": 2, "ES.H6": 3, "BTC/USD": 0xFFFFFFFF}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def wire(msg_type: str, body, seq: int = 1, sending_time: str = "20260102-03:04:05.678") -> bytes:
    return m.encode("FIX.4.4", msg_type, "MD", "HFT", seq, body, sending_time=sending_time)


def x_entry(action="0", kind="0", symbol="EURUSD", price="1.5", size=10, **kw) -> m.MdEntry:
    return m.MdEntry(kind, price, size, action=action, symbol=symbol, **kw)


# ----------------------------------------------------------------- the simplefix reference


def fixed(text: bytes) -> int:
    return int(Decimal(text.decode()) * 1_000_000_000)


def utc_ns(text: bytes) -> int:
    date, _, clock = text.decode().partition("-")
    whole, _, frac = clock.partition(".")
    secs = np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:]}T{whole}", "s").astype(np.int64)
    return int(secs) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def qty(text: bytes) -> int:
    """A FIX size as hftagg's 1e-8 fixed point, by Python's decimal."""
    return int(Decimal(text.decode()).scaleb(8))


def reference(data: bytes, symbols=SYMBOLS):
    """Expected (book, trades) rows from simplefix's parse of the same bytes."""
    parser = simplefix.FixParser()
    parser.append_buffer(data)
    book, trades, seqs = [], [], {}
    while (msg := parser.get_message()) is not None:
        ts = utc_ns(msg.get(52))
        pairs = [(int(t), v) for t, v in msg.pairs]
        start = next(i for i, (t, _) in enumerate(pairs) if t == 268)
        entries, cur = [], None
        delimiter = 279 if msg.get(35) == b"X" else 269
        for tag, value in pairs[start + 1 :]:
            if tag == delimiter:
                cur = {}
                entries.append(cur)
            if cur is not None:
                cur[tag] = value
        rows = []
        if msg.get(35) == b"W":
            iid = symbols[msg.get(55).decode()]
            rows.append(("book", iid, ord("R"), ord("N"), 0, 0x20, 0, 0))
        for e in entries:
            iid = symbols[(e.get(55) or msg.get(55)).decode()]
            kind = e[269]
            action = b"0" if msg.get(35) == b"W" else e[279]
            act = {b"0": "A", b"1": "M", b"2": "D", b"5": "M"}[action]
            depth = int(e[1023]) - 1 if 1023 in e else 0
            if kind == b"2":
                if msg.get(35) == b"X":
                    rows.append(("trade", iid, ord("N"), fixed(e[270]), qty(e[271])))
                continue
            side = ord("B") if kind == b"0" else ord("A")
            flags = 0x20 if msg.get(35) == b"W" else 0
            rows.append(("book", iid, ord(act), side, depth, flags, fixed(e[270]), qty(e[271])))
        last_book = max((i for i, r in enumerate(rows) if r[0] == "book"), default=None)
        for i, row in enumerate(rows):
            key = (row[0], row[1])
            seqs[key] = seqs.get(key, 0) + 1
            if row[0] == "book":
                flags = row[5] | (0x80 if i == last_book else 0)
                book.append((ts, seqs[key], row[1], row[2], row[3], row[4], flags, row[6], row[7]))
            else:
                trades.append((ts, seqs[key], row[1], row[2], 0, row[3], row[4]))
    return book, trades


def rows(out):
    book = [tuple(r) for r in out.book[["ts_event", "seq", "instrument_id", "action", "side",
                                        "depth", "flags", "price", "size"]].tolist()]  # fmt: skip
    trades = [tuple(r) for r in out.trades[["ts_event", "seq", "instrument_id", "side", "flags",
                                            "price", "size"]].tolist()]  # fmt: skip
    return book, trades


# ----------------------------------------------------------------- strategies

prices = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}{'.' + frac if frac is not None else ''}",
    st.sampled_from(["", "", "-"]),
    st.integers(0, 9_000_000_000),
    st.none() | st.text("0123456789", min_size=1, max_size=9),
)
#: Sizes as venues send them: whole units (up to 9.2e10) or up to 8 decimals (0.00012).
sizes = st.integers(0, 92_233_720_368) | st.builds(
    lambda whole, frac: f"{whole}.{frac}",
    st.integers(0, 10**9),
    st.text("0123456789", min_size=1, max_size=8),
)
symbols = st.sampled_from(sorted(SYMBOLS))
entries_x = st.lists(st.builds(
    x_entry, action=st.sampled_from("0125"), kind=st.sampled_from("012"), symbol=symbols,
    price=prices, size=sizes, level=st.none() | st.integers(1, 200),
), min_size=1, max_size=8)  # fmt: skip
entries_w = st.lists(st.builds(
    m.MdEntry, st.sampled_from("0012"), prices, sizes,
    level=st.none() | st.integers(1, 200),
), max_size=8)  # fmt: skip
times = st.builds(
    lambda d, frac: d.strftime("%Y%m%d-%H:%M:%S") + (f".{frac}" if frac else ""),
    st.datetimes(min_value=__import__("datetime").datetime(1970, 1, 2),
                 max_value=__import__("datetime").datetime(2200, 1, 1)),
    st.none() | st.text("0123456789", min_size=1, max_size=9),
)  # fmt: skip
one_message = st.one_of(
    st.builds(lambda e, t: wire(*m.incremental_refresh(e), sending_time=t), entries_x, times),
    st.builds(lambda s, e, t: wire(*m.snapshot(s, e), sending_time=t), symbols, entries_w, times),
)


# ----------------------------------------------------------------- cross-check


@SETTINGS
@given(st.lists(one_message, min_size=1, max_size=6))
def test_fast_decoder_matches_simplefix_on_generated_messages(msgs):
    data = b"".join(msgs)
    out = MarketDataDecoder(SYMBOLS).feed(data)
    assert len(out.dead_letters) == 0, out.dead_letters["detail"]
    assert rows(out) == reference(data)


@SETTINGS
@given(st.lists(one_message, min_size=1, max_size=5), st.data())
def test_output_is_the_same_whatever_the_split_points(msgs, data):
    stream = b"".join(msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = MarketDataDecoder(SYMBOLS)
    book, trades = [], []
    for a, z in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out = decoder.feed(stream[a:z])
        assert len(out.dead_letters) == 0
        book += rows(out)[0]
        trades += rows(out)[1]
    assert decoder.residual == 0
    assert (book, trades) == rows(MarketDataDecoder(SYMBOLS).feed(stream))


@SETTINGS
@given(st.text("0123456789", min_size=1, max_size=10), st.text("0123456789", max_size=9),
       st.booleans())  # fmt: skip
def test_decimal_prices_parse_exactly_without_floats(whole, frac, negative):
    text = ("-" if negative else "") + whole + ("." + frac if frac else "")
    ok, value = kernels.parse_decimal(np.frombuffer(text.encode(), np.uint8), 0, len(text))
    expected = int(Decimal(text) * 1_000_000_000)
    assert ok == (abs(expected) <= 2**63 - 1) and (not ok or value == expected)


@pytest.mark.parametrize("text", [b"", b"-", b".", b"1e5", b"1.2.3", b"1.0000000001", b"abc"])
def test_malformed_prices_are_rejected(text):
    assert not kernels.parse_decimal(np.frombuffer(text, np.uint8), 0, len(text))[0]


def test_symbol_hash_matches_between_python_and_compiled_code():
    hashes, ids = build_symbol_table(SYMBOLS)
    assert sorted(kernels.symbol_hash(s) for s in SYMBOLS) == hashes.tolist()
    out = MarketDataDecoder(SYMBOLS).feed(wire(*m.incremental_refresh([x_entry(symbol="BTC/USD")])))
    assert out.book["instrument_id"].tolist() == [0xFFFFFFFF]


def test_security_id_mode_uses_numeric_tag_48():
    body = [(268, 2), (279, 0), (269, 0), (48, 123456), (270, "9.25"), (271, 5),
            (279, 2), (269, 1), (48, 7), (270, "9.5"), (271, 0)]  # fmt: skip
    out = MarketDataDecoder(instrument_key="security_id").feed(wire("X", body))
    assert out.book["instrument_id"].tolist() == [123456, 7]
    assert out.book["action"].tobytes() == b"AD" and out.book["side"].tobytes() == b"BA"


# ----------------------------------------------------------------- sequence handling


def test_rptseq_gap_is_dead_lettered_and_skips_book_seq_duplicates_dropped():
    decoder = MarketDataDecoder(SYMBOLS)
    msgs = [wire(*m.incremental_refresh([x_entry(rpt_seq=r, price=str(r))]), seq=i)
            for i, r in enumerate([1, 2, 2, 5, 6], start=1)]  # fmt: skip
    out = decoder.feed(b"".join(msgs))
    assert out.book["price"].tolist() == [1e9, 2e9, 5e9, 6e9]
    assert out.book["seq"].tolist() == [1, 2, 4, 5]  # the jump makes a downstream book resync
    assert out.dead_letters["reason"].tolist() == [kernels.RPTSEQ_GAP]
    assert b"2 update(s) missing" in out.dead_letters["detail"][0]
    assert decoder.counters["duplicate_rptseq"] == 1 and decoder.counters["rptseq_gaps"] == 1


def test_snapshot_clears_then_adds_with_snapshot_and_last_flags():
    entries = [m.MdEntry("0", "99", 1, level=1), m.MdEntry("1", "101", 2, level=1),
               m.MdEntry("2", "100", 3)]  # fmt: skip
    out = MarketDataDecoder(SYMBOLS).feed(wire(*m.snapshot("GBPUSD", entries)))
    assert out.book["action"].tobytes() == b"RAA"
    assert out.book["flags"].tolist() == [0x20, 0x20, 0xA0]
    assert len(out.trades) == 0


def test_other_message_types_are_skipped_and_counted():
    decoder = MarketDataDecoder(SYMBOLS)
    out = decoder.feed(wire("0", []) + wire(*m.incremental_refresh([x_entry()])))
    assert len(out.book) == 1 and decoder.counters["other_messages"] == 1


# ----------------------------------------------------------------- bad input


GOOD = wire(*m.incremental_refresh([x_entry(price="1.25")]))


def reframe(msg: bytes) -> bytes:
    """``msg`` with BodyLength and CheckSum recomputed (after an edit of its body)."""
    body = msg[msg.index(b"\x0135=") + 1 : msg.rindex(b"10=")]
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def corrupt_checksum(msg: bytes) -> bytes:
    digit = msg[-2] - ord("0")
    return msg[:-2] + bytes([ord("0") + (digit + 1) % 10]) + b"\x01"


def wrong_body_length(msg: bytes, delta: int) -> bytes:
    start = msg.index(b"\x019=") + 3
    end = msg.index(b"\x01", start)
    return msg[:start] + str(int(msg[start:end]) + delta).encode() + msg[end:]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (corrupt_checksum(GOOD), kernels.BAD_CHECKSUM),
        (wrong_body_length(GOOD, -5), kernels.BAD_BODY_LENGTH),
        (wrong_body_length(GOOD, +5), kernels.BAD_BODY_LENGTH),
        (GOOD[: len(GOOD) // 2], kernels.TRUNCATED),
        (GOOD[:-3], kernels.TRUNCATED),
        (b"\x00garbage\xff\x01 58=8=", kernels.GARBAGE),
        (GOOD.replace(b"FIX.4.4", b"FIX.4.2"), kernels.BAD_BEGIN_STRING),
        (GOOD.replace(b"\x019=", b"\x019=x"), kernels.BAD_BODY_LENGTH),
        (
            wire("X", [(268, 2), (279, 0), (269, 0), (55, "EURUSD"), (270, 1), (271, 1)]),
            kernels.BAD_GROUP,
        ),
        (
            wire("X", [(268, 1), (279, 0), (269, 0), (55, "EURUSD"), (270, "1.x"), (271, 1)]),
            kernels.BAD_VALUE,
        ),
        (
            wire("X", [(268, 1), (279, 0), (269, 0), (55, "EURUSD"), (271, 1)]),
            kernels.MISSING_FIELD,
        ),
        (
            wire("X", [(268, 1), (279, 0), (269, 0), (55, "NOPE"), (270, 1), (271, 1)]),
            kernels.UNKNOWN_INSTRUMENT,
        ),
        (
            wire("X", [(268, 1), (279, 9), (269, 0), (55, "EURUSD"), (270, 1), (271, 1)]),
            kernels.BAD_VALUE,
        ),
        (reframe(GOOD.replace(b"\x01270=", b"\x01x70=")), kernels.BAD_FIELD),
        (reframe(GOOD.replace(b"\x0152=2026", b"\x0152=x026")), kernels.BAD_VALUE),
    ],
    ids=[
        "checksum",
        "body_short",
        "body_long",
        "truncated_half",
        "truncated_trailer",
        "garbage",
        "begin_string",
        "body_not_number",
        "group_count",
        "price",
        "missing_price",
        "unknown_symbol",
        "action",
        "tag",
        "sending_time",
    ],  # fmt: skip
)
def test_bad_input_is_dead_lettered_and_good_messages_around_it_decode(bad, reason):
    decoder = MarketDataDecoder(SYMBOLS, source_id=9)
    stream = GOOD + bad + GOOD
    out = decoder.feed(stream)
    tail = decoder.finish()
    dead = np.concatenate([out.dead_letters, tail.dead_letters])
    assert dead["reason"].tolist() == [reason]
    assert dead["source_id"].tolist() == [9]
    assert dead["detail"][0].startswith(kernels.REASONS[reason][0].encode())
    assert int(dead["raw_offset"][0]) == len(GOOD)
    assert out.book["price"].tolist() == [1_250_000_000, 1_250_000_000]
    assert decoder.counters[f"dead_{kernels.REASONS[reason][0]}"] == 1


def without_sending_time(msg: bytes) -> bytes:
    start = msg.index(b"\x0152=")
    return reframe(msg[:start] + msg[msg.index(b"\x01", start + 1) :])


@pytest.mark.parametrize(
    ("bad", "tag", "reason"),
    [
        (wire("X", [(268, 1), (279, 0), (269, ""), (55, "EURUSD"), (270, 1), (271, 1)]), 269,
         kernels.BAD_VALUE),
        (wire("X", [(268, 1), (279, 0), (269, "Z"), (55, "EURUSD"), (270, 1), (271, 1)]), 269,
         kernels.BAD_VALUE),
        (wire("X", [(268, 1), (279, 0), (269, "01"), (55, "EURUSD"), (270, 1), (271, 1)]), 269,
         kernels.BAD_VALUE),
        (wire("W", [(55, "EURUSD"), (268, 2), (269, 0), (270, 1), (271, 1), (269, "Z"),
                    (270, 1), (271, 1)]), 269, kernels.BAD_VALUE),
        (wire("X", [(268, 1), (279, 0), (269, 0), (55, "EURUSD"), (270, 1)]), 271,
         kernels.MISSING_FIELD),
        (wire("X", [(268, 1), (279, 1), (269, 1), (55, "EURUSD"), (270, 1)]), 271,
         kernels.MISSING_FIELD),
        (wire("X", [(268, 1), (279, 0), (269, 2), (55, "EURUSD"), (270, 1)]), 271,
         kernels.MISSING_FIELD),
        (wire("W", [(55, "EURUSD"), (268, 1), (269, 0), (270, 1)]), 271, kernels.MISSING_FIELD),
        (without_sending_time(GOOD), 52, kernels.MISSING_FIELD),
    ],
    ids=["empty_entry_type", "undefined_entry_type", "two_char_entry_type",
         "snapshot_undefined_entry_type", "new_without_size", "change_without_size",
         "trade_without_size", "snapshot_without_size", "no_sending_time"],
)  # fmt: skip
def test_well_framed_but_unusable_content_is_dead_lettered_not_guessed(bad, tag, reason):
    decoder = MarketDataDecoder(SYMBOLS)
    out = decoder.feed(GOOD + bad + GOOD)
    assert out.dead_letters["reason"].tolist() == [reason]
    assert f"tag {tag}:".encode() in out.dead_letters["detail"][0]
    assert int(out.dead_letters["raw_offset"][0]) == len(GOOD)
    assert len(out.book) == 2 and len(out.trades) == 0
    assert decoder.counters["other_entry_types"] == 0


def test_delete_without_size_and_unmapped_entry_types_are_still_accepted():
    delete = wire("X", [(268, 1), (279, 2), (269, 0), (55, "EURUSD"), (270, "1.25")])
    opening = wire("X", [(268, 2), (279, 0), (269, 4), (55, "EURUSD"), (270, 1), (271, 1),
                         (279, 0), (269, 1), (270, 2), (271, 3)])  # fmt: skip
    decoder = MarketDataDecoder(SYMBOLS)
    out = decoder.feed(delete + opening)
    assert len(out.dead_letters) == 0
    assert out.book[["action", "size"]].tolist() == [(ord("D"), 0), (ord("A"), 3 * 10**8)]
    assert decoder.counters["other_entry_types"] == 1


def test_truncated_tail_waits_for_more_bytes_then_dead_letters_at_end_of_stream():
    decoder = MarketDataDecoder(SYMBOLS)
    assert len(decoder.feed(GOOD + GOOD[:30]).book) == 1
    assert decoder.residual == 30
    assert decoder.finish().dead_letters["reason"].tolist() == [kernels.TRUNCATED]


def test_a_huge_body_length_is_refused_without_waiting():
    bad = GOOD.replace(b"\x019=", b"\x019=99999999", 1)
    out = MarketDataDecoder(SYMBOLS, max_body=4096).feed(bad + GOOD)
    assert out.dead_letters["reason"].tolist() == [kernels.TOO_LARGE] and len(out.book) == 1


def test_framer_yields_messages_and_reasons():
    spans = Framer().feed(GOOD + b"xx" + corrupt_checksum(GOOD) + GOOD[:10])
    assert [s for s, _ in spans] == [0, kernels.GARBAGE, kernels.BAD_CHECKSUM]
    assert spans[0][1] == GOOD


# ----------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    one_message,
    st.binary(max_size=40),
    one_message.flatmap(lambda b: st.integers(0, len(b)).map(lambda k: b[:k])),
    one_message.flatmap(lambda b: st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)).map(
        lambda t: b[: t[0]] + bytes([t[1]]) + b[t[0] + 1 :])),
), max_size=8), st.data())  # fmt: skip
def test_fuzz_framer_and_decoder_never_crash_and_account_for_every_byte(parts, data):
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer, decoder = Framer(), MarketDataDecoder(SYMBOLS)
    spans = []
    for a, z in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        spans += framer.feed(stream[a:z])
        decoder.feed(stream[a:z])
    spans += framer.feed(b"", final=True)
    decoder.finish()
    assert b"".join(raw for _, raw in spans) == stream  # every byte in exactly one span
    assert framer.residual == 0 and decoder.residual == 0
    good = [raw for status, raw in spans if status == 0]
    for raw in good:  # whatever the framer accepts has a valid checksum and body length
        assert sum(raw[: raw.rindex(b"10=")]) % 256 == int(raw[-4:-1])
    dead_framing = sum(v for k, v in decoder.counters.items() if k.startswith("dead_")
                       and k[5:] in {"garbage", "bad_begin_string", "bad_body_length",
                                     "bad_checksum", "truncated", "too_large"})  # fmt: skip
    assert dead_framing == sum(1 for status, _ in spans if status != 0)


def _decode_in_pieces(stream: bytes, cuts: list[int]):
    decoder = MarketDataDecoder(SYMBOLS)
    book, trades, dead = [], [], []
    pieces = [stream[a:z] for a, z in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    for piece in [*pieces, None]:  # None: the end of the stream
        out = decoder.feed(piece) if piece is not None else decoder.finish()
        book += rows(out)[0]  # views into the decoder's buffers: read before the next call
        trades += rows(out)[1]
        dead += out.dead_letters[["reason", "raw_offset", "raw_length"]].tolist()
    return book, trades, dead


@SETTINGS
@given(st.lists(one_message, min_size=2, max_size=5),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)),
                min_size=1, max_size=5),
       st.lists(st.lists(st.integers(0, 10**6), max_size=10), min_size=1, max_size=4))  # fmt: skip
def test_corrupted_stream_decodes_the_same_whatever_the_chunking(msgs, edits, chunkings):
    data = bytearray(b"".join(msgs))
    for kind, pos, value in edits:  # overwrite, insert or delete a byte
        pos %= len(data) + (kind == 1)
        if kind == 0 and pos < len(data):
            data[pos] = value
        elif kind == 1:
            data.insert(pos, value)
        elif data:
            del data[pos % len(data)]
    stream = bytes(data)
    whole = _decode_in_pieces(stream, [])
    framing = {kernels.GARBAGE, kernels.BAD_BEGIN_STRING, kernels.BAD_BODY_LENGTH,
               kernels.BAD_CHECKSUM, kernels.TRUNCATED, kernels.TOO_LARGE}  # fmt: skip
    assert sum(n for reason, _, n in whole[2] if reason in framing) <= len(stream)
    for cuts in chunkings:
        cuts = sorted({c % (len(stream) + 1) for c in cuts})
        assert _decode_in_pieces(stream, cuts) == whole, cuts
