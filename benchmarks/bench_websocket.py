"""WebSocket ingest: a Binance-style trade + depth stream into records, hftagg vs cryptofeed.

The stream is crafted from Binance's documented spot formats, in the combined-stream envelope
(``{"stream": "btcusdt@aggTrade", "data": {...}}``) cryptofeed's Binance handler expects: half
``aggTrade`` events on two symbols, half ``depthUpdate`` diffs with 1..10 levels per side
(8-decimal strings, contiguous update ids). Every message goes, byte for byte, to:

- **hftagg decode**: two generic ``websocket`` sources (``record = "trade"`` and
  ``record = "book_update"``, as with Binance's separate trade and depth connections), each
  given its own messages in batches of ``BATCH``: one msgspec parse per batch, fixed-point
  conversion, registry ids, per-instrument seq -> ``trade`` and ``book_update`` records.
- **hftagg over a socket**: the same two sources, opened for real, each reading its stream from
  a local picows server on loopback (receive thread, batching, decode), until every record is
  out. The server shares the 2 cores with the client.
- **cryptofeed**: its ``Binance`` feed handler, ``message_handler`` awaited per message with no
  network (symbols and the L2 book snapshot preloaded so it never calls the REST API): what its
  feed handler does per message -- ``json.loads`` with Decimal, trade objects, book updates --
  without its websocket client, which only favours it.
- **orjson.loads**: a bare per-message parse loop, the floor of any per-message design.

Ratios: hftagg decode / cryptofeed (target >= 10x) and hftagg over the socket / cryptofeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import numpy as np
import orjson

from benchmarks.harness import Result
from hftagg.builtins.sources.websocket import JsonWebSocket
from hftagg.instruments import InstrumentRegistry
from hftagg.stages import StageContext

TARGET = 10.0
BATCH = 512
SYMBOLS = ("BTCUSDT", "ETHUSDT")
TRADE_MAP = {"symbol": "data.s", "price": "data.p", "size": "data.q", "side": "data.m",
             "ts_event": "data.T"}  # fmt: skip
DEPTH_MAP = {"symbol": "data.s", "bids": "data.b", "asks": "data.a", "ts_event": "data.E"}


def make_stream(n: int, seed: int = 11) -> tuple[list[bytes], list[bytes]]:
    """``n`` messages: (aggTrade messages, depthUpdate messages), in Binance's formats."""
    rng = random.Random(seed)
    trades, depth = [], []
    update_id = {s: 1000 for s in SYMBOLS}
    t = 1_700_000_000_000
    for k in range(n):
        symbol = SYMBOLS[k % 2]
        mid = 43_000 if symbol == "BTCUSDT" else 2_300
        t += rng.randint(0, 3)
        if k % 4 < 2:
            data = {"e": "aggTrade", "E": t, "s": symbol, "a": k, "p": f"{mid + rng.random():.8f}",
                    "q": f"{rng.random():.8f}", "f": k, "l": k, "T": t,
                    "m": rng.random() < 0.5, "M": True}  # fmt: skip
            trades.append(json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data},
                                     separators=(",", ":")).encode())  # fmt: skip
        else:
            first = update_id[symbol] + 1
            update_id[symbol] += rng.randint(1, 5)

            def levels(sign, mid=mid):
                return [[f"{mid + sign * rng.randint(1, 500) / 100:.8f}",
                         f"{rng.random() * 5 if rng.random() < 0.8 else 0:.8f}"]
                        for _ in range(rng.randint(1, 10))]  # fmt: skip

            data = {"e": "depthUpdate", "E": t, "s": symbol, "U": first, "u": update_id[symbol],
                    "b": levels(-1), "a": levels(1)}  # fmt: skip
            depth.append(json.dumps({"stream": f"{symbol.lower()}@depth", "data": data},
                                    separators=(",", ":")).encode())  # fmt: skip
    return trades, depth


def _sources(endpoint: str = "ws://127.0.0.1:9/ws") -> tuple[JsonWebSocket, JsonWebSocket]:
    sides = {"true": "A", "false": "B"}
    trades = JsonWebSocket(stage_id="trades", endpoint=endpoint, venue="binance",
                           mapping=TRADE_MAP, side_values=sides,
                           match={"data.e": "aggTrade"})  # fmt: skip
    depth = JsonWebSocket(stage_id="depth", endpoint=endpoint, venue="binance",
                          record="book_update", mapping=DEPTH_MAP,
                          match={"data.e": "depthUpdate"})  # fmt: skip
    return trades, depth


def _batches(messages: list[bytes]):
    from hftagg.builtins.sources.websocket.connection import MessageBatch

    now = time.time_ns()
    return [
        MessageBatch(messages[i : i + BATCH], np.full(len(messages[i : i + BATCH]), now), i)
        for i in range(0, len(messages), BATCH)
    ]


def hftagg_decode(trades: list[bytes], depth: list[bytes]) -> tuple[float, int]:
    """Seconds for both sources to decode their messages, and the records made."""
    ctx = StageContext(instruments=InstrumentRegistry())
    sources = _sources()
    work = [(s, _batches(m)) for s, m in zip(sources, (trades, depth), strict=True)]
    for s, _ in work:
        s.prepare(ctx)
    records = 0
    t0 = time.perf_counter()
    for s, batches in work:
        for b in batches:
            for port, out in s.decode(b).items():
                if port == "dead_letters" and len(out):
                    raise AssertionError(f"{s.stage_id}: {len(out)} dead letters")
                records += len(out)
    return time.perf_counter() - t0, records


def hftagg_socket(trades: list[bytes], depth: list[bytes]) -> tuple[float, int]:
    """Seconds from the first connect until every message is a record, over loopback."""
    import threading

    import picows

    streams = {"/trades": trades, "/depth": depth}
    ready, port = threading.Event(), []
    stop: list = []

    class Server(picows.WSListener):
        def __init__(self, path: str) -> None:
            self.messages = streams[path]

        def on_ws_connected(self, transport) -> None:
            for m in self.messages:
                transport.send(picows.WSMsgType.TEXT, m)

    async def serve() -> None:
        server = await picows.ws_create_server(
            lambda r: Server(bytes(r.path).decode()), "127.0.0.1", 0, logger_name="bench.picows"
        )
        port.append(server.sockets[0].getsockname()[1])
        done = asyncio.Event()
        stop.append((asyncio.get_running_loop(), done))
        ready.set()
        await done.wait()
        server.close()

    logging.getLogger("bench.picows").setLevel(logging.ERROR)
    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    url = f"ws://127.0.0.1:{port[0]}"
    ctx = StageContext(instruments=InstrumentRegistry())
    sources = list(_sources())
    sources[0].params = sources[0].params.model_copy(update={"endpoint": url + "/trades"})
    sources[1].params = sources[1].params.model_copy(update={"endpoint": url + "/depth"})
    want = len(trades) + len(depth)
    seen = records = 0
    t0 = time.perf_counter()
    for s in sources:
        s.open(ctx)
    try:
        deadline = time.monotonic() + 60
        while seen < want and time.monotonic() < deadline:
            for s in sources:
                out = s.next_batch()
                for port_name, batch in (out or {}).items():
                    if port_name in ("trades", "book"):
                        records += len(batch)
            seen = sum(s.client.index for s in sources)
        elapsed = time.perf_counter() - t0
    finally:
        for s in sources:
            s.close()
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        thread.join(5)
    if seen < want:
        raise AssertionError(f"only {seen} of {want} messages arrived in 60 s")
    return elapsed, records


def _cryptofeed_feed():
    """A cryptofeed Binance feed usable offline: symbols and book snapshots preloaded."""
    from decimal import Decimal

    from cryptofeed.defines import L2_BOOK, TRADES
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols
    from cryptofeed.types import OrderBook

    info = {"symbols": [{"symbol": s, "baseAsset": s[:3], "quoteAsset": s[3:], "status": "TRADING",
                         "filters": [{"tickSize": "0.01000000"}]} for s in SYMBOLS]}  # fmt: skip
    syms, extra = Binance._parse_symbol_data(info)
    Symbols.set(Binance.id, syms, extra)
    counts = {"trades": 0, "books": 0}

    async def on_trade(trade, receipt):
        counts["trades"] += 1

    async def on_book(book, receipt):
        counts["books"] += 1

    feed = Binance(symbols=["BTC-USDT", "ETH-USDT"], channels=[TRADES, L2_BOOK],
                   callbacks={TRADES: on_trade, L2_BOOK: on_book})  # fmt: skip
    for std in ("BTC-USDT", "ETH-USDT"):
        feed._l2_book[std] = OrderBook(Binance.id, std, bids={Decimal("1"): Decimal("1")},
                                       asks={Decimal("100000"): Decimal("1")})  # fmt: skip
        feed.last_update_id[std] = 1000
    return feed, counts


def cryptofeed_handler(messages: list[bytes]) -> tuple[float, dict]:
    logging.getLogger("feedhandler").setLevel(logging.ERROR)
    feed, counts = _cryptofeed_feed()
    texts = [m.decode() for m in messages]

    async def drive() -> float:
        t0 = time.perf_counter()
        handler = feed.message_handler
        for text in texts:
            await handler(text, None, 0.0)
        return time.perf_counter() - t0

    return asyncio.run(drive()), counts


def orjson_loop(messages: list[bytes]) -> float:
    t0 = time.perf_counter()
    loads = orjson.loads
    for m in messages:
        loads(m)
    return time.perf_counter() - t0


def _interleaved(trades: list[bytes], depth: list[bytes]) -> list[bytes]:
    """The combined stream in arrival order (two trades, two diffs, ...)."""
    out, ti, di = [], iter(trades), iter(depth)
    for _ in range(len(trades) // 2 + 1):
        out.extend(m for m in (next(ti, None), next(ti, None), next(di, None), next(di, None))
                   if m is not None)  # fmt: skip
    return out


def run(quick: bool = False) -> list[Result]:
    n = 40_000 if quick else 200_000
    repeat = 2 if quick else 3
    trades, depth = make_stream(n)
    combined = _interleaved(trades, depth)
    hftagg_decode(trades[:2000], depth[:2000])  # warm the compiled decimal parser
    ours = min(hftagg_decode(trades, depth)[0] for _ in range(repeat))
    _, records = hftagg_decode(trades, depth)
    over_socket, socket_records = min(hftagg_socket(trades, depth) for _ in range(repeat))
    cf_secs, counts = min((cryptofeed_handler(combined) for _ in range(repeat)),
                          key=lambda r: r[0])  # fmt: skip
    bare = min(orjson_loop(combined) for _ in range(repeat))
    if socket_records != records:
        raise AssertionError(f"over the socket {socket_records} records, decoded {records}")
    if counts["trades"] != len(trades) or counts["books"] != len(depth):
        raise AssertionError(f"cryptofeed handled {counts}, expected {len(trades)} trades and "
                             f"{len(depth)} book updates")  # fmt: skip
    rate = n / ours
    extra = {
        "messages": n,
        "records": records,
        "batch_messages": BATCH,
        "target_ratio": TARGET,
        "orjson_loads_msg_per_s": round(n / bare),
        "hftagg_vs_orjson_loads": round(bare / ours, 2),
        "cryptofeed_msg_per_s": round(n / cf_secs),
        "compared": "cryptofeed Binance.message_handler per message, no network (REST and "
        "symbols preloaded) vs hftagg websocket sources' decode per batch, same bytes",
    }
    return [
        Result(name="websocket-decode", hftagg=rate, baseline=n / cf_secs,
               baseline_name="cryptofeed Binance handler", unit="msg/s",
               target=TARGET * n / cf_secs, extra=extra),  # 10x cryptofeed's rate
        Result(name="websocket-ingest-loopback", hftagg=n / over_socket, baseline=n / cf_secs,
               baseline_name="cryptofeed handler (no socket)", unit="msg/s",
               extra={"messages": n, "note": "hftagg includes the socket, the server sharing "
                      "the cores; cryptofeed does not"}),
        Result(name="websocket-decode-vs-orjson", hftagg=rate, baseline=n / bare,
               baseline_name="orjson.loads per message (no records)", unit="msg/s"),
    ]  # fmt: skip
