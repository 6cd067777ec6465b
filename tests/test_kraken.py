"""Kraken spot adapter (WebSocket v2 book): the CRC32 checksum verified on every message, against
a local WebSocket server replaying sessions built from Kraken's documented format."""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib

import numpy as np

from hftagg.builtins.core.book.kernels import UNDEF_PRICE, BookKernel
from hftagg.builtins.sources.kraken import KrakenBook, KrakenSpot
from hftagg.builtins.sources.kraken import reasons as KR
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import Action
from hftagg.records.fixed import to_fixed
from hftagg.stages import StageContext
from tests.ws_server import WsServer


def test_checksum_matches_krakens_documented_example():
    # Kraken's book checksum guide: this book's top 10 gives 974947235
    asks = [f"0.0{p}" for p in (5005, 5010, 5015, 5020, 5025, 5030, 5035, 5040, 5045, 5050)]
    bids = [f"0.0{p}" for p in (5000, 4995, 4990, 4980, 4975, 4970, 4965, 4960, 4955, 4950)]
    qty = to_fixed("0.00000500", 8)
    book = KrakenBook(10, price_decimals=5, qty_decimals=8)
    book.snapshot([(to_fixed(p, 9), qty) for p in bids], [(to_fixed(p, 9), qty) for p in asks])
    assert book.checksum() == 974947235
    # v2 guide's level: "45285.2" / "0.00100000" -> "452852" + "100000"
    one = KrakenBook(10, price_decimals=1, qty_decimals=8)
    one.snapshot([], [(to_fixed("45285.2", 9), to_fixed("0.00100000", 8))])
    assert one.checksum() == zlib.crc32(b"452852100000")


def test_book_truncates_to_depth_and_reports_what_fell_out():
    book = KrakenBook(10, 1, 8)
    book.snapshot([(to_fixed(f"{100 + k}.0", 9), 10**8) for k in range(10)], [])
    changes = book.update([(to_fixed("110.0", 9), 10**8)], [])
    assert changes == [(66, to_fixed("110.0", 9), 10**8), (66, to_fixed("100.0", 9), 0)]
    assert len(book.bids) == 10 and to_fixed("100.0", 9) not in book.bids


# ------------------------------------------------------------------------------ local venue


def _crc(asks: dict, bids: dict) -> int:
    """Kraken's checksum, computed the documented way on the wire strings (independent of
    the adapter's fixed-point rebuild)."""
    text = ""
    for p in sorted(asks, key=float)[:10]:
        text += p.replace(".", "").lstrip("0") + asks[p].replace(".", "").lstrip("0")
    for p in sorted(bids, key=float, reverse=True)[:10]:
        text += p.replace(".", "").lstrip("0") + bids[p].replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


class FakeKraken:
    """A Kraken v2 book venue (depth 10, BTC/USD-like precision 1 / 8): answers a subscribe with a
    snapshot, then streams updates. ``lose``: update numbers applied but not sent; ``corrupt``:
    update numbers sent with a wrong checksum. Update k's timestamp is base + k microseconds."""

    BASE_NS = 1_696_613_755_000_000_000  # 2023-10-06T17:35:55Z

    def __init__(self, n: int, seed: int = 3, lose=(), corrupt=()) -> None:
        self.rng = random.Random(seed)
        self.n, self.lose, self.corrupt = n, set(lose), set(corrupt)
        self.bids = {f"{45000 + k / 10:.1f}": "1.00000000" for k in range(0, 100, 7)}
        self.asks = {f"{45100 + k / 10:.1f}": "2.00000000" for k in range(0, 100, 9)}
        self._truncate()
        self.k = 0
        self.history: dict[int, tuple[dict, dict]] = {}
        self.snapshots = 0
        self.subscriptions: list[dict] = []

    def _truncate(self) -> None:
        for book, rev in ((self.bids, True), (self.asks, False)):
            for p in sorted(book, key=float, reverse=rev)[10:]:
                del book[p]

    def _stamp(self, k: int) -> str:
        s, us = divmod(self.BASE_NS // 1000 + k, 1_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{us:06d}Z"

    @staticmethod
    def _levels(book: dict, rev: bool) -> str:
        return "[" + ",".join(f'{{"price":{p},"qty":{book[p]}}}'
                              for p in sorted(book, key=float, reverse=rev)) + "]"  # fmt: skip

    def snapshot(self) -> str:
        self.snapshots += 1
        return ('{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":'
                + self._levels(self.bids, True) + ',"asks":' + self._levels(self.asks, False)
                + f',"checksum":{_crc(self.asks, self.bids)}}}]}}')  # fmt: skip

    def update(self) -> str | None:
        """The next update applied to the true book (None once n were made)."""
        if self.k >= self.n:
            return None
        self.k += 1
        rng, changes = self.rng, {"bids": {}, "asks": {}}
        for side, book, base in (("bids", self.bids, 45000), ("asks", self.asks, 45100)):
            for _ in range(rng.randint(0, 3)):
                p = f"{base + rng.randrange(100) / 10:.1f}"
                q = "0.00000000" if rng.random() < 0.3 else f"{rng.randrange(1, 10**6) / 1e4:.8f}"
                if float(q):
                    book[p] = q
                else:
                    book.pop(p, None)
                changes[side][p] = q
        if self.k in self.lose or not any(changes.values()):  # every update changes the top
            best = max(self.bids, key=float)
            self.bids[best] = changes["bids"][best] = f"{float(self.bids[best]) + 0.5:.8f}"
        self._truncate()
        self.history[self.k] = (dict(self.bids), dict(self.asks))
        crc = _crc(self.asks, self.bids) ^ (1 if self.k in self.corrupt else 0)
        body = ",".join(f'"{s}":[' + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in c.items())
                        + "]" for s, c in changes.items())  # fmt: skip
        return (f'{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD",{body},'
                f'"checksum":{crc},"timestamp":"{self._stamp(self.k)}"}}]}}')  # fmt: skip

    def truth(self, k: int):
        bids, asks = self.history[k]
        fx = lambda book, rev: [(to_fixed(p, 9), to_fixed(book[p], 8))  # noqa: E731
                                for p in sorted(book, key=float, reverse=rev)]  # fmt: skip
        return fx(bids, True), fx(asks, False)

    def handler(self, extra=()):
        async def handler(ws, server):
            subscribed = asyncio.Event()

            async def reader():
                async for raw in ws:
                    msg = json.loads(raw)
                    server.received.append(msg)
                    if msg["method"] == "subscribe" and msg["params"]["channel"] == "book":
                        await ws.send(self.snapshot())
                        subscribed.set()
                    elif msg["method"] == "unsubscribe":
                        subscribed.clear()

            task = asyncio.ensure_future(reader())
            try:
                for raw in extra:
                    await ws.send(raw)
                while True:
                    await subscribed.wait()
                    message = self.update()
                    if message is None:
                        break
                    if self.k not in self.lose:
                        await ws.send(message)
                    await asyncio.sleep(0.001 if self.k % 5 else 0.01)
                await task
            finally:
                task.cancel()

        return handler


def make_source(url: str, **params) -> KrakenSpot:
    base = dict(endpoint=url, symbols=["BTC/USD"], reconnect_initial_s=0.05, reconnect_max_s=0.2)
    fields = params.pop("fields", None)
    base.update(params)
    source = KrakenSpot(stage_id="kraken", **base)
    if fields is not None:
        source.output_topics = {p: t for p, t in source.output_topics.items() if p in fields}
    source.open(StageContext(instruments=InstrumentRegistry()))
    return source


def run(venue: FakeKraken, source: KrakenSpot, timeout: float = 15.0):
    """Drive the source until the venue's last update is in its book; check the book (through
    the production book kernel) against the venue's at every batch ending on an update."""
    kernel, iid = BookKernel(), source.ids["BTC/USD"]
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
                k = (int(last["ts_event"]) - venue.BASE_NS) // 1000
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


def test_book_verified_on_every_update_and_rebuilt_after_bad_checksums():
    venue = FakeKraken(300, lose={100}, corrupt={200})
    with WsServer(venue.handler()) as server:
        source = make_source(server.url, fields=None)
        try:
            got, checked, crossed = run(venue, source)
        finally:
            source.close()
    alerts = codes(got)
    assert alerts.count(KR.CHECKSUM_MISMATCH) == 2  # the lost update and the corrupted one
    assert alerts.count(KR.BOOK_SYNCED) == 3 and venue.snapshots == 3
    unsubs = [m for m in server.received if m["method"] == "unsubscribe"]
    assert len(unsubs) == 2 and unsubs[0]["params"]["symbol"] == ["BTC/USD"]
    assert checked >= 10 and crossed == 0
    assert source.metrics()["checksum_mismatches"] == 2


def test_reconnects_rebuild_the_book_and_hostile_messages_are_dead_lettered():
    venue = FakeKraken(40, seed=5)
    trade = ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
             '"price":45283.5,"qty":0.00010000,"ord_type":"market","trade_id":4665846,'
             '"timestamp":"2023-09-25T07:48:36.925533Z"}]}')  # fmt: skip
    extra = [trade, '{"channel":"heartbeat"}', "{oops", "y" * 3000,
             '{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[],'
             '"asks":[],"checksum":0}]}']  # fmt: skip
    server = WsServer(venue.handler(extra)).start()
    source = make_source(server.url, max_message_bytes=2048)
    alerts, dead, trades = [], [], []
    try:
        for _ in range(3):
            got, checked, crossed = run(venue, source)
            assert crossed == 0 and checked >= 1
            alerts += codes(got)
            dead += [d for d in got.get("dead_letters", [])]
            trades += got.get("trades", [])
            server.stop()
            time.sleep(0.1)
            venue.n = venue.k + 40
            server = WsServer(venue.handler(extra), port=server.port).start()
        got, _, _ = run(venue, source)
        alerts += codes(got)
    finally:
        source.close()
        server.stop()
    assert alerts.count(KR.CHECKSUM_MISMATCH) == 3  # each disconnect invalidated the book
    assert alerts.count(KR.BOOK_SYNCED) == 4 and alerts.count(R.DISCONNECTED) >= 3
    reasons = np.concatenate(dead)["reason"].tolist()
    assert reasons.count(R.MALFORMED) >= 3 and reasons.count(R.OVERSIZED) >= 3
    assert R.NO_INSTRUMENT in reasons
    trades = np.concatenate(trades)
    assert len(trades) == 3 and (trades["price"] == 45_283_500_000_000).all()
    assert (trades["size"] == 10_000).all() and (trades["side"] == ord("A")).all()
    assert trades["ts_event"][0] == np.datetime64("2023-09-25T07:48:36.925533", "ns").astype(int)
