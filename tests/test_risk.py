"""Pre-trade risk checks: each check, its boundary, an exact plain-Python reference, the runtime."""

from __future__ import annotations

from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hftagg.builtins.core.risk.kernels import OrderStatus, OrderType, RiskReason
from hftagg.builtins.core.risk.stages import RiskChecks
from hftagg.builtins.core.validation.kernels import UNDEF_PRICE
from hftagg.records import ALERT, FILL, ORDER, QTY_UNITS, QUOTE
from hftagg.stages import Port, SourceStage
from hftagg.testing import TestingSink, run_pipeline

R = RiskReason
PX = 1_000_000_000
Q = QTY_UNITS  # sizes in the scripts below are in units; records hold them 1e-8 fixed-point
DAY = 86_400 * PX
B, A = ord("B"), ord("A")
L, M = OrderType.LIMIT, OrderType.MARKET
OFF = {"max_order_size": 0, "max_position": 0, "max_notional": 0.0, "price_band_bps": 0.0,
       "max_daily_loss": 0.0}  # fmt: skip


# --------------------------------------------------------------------------- building records

_TS = [0]


def _stamp(batch: np.ndarray, ts) -> np.ndarray:
    if ts is None:
        ts = [_TS[0] + i for i in range(len(batch))]
    batch["ts_event"] = ts
    _TS[0] = int(batch["ts_event"][-1]) + 1 if len(batch) else _TS[0]
    batch["ts_recv"] = batch["ts_event"] + 100
    return batch


def orders(rows, ts=None) -> np.ndarray:
    """``rows`` of (order_id, instrument_id, side, order_type, price, size)."""
    batch = ORDER.empty(len(rows))
    for i, (oid, iid, side, kind, price, size) in enumerate(rows):
        batch[i]["order_id"], batch[i]["instrument_id"] = oid, iid
        batch[i]["side"], batch[i]["order_type"] = side, kind
        batch[i]["price"], batch[i]["size"] = price, size * Q
    batch["seq"] = batch["order_id"]
    return _stamp(batch, ts)


def quotes(rows, ts=None) -> np.ndarray:
    """``rows`` of (instrument_id, bid_px, ask_px)."""
    batch = QUOTE.empty(len(rows))
    for i, (iid, bid, ask) in enumerate(rows):
        batch[i]["instrument_id"], batch[i]["bid_px"], batch[i]["ask_px"] = iid, bid, ask
    batch["bid_sz"] = batch["ask_sz"] = 1
    return _stamp(batch, ts)


def fills(rows, ts=None) -> np.ndarray:
    """``rows`` of (order_id, instrument_id, side, price, size)."""
    batch = FILL.empty(len(rows))
    for i, (oid, iid, side, price, size) in enumerate(rows):
        batch[i]["order_id"], batch[i]["instrument_id"] = oid, iid
        batch[i]["side"], batch[i]["price"], batch[i]["size"] = side, price, size * Q
    return _stamp(batch, ts)


class ScriptSource(SourceStage):
    """Hands out ``(port, batch)`` steps one per call; ``before(k)`` runs before step ``k``."""

    type_name = "risk_script"
    outputs = {"orders": Port("order", "orders.new"), "quotes": Port("quote", "md.quotes"),
               "fills": Port("fill", "orders.fills")}  # fmt: skip

    def __init__(self, script, before=None) -> None:
        super().__init__(stage_id="script")
        self.script = list(script)
        self.before = before
        self.next = 0

    def next_batch(self):
        if self.next >= len(self.script):
            return None
        if self.before is not None:
            self.before(self.next)
        port, batch = self.script[self.next]
        self.next += 1
        return {port: batch}

    @property
    def exhausted(self) -> bool:
        return self.next >= len(self.script)


def run(stage: RiskChecks, script, before=None, max_batch: int = 5) -> dict[str, np.ndarray]:
    outs: dict[str, list] = {port: [] for port in stage.output_topics}
    sinks = [TestingSink(outs[port], stage_id=f"sink_{port}", topic=topic)
             for port, topic in stage.output_topics.items()]  # fmt: skip
    run_pipeline([ScriptSource(script, before), stage, *sinks], wire=False, max_batch=max_batch)
    empty = {"accepted": ORDER.empty(), "rejected": ORDER.empty(), "alerts": ALERT.empty()}
    return {port: np.concatenate(parts) if parts else empty[port] for port, parts in outs.items()}


def ids(records: np.ndarray) -> list[int]:
    return records["order_id"].tolist()


def statuses(records: np.ndarray) -> list[int]:
    return records["status"].tolist()


def book(iid: int = 1, bid: float = 99.99, ask: float = 100.01):
    return ("quotes", quotes([(iid, round(bid * PX), round(ask * PX))]))


def send(*rows):
    return ("orders", orders(rows))


# --------------------------------------------------------------------------- each check


def test_accepted_orders_pass_unchanged_but_for_their_status():
    stage = RiskChecks(**OFF)
    batch = orders([(1, 1, B, L, 100 * PX, 5), (2, 1, A, M, 0, 3)])
    out = run(stage, [book(), ("orders", batch)])
    assert (
        ids(out["accepted"]) == [1, 2] and statuses(out["accepted"]) == [OrderStatus.ACCEPTED] * 2
    )
    for name in ("ts_event", "ts_recv", "seq", "instrument_id", "price", "size", "side"):
        assert out["accepted"][name].tolist() == batch[name].tolist()
    assert len(out["rejected"]) == len(out["alerts"]) == 0
    assert stage.kernel.position(1) == 2 * Q and stage.counts["accepted"] == 2


def test_invalid_orders_are_rejected_with_their_reason_and_an_alert():
    rows = [(1, 1, ord("X"), L, 100 * PX, 1), (2, 1, B, ord("Q"), 100 * PX, 1),
            (3, 1, B, L, 100 * PX, 0), (4, 1, B, L, 0, 1), (5, 1, A, L, UNDEF_PRICE, 1),
            (6, 1, B, L, 1, 1)]  # fmt: skip
    stage = RiskChecks(**OFF)
    out = run(stage, [book(), send(*rows)])
    assert ids(out["rejected"]) == [1, 2, 3, 4, 5]
    assert statuses(out["rejected"]) == [R.INVALID_ORDER] * 5
    assert ids(out["accepted"]) == [6]  # the smallest positive price is valid
    alerts = out["alerts"]
    assert alerts["code"].tolist() == [R.INVALID_ORDER] * 5
    assert alerts["seq"].tolist() == [0, 1, 2, 3, 4] and set(alerts["instrument_id"]) == {1}
    assert alerts["ts_event"].tolist() == out["rejected"]["ts_event"].tolist()
    assert alerts["text"][0] == b"risk: invalid side, type, size or price"
    assert stage.counts["invalid_order"] == 5


def test_max_order_size_rejects_above_and_passes_at_the_limit():
    stage = RiskChecks(**{**OFF, "max_order_size": 100})
    out = run(stage, [book(), send((1, 1, B, L, 100 * PX, 100), (2, 1, B, L, 100 * PX, 101))])
    assert ids(out["accepted"]) == [1]
    assert statuses(out["rejected"]) == [R.MAX_ORDER_SIZE]
    assert out["alerts"]["value"].tolist() == [101.0]


def test_no_quote_yet_rejects_with_its_own_reason():
    script = [send((1, 1, B, L, 100 * PX, 1), (2, 1, B, M, 0, 1)),
              ("quotes", quotes([(1, 99 * PX, UNDEF_PRICE)])),  # one-sided: no mid
              send((3, 1, B, L, 100 * PX, 1)), book(),
              send((4, 1, B, L, 100 * PX, 1), (5, 2, B, L, 100 * PX, 1))]  # fmt: skip
    stage = RiskChecks(**{**OFF, "price_band_bps": 100.0})
    out = run(stage, script)
    assert ids(out["rejected"]) == [1, 2, 3, 5]  # instrument 2 has no quote
    assert set(statuses(out["rejected"])) == {R.NO_MARKET_DATA}
    assert ids(out["accepted"]) == [4]


def test_limit_orders_need_no_quote_when_the_band_is_off_but_market_orders_do():
    out = run(RiskChecks(**OFF), [send((1, 1, B, L, 100 * PX, 1), (2, 1, B, M, 0, 1))])
    assert ids(out["accepted"]) == [1]
    assert statuses(out["rejected"]) == [R.NO_MARKET_DATA]


def test_price_band_rejects_beyond_and_passes_exactly_at_the_band():
    rows = [(1, 1, B, L, 101 * PX, 1), (2, 1, B, L, 101 * PX + 1, 1), (3, 1, A, L, 99 * PX, 1),
            (4, 1, A, L, 99 * PX - 1, 1), (5, 1, B, M, 0, 1)]  # fmt: skip
    stage = RiskChecks(**{**OFF, "price_band_bps": 100.0})
    out = run(stage, [book(), send(*rows)])  # mid 100.00
    assert ids(out["accepted"]) == [1, 3, 5]  # market orders have no band
    assert ids(out["rejected"]) == [2, 4]
    assert set(statuses(out["rejected"])) == {R.PRICE_BAND}
    assert out["alerts"]["value"].tolist() == pytest.approx([100.0000001, 100.0000001])


def test_max_notional_rejects_above_and_passes_at_the_limit():
    rows = [(1, 1, B, L, 100 * PX, 10), (2, 1, B, L, 100 * PX, 11), (3, 1, B, M, 0, 11)]
    stage = RiskChecks(**{**OFF, "max_notional": 1000.0})
    out = run(stage, [book(), send(*rows)])
    assert ids(out["accepted"]) == [1]
    assert statuses(out["rejected"]) == [R.MAX_NOTIONAL] * 2  # market orders at the mid
    assert out["alerts"]["value"].tolist() == [1100.0, 1100.0]


def test_max_position_counts_accepted_orders_as_filled():
    rows = [
        (1, 1, B, L, 100 * PX, 60),
        (2, 1, B, L, 100 * PX, 40),
        (3, 1, B, L, 100 * PX, 1),
        (4, 1, A, L, 100 * PX, 200),
        (5, 1, A, L, 100 * PX, 1),
        (6, 2, A, L, 100 * PX, 100),
    ]
    stage = RiskChecks(**{**OFF, "max_position": 100})
    out = run(stage, [book(), book(iid=2), send(*rows)])
    assert ids(out["accepted"]) == [1, 2, 4, 6]
    assert ids(out["rejected"]) == [3, 5] and set(statuses(out["rejected"])) == {R.MAX_POSITION}
    assert out["alerts"]["value"].tolist() == [101.0, -101.0]
    assert stage.kernel.position(1) == -100 * Q and stage.kernel.position(2) == -100 * Q


def test_with_fills_as_position_source_only_fills_move_the_position():
    stage = RiskChecks(**{**OFF, "max_position": 100}, position_source="fills")
    assert stage.input_topics["fills"] == "orders.fills"
    script = [book(), send((1, 1, B, L, 100 * PX, 100), (2, 1, B, L, 100 * PX, 100)),
              ("fills", fills([(1, 1, B, 100 * PX, 100)])),
              send((3, 1, B, L, 100 * PX, 1), (4, 1, A, L, 100 * PX, 50)),
              ("fills", fills([(9, 1, ord("X"), 100 * PX, 5), (9, 1, A, 100 * PX, 0)]))]  # fmt: skip
    out = run(stage, script)
    assert ids(out["accepted"]) == [1, 2, 4]
    assert ids(out["rejected"]) == [3]
    assert out["alerts"]["code"].tolist() == [R.MAX_POSITION, R.BAD_FILL, R.BAD_FILL]
    assert stage.kernel.position(1) == 100 * Q
    assert stage.counts["fills"] == 1 and stage.counts["bad_fill"] == 2


def test_orders_source_has_no_fills_port():
    assert "fills" not in RiskChecks().input_topics
    assert set(RiskChecks().output_topics.values()) == {
        "orders.accepted", "orders.rejected", "alerts.risk_checks"}  # fmt: skip


def daily_loss_script(day_two: int):
    return [
        book(bid=99.99, ask=100.01),
        send((1, 1, B, L, 100 * PX, 10)),  # long 10 at 100
        ("quotes", quotes([(1, 89_990_000_000, 90_010_000_000)])),  # mid 90: P&L -100
        send((2, 1, B, L, 90 * PX, 1), (3, 1, A, L, 90 * PX, 5), (4, 1, A, L, 90 * PX, 10)),
        ("orders", orders([(5, 1, B, L, 90 * PX, 1)], ts=[day_two])),
    ]


@pytest.mark.parametrize(("limit", "rejected"), [(99.99, [2, 4]), (100.0, [])])
def test_daily_loss_stops_risk_increasing_orders_until_the_next_day(limit, rejected):
    _TS[0] = 1000
    stage = RiskChecks(**{**OFF, "max_daily_loss": limit})
    out = run(stage, daily_loss_script(day_two=DAY + 5))
    # 2 adds to the long, 3 reduces it, 4 (sell 10 from long 5) flips to short 5: same size
    assert ids(out["rejected"]) == rejected
    assert set(statuses(out["rejected"])) <= {R.DAILY_LOSS}
    assert ids(out["accepted"]) == sorted({1, 2, 3, 4, 5} - set(rejected))
    if rejected:
        assert out["alerts"]["value"].tolist() == pytest.approx([-100.0, -100.0])
    assert stage.kernel.daily_pnl == pytest.approx(0.0)  # day two starts from here


@pytest.mark.parametrize(("offset", "rejected"), [(0, [2, 4, 5]), (-3600, [2, 4])])
def test_trading_day_offset_moves_the_day_boundary(offset, rejected):
    _TS[0] = 1000
    stage = RiskChecks(**{**OFF, "max_daily_loss": 50.0, "trading_day_offset_secs": offset})
    out = run(stage, daily_loss_script(day_two=DAY - 1800 * PX))  # 23:30 UTC of day one
    assert ids(out["rejected"]) == rejected


# --------------------------------------------------------------------------- reference


class RefRisk:
    """The checks of ``hftagg.builtins.core.risk.kernels`` as a plain loop, in exact fractions."""

    def __init__(self, **params) -> None:
        self.p = {**RiskChecks.Params().model_dump(), **params}
        self.pos: dict[int, int] = defaultdict(int)
        self.quote: dict[int, tuple[int, int]] = {}
        self.mark: dict[int, Fraction] = {}
        self.cash = Fraction(0)
        self.day = None
        self.day_start = Fraction(0)
        self.accepted: list[int] = []
        self.rejected: list[tuple[int, int]] = []
        self.alerts: list[tuple] = []
        self.aseq: Counter = Counter()
        self.counts: Counter = Counter()

    def pnl(self) -> Fraction:
        return self.cash + sum(self.pos[i] * self.mark.get(i, 0) for i in self.pos)

    def roll(self, ts: int) -> None:
        day = (ts - self.p["trading_day_offset_secs"] * PX) // DAY
        if self.day is None or day > self.day:
            self.day, self.day_start = day, self.pnl()

    def execute(self, iid: int, dq: int, px: Fraction) -> None:
        self.cash -= dq * px
        self.mark.setdefault(iid, px)
        self.pos[iid] += dq

    def on_quote(self, rec) -> None:
        self.roll(rec["ts_event"])
        self.counts["quotes"] += 1
        bid, ask = rec["bid_px"], rec["ask_px"]
        if UNDEF_PRICE in (bid, ask) or bid <= 0 or ask <= 0:
            return
        self.quote[rec["instrument_id"]] = (bid, ask)
        self.mark[rec["instrument_id"]] = Fraction(bid + ask, 2 * PX)

    def on_fill(self, rec) -> None:
        self.roll(rec["ts_event"])
        iid = rec["instrument_id"]
        if rec["side"] not in (B, A) or rec["size"] <= 0:
            self.counts["bad_fill"] += 1
            self.alert(rec, R.BAD_FILL)
            return
        self.counts["fills"] += 1
        sign = 1 if rec["side"] == B else -1
        self.execute(iid, sign * Fraction(int(rec["size"]), Q), Fraction(rec["price"], PX))

    def alert(self, rec, code) -> None:
        iid = rec["instrument_id"]
        self.alerts.append((rec["ts_event"], iid, self.aseq[iid], int(code)))
        self.aseq[iid] += 1

    def check(self, rec):
        """(reason or None, signed size, execution price)."""
        p, iid = self.p, rec["instrument_id"]
        side, kind, price = rec["side"], rec["order_type"], rec["price"]
        size = Fraction(int(rec["size"]), Q)
        if side not in (B, A) or kind not in (L, M) or size <= 0:
            return R.INVALID_ORDER, 0, 0
        if kind == L and (price == UNDEF_PRICE or price <= 0):
            return R.INVALID_ORDER, 0, 0
        if p["max_order_size"] and size > p["max_order_size"]:
            return R.MAX_ORDER_SIZE, 0, 0
        quote = self.quote.get(iid)
        if quote is None and (kind == M or p["price_band_bps"]):
            return R.NO_MARKET_DATA, 0, 0
        px = Fraction(price, PX) if kind == L else Fraction(sum(quote), 2 * PX)
        if kind == L and p["price_band_bps"]:
            mid = Fraction(sum(quote), 2)
            if abs(price - mid) / mid * 10_000 > Fraction(p["price_band_bps"]):
                return R.PRICE_BAND, 0, 0
        if p["max_notional"] and px * size > Fraction(p["max_notional"]):
            return R.MAX_NOTIONAL, 0, 0
        dq = size if side == B else -size
        after = self.pos[iid] + dq
        if p["max_position"] and abs(after) > p["max_position"]:
            return R.MAX_POSITION, 0, 0
        losing = self.pnl() - self.day_start < -Fraction(p["max_daily_loss"])
        if p["max_daily_loss"] and losing and abs(after) >= abs(self.pos[iid]):
            return R.DAILY_LOSS, 0, 0
        return None, dq, px

    def on_order(self, rec) -> None:
        self.roll(rec["ts_event"])
        code, dq, px = self.check(rec)
        if code is not None:
            self.rejected.append((rec["order_id"], int(code)))
            self.counts[code.name.lower()] += 1
            self.alert(rec, code)
            return
        self.accepted.append(rec["order_id"])
        self.counts["accepted"] += 1
        if self.p["position_source"] == "orders":
            self.execute(rec["instrument_id"], dq, px)

    def apply(self, port: str, batch: np.ndarray) -> None:
        if port == "fills" and self.p["position_source"] == "orders":
            return  # the stage has no fills port then
        handler = {"orders": self.on_order, "quotes": self.on_quote, "fills": self.on_fill}[port]
        for rec in batch:
            handler({name: rec[name].item() for name in batch.dtype.names})


TICK = 10_000_000  # 0.01
STEP = st.one_of(
    ORDER_STEP := st.tuples(st.just("orders"), st.sampled_from([1, 2, 7]), st.sampled_from([B, A]),
                            st.just(L), st.integers(9_800, 10_200), st.integers(1, 60)),
    ORDER_STEP,
    st.tuples(st.just("quotes"), st.sampled_from([1, 2, 7]), st.integers(9_900, 10_100),
              st.sampled_from([1, 1, 2, 5, -1])),  # mid in ticks, spread in ticks (-1: one-sided)
    st.tuples(st.just("orders"), st.sampled_from([1, 2, 7]), st.sampled_from([B, B, A, A, 0]),
              st.sampled_from([L, L, L, M]), st.integers(9_600, 10_400), st.integers(0, 60)),
    st.tuples(st.just("fills"), st.sampled_from([1, 2, 7]), st.sampled_from([B, A, 0]),
              st.integers(9_500, 10_500), st.integers(0, 40)),
)  # fmt: skip
LIMITS = st.fixed_dictionaries({
    "max_order_size": st.sampled_from([0, 50]),
    "max_position": st.sampled_from([0, 75, 120]),
    "max_notional": st.sampled_from([0.0, 3333.3317]),
    "price_band_bps": st.sampled_from([0.0, 37.5, 250.0]),
    "max_daily_loss": st.sampled_from([0.0, 0.5003, 7.7771, 40.0033]),
    "trading_day_offset_secs": st.sampled_from([0, 7200]),
})  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build_script(steps, gaps, cuts) -> list[tuple[str, np.ndarray]]:
    """Steps grouped into batches of one port, split at ``cuts``; times advance by ``gaps``."""
    ts, oid, rows = 0, 0, []
    opening = [("quotes", iid, 10_000, 2) for iid in (1, 2)]  # instrument 7 starts unquoted
    for k, step in enumerate(opening + steps):
        ts += gaps[k % len(gaps)] if gaps else 1
        port, iid, *rest = step
        if port == "quotes":
            mid, spread = rest
            bid = (mid * 2 - max(spread, 0)) * TICK // 2
            ask = UNDEF_PRICE if spread < 0 else bid + spread * TICK
            rows.append((port, ts, quotes([(iid, bid, ask)], ts=[ts])))
        elif port == "orders":
            oid += 1
            side, kind, price, size = rest
            rows.append((port, ts, orders([(oid, iid, side, kind, price * TICK, size)], ts=[ts])))
        else:
            side, price, size = rest
            rows.append((port, ts, fills([(0, iid, side, price * TICK, size)], ts=[ts])))
    script = []
    for k, (port, _, batch) in enumerate(rows):
        if script and script[-1][0] == port and k not in cuts:
            script[-1] = (port, np.concatenate([script[-1][1], batch]))
        else:
            script.append((port, batch))
    return script


def assert_matches(out, ref: RefRisk, stage: RiskChecks) -> None:
    assert ids(out["accepted"]) == ref.accepted
    assert set(statuses(out["accepted"])) <= {OrderStatus.ACCEPTED}
    assert list(zip(ids(out["rejected"]), statuses(out["rejected"]), strict=True)) == ref.rejected
    alerts = out["alerts"]
    got = list(zip(alerts["ts_event"].tolist(), alerts["instrument_id"].tolist(),
                   alerts["seq"].tolist(), alerts["code"].tolist(), strict=True))  # fmt: skip
    assert got == ref.alerts
    counts = stage.counts
    for name, n in ref.counts.items():
        assert counts[name] == n, name


SCRIPT = {
    "steps": st.lists(STEP, min_size=10, max_size=120),
    "gaps": st.lists(st.sampled_from([1, 10**9, 3600 * PX, 6 * 3600 * PX]), max_size=5),
    "cuts": st.sets(st.integers(0, 120)),
}


@SETTINGS
@given(**SCRIPT, limits=LIMITS, source=st.sampled_from(["orders", "fills"]))
def test_stage_matches_the_exact_reference_for_any_script(steps, gaps, cuts, limits, source):
    script = build_script(steps, gaps, cuts)
    stage = RiskChecks(**limits, position_source=source)
    out = run(stage, script)
    ref = RefRisk(**limits, position_source=source)
    for port, batch in script:
        ref.apply(port, batch)
    assert_matches(out, ref, stage)
    assert stage.kernel.daily_pnl == pytest.approx(float(ref.pnl() - ref.day_start), abs=1e-6)


@SETTINGS
@given(**SCRIPT, before=LIMITS, after=LIMITS, change=st.integers(0, 200))
def test_live_reconfigure_takes_effect_from_the_next_batch(steps, gaps, cuts, before, after,
                                                           change):  # fmt: skip
    script = build_script(steps, gaps, cuts)
    at = change % len(script)
    stage = RiskChecks(**before)

    def reconfigure(k: int) -> None:
        if k == at:
            stage.reconfigure(RiskChecks.Params(**after))

    out = run(stage, script, before=reconfigure)
    ref = RefRisk(**before)
    for k, (port, batch) in enumerate(script):
        if k == at:
            ref.p.update(after)
        ref.apply(port, batch)
    assert_matches(out, ref, stage)


@SETTINGS
@given(**SCRIPT, limits=LIMITS, cut=st.integers(0, 200))
def test_snapshot_restore_continues_identically(steps, gaps, cuts, limits, cut):
    script = build_script(steps, gaps, cuts)
    cut = cut % (len(script) + 1)
    straight = RiskChecks(**limits, position_source="fills")
    whole = run(straight, script)
    first = RiskChecks(**limits, position_source="fills")
    head = run(first, script[:cut])
    second = RiskChecks(**limits, position_source="fills")
    second.restore(first.snapshot())
    tail = run(second, script[cut:])
    for port, records in whole.items():
        joined = np.concatenate([head[port], tail[port]])
        for name in records.dtype.names:
            np.testing.assert_array_equal(joined[name], records[name], err_msg=port + name)
    assert second.counts == straight.counts
    assert second.kernel.pnl == straight.kernel.pnl


# --------------------------------------------------------------------------- stage surface


def test_many_instruments_and_large_batches_grow_the_state_and_the_buffers():
    n = 3000
    script = [("quotes", quotes([(i, 99 * PX, 101 * PX) for i in range(n)])),
              ("orders", orders([(i, i, B, L, 100 * PX, 1 + i % 2) for i in range(n)])),
              ("fills", fills([(i, i, B, 100 * PX, 1) for i in range(n)]))]  # fmt: skip
    stage = RiskChecks(position_source="fills", max_order_size=1)
    out = run(stage, script, max_batch=4096)
    assert len(out["accepted"]) == len(out["rejected"]) == len(out["alerts"]) == n // 2
    assert stage.kernel.position(n - 1) == Q and stage.counts["fills"] == n


@pytest.mark.parametrize(("name", "value"), [("max_order_size", -1), ("price_band_bps", -2.0),
                                             ("trading_day_offset_secs", 86_400),
                                             ("position_source", "guess"), ("max_loss", 1.0)])  # fmt: skip
def test_bad_params_are_rejected_naming_the_parameter(name, value):
    with pytest.raises(ValidationError, match=name):
        RiskChecks.Params(**{name: value})


def test_limits_are_live_the_position_source_is_not_and_the_stage_is_a_builtin():
    from hftagg.testing import _host

    params = RiskChecks.Params
    assert not params.is_live("position_source")
    assert all(params.is_live(n) for n in params.model_fields if n != "position_source")
    assert _host().stage_types["risk_checks"] is RiskChecks
