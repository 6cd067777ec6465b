"""Quantities real venues send, through every stage: exact, and dead-lettered where they cannot be.

Each edge is a test: sizes a uint32 could not hold (0.00012 BTC, 22,000,000 units), a value with
too many decimals, a value past the int64 range, a negative size, an accumulator (bar volume,
position) that would overflow. Nothing is rounded or wrapped; what cannot be represented is
dead-lettered (or alerted) with the field and the value named.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from hftagg.builtins.core.bars.kernels import TimeBarKernel
from hftagg.builtins.core.bars.stages import TimeBars, VolumeBars
from hftagg.builtins.core.book.kernels import ALERT_BAD_RECORD, BookKernel
from hftagg.builtins.core.risk.kernels import OrderType, RiskKernel, RiskLimits, RiskReason
from hftagg.builtins.core.risk.stages import RiskChecks
from hftagg.builtins.core.validation.kernels import ValidationKernel, ValidationReason
from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.sources.simulator.stages import Simulator
from hftagg.records import BOOK_UPDATE, FILL, ORDER, QTY_UNITS, QUOTE, TRADE, to_fixed
from hftagg.records.fixed import INT64_MAX, FixedReason

Q = QTY_UNITS
PX = 10**9
M = 60 * 10**9
SMALL = to_fixed("0.00012")  # 12_000
BIG = to_fixed("22000000")  # 2.2e15 raw: 512 000 times what a uint32 held


def trades(rows) -> np.ndarray:
    """``rows`` of (instrument_id, ts_event, price, raw size)."""
    batch = TRADE.empty(len(rows))
    for i, (iid, ts, price, size) in enumerate(rows):
        batch[i]["instrument_id"], batch[i]["ts_event"] = iid, ts
        batch[i]["price"], batch[i]["size"] = price, size
    batch["ts_recv"] = batch["ts_event"] + 1
    batch["seq"] = np.arange(len(rows))
    return batch


# --------------------------------------------------------------------------- book


def test_book_levels_quotes_and_mbp10_keep_fractional_and_huge_sizes_exactly():
    batch = BOOK_UPDATE.empty(3)
    batch["instrument_id"] = 7
    batch["seq"] = [0, 1, 2]
    batch["action"] = ord("A")
    batch["side"] = [ord("B"), ord("A"), ord("B")]
    batch["price"] = [100 * PX, 101 * PX, 99 * PX]
    batch["size"] = [SMALL, BIG, INT64_MAX]

    quotes, mbp10, alerts = BookKernel().update(batch)

    assert len(alerts) == 0
    assert quotes[-1][["bid_sz", "ask_sz"]].tolist() == (SMALL, BIG)
    assert mbp10[-1]["bid_sz"][:2].tolist() == [SMALL, INT64_MAX]
    assert mbp10[-1]["ask_sz"][0] == BIG


def test_book_negative_size_is_a_bad_record_and_leaves_the_level_alone():
    batch = BOOK_UPDATE.empty(2)
    batch["instrument_id"] = 7
    batch["seq"] = [0, 1]
    batch["action"] = [ord("A"), ord("M")]
    batch["side"] = ord("B")
    batch["price"] = 100 * PX
    batch["size"] = [5 * Q, -1]
    kernel = BookKernel()

    _, _, alerts = kernel.update(batch)

    assert alerts["code"].tolist() == [ALERT_BAD_RECORD]
    assert kernel.levels(7)[0].tolist() == [[100 * PX, 5 * Q]]
    assert kernel.counters(7)["bad_records"] == 1


# --------------------------------------------------------------------------- bars


def test_bar_volume_and_vwap_are_exact_for_crypto_sizes():
    prices = [65_000_123_456_789, 9_000_000_000 * PX, 1]  # 65000.12..., 9e9 (near the top), 1e-9
    sizes = [SMALL, BIG, 40_000_000_000 * Q]  # 0.00012, 22e6, 4e10 units
    batch = trades([(1, k, p, q) for k, (p, q) in enumerate(zip(prices, sizes, strict=True))])
    kernel = TimeBarKernel(M)

    kernel.update(batch)
    (bar,) = kernel.flush()

    assert bar["volume"] == sum(sizes)
    exact = Fraction(sum(p * q for p, q in zip(prices, sizes, strict=True)), sum(sizes) * PX)
    assert bar["vwap"] == pytest.approx(float(exact), rel=1e-15)
    assert kernel.rejected_records == 0


def test_bar_volume_overflow_and_negative_size_are_dead_lettered_with_field_and_value():
    half = INT64_MAX // 2 + 1
    batch = trades([(1, 0, PX, half), (1, 1, PX, half), (1, 2, PX, -5), (1, 3, PX, Q)])
    stage = TimeBars(timeframe="1m")
    stage.open(None)

    out = stage.process(batch)
    closed = stage.flush()

    dead = out["dead_letters"]
    assert dead["reason"].tolist() == [FixedReason.OUT_OF_RANGE] * 2
    assert dead["ts_event"].tolist() == [1, 2]
    assert dead["detail"][0] == b"time_bars: size=46116860184.27387904: bar volume would pass " + (
        b"9223"
    )
    assert dead["detail"][1] == b"time_bars: size=-0.00000005: negative"
    assert closed["volume"].tolist() == [half + Q]  # the two good trades, nothing wrapped
    assert stage.kernel.rejected_records == 2


def test_volume_bars_take_a_fractional_threshold_in_units():
    stage = VolumeBars(volume=0.5)
    stage.open(None)
    batch = trades([(1, k, PX, to_fixed("0.3")) for k in range(4)])

    closed = stage.process(batch)["output"]

    assert closed["volume"].tolist() == [to_fixed("0.5")] * 2
    with pytest.raises(ValidationError, match="volume = '1e-09'"):
        VolumeBars(volume=1e-9)


# --------------------------------------------------------------------------- risk


def _order(size: int, side: int = 66, iid: int = 1) -> np.ndarray:  # 66: "B"
    batch = ORDER.empty(1)
    batch["instrument_id"], batch["order_id"] = iid, 1
    batch["side"], batch["order_type"] = side, OrderType.LIMIT
    batch["price"], batch["size"] = 100 * PX, size
    return batch


def test_risk_limits_take_fractional_units_and_compare_raw_sizes_exactly():
    kernel = RiskKernel(RiskLimits(max_order_size=0.5, max_position=0, max_notional=0,
                                   price_band_bps=0, max_daily_loss=0))  # fmt: skip

    accepted, _, _ = kernel.orders(_order(to_fixed("0.5")))
    _, rejected, alerts = kernel.orders(_order(to_fixed("0.50000001")))

    assert len(accepted) == 1 and kernel.position(1) == to_fixed("0.5")
    assert rejected["status"].tolist() == [RiskReason.MAX_ORDER_SIZE]
    assert alerts["value"].tolist() == [0.50000001]
    assert kernel.pnl == 0.0  # bought 0.5 at 100, marked at 100


def test_risk_position_past_the_int64_range_is_rejected_not_wrapped():
    kernel = RiskKernel(RiskLimits(max_order_size=0, max_position=0, max_notional=0,
                                   price_band_bps=0, max_daily_loss=0))  # fmt: skip
    kernel.orders(_order(INT64_MAX))

    _, rejected, alerts = kernel.orders(_order(1))
    alerts = alerts.copy()  # a view the next call reuses
    fills = FILL.empty(1)
    fills["instrument_id"], fills["side"], fills["price"], fills["size"] = 1, ord("B"), PX, 1
    fill_alerts = kernel.fills(fills)

    assert rejected["status"].tolist() == [RiskReason.MAX_POSITION]
    assert alerts["value"][0] == pytest.approx(INT64_MAX / Q)
    assert fill_alerts["code"].tolist() == [RiskReason.BAD_FILL]
    assert kernel.position(1) == INT64_MAX


def test_risk_stage_rejects_a_limit_that_is_not_a_quantity():
    with pytest.raises(ValidationError, match="max_position = '1e-09'"):
        RiskChecks(max_position=1e-9)


# --------------------------------------------------------------------------- validation


def test_validation_rejects_negative_sizes_like_zero_ones():
    kernel = ValidationKernel()
    batch = trades([(1, 0, PX, Q), (1, 1, PX, -Q), (1, 2, PX, SMALL)])

    passed, dead, _ = kernel.update(batch)

    assert passed["size"].tolist() == [Q, SMALL]
    assert dead["reason"].tolist() == [ValidationReason.ZERO_SIZE]


# --------------------------------------------------------------------------- FIX


def _fix(price: str, size: str) -> bytes:
    msg_type, body = m.incremental_refresh([m.MdEntry("0", price, size, symbol="BTC/USD")])
    return m.encode("FIX.4.4", msg_type, "MD", "HFT", 1, body,
                    sending_time="20260102-03:04:05.678")  # fmt: skip


def test_fix_decimal_sizes_decode_exactly():
    out = MarketDataDecoder({"BTC/USD": 9}).feed(_fix("65000.12", "0.00012"))

    assert out.book[["price", "size"]].tolist() == [(65_000_120_000_000, SMALL)]


@pytest.mark.parametrize(
    ("price", "size", "reason", "detail"),
    [
        ("1.5", "0.000000001", FixedReason.TOO_PRECISE,
         b"271='0.000000001': more decimals than the scale holds"),
        ("1.5", "92233720368.54775808", FixedReason.OUT_OF_RANGE,
         b"271='92233720368.54775808': outside the int64 range"),
        ("9223372036.854775808", "1", FixedReason.OUT_OF_RANGE,
         b"270='9223372036.854775808': outside the int64 range"),
        ("1.0000000001", "1", FixedReason.TOO_PRECISE,
         b"270='1.0000000001': more decimals than the scale holds"),
    ],
)  # fmt: skip
def test_fix_unrepresentable_price_or_size_is_dead_lettered_naming_tag_and_value(
    price, size, reason, detail
):
    out = MarketDataDecoder({"BTC/USD": 9}).feed(_fix(price, size))

    assert len(out.book) == 0
    assert out.dead_letters["reason"].tolist() == [reason]
    assert out.dead_letters["detail"][0] == detail


# --------------------------------------------------------------------------- simulator


def test_simulator_lot_size_makes_crypto_sizes_and_rejects_sub_scale_lots():
    sim = Simulator(lot_size=0.00001, clock="simulated", rate=0, batch_records=512)
    sim.open(None)

    out = sim.next_batch()

    sizes = np.concatenate([out["trades"]["size"], out["quotes"]["bid_sz"]])
    assert (sizes % 1000 == 0).all() and sizes.max() <= 999_000 and sizes.min() >= 1000
    with pytest.raises(ValidationError, match="lot_size = '1e-09'"):
        Simulator(lot_size=1e-9)


def test_quote_schema_holds_sizes_past_uint32():
    quote = QUOTE.empty(1)
    quote["bid_sz"] = BIG
    assert quote["bid_sz"][0] == 2_200_000_000_000_000


# --------------------------------------------------------------------------- DBN


def test_dbn_volume_past_the_quantity_range_is_dead_lettered_not_wrapped(tmp_path):
    dbn_ref = pytest.importorskip("databento_dbn", reason="writes the DBN test file")
    from hftagg.builtins.protocols.dbn import decode_file

    too_big = 2**63 // Q + 1  # whole units: times 1e8 passes the int64 range
    bars = [
        dbn_ref.OHLCVMsg(0x21, 1, 5, 60 * k * 10**9, PX, 2 * PX, PX, PX, volume)
        for k, volume in enumerate([22_000_000, too_big, 2**64 - 1, 7])
    ]  # rtype 0x21: OHLCV-1m
    metadata = dbn_ref.Metadata(dataset="GLBX.MDP3", start=0, stype_in=dbn_ref.SType.RAW_SYMBOL,
                                stype_out=dbn_ref.SType.INSTRUMENT_ID, schema=None,
                                symbols=["ESH6"])  # fmt: skip
    path = tmp_path / "bars.dbn"
    path.write_bytes(bytes(metadata) + b"".join(bytes(r) for r in bars))

    out: dict[str, list[np.ndarray]] = {}
    for part in decode_file(path):
        for port, batch in part.items():
            out.setdefault(port, []).append(batch)
    good, dead = np.concatenate(out["ohlcv"]), np.concatenate(out["dead_letters"])

    assert good["volume"].tolist() == [22_000_000 * Q, 7 * Q]
    assert dead["reason"].tolist() == [FixedReason.OUT_OF_RANGE] * 2
    assert dead["detail"][0].endswith(
        f"volume={too_big} units: above 92233720368.54775807".encode()
    )
    assert dead["ts_event"].tolist() == [60 * 10**9, 120 * 10**9]
