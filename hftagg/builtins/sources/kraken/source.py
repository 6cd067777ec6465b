"""The ``kraken`` source: Kraken spot WebSocket v2 ``book`` (checksum-verified) and ``trade``.

Ports: ``book`` (``book_update`` on ``md.book``, read by the ``book`` stage) and ``trades``.
Every book snapshot and update carries Kraken's CRC32 of the top 10 levels; the source applies
the message to its own copy of the book (:mod:`.book`), truncates it to ``depth`` and compares.
Only a message whose checksum matches is published: a snapshot as a clear with ``F_SNAPSHOT``
plus its levels, an update as its level changes (``M``, size 0 removes; levels pushed out of
``depth`` are published as removals so a downstream book never keeps them) with ``F_LAST`` on
the last. On a mismatch -- or when the connection drops or goes stale -- the book is invalid:
a clear without ``F_SNAPSHOT`` goes out at once (downstream books empty rather than show a
known-bad book), a ``checksum_mismatch`` alert names the symbol and both checksums, and the
symbol is unsubscribed and subscribed again, which makes Kraken send a fresh snapshot. Updates
of a symbol without a verified snapshot are dropped (counted).

Prices and quantities are JSON numbers on Kraken v2, sent at the pair's full precision; they
are read as their raw text (msgspec ``Raw``), converted to fixed point exactly in one compiled
pass per batch, and the pair's decimals are learned from that text (``price_decimals`` /
``qty_decimals`` override) to rebuild the checksum string exactly.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import numpy as np

from hftagg.builtins.core.book.kernels import F_LAST, F_SNAPSHOT
from hftagg.builtins.sources.kraken import reasons as KR
from hftagg.builtins.sources.kraken.book import KrakenBook
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.builtins.sources.websocket.connection import MessageBatch
from hftagg.builtins.sources.websocket.source import WebSocketParams, WebSocketSource, next_seq
from hftagg.records.catalog import BOOK_UPDATE, TRADE, Action, Side
from hftagg.records.fixed import PRICE_DECIMALS, QTY_DECIMALS, FixedReason, detail, parse_decimals
from hftagg.stages import Port, restart

__all__ = ["KrakenSpot", "KrakenSpotParams"]


class _Level(msgspec.Struct):
    price: msgspec.Raw
    qty: msgspec.Raw


class _Data(msgspec.Struct):
    symbol: str = ""
    bids: list[_Level] = []
    asks: list[_Level] = []
    checksum: int = -1
    timestamp: str = ""
    side: str = ""
    price: msgspec.Raw = msgspec.Raw(b"0")
    qty: msgspec.Raw = msgspec.Raw(b"0")


class _Msg(msgspec.Struct):
    channel: str = ""
    type: str = ""
    data: list[_Data] = []


_BATCH = msgspec.json.Decoder(list[_Msg])
_ONE = msgspec.json.Decoder(_Msg)


class KrakenSpotParams(WebSocketParams):
    endpoint: str = restart("wss://ws.kraken.com/v2", description="Kraken spot WebSocket v2")
    symbols: list[str] = restart(["BTC/USD"], min_length=1, description="Kraken v2 symbols")
    depth: int = restart(10, description="book depth subscribed: 10, 25, 100, 500 or 1000")
    price_decimals: dict[str, int] = restart(
        {}, description="symbol -> price decimals (default: learned from the wire text)"
    )
    qty_decimals: dict[str, int] = restart({}, description="symbol -> quantity decimals")
    venue: str = restart("kraken", description="instrument registry venue")


def _decimals(raw: bytes) -> int:
    raw = bytes(raw)
    dot = raw.find(b".")
    return 0 if dot < 0 else len(raw) - dot - 1


def _ns(stamps: list[str]) -> np.ndarray:
    """RFC 3339 UTC times (``2023-10-06T17:35:55.440295Z``) -> int64 ns, in one numpy call."""
    text = np.array([s.rstrip("Z") or "NaT" for s in stamps], dtype="U32")
    try:
        return text.astype("datetime64[ns]").astype(np.int64)
    except ValueError:
        return np.zeros(len(stamps), np.int64)


class KrakenSpot(WebSocketSource):
    """Kraken spot (WebSocket v2): a CRC32-verified L2 book and trades."""

    type_name = "kraken"
    Params = KrakenSpotParams
    outputs = {
        **WebSocketSource.outputs,
        "trades": Port("trade", "md.trades", "trades (channel trade)"),
        "book": Port("book_update", "md.book", "verified book: snapshot + updates, clears"),
    }

    def open(self, ctx) -> None:
        p = self.params
        if p.depth not in (10, 25, 100, 500, 1000):
            raise ValueError(f"kraken source {self.stage_id!r}: depth = {p.depth}: Kraken books "
                             f"have depth 10, 25, 100, 500 or 1000")  # fmt: skip
        self.ids = dict(zip(p.symbols, ctx.instruments.ids_for(p.venue, p.symbols).tolist(),
                            strict=True))  # fmt: skip
        self.books: dict[str, KrakenBook] = {}
        self.book_conn: dict[str, int] = {}
        self.book_seq: dict[int, int] = {}
        super().open(ctx)
        self.source_counters.update(checksum_mismatches=0, book_syncs=0, not_synced_dropped=0,
                                    resubscribes=0)  # fmt: skip

    def _sub(self, method: str, channel: str, symbols: list[str]) -> str:
        params: dict[str, Any] = {"channel": channel, "symbol": symbols}
        if channel == "book":
            params["depth"] = self.params.depth
        if method == "subscribe":
            params["snapshot"] = channel == "book"
        return json.dumps({"method": method, "params": params})

    def subscribe_messages(self) -> list[str]:
        out = []
        if "book" in self.output_topics:
            out.append(self._sub("subscribe", "book", self.params.symbols))
        if "trades" in self.output_topics:
            out.append(self._sub("subscribe", "trade", self.params.symbols))
        return out

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        if hasattr(self, "books"):
            out["books_synced"] = len(self.books)
        return out

    # -- pipeline thread -------------------------------------------------------------------

    def next_batch(self) -> dict[str, np.ndarray] | None:
        self._book_parts: list[np.ndarray] = []
        out = super().next_batch() or {}
        alerts = out.get("alerts")
        if alerts is not None:
            down = alerts[np.isin(alerts["code"], [R.DISCONNECTED, R.STALE])]
            if len(down):
                last = int(down["value"].max())
                for symbol in [s for s, c in self.book_conn.items() if c <= last]:
                    self._invalidate(symbol, f"{symbol}: connection lost", resubscribe=False)
        if self._book_parts and "book" in self.output_topics:
            book = np.concatenate(self._book_parts)
            book["seq"] = next_seq(book["instrument_id"], self.book_seq)
            out["book"] = book
            self.source_counters["records_decoded"] += len(book)
        out = self.with_alerts(out)
        return out or None

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        msgs, rows, dead = _parse(batch.messages)
        conn = batch.connection[rows] if len(batch.connection) else np.zeros(len(rows), np.uint32)
        out: dict[str, np.ndarray] = {}
        book = [k for k, m in enumerate(msgs) if m.channel == "book"]
        trade = [k for k, m in enumerate(msgs) if m.channel == "trade" and m.type == "update"]
        self.source_counters["ignored"] += len(msgs) - len(book) - len(trade)
        if trade and "trades" in self.output_topics:
            out["trades"] = self._trades([msgs[k] for k in trade], rows[trade], batch, dead)
        if book and "book" in self.output_topics:
            self._book([msgs[k] for k in book], rows[book], conn[book], batch, dead)
        if dead:
            out["dead_letters"] = self.dead_letters(sorted(dead), batch)
        return out

    def _trades(self, msgs, rows, batch, dead) -> np.ndarray:
        entries = [(r, d) for m, r in zip(msgs, rows.tolist(), strict=True) for d in m.data]
        erows = np.array([r for r, _ in entries], np.int64)
        px, sp = parse_decimals([bytes(d.price) for _, d in entries], PRICE_DECIMALS)
        sz, sq = parse_decimals([bytes(d.qty) for _, d in entries], QTY_DECIMALS)
        known = np.array([d.symbol in self.ids for _, d in entries], bool)
        keep = known & (sp == 0) & (sq == 0)
        for k in np.flatnonzero(~keep).tolist():
            r, d = entries[k]
            if not known[k]:
                dead.append(
                    (r, R.NO_INSTRUMENT, f"symbol={d.symbol[:40]}: not subscribed".encode())
                )
            else:
                st = int(sp[k] or sq[k])
                dead.append((r, FixedReason.of_status(st), detail("price/qty", bytes(d.price), st)))
        out = np.zeros(int(keep.sum()), dtype=TRADE.dtype)
        kept = [d for (_, d), k in zip(entries, keep.tolist(), strict=True) if k]
        out["ts_recv"] = batch.ts_recv[erows[keep]]
        out["ts_event"] = _ns([d.timestamp for d in kept])
        out["instrument_id"] = [self.ids[d.symbol] for d in kept]
        out["price"], out["size"] = px[keep], sz[keep]
        out["side"] = [Side.BID if d.side == "buy" else Side.ASK for d in kept]
        out["seq"] = next_seq(out["instrument_id"], self.seq)
        return out

    def _book(self, msgs, rows, conn, batch, dead) -> None:
        # every level of the batch converted at once; then message by message, in order
        entries = [(m.type, r, c, d) for m, r, c in zip(msgs, rows.tolist(), conn.tolist(),
                                                        strict=True) for d in m.data]  # fmt: skip
        raws_p = [lv.price for *_, d in entries for side in (d.bids, d.asks) for lv in side]
        raws_q = [lv.qty for *_, d in entries for side in (d.bids, d.asks) for lv in side]
        px, sp = parse_decimals([bytes(x) for x in raws_p], PRICE_DECIMALS)
        qty, sq = parse_decimals([bytes(x) for x in raws_q], QTY_DECIMALS)
        bad = (sp != 0) | (sq != 0)
        stamps = _ns([d.timestamp for *_, d in entries])
        pos = 0
        for k, (kind, row, c, d) in enumerate(entries):
            nb, na = len(d.bids), len(d.asks)
            lo, mid, hi = pos, pos + nb, pos + nb + na
            pos = hi
            symbol = d.symbol
            if symbol not in self.ids:
                dead.append(
                    (row, R.NO_INSTRUMENT, f"symbol={symbol[:40]}: not subscribed".encode())
                )
                continue
            if bad[lo:hi].any():
                j = lo + int(np.argmax(bad[lo:hi]))
                st = int(sp[j] or sq[j])
                dead.append((row, FixedReason.of_status(st), detail("level", bytes(raws_p[j]), st)))
                self._invalidate(symbol, f"{symbol}: unreadable level", resubscribe=True)
                continue
            bids = list(zip(px[lo:mid].tolist(), qty[lo:mid].tolist(), strict=True))
            asks = list(zip(px[mid:hi].tolist(), qty[mid:hi].tolist(), strict=True))
            ts_recv = int(batch.ts_recv[row])
            if kind == "snapshot":
                self._snapshot(symbol, c, d, bids, asks, raws_p[lo:hi], raws_q[lo:hi], ts_recv)
            else:
                ts = int(stamps[k]) or ts_recv
                self._update(symbol, c, d, bids, asks, ts, ts_recv)

    def _snapshot(self, symbol, conn, d, bids, asks, raw_p, raw_q, ts_recv) -> None:
        p = self.params
        pd = p.price_decimals.get(symbol, max(map(_decimals, raw_p), default=0))
        qd = p.qty_decimals.get(symbol, max(map(_decimals, raw_q), default=0))
        book = KrakenBook(p.depth, min(pd, PRICE_DECIMALS), min(qd, QTY_DECIMALS))
        book.snapshot(bids, asks)
        got = book.checksum()
        if d.checksum >= 0 and got != d.checksum:
            self._mismatch(symbol, d.checksum, got, resubscribe=True)
            return
        self.books[symbol], self.book_conn[symbol] = book, conn
        iid = self.ids[symbol]
        levels = [(Side.BID, pr, q) for pr, q in sorted(book.bids.items(), reverse=True)]
        levels += [(Side.ASK, pr, q) for pr, q in sorted(book.asks.items())]
        out = np.zeros(1 + len(levels), dtype=BOOK_UPDATE.dtype)
        out["ts_event"] = out["ts_recv"] = ts_recv
        out["instrument_id"] = iid
        out["action"], out["flags"] = Action.ADD, F_SNAPSHOT
        out[0]["action"], out[0]["side"] = Action.CLEAR, Side.NONE
        if levels:
            out["side"][1:] = [s for s, _, _ in levels]
            out["price"][1:] = [pr for _, pr, _ in levels]
            out["size"][1:] = [q for _, _, q in levels]
        out["flags"][-1] = F_SNAPSHOT | F_LAST
        self._book_parts.append(out)
        self.source_counters["book_syncs"] += 1
        self.alert(ts_recv, KR.BOOK_SYNCED, 0, float(got), f"{symbol} synced, crc {got}")

    def _update(self, symbol, conn, d, bids, asks, ts, ts_recv) -> None:
        book = self.books.get(symbol)
        if book is None or self.book_conn.get(symbol, 0) != conn:
            self.source_counters["not_synced_dropped"] += 1
            return
        changes = book.update(bids, asks)
        got = book.checksum()
        if got != d.checksum:
            self._mismatch(symbol, d.checksum, got, resubscribe=True)
            return
        if not changes:
            return
        out = np.zeros(len(changes), dtype=BOOK_UPDATE.dtype)
        out["ts_event"], out["ts_recv"] = ts, ts_recv
        out["instrument_id"] = self.ids[symbol]
        out["action"] = Action.MODIFY
        out["side"] = [s for s, _, _ in changes]
        out["price"] = [pr for _, pr, _ in changes]
        out["size"] = [q for _, _, q in changes]
        out["flags"][-1] = F_LAST
        self._book_parts.append(out)

    def _mismatch(self, symbol: str, want: int, got: int, resubscribe: bool) -> None:
        self.source_counters["checksum_mismatches"] += 1
        self._invalidate(symbol, f"{symbol}: crc {got} != kraken {want}", resubscribe,
                         always_alert=True)  # fmt: skip

    def _invalidate(self, symbol: str, why: str, resubscribe: bool, always_alert=False) -> None:
        was = self.books.pop(symbol, None)
        self.book_conn.pop(symbol, None)
        now = time.time_ns()
        if was is not None:  # the downstream book empties now
            clear = np.zeros(1, dtype=BOOK_UPDATE.dtype)
            clear["ts_event"] = clear["ts_recv"] = now
            clear["instrument_id"] = self.ids[symbol]
            clear["action"], clear["side"] = Action.CLEAR, Side.NONE
            self._book_parts.append(clear)
        if was is not None or always_alert:
            self.alert(now, KR.CHECKSUM_MISMATCH, 2, 0.0, why)
        if resubscribe:  # Kraken answers a new subscription with a fresh snapshot
            self.source_counters["resubscribes"] += 1
            self.client.send(self._sub("unsubscribe", "book", [symbol]))
            self.client.send(self._sub("subscribe", "book", [symbol]))


def _parse(messages: list[bytes]) -> tuple[list[_Msg], np.ndarray, list]:
    try:
        msgs = _BATCH.decode(b"[" + b",".join(messages) + b"]")
        return msgs, np.arange(len(msgs)), []
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    msgs, rows, dead = [], [], []
    for k, raw in enumerate(messages):
        try:
            msgs.append(_ONE.decode(raw))
            rows.append(k)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            dead.append((k, R.MALFORMED, str(exc).encode("utf-8", "replace")[:64]))
    return msgs, np.array(rows, dtype=np.int64), dead
