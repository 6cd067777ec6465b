"""Coinbase Advanced Trade adapter: level2 and market_trades with sequence_num gaps detected,
against a local WebSocket server replaying sessions built from Coinbase's documented format."""

from __future__ import annotations

import asyncio
import json
import random
import time

import numpy as np

from hftagg.builtins.core.book.kernels import UNDEF_PRICE, BookKernel
from hftagg.builtins.sources.coinbase import CoinbaseAdvanced
from hftagg.builtins.sources.coinbase import reasons as CR
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import Action
from hftagg.records.fixed import to_fixed
from hftagg.stages import StageContext
from tests.ws_server import WsServer

BASE_NS = 1_675_974_770_000_000_000  # 2023-02-09T20:32:50Z


class FakeCoinbase:
    """A venue: answers a level2 subscribe with a snapshot, then streams updates; every message
    of a connection numbered by ``sequence_num`` from 0. ``lose``: update numbers applied but
    not sent (a sequence number skipped); ``replay``: update numbers sent twice. Update k's
    ``timestamp`` is BASE + k ns."""

    def __init__(self, n: int, seed: int = 9, lose=(), replay=()) -> None:
        self.rng = random.Random(seed)
        self.n, self.lose, self.replay = n, set(lose), set(replay)
        self.bids = {f"{21900 + k / 100:.2f}": "0.5" for k in range(0, 300, 7)}
        self.asks = {f"{22000 + k / 100:.2f}": "0.75" for k in range(0, 300, 11)}
        self.k = 0
        self.history: dict[int, tuple[dict, dict]] = {}
        self.snapshots = 0

    def _stamp(self, k: int) -> str:
        return f"2023-02-09T20:32:50.{k:09d}Z"

    def snapshot(self, seq: int) -> str:
        self.snapshots += 1
        ups = [
            {
                "side": "bid",
                "event_time": "1970-01-01T00:00:00Z",
                "price_level": p,
                "new_quantity": q,
            }
            for p, q in self.bids.items()
        ]
        ups += [{"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": p,
                 "new_quantity": q} for p, q in self.asks.items()]  # fmt: skip
        return json.dumps({"channel": "l2_data", "client_id": "", "timestamp": self._stamp(self.k),
                           "sequence_num": seq, "events": [{"type": "snapshot",
                           "product_id": "BTC-USD", "updates": ups}]})  # fmt: skip

    def update(self, seq: int) -> str | None:
        if self.k >= self.n:
            return None
        self.k += 1
        ups = []
        for side, book, base in (("bid", self.bids, 21900), ("offer", self.asks, 22000)):
            for j in range(self.rng.randint(1, 3)):
                p = f"{base + self.rng.randrange(300) / 100:.2f}"
                q = (
                    "0"
                    if j and self.rng.random() < 0.3
                    else f"{self.rng.randrange(1, 10**5) / 1e4}"
                )
                if float(q):
                    book[p] = q
                else:
                    book.pop(p, None)
                ups.append({"side": side, "event_time": self._stamp(self.k), "price_level": p,
                            "new_quantity": q})  # fmt: skip
        self.history[self.k] = (dict(self.bids), dict(self.asks))
        return json.dumps({"channel": "l2_data", "client_id": "", "timestamp": self._stamp(self.k),
                           "sequence_num": seq, "events": [{"type": "update",
                           "product_id": "BTC-USD", "updates": ups}]})  # fmt: skip

    def truth(self, k: int):
        bids, asks = self.history[k]
        fx = lambda book, rev: [(to_fixed(p, 9), to_fixed(book[p], 8))  # noqa: E731
                                for p in sorted(book, key=float, reverse=rev)]  # fmt: skip
        return fx(bids, True), fx(asks, False)

    def handler(self, extra=()):
        async def handler(ws, server):
            subscribed = asyncio.Event()
            seq = 0

            async def send(message):
                nonlocal seq
                await ws.send(message)
                seq += 1

            async def reader():
                async for raw in ws:
                    msg = json.loads(raw)
                    server.received.append(msg)
                    if msg["channel"] == "level2" and msg["type"] == "subscribe":
                        await send(self.snapshot(seq))
                        subscribed.set()
                    elif msg["channel"] == "level2":
                        subscribed.clear()

            task = asyncio.ensure_future(reader())
            try:
                await subscribed.wait()
                for raw in extra:  # after the snapshot: a bad message costs a rebuild
                    await send(raw.replace("SEQ", str(seq)))
                while True:
                    await subscribed.wait()
                    message = self.update(seq)
                    if message is None:
                        break
                    if self.k in self.lose:
                        seq += 1  # numbered, never sent
                    else:
                        await send(message)
                        if self.k in self.replay:
                            await ws.send(message)
                    await asyncio.sleep(0.001 if self.k % 5 else 0.01)
                await task
            finally:
                task.cancel()

        return handler


def make_source(url: str, **params) -> CoinbaseAdvanced:
    base = dict(endpoint=url, products=["BTC-USD"], reconnect_initial_s=0.05, reconnect_max_s=0.2)
    base.update(params)
    source = CoinbaseAdvanced(stage_id="coinbase", **base)
    source.open(StageContext(instruments=InstrumentRegistry()))
    return source


def run(venue: FakeCoinbase, source, timeout: float = 15.0):
    kernel, iid = BookKernel(), source.ids["BTC-USD"]
    got: dict[str, list] = {}
    checked = crossed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = source.next_batch() or {}
        for port, records in out.items():
            got.setdefault(port, []).append(records)
        book = out.get("book")
        if book is not None and len(book):
            quotes, _, _ = kernel.update(book)
            both = (quotes["bid_px"] != UNDEF_PRICE) & (quotes["ask_px"] != UNDEF_PRICE)
            crossed += int((quotes["bid_px"][both] >= quotes["ask_px"][both]).sum())
            last = book[-1]
            if last["action"] == Action.MODIFY:
                k = int(last["ts_event"]) - BASE_NS
                bids, asks = kernel.levels(iid)
                want_bids, want_asks = venue.truth(k)
                assert [tuple(r) for r in bids.tolist()] == want_bids, f"bids differ at {k}"
                assert [tuple(r) for r in asks.tolist()] == want_asks, f"asks differ at {k}"
                checked += 1
                if k == venue.n:
                    return got, checked, crossed
        time.sleep(0.003)
    raise AssertionError(f"timed out: metrics {source.metrics()}")


def codes(got) -> list[int]:
    return np.concatenate(got["alerts"])["code"].tolist() if "alerts" in got else []


def test_level2_equals_the_venue_book_across_sequence_gaps_and_replays():
    venue = FakeCoinbase(300, lose={100, 200}, replay={150})
    trade = json.dumps({"channel": "market_trades", "client_id": "", "timestamp":
                        "2023-02-09T20:19:35.39625135Z", "sequence_num": "SEQ", "events": [
                        {"type": "update", "trades": [{"trade_id": "000000000",
                         "product_id": "BTC-USD", "price": "21921.73", "size": "0.00000001",
                         "side": "BUY", "time": "2019-08-14T20:42:27.265Z"}]}]})  # fmt: skip
    trade = trade.replace('"SEQ"', "SEQ")
    with WsServer(
        venue.handler(
            extra=[trade, "{bad", '{"channel":"heartbeats","sequence_num":SEQ,"events":[]}']
        )
    ) as server:
        source = make_source(server.url)
        try:
            got, checked, crossed = run(venue, source)
        finally:
            source.close()
    alerts = np.concatenate(got["alerts"])
    gaps = alerts[alerts["code"] == CR.SEQUENCE_GAP]
    # "{bad" took a number too: three gaps, one message lost each
    assert len(gaps) == 3 and gaps["value"].tolist() == [1.0, 1.0, 1.0]
    assert codes(got).count(CR.BOOK_INVALID) == 3 and venue.snapshots == 4
    assert codes(got).count(CR.BOOK_SYNCED) == 4
    assert source.metrics()["replayed_dropped"] == 1
    assert checked >= 10 and crossed == 0
    trades = np.concatenate(got["trades"])
    assert len(trades) == 1 and trades[0]["price"] == 21_921_730_000_000 and trades[0]["size"] == 1
    assert trades[0]["side"] == ord("B")
    subs = [m for m in server.received if m["channel"] == "level2"]
    assert [m["type"] for m in subs] == ["subscribe"] + ["unsubscribe", "subscribe"] * 3
    assert R.MALFORMED in np.concatenate(got["dead_letters"])["reason"].tolist()


def test_a_restarted_server_clears_and_rebuilds_the_book_each_time():
    venue = FakeCoinbase(40, seed=4)
    server = WsServer(venue.handler()).start()
    source = make_source(server.url)
    alerts = []
    try:
        for _ in range(3):
            got, checked, crossed = run(venue, source)
            assert crossed == 0 and checked >= 1
            alerts += codes(got)
            server.stop()
            venue.n = venue.k + 40
            server = WsServer(venue.handler(), port=server.port).start()
        got, _, _ = run(venue, source)
        alerts += codes(got)
    finally:
        source.close()
        server.stop()
    assert alerts.count(CR.BOOK_INVALID) == 3 and alerts.count(CR.BOOK_SYNCED) == 4
    assert alerts.count(R.DISCONNECTED) >= 3
    assert CR.SEQUENCE_GAP not in alerts  # a new connection starts at 0 again: not a gap
