"""FIX session conformance (the session protocol as QuickFIX implements it), in both roles.

The hftagg session under test faces a hand-driven counterparty (:class:`Peer`) that writes
crafted bytes over loopback TCP and reads the answers: as initiator against a raw acceptor, as
acceptor against a raw initiator. Timeouts are set small so no test waits for seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest
import simplefix

from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.session import Acceptor, Application, SessionSettings, connect
from hftagg.builtins.protocols.fix.store import MemoryStore
from hftagg.errors import ConfigError

ROLES = ["acceptor", "initiator"]  # the hftagg session's role
OURS = SessionSettings("HFT", "PEER", heartbeat_secs=30, logon_timeout_secs=0.5,
                       logout_timeout_secs=0.5)  # fmt: skip


def frame(fields: list[tuple[int, object]], begin: str = "FIX.4.4") -> bytes:
    """Wire bytes of ``fields`` (everything after BodyLength, in this order) with a correct
    BodyLength and CheckSum: lets a test put any tag anywhere."""
    body = b"".join(b"%d=%s\x01" % (t, str(v).encode()) for t, v in fields)
    head = b"8=%s\x019=%d\x01" % (begin.encode(), len(body))
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def ago(seconds: float) -> str:
    return m.utc_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))


class Peer:
    """The counterparty, driven by hand: SenderCompID PEER, TargetCompID HFT."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.seq = 1
        self.parser = simplefix.FixParser()
        self.received: list[simplefix.FixMessage] = []
        self.eof = False

    def header(self, msg_type: str, seq: int | None = None) -> list[tuple[int, object]]:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return [(35, msg_type), (49, "PEER"), (56, "HFT"), (34, seq), (52, m.utc_timestamp())]

    def send(self, msg_type: str, body=(), seq: int | None = None) -> None:
        self.write(frame([*self.header(msg_type, seq), *body]))

    def write(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def until(self, predicate, timeout: float = 3.0) -> list[simplefix.FixMessage]:
        async def loop():
            while not predicate(self.received):
                data = await self.reader.read(1 << 16)
                if not data:
                    self.eof = True
                    if predicate(self.received):
                        break
                    raise AssertionError(f"connection closed; received {self.types()}")
                self.parser.append_buffer(data)
                while (msg := self.parser.get_message()) is not None:
                    self.received.append(msg)

        await asyncio.wait_for(loop(), timeout)
        return self.received

    async def closed(self, timeout: float = 3.0) -> bool:
        """True when the other side closes the connection (reading what it sends first)."""

        async def loop():
            while data := await self.reader.read(1 << 16):
                self.parser.append_buffer(data)
                while (msg := self.parser.get_message()) is not None:
                    self.received.append(msg)
            self.eof = True

        await asyncio.wait_for(loop(), timeout)
        return self.eof

    def types(self) -> list[str]:
        return [x.get(35).decode() for x in self.received]

    def of_type(self, msg_type: str) -> list[simplefix.FixMessage]:
        return [x for x in self.received if x.get(35) == msg_type.encode()]

    async def logon(self, heartbeat: int = 30, extra=()) -> None:
        self.send("A", [(98, 0), (108, heartbeat), *extra])


async def open_pair(role: str, settings: SessionSettings = OURS, app: Application | None = None,
                    store: MemoryStore | None = None):  # fmt: skip
    """(hftagg session, Peer, closer) logged on; the session has ``role``."""
    if role == "acceptor":
        acceptor = Acceptor([settings], app or Application(),
                            store_factory=(lambda s: store) if store else None)  # fmt: skip
        port = await acceptor.start()
        peer = Peer(*await asyncio.open_connection("127.0.0.1", port))
        await peer.logon()
        await peer.until(lambda r: any(x.get(35) == b"A" for x in r))
        session = acceptor.sessions[-1]

        async def close():
            peer.writer.close()
            await acceptor.stop()

        return session, peer, close
    peers: asyncio.Queue = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: peers.put_nowait(Peer(r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connecting = asyncio.create_task(connect("127.0.0.1", port, settings, app, store))
    peer = await peers.get()
    await peer.until(lambda r: any(x.get(35) == b"A" for x in r))
    await peer.logon()
    session = await connecting

    async def close():
        session.disconnect()
        peer.writer.close()
        server.close()

    return session, peer, close


def rejects(peer: Peer) -> list[tuple[int, int]]:
    return [(int(x.get(373)), int(x.get(371))) for x in peer.of_type("3")]


def run(coro) -> None:
    asyncio.run(coro)


# --------------------------------------------------------------------------- logon


def test_second_logon_is_refused_and_the_first_session_untouched():
    async def scenario():
        session, first, close = await open_pair("acceptor")
        acceptor_seq = session.store.next_target_seq
        second = Peer(*await asyncio.open_connection(*first.writer.get_extra_info("peername")))
        await second.logon()
        assert await second.closed()
        assert second.received == []  # closed without an answer, as QuickFIX does
        assert session.active and session.store.next_target_seq == acceptor_seq
        first.send("1", [(112, "still-there")])
        await first.until(lambda r: any(x.get(112) == b"still-there" for x in r))
        await close()

    run(scenario())


@pytest.mark.parametrize("sent", [b"", b"garbage\x01" * 3, b"wrong-begin-string"])
def test_a_connection_without_a_valid_logon_is_closed_after_the_logon_timeout(sent):
    async def scenario():
        acceptor = Acceptor([OURS], Application())
        port = await acceptor.start()
        peer = Peer(*await asyncio.open_connection("127.0.0.1", port))
        if sent == b"wrong-begin-string":
            peer.write(frame([*peer.header("A"), (98, 0), (108, 30)], begin="FIX.4.2"))
        else:
            peer.write(sent)
        assert await peer.closed(timeout=3.0)
        assert not any(s.active for s in acceptor.sessions)
        assert sum(acceptor.counters.values()) + len(acceptor.sessions) >= 1
        await acceptor.stop()

    run(scenario())


def test_logon_to_an_unknown_target_comp_id_does_not_touch_the_real_session():
    async def scenario():
        store = MemoryStore()
        acceptor = Acceptor([OURS], Application(), store_factory=lambda s: store)
        port = await acceptor.start()
        stranger = Peer(*await asyncio.open_connection("127.0.0.1", port))
        stranger.write(frame([(35, "A"), (49, "PEER"), (56, "SOMEONE"), (34, 1),
                              (52, m.utc_timestamp()), (98, 0), (108, 30)]))  # fmt: skip
        assert await stranger.closed()
        assert acceptor.sessions == [] and acceptor.counters["unknown_session"] == 1
        assert (store.next_sender_seq, store.next_target_seq) == (1, 1)
        peer = Peer(*await asyncio.open_connection("127.0.0.1", port))
        await peer.logon()  # the real counterparty starts at 1, unharmed
        await peer.until(lambda r: any(x.get(35) == b"A" for x in r))
        assert acceptor.sessions[-1].active and store.next_target_seq == 2
        peer.writer.close()
        await acceptor.stop()

    run(scenario())


def test_heartbtint_of_zero_or_less_is_refused():
    with pytest.raises(ConfigError, match="HeartBtInt"):
        SessionSettings("HFT", "PEER", heartbeat_secs=0)

    async def acceptor_side():
        store = MemoryStore()
        acceptor = Acceptor([OURS], Application(), store_factory=lambda s: store)
        port = await acceptor.start()
        peer = Peer(*await asyncio.open_connection("127.0.0.1", port))
        await peer.logon(heartbeat=0)
        assert await peer.closed()
        assert peer.types() == ["5"] and b"HeartBtInt" in peer.received[0].get(58)
        assert store.next_target_seq == 1  # the refused Logon did not count
        await acceptor.stop()

    async def initiator_side():
        peers: asyncio.Queue = asyncio.Queue()
        server = await asyncio.start_server(lambda r, w: peers.put_nowait(Peer(r, w)),
                                            "127.0.0.1", 0)  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        connecting = asyncio.create_task(connect("127.0.0.1", port, OURS))
        peer = await peers.get()
        await peer.until(lambda r: r)
        await peer.logon(heartbeat=-5)
        with pytest.raises(ConnectionError, match="HeartBtInt"):
            await connecting
        server.close()

    run(acceptor_side())
    run(initiator_side())


@pytest.mark.parametrize("role", ROLES)
def test_reset_on_logon(role):
    """The acceptor honours reset_on_logon too: both numbers restart at 1 (its Logon answer
    carries ResetSeqNumFlag=Y only if the Logon did, as QuickFIX's); the initiator resets its
    store before sending its Logon with 141=Y."""

    async def scenario():
        store = MemoryStore()
        store.next_sender_seq, store.next_target_seq = 50, 40
        session, peer, close = await open_pair(role, replace(OURS, reset_on_logon=True),
                                               store=store)  # fmt: skip
        logon = peer.of_type("A")[0]
        assert logon.get(141) == (b"Y" if role == "initiator" else None)
        assert logon.get(34) == b"1"
        assert session.active and store.next_sender_seq == 2 and store.next_target_seq == 2
        await close()

    run(scenario())


# --------------------------------------------------------------------------- in session


@pytest.mark.parametrize("role", ROLES)
def test_sending_time_outside_the_tolerance_is_rejected_then_logged_out(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.write(frame([(35, "0"), (49, "PEER"), (56, "HFT"), (34, peer.seq),
                          (52, ago(121))]))  # fmt: skip
        assert await peer.closed()
        assert rejects(peer) == [(10, 52)] and peer.types()[-1] == "5"
        assert not session.active
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_sending_time_inside_a_configured_tolerance_passes(role):
    async def scenario():
        session, peer, close = await open_pair(role, replace(OURS, max_latency_secs=300))
        peer.write(frame([(35, "1"), (49, "PEER"), (56, "HFT"), (34, 2), (52, ago(200)),
                          (112, "late")]))  # fmt: skip
        await peer.until(lambda r: any(x.get(112) == b"late" for x in r))
        assert rejects(peer) == [] and session.active
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_possdup_with_orig_sending_time_after_sending_time_is_rejected(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.write(frame([(35, "0"), (49, "PEER"), (56, "HFT"), (34, 2), (43, "Y"),
                          (52, ago(5)), (122, m.utc_timestamp())]))  # fmt: skip
        assert await peer.closed()
        assert rejects(peer) == [(10, 52)] and peer.types()[-1] == "5"
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_wrong_begin_string_in_session_gets_logout_and_disconnect(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.write(frame(peer.header("0"), begin="FIX.4.2"))
        assert await peer.closed()
        assert peer.types()[-1] == "5" and b"BeginString" in peer.received[-1].get(58)
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_third_field_not_msg_type_is_garbled_and_consumes_no_seq_num(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        expected = session.store.next_target_seq
        peer.write(frame([(49, "PEER"), (35, "1"), (56, "HFT"), (34, expected),
                          (52, m.utc_timestamp()), (112, "bad")]))  # fmt: skip
        peer.send("1", [(112, "good")], seq=expected)
        await peer.until(lambda r: any(x.get(112) == b"good" for x in r))
        assert session.counters["garbled"] == 1 and rejects(peer) == []
        assert not any(x.get(112) == b"bad" for x in peer.received)
        assert session.store.next_target_seq == expected + 1
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_resend_request_with_too_high_seq_num_is_served(role):
    """Both sides asking at once: ours is answered, theirs (arriving with a gap) is served
    at once, and sequence numbers end in step."""

    async def scenario():
        session, peer, close = await open_pair(role)
        await session.send(*m.market_data_request("R1", ["EURUSD"]))
        await peer.until(lambda r: any(x.get(35) == b"V" for x in r))
        peer.seq += 2  # two of the peer's messages lost
        peer.send("2", [(7, 1), (16, 0)])
        got = await peer.until(lambda r: len([x for x in r if x.get(35) == b"V"]) == 2 and
                               any(x.get(35) == b"2" for x in r))  # fmt: skip
        resent = [x for x in got if x.get(35) == b"V"][1]
        assert resent.get(43) == b"Y"
        ask = peer.of_type("2")[0]
        assert (int(ask.get(7)), int(ask.get(16))) == (2, 0)
        peer.send("4", [(123, "Y"), (36, 4)], seq=2)  # fills 2..3; 4 (the request) is queued
        await asyncio.sleep(0.05)
        peer.send("1", [(112, "in-step")])
        await peer.until(lambda r: any(x.get(112) == b"in-step" for x in r))
        assert session.store.next_target_seq == peer.seq
        assert len(peer.of_type("V")) == 2  # the early ResendRequest was served once
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_missing_or_empty_comp_ids_are_rejected_not_logged_out(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.write(frame([(35, "1"), (49, "PEER"), (34, 2), (52, m.utc_timestamp()),
                          (112, "a")]))  # fmt: skip
        peer.write(frame([(35, "1"), (49, ""), (56, "HFT"), (34, 3), (52, m.utc_timestamp()),
                          (112, "b")]))  # fmt: skip
        peer.seq = 4
        peer.send("1", [(112, "c")])
        await peer.until(lambda r: any(x.get(112) == b"c" for x in r))
        assert rejects(peer) == [(1, 56), (4, 49)]
        assert session.active and session.store.next_target_seq == 5
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_admin_messages_are_validated_against_the_dictionary(role):
    async def scenario():
        session, peer, close = await open_pair(role, replace(OURS, validate=True))
        peer.send("1", [(112, "x"), (55, "EURUSD")])  # Symbol is not a TestRequest field
        await peer.until(lambda r: rejects(peer))
        assert rejects(peer) == [(2, 55)]
        await close()
        session, peer, close = await open_pair(role)  # without a dictionary: accepted
        peer.send("1", [(112, "x"), (55, "EURUSD")])
        await peer.until(lambda r: any(x.get(112) == b"x" for x in r))
        assert rejects(peer) == []
        await close()

    run(scenario())


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_header_after_body_and_repeated_tag_are_rejected(role, validate):
    async def scenario():
        session, peer, close = await open_pair(role, replace(OURS, validate=validate))
        peer.write(frame([*peer.header("1"), (112, "x"), (115, "BROKER")]))
        peer.write(frame([*peer.header("1"), (112, "x"), (112, "y")]))
        await peer.until(lambda r: len(rejects(peer)) == 2)
        assert rejects(peer) == [(14, 115), (13, 112)]
        assert session.active
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_reject_reverses_the_routing_tags(role):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.write(
            frame(
                [
                    *peer.header("1"),
                    (115, "BROKER"),
                    (116, "DESK"),
                    (144, "LDN"),
                    (128, "VENUE"),
                    (129, "GW"),
                    (145, "NY"),
                ]
            )
        )  # no TestReqID: Reject
        reject = (await peer.until(lambda r: rejects(peer)))[-1]
        routed = {t: reject.get(t) for t in (128, 129, 145, 115, 116, 144)}
        assert routed == {128: b"BROKER", 129: b"DESK", 145: b"LDN", 115: b"VENUE", 116: b"GW",
                          144: b"NY"}  # fmt: skip
        assert rejects(peer) == [(1, 112)]
        await close()

    run(scenario())


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("begin", [-100_000_000, 10**12])
@pytest.mark.parametrize("role", ROLES)
def test_resend_request_out_of_range_is_rejected_in_bounded_time(role, begin):
    async def scenario():
        session, peer, close = await open_pair(role)
        peer.send("2", [(7, begin), (16, 0)])
        await peer.until(lambda r: rejects(peer))  # (a loop over the range takes seconds)
        assert rejects(peer) == [(5, 7)] and session.active
        await close()

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_out_of_order_queue_is_bounded(role):
    async def scenario():
        session, peer, close = await open_pair(role, replace(OURS, max_queued_messages=5))
        peer.seq += 1  # one lost: everything after it is held for the gap
        for _ in range(6):
            peer.send("0")
        assert await peer.closed()
        assert peer.types()[-1] == "5" and b"max_queued_messages" in peer.received[-1].get(58)
        assert session.counters["queue_peak"] == 5
        await close()

    run(scenario())


def test_bad_limits_are_config_errors_naming_the_setting():
    with pytest.raises(ConfigError, match="must be at least 1"):
        SessionSettings("HFT", "PEER", max_queued_messages=0)
    with pytest.raises(ConfigError, match="0 turns the check off"):
        SessionSettings("HFT", "PEER", max_latency_secs=-1)
