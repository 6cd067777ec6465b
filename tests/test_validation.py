"""Market-data validation stages: each rule, its boundary, a plain-Python reference, the runtime."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hftagg.builtins.core.validation.kernels import UNDEF_PRICE, ValidationReason
from hftagg.builtins.core.validation.stages import ValidateQuotes, ValidateTrades
from hftagg.records import ALERT, DEAD_LETTER, QUOTE, TRADE
from hftagg.testing import TestingSink, TestingSource, run_pipeline

R = ValidationReason
MS = 1_000_000
PX = 1_000_000_000  # 1.0 in fixed point
# every rule on, no throttling, no staleness unless a test asks
PLAIN = {"alert_interval_ms": 0, "stale_after_ms": 0}


# --------------------------------------------------------------------------- building records


def trades(rows) -> np.ndarray:
    """``rows`` of (instrument_id, ts_event ms, price, size); seq = index, ts_recv = ts + 1 µs."""
    batch = TRADE.empty(len(rows))
    for i, (iid, ts_ms, price, size) in enumerate(rows):
        batch[i]["instrument_id"], batch[i]["price"], batch[i]["size"] = iid, price, size
        batch[i]["ts_event"] = round(ts_ms * MS)
    batch["ts_recv"] = batch["ts_event"] + 1000
    batch["seq"] = np.arange(len(rows))
    return batch


def quotes(rows) -> np.ndarray:
    """``rows`` of (instrument_id, ts_event ms, bid_px, ask_px, bid_sz, ask_sz)."""
    batch = QUOTE.empty(len(rows))
    for i, (iid, ts_ms, bid, ask, bsz, asz) in enumerate(rows):
        batch[i]["instrument_id"], batch[i]["ts_event"] = iid, round(ts_ms * MS)
        batch[i]["bid_px"], batch[i]["ask_px"] = bid, ask
        batch[i]["bid_sz"], batch[i]["ask_sz"] = bsz, asz
    batch["ts_recv"] = batch["ts_event"] + 1000
    batch["seq"] = np.arange(len(rows))
    return batch


class ScriptedSource(TestingSource):
    """A testing source that calls ``before(k)`` just before it hands out batch ``k``."""

    def __init__(self, batches, before=None, **kwargs) -> None:
        super().__init__(batches, **kwargs)
        self.before = before

    def next_batch(self):
        if self.before is not None and self._next < len(self.batches):
            self.before(self._next)
        return super().next_batch()


def run(stage, batches, before=None, max_batch: int = 4096) -> dict[str, np.ndarray]:
    """``batches`` through the real runtime; every output port's records, concatenated."""
    outs: dict[str, list] = {port: [] for port in stage.output_topics}
    sinks = [TestingSink(outs[port], stage_id=f"sink_{port}", topic=topic)
             for port, topic in stage.output_topics.items()]  # fmt: skip
    schema = "quote" if isinstance(stage, ValidateQuotes) else "trade"
    source = ScriptedSource(batches, before, schema=schema, topic=stage.input_topics["input"])
    run_pipeline([source, stage, *sinks], wire=False, max_batch=max_batch)
    empty = {"output": np.zeros(0, batches[0].dtype), "dead_letters": DEAD_LETTER.empty(),
             "alerts": ALERT.empty()}  # fmt: skip
    return {port: np.concatenate(parts) if parts else empty[port] for port, parts in outs.items()}


def codes(records: np.ndarray, field: str = "code") -> list[int]:
    return [int(c) for c in records[field]]


# --------------------------------------------------------------------------- prices and sizes


def test_zero_and_negative_prices_go_to_dead_letters_and_good_trades_flow_on():
    batch = trades([(1, 0, 100 * PX, 5), (1, 1, 0, 5), (2, 2, -3 * PX, 1), (1, 3, 101 * PX, 2),
                    (2, 4, 7 * PX, 1)])  # fmt: skip
    stage = ValidateTrades(**PLAIN)
    out = run(stage, [batch])
    assert out["output"].tolist() == batch[[0, 3, 4]].tolist()  # unchanged, in order
    dead = out["dead_letters"]
    assert codes(dead, "reason") == [R.NON_POSITIVE_PRICE] * 2
    assert dead["seq"].tolist() == [1, 2] and dead["instrument_id"].tolist() == [1, 2]
    assert dead["ts_event"].tolist() == [1 * MS, 2 * MS]
    assert dead["ts_recv"].tolist() == batch["ts_recv"][[1, 2]].tolist()
    assert dead["raw_offset"].tolist() == [1, 2] and set(dead["raw_length"]) == {TRADE.itemsize}
    assert set(dead["source_id"]) == {TRADE.schema_id}
    assert dead["detail"][0] == b"price is zero or negative"
    alerts = out["alerts"]
    assert codes(alerts) == [R.NON_POSITIVE_PRICE] * 2
    assert alerts["value"].tolist() == [0.0, -3.0] and set(alerts["severity"]) == {2}
    assert stage.counts["passed"] == 3 and stage.counts["non_positive_price"] == 2


def test_smallest_positive_price_and_size_pass():
    out = run(ValidateTrades(**PLAIN), [trades([(1, 0, 1, 1), (1, 1, 1, 1)])])
    assert len(out["output"]) == 2 and len(out["dead_letters"]) == 0


def test_undefined_price_and_zero_size_are_rejected_with_their_reasons():
    batch = trades([(1, 0, UNDEF_PRICE, 1), (1, 1, 5 * PX, 0), (1, 2, 5 * PX, 1)])
    stage = ValidateTrades(**PLAIN)
    out = run(stage, [batch])
    assert codes(out["dead_letters"], "reason") == [R.UNDEFINED_PRICE, R.ZERO_SIZE]
    assert out["output"]["seq"].tolist() == [2]
    assert stage.counts["undefined_price"] == stage.counts["zero_size"] == 1


def test_price_and_size_checks_can_be_turned_off():
    batch = trades([(1, 0, 0, 0), (1, 1, -1, 1)])
    out = run(ValidateTrades(check_prices=False, check_sizes=False, **PLAIN), [batch])
    assert len(out["output"]) == 2


# --------------------------------------------------------------------------- order


def test_out_of_order_beyond_the_tolerance_is_rejected_and_at_it_passes():
    rows = [(1, 10.0, PX, 1), (1, 9.995, PX, 1), (1, 9.994999, PX, 1), (2, 0.0, PX, 1),
            (1, 11.0, PX, 1)]  # fmt: skip
    stage = ValidateTrades(out_of_order_tolerance_us=5, **PLAIN)
    out = run(stage, [trades(rows)])
    assert out["output"]["seq"].tolist() == [0, 1, 3, 4]  # back exactly 5 µs passes
    assert codes(out["dead_letters"], "reason") == [R.OUT_OF_ORDER]
    assert out["alerts"]["value"][0] == pytest.approx(5.001)  # µs back
    assert stage.counts["out_of_order"] == 1


def test_a_rejected_late_record_does_not_move_the_reference_time():
    rows = [(1, 10, PX, 1), (1, 50, -1, 1), (1, 20, PX, 1)]  # the bad one is 30 ms ahead
    out = run(ValidateTrades(**PLAIN), [trades(rows)])
    assert out["output"]["seq"].tolist() == [0, 2]


# --------------------------------------------------------------------------- price jumps


def walk(returns, start=100.0) -> list[int]:
    prices = [start]
    for r in returns:
        prices.append(prices[-1] * math.exp(r))
    return [round(p * PX) for p in prices]


def jump_rows(returns, last_return):
    prices = walk(returns)
    last = round(prices[-1] * math.exp(last_return))
    return [(1, i, p, 1) for i, p in enumerate([*prices, last])]


WARM = [0.001, -0.002, 0.0015, -0.0005]


def realised_sigma(rows, window):
    logs = [math.log(r[2] * 1e-9) for r in rows]
    returns = [b - a for a, b in zip(logs, logs[1:], strict=False)]
    return statistics.stdev(returns[-window - 1 : -1]), returns[-1]


@pytest.mark.parametrize(("factor", "rejected"), [(1.02, True), (0.98, False), (-1.02, True)])
def test_price_jump_beyond_k_sigma_is_rejected_and_just_inside_passes(factor, rejected):
    sigma = statistics.stdev(WARM)
    rows = jump_rows(WARM, factor * 3 * sigma)
    stage = ValidateTrades(jump_sigmas=3.0, jump_window=4, jump_min_bps=0.0, **PLAIN)
    out = run(stage, [trades(rows)])
    real_sigma, last = realised_sigma(rows, 4)
    assert (abs(last) > 3 * real_sigma) == rejected  # the rounding to ticks keeps the side
    assert len(out["output"]) == len(rows) - rejected
    if rejected:
        assert codes(out["dead_letters"], "reason") == [R.PRICE_JUMP]
        assert out["alerts"]["value"][0] == pytest.approx(last * 1e4)
        assert stage.counts["price_jump"] == 1


def test_no_jump_check_during_the_warm_up_window():
    rows = jump_rows(WARM[:3], 0.5)  # 3 returns held < window 4: a 50 % move passes
    out = run(ValidateTrades(jump_sigmas=3.0, jump_window=4, **PLAIN), [trades(rows)])
    assert len(out["output"]) == len(rows)


def test_jump_min_bps_floors_the_threshold():
    rows = jump_rows([0.0] * 4, 0.00009)  # sigma 0: a 0.9 bp move passes a 1 bp floor
    out = run(ValidateTrades(jump_window=4, jump_min_bps=1.0, **PLAIN), [trades(rows)])
    assert len(out["dead_letters"]) == 0
    rows = jump_rows([0.0] * 4, 0.00011)
    out = run(ValidateTrades(jump_window=4, jump_min_bps=1.0, **PLAIN), [trades(rows)])
    assert codes(out["dead_letters"], "reason") == [R.PRICE_JUMP]


def test_a_lasting_level_shift_is_accepted_after_rebase_after_jumps():
    base = walk(WARM)
    shifted = [round(base[-1] * 1.1)] * 4
    rows = [(1, i, p, 1) for i, p in enumerate(base + shifted)]
    stage = ValidateTrades(jump_window=4, jump_rebase_after=2, **PLAIN)
    out = run(stage, [trades(rows)])
    assert codes(out["dead_letters"], "reason") == [R.PRICE_JUMP] * 2
    assert out["output"]["seq"].tolist() == [0, 1, 2, 3, 4, 7, 8]
    assert codes(out["alerts"]) == [R.PRICE_JUMP, R.PRICE_JUMP, R.JUMP_REBASED]
    assert stage.counts["jump_rebased"] == 1


def test_a_single_bad_tick_between_good_ones_never_rebases():
    base = walk(WARM + [0.001] * 4)
    rows = []
    for i, p in enumerate(base):
        rows.append((1, 2 * i, p, 1))
        if i >= 5:
            rows.append((1, 2 * i + 1, p * 2, 1))  # a spike after every good trade
    out = run(ValidateTrades(jump_window=4, jump_rebase_after=1, **PLAIN), [trades(rows)])
    assert stage_reasons(out) == {R.PRICE_JUMP: 4}


def stage_reasons(out) -> dict[int, int]:
    return dict(Counter(codes(out["dead_letters"], "reason")))


# --------------------------------------------------------------------------- staleness


def test_stale_instrument_alerts_once_per_episode_and_recovers():
    rows = [(1, 0, PX, 1), (2, 0, PX, 1), (2, 1000, PX, 1),  # 1 is exactly 1000 ms behind
            (2, 1001, PX, 1), (2, 1500, PX, 1), (2, 3000, PX, 1),  # 1 stale once
            (1, 3100, PX, 1), (2, 3200, PX, 1)]  # fmt: skip
    stage = ValidateTrades(stale_after_ms=1000, alert_interval_ms=0)
    out = run(stage, [trades(rows)])
    alerts = out["alerts"]
    assert codes(alerts) == [R.STALE, R.STALE_RECOVERED]
    assert alerts["instrument_id"].tolist() == [1, 1]
    assert alerts["ts_event"].tolist() == [1001 * MS, 3100 * MS]  # revealed by the record at 1001
    assert alerts["value"].tolist() == [1001.0, 3100.0]  # age, then gap, in ms
    assert alerts["seq"].tolist() == [0, 1]
    assert len(out["output"]) == len(rows)  # staleness never rejects
    assert stage.counts["stale"] == 1 and stage.counts["stale_recovered"] == 1


def test_stale_at_exactly_the_limit_does_not_alert():
    rows = [(1, 0, PX, 1), (2, 1000, PX, 1), (1, 1000, PX, 1)]
    out = run(ValidateTrades(stale_after_ms=1000, alert_interval_ms=0), [trades(rows)])
    assert len(out["alerts"]) == 0


# --------------------------------------------------------------------------- quotes


def test_crossed_and_locked_quotes_are_rejected_and_a_one_tick_spread_passes():
    rows = [(1, 0, 100 * PX, 101 * PX, 1, 1), (1, 1, 101 * PX, 100 * PX, 1, 1),
            (1, 2, 100 * PX, 100 * PX, 1, 1), (1, 3, 100 * PX, 100 * PX + 1, 1, 1)]  # fmt: skip
    stage = ValidateQuotes(**PLAIN)
    out = run(stage, [quotes(rows)])
    assert out["output"]["seq"].tolist() == [0, 3]
    assert codes(out["dead_letters"], "reason") == [R.CROSSED, R.LOCKED]
    assert out["alerts"]["value"].tolist() == [-1.0, 0.0]
    assert stage.counts["crossed"] == stage.counts["locked"] == 1


def test_locked_quotes_pass_when_allowed():
    rows = [(1, 0, 100 * PX, 100 * PX, 1, 1)]
    out = run(ValidateQuotes(allow_locked=True, **PLAIN), [quotes(rows)])
    assert len(out["output"]) == 1


def test_one_sided_quotes_pass_unless_disallowed_and_bad_sides_are_caught():
    rows = [(1, 0, UNDEF_PRICE, 100 * PX, 0, 1), (1, 1, 99 * PX, 100 * PX, 0, 1),
            (1, 2, 99 * PX, -1, 1, 1)]  # fmt: skip
    out = run(ValidateQuotes(**PLAIN), [quotes(rows)])
    assert out["output"]["seq"].tolist() == [0]
    assert codes(out["dead_letters"], "reason") == [R.ZERO_SIZE, R.NON_POSITIVE_PRICE]
    out = run(ValidateQuotes(allow_one_sided=False, **PLAIN), [quotes(rows[:1])])
    assert codes(out["dead_letters"], "reason") == [R.UNDEFINED_PRICE]


# --------------------------------------------------------------------------- alerts


def test_alerts_are_throttled_per_instrument_and_reason_but_dead_letters_are_not():
    rows = [(1, t, 0, 1) for t in (0, 400, 999, 1000)] + [(1, 1001, PX, 0), (2, 1002, 0, 1)]
    stage = ValidateTrades(alert_interval_ms=1000, stale_after_ms=0)
    out = run(stage, [trades(rows)])
    assert len(out["dead_letters"]) == 6
    alerts = out["alerts"]
    assert alerts["ts_event"].tolist() == [0, 1000 * MS, 1001 * MS, 1002 * MS]
    assert codes(alerts) == [R.NON_POSITIVE_PRICE, R.NON_POSITIVE_PRICE, R.ZERO_SIZE,
                             R.NON_POSITIVE_PRICE]  # fmt: skip
    assert stage.counts["alerts_suppressed"] == 2 and stage.counts["alerts"] == 4


# --------------------------------------------------------------------------- reference


class RefValidator:
    """The rules of ``hftagg.builtins.core.validation.kernels`` written as a plain loop over dict records."""

    def __init__(self, quote: bool, **params) -> None:
        self.quote = quote
        self.inst: dict[int, dict] = {}
        self.newest = None
        self.offset = 0
        self.clean: list[int] = []
        self.dead: list[tuple[int, int]] = []
        self.alerts: list[tuple] = []
        self.counts: Counter = Counter()
        self.set(**params)

    def set(self, **params) -> None:
        defaults = {**ValidateQuotes.Params().model_dump(), **params}
        self.p = defaults
        for st_ in self.inst.values():
            st_["returns"] = st_["returns"][-self.p["jump_window"] :]

    def alert(self, iid, rec, code, value):
        st_ = self.inst[iid]
        self.alerts.append((rec["ts_event"], iid, st_["aseq"], int(code), value))
        st_["aseq"] += 1

    def reason(self, rec, st_):
        p = self.p
        if self.quote:
            sides = [(rec["bid_px"], rec["bid_sz"]), (rec["ask_px"], rec["ask_sz"])]
        else:
            sides = [(rec["price"], rec["size"])]
        present = [(px, sz) for px, sz in sides if px != UNDEF_PRICE]
        if p["check_prices"]:
            if len(present) < len(sides) and not (self.quote and p["allow_one_sided"]):
                return R.UNDEFINED_PRICE
            if any(px <= 0 for px, _ in present):
                return R.NON_POSITIVE_PRICE
        if p["check_sizes"] and any(sz == 0 for _, sz in present):
            return R.ZERO_SIZE
        if self.quote and p["check_crossed"] and len(present) == 2:
            if rec["bid_px"] > rec["ask_px"]:
                return R.CROSSED
            if rec["bid_px"] == rec["ask_px"] and not p["allow_locked"]:
                return R.LOCKED
        late = st_["last_ts"] is not None and rec["ts_event"] < st_["last_ts"] - 1000 * p[
            "out_of_order_tolerance_us"]  # fmt: skip
        if p["check_order"] and late:
            return R.OUT_OF_ORDER
        return None

    def price(self, rec):
        pxs = [rec["bid_px"], rec["ask_px"]] if self.quote else [rec["price"]]
        if any(px == UNDEF_PRICE or px <= 0 for px in pxs):
            return None
        return math.log(sum(pxs) / len(pxs) * 1e-9)

    def apply(self, rec) -> None:
        iid = int(rec["instrument_id"])
        st_ = self.inst.setdefault(
            iid,
            {
                "last_ts": None,
                "logp": None,
                "returns": [],
                "stale": False,
                "jumps": 0,
                "aseq": 0,
                "last_alert": {},
            },
        )
        index = self.offset
        self.offset += 1
        code = self.reason(rec, st_)
        logp = self.price(rec)
        r = logp - st_["logp"] if logp is not None and st_["logp"] is not None else None
        rebase = False
        window = self.p["jump_window"]
        if (
            code is None
            and r is not None
            and self.p["check_jumps"]
            and len(st_["returns"]) == window
        ):
            limit = max(self.p["jump_sigmas"] * statistics.stdev(st_["returns"]),
                        self.p["jump_min_bps"] * 1e-4)  # fmt: skip
            if abs(r) > limit:
                if st_["jumps"] >= self.p["jump_rebase_after"]:
                    rebase = True
                else:
                    code = R.PRICE_JUMP
        if code is not None:
            self.reject(index, iid, rec, st_, code)
            return
        self.accept(index, iid, rec, st_)
        if logp is not None:
            if rebase:
                st_["returns"] = []
                self.counts["jump_rebased"] += 1
                self.alert(iid, rec, R.JUMP_REBASED, r * 1e4)
            elif r is not None:
                st_["returns"] = (st_["returns"] + [r])[-window:]
            st_["logp"] = logp

    def reject(self, index, iid, rec, st_, code) -> None:
        self.dead.append((index, int(code)))
        self.counts[code.name.lower()] += 1
        last = st_["last_alert"].get(code)
        interval = self.p["alert_interval_ms"] * MS
        if interval == 0 or last is None or rec["ts_recv"] - last >= interval:
            st_["last_alert"][code] = rec["ts_recv"]
            self.alert(iid, rec, code, None)
        if code == R.PRICE_JUMP:
            st_["jumps"] += 1

    def accept(self, index, iid, rec, st_) -> None:
        self.clean.append(index)
        self.counts["passed"] += 1
        ts = rec["ts_event"]
        if st_["stale"]:
            st_["stale"] = False
            self.counts["stale_recovered"] += 1
            self.alert(iid, rec, R.STALE_RECOVERED, (ts - st_["last_ts"]) / 1e6)
        st_["last_ts"] = ts if st_["last_ts"] is None else max(st_["last_ts"], ts)
        st_["jumps"] = 0
        self.newest = ts if self.newest is None else max(self.newest, ts)
        stale_ns = self.p["stale_after_ms"] * MS
        if stale_ns:
            for other, o in self.inst.items():  # first-seen order
                if (
                    o["last_ts"] is not None
                    and not o["stale"]
                    and (self.newest - o["last_ts"] > stale_ns)
                ):
                    o["stale"] = True
                    self.counts["stale"] += 1
                    self.alert(other, rec, R.STALE, (self.newest - o["last_ts"]) / 1e6)


def as_dicts(batch: np.ndarray) -> list[dict]:
    return [dict(zip(batch.dtype.names, (x.item() if hasattr(x, "item") else x for x in rec),
                     strict=True)) for rec in batch]  # fmt: skip


def assert_matches(out: dict, ref: RefValidator, stage) -> None:
    assert out["output"]["seq"].tolist() == ref.clean
    dead = out["dead_letters"]
    assert list(zip(dead["raw_offset"].tolist(), codes(dead, "reason"), strict=True)) == ref.dead
    alerts = out["alerts"]
    got = list(zip(alerts["ts_event"].tolist(), alerts["instrument_id"].tolist(),
                   alerts["seq"].tolist(), codes(alerts), strict=True))  # fmt: skip
    assert got == [a[:4] for a in ref.alerts]
    for value, (*_, expected) in zip(alerts["value"], ref.alerts, strict=True):
        if expected is not None:
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    counts = stage.counts
    for name, n in ref.counts.items():
        assert counts[name] == n, name
    rejected = sum(counts[r.name.lower()] for r in R if r <= R.PRICE_JUMP)
    assert counts["passed"] + rejected == ref.offset  # nothing dropped silently


STEP = st.tuples(
    st.sampled_from([1, 2, 2**32 - 1]),  # instrument
    st.sampled_from([0, 1, 1, 2, 3, -1, -2]),  # ms step of the stream clock
    st.sampled_from(["walk"] * 8 + ["jump", "zero", "negative", "undef", "crossed", "locked"]),
    st.integers(-1000, 1000),  # return, 1e-6 units
    st.sampled_from([0, 1, 1, 1, 3]),  # size
)
RULES = st.fixed_dictionaries({
    "jump_sigmas": st.sampled_from([2.0, 3.5]),
    "jump_window": st.sampled_from([3, 5]),
    "jump_min_bps": st.sampled_from([0.5, 2.0]),
    "jump_rebase_after": st.sampled_from([1, 3]),
    "stale_after_ms": st.sampled_from([0, 4]),
    "alert_interval_ms": st.sampled_from([0, 2]),
    "out_of_order_tolerance_us": st.sampled_from([0, 1000, 1500]),
    "allow_locked": st.booleans(),
})  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build_stream(steps, quote: bool) -> np.ndarray:
    level = {}
    clock = 100
    rows = []
    for iid, dt, kind, noise, size in steps:
        clock += dt
        p = level.get(iid, 100.0) * math.exp(noise * 1e-6)
        level[iid] = p
        px = round(p * PX)
        if kind == "jump":
            px = round(px * (1.2 if noise > 0 else 0.8))
        px = {"zero": 0, "negative": -px, "undef": UNDEF_PRICE}.get(kind, px)
        if quote:
            spread = {"crossed": -2, "locked": 0}.get(kind, 2) * 5_000_000
            ask = px + spread if px not in (0, UNDEF_PRICE) and px > 0 else 101 * PX
            rows.append((iid, clock, px, ask, size, 1))
        else:
            rows.append((iid, clock, px, size))
    batch = quotes(rows) if quote else trades(rows)
    batch["ts_recv"] = (np.arange(len(rows)) + 1) * MS  # a monotone local clock, 1 ms apart
    return batch


def split(stream: np.ndarray, cuts) -> list[np.ndarray]:
    parts = np.split(stream, sorted({c for c in cuts if 0 < c < len(stream)}))
    return [p for p in parts if len(p)]


@SETTINGS
@given(steps=st.lists(STEP, min_size=1, max_size=150), cuts=st.lists(st.integers(0, 150)),
       rules=RULES, quote=st.booleans())  # fmt: skip
def test_stage_matches_the_plain_python_reference_for_any_stream_and_batch_split(
    steps, cuts, rules, quote
):
    stream = build_stream(steps, quote)
    params = dict(rules)
    if not quote:
        params.pop("allow_locked")
    stage = (ValidateQuotes if quote else ValidateTrades)(**params)
    out = run(stage, split(stream, cuts), max_batch=7)
    ref = RefValidator(quote, **rules)
    for rec in as_dicts(stream):
        ref.apply(rec)
    assert_matches(out, ref, stage)


@SETTINGS
@given(steps=st.lists(STEP, min_size=2, max_size=150), cuts=st.lists(st.integers(1, 150)),
       before=RULES, after=RULES, change=st.integers(1, 149))  # fmt: skip
def test_live_reconfigure_takes_effect_from_the_next_batch(steps, cuts, before, after, change):
    stream = build_stream(steps, quote=True)
    batches = split(stream, [*cuts, change])
    at = change % len(batches)
    stage = ValidateQuotes(**before)

    def reconfigure(k: int) -> None:
        if k == at:
            stage.reconfigure(ValidateQuotes.Params(**after))

    out = run(stage, batches, before=reconfigure)
    ref = RefValidator(True, **before)
    for k, batch in enumerate(batches):
        if k == at:
            ref.set(**after)
        for rec in as_dicts(batch):
            ref.apply(rec)
    assert_matches(out, ref, stage)


@SETTINGS
@given(steps=st.lists(STEP, min_size=2, max_size=150), cut=st.integers(1, 149), rules=RULES)
def test_snapshot_restore_continues_identically(steps, cut, rules):
    stream = build_stream(steps, quote=True)
    cut = min(cut, len(stream) - 1)
    straight = ValidateQuotes(**rules)
    whole = run(straight, [stream[:cut], stream[cut:]])
    first = ValidateQuotes(**rules)
    head = run(first, [stream[:cut]])
    second = ValidateQuotes(**rules)
    second.restore(first.snapshot())
    tail = run(second, [stream[cut:]])
    for port in whole:
        joined = np.concatenate([head[port], tail[port]])
        for name in joined.dtype.names:
            np.testing.assert_array_equal(joined[name], whole[port][name], err_msg=port + name)
    assert second.counts == straight.counts


# --------------------------------------------------------------------------- more of the stage


def test_jump_window_change_keeps_the_newest_returns():
    returns = [0.001, -0.001, 0.02, -0.02, 0.001, -0.001]  # the old returns are wide
    rows = jump_rows(returns, 0.006)
    stage = ValidateTrades(jump_window=6, jump_sigmas=3.0, **PLAIN)
    first = run(stage, [trades(rows[:-1])])
    stage.reconfigure(ValidateTrades.Params(jump_window=2, jump_sigmas=3.0, **PLAIN))
    second = run(stage, [trades(rows[-1:])])
    assert len(first["output"]) == len(rows) - 1
    assert codes(second["dead_letters"], "reason") == [R.PRICE_JUMP]  # sigma of the newest two


def test_many_instruments_grow_the_state_and_keep_it():
    n = 5000
    rows = [(i % 1000, i, (100 + i % 7) * PX, 1) for i in range(n)]
    stage = ValidateTrades(jump_window=2, **PLAIN)
    out = run(stage, [trades(rows)])
    assert len(out["output"]) + len(out["dead_letters"]) == n
    assert stage.kernel.instrument_count == 1000


@pytest.mark.parametrize(("name", "value"), [("jump_window", 1), ("jump_sigmas", -1.0),
                                             ("stale_after_ms", -5), ("jumps", 3)])  # fmt: skip
def test_bad_params_are_rejected_naming_the_parameter(name, value):
    with pytest.raises(ValidationError, match=name):
        ValidateTrades.Params(**{name: value})


def test_params_are_live_and_the_stages_are_builtins():
    from hftagg.testing import _host

    assert all(ValidateQuotes.Params.is_live(n) for n in ValidateQuotes.Params.model_fields)
    types = _host().stage_types
    assert types["validate_trades"] is ValidateTrades
    assert types["validate_quotes"] is ValidateQuotes


def test_kernel_rejects_a_snapshot_of_the_other_kind():
    with pytest.raises(ValueError, match="trade/quote"):
        ValidateTrades().restore(ValidateQuotes().snapshot())
