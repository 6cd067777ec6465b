"""FIX 4.4 session layer, hftagg initiator against hftagg acceptor over loopback TCP."""

from __future__ import annotations

import asyncio

import pytest

from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.protocols.fix.session import (
    Acceptor,
    Application,
    RejectMessage,
    SessionSettings,
    connect,
)
from hftagg.builtins.protocols.fix.store import FileStore

CLIENT = SessionSettings("CLIENT", "SERVER", heartbeat_secs=1, logout_timeout_secs=1.0)
SERVER = SessionSettings("SERVER", "CLIENT", heartbeat_secs=1, logout_timeout_secs=1.0,
                         app_message_types=frozenset({"V", "W", "X"}))  # fmt: skip


class Recorder(Application):
    def __init__(self) -> None:
        self.app: list = []
        self.admin: list = []
        self.raw: list[bytes] = []
        self.garbled: list[int] = []
        self.logons = 0

    def on_logon(self, session):
        self.logons += 1

    def on_message(self, session, message, raw):
        self.app.append(message)
        self.raw.append(raw)

    def on_admin(self, session, message):
        self.admin.append(message)

    def on_garbled(self, session, reason, raw):
        self.garbled.append(reason)

    def types(self, which="admin") -> list[str]:
        return [x.get(35).decode() for x in getattr(self, which)]


class MdServer(Recorder):
    """Answers a MarketDataRequest with a W snapshot and one X per subscribed symbol."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribed: set[str] = set()

    def on_message(self, session, message, raw):
        super().on_message(session, message, raw)
        if message.get(35) != b"V":
            return
        symbols = [v.decode() for t, v in message.pairs if t == b"55"]
        if message.get(263) == b"2":
            self.subscribed -= set(symbols)
            return
        if message.get(263) != b"1":
            raise RejectMessage("SubscriptionRequestType must be 1 or 2", 5, 263)
        self.subscribed |= set(symbols)
        for s in symbols:
            entries = [m.MdEntry("0", "99.5", 10), m.MdEntry("1", "100.25", 7)]
            asyncio.ensure_future(session.send(*m.snapshot(s, entries, message.get(262))))
            update = [m.MdEntry("2", "100.25", 3, symbol=s, action="0", rpt_seq=1)]
            asyncio.ensure_future(session.send(*m.incremental_refresh(update)))


async def _pair(server_app=None, client_app=None, client_store=None, server_store=None):
    acceptor = Acceptor(
        [SERVER],
        server_app or Recorder(),
        store_factory=(lambda s: server_store) if server_store else None,
    )
    port = await acceptor.start("127.0.0.1", 0)
    client = await connect("127.0.0.1", port, CLIENT, client_app or Recorder(), client_store)
    await acceptor.new_session.wait()
    return acceptor, client, acceptor.sessions[-1]


async def _until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_logon_heartbeat_test_request_and_logout():
    async def scenario():
        server_app, client_app = Recorder(), Recorder()
        acceptor, client, server = await _pair(server_app, client_app)
        assert client.active and server.active and server_app.logons == 1
        test_id = await client.test_request("PING-1")
        await _until(lambda: any(x.get(112) == test_id.encode() for x in client_app.admin))
        await asyncio.sleep(1.3)  # HeartBtInt 1: both sides send heartbeats on silence
        assert "0" in server_app.types() and "0" in client_app.types()
        await client.logout("bye")
        await _until(lambda: server.closed.is_set())
        assert client.closed.is_set() and server_app.types()[-1] == "5"
        await acceptor.stop()

    asyncio.run(scenario())


def test_gap_triggers_resend_of_app_messages_and_gap_fill_of_admin():
    async def scenario():
        server_app = MdServer()
        acceptor, client, server = await _pair(server_app)
        await client.test_request()  # admin: gap-filled on resend
        req = m.market_data_request("R1", ["EURUSD"])
        lost = await client.send(*req, transmit=False)  # app: resent with PossDupFlag=Y
        await client.send("0")  # arrives with a gap: server queues it and asks for a resend
        await _until(lambda: server_app.types("app") == ["V"])
        resent = server_app.app[0]
        assert int(resent.get(34)) == lost
        assert resent.get(43) == b"Y" and resent.get(122) is not None
        assert server.counters["resend_requests_sent"] == 1
        assert client.counters["resends"] == 1
        await _until(lambda: server.store.next_target_seq == client.store.next_sender_seq)
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


def test_possdup_duplicate_is_dropped_and_low_seq_without_possdup_logs_out():
    async def scenario():
        server_app = Recorder()
        acceptor, client, server = await _pair(server_app)
        seq = await client.send(*m.market_data_request("R1", ["EURUSD"]))
        await _until(lambda: len(server_app.app) == 1)
        dup = client._encode(
            "V",
            seq,
            m.market_data_request("R1", ["EURUSD"])[1],
            orig_sending_time=m.utc_timestamp(),
        )
        client._write(dup)
        await client.send("0")
        await _until(lambda: server.counters["possdup_dropped"] == 1)
        assert len(server_app.app) == 1
        client._write(client._encode("0", seq, []))  # too low, no PossDupFlag: fatal
        await _until(lambda: server.closed.is_set())
        assert "too low" in server.last_logout_text
        await acceptor.stop()

    asyncio.run(scenario())


def test_sequence_reset_reset_and_reject_of_malformed_messages():
    async def scenario():
        server_app = MdServer()
        acceptor, client, server = await _pair(server_app, client_app := Recorder())
        await client.reset_sequence(50)
        await client.send("1", [])  # TestRequest without TestReqID (112): Reject
        await _until(lambda: "3" in client_app.types())
        reject = next(x for x in client_app.admin if x.get(35) == b"3")
        assert reject.get(373) == b"1" and reject.get(371) == b"112" and reject.get(45) == b"50"
        await client.send("ZZ", [(58, "what")])  # unsupported MsgType: Reject 373=11
        await client.send("V", [(262, "R2"), (263, "7"), (146, 1), (55, "X")])  # app reject
        await _until(lambda: len([x for x in client_app.admin if x.get(35) == b"3"]) == 3)
        reasons = [x.get(373) for x in client_app.admin if x.get(35) == b"3"]
        assert reasons == [b"1", b"11", b"5"]
        assert server.store.next_target_seq == 53 and server.active
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


def test_garbled_input_is_ignored_and_session_continues():
    async def scenario():
        server_app = Recorder()
        acceptor, client, server = await _pair(server_app)
        good = client._encode("0", client.store.next_sender_seq, [])
        bad = bytearray(good)
        bad[-3] = ord("0") + (bad[-3] - ord("0") + 1) % 10  # checksum off by 10
        client._write(b"noise" + bytes(bad))
        await client.send("1", [(112, "after-garbage")])
        await _until(lambda: any(x.get(112) == b"after-garbage" for x in server_app.admin))
        assert server_app.garbled == [0x0F01, 0x0F04]
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


def test_file_store_persists_sequence_numbers_and_messages_across_restarts(tmp_path):
    async def scenario():
        store = FileStore(tmp_path, CLIENT.session_id)
        acceptor, client, server = await _pair(client_store=store)
        await client.send(*m.market_data_request("R1", ["EURUSD"]))
        await client.logout()
        sent, received = store.next_sender_seq, store.next_target_seq
        store.close()
        reopened = FileStore(tmp_path, CLIENT.session_id)
        assert (reopened.next_sender_seq, reopened.next_target_seq) == (sent, received)
        assert b"35=V" in reopened.get(1, sent)[2]
        client2 = await connect(
            "127.0.0.1", acceptor.server.sockets[0].getsockname()[1], CLIENT, Recorder(), reopened
        )  # same session continues its numbers
        assert client2.active and acceptor.sessions[-1].store.next_target_seq == sent + 1
        await client2.logout()
        reopened.close()
        await acceptor.stop()

    asyncio.run(scenario())


def test_market_data_subscribe_unsubscribe_feeds_the_fast_decoder():
    async def scenario():
        server_app, client_app = MdServer(), Recorder()
        acceptor, client, server = await _pair(server_app, client_app)
        await client.send(*m.market_data_request("R1", ["EURUSD", "GBPUSD"]))
        await _until(lambda: len(client_app.raw) == 4)
        assert server_app.subscribed == {"EURUSD", "GBPUSD"}
        await client.send(*m.market_data_request("R1", ["GBPUSD"], subscribe=False))
        await _until(lambda: server_app.subscribed == {"EURUSD"})
        out = MarketDataDecoder({"EURUSD": 1, "GBPUSD": 2}).feed(b"".join(client_app.raw))
        assert out.book["action"].tobytes() == b"RAARAA"
        assert out.book["price"].tolist()[1:3] == [99_500_000_000, 100_250_000_000]
        assert out.trades["instrument_id"].tolist() == [1, 2]
        assert len(out.dead_letters) == 0
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


def test_password_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FIX_TEST_PASSWORD", "s3cret")
    server = SessionSettings("SERVER", "CLIENT", password_env="FIX_TEST_PASSWORD")

    async def scenario():
        acceptor = Acceptor([server], Recorder())
        port = await acceptor.start()
        wrong = SessionSettings("CLIENT", "SERVER", password_env="FIX_WRONG_PASSWORD")
        monkeypatch.setenv("FIX_WRONG_PASSWORD", "nope")
        with pytest.raises(ConnectionError, match="invalid password"):
            await connect("127.0.0.1", port, wrong, timeout=3)
        right = SessionSettings("CLIENT", "SERVER", password_env="FIX_TEST_PASSWORD")
        client = await connect("127.0.0.1", port, right)
        assert client.active
        await client.logout()
        await acceptor.stop()

    asyncio.run(scenario())


def test_silent_counterparty_gets_a_test_request_then_is_disconnected():
    async def scenario():
        acceptor = Acceptor([SERVER], Recorder())
        port = await acceptor.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(m.encode("FIX.4.4", "A", "CLIENT", "SERVER", 1, [(98, 0), (108, 1)]))
        received = b""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while data := await asyncio.wait_for(reader.read(4096), 6):  # never answer anything
            received += data
        elapsed = loop.time() - started
        assert b"35=A\x01" in received and b"35=1\x01" in received  # Logon, then TestRequest
        assert 2.0 < elapsed < 5.0  # 1.2 x HeartBtInt to the TestRequest, as long again to close
        assert acceptor.sessions[-1].closed.is_set()
        writer.close()
        await acceptor.stop()

    asyncio.run(scenario())


def test_logon_from_an_unknown_comp_id_is_refused():
    async def scenario():
        acceptor = Acceptor([SERVER], Recorder())
        port = await acceptor.start()
        stranger = SessionSettings("STRANGER", "SERVER", logon_timeout_secs=2)
        with pytest.raises((ConnectionError, TimeoutError)):
            await connect("127.0.0.1", port, stranger)
        assert acceptor.sessions == []
        await acceptor.stop()

    asyncio.run(scenario())
