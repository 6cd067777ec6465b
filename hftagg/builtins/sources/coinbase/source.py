"""The ``coinbase`` source: Coinbase Advanced Trade ``level2`` and ``market_trades``.

Every message of a connection carries ``sequence_num``, one counter across all its channels,
starting at 0. A skipped number means messages were lost: a ``sequence_gap`` alert says how
many, and since the lost message may have been a level2 update, every book of the connection is
invalidated -- a clear without ``F_SNAPSHOT`` goes out on ``md.book`` at once (no known-bad book
leaves the stage), a ``book_invalid`` alert names the product, level2 updates of it are dropped
(counted) and the channel is unsubscribed and subscribed again, which makes Coinbase send a new
snapshot. A dropped or stale connection invalidates the books the same way (the new connection
starts with snapshots). A number going backwards (a replay) is dropped, counted.

Ports: ``book`` (``book_update`` on ``md.book``: a snapshot as a clear with ``F_SNAPSHOT`` plus
its levels, updates as ``M`` level sets, quantity 0 removing, ``F_LAST`` on each message's last)
and ``trades`` (``side`` as Coinbase sends it, ``BUY`` -> ``B``, as cryptofeed reads it too; a
``market_trades`` snapshot -- recent history replayed on subscribe -- is not re-emitted). Decoding is one msgspec parse per batch; every price and quantity of the batch
is converted to fixed point in one compiled pass; the sequence check is numpy per batch.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import numpy as np

from hftagg.builtins.core.book.kernels import F_LAST, F_SNAPSHOT
from hftagg.builtins.sources.coinbase import reasons as CR
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.builtins.sources.websocket.connection import MessageBatch
from hftagg.builtins.sources.websocket.source import WebSocketParams, WebSocketSource, next_seq
from hftagg.records.catalog import BOOK_UPDATE, TRADE, Action, Side
from hftagg.records.fixed import PRICE_DECIMALS, QTY_DECIMALS, FixedReason, detail, parse_decimals
from hftagg.stages import Port, restart

__all__ = ["CoinbaseAdvanced", "CoinbaseAdvancedParams"]


class _Update(msgspec.Struct):
    side: str = ""
    price_level: str = ""
    new_quantity: str = ""


class _Trade(msgspec.Struct):
    product_id: str = ""
    price: str = ""
    size: str = ""
    side: str = ""
    time: str = ""


class _Event(msgspec.Struct):
    type: str = ""
    product_id: str = ""
    updates: list[_Update] = []
    trades: list[_Trade] = []


class _Msg(msgspec.Struct):
    channel: str = ""
    timestamp: str = ""
    sequence_num: int = -1
    events: list[_Event] = []


_BATCH = msgspec.json.Decoder(list[_Msg])
_ONE = msgspec.json.Decoder(_Msg)


class CoinbaseAdvancedParams(WebSocketParams):
    endpoint: str = restart("wss://advanced-trade-ws.coinbase.com",
                            description="Coinbase Advanced Trade market data WebSocket")  # fmt: skip
    products: list[str] = restart(["BTC-USD"], min_length=1, description="Coinbase product ids")
    heartbeats: bool = restart(True, description="subscribe to heartbeats (keeps quiet "
                                                 "products' connections alive)")  # fmt: skip
    venue: str = restart("coinbase", description="instrument registry venue")


def _ns(stamps: list[str]) -> np.ndarray:
    text = np.array([s.rstrip("Z") or "NaT" for s in stamps], dtype="U40")
    try:
        return text.astype("datetime64[ns]").astype(np.int64)
    except ValueError:
        return np.zeros(len(stamps), np.int64)


class CoinbaseAdvanced(WebSocketSource):
    """Coinbase Advanced Trade: level2 book and market trades with sequence gap detection."""

    type_name = "coinbase"
    Params = CoinbaseAdvancedParams
    outputs = {
        **WebSocketSource.outputs,
        "trades": Port("trade", "md.trades", "market_trades"),
        "book": Port("book_update", "md.book", "level2: snapshot + updates, clears on gaps"),
    }

    def open(self, ctx) -> None:
        p = self.params
        self.ids = dict(zip(p.products, ctx.instruments.ids_for(p.venue, p.products).tolist(),
                            strict=True))  # fmt: skip
        self.synced: dict[str, int] = {}  # product -> connection its book was built on
        self.book_seq: dict[int, int] = {}
        self.last_seq: tuple[int, int] = (0, -1)  # (connection, last sequence_num)
        super().open(ctx)
        self.source_counters.update(sequence_gaps=0, messages_lost=0, replayed_dropped=0,
                                    not_synced_dropped=0, book_syncs=0, resubscribes=0)  # fmt: skip

    def _sub(self, kind: str, channel: str, products: list[str] | None = None) -> str:
        body: dict[str, Any] = {"type": kind, "channel": channel}
        if channel != "heartbeats":
            body["product_ids"] = products or self.params.products
        return json.dumps(body)

    def subscribe_messages(self) -> list[str]:
        out = []
        if self.params.heartbeats:
            out.append(self._sub("subscribe", "heartbeats"))
        if "book" in self.output_topics:
            out.append(self._sub("subscribe", "level2"))
        if "trades" in self.output_topics:
            out.append(self._sub("subscribe", "market_trades"))
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
                gone = [p for p, c in self.synced.items() if c <= last]
                self._invalidate(gone, "connection lost", resubscribe=False)
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
        self._pending_gap: dict[int, int] = {}  # message index -> messages lost before it
        keep = self._sequence(msgs, conn, batch, rows)
        trades: list[tuple[int, _Trade]] = []
        out: dict[str, np.ndarray] = {}
        books = []
        for k in np.flatnonzero(keep).tolist():
            m = msgs[k]
            if m.channel == "l2_data":
                books.append(k)
            elif m.channel == "market_trades":
                # a snapshot event replays recent history on subscribe: only updates are new
                trades += [(int(rows[k]), t) for e in m.events if e.type == "update"
                           for t in e.trades]  # fmt: skip
            else:
                self.source_counters["ignored"] += 1
        if books and "book" in self.output_topics:
            self._level2([msgs[k] for k in books], books, rows[books], conn[books], batch, dead)
        elif self._pending_gap:
            self._invalidate(list(self.synced), "sequence gap", resubscribe=True)
        self._pending_gap = {}
        if trades and "trades" in self.output_topics:
            out["trades"] = self._trades(trades, batch, dead)
        if dead:
            out["dead_letters"] = self.dead_letters(sorted(dead), batch)
        return out

    def _sequence(self, msgs, conn, batch, rows) -> np.ndarray:
        """Messages to use (replays dropped); gaps alerted and the books invalidated."""
        keep = np.ones(len(msgs), dtype=bool)
        if not msgs:
            return keep
        seq = np.array([m.sequence_num for m in msgs], dtype=np.int64)
        last_conn, last = self.last_seq
        for c in np.unique(conn).tolist():
            idx = np.flatnonzero(conn == c)
            s = seq[idx]
            prev = last if c == last_conn else -1
            expected = np.concatenate([[prev], s[:-1]]) + 1
            # a replay (not above the running maximum) is dropped; anything above it is checked
            running = np.maximum.accumulate(np.concatenate([[prev], s]))[:-1]
            replay = s <= running
            keep[idx[replay]] = False
            self.source_counters["replayed_dropped"] += int(replay.sum())
            gaps = np.flatnonzero((s > expected) & ~replay & (s > running + 1))
            for g in gaps.tolist():
                lost = int(s[g] - running[g] - 1)
                self.source_counters["sequence_gaps"] += 1
                self.source_counters["messages_lost"] += lost
                ts = int(batch.ts_recv[rows[idx[g]]])
                self.alert(ts, CR.SEQUENCE_GAP, 2, float(lost),
                            f"#{c}: seq {int(running[g])} -> {int(s[g])}, {lost} lost")  # fmt: skip
                self._pending_gap[int(idx[g])] = lost
            last_conn, last = c, max(prev, int(s.max()))
        self.last_seq = (last_conn, last)
        return keep

    def _level2(self, msgs, where, rows, conn, batch, dead) -> None:
        """Level2 messages in order (``where``: their index in the batch); at a sequence gap,
        every book is invalidated before the message after it is looked at."""
        gaps = sorted(self._pending_gap)
        entries = [(k, e) for k, m in enumerate(msgs) for e in m.events]
        ups = [u for _, e in entries for u in e.updates]
        px, sp = parse_decimals([u.price_level for u in ups], PRICE_DECIMALS)
        qty, sq = parse_decimals([u.new_quantity for u in ups], QTY_DECIMALS)
        side = np.array([Side.BID if u.side == "bid" else Side.ASK for u in ups], np.uint8)
        bad = (sp != 0) | (sq != 0)
        stamps = _ns([m.timestamp for m in msgs])
        pos = 0
        for k, e in entries:
            lo, hi = pos, pos + len(e.updates)
            pos = hi
            while gaps and where[k] >= gaps[0]:
                gaps.pop(0)
                self._invalidate(list(self.synced), "sequence gap", resubscribe=True)
            row = int(rows[k])
            product = e.product_id
            if product not in self.ids:
                dead.append(
                    (row, R.NO_INSTRUMENT, f"product={product[:40]}: not subscribed".encode())
                )
                continue
            if bad[lo:hi].any():
                j = lo + int(np.argmax(bad[lo:hi]))
                st = int(sp[j] or sq[j])
                dead.append(
                    (row, FixedReason.of_status(st), detail("level", ups[j].price_level, st))
                )
                self._invalidate([product], "unreadable level", resubscribe=True)
                continue
            ts = int(stamps[k]) or int(batch.ts_recv[row])
            iid = self.ids[product]
            if e.type == "snapshot":
                out = np.zeros(1 + hi - lo, dtype=BOOK_UPDATE.dtype)
                out["action"], out["flags"] = Action.ADD, F_SNAPSHOT
                out[0]["action"], out[0]["side"] = Action.CLEAR, Side.NONE
                out["side"][1:], out["price"][1:], out["size"][1:] = (
                    side[lo:hi],
                    px[lo:hi],
                    qty[lo:hi],
                )
                out["flags"][-1] = F_SNAPSHOT | F_LAST
                self.synced[product] = int(conn[k])
                self.source_counters["book_syncs"] += 1
                self.alert(ts, CR.BOOK_SYNCED, 0, float(hi - lo), f"{product} synced")
            elif self.synced.get(product) != int(conn[k]):
                self.source_counters["not_synced_dropped"] += 1
                continue
            else:
                out = np.zeros(hi - lo, dtype=BOOK_UPDATE.dtype)
                out["action"] = Action.MODIFY
                out["side"], out["price"], out["size"] = side[lo:hi], px[lo:hi], qty[lo:hi]
                if len(out):
                    out["flags"][-1] = F_LAST
            out["ts_event"], out["ts_recv"], out["instrument_id"] = ts, batch.ts_recv[row], iid
            self._book_parts.append(out)
        if gaps:  # a gap after the last level2 message: the lost one may have been level2
            self._invalidate(list(self.synced), "sequence gap", resubscribe=True)

    def _trades(self, trades, batch, dead) -> np.ndarray:
        rows = np.array([r for r, _ in trades], np.int64)
        ts = [t for _, t in trades]
        px, sp = parse_decimals([t.price for t in ts], PRICE_DECIMALS)
        sz, sq = parse_decimals([t.size for t in ts], QTY_DECIMALS)
        known = np.array([t.product_id in self.ids for t in ts], bool)
        keep = known & (sp == 0) & (sq == 0)
        for k in np.flatnonzero(~keep).tolist():
            if not known[k]:
                dead.append((int(rows[k]), R.NO_INSTRUMENT,
                             f"product={ts[k].product_id[:40]}: not subscribed".encode()))  # fmt: skip
            else:
                st = int(sp[k] or sq[k])
                dead.append(
                    (int(rows[k]), FixedReason.of_status(st), detail("price", ts[k].price, st))
                )
        kept = [t for t, k in zip(ts, keep.tolist(), strict=True) if k]
        out = np.zeros(len(kept), dtype=TRADE.dtype)
        out["ts_recv"] = batch.ts_recv[rows[keep]]
        out["ts_event"] = _ns([t.time for t in kept])
        out["instrument_id"] = [self.ids[t.product_id] for t in kept]
        out["price"], out["size"] = px[keep], sz[keep]
        out["side"] = [Side.BID if t.side == "BUY" else Side.ASK for t in kept]
        out["seq"] = next_seq(out["instrument_id"], self.seq)
        return out

    def _invalidate(self, products: list[str], why: str, resubscribe: bool) -> None:
        now = time.time_ns()
        for product in products:
            if self.synced.pop(product, None) is None:
                continue
            clear = np.zeros(1, dtype=BOOK_UPDATE.dtype)
            clear["ts_event"] = clear["ts_recv"] = now
            clear["instrument_id"] = self.ids[product]
            clear["action"], clear["side"] = Action.CLEAR, Side.NONE
            self._book_parts.append(clear)
            self.alert(now, CR.BOOK_INVALID, 2, 0.0, f"{product}: {why}")
        if resubscribe and "book" in self.output_topics:  # (a trades-only source has no level2)
            self.source_counters["resubscribes"] += 1
            self.client.send(self._sub("unsubscribe", "level2"))
            self.client.send(self._sub("subscribe", "level2"))


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
