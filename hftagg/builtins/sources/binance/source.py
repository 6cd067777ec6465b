"""The ``binance`` source: Binance spot trades, best bid/offer and a verified depth book.

One WebSocket connection (``endpoint``, Binance's raw stream ``/ws``) subscribes, per symbol, to
``<symbol>@trade``, ``<symbol>@bookTicker`` and ``<symbol>@depth@100ms``, or only to those of
the output ports a config's ``fields`` keeps. Output ports:

- ``trades`` (``trade``): price/size exact fixed point, aggressor side (``m`` true -- the buyer
  is the maker -- means the seller hit: ``A``), ``ts_event`` = trade time ``T``.
- ``quotes`` (``quote``): every bookTicker update.
- ``book`` (``book_update``, topic ``md.book`` -- what the ``book`` stage reads): the depth book
  as market-by-price updates, only while it is known good. When a symbol's book is (re)built the
  source emits a clear with ``F_SNAPSHOT``, the snapshot levels (``F_SNAPSHOT``; ``F_LAST`` on
  the last) and the diffs that follow it (``M`` set level, size 0 removes it; ``F_LAST`` on the
  last level of each Binance event). On an update-id gap, a reconnect or a stale/dropped
  connection the book is *invalidated*: a clear without ``F_SNAPSHOT`` goes out at once (a
  downstream book empties rather than show stale levels), a ``book_gap`` alert names the symbol
  and the ids, and nothing more of that symbol leaves the stage until a fresh REST snapshot has
  been joined to the buffered stream as Binance documents (:mod:`.sync`).

Decoding is in bulk: one msgspec parse of the whole batch into one Struct type (only the keys
used), decimal strings to fixed point in one compiled pass per column; the update-id checks are
numpy over each symbol's events of the batch. REST snapshots are fetched on a worker thread
(``rest_endpoint`` + ``/api/v3/depth``), retried with capped backoff, each failure alerted.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import field_validator

from hftagg.builtins.core.book.kernels import F_LAST, F_SNAPSHOT
from hftagg.builtins.sources.binance import reasons as BR
from hftagg.builtins.sources.binance.sync import SYNCED, DepthEvents, DepthSync, Snapshot
from hftagg.builtins.sources.websocket import reasons as R
from hftagg.builtins.sources.websocket.connection import MessageBatch
from hftagg.builtins.sources.websocket.source import WebSocketParams, WebSocketSource, next_seq
from hftagg.records.catalog import BOOK_UPDATE, QUOTE, TRADE, Action, Side
from hftagg.records.fixed import PRICE_DECIMALS, QTY_DECIMALS, detail, parse_decimals
from hftagg.stages import Port, restart

__all__ = ["BinanceSpot", "BinanceSpotParams"]

_B, _A, _N = Side.BID, Side.ASK, Side.NONE


class _Msg(msgspec.Struct):
    """Every Binance spot market stream event this source reads (other keys are skipped)."""

    e: str = ""
    E: int = 0
    s: str = ""
    U: int = -1
    u: int = -1
    b: list[list[str]] | str | None = None  # depthUpdate bids, or bookTicker best bid price
    a: list[list[str]] | str | None = None
    B: str = ""
    A: str = ""
    p: str = ""
    q: str = ""
    T: int = 0
    m: bool = False


class _Depth(msgspec.Struct):
    lastUpdateId: int  # noqa: N815 - Binance's name
    bids: list[list[str]]
    asks: list[list[str]]


_BATCH = msgspec.json.Decoder(list[_Msg])
_ONE = msgspec.json.Decoder(_Msg)
_SNAPSHOT = msgspec.json.Decoder(_Depth)


class BinanceSpotParams(WebSocketParams):
    endpoint: str = restart("wss://stream.binance.com:9443/ws",
                            description="Binance spot raw stream URL")  # fmt: skip
    rest_endpoint: str = restart("https://api.binance.com",
                                 description="REST base URL for depth snapshots")  # fmt: skip
    symbols: list[str] = restart(["BTCUSDT"], min_length=1, description="Binance symbols")
    depth_interval_ms: Literal[100, 1000] = restart(100, description="diff stream speed")
    snapshot_limit: int = restart(1000, ge=5, le=5000, description="REST snapshot depth")
    snapshot_timeout_s: float = restart(10.0, gt=0, le=300)
    snapshot_retry_max_s: float = restart(10.0, gt=0, le=600, description="retry backoff cap")
    max_buffered_events: int = restart(
        10_000, ge=10, le=10_000_000, description="diffs kept per symbol while waiting for a "
        "snapshot (the oldest beyond are dropped, counted)"
    )  # fmt: skip
    venue: str = restart("binance", description="instrument registry venue")

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not s.isalnum()]
        if bad:
            raise ValueError(f"symbols {bad}: Binance symbols are letters and digits, e.g. "
                             f"'BTCUSDT'")  # fmt: skip
        return [s.upper() for s in value]


class BinanceSpot(WebSocketSource):
    """Binance spot market data with a depth book synchronised by update ids."""

    type_name = "binance"
    Params = BinanceSpotParams
    outputs = {
        **WebSocketSource.outputs,
        "trades": Port("trade", "md.trades", "trades (<symbol>@trade)"),
        "quotes": Port("quote", "md.quotes", "best bid/offer (<symbol>@bookTicker)"),
        "book": Port("book_update", "md.book", "verified depth: snapshot + diffs, clears on gaps"),
    }

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, ctx) -> None:
        p = self.params
        self.ids = dict(zip(p.symbols, ctx.instruments.ids_for(p.venue, p.symbols).tolist(),
                            strict=True))  # fmt: skip
        self.syncs = {s: DepthSync(s, max_buffered=p.max_buffered_events) for s in p.symbols}
        self.book_seq: dict[int, int] = {}
        self.alert_seq = 0
        self.connection = 0
        self._lock = threading.Lock()
        self._fetched: list[tuple[str, int, Snapshot | None, str]] = []
        self._generation = dict.fromkeys(p.symbols, 0)
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix=f"binance:{self.stage_id}"
        )
        super().open(ctx)
        self.source_counters.update(snapshot_requests=0, snapshot_failures=0, book_gaps=0,
                                    book_syncs=0, unknown_symbol=0)  # fmt: skip

    def close(self) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            closing.set()
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    def subscribe_messages(self) -> list[str]:
        """One SUBSCRIBE for the streams of the output ports in use (``fields`` selects them)."""
        p = self.params
        names = {"trades": "{}@trade", "quotes": "{}@bookTicker",
                 "book": "{}@depth" + ("@100ms" if p.depth_interval_ms == 100 else "")}  # fmt: skip
        ports = [port for port in names if port in self.output_topics]
        params = [names[port].format(s.lower()) for s in p.symbols for port in ports]
        return [json.dumps({"method": "SUBSCRIBE", "params": params, "id": 1})]

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        if hasattr(self, "syncs"):
            for key in (
                "gaps",
                "resyncs",
                "stale_dropped",
                "buffer_dropped",
                "snapshots_refetched",
            ):
                out[f"depth_{key}"] = sum(s.counters[key] for s in self.syncs.values())
            out["books_synced"] = sum(s.state == SYNCED for s in self.syncs.values())
        return out

    # -- snapshots (worker thread) ---------------------------------------------------------

    def _request_snapshot(self, symbol: str) -> None:
        self.syncs[symbol].requested = True
        self._generation[symbol] += 1
        self.source_counters["snapshot_requests"] += 1
        self._pool.submit(self._fetch, symbol, self._generation[symbol])

    def _fetch(self, symbol: str, generation: int) -> None:
        p = self.params
        url = f"{p.rest_endpoint.rstrip('/')}/api/v3/depth?symbol={symbol}&limit={p.snapshot_limit}"
        attempt = 0
        while not self._closing.is_set() and self._generation[symbol] == generation:
            try:
                with urllib.request.urlopen(url, timeout=p.snapshot_timeout_s) as response:
                    body = response.read()
                received = time.time_ns()
                snap = _SNAPSHOT.decode(body)
                bids, asks = _levels(snap.bids, "bids"), _levels(snap.asks, "asks")
                self._post(
                    symbol, generation, Snapshot(snap.lastUpdateId, bids, asks, received), ""
                )
                return
            except (OSError, urllib.error.URLError, msgspec.DecodeError, ValueError) as exc:
                self._post(symbol, generation, None, f"{symbol} snapshot: {exc}"[:200])
                delay = min(p.snapshot_retry_max_s, p.reconnect_initial_s * 2.0**attempt)
                attempt += 1
                self._closing.wait(delay)

    def _post(self, symbol: str, generation: int, snap: Snapshot | None, error: str) -> None:
        with self._lock:
            self._fetched.append((symbol, generation, snap, error))
        self.wake()

    # -- pipeline thread -------------------------------------------------------------------

    def next_batch(self) -> dict[str, np.ndarray] | None:
        self._book_parts: list[np.ndarray] = []
        out = super().next_batch() or {}
        alerts = out.get("alerts")
        if alerts is not None:  # the connection dropped or went stale: its books are stale
            down = alerts[np.isin(alerts["code"], [R.DISCONNECTED, R.STALE])]
            if len(down):
                self._invalidate_all(int(down["ts_event"][-1]), "connection lost",
                                     max_connection=int(down["value"].max()))  # fmt: skip
        self._take_snapshots()
        if self._book_parts and "book" in self.output_topics:
            book = np.concatenate(self._book_parts)
            book["seq"] = next_seq(book["instrument_id"], self.book_seq)
            out["book"] = np.concatenate([out["book"], book]) if "book" in out else book
            self.source_counters["records_decoded"] += len(book)
        out = self.with_alerts(out)
        self._request_due()
        return out or None

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        msgs, rows, dead = _parse(batch.messages)
        out: dict[str, np.ndarray] = {}
        kinds = np.array([m.e for m in msgs], dtype=object) if msgs else np.zeros(0, object)
        conn = batch.connection[rows] if len(batch.connection) else np.zeros(len(rows), np.uint32)
        trade = np.flatnonzero(kinds == "trade")
        bbo = np.flatnonzero((kinds == "") & np.array([isinstance(m.b, str) for m in msgs], bool))
        depth = np.flatnonzero(kinds == "depthUpdate")
        self.source_counters["ignored"] += len(msgs) - len(trade) - len(bbo) - len(depth)
        if len(trade):
            out["trades"] = self._trades(
                [msgs[i] for i in trade.tolist()], rows[trade], batch, dead
            )
        if len(bbo):
            out["quotes"] = self._quotes([msgs[i] for i in bbo.tolist()], rows[bbo], batch, dead)
        if len(depth) and "book" in self.output_topics:
            self._depth([msgs[i] for i in depth.tolist()], rows[depth], conn[depth], batch, dead)
        for port in ("trades", "quotes"):
            if port in out and port not in self.output_topics:
                del out[port]
        if dead:
            out["dead_letters"] = self.dead_letters(sorted(dead), batch)
        return out

    # -- decoding ----------------------------------------------------------------------------

    def _known(self, symbols: list[str], rows: np.ndarray, dead: list) -> np.ndarray:
        ok = np.array([s in self.ids for s in symbols], dtype=bool)
        if not ok.all():
            for r, s in zip(rows[~ok].tolist(), np.array(symbols, object)[~ok], strict=True):
                dead.append((r, R.NO_INSTRUMENT, f"symbol={s[:40]}: not subscribed".encode()))
            self.source_counters["unknown_symbol"] += int((~ok).sum())
        return ok

    def _columns(self, values: list[str], decimals: int, name: str, rows, dead) -> tuple:
        fixed, status = parse_decimals(values, decimals)
        bad = status != 0
        for r, v, st in zip(rows[bad].tolist(), np.array(values, object)[bad],
                            status[bad].tolist(), strict=True):  # fmt: skip
            dead.append((r, _fixed_reason(st), detail(name, v, st)))
        return fixed, bad

    def _trades(self, msgs: list[_Msg], rows: np.ndarray, batch, dead) -> np.ndarray:
        syms = [m.s for m in msgs]
        px, bad_p = self._columns([m.p for m in msgs], PRICE_DECIMALS, "p", rows, dead)
        sz, bad_q = self._columns([m.q for m in msgs], QTY_DECIMALS, "q", rows, dead)
        keep = self._known(syms, rows, dead) & ~bad_p & ~bad_q
        out = np.zeros(int(keep.sum()), dtype=TRADE.dtype)
        out["ts_recv"] = batch.ts_recv[rows[keep]]
        out["ts_event"] = np.array([m.T for m in msgs], np.int64)[keep] * 1_000_000
        out["instrument_id"] = [self.ids[s] for s, k in zip(syms, keep.tolist(), strict=True) if k]
        out["price"], out["size"] = px[keep], sz[keep]
        maker_buys = np.array([m.m for m in msgs], dtype=bool)[keep]
        out["side"] = np.where(maker_buys, _A, _B)
        out["seq"] = next_seq(out["instrument_id"], self.seq)
        return out

    def _quotes(self, msgs: list[_Msg], rows: np.ndarray, batch, dead) -> np.ndarray:
        syms = [m.s for m in msgs]
        keep = self._known(syms, rows, dead)
        cols = {}
        for field, key, dec in (
            ("bid_px", "b", PRICE_DECIMALS),
            ("ask_px", "a", PRICE_DECIMALS),
            ("bid_sz", "B", QTY_DECIMALS),
            ("ask_sz", "A", QTY_DECIMALS),
        ):
            cols[field], bad = self._columns([getattr(m, key) for m in msgs], dec, key, rows, dead)
            keep &= ~bad  # fmt: skip
        out = np.zeros(int(keep.sum()), dtype=QUOTE.dtype)
        out["ts_recv"] = batch.ts_recv[rows[keep]]
        out["ts_event"] = out["ts_recv"]  # bookTicker carries no event time
        out["instrument_id"] = [self.ids[s] for s, k in zip(syms, keep.tolist(), strict=True) if k]
        for field, values in cols.items():
            out[field] = values[keep]
        out["seq"] = next_seq(out["instrument_id"], self.seq)
        return out

    def _depth(self, msgs: list[_Msg], rows, conn, batch, dead) -> None:
        syms = [m.s for m in msgs]
        keep = self._known(syms, rows, dead)
        try:
            nb = np.array([len(m.b) for m in msgs], dtype=np.int64)
            na = np.array([len(m.a) for m in msgs], dtype=np.int64)
            levels = [lv for m in msgs for lv in m.b] + [lv for m in msgs for lv in m.a]
            px_text = [lv[0] for lv in levels]
            qty_text = [lv[1] for lv in levels]
        except (TypeError, IndexError):  # a level that is not [price, qty]: find the messages
            return self._depth_one_by_one(msgs, rows, conn, batch, dead)
        n = len(msgs)
        level_event = np.concatenate([np.repeat(np.arange(n), nb), np.repeat(np.arange(n), na)])
        side = np.concatenate([np.full(int(nb.sum()), _B, np.uint8),
                               np.full(int(na.sum()), _A, np.uint8)])  # fmt: skip
        px, sp = parse_decimals(px_text, PRICE_DECIMALS)
        sz, sq = parse_decimals(qty_text, QTY_DECIMALS)
        bad_level = (sp != 0) | (sq != 0)
        if bad_level.any():  # the event cannot be applied: dead-letter it (the book then gaps)
            for k in np.flatnonzero(bad_level).tolist():
                ev = int(level_event[k])
                if keep[ev]:
                    keep[ev] = False
                    which, st = ("price", int(sp[k])) if sp[k] else ("qty", int(sq[k]))
                    text = px_text[k] if sp[k] else qty_text[k]
                    dead.append((int(rows[ev]), _fixed_reason(st), detail(which, text, st)))
        order = np.argsort(level_event, kind="stable")
        level_event, side, px, sz = level_event[order], side[order], px[order], sz[order]
        events = DepthEvents(
            np.array([m.U for m in msgs], np.int64), np.array([m.u for m in msgs], np.int64),
            np.array([m.E for m in msgs], np.int64) * 1_000_000, batch.ts_recv[rows],
            level_event, side, px, sz,
        )  # fmt: skip
        sym_arr = np.array(syms, dtype=object)
        for c in np.unique(conn).tolist():  # one run per connection (a reconnect within a batch)
            if c != self.connection:
                if self.connection:
                    self._invalidate_all(int(batch.ts_recv[rows[conn == c][0]]),
                                         f"reconnected (#{c})", max_connection=c - 1)  # fmt: skip
                self.connection = c
            in_conn = (conn == c) & keep
            for symbol in np.unique(sym_arr[in_conn]).tolist():
                idx = np.flatnonzero(in_conn & (sym_arr == symbol))
                self._feed(symbol, _take(events, idx))

    def _depth_one_by_one(self, msgs, rows, conn, batch, dead) -> None:
        good = []
        for k, m in enumerate(msgs):
            ok = (
                isinstance(m.b, list)
                and isinstance(m.a, list)
                and all(len(lv) >= 2 for lv in m.b + m.a)
            )
            if ok:
                good.append(k)
            else:
                dead.append((int(rows[k]), R.MALFORMED, b"depthUpdate level is not [price, qty]"))
        if good:
            g = np.array(good)
            self._depth([msgs[k] for k in good], rows[g], conn[g], batch, dead)

    # -- the book ----------------------------------------------------------------------------

    def _feed(self, symbol: str, events: DepthEvents) -> None:
        sync = self.syncs[symbol]
        if sync.state != SYNCED:
            sync.connection = self.connection
        self._publish(symbol, sync.feed(events))

    def _publish(self, symbol: str, items: list[tuple[str, object]]) -> None:
        iid = self.ids[symbol]
        for kind, item in items:
            if kind == "snapshot":
                self._book_parts.append(_snapshot_records(item, iid))
                self.source_counters["book_syncs"] += 1
                self.alert(item.ts_recv, BR.BOOK_SYNCED, 0, float(item.last_update_id),
                            f"{symbol} synced at {item.last_update_id}")  # fmt: skip
            elif kind == "events":
                self._book_parts.append(_diff_records(item, iid))
            else:  # a gap: clear the book downstream now, say why
                self._book_parts.append(_clear_record(time.time_ns(), iid, 0))
                self.source_counters["book_gaps"] += 1
                self.alert(time.time_ns(), BR.BOOK_GAP, 2, 0.0, str(item))

    def _invalidate_all(self, ts: int, why: str, max_connection: int) -> None:
        for symbol, sync in self.syncs.items():
            if sync.state == SYNCED and sync.connection <= max_connection:
                self._publish(symbol, sync.invalidate(f"{symbol}: {why}"))
            elif sync.connection <= max_connection:
                sync.invalidate(why)

    def _take_snapshots(self) -> None:
        with self._lock:
            fetched, self._fetched = self._fetched, []
        for symbol, generation, snap, error in fetched:
            if generation != self._generation[symbol]:
                continue  # asked for before the book was invalidated again
            if snap is None:
                self.source_counters["snapshot_failures"] += 1
                self.alert(time.time_ns(), BR.SNAPSHOT_FAILED, 1, 0.0, error)
                continue
            self._publish(symbol, self.syncs[symbol].snapshot(snap))

    def _request_due(self) -> None:
        for symbol, sync in self.syncs.items():
            if sync.need_snapshot:
                self._request_snapshot(symbol)


# ------------------------------------------------------------------------------ helpers


def _parse(messages: list[bytes]) -> tuple[list[_Msg], np.ndarray, list]:
    """One parse for the batch; message by message only when it fails (to name the bad ones)."""
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


def _fixed_reason(status: int) -> int:
    from hftagg.records.fixed import FixedReason

    return FixedReason.of_status(status)


def _levels(levels: list[list[str]], name: str) -> np.ndarray:
    out = np.zeros((len(levels), 2), dtype=np.int64)
    if not levels:
        return out
    if any(len(lv) < 2 for lv in levels):
        raise ValueError(f"{name}: a level is not [price, qty]")
    out[:, 0], sp = parse_decimals([lv[0] for lv in levels], PRICE_DECIMALS)
    out[:, 1], sq = parse_decimals([lv[1] for lv in levels], QTY_DECIMALS)
    if sp.any() or sq.any():
        raise ValueError(f"{name}: a price or quantity does not convert to fixed point")
    return out


def _take(events: DepthEvents, idx: np.ndarray) -> DepthEvents:
    if len(idx) == len(events) and (idx == np.arange(len(idx))).all():
        return events
    mask = np.isin(events.level_event, idx)
    renumber = np.full(len(events), -1, np.int64)
    renumber[idx] = np.arange(len(idx))
    return DepthEvents(events.first[idx], events.last[idx], events.ts_event[idx],
                       events.ts_recv[idx], renumber[events.level_event[mask]],
                       events.side[mask], events.price[mask], events.size[mask])  # fmt: skip


def _clear_record(ts: int, iid: int, flags: int) -> np.ndarray:
    out = np.zeros(1, dtype=BOOK_UPDATE.dtype)
    out["ts_event"] = out["ts_recv"] = ts
    out["instrument_id"] = iid
    out["action"], out["side"], out["flags"] = Action.CLEAR, _N, flags
    return out


def _snapshot_records(snap: Snapshot, iid: int) -> np.ndarray:
    nb, na = len(snap.bids), len(snap.asks)
    out = np.zeros(1 + nb + na, dtype=BOOK_UPDATE.dtype)
    out["ts_event"] = out["ts_recv"] = snap.ts_recv
    out["instrument_id"] = iid
    out["flags"] = F_SNAPSHOT
    out["action"] = Action.ADD
    out[0]["action"], out[0]["side"] = Action.CLEAR, _N
    out["side"][1 : 1 + nb], out["side"][1 + nb :] = _B, _A
    out["price"][1 : 1 + nb], out["size"][1 : 1 + nb] = snap.bids[:, 0], snap.bids[:, 1]
    out["price"][1 + nb :], out["size"][1 + nb :] = snap.asks[:, 0], snap.asks[:, 1]
    out["flags"][-1] = F_SNAPSHOT | F_LAST
    return out


def _diff_records(events: DepthEvents, iid: int) -> np.ndarray:
    out = np.zeros(len(events.price), dtype=BOOK_UPDATE.dtype)
    out["ts_event"] = events.ts_event[events.level_event]
    out["ts_recv"] = events.ts_recv[events.level_event]
    out["instrument_id"] = iid
    out["action"] = Action.MODIFY  # set the level; size 0 removes it (absent: nothing to do)
    out["side"], out["price"], out["size"] = events.side, events.price, events.size
    if len(out):
        ends = np.append(events.level_event[1:] != events.level_event[:-1], True)
        out["flags"] = np.where(ends, F_LAST, 0)
    return out
