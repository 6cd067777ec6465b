"""Interoperability with QuickFIX (the reference FIX engine), in both session roles.

QuickFIX runs in this process (its own threads) with temporary config files, its FIX44 data
dictionary (validation on) and a file store. In both roles QuickFIX is the market-data
provider: it answers a MarketDataRequest (35=V) with a snapshot (W) and an incremental
refresh (X) that hftagg's compiled decoder turns into records. Each test also drives
heartbeats and test requests, a sequence gap in each direction (ResendRequest answered by
resend with PossDupFlag=Y and by SequenceReset-GapFill) and logout.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.protocols.fix.session import Acceptor, Application, SessionSettings, connect
from tests.conftest import free_port

fix = pytest.importorskip(
    "quickfix",
    reason="QUICKFIX NOT INSTALLED: the QuickFIX interop tests did not run. Install the "
    "reference peer with `pip install quickfix` (builds from source, ~6.5 min).",
)
fix44 = pytest.importorskip("quickfix44")

DICTIONARY = Path(sys.prefix) / "share" / "quickfix" / "FIX44.xml"
SYMBOLS = {"EURUSD": 1, "GBPUSD": 2}


class QuickFixMd(fix.Application):
    """QuickFIX side: answers V with a W snapshot and one X update per symbol; records all."""

    def __init__(self) -> None:
        super().__init__()
        self.session_id = None
        self.logged_on = threading.Event()
        self.logged_out = threading.Event()
        self.admin: list[str] = []
        self.requests: list[tuple[str, str, bool]] = []  # (symbol, 263, possdup)
        self.errors: list[str] = []

    def onCreate(self, session_id):  # noqa: N802 - QuickFIX's callback names
        self.session_id = session_id

    def onLogon(self, session_id):  # noqa: N802
        self.logged_on.set()

    def onLogout(self, session_id):  # noqa: N802
        self.logged_out.set()

    def toAdmin(self, message, session_id):  # noqa: N802
        pass

    def toApp(self, message, session_id):  # noqa: N802
        pass

    def fromAdmin(self, message, session_id):  # noqa: N802
        self.admin.append(message.toString().replace("\x01", "|"))

    def fromApp(self, message, session_id):  # noqa: N802
        try:
            self._on_app(message, session_id)
        except Exception as exc:  # noqa: BLE001 - record; QuickFIX would swallow it
            self.errors.append(repr(exc))

    def _on_app(self, message, session_id):
        msg_type = message.getHeader().getField(35)
        if msg_type != "V":
            return
        possdup = message.getHeader().isSetField(43) and message.getHeader().getField(43) == "Y"
        req_id = message.getField(262)
        group = fix44.MarketDataRequest.NoRelatedSym()
        for i in range(1, int(message.getField(146)) + 1):
            message.getGroup(i, group)
            symbol = group.getField(55)
            self.requests.append((symbol, message.getField(263), possdup))
            if message.getField(263) == "1":
                self.send_snapshot(symbol, req_id)
                self.send_update(symbol, "100.125", rpt_seq=1)

    def send_snapshot(self, symbol: str, req_id: str) -> None:
        snap = fix44.MarketDataSnapshotFullRefresh()
        snap.setField(fix.MDReqID(req_id))
        snap.setField(fix.Symbol(symbol))
        for kind, price, size in (("0", "99.5", "10"), ("1", "100.25", "7")):
            entry = fix44.MarketDataSnapshotFullRefresh.NoMDEntries()
            entry.setField(fix.MDEntryType(kind))
            entry.setField(fix.StringField(270, price))
            entry.setField(fix.StringField(271, size))
            snap.addGroup(entry)
        fix.Session.sendToTarget(snap, self.session_id)

    def send_update(self, symbol: str, price: str, rpt_seq: int) -> None:
        inc = fix44.MarketDataIncrementalRefresh()
        for action, kind in (("1", "0"), ("0", "2")):
            entry = fix44.MarketDataIncrementalRefresh.NoMDEntries()
            entry.setField(fix.MDUpdateAction(action))
            entry.setField(fix.MDEntryType(kind))
            entry.setField(fix.Symbol(symbol))
            entry.setField(fix.StringField(270, price))
            entry.setField(fix.StringField(271, "3"))
            entry.setField(fix.RptSeq(rpt_seq))
            inc.addGroup(entry)
            rpt_seq += 1
        fix.Session.sendToTarget(inc, self.session_id)

    def skip_sequence(self, count: int) -> None:
        """Jump this side's outgoing MsgSeqNum: the next message arrives with a gap."""
        session = fix.Session.lookupSession(self.session_id)
        session.setNextSenderMsgSeqNum(session.getExpectedSenderNum() + count)

    def test_request(self, test_id: str) -> None:
        request = fix44.TestRequest()
        request.setField(fix.TestReqID(test_id))
        fix.Session.sendToTarget(request, self.session_id)


class HftMd(Application):
    """hftagg side: keeps the raw W/X bytes for the decoder."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.admin: list = []

    def on_message(self, session, message, raw):
        if message.get(35) in (b"W", b"X"):
            self.raw.append(raw)

    def on_admin(self, session, message):
        self.admin.append(message)


def _config(tmp_path: Path, role: str, port: int) -> fix.SessionSettings:
    """QuickFIX settings from a temporary file. QuickFIX keeps raw pointers to the settings and
    factories it is given: the caller must keep them referenced while it runs. The tests use the
    Threaded* connectors: with the python binding's SocketAcceptor, ``stop()`` segfaults after
    callbacks have run (quickfix 1.16.0)."""
    connection = (f"SocketAcceptPort={port}\nSocketAcceptHost=127.0.0.1\n" if role == "acceptor"
                  else f"SocketConnectHost=127.0.0.1\nSocketConnectPort={port}\n"
                       "HeartBtInt=1\nReconnectInterval=1\n")  # fmt: skip
    text = (
        f"[DEFAULT]\nConnectionType={role}\n{connection}"
        f"FileStorePath={tmp_path / 'qf-store'}\nFileLogPath={tmp_path / 'qf-log'}\n"
        f"StartTime=00:00:00\nEndTime=00:00:00\nUseDataDictionary=Y\n"
        f"DataDictionary={DICTIONARY}\nValidateUserDefinedFields=N\n"
        f"[SESSION]\nBeginString=FIX.4.4\nSenderCompID=QF\nTargetCompID=HFT\n"
    )
    path = tmp_path / f"quickfix-{role}.cfg"
    path.write_text(text)
    return fix.SessionSettings(str(path))


async def _until(predicate, timeout=8.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _exercise(session, hft: HftMd, qf: QuickFixMd) -> None:
    """The shared scenario once both sides are logged on."""
    # heartbeats and test requests, both directions
    test_id = await session.test_request("HFT-PING")
    await _until(lambda: any(x.get(112) == test_id.encode() for x in hft.admin), what="heartbeat")
    qf.test_request("QF-PING")
    await _until(lambda: any("112=QF-PING" in x and "35=0" in x for x in qf.admin),
                 what="QuickFIX's test request answered")  # fmt: skip
    await asyncio.sleep(1.2)  # HeartBtInt=1: QuickFIX heartbeats on silence
    assert any(x.get(35) == b"0" and x.get(112) is None for x in hft.admin)

    # market data: subscribe, decode W and X with the compiled decoder
    await session.send(*m.market_data_request("REQ-1", ["EURUSD"]))
    await _until(lambda: len(hft.raw) == 2, what="W and X")
    out = MarketDataDecoder(SYMBOLS).feed(b"".join(hft.raw))
    assert len(out.dead_letters) == 0
    assert out.book["action"].tobytes() == b"RAAM"
    assert out.book["price"].tolist() == [0, 99_500_000_000, 100_250_000_000, 100_125_000_000]
    assert out.book["size"].tolist() == [0, 10 * 10**8, 7 * 10**8, 3 * 10**8]  # 1e-8 fixed
    assert out.trades["price"].tolist() == [100_125_000_000]

    # gap QuickFIX -> hftagg: hftagg asks for a resend, QuickFIX gap-fills, queue drains
    qf.skip_sequence(3)
    qf.send_update("EURUSD", "100.5", rpt_seq=3)
    await _until(lambda: len(hft.raw) == 3, what="the X after the gap")
    assert session.counters["resend_requests_sent"] == 1
    await _until(lambda: session.store.next_target_seq ==
                 fix.Session.lookupSession(qf.session_id).getExpectedSenderNum(),
                 what="sequence numbers in step")  # fmt: skip
    assert MarketDataDecoder(SYMBOLS).feed(hft.raw[2]).book["price"].tolist() == [100_500_000_000]

    # gap hftagg -> QuickFIX: a lost V is resent with PossDupFlag=Y, admin is gap-filled
    await session.test_request("HFT-2")
    await session.send(*m.market_data_request("REQ-2", ["GBPUSD"]), transmit=False)
    await session.send("0")
    await _until(lambda: ("GBPUSD", "1", True) in qf.requests, what="the resent V")
    await _until(lambda: len(hft.raw) == 5, what="GBPUSD W and X")
    assert session.counters["resends"] == 1 and session.counters["gap_fills_sent"] >= 1
    await session.send(*m.market_data_request("REQ-2", ["GBPUSD"], subscribe=False))
    await _until(lambda: ("GBPUSD", "2", False) in qf.requests, what="unsubscribe")
    assert qf.errors == []


def test_hftagg_initiator_with_quickfix_acceptor(tmp_path):
    port = free_port()
    qf = QuickFixMd()
    settings = _config(tmp_path, "acceptor", port)
    factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
    acceptor = fix.ThreadedSocketAcceptor(qf, factories[0], settings, factories[1])
    acceptor.start()

    async def scenario():
        hft = HftMd()
        ours = SessionSettings("HFT", "QF", heartbeat_secs=1)
        session = await connect("127.0.0.1", port, ours, hft)
        assert session.active and qf.logged_on.wait(5)
        await _exercise(session, hft, qf)
        await session.logout("done")
        assert session.closed.is_set()
        assert await asyncio.to_thread(qf.logged_out.wait, 5)

    try:
        asyncio.run(scenario())
    finally:
        acceptor.stop()


def test_quickfix_initiator_with_hftagg_acceptor(tmp_path):
    qf = QuickFixMd()
    hft = HftMd()

    async def scenario():
        server = Acceptor([SessionSettings("HFT", "QF", heartbeat_secs=30)], hft)
        port = await server.start("127.0.0.1", 0)
        settings = _config(tmp_path, "initiator", port)
        factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
        initiator = fix.ThreadedSocketInitiator(qf, factories[0], settings, factories[1])
        initiator.start()
        try:
            await _until(lambda: server.sessions and server.sessions[-1].active, what="logon")
            session = server.sessions[-1]
            assert session.heartbeat_secs == 1  # the initiator's HeartBtInt is used
            await _exercise(session, hft, qf)
        finally:
            await asyncio.to_thread(initiator.stop)  # QuickFIX logs out
        await _until(lambda: session.closed.is_set(), what="logout")
        assert qf.logged_out.is_set()
        await server.stop()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- validation

#: (defect, SessionRejectReason (373), RefTagID (371)) checked in both directions.
DEFECTS = [
    ("no SubscriptionRequestType", 1, 263),  # required tag missing
    ("OrderQty in a V", 2, 38),  # tag not defined for this message type
    ("tag 4999", 0, 4999),  # undefined tag (below 5000: ValidateUserDefinedFields=N is moot)
    ("263=9", 5, 263),  # value not in the enum
    ("264=deep", 6, 264),  # incorrect data format (INT)
]


def _defective_body(defect: str) -> list[tuple[int, object]]:
    body: list[tuple[int, object]] = [(262, "BAD"), (263, "1"), (264, 0), (267, 1), (269, "0"),
                                      (146, 1), (55, "EURUSD")]  # fmt: skip
    if defect == "no SubscriptionRequestType":
        return [t for t in body if t[0] != 263]
    if defect == "263=9":
        return [(263, "9") if t[0] == 263 else t for t in body]
    if defect == "264=deep":
        return [(264, "deep") if t[0] == 264 else t for t in body]
    return [*body, (38, "5") if defect == "OrderQty in a V" else (4999, "x")]


def _quickfix_message(body: list[tuple[int, object]]):
    """A QuickFIX MarketDataRequest with the body's fields (groups built as groups: QuickFIX
    does not check what it sends, so the defect goes out as is)."""
    msg = fix44.MarketDataRequest()
    for tag, value in body:
        if tag == 269:
            group = fix44.MarketDataRequest.NoMDEntryTypes()
            group.setField(fix.MDEntryType(str(value)))
            msg.addGroup(group)
        elif tag == 55:
            group = fix44.MarketDataRequest.NoRelatedSym()
            group.setField(fix.Symbol(str(value)))
            msg.addGroup(group)
        elif tag not in (267, 146):
            msg.setField(fix.StringField(tag, str(value)))
    return msg


def _reject_of(text: str) -> tuple[int, int] | None:
    fields = dict(f.split("=", 1) for f in text.strip("|").split("|"))
    return (int(fields["373"]), int(fields["371"])) if fields.get("35") == "3" else None


@pytest.mark.parametrize("quickfix_role", ["acceptor", "initiator"])
def test_validation_rejects_match_quickfix_in_both_directions(tmp_path, quickfix_role):
    """Each defective V goes hftagg -> QuickFIX (QuickFIX's Reject is the reference) and
    QuickFIX -> hftagg (hftagg, validating with the same FIX44 dictionary, must answer alike).
    QuickFIX does not validate what it sends, so its defective messages are built with its own
    API (no raw socket needed)."""
    qf = QuickFixMd()
    hft = HftMd()
    ours = SessionSettings("HFT", "QF", heartbeat_secs=1, validate=True)

    async def exchange(session):
        for defect, _, _ in DEFECTS:
            await session.send("V", _defective_body(defect))
            fix.Session.sendToTarget(_quickfix_message(_defective_body(defect)), qf.session_id)
        await _until(lambda: len([a for a in qf.admin if _reject_of(a)]) == len(DEFECTS) and
                     len([a for a in hft.admin if a.get(35) == b"3"]) == len(DEFECTS),
                     what="the Rejects")  # fmt: skip
        from_hftagg = [_reject_of(a) for a in qf.admin if _reject_of(a)]
        from_quickfix = [(int(a.get(373)), int(a.get(371))) for a in hft.admin
                         if a.get(35) == b"3"]  # fmt: skip
        expected = [(reason, tag) for _, reason, tag in DEFECTS]
        assert from_quickfix == expected  # QuickFIX's answers to hftagg's defective messages
        assert from_hftagg == expected  # hftagg's answers to QuickFIX's
        assert qf.requests == [] and qf.errors == []

    if quickfix_role == "acceptor":
        port = free_port()
        settings = _config(tmp_path, "acceptor", port)
        factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
        acceptor = fix.ThreadedSocketAcceptor(qf, factories[0], settings, factories[1])
        acceptor.start()

        async def scenario():
            session = await connect("127.0.0.1", port, ours, hft)
            assert qf.logged_on.wait(5)
            await exchange(session)
            await session.logout("done")

        try:
            asyncio.run(scenario())
        finally:
            acceptor.stop()
        return

    async def scenario():
        server = Acceptor([replace(ours, heartbeat_secs=30)], hft)
        port = await server.start("127.0.0.1", 0)
        settings = _config(tmp_path, "initiator", port)
        factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
        initiator = fix.ThreadedSocketInitiator(qf, factories[0], settings, factories[1])
        initiator.start()
        try:
            await _until(lambda: server.sessions and server.sessions[-1].active, what="logon")
            await exchange(server.sessions[-1])
        finally:
            await asyncio.to_thread(initiator.stop)
        await server.stop()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- fault paths


def test_fault_paths_against_quickfix_acceptor(tmp_path):
    """QuickFIX (the reference) and hftagg agree on the fault paths: garbled input is ignored
    without consuming a sequence number, a second Logon for a connected session is refused
    with the first untouched, a stale SendingTime gets Reject 10 + Logout, and a Logon with
    reset_on_logon restarts both sides at 1. (Gaps, resends and gap fills: ``_exercise``.)"""
    port = free_port()
    qf = QuickFixMd()
    settings = _config(tmp_path, "acceptor", port)
    factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
    acceptor = fix.ThreadedSocketAcceptor(qf, factories[0], settings, factories[1])
    acceptor.start()
    ours = SessionSettings("HFT", "QF", heartbeat_secs=30, logon_timeout_secs=2,
                           logout_timeout_secs=1)  # fmt: skip

    def qf_session():
        return fix.Session.lookupSession(qf.session_id)

    async def scenario():
        hft = HftMd()
        session = await connect("127.0.0.1", port, ours, hft)
        # garbled: a bad checksum is ignored by QuickFIX, the next message (same number) counts
        good = session._encode("1", session.store.next_sender_seq, [(112, "AFTER-GARBLED")])
        bad = bytearray(good)
        bad[-3] = ord("0") + (bad[-3] - ord("0") + 1) % 10
        session._write(bytes(bad))
        await session.test_request("AFTER-GARBLED")
        await _until(lambda: any(x.get(112) == b"AFTER-GARBLED" for x in hft.admin),
                     what="QuickFIX's answer after the garbled message")  # fmt: skip
        assert not any(x.get(35) in (b"3", b"5") for x in hft.admin)
        assert qf_session().getExpectedTargetNum() == session.store.next_sender_seq

        # a second Logon for the connected session: refused, the first untouched
        with pytest.raises((ConnectionError, TimeoutError)):
            await connect("127.0.0.1", port, ours, HftMd())
        await session.test_request("FIRST-ALIVE")
        await _until(lambda: any(x.get(112) == b"FIRST-ALIVE" for x in hft.admin),
                     what="the first session still answered")  # fmt: skip
        assert session.active

        # clock skew: a SendingTime 200 s old gets Reject 10 and Logout from QuickFIX too
        stale = m.utc_timestamp(m.dt.datetime.now(m.dt.UTC) - m.dt.timedelta(seconds=200))
        seq = session.store.next_sender_seq
        session.store.next_sender_seq = seq + 1
        session._write(session._encode("0", seq, [], sending_time=stale))
        await _until(lambda: session.closed.is_set(), what="QuickFIX's Logout")
        reject = next(x for x in hft.admin if x.get(35) == b"3")
        assert reject.get(373) == b"10" and reject.get(45) == str(seq).encode()
        assert hft.admin[-1].get(35) == b"5"

        # reset: a Logon with reset_on_logon restarts both sides at 1
        await asyncio.sleep(0.2)
        again = HftMd()
        session = await connect("127.0.0.1", port, replace(ours, reset_on_logon=True), again)
        assert session.active and session.store.next_sender_seq == 2
        await _until(lambda: qf_session().getExpectedTargetNum() == 2, what="QuickFIX reset")
        assert qf_session().getExpectedSenderNum() == session.store.next_target_seq
        await session.logout("done")

    try:
        asyncio.run(scenario())
    finally:
        acceptor.stop()


def test_fault_paths_against_quickfix_initiator(tmp_path):
    """hftagg as acceptor, QuickFIX as initiator: a second Logon for QuickFIX's session is
    refused and QuickFIX's session is untouched; garbled input from hftagg is ignored by
    QuickFIX; a stale SendingTime from hftagg gets QuickFIX's Reject 10 + Logout."""
    qf = QuickFixMd()
    hft = HftMd()

    async def scenario():
        server = Acceptor([SessionSettings("HFT", "QF", heartbeat_secs=30, logon_timeout_secs=1,
                                           logout_timeout_secs=1)], hft)  # fmt: skip
        port = await server.start("127.0.0.1", 0)
        settings = _config(tmp_path, "initiator", port)
        factories = (fix.FileStoreFactory(settings), fix.FileLogFactory(settings))  # keep alive
        initiator = fix.ThreadedSocketInitiator(qf, factories[0], settings, factories[1])
        initiator.start()
        try:
            await _until(lambda: server.sessions and server.sessions[-1].active, what="logon")
            session = server.sessions[-1]
            # a second Logon as QF: closed unanswered, QuickFIX's session goes on
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(m.encode("FIX.4.4", "A", "QF", "HFT", 1, [(98, 0), (108, 1)]))
            assert await asyncio.wait_for(reader.read(), 3) == b""
            writer.close()
            assert server.counters["duplicate_logon"] == 1 and len(server.sessions) == 1
            qf.test_request("QF-STILL-ON")
            await _until(lambda: any("112=QF-STILL-ON" in x and "35=0" in x for x in qf.admin),
                         what="QuickFIX's test request answered")  # fmt: skip
            # garbled from hftagg: QuickFIX ignores it, the same number then counts
            good = session._encode("1", session.store.next_sender_seq, [(112, "AFTER-GARBLED")])
            bad = bytearray(good)
            bad[-3] = ord("0") + (bad[-3] - ord("0") + 1) % 10
            session._write(bytes(bad))
            await session.test_request("AFTER-GARBLED")
            await _until(lambda: any(x.get(112) == b"AFTER-GARBLED" for x in hft.admin),
                         what="QuickFIX's answer after the garbled message")  # fmt: skip
            # clock skew: QuickFIX answers Reject 10 and Logout
            stale = m.utc_timestamp(m.dt.datetime.now(m.dt.UTC) - m.dt.timedelta(seconds=200))
            seq = session.store.next_sender_seq
            session.store.next_sender_seq = seq + 1
            session._write(session._encode("0", seq, [], sending_time=stale))
            await _until(lambda: session.closed.is_set(), what="QuickFIX's Logout")
            reject = next(x for x in hft.admin if x.get(35) == b"3")
            assert reject.get(373) == b"10" and reject.get(45) == str(seq).encode()
        finally:
            await asyncio.to_thread(initiator.stop)
        await server.stop()

    asyncio.run(scenario())
