"""Binance spot adapter: depth synchronised by update ids, against local WebSocket and REST
servers replaying sessions built from Binance's documented formats (no real venue)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from hftagg.builtins.core.book.kernels import UNDEF_PRICE, BookKernel
from hftagg.builtins.sources.binance import BinanceSpot, DepthEvents, DepthSync, check_updates
from hftagg.builtins.sources.binance import reasons as BR
from hftagg.builtins.sources.binance.sync import SYNCED, Snapshot
from hftagg.builtins.sources.websocket import next_seq
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.builtins.sources.websocket.connection import MessageBatch
from hftagg.instruments import InstrumentRegistry
from hftagg.records.catalog import Action
from hftagg.records.fixed import to_fixed
from hftagg.stages import StageContext
from tests.ws_server import WsServer

# ------------------------------------------------------------------------------ pure checks


def test_check_updates_follows_binances_rules():
    U, u = np.array([5, 8, 11, 14]), np.array([7, 10, 13, 16])
    # fresh snapshot at 9: event 5..7 is stale, 8..10 straddles 10 = 9 + 1, then continuous
    assert check_updates(U, u, 9, fresh=True) == (1, 4)
    # fresh snapshot at 10: 11 = 10 + 1 joins exactly
    assert check_updates(U, u, 10, fresh=True) == (2, 4)
    # fresh snapshot at 3: the first event does not reach back to 4: no join
    assert check_updates(U, u, 3, fresh=True) == (0, 0)
    # every event older than the snapshot: all stale, not a gap
    assert check_updates(U, u, 20, fresh=True) == (4, 4)
    # synced at 7: continuous
    assert check_updates(U, u[:], 4, fresh=False) == (0, 4)
    # a hole between 10 and 12: events [0, 2) apply, event 2 is the gap
    U2, u2 = np.array([5, 8, 12]), np.array([7, 10, 13])
    assert check_updates(U2, u2, 4, fresh=False) == (0, 2)
    # synced at 4 but the next event starts at 6: gap at once
    assert check_updates(U2[1:], u2[1:], 4, fresh=False) == (0, 0)
    # a replayed event (already applied) is dropped as stale
    assert check_updates(np.array([5, 8]), np.array([7, 10]), 7, fresh=False) == (1, 2)


def _events(ranges) -> DepthEvents:
    first = np.array([a for a, _ in ranges], np.int64)
    last = np.array([b for _, b in ranges], np.int64)
    n = len(ranges)
    return DepthEvents(first, last, last * 1_000_000, last, np.arange(n), np.full(n, 66, np.uint8),
                       last * 10**9, np.ones(n, np.int64))  # fmt: skip


def _snap(last_id):
    return Snapshot(last_id, np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), 0)


def test_depth_sync_buffers_joins_refetches_and_resyncs_after_a_gap():
    sync = DepthSync("BTCUSDT")
    assert sync.feed(_events([(5, 7), (8, 10)])) == [] and sync.need_snapshot
    sync.requested = True
    # rule 3: a snapshot older than the first buffered event: ask again, keep the buffer
    assert sync.snapshot(_snap(2)) == [] and sync.counters["snapshots_refetched"] == 1
    assert sync.need_snapshot
    out = sync.snapshot(_snap(8))  # straddles 8..10: joins there
    assert [k for k, _ in out] == ["snapshot", "events"]
    assert out[1][1].first.tolist() == [8] and sync.state == SYNCED and sync.prev_u == 10
    assert sync.counters["stale_dropped"] == 1
    out = sync.feed(_events([(11, 12), (14, 15), (16, 17)]))  # 13 missing
    assert [k for k, _ in out] == ["events", "gap"]
    assert "expected U=13 got U=14" in out[1][1]
    assert sync.state != SYNCED and sync.buffered == 2 and sync.need_snapshot
    out = sync.snapshot(_snap(15))
    assert [k for k, _ in out] == ["snapshot", "events"] and out[1][1].first.tolist() == [16]


def test_depth_sync_buffer_is_bounded_and_counts_what_it_drops():
    sync = DepthSync("BTCUSDT", max_buffered=10)
    for k in range(5):
        sync.feed(_events([(10 * k + j, 10 * k + j) for j in range(1, 5)]))
    assert sync.buffered == 10 and sync.counters["buffer_dropped"] == 10


# ------------------------------------------------------------------------------ local venue


class FakeBinance:
    """A venue: a true book changed by depth events with update ids; the REST snapshot is the
    book as of the last event published. Event time ``E`` is the event's last id, so a record's
    ``ts_event`` tells which update the adapter's book has reached."""

    def __init__(self, seed: int = 7, symbol: str = "BTCUSDT") -> None:
        self.rng = random.Random(seed)
        self.symbol = symbol
        self.lock = threading.Lock()
        self.bids = {f"{100 + k / 100:.2f}": "1.5" for k in range(0, 500, 7)}
        self.asks = {f"{110 + k / 100:.2f}": "2.25" for k in range(0, 500, 11)}
        self.next_id = 1000
        self.published = 999  # last update id sent (or skipped) on the stream
        self.history: dict[int, tuple[dict, dict]] = {}  # u -> book after it
        self.fail_snapshots = 0
        self.snapshots = 0
        self.served = 0  # snapshots served successfully
        self.streams_done = 0  # stream handlers that sent all their events

    def event(self) -> str:
        """The next depth event (applied to the true book); the caller sends or loses it."""
        with self.lock:
            rng = self.rng
            changes = {"b": [], "a": []}
            for side, book, base in (("b", self.bids, 100), ("a", self.asks, 110)):
                for _ in range(rng.randint(0, 4)):
                    price = f"{base + rng.randrange(500) / 100:.2f}"
                    qty = (
                        "0.00000000"
                        if rng.random() < 0.3
                        else f"{rng.randrange(1, 10**6) / 1e4:.8f}"
                    )
                    if float(qty) == 0:
                        book.pop(price, None)
                    else:
                        book[price] = qty
                    changes[side].append([price, qty])
            first = self.next_id
            last = first + rng.randint(0, 3)
            self.next_id = last + 1
            self.published = last
            self.history[last] = (dict(self.bids), dict(self.asks))
            return json.dumps({"e": "depthUpdate", "E": last, "s": self.symbol, "U": first,
                               "u": last, "b": changes["b"], "a": changes["a"]})  # fmt: skip

    def snapshot(self) -> bytes | None:
        with self.lock:
            self.snapshots += 1
            if self.fail_snapshots:
                self.fail_snapshots -= 1
                return None
            self.served += 1
            desc = sorted(self.bids, key=float, reverse=True)
            asc = sorted(self.asks, key=float)
            return json.dumps({"lastUpdateId": self.published,
                               "bids": [[p, self.bids[p]] for p in desc],
                               "asks": [[p, self.asks[p]] for p in asc]}).encode()  # fmt: skip

    def truth(self, u: int) -> tuple[list, list]:
        bids, asks = self.history[u]
        fx = lambda book, rev: [(to_fixed(p, 9), to_fixed(q, 8))  # noqa: E731
                                for p, q in sorted(book.items(), key=lambda kv: float(kv[0]),
                                                   reverse=rev)]  # fmt: skip
        return fx(bids, True), fx(asks, False)


class RestServer:
    def __init__(self, venue: FakeBinance) -> None:
        venue_ = venue

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = venue_.snapshot() if self.path.startswith("/api/v3/depth") else None
                self.send_response(200 if body else 503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b'{"code":-1003,"msg":"busy"}')

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def stream(venue: FakeBinance, n: int, lose=frozenset(), extra=(), hold=None):
    """A WebSocket handler: subscription answer, any ``extra`` raw messages, then ``n`` depth
    events in small bursts (the ones whose position is in ``lose`` are applied at the venue but
    never sent). ``hold`` {k: s}: before event k, wait until the venue has served s snapshots
    (so the test does not depend on how fast the adapter fetches them)."""
    hold = hold or {}

    async def handler(ws, server):
        server.received.append(await ws.recv())
        await ws.send('{"result":null,"id":1}')
        for raw in extra:
            await ws.send(raw)
        for k in range(n):
            deadline = time.monotonic() + 10
            while venue.served < hold.get(k, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            message = venue.event()
            if k not in lose:
                await ws.send(message)
            if k % 10 == 9:
                await asyncio.sleep(0.01)
        venue.streams_done += 1

    return handler


def make_source(ws_url: str, rest_url: str, **params) -> BinanceSpot:
    base = dict(endpoint=ws_url, rest_endpoint=rest_url, symbols=["BTCUSDT"],
                reconnect_initial_s=0.05, reconnect_max_s=0.2, snapshot_retry_max_s=0.1)  # fmt: skip
    fields = params.pop("fields", None)
    base.update(params)
    source = BinanceSpot(stage_id="binance", **base)
    if fields is not None:  # what a config's fields = [...] does
        source.output_topics = {p: t for p, t in source.output_topics.items() if p in fields}
    source.open(StageContext(instruments=InstrumentRegistry()))
    return source


class Checker:
    """Feeds the adapter's book records to the production book kernel and compares the book
    with the venue's true book at every batch that ends on a depth event."""

    def __init__(self, venue: FakeBinance, iid: int) -> None:
        self.venue, self.iid = venue, iid
        self.kernel = BookKernel()
        self.checked = 0
        self.crossed = 0
        self.alerts: list[np.ndarray] = []
        self.dead: list[np.ndarray] = []

    def take(self, out: dict) -> None:
        if "alerts" in out:
            self.alerts.append(out["alerts"])
        if "dead_letters" in out:
            self.dead.append(out["dead_letters"])
        book = out.get("book")
        if book is None or not len(book):
            return
        quotes, _, _ = self.kernel.update(book)
        both = (quotes["bid_px"] != UNDEF_PRICE) & (quotes["ask_px"] != UNDEF_PRICE)
        self.crossed += int((quotes["bid_px"][both] >= quotes["ask_px"][both]).sum())
        last = book[-1]
        if last["action"] == Action.MODIFY:
            u = int(last["ts_event"]) // 1_000_000
            bids, asks = self.kernel.levels(self.iid)
            want_bids, want_asks = self.venue.truth(u)
            assert [tuple(r) for r in bids.tolist()] == want_bids, f"bids differ after u={u}"
            assert [tuple(r) for r in asks.tolist()] == want_asks, f"asks differ after u={u}"
            self.checked += 1

    def codes(self) -> list[int]:
        return np.concatenate(self.alerts)["code"].tolist() if self.alerts else []


def run_until(source, checker: Checker, until, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = source.next_batch()
        if out:
            checker.take(out)
        if until():
            return
        time.sleep(0.003)
    raise AssertionError(f"timed out: alerts {checker.codes()}, metrics {source.metrics()}")


def synced_at_latest(source, venue, streams: int = 1):
    def until():
        sync = source.syncs["BTCUSDT"]
        done = venue.streams_done >= streams
        return done and sync.state == SYNCED and sync.prev_u == venue.published

    return until


def test_depth_book_equals_the_venue_book_across_gaps_and_failed_snapshots():
    venue = FakeBinance()
    venue.fail_snapshots = 2  # the first two REST calls fail: retried, each alerted
    with (
        RestServer(venue) as rest,
        WsServer(stream(venue, 400, lose={150, 151, 300}, hold={100: 1, 250: 2, 390: 3})) as ws,
    ):
        source = make_source(ws.url, rest.url, fields=["book", "alerts", "dead_letters"])
        iid = source.ids["BTCUSDT"]
        checker = Checker(venue, iid)
        try:
            run_until(source, checker, synced_at_latest(source, venue))
        finally:
            source.close()
    codes = checker.codes()
    assert json.loads(ws.received[0])["params"] == ["btcusdt@depth@100ms"]
    assert codes.count(BR.SNAPSHOT_FAILED) == 2
    assert codes.count(BR.BOOK_GAP) == 2  # two holes, each reported once
    assert codes.count(BR.BOOK_SYNCED) == 3  # first sync + one rebuild per gap
    assert checker.checked >= 3 and checker.crossed == 0
    assert source.metrics()["depth_gaps"] == 2


def test_no_stale_book_survives_a_server_killed_and_restarted_repeatedly():
    venue = FakeBinance(seed=11)
    with RestServer(venue) as rest:
        server = WsServer(stream(venue, 60, hold={40: 1})).start()
        source = make_source(
            ws_url=server.url, rest_url=rest.url, fields=["book", "alerts", "dead_letters"]
        )
        checker = Checker(venue, source.ids["BTCUSDT"])
        try:
            run_until(source, checker, synced_at_latest(source, venue))
            for restart in range(3):
                server.stop()
                for _ in range(5):
                    venue.event()  # the venue moves on while we are away: lost events
                server = WsServer(
                    stream(venue, 60, hold={40: venue.served + 1}), port=server.port
                ).start()
                run_until(source, checker, synced_at_latest(source, venue, streams=restart + 2))
        finally:
            source.close()
            server.stop()
    alerts = np.concatenate(checker.alerts)
    codes = alerts["code"].tolist()
    assert codes.count(BR.BOOK_GAP) == 3  # every disconnect invalidated the book, once
    assert codes.count(BR.BOOK_SYNCED) == 4
    assert codes.count(R.DISCONNECTED) >= 3
    assert checker.crossed == 0 and checker.checked >= 4
    # after each gap, the book was emptied downstream before anything else of it was published
    assert source.metrics()["books_synced"] == 1


def test_trades_quotes_and_hostile_messages():
    venue = FakeBinance()
    trade = json.dumps(
        {
            "e": "trade",
            "E": 1672515782136,
            "s": "BTCUSDT",
            "t": 12345,
            "p": "0.001",
            "q": "100",
            "T": 1672515782136,
            "m": True,
            "M": True,
        }
    )
    ticker = json.dumps({"u": 400900217, "s": "BTCUSDT", "b": "25.35190000", "B": "31.21000000",
                         "a": "25.36520000", "A": "40.66000000"})  # fmt: skip
    too_precise = trade.replace('"100"', '"0.000000001"')
    extra = [trade, ticker, "{not json", too_precise,
             json.dumps({"e": "trade", "s": "DOGEUSDT", "p": "1", "q": "1", "T": 1}),
             json.dumps({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 1,
                         "b": [["1.0"]], "a": []}),
             "x" * 5000]  # fmt: skip
    with RestServer(venue) as rest, WsServer(stream(venue, 30, extra=extra, hold={10: 1})) as ws:
        source = make_source(ws.url, rest.url, max_message_bytes=4096)
        checker = Checker(venue, source.ids["BTCUSDT"])
        got: dict[str, list] = {}

        def take(out):
            for k, v in out.items():
                got.setdefault(k, []).append(v)

        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                out = source.next_batch() or {}
                take(out)
                checker.take(out)
                if (
                    synced_at_latest(source, venue)()
                    and sum(map(len, got.get("dead_letters", []))) >= 5
                ):
                    break
                time.sleep(0.003)
        finally:
            source.close()
    params = json.loads(ws.received[0])["params"]
    assert params == ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
    trades, quotes = np.concatenate(got["trades"]), np.concatenate(got["quotes"])
    assert len(trades) == 1 and trades[0]["price"] == 1_000_000 and trades[0]["size"] == 10**10
    assert trades[0]["side"] == ord("A") and trades[0]["ts_event"] == 1672515782136 * 10**6
    assert len(quotes) == 1 and quotes[0]["bid_px"] == 25_351_900_000
    assert quotes[0]["ask_sz"] == 4_066_000_000
    dead = np.concatenate(got["dead_letters"])
    reasons = sorted(dead["reason"].tolist())
    assert R.MALFORMED in reasons and R.OVERSIZED in reasons and R.NO_INSTRUMENT in reasons
    assert 0x0202 in reasons  # too precise: dead-lettered, never rounded
    assert len(dead) == 5 and checker.crossed == 0 and checker.checked >= 1


def test_two_symbols_interleaved_in_one_batch_each_get_their_own_book():
    venues = {"BTCUSDT": FakeBinance(seed=1), "ETHUSDT": FakeBinance(seed=2, symbol="ETHUSDT")}
    start = {s: json.loads(v.snapshot()) for s, v in venues.items()}  # books before any event
    rng = random.Random(0)
    messages = [venues[rng.choice(list(venues))].event().encode() for _ in range(400)]
    source = BinanceSpot(stage_id="b", endpoint="ws://127.0.0.1:9/ws", symbols=list(venues),
                         reconnect_initial_s=5, reconnect_max_s=5)  # fmt: skip
    source.open(StageContext(instruments=InstrumentRegistry()))
    try:
        for symbol, snap in start.items():  # as if fetched: the state before the first event
            sync = source.syncs[symbol]
            sync.requested = True
            sync.pending = Snapshot(snap["lastUpdateId"], _fixed(snap["bids"]),
                                    _fixed(snap["asks"]), 1)  # fmt: skip
        kernel = BookKernel()
        for lo in range(0, len(messages), 37):  # batches that split both streams anywhere
            chunk = messages[lo : lo + 37]
            batch = MessageBatch(chunk, np.full(len(chunk), 1, np.int64), lo,
                                 np.ones(len(chunk), np.uint32))  # fmt: skip
            source.client.take()  # nothing real arrives (no server): drive decode directly
            source._book_parts, source._alert_rows = [], []
            source.decode(batch)
            if source._book_parts:
                records = np.concatenate(source._book_parts)
                records["seq"] = next_seq(records["instrument_id"], source.book_seq)
                kernel.update(records)
    finally:
        source.close()
    for symbol, venue in venues.items():
        bids, asks = kernel.levels(source.ids[symbol])
        want_bids, want_asks = venue.truth(venue.published)
        assert [tuple(r) for r in bids.tolist()] == want_bids
        assert [tuple(r) for r in asks.tolist()] == want_asks
        assert source.syncs[symbol].state == SYNCED and source.syncs[symbol].counters["gaps"] == 0


def _fixed(levels) -> np.ndarray:
    return np.array([(to_fixed(p, 9), to_fixed(q, 8)) for p, q in levels], np.int64).reshape(-1, 2)


def test_a_silent_server_is_detected_stale_and_the_book_is_cleared_then_rebuilt():
    venue = FakeBinance(seed=21)
    with RestServer(venue) as rest, WsServer(stream(venue, 60, hold={30: venue.served + 1})) as ws:
        # after its 60 events the server says nothing more: stale after 0.5 s, reconnect
        source = make_source(ws.url, rest.url, fields=["book", "alerts"], stale_after_s=0.5)
        checker = Checker(venue, source.ids["BTCUSDT"])
        try:
            run_until(source, checker, synced_at_latest(source, venue, streams=1))
            ws.handler = stream(venue, 60, hold={30: venue.served + 1})
            run_until(source, checker, synced_at_latest(source, venue, streams=2))
        finally:
            source.close()
    codes = checker.codes()
    assert R.STALE in codes and codes.count(BR.BOOK_GAP) >= 1
    assert codes.count(BR.BOOK_SYNCED) >= 2 and checker.crossed == 0
    first_gap = codes.index(BR.BOOK_GAP)
    assert R.STALE in codes[:first_gap]  # cleared because the feed went stale
