"""SBE stream decoding after corruption: the output does not depend on how the bytes were chunked.

Property: for a corrupted stream (bytes overwritten, inserted, deleted, the end cut), the
``sbe_decode`` stage fed any chunking of it, then ended with ``flush_pending``, gives exactly
the records and dead letters of one scan of the whole stream; every byte is either in a decoded
message or in a dead letter; an ``end of stream`` dead letter only appears when the stream
really ends inside a frame. Messages the scan accepts agree with the ``sbe`` package.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftagg.builtins.protocols.sbe import Reason, SbeCodec, frame, parse_schema
from hftagg.builtins.protocols.sbe.records import RecordDecoder, RecordEncoder
from hftagg.builtins.protocols.sbe.stages import SbeDecode
from hftagg.records.catalog import BOOK_UPDATE, MBP10, RAW_CHUNK, TRADE
from hftagg.stages import StageContext
from tests.test_sbe import CAR, EXAMPLE, HFTAGG_MD, RECORDS, _books, _trades

PORTS = {"trades": "trade", "book": "book_update", "mbp10": "mbp10"}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def md() -> SbeCodec:
    return SbeCodec(parse_schema(HFTAGG_MD))


def _valid(md: SbeCodec, framing: str) -> bytes:
    enc = RecordEncoder(md, framing)
    mbp = MBP10.empty(3)
    mbp["bid_px"] = np.arange(30).reshape(3, 10)
    parts = [enc.encode("trade", _trades(12)), enc.encode("book_update", _books(12)),
             enc.encode("mbp10", mbp), enc.encode("trade", _trades(6, seed=5))]  # fmt: skip
    return np.concatenate(parts).tobytes()


# edits: (kind, position, byte): 0 overwrite, 1 insert, 2 delete
EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)),
                 min_size=1, max_size=6)  # fmt: skip


def _corrupt(data: bytes, edits, cut: int) -> bytes:
    out = bytearray(data)
    for kind, pos, value in edits:
        pos %= len(out) + (kind == 1)
        if kind == 0 and pos < len(out):
            out[pos] = value
        elif kind == 1:
            out.insert(pos, value)
        elif out:
            del out[pos % len(out)]
    return bytes(out[: len(out) - cut])


def _rows(batch: np.ndarray) -> list[tuple]:
    """Records as plain tuples (MBP-10's level arrays as lists): comparable with ``==``."""
    return [
        tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in r) for r in batch.tolist()
    ]


def _chunks(stream: bytes, cuts: list[int]) -> np.ndarray:
    edges = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    pieces = [stream[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]
    chunks = RAW_CHUNK.empty(len(pieces))
    for i, p in enumerate(pieces):
        chunks["data"][i, : len(p)] = np.frombuffer(p, np.uint8)
        chunks["length"][i] = len(p)
        chunks["ts_recv"][i] = i
    return chunks


def _stage_output(stream: bytes, cuts: list[int], per_batch: int, **params):
    """Records per port and dead letters of the stage fed ``stream`` cut at ``cuts``."""
    stage = SbeDecode(**params)
    stage.open(StageContext())
    chunks = _chunks(stream, cuts)
    outs = [stage.process(chunks[i : i + per_batch]) for i in range(0, len(chunks), per_batch)]
    outs.append(stage.flush_pending())
    records = {port: [r for o in outs if port in o for r in _rows(o[port])] for port in PORTS}
    dead = [(int(d["reason"]), int(d["raw_offset"]), int(d["raw_length"]), bytes(d["detail"]))
            for o in outs if "dead_letters" in o for d in o["dead_letters"]]  # fmt: skip
    return records, dead, stage


def _reference(codec: SbeCodec, stream: bytes, framing: str):
    """One scan of the whole stream, as if it had ended (records, dead letters, scan)."""
    sc = codec.scan(np.frombuffer(stream, np.uint8), framing, final=True,
                    cut_reason=Reason.END_OF_STREAM)  # fmt: skip
    out = RecordDecoder(codec, RECORDS).records(sc)
    records = {port: _rows(out[name]) if name in out else [] for port, name in PORTS.items()}
    dead = [(int(e["reason"]), int(e["offset"]), int(e["length"]),
             f"sbe: {Reason.NAMES[int(e['reason'])]} ({int(e['detail'])})".encode())
            for e in sc.errors]  # fmt: skip
    return records, dead, sc


def _ends_inside_a_frame(codec: SbeCodec, stream: bytes, start: int, framing: str) -> bool:
    """Whether the bytes from ``start`` are the beginning of a frame the stream cuts short."""
    pre = 6 if framing == "sofh" else 2
    if len(stream) - start < pre + codec.header_size:
        return True
    length = (int.from_bytes(stream[start : start + 4], "big") if framing == "sofh"
              else int.from_bytes(stream[start : start + 2], "little"))  # fmt: skip
    return start + length > len(stream)


@SETTINGS
@given(framing=st.sampled_from(["length2", "sofh"]), edits=EDITS, cut=st.integers(0, 40),
       chunkings=st.lists(st.lists(st.integers(0, 10**6), max_size=12), min_size=3, max_size=6),
       per_batch=st.integers(1, 4))  # fmt: skip
def test_corrupted_stream_decodes_the_same_whatever_the_chunking(md, framing, edits, cut,
                                                                 chunkings, per_batch):  # fmt: skip
    stream = _corrupt(_valid(md, framing), edits, cut)
    ref_records, ref_dead, sc = _reference(md, stream, framing)
    covered = int((sc.msg_end - sc.msg_frame).sum() + sc.errors["length"].sum())
    assert covered == len(stream), "every byte is in a message or a dead letter"
    for cuts in [[], *chunkings]:
        records, dead, stage = _stage_output(stream, cuts, per_batch, framing=framing)
        assert records == ref_records, f"records differ for chunk cuts {sorted(cuts)}"
        assert dead == ref_dead, f"dead letters differ for chunk cuts {sorted(cuts)}"
        assert not any(st.waiting for st in stage._streams.values())
    for reason, offset, _, _ in ref_dead:
        if reason == Reason.END_OF_STREAM:
            assert _ends_inside_a_frame(md, stream, offset, framing), (offset, len(stream))


@SETTINGS
@given(edits=EDITS, chunkings=st.lists(st.lists(st.integers(0, 10**6), max_size=10), max_size=4))
def test_stream_ending_on_an_intact_frame_gets_no_end_of_stream_dead_letter(md, edits, chunkings):
    valid = _valid(md, "length2")
    last = len(valid) - RecordEncoder(md).encode("trade", _trades(1)).size
    edits = [(0, pos % last, value) for _, pos, value in edits]  # overwrite before the last frame
    stream = _corrupt(valid, edits, 0)
    for cuts in [[], *chunkings]:
        records, dead, _ = _stage_output(stream, cuts, 2)
        assert Reason.END_OF_STREAM not in [d[0] for d in dead], (dead, sorted(cuts))
        assert records["trades"][-1] == _rows(_trades(6, seed=5))[-1]


@SETTINGS
@given(edits=EDITS, chunkings=st.lists(st.lists(st.integers(0, 10**6), max_size=10), max_size=4))
def test_corrupted_messages_with_groups_decode_the_same_whatever_the_chunking(edits, chunkings):
    if not EXAMPLE.exists():
        pytest.skip(f"shared SBE test data absent: {EXAMPLE}")
    car = SbeCodec(parse_schema(EXAMPLE))
    stream = _corrupt(frame([car.encode("Car", CAR)] * 4), edits, 0)
    sc = car.scan(np.frombuffer(stream, np.uint8), final=True, cut_reason=Reason.END_OF_STREAM)
    ref = [(int(e["reason"]), int(e["offset"]), int(e["length"])) for e in sc.errors]
    for cuts in [[], *chunkings]:
        _, dead, stage = _stage_output(stream, cuts, 3, schema=str(EXAMPLE))
        assert [d[:3] for d in dead] == ref, sorted(cuts)
        assert stage.messages == len(sc.msg_slot)


def test_accepted_messages_agree_with_the_sbe_package(md):
    sbe = pytest.importorskip("sbe")
    with open(HFTAGG_MD) as f:
        ref = sbe.Schema.parse(f)
    rng = np.random.default_rng(11)
    stream = bytearray(_valid(md, "length2"))
    for pos in rng.integers(0, len(stream), 12):
        stream[pos] = rng.integers(256)
    records, _, sc = _reference(md, bytes(stream), "length2")
    decoded = {"Trade": iter(records["trades"]), "BookUpdate": iter(records["book"]),
               "Mbp10": iter(records["mbp10"])}  # fmt: skip
    schemas = {"Trade": TRADE, "BookUpdate": BOOK_UPDATE, "Mbp10": MBP10}
    assert len(sc.msg_frame) > 20
    for start, end in zip(sc.msg_frame.tolist(), sc.msg_end.tolist(), strict=True):
        msg = ref.decode(bytes(stream[start + 2 : end]))
        mine = dict(zip(schemas[msg.message_name].dtype.names, next(decoded[msg.message_name]),
                        strict=True))  # fmt: skip
        for name in ("ts_event", "ts_recv", "seq", "instrument_id", "price", "size"):
            if name in mine:
                assert msg.value[name] == mine[name], (msg.message_name, name)


def test_decoded_records_have_zero_padding_whatever_the_buffer_held_before(md):
    books = _books(50)
    decoder = RecordDecoder(md, RECORDS)
    enc = RecordEncoder(md)
    mbp = MBP10.empty(100)
    mbp.view(np.uint8)[:] = 0xAB
    decoder.records(md.scan(enc.encode("mbp10", mbp)))  # fills the reused buffer
    out = decoder.records(md.scan(enc.encode("book_update", books)))["book_update"]
    expected = BOOK_UPDATE.empty(len(books))
    expected.view(np.uint8)[:] = 0
    for name in BOOK_UPDATE.dtype.names:
        expected[name] = books[name]
    assert out.tobytes() == expected.tobytes()


def test_closing_with_an_unfinished_frame_says_how_many_bytes_were_left(md, caplog):
    stage = SbeDecode(stage_id="decode")
    stage.open(StageContext())
    valid = _valid(md, "length2")
    frame_bytes = valid[:30]  # of the first trade frame
    stage.process(_chunks(frame_bytes, []))
    with caplog.at_level("WARNING", logger="hftagg.sbe"):
        stage.close()
    assert "'decode' closes with 30 byte(s) of unfinished frames" in caplog.text
    stage = SbeDecode()
    stage.open(StageContext())
    stage.process(_chunks(frame_bytes, []))
    stage.flush_pending()
    caplog.clear()
    stage.close()
    assert "unfinished" not in caplog.text
    stage.process(_chunks(frame_bytes, []))
    successor = SbeDecode()
    successor.open(StageContext())
    successor.restore(stage.snapshot())  # a rebuild carries the bytes on: nothing to report
    stage.close()
    assert "unfinished" not in caplog.text
    out = successor.process(_chunks(valid[30 : int.from_bytes(valid[:2], "little")], []))
    assert len(out["trades"]) == 1
