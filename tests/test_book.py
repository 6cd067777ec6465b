"""The L2 book stage: against a plain dict-of-levels reference book, integrity, the runtime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftagg.builtins.core.book.kernels import (
    ALERT_BAD_RECORD,
    ALERT_CROSSED,
    ALERT_GAP,
    ALERT_LOCKED,
    ALERT_UNKNOWN_LEVEL,
    F_LAST,
    F_SNAPSHOT,
    UNDEF_PRICE,
    BookKernel,
)
from hftagg.builtins.core.book.mbo import MboBookKernel
from hftagg.builtins.core.book.stages import Book, MboBook
from hftagg.records import ALERT, BOOK_UPDATE, MBP10, QUOTE
from hftagg.records.catalog import MBO
from hftagg.stages import StageContext
from hftagg.testing import TestingSink, TestingSource, run_pipeline
from tests.test_pipeline import simulate

A, C, M, D, R, T = (ord(c) for c in "ACMDRT")
BID, ASK = ord("B"), ord("A")
TICK = 10_000_000
MS = 1_000_000


# --------------------------------------------------------------------------- reference book


class RefInstrument:
    def __init__(self) -> None:
        self.sides: dict[int, dict[int, int]] = {BID: {}, ASK: {}}
        self.counts: dict[int, dict[int, int]] = {BID: {}, ASK: {}}  # orders per level (L3)
        self.orders: dict[int, tuple[int, int, int]] = {}  # L3: order id -> side, price, size
        self.valid, self.seen, self.next_seq = True, False, 0
        self.snapshot = self.crossed = self.dirty = False
        self.published: tuple | None = None
        self.out_seq = [0, 0, 0]
        self.last_mbp10: int | None = None
        self.last_alert: int | None = None
        self.unknown = 0

    def top(self) -> tuple[int, int, int, int]:
        bids, asks = self.sides[BID], self.sides[ASK]
        bid = max(bids) if bids else UNDEF_PRICE
        ask = min(asks) if asks else UNDEF_PRICE
        return bid, ask, bids.get(bid, 0), asks.get(ask, 0)

    def depth(self, n: int = 10) -> tuple[list, list]:
        out = []
        for side, best_first in ((BID, True), (ASK, False)):
            prices = sorted(self.sides[side], reverse=best_first)[:n]
            levels = [(p, self.sides[side][p], self.counts[side].get(p, 0)) for p in prices]
            out.append((levels + [(UNDEF_PRICE, 0, 0)] * n)[:n])
        return out[0], out[1]


class RefBook:
    """The documented semantics, written as plainly as possible with dicts of price -> size."""

    def __init__(self, mbp10_on="change", interval_ns=0, alert_interval_ns=0, depth=True):
        self.mode, self.interval, self.alert_interval = mbp10_on, interval_ns, alert_interval_ns
        self.track_depth = depth
        self.books: dict[int, RefInstrument] = {}
        self.quotes: list[tuple] = []
        self.mbp10: list[tuple] = []
        self.alerts: list[tuple] = []

    def alert(self, b: RefInstrument, rec, code: int, value: float) -> None:
        self.alerts.append((int(rec["instrument_id"]), b.out_seq[2], int(rec["ts_event"]), code,
                            value))  # fmt: skip
        b.out_seq[2] += 1

    def apply(self, rec) -> None:
        iid, action, flags, seq = rec["instrument_id"], rec["action"], rec["flags"], rec["seq"]
        b = self.books.setdefault(iid, RefInstrument())
        gap = seq - b.next_seq if action != R and b.seen and seq != b.next_seq else 0
        b.seen, b.next_seq = True, seq + 1
        if gap and b.valid:
            b.valid = b.snapshot = False
            self.alert(b, rec, ALERT_GAP, float(gap))
        if not b.valid and action != R:
            return
        if b.snapshot and not flags & F_SNAPSHOT:
            b.snapshot = False
        before = b.depth() if self.track_depth else None
        if action == R:
            b.sides, b.counts, b.orders = {BID: {}, ASK: {}}, {BID: {}, ASK: {}}, {}
            b.valid, b.dirty, b.crossed, b.published = True, True, False, None
            b.snapshot = bool(flags & F_SNAPSHOT)
        else:
            self.action(b, rec)
        if self.track_depth and b.depth() != before:
            b.dirty = True
        if b.snapshot and flags & F_LAST:
            b.snapshot = False
        if b.snapshot:
            return
        self.publish(b, rec)

    def action(self, b: RefInstrument, rec) -> None:
        action, side, price, size = rec["action"], rec["side"], rec["price"], rec["size"]
        if action in (A, M, D) and side in (BID, ASK):
            levels = b.sides[side]
            if action != D and size:
                levels[price] = size
            elif price in levels:
                del levels[price]
            else:
                self.unknown(b, rec)
        elif action not in (T, ord("F"), ord("N")):
            self.alert(b, rec, ALERT_BAD_RECORD, float(action))

    def unknown(self, b: RefInstrument, rec) -> None:
        b.unknown += 1
        ts = rec["ts_recv"]
        if (
            not self.alert_interval
            or b.last_alert is None
            or (ts - b.last_alert >= self.alert_interval)
        ):
            b.last_alert = ts
            self.alert(b, rec, ALERT_UNKNOWN_LEVEL, float(b.unknown))

    def publish(self, b: RefInstrument, rec) -> None:
        bid, ask, bid_sz, ask_sz = top = b.top()
        if b.sides[BID] and b.sides[ASK] and bid >= ask:
            if not b.crossed:
                b.crossed = True
                self.alert(b, rec, ALERT_CROSSED if bid > ask else ALERT_LOCKED, (ask - bid) * 1e-9)
        else:
            b.crossed = False
        head = (int(rec["instrument_id"]), int(rec["ts_event"]), int(rec["ts_recv"]))
        if top != b.published:
            b.published = top
            self.quotes.append((*head, b.out_seq[0], *top))
            b.out_seq[0] += 1
        ts = int(rec["ts_event"])
        if (
            self.track_depth
            and b.dirty
            and self.mode != "off"
            and (
                self.mode == "change" or b.last_mbp10 is None or ts - b.last_mbp10 >= self.interval
            )
        ):
            b.last_mbp10, b.dirty = ts, False
            self.mbp10.append((*head, b.out_seq[1], b.depth()))
            b.out_seq[1] += 1


class RefMboBook(RefBook):
    """L3: a dict of resting orders per instrument; levels re-aggregated from it every time."""

    def action(self, b: RefInstrument, rec) -> None:
        action, side, oid, size = rec["action"], rec["side"], rec["order_id"], rec["size"]
        if action in (A, M) and side in (BID, ASK):
            if size:
                b.orders[oid] = (side, rec["price"], size)
            else:
                b.orders.pop(oid, None)
        elif action == C:
            if oid not in b.orders:
                self.unknown(b, rec)
            elif size == 0 or size >= b.orders[oid][2]:
                del b.orders[oid]
            else:
                side, price, rest = b.orders[oid]
                b.orders[oid] = (side, price, rest - size)
        elif action not in (T, ord("F"), ord("N")):
            self.alert(b, rec, ALERT_BAD_RECORD, float(action))
        b.sides, b.counts = {BID: {}, ASK: {}}, {BID: {}, ASK: {}}
        for side, price, size in b.orders.values():
            b.sides[side][price] = b.sides[side].get(price, 0) + size
            b.counts[side][price] = b.counts[side].get(price, 0) + 1


# --------------------------------------------------------------------------- helpers


def as_dicts(stream: np.ndarray) -> list[dict]:
    """Records as plain dicts of Python ints: the reference book never touches numpy."""
    names = stream.dtype.names
    return [dict(zip(names, row, strict=True)) for row in stream.tolist()]


def quote_tuples(quotes: np.ndarray) -> list[tuple]:
    fields = ("instrument_id", "ts_event", "ts_recv", "seq", "bid_px", "ask_px", "bid_sz", "ask_sz")
    return list(zip(*(quotes[f].tolist() for f in fields), strict=True))


def mbp10_tuples(mbp: np.ndarray) -> list[tuple]:
    out = []
    for r in mbp:
        bids = list(zip(*(r[f"bid_{x}"].tolist() for x in ("px", "sz", "ct")), strict=True))
        asks = list(zip(*(r[f"ask_{x}"].tolist() for x in ("px", "sz", "ct")), strict=True))
        head = (int(r["instrument_id"]), int(r["ts_event"]), int(r["ts_recv"]), int(r["seq"]))
        out.append((*head, (bids, asks)))
    return out


def alert_tuples(alerts: np.ndarray) -> list[tuple]:
    fields = ("instrument_id", "seq", "ts_event", "code", "value")
    return list(zip(*(alerts[f].tolist() for f in fields), strict=True))


def records(rows: list[tuple]) -> np.ndarray:
    """``(instrument_id, seq, action, side, price, size, flags)`` rows -> a book_update batch."""
    batch = BOOK_UPDATE.empty(len(rows))
    for name, column in zip(("instrument_id", "seq", "action", "side", "price", "size", "flags"),
                            zip(*rows, strict=True), strict=True):  # fmt: skip
        batch[name] = column
    batch["ts_event"] = np.arange(len(rows)) * 400_000 + 1_000_000_000
    batch["ts_recv"] = batch["ts_event"] + 10
    return batch


def build_stream(ops: list[tuple]) -> np.ndarray:
    """Turn drawn operations into updates with per-instrument sequence numbers (gaps on 'G')."""
    seqs: dict[int, int] = {}
    rows = []

    def emit(iid, action, side, tick, size, flags=0):
        rows.append((iid, seqs.get(iid, 0), action, side, (1000 + tick) * TICK, size, flags))
        seqs[iid] = seqs.get(iid, 0) + 1

    for iid, kind, side, tick, size in ops:
        side_code = ord(side)
        if kind in "AMD":
            emit(iid, ord(kind), side_code, tick, size)
        elif kind == "R":
            emit(iid, R, 0, 0, 0)
        elif kind == "S":  # a snapshot: clear, adds, ended by F_LAST or by the next record
            emit(iid, R, 0, 0, 0, F_SNAPSHOT)
            for k in range(size):
                last = F_LAST if tick % 2 and k == size - 1 else 0
                emit(iid, A, BID if k % 2 else ASK, tick + 3 * k - 6, 1 + k, F_SNAPSHOT | last)
        elif kind == "T":
            emit(iid, T, side_code, tick, size)
        elif kind == "G":  # a gap: records lost before this add
            seqs[iid] = seqs.get(iid, 0) + 1 + size % 3
            emit(iid, A, side_code, tick, size + 1)
        elif kind == "X":  # unknown action, then unknown side
            emit(iid, ord("Q"), side_code, tick, size)
            emit(iid, A, ord("Z"), tick, size)
    return records(rows)


def build_mbo_stream(ops: list[tuple]) -> np.ndarray:
    """Drawn operations -> ``mbo`` records (order ids from a small pool, so they collide)."""
    seqs: dict[int, int] = {}
    rows = []

    def emit(iid, action, side, tick, size, oid, flags=0):
        rows.append((iid, seqs.get(iid, 0), action, side, (1000 + tick) * TICK, size, oid, flags))
        seqs[iid] = seqs.get(iid, 0) + 1

    for iid, kind, side, tick, size, oid in ops:
        if kind in "AMCTF":
            emit(iid, ord(kind), ord(side), tick, size, oid)
        elif kind == "R":
            emit(iid, R, 0, 0, 0, 0)
        elif kind == "S":
            emit(iid, R, 0, 0, 0, 0, F_SNAPSHOT)
            for k in range(size):
                last = F_LAST if tick % 2 and k == size - 1 else 0
                emit(iid, A, BID if k % 2 else ASK, tick + 3 * k - 6, 1 + k, 100 + k,
                     F_SNAPSHOT | last)  # fmt: skip
        elif kind == "G":
            seqs[iid] = seqs.get(iid, 0) + 1
            emit(iid, A, ord(side), tick, size + 1, oid)
        elif kind == "X":
            emit(iid, ord("Q"), ord(side), tick, size, oid)
            emit(iid, A, ord("Z"), tick, size, oid)
    batch = MBO.empty(len(rows))
    names = ("instrument_id", "seq", "action", "side", "price", "size", "order_id", "flags")
    for name, column in zip(names, zip(*rows, strict=True), strict=True):
        batch[name] = column
    batch["ts_event"] = np.arange(len(rows)) * 400_000 + 1_000_000_000
    batch["ts_recv"] = batch["ts_event"] + 10
    return batch


def run_kernel(kernel: BookKernel, stream: np.ndarray, cuts: list[int]):
    quotes, mbp, alerts = [], [], []
    for part in np.split(stream, sorted(set(c for c in cuts if 0 < c < len(stream)))):
        q, m, a = kernel.update(part)
        quotes.append(q.copy())
        mbp.append(m.copy())
        alerts.append(a.copy())
    return np.concatenate(quotes), np.concatenate(mbp), np.concatenate(alerts)


def assert_same_books(kernel: BookKernel, ref: RefBook, counts: bool = False) -> None:
    for iid, b in ref.books.items():
        bids, asks = kernel.levels(iid, counts=counts)
        for levels, side, best_first in ((bids, BID, True), (asks, ASK, False)):
            prices = sorted(b.sides[side], reverse=best_first)
            expected = [(p, b.sides[side][p], b.counts[side].get(p, 0)) for p in prices]
            assert [tuple(x) for x in levels.tolist()] == [
                e[: 3 if counts else 2] for e in expected
            ]
        assert kernel.is_valid(iid) == b.valid


# --------------------------------------------------------------------------- properties

OPS = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 2**32 - 1]),
        st.sampled_from("AAAAAMMMDDDDRSTGX"),
        st.sampled_from("BA"),
        st.integers(0, 14),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=250,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    ops=OPS,
    cuts=st.lists(st.integers(0, 400), max_size=8),
    mode=st.sampled_from(["change", "interval"]),
    alert_ms=st.sampled_from([0, 1]),
)
def test_book_matches_dict_reference_for_any_updates_and_batch_splits(ops, cuts, mode, alert_ms):
    stream = build_stream(ops)
    ref = RefBook(mbp10_on=mode, interval_ns=MS, alert_interval_ns=alert_ms * MS)
    kernel = BookKernel(mbp10_on=mode, interval_ns=MS, alert_interval_ns=alert_ms * MS,
                        capacity=16)  # fmt: skip
    outputs = []
    for part in np.split(stream, sorted(set(c for c in cuts if 0 < c < len(stream)))):
        for rec in as_dicts(part):
            ref.apply(rec)
        outputs.append([x.copy() for x in kernel.update(part)])
        assert_same_books(kernel, ref)  # every level of every book, after every batch
    quotes, mbp, alerts = (np.concatenate(x) for x in zip(*outputs, strict=True))
    assert quote_tuples(quotes) == ref.quotes  # the top of book after every update
    assert mbp10_tuples(mbp) == ref.mbp10
    assert alert_tuples(alerts) == ref.alerts


@SETTINGS
@given(ops=OPS, cut=st.integers(0, 400))
def test_book_snapshot_restore_continues_identically(ops, cut):
    stream = build_stream(ops)
    whole = BookKernel(capacity=16)
    expected = run_kernel(whole, stream, [cut])
    first = BookKernel(capacity=16)
    head = [x.copy() for x in first.update(stream[:cut])]
    second = BookKernel(capacity=16)
    second.restore(first.snapshot())
    tail = second.update(stream[cut:])
    for ours, theirs, schema in zip(expected, zip(head, tail, strict=True), (QUOTE, MBP10, ALERT),
                                    strict=True):  # fmt: skip
        joined = np.concatenate(theirs)
        assert joined.dtype == schema.dtype
        for name in schema.dtype.names:  # not tobytes(): padding bytes are not data
            np.testing.assert_array_equal(joined[name], ours[name], err_msg=name)


def test_deep_books_grow_past_the_initial_capacity_and_stay_sorted():
    rows = [(9, i, A, BID if i % 2 else ASK, (5000 + (i * 7919) % 997) * TICK + (i % 2), 1 + i, 0)
            for i in range(3000)]  # fmt: skip
    stream = records(rows)
    ref = RefBook(depth=False)
    for rec in as_dicts(stream):
        ref.apply(rec)
    kernel = BookKernel(capacity=16)
    quotes, _, _ = run_kernel(kernel, stream, [1000, 2000])
    assert kernel.depth_capacity >= 997
    assert quote_tuples(quotes) == ref.quotes
    assert_same_books(kernel, ref)


MBO_OPS = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),
        st.sampled_from("AAAAAMMMCCCCRSTFGX"),
        st.sampled_from("BA"),
        st.integers(0, 8),
        st.integers(0, 4),
        st.integers(0, 12),
    ),
    min_size=1,
    max_size=250,
)


@SETTINGS
@given(ops=MBO_OPS, cuts=st.lists(st.integers(0, 400), max_size=6),
       mode=st.sampled_from(["change", "interval"]))  # fmt: skip
def test_mbo_book_matches_an_order_dict_reference(ops, cuts, mode):
    stream = build_mbo_stream(ops)
    ref = RefMboBook(mbp10_on=mode, interval_ns=MS)
    kernel = MboBookKernel(mbp10_on=mode, interval_ns=MS, capacity=16)
    outputs = []
    for part in np.split(stream, sorted(set(c for c in cuts if 0 < c < len(stream)))):
        for rec in as_dicts(part):
            ref.apply(rec)
        outputs.append([x.copy() for x in kernel.update(part)])
        assert_same_books(kernel, ref, counts=True)
    quotes, mbp, alerts = (np.concatenate(x) for x in zip(*outputs, strict=True))
    assert quote_tuples(quotes) == ref.quotes
    assert mbp10_tuples(mbp) == ref.mbp10
    assert alert_tuples(alerts) == ref.alerts
    assert kernel.order_count == sum(len(b.orders) for b in ref.books.values())


@SETTINGS
@given(ops=MBO_OPS, cut=st.integers(0, 400))
def test_mbo_snapshot_restore_continues_identically(ops, cut):
    stream = build_mbo_stream(ops)
    expected = run_kernel(MboBookKernel(capacity=16), stream, [cut])
    first = MboBookKernel(capacity=16)
    head = [x.copy() for x in first.update(stream[:cut])]
    second = MboBookKernel(capacity=16)
    second.restore(first.snapshot())
    tail = second.update(stream[cut:])
    for ours, theirs in zip(expected, zip(head, tail, strict=True), strict=True):
        joined = np.concatenate(theirs)
        for name in joined.dtype.names:
            np.testing.assert_array_equal(joined[name], ours[name], err_msg=name)


def test_mbo_order_pool_grows_and_orders_aggregate_to_levels():
    n = 5000
    batch = MBO.empty(n + 2)
    batch["instrument_id"] = 4
    batch["seq"] = np.arange(n + 2)
    batch["order_id"][:n] = np.arange(n) + 10**12
    batch["action"][:n] = A
    batch["side"][:n] = np.where(np.arange(n) % 2, BID, ASK)
    batch["price"][:n] = np.where(np.arange(n) % 2, 100 - np.arange(n) % 7, 101 + np.arange(n) % 5)
    batch["size"][:n] = 2
    batch[n] = (0, 0, n, 4, 10**12 + 1, 0, 1, C, BID, 0)  # cancel 1 of order 1 (a bid at 99)
    batch[n + 1] = (0, 0, n + 1, 4, 10**12 + 3, 0, 0, C, BID, 0)  # all of order 3 (at 97)
    kernel = MboBookKernel(capacity=16)
    kernel.update(batch)
    ref = RefMboBook()
    for rec in as_dicts(batch):
        ref.apply(rec)
    assert kernel.order_count == n - 1
    assert kernel.order(4, 10**12 + 1) == ("B", 99, 1)
    assert kernel.order(4, 10**12 + 3) is None
    assert_same_books(kernel, ref, counts=True)
    bids, asks = kernel.levels(4, counts=True)
    assert (len(bids), len(asks)) == (7, 5) and bids[:, 2].sum() + asks[:, 2].sum() == n - 1
    assert bids[:, 1].sum() + asks[:, 1].sum() == 2 * n - 3


def test_kernels_compile_without_numba_refcounting():
    """The book kernels run without numba's runtime: with it, refcount calls per array per record
    halve the throughput (see :mod:`hftagg.builtins.core.book.kernels`). Only if this numba has the switch."""
    from numba.core.options import DefaultOptions

    from hftagg.builtins.core.book.kernels import _NJIT

    if hasattr(DefaultOptions, "_nrt"):
        assert _NJIT["_nrt"] is False


# --------------------------------------------------------------------------- large randomized run


def random_stream(n: int, instruments: int = 16, seed: int = 5) -> np.ndarray:
    """Updates around a drifting mid per instrument, some crossing; deletes often unknown."""
    rng = np.random.default_rng(seed)
    batch = BOOK_UPDATE.empty(n)
    iid = rng.integers(0, instruments, n).astype(np.uint32) * 3 + 11
    mid = np.round(6 * np.sin(np.arange(n) / 5000.0)).astype(np.int64)  # a bounded drift
    side = np.where(rng.random(n) < 0.5, BID, ASK)
    u = rng.random(n)
    action = np.select([u < 0.35, u < 0.7, u < 0.9999], [A, M, D], R).astype(np.uint8)
    offset = np.minimum(rng.geometric(0.3, n) - 1, 40)
    offset[rng.random(n) < 0.002] = -1  # through the other side: crossed/locked books
    deletes = action == D  # spread over the book, so levels left behind by the drift go too
    offset[deletes] = rng.integers(-12, 30, deletes.sum())
    ticks = 100_000 + iid.astype(np.int64) * 100 + mid + np.where(side == BID, -1 - offset, offset)
    batch["instrument_id"], batch["side"], batch["action"] = iid, side, action
    batch["price"] = ticks * TICK
    batch["size"] = rng.integers(1, 500, n)
    batch["ts_event"] = np.arange(n) * 100
    batch["ts_recv"] = batch["ts_event"] + 50
    for i in np.unique(iid):
        mask = iid == i
        batch["seq"][mask] = np.arange(mask.sum()) + (np.cumsum(rng.random(mask.sum()) < 1e-5))
    return batch


def test_million_updates_match_the_reference_in_every_quote_and_the_final_books():
    stream = random_stream(1_000_000)
    ref = RefBook(mbp10_on="off", alert_interval_ns=0, depth=False)
    apply = ref.apply
    for rec in as_dicts(stream):
        apply(rec)
    kernel = BookKernel(mbp10_on="off", alert_interval_ns=0)
    rng = np.random.default_rng(0)
    quotes, _, alerts = run_kernel(kernel, stream, list(rng.integers(1, len(stream), 300)))
    assert len(quotes) > 50_000  # the touch changes often enough to test every quote
    assert quote_tuples(quotes) == ref.quotes
    assert alert_tuples(alerts) == ref.alerts
    assert {ALERT_GAP, ALERT_CROSSED, ALERT_UNKNOWN_LEVEL} <= set(alerts["code"].tolist())
    assert_same_books(kernel, ref)


# --------------------------------------------------------------------------- integrity scenarios


def test_gap_invalidates_the_book_alerts_and_publishes_nothing_until_a_snapshot():
    rows = [
        (5, 0, A, BID, 100 * TICK, 10, 0),
        (5, 1, A, ASK, 101 * TICK, 20, 0),
        (5, 3, A, BID, 100 * TICK, 11, 0),  # seq 2 lost
        (5, 4, M, ASK, 101 * TICK, 25, 0),
        (6, 0, A, BID, 50 * TICK, 1, 0),  # another instrument carries on
        (5, 9, R, 0, 0, 0, F_SNAPSHOT),
        (5, 10, A, BID, 99 * TICK, 5, F_SNAPSHOT),
        (5, 11, A, ASK, 102 * TICK, 6, F_SNAPSHOT | F_LAST),
        (5, 12, M, BID, 99 * TICK, 7, 0),
    ]
    kernel = BookKernel()
    quotes, mbp, alerts = kernel.update(records(rows))
    five = quotes[quotes["instrument_id"] == 5]
    assert five[["bid_px", "ask_px", "bid_sz", "ask_sz"]].tolist() == [
        (100 * TICK, UNDEF_PRICE, 10, 0),
        (100 * TICK, 101 * TICK, 10, 20),
        (99 * TICK, 102 * TICK, 5, 6),  # only after the snapshot's last record
        (99 * TICK, 102 * TICK, 7, 6),
    ]
    assert five["seq"].tolist() == [0, 1, 2, 3]
    assert five["ts_event"].tolist() == records(rows)["ts_event"][[0, 1, 7, 8]].tolist()
    assert alerts[["instrument_id", "code", "value", "severity"]].tolist() == [
        (5, ALERT_GAP, 1.0, 2)
    ]
    assert alerts["text"][0].startswith(b"book: sequence gap")
    assert mbp[mbp["instrument_id"] == 5]["ts_event"].tolist() == five["ts_event"].tolist()
    assert kernel.is_valid(5) and kernel.counters(5)["dropped_invalid"] == 2


def test_gap_then_plain_clear_rebuilds_and_publishes_the_empty_book():
    rows = [(5, 0, A, BID, 100 * TICK, 10, 0), (5, 2, A, BID, 101 * TICK, 1, 0),
            (5, 3, R, 0, 0, 0, 0), (5, 4, A, ASK, 103 * TICK, 2, 0)]  # fmt: skip
    quotes, _, _ = BookKernel().update(records(rows))
    assert quotes[["bid_px", "ask_px", "bid_sz", "ask_sz"]].tolist() == [
        (100 * TICK, UNDEF_PRICE, 10, 0),
        (UNDEF_PRICE, UNDEF_PRICE, 0, 0),
        (UNDEF_PRICE, 103 * TICK, 0, 2),
    ]


def test_crossed_and_locked_books_alert_once_on_entering_and_still_publish():
    rows = [
        (1, 0, A, BID, 100 * TICK, 1, 0),
        (1, 1, A, ASK, 100 * TICK, 1, 0),  # locked
        (1, 2, A, ASK, 99 * TICK, 1, 0),  # crossed: same episode, no second alert
        (1, 3, D, ASK, 99 * TICK, 0, 0),
        (1, 4, D, ASK, 100 * TICK, 0, 0),  # uncrossed
        (1, 5, A, ASK, 98 * TICK, 1, 0),  # crossed again
    ]
    quotes, _, alerts = BookKernel().update(records(rows))
    assert len(quotes) == 6
    assert alerts["code"].tolist() == [ALERT_LOCKED, ALERT_CROSSED]
    assert alerts["value"].tolist() == pytest.approx([0.0, -0.02])


def test_unknown_deletes_and_bad_records_are_counted_and_alerted_never_fatal():
    rows = [(3, 0, D, BID, 100 * TICK, 0, 0), (3, 1, D, ASK, 7, 0, 0), (3, 2, ord("Q"), BID, 1, 1, 0),
            (3, 3, A, ord("Z"), 1, 1, 0), (3, 4, A, BID, 100 * TICK, 5, 0)]  # fmt: skip
    kernel = BookKernel(alert_interval_ns=10**12)  # one unknown-level alert per 1000 s
    quotes, _, alerts = kernel.update(records(rows))
    assert alerts["code"].tolist() == [ALERT_UNKNOWN_LEVEL, ALERT_BAD_RECORD, ALERT_BAD_RECORD]
    assert kernel.counters(3) == {"updates": 5, "gaps": 0, "unknown_deletes": 2,
                                  "dropped_invalid": 0, "bad_records": 2, "crossed": 0}  # fmt: skip
    assert quote_tuples(quotes)[-1][4:] == (100 * TICK, UNDEF_PRICE, 5, 0)


# --------------------------------------------------------------------------- through the runtime


def test_book_stage_on_the_simulator_stream_through_the_runtime():
    book = simulate(batch_records=1000, events=40_000)["book"]
    batches = np.array_split(book, 37)
    quotes: list[np.ndarray] = []
    stage = Book(mbp10_on="interval", interval_ms=1)
    summary = run_pipeline(
        [TestingSource(batches, schema="book_update", topic="md.book"), stage,
         TestingSink(quotes, topic="md.bbo")],
        max_batch=512, ring_capacity=4096, wire=False,
    )  # fmt: skip
    result = np.concatenate(quotes)
    assert result.dtype == QUOTE.dtype and len(result) > 1000
    assert summary["stages"]["book"]["records"] == len(book)
    for iid in np.unique(book["instrument_id"]):
        seq = result["seq"][result["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    reference = BookKernel(mbp10_on="off")
    expected, _, _ = reference.update(book)
    np.testing.assert_array_equal(result, expected)
    assert reference.counters()["gaps"] == 0
    assert sorted(stage.snapshot()["instrument_id"].tolist()) == [1, 2, 3, 4, 5]


def test_mbo_book_stage_through_the_runtime_matches_the_kernel():
    rng = np.random.default_rng(3)
    ops = [(int(rng.integers(1, 4)), str(rng.choice(list("AAAAMMCCCT"))), str(rng.choice(["B", "A"])),
            int(rng.integers(0, 9)), int(rng.integers(0, 5)), int(rng.integers(0, 300)))
           for _ in range(20_000)]  # fmt: skip
    stream = build_mbo_stream(ops)
    quotes: list[np.ndarray] = []
    stage = MboBook(stage_id="l3")
    run_pipeline(
        [TestingSource(np.array_split(stream, 53), schema="mbo", topic="md.mbo"), stage,
         TestingSink(quotes, topic="md.bbo")],
        max_batch=256, ring_capacity=4096, wire=False,
    )  # fmt: skip
    expected, _, _ = MboBookKernel().update(stream)
    np.testing.assert_array_equal(np.concatenate(quotes), expected)
    assert len(expected) > 1000 and stage.kernel.order_count > 100


def test_book_stage_params_are_live_and_state_survives_a_rebuild():
    book = simulate(batch_records=1000, events=5_000)["book"]
    stage = Book(mbp10_on="off")
    stage.open(StageContext(max_batch=512))
    assert not len(stage.process(book[:2000])["mbp10"])
    stage.reconfigure(stage.params.model_copy(update={"mbp10_on": "change"}))
    assert len(stage.process(book[2000:2500])["mbp10"])
    rebuilt = Book(mbp10_on="change")
    rebuilt.restore(stage.snapshot())  # before open(), as a reload does it
    rebuilt.open(StageContext(max_batch=512))
    ours = rebuilt.process(book[2500:])
    theirs = stage.process(book[2500:])
    for port in ("bbo", "mbp10", "alerts"):
        np.testing.assert_array_equal(ours[port], theirs[port])
    assert Book.Params.is_live("mbp10_on") and Book.Params.is_live("interval_ms")
