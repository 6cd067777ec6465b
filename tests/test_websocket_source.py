"""The generic WebSocket source against local servers: decoding, reconnects, staleness, pings
and hostile input (real sockets on loopback; the source runs its own connection thread)."""

from __future__ import annotations

import asyncio
import json
import random
import time

import numpy as np

from hftagg.builtins.sources.websocket import JsonWebSocket, backoff_delay, next_seq
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.instruments import InstrumentRegistry
from hftagg.stages import StageContext
from tests.ws_server import WsServer

SUBSCRIBE = '{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}'
MAPPING = {"symbol": "s", "price": "p", "size": "q", "side": "m", "ts_event": "T"}


def trade(symbol: str, trade_id: int, price: str = "100.5", qty: str = "0.001") -> str:
    """A Binance spot trade event, as documented (``m``: the buyer is the maker)."""
    return json.dumps({"e": "trade", "E": 1672515782136 + trade_id, "s": symbol, "t": trade_id,
                       "p": price, "q": qty, "T": 1672515782136 + trade_id,
                       "m": trade_id % 2 == 0, "M": True})  # fmt: skip


def make_source(url: str, **params) -> JsonWebSocket:
    base = dict(endpoint=url, subscribe=[SUBSCRIBE], mapping=MAPPING, match={"e": "trade"},
                side_values={"true": "A", "false": "B"}, venue="binance",
                reconnect_initial_s=0.05, reconnect_max_s=0.2)  # fmt: skip
    base.update(params)
    source = JsonWebSocket(stage_id="ws", **base)
    source.open(StageContext(instruments=InstrumentRegistry()))
    return source


def collect(source, until, timeout: float = 10.0) -> dict[str, list[np.ndarray]]:
    """Call next_batch until ``until(out)`` holds (or fail after ``timeout`` seconds)."""
    out: dict[str, list[np.ndarray]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = source.next_batch()
        for port, records in (batch or {}).items():
            out.setdefault(port, []).append(records)
        if until(out):
            return out
        time.sleep(0.005)
    raise AssertionError(f"timed out; got {({k: sum(map(len, v)) for k, v in out.items()})}, "
                         f"metrics {source.metrics()}")  # fmt: skip


def joined(out, port):
    return np.concatenate(out[port]) if port in out else np.zeros(0)


def count(port, n):
    return lambda out: sum(map(len, out.get(port, []))) >= n


def alert_codes(out) -> list[int]:
    return joined(out, "alerts")["code"].tolist() if "alerts" in out else []


async def send_trades(ws, server, n=5, start=1):
    server.received.append(await ws.recv())  # the subscribe message, sent after connecting
    for k in range(start, start + n):
        await ws.send(trade("BTCUSDT" if k % 2 else "ETHUSDT", k))


def test_trades_are_mapped_to_fixed_point_records_with_per_instrument_seq():
    with WsServer(send_trades) as server:
        source = make_source(server.url)
        try:
            out = collect(source, count("trades", 5))
        finally:
            source.close()
    trades = joined(out, "trades")
    registry = InstrumentRegistry()
    btc, eth = registry.ids_for("binance", ["BTCUSDT", "ETHUSDT"]).tolist()
    assert server.received == [SUBSCRIBE]  # subscribed once, on connect
    assert trades["instrument_id"].tolist() == [btc, eth, btc, eth, btc]
    assert trades["seq"].tolist() == [1, 1, 2, 2, 3]
    assert (trades["price"] == 100_500_000_000).all() and (trades["size"] == 100_000).all()
    assert trades["side"].tolist() == [ord(c) for c in "BABAB"]  # m=true: seller aggressed
    assert trades["ts_event"][0] == (1672515782136 + 1) * 1_000_000
    assert (trades["ts_recv"] > 0).all()


def test_server_killed_and_restarted_repeatedly_every_gap_is_reported():
    server = WsServer(send_trades).start()
    source = make_source(server.url)
    alerts = []
    try:
        collect(source, count("trades", 5))
        for _ in range(3):
            server.stop()
            time.sleep(0.2)
            server = WsServer(send_trades, port=server.port).start()
            out = collect(source, lambda o: R.CONNECTED in alert_codes(o) and count("trades", 5)(o))
            alerts.append(joined(out, "alerts"))
    finally:
        source.close()
        server.stop()
    alerts = np.concatenate(alerts)
    reconnects = alerts[alerts["code"] == R.CONNECTED]
    assert (alerts["code"] == R.DISCONNECTED).sum() >= 3
    assert len(reconnects) >= 3
    assert (reconnects["value"] > 0).all()  # seconds the feed was down, for each gap
    assert all(b"after" in t for t in reconnects["text"])
    assert source.metrics()["reconnects"] >= 3


def test_silent_server_goes_stale_and_is_reconnected():
    async def one_then_silence(ws, server):
        await send_trades(ws, server, n=1)

    with WsServer(one_then_silence) as server:
        source = make_source(server.url, stale_after_s=0.3)
        try:
            out = collect(source, lambda o: R.CONNECTED in alert_codes(o)[1:], timeout=10)
        finally:
            source.close()
    codes = alert_codes(out)
    assert R.STALE in codes
    assert codes.index(R.STALE) < len(codes) - 1 - codes[::-1].index(R.CONNECTED)
    assert source.metrics()["stale_reconnects"] >= 1
    assert server.connections >= 2


def test_malformed_oversized_and_binary_messages_are_dead_lettered_and_the_connection_lives():
    async def hostile(ws, server):
        await ws.recv()
        await ws.send(trade("BTCUSDT", 1))
        await ws.send('{"e":"trade","s":"BTCUSDT","p":')  # truncated JSON
        await ws.send('{"e":"trade","s":"BTCUSDT","p":"' + "9" * 3000 + '"}')  # oversized
        await ws.send(b"\x00\x01binary")  # a binary frame on a JSON feed
        await ws.send('{"e":"trade","s":"BTCUSDT","p":"1.5","q":"abc","T":1,"m":true}')
        await ws.send('{"e":"trade","s":"BTCUSDT","q":"1","T":1,"m":true}')  # no price
        await ws.send('{"result":null,"id":1}')  # the subscription's answer: ignored
        await ws.send(trade("BTCUSDT", 3))

    with WsServer(hostile) as server:
        source = make_source(server.url, max_message_bytes=1024)
        try:
            out = collect(source, lambda o: count("trades", 2)(o) and count("dead_letters", 5)(o))
        finally:
            source.close()
    dead = joined(out, "dead_letters")
    assert sorted(dead["reason"].tolist()) == sorted([
        R.MALFORMED, R.OVERSIZED, R.BINARY_FRAME, 0x0201, R.MISSING_FIELD])  # fmt: skip
    assert all(d for d in dead["detail"])  # each says what and which field
    assert joined(out, "trades")["seq"].tolist() == [1, 2]
    m = source.metrics()
    assert m["connects"] == 1 and m["oversized"] == 1 and m["binary_frames"] == 1
    assert m["ignored"] == 1


def test_server_ping_is_answered_with_a_pong():
    async def ping(ws, server):
        await ws.recv()
        started = time.monotonic()
        waiter = await ws.ping(b"are-you-there")
        await asyncio.wait_for(waiter, 2)
        server.pongs.append(time.monotonic() - started)
        await ws.send(trade("BTCUSDT", 1))

    with WsServer(ping) as server:
        source = make_source(server.url)
        try:
            collect(source, count("trades", 1))
        finally:
            source.close()
    assert len(server.pongs) == 1


def test_backoff_is_capped_exponential_with_jitter():
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30.0, 0.5, rng) for n in range(12)]
    assert all(0.25 * 2**n <= d <= 0.5 * 2**n for n, d in enumerate(delays[:6]))
    assert all(15.0 <= d <= 30.0 for d in delays[6:])
    assert len(set(delays)) == len(delays)  # jittered: no two clients in step


def test_next_seq_continues_per_instrument():
    counters: dict[int, int] = {}
    first = next_seq(np.array([5, 7, 5, 5], dtype=np.uint32), counters)
    second = next_seq(np.array([7, 5], dtype=np.uint32), counters)
    assert first.tolist() == [1, 1, 2, 3] and second.tolist() == [2, 4]


def depth(update_id: int, bids, asks) -> str:
    """A Binance diff-depth event inside a combined-stream envelope, as documented."""
    data = {"e": "depthUpdate", "E": 1672515782136 + update_id, "s": "BNBBTC",
            "U": update_id, "u": update_id, "b": bids, "a": asks}  # fmt: skip
    return json.dumps({"stream": "bnbbtc@depth", "data": data})


def test_depth_diffs_become_book_updates_one_per_level_with_f_last_per_message():
    async def diffs(ws, server):
        await ws.recv()
        await ws.send(depth(1, [["0.0024", "10"], ["0.0023", "0"]], [["0.0026", "100"]]))
        await ws.send(depth(2, [["0.0024", "1e-9"]], []))  # too precise: the whole message
        await ws.send(depth(3, [], [["0.0026", "0.5"]]))

    mapping = {"symbol": "data.s", "bids": "data.b", "asks": "data.a", "ts_event": "data.E"}
    with WsServer(diffs) as server:
        source = make_source(server.url, record="book_update", mapping=mapping,
                             match={"data.e": "depthUpdate"})  # fmt: skip
        try:
            out = collect(source, lambda o: count("book", 4)(o) and count("dead_letters", 1)(o))
        finally:
            source.close()
    book = joined(out, "book")
    assert book["price"].tolist() == [2_400_000, 2_300_000, 2_600_000, 2_600_000]
    assert book["size"].tolist() == [10 * 10**8, 0, 100 * 10**8, 50_000_000]
    assert bytes(book["side"]).decode() == "BBAA"
    assert bytes(book["action"]).decode() == "MDMM"
    assert book["flags"].tolist() == [0, 0, 0x80, 0x80]  # the book publishes per message
    assert book["seq"].tolist() == [1, 2, 3, 4]
    dead = joined(out, "dead_letters")
    assert dead["reason"].tolist() == [0x0202] and b"bids.size" in dead["detail"][0]


def test_depth_levels_of_any_shape_are_scanned_exactly_or_refused_whole():
    from hftagg.builtins.sources.websocket.mapping import JsonMapping

    mapping = JsonMapping("book_update", {"bids": "b", "asks": "a"})
    messages = [
        b'{"b": [["101.5", "2.25", "1534614057.32"]], "a": [[102, 0.5]]}',  # Kraken-like, numbers
        b'{"b": [["1", "2"], "oops"], "a": []}',  # a level that is no array: refused whole
        b'{"b": [["1"]]}',  # no size
        b'{"a": null}',  # nothing
    ]
    cols = mapping.decode(messages)
    assert cols.rows.tolist() == [0, 0]
    assert cols.values["price"].tolist() == [101_500_000_000, 102_000_000_000]
    assert cols.values["size"].tolist() == [225_000_000, 50_000_000]
    assert cols.values["flags"].tolist() == [0, 0x80]
    assert sorted(r[:2] for r in cols.rejected) == [(1, R.BAD_LEVEL), (2, R.BAD_LEVEL)]


def test_fix_market_data_over_websocket_goes_to_the_fix_decoder():
    from hftagg.builtins.protocols.fix import messages as m

    def wire(seq, entries):
        msg_type, body = m.incremental_refresh(entries)
        return m.encode("FIX.4.4", msg_type, "MD", "HFT", seq, body)

    async def fix_feed(ws, server):
        trade = m.MdEntry("2", "101.25", 3, action="0", symbol="EURUSD")
        bid = m.MdEntry("0", "101.00", 5, action="0", symbol="EURUSD")
        await ws.send(wire(1, [trade]).decode())  # FIX as a text frame
        await ws.send(wire(2, [bid]))  # and as a binary one
        await ws.send(b"8=FIX.4.4\x019=5\x0135=X\x0110=000\x01")  # garbled

    with WsServer(fix_feed) as server:
        source = make_source(server.url, data_format="FIX", mapping={}, fix_symbols=["EURUSD"],
                             venue="fx")  # fmt: skip
        try:
            out = collect(source, lambda o: count("trades", 1)(o) and count("book", 1)(o)
                          and count("dead_letters", 1)(o))  # fmt: skip
        finally:
            source.close()
    eurusd = InstrumentRegistry().ids_for("fx", ["EURUSD"])[0]
    trades, book = joined(out, "trades"), joined(out, "book")
    assert trades["price"].tolist() == [101_250_000_000] and trades["size"].tolist() == [3 * 10**8]
    assert book["price"].tolist() == [101_000_000_000]
    assert trades["instrument_id"][0] == book["instrument_id"][0] == eurusd


def test_sbe_frames_over_websocket_go_to_the_sbe_decoder_across_message_boundaries():
    from hftagg.builtins.protocols.sbe.records import RecordEncoder
    from hftagg.builtins.protocols.sbe.stages import FAMILY
    from hftagg.records.catalog import TRADE

    trades = TRADE.empty(200)
    trades["price"] = np.arange(200) * 10**9
    trades["size"] = 10**8
    trades["instrument_id"] = 7
    trades["seq"] = np.arange(1, 201)
    frames = RecordEncoder(FAMILY.codec("sbe/hftagg-md.xml"), "length2").encode("trade", trades)
    blob = frames.tobytes()

    async def sbe_feed(ws, server):
        await ws.recv()
        for k in range(0, len(blob), 997):  # pieces that cut frames in two
            await ws.send(blob[k : k + 997])
        await ws.send("a text frame on a binary feed")

    with WsServer(sbe_feed) as server:
        source = make_source(server.url, data_format="sbe", mapping={})
        try:
            out = collect(source, lambda o: count("trades", 200)(o) and count("dead_letters", 1)(o))
        finally:
            source.close()
    got = joined(out, "trades")
    assert got["price"].tolist() == trades["price"].tolist()
    assert got["seq"].tolist() == trades["seq"].tolist()
    assert joined(out, "dead_letters")["reason"].tolist() == [R.TEXT_FRAME]


def test_connection_state_and_reconnects_are_prometheus_metrics():
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.graph import graph_from_stages
    from hftagg.runtime.pipeline import Pipeline
    from hftagg.telemetry.prometheus import render_prometheus
    from hftagg.testing import TestingSink

    host = load_plugins([], entry_points=False)
    got: list = []
    with WsServer(send_trades) as server:
        source = JsonWebSocket(stage_id="ws", endpoint=server.url, subscribe=[SUBSCRIBE],
                               mapping=MAPPING, side_values={"true": "A", "false": "B"},
                               match={"e": "trade"})  # fmt: skip
        sink = TestingSink(got, topics={"input": "md.trades"})
        pipeline = Pipeline(graph_from_stages([source, sink], host), host=host)
        pipeline.open()
        try:
            (node,) = pipeline.graph.sources
            deadline = time.monotonic() + 10
            while source.metrics().get("records_decoded", 0) < 5 and time.monotonic() < deadline:
                pipeline.pump_source(node)
                time.sleep(0.01)
            text = render_prometheus(pipeline)
        finally:
            source.close()
    assert 'hftagg_source_connection_state{stage="ws"} 2' in text  # connected
    assert 'hftagg_source_messages_total{stage="ws"} 5' in text
    assert 'hftagg_source_reconnects_total{stage="ws"} 0' in text


def test_adapter_on_connect_runs_after_subscribing_and_a_failing_one_reconnects():
    calls: list[int] = []

    class Adapter(JsonWebSocket):
        async def on_connect(self, client):
            calls.append(client.connection)
            if len(calls) == 1:
                raise RuntimeError("REST snapshot failed")
            await asyncio.sleep(0.05)  # a snapshot fetch; messages keep arriving

    with WsServer(send_trades) as server:
        source = Adapter(stage_id="ws", endpoint=server.url, subscribe=[SUBSCRIBE],
                         mapping=MAPPING, match={"e": "trade"}, reconnect_initial_s=0.05,
                         side_values={"true": "A", "false": "B"})  # fmt: skip
        source.open(StageContext(instruments=InstrumentRegistry()))
        try:
            out = collect(source, lambda o: count("trades", 5)(o) and len(alert_codes(o)) >= 2)
        finally:
            source.close()
    assert calls == [1, 2]
    assert server.received == [SUBSCRIBE, SUBSCRIBE]  # subscribed on both connections
    assert alert_codes(out) == [R.DISCONNECTED, R.CONNECTED], alert_codes(out)
    assert joined(out, "trades")["seq"].tolist()[:5] == [1, 1, 2, 2, 3]


def test_a_bad_mapping_is_reported_before_anything_connects_naming_the_field_and_the_fix():
    ctx = StageContext(instruments=InstrumentRegistry())
    unknown = JsonWebSocket(endpoint="ws://127.0.0.1:9/ws", mapping={"price": "p", "qty": "q"})
    no_size = JsonWebSocket(endpoint="ws://127.0.0.1:9/ws", mapping={"price": "p"}, symbol="X")
    no_symbol = JsonWebSocket(endpoint="ws://127.0.0.1:9/ws", mapping={"price": "p", "size": "q"})
    (key, text), = unknown.check(ctx)  # fmt: skip
    assert key == "mapping" and "'qty'" in text and "size" in text  # lists what it maps
    assert "needs a path for ['size']" in no_size.check(ctx)[0][1]
    assert no_symbol.check(ctx)[0][0] == "symbol" and "mapping.symbol" in no_symbol.check(ctx)[0][1]
