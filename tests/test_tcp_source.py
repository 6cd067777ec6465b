"""TCP source and the shared framer: partial frames across reads, hostile bytes, oversized
frames dead-lettered, disconnects and reconnects against a real local TCP peer."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from hftagg.builtins.protocols.sbe.stages import SbeDecode, SbeEncode
from hftagg.builtins.sources import framing as F
from hftagg.builtins.sources.multicast import packets as P
from hftagg.builtins.sources.tcp.source import Tcp
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import TRADE
from hftagg.stages import StageContext
from hftagg.testing import run_stage


def _frames(framer: F.StreamFramer, pieces: list[bytes]) -> tuple[list[bytes], list[int]]:
    good, bad = [], []
    for piece in pieces:
        buf, spans, _ = framer.feed(piece)
        for start, end, status in spans.tolist():
            (good if status == F.OK else bad).append(
                bytes(buf[start:end]) if status == F.OK else status
            )
    return good, bad


def _cut(data: bytes, rng) -> list[bytes]:
    cuts = sorted(rng.choice(len(data), 30, replace=False).tolist())
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_length_prefixed_frames_split_anywhere_come_out_whole_and_in_order():
    rng = np.random.default_rng(1)
    frames = [struct.pack(">I", n) + bytes([n % 251]) * n for n in rng.integers(0, 300, 50)]
    stream = b"".join(frames)
    framer = F.StreamFramer("length", length_bytes=4, big_endian=True,
                            length_includes_prefix=False)  # fmt: skip

    good, bad = _frames(framer, _cut(stream, rng))

    assert good == frames and bad == [] and framer.pending_bytes == 0


def test_an_oversized_frame_is_skipped_whole_and_the_stream_stays_in_sync():
    small = [struct.pack("<H", 2 + 5) + b"hello", struct.pack("<H", 2 + 3) + b"bye"]
    huge = struct.pack("<H", 9000) + b"\xee" * 8998
    stream = small[0] + huge + small[1]
    framer = F.StreamFramer("length", max_frame_bytes=100)

    good, bad = _frames(framer, [stream[:50], stream[50:4000], stream[4000:]])

    assert good == small and bad == [F.OVERSIZED]
    assert framer.oversized_bytes == 9000


def test_delimited_frames_and_an_unterminated_run_longer_than_the_limit():
    framer = F.StreamFramer("delimited", delimiter=b"\n", max_frame_bytes=16)
    pieces = [b"a,1\nb,", b"2\n" + b"x" * 40, b"y" * 10 + b"\nc,3\n"]

    good, bad = _frames(framer, pieces)

    assert good == [b"a,1\n", b"b,2\n", b"c,3\n"] and bad == [F.OVERSIZED]


def test_fix_framing_keeps_good_messages_around_garbage():
    msg = b"8=FIX.4.4\x019=5\x0135=0\x0110=163\x01"
    framer = F.StreamFramer("fix")

    good, bad = _frames(framer, [msg[:7], msg[7:] + b"\x00garbage\xff", msg])

    assert good == [msg, msg] and bad == [F.GARBAGE]


# --------------------------------------------------------------------------- live source


def _collect(source: Tcp, until, timeout: float = 10.0, got=None) -> dict[str, list[np.ndarray]]:
    got = {} if got is None else got
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port, records in (source.next_batch() or {}).items():
            got.setdefault(port, []).append(records)
        if until(got):
            break
        time.sleep(0.01)
    return got


def _all(got, port) -> np.ndarray:
    return np.concatenate(got[port]) if port in got else np.zeros(0)


def _sbe_frames(n: int) -> tuple[np.ndarray, bytes]:
    trades = TRADE.empty(n)
    trades["ts_event"] = np.arange(n) + 10**18
    trades["price"] = (np.arange(n) + 100) * 10**9
    trades["size"] = 10**8
    trades["side"] = ord("B")
    trades["instrument_id"] = 7
    trades["seq"] = np.arange(n)
    encoder = SbeEncode()
    encoder.open(StageContext())
    chunks = encoder.process(trades, "trades")
    data = b"".join(bytes(c["data"][: c["length"]]) for c in chunks)
    return trades, data


def test_tcp_source_survives_hostile_bytes_cuts_and_reconnects_and_feeds_sbe_decode():
    trades, stream = _sbe_frames(30)
    half = len(stream) // 2
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    source = Tcp(port=port, max_frame_bytes=512, reconnect_initial_s=0.05, stage_id="feed")
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        peer, _ = server.accept()
        peer.sendall(stream[:half])
        got = _collect(source, lambda g: source.metrics()["bytes"] >= half)
        # a length prefix of 0 (hostile), an oversized frame, the rest, then a cut frame
        peer.sendall(stream[half:] + b"\x00\x00" + struct.pack("<H", 5000) + b"\x01" * 4998
                     + b"\x10\x00abc")  # fmt: skip
        peer.close()
        peer, _ = server.accept()  # the source reconnects
        peer.sendall(stream[:40])  # a new stream: frames from its start again
        got = _collect(source, lambda g: len(_all(g, "alerts")) >= 3
                       and len(_all(g, "frames")) >= 30 + 40 // (len(stream) // 30),
                       got=got)  # fmt: skip
        peer.close()
    finally:
        source.close()
        server.close()

    frames = _all(got, "frames")
    dead = _all(got, "dead_letters")
    assert dead["reason"].tolist() == [P.BAD_LENGTH, P.OVERSIZED, P.TRUNCATED_FRAME]
    assert dead["raw_length"].tolist() == [2, 5000, 5]
    assert _all(got, "alerts")["code"].tolist() == [P.CONNECTED, P.DISCONNECTED, P.CONNECTED]
    decoded = run_stage(SbeDecode(framing="length2"), frames[:30])["trades"]
    assert decoded["price"].tolist() == trades["price"].tolist()
    assert (frames["flags"] & 1).all() and frames["seq"].tolist() == list(range(len(frames)))
    m = source.metrics()
    assert m["connects"] == 2 and m["dead_oversized"] == 1 and m["oversized_bytes"] == 5000


def test_listen_mode_accepts_a_peer_and_frames_newline_delimited_text():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    source = Tcp(port=port, mode="listen", framing="delimited", stage_id="lines")
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        with socket.create_connection(("127.0.0.1", port)) as peer:
            peer.sendall(b"one\ntwo\nthr")
            peer.sendall(b"ee\n")
            got = _collect(source, lambda g: len(_all(g, "frames")) >= 3)
    finally:
        source.close()

    frames = _all(got, "frames")
    assert [bytes(f["data"][: f["length"]]) for f in frames] == [b"one\n", b"two\n", b"three\n"]


def test_fix_over_tcp_feeds_fix_decode_with_a_garbled_message_dead_lettered():
    from hftagg.builtins.protocols.fix import messages
    from hftagg.builtins.protocols.fix.stages import FixDecode

    msgs = []
    for k in range(1, 21):
        msg_type, body = messages.incremental_refresh(
            [messages.MdEntry("2", f"{100 + k}.25", k, symbol="ESZ6", rpt_seq=k)]
        )
        msgs.append(messages.encode("FIX.4.4", msg_type, "MD", "HFTAGG", k, body))
    bad = msgs[5].replace(b"10=", b"10=9")[:-1] + b"\x01"  # a CheckSum that cannot match
    stream = b"".join(msgs[:5]) + bad + b"".join(msgs[5:])
    server = socket.create_server(("127.0.0.1", 0))
    source = Tcp(port=server.getsockname()[1], framing="fix", stage_id="fixfeed")
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        peer, _ = server.accept()
        for i in range(0, len(stream), 37):  # pieces that cut messages anywhere
            peer.sendall(stream[i : i + 37])
        got = _collect(
            source, lambda g: len(_all(g, "frames")) + len(_all(g, "dead_letters")) >= 21
        )
        peer.close()
    finally:
        source.close()
        server.close()

    assert _all(got, "dead_letters")["reason"].tolist() == [P.BAD_FIX]
    trades = run_stage(FixDecode(symbols={"ESZ6": 7}), _all(got, "frames"))["trades"]
    assert trades["price"].tolist() == [(100 + k) * 10**9 + 250_000_000 for k in range(1, 21)]


def test_listening_on_a_port_in_use_is_refused_naming_it():
    from hftagg.errors import ConfigError

    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            Tcp(port=port, mode="listen", stage_id="busy").open(StageContext())
    finally:
        busy.close()
