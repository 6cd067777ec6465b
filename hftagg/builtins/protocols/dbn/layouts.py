"""DBN record layouts, per record type (``rtype``) and DBN version, as packed numpy dtypes.

Every DBN record starts with the 16-byte record header: ``length`` (u8, the record's size in
4-byte words), ``rtype`` (u8), ``publisher_id`` (u16), ``instrument_id`` (u32), ``ts_event``
(u64, UNIX ns). The layouts below are Databento's ``#[repr(C)]`` structs (``dbn`` crate,
``record.rs``, ``v1.rs``, ``v2.rs``), little-endian, with their explicit reserved bytes; the
offsets are fixed, so a run of records of one type and length is a numpy structured array over
the decompressed bytes.

What changed between versions (everything else is the same in DBN 1, 2 and 3):

- ``InstrumentDefMsg``: 360 bytes in v1 (``raw_symbol`` 22 bytes), 400 in v2 (``raw_symbol`` 71
  bytes, ``strike_price`` moved up), 520 in v3 (``trading_reference_price``,
  ``trading_reference_date``, ``md_security_trading_status`` and ``settl_price_type`` removed;
  ``raw_instrument_id`` widened to u64; ``asset`` 11 bytes; the ``leg_*`` fields added).
- ``StatMsg``: 64 bytes with an i32 ``quantity`` in v1 and v2, 80 bytes with an i64 in v3.
- Symbol mapping, system and error records (not mapped by hftagg) changed in v2.

A record may be longer than its layout (``ts_out`` appends 8 bytes, a later minor revision may
append fields): the dtype's itemsize is then the record's length and the extra bytes are ignored.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HEADER_SIZE",
    "LAYOUTS",
    "OHLCV_RTYPES",
    "RType",
    "TS_RECV_OFFSET",
    "UNDEF_PRICE",
    "UNDEF_TIMESTAMP",
    "layout",
    "record_dtype",
]

HEADER_SIZE = 16
#: DBN's "no price" (i64 max) and "no timestamp" (u64 max).
UNDEF_PRICE = np.iinfo(np.int64).max
UNDEF_TIMESTAMP = np.iinfo(np.uint64).max


class RType:
    """Record type codes (the ``rtype`` header byte)."""

    MBP_0 = 0x00  # trades
    MBP_1 = 0x01  # mbp-1 and tbbo
    MBP_10 = 0x0A
    OHLCV_DEPRECATED = 0x11
    STATUS = 0x12
    INSTRUMENT_DEF = 0x13
    IMBALANCE = 0x14
    ERROR = 0x15
    SYMBOL_MAPPING = 0x16
    SYSTEM = 0x17
    STATISTICS = 0x18
    OHLCV_1S = 0x20
    OHLCV_1M = 0x21
    OHLCV_1H = 0x22
    OHLCV_1D = 0x23
    OHLCV_EOD = 0x24
    MBO = 0xA0
    CMBP_1 = 0xB1
    CBBO_1S = 0xC0
    CBBO_1M = 0xC1
    TCBBO = 0xC2
    BBO_1S = 0xC3
    BBO_1M = 0xC4
    TBBO = 0xC5  # newer encoders; same layout as MBP_1


_SECOND = 1_000_000_000
#: OHLCV rtype -> bar timeframe in ns (EOD bars count as one day).
OHLCV_RTYPES: dict[int, int] = {
    RType.OHLCV_1S: _SECOND,
    RType.OHLCV_1M: 60 * _SECOND,
    RType.OHLCV_1H: 3600 * _SECOND,
    RType.OHLCV_1D: 86400 * _SECOND,
    RType.OHLCV_EOD: 86400 * _SECOND,
    RType.OHLCV_DEPRECATED: 0,  # timeframe from the metadata's schema
}

_HEADER = [
    ("length", "u1"),
    ("rtype", "u1"),
    ("publisher_id", "<u2"),
    ("instrument_id", "<u4"),
    ("ts_event", "<u8"),
]

_MBP_BODY = [
    ("price", "<i8"),
    ("size", "<u4"),
    ("action", "u1"),
    ("side", "u1"),
    ("flags", "u1"),
    ("depth", "u1"),
    ("ts_recv", "<u8"),
    ("ts_in_delta", "<i4"),
    ("sequence", "<u4"),
]


def _levels(n: int) -> list[tuple]:
    level = [
        ("bid_px", "<i8"),
        ("ask_px", "<i8"),
        ("bid_sz", "<u4"),
        ("ask_sz", "<u4"),
        ("bid_ct", "<u4"),
        ("ask_ct", "<u4"),
    ]
    return [("levels", np.dtype(level), (n,))]


MBO = _HEADER + [
    ("order_id", "<u8"),
    ("price", "<i8"),
    ("size", "<u4"),
    ("flags", "u1"),
    ("channel_id", "u1"),
    ("action", "u1"),
    ("side", "u1"),
    ("ts_recv", "<u8"),
    ("ts_in_delta", "<i4"),
    ("sequence", "<u4"),
]
TRADE = _HEADER + _MBP_BODY
MBP1 = _HEADER + _MBP_BODY + _levels(1)
MBP10 = _HEADER + _MBP_BODY + _levels(10)
BBO = (
    _HEADER
    + [
        ("price", "<i8"),
        ("size", "<u4"),
        ("_reserved1", "u1"),
        ("side", "u1"),
        ("flags", "u1"),
        ("_reserved2", "u1"),
        ("ts_recv", "<u8"),
        ("_reserved3", "V4"),
        ("sequence", "<u4"),
    ]
    + _levels(1)
)
_CONSOLIDATED_LEVEL = np.dtype(
    [
        ("bid_px", "<i8"),
        ("ask_px", "<i8"),
        ("bid_sz", "<u4"),
        ("ask_sz", "<u4"),
        ("bid_pb", "<u2"),  # publisher of the best bid
        ("_reserved1", "V2"),
        ("ask_pb", "<u2"),
        ("_reserved2", "V2"),
    ]
)
#: cmbp-1 and tcbbo (consolidated: the best bid and offer across venues, with their publishers).
CMBP1 = _HEADER + [
    ("price", "<i8"),
    ("size", "<u4"),
    ("action", "u1"),
    ("side", "u1"),
    ("flags", "u1"),
    ("_reserved1", "u1"),
    ("ts_recv", "<u8"),
    ("ts_in_delta", "<i4"),
    ("_reserved2", "V4"),
    ("levels", _CONSOLIDATED_LEVEL, (1,)),
]
#: cbbo-1s and cbbo-1m (consolidated BBO sampled each interval; no sequence number).
CBBO = _HEADER + [
    ("price", "<i8"),
    ("size", "<u4"),
    ("_reserved1", "u1"),
    ("side", "u1"),
    ("flags", "u1"),
    ("_reserved2", "u1"),
    ("ts_recv", "<u8"),
    ("_reserved3", "V8"),
    ("levels", _CONSOLIDATED_LEVEL, (1,)),
]
#: status: a venue's trading-status change for an instrument.
STATUS = _HEADER + [
    ("ts_recv", "<u8"),
    ("action", "<u2"),
    ("reason", "<u2"),
    ("trading_event", "<u2"),
    ("is_trading", "u1"),  # 'Y' / 'N' / '~' (not available)
    ("is_quoting", "u1"),
    ("is_short_sell_restricted", "u1"),
    ("_reserved", "V7"),
]
OHLCV = _HEADER + [
    ("open", "<i8"),
    ("high", "<i8"),
    ("low", "<i8"),
    ("close", "<i8"),
    ("volume", "<u8"),
]
IMBALANCE = _HEADER + [
    ("ts_recv", "<u8"),
    ("ref_price", "<i8"),
    ("auction_time", "<u8"),
    ("cont_book_clr_price", "<i8"),
    ("auct_interest_clr_price", "<i8"),
    ("ssr_filling_price", "<i8"),
    ("ind_match_price", "<i8"),
    ("upper_collar", "<i8"),
    ("lower_collar", "<i8"),
    ("paired_qty", "<u4"),
    ("total_imbalance_qty", "<u4"),
    ("market_imbalance_qty", "<u4"),
    ("unpaired_qty", "<u4"),
    ("auction_type", "u1"),
    ("side", "u1"),
    ("auction_status", "u1"),
    ("freeze_status", "u1"),
    ("num_extensions", "u1"),
    ("unpaired_side", "u1"),
    ("significant_imbalance", "u1"),
    ("_reserved", "V1"),
]
_STAT_HEAD = _HEADER + [("ts_recv", "<u8"), ("ts_ref", "<u8"), ("price", "<i8")]
_STAT_TAIL = [
    ("sequence", "<u4"),
    ("ts_in_delta", "<i4"),
    ("stat_type", "<u2"),
    ("channel_id", "<u2"),
    ("update_action", "u1"),
    ("stat_flags", "u1"),
]
STAT_V1 = _STAT_HEAD + [("quantity", "<i4")] + _STAT_TAIL + [("_reserved", "V6")]
STAT_V3 = _STAT_HEAD + [("quantity", "<i8")] + _STAT_TAIL + [("_reserved", "V18")]

_DEF_PRICES = [
    ("ts_recv", "<u8"),
    ("min_price_increment", "<i8"),
    ("display_factor", "<i8"),
    ("expiration", "<u8"),
    ("activation", "<u8"),
    ("high_limit_price", "<i8"),
    ("low_limit_price", "<i8"),
    ("max_price_variation", "<i8"),
]
_DEF_V12_MID = [
    ("trading_reference_price", "<i8"),
    ("unit_of_measure_qty", "<i8"),
    ("min_price_increment_amount", "<i8"),
    ("price_ratio", "<i8"),
]
_DEF_INTS = [
    ("market_depth_implied", "<i4"),
    ("market_depth", "<i4"),
    ("market_segment_id", "<u4"),
    ("max_trade_vol", "<u4"),
    ("min_lot_size", "<i4"),
    ("min_lot_size_block", "<i4"),
    ("min_lot_size_round_lot", "<i4"),
    ("min_trade_vol", "<u4"),
]
_DEF_TAIL_FLAGS = [
    ("main_fraction", "u1"),
    ("price_display_format", "u1"),
    ("settl_price_type", "u1"),
    ("sub_fraction", "u1"),
    ("underlying_product", "u1"),
    ("security_update_action", "u1"),
    ("maturity_month", "u1"),
    ("maturity_day", "u1"),
    ("maturity_week", "u1"),
    ("user_defined_instrument", "u1"),
    ("contract_multiplier_unit", "i1"),
    ("flow_schedule_type", "i1"),
    ("tick_rule", "u1"),
]
DEF_V1 = (
    _HEADER
    + _DEF_PRICES
    + _DEF_V12_MID
    + [
        ("inst_attrib_value", "<i4"),
        ("underlying_id", "<u4"),
        ("raw_instrument_id", "<u4"),
    ]
    + _DEF_INTS
    + [
        ("_reserved2", "V4"),
        ("contract_multiplier", "<i4"),
        ("decay_quantity", "<i4"),
        ("original_contract_size", "<i4"),
        ("_reserved3", "V4"),
        ("trading_reference_date", "<u2"),
        ("appl_id", "<i2"),
        ("maturity_year", "<u2"),
        ("decay_start_date", "<u2"),
        ("channel_id", "<u2"),
        ("currency", "S4"),
        ("settl_currency", "S4"),
        ("secsubtype", "S6"),
        ("raw_symbol", "S22"),
        ("group", "S21"),
        ("exchange", "S5"),
        ("asset", "S7"),
        ("cfi", "S7"),
        ("security_type", "S7"),
        ("unit_of_measure", "S31"),
        ("underlying", "S21"),
        ("strike_price_currency", "S4"),
        ("instrument_class", "u1"),
        ("_reserved4", "V2"),
        ("strike_price", "<i8"),
        ("_reserved5", "V6"),
        ("match_algorithm", "u1"),
        ("md_security_trading_status", "u1"),
    ]
    + _DEF_TAIL_FLAGS
    + [("_dummy", "V3")]
)
DEF_V2 = (
    _HEADER
    + _DEF_PRICES
    + _DEF_V12_MID
    + [
        ("strike_price", "<i8"),
        ("inst_attrib_value", "<i4"),
        ("underlying_id", "<u4"),
        ("raw_instrument_id", "<u4"),
    ]
    + _DEF_INTS
    + [
        ("contract_multiplier", "<i4"),
        ("decay_quantity", "<i4"),
        ("original_contract_size", "<i4"),
        ("trading_reference_date", "<u2"),
        ("appl_id", "<i2"),
        ("maturity_year", "<u2"),
        ("decay_start_date", "<u2"),
        ("channel_id", "<u2"),
        ("currency", "S4"),
        ("settl_currency", "S4"),
        ("secsubtype", "S6"),
        ("raw_symbol", "S71"),
        ("group", "S21"),
        ("exchange", "S5"),
        ("asset", "S7"),
        ("cfi", "S7"),
        ("security_type", "S7"),
        ("unit_of_measure", "S31"),
        ("underlying", "S21"),
        ("strike_price_currency", "S4"),
        ("instrument_class", "u1"),
        ("match_algorithm", "u1"),
        ("md_security_trading_status", "u1"),
    ]
    + _DEF_TAIL_FLAGS
    + [("_reserved", "V10")]
)
DEF_V3 = (
    _HEADER
    + _DEF_PRICES
    + [
        ("unit_of_measure_qty", "<i8"),
        ("min_price_increment_amount", "<i8"),
        ("price_ratio", "<i8"),
        ("strike_price", "<i8"),
        ("raw_instrument_id", "<u8"),
        ("leg_price", "<i8"),
        ("leg_delta", "<i8"),
        ("inst_attrib_value", "<i4"),
        ("underlying_id", "<u4"),
    ]
    + _DEF_INTS
    + [
        ("contract_multiplier", "<i4"),
        ("decay_quantity", "<i4"),
        ("original_contract_size", "<i4"),
        ("leg_instrument_id", "<u4"),
        ("leg_ratio_price_numerator", "<i4"),
        ("leg_ratio_price_denominator", "<i4"),
        ("leg_ratio_qty_numerator", "<i4"),
        ("leg_ratio_qty_denominator", "<i4"),
        ("leg_underlying_id", "<u4"),
        ("appl_id", "<i2"),
        ("maturity_year", "<u2"),
        ("decay_start_date", "<u2"),
        ("channel_id", "<u2"),
        ("leg_count", "<u2"),
        ("leg_index", "<u2"),
        ("currency", "S4"),
        ("settl_currency", "S4"),
        ("secsubtype", "S6"),
        ("raw_symbol", "S71"),
        ("group", "S21"),
        ("exchange", "S5"),
        ("asset", "S11"),
        ("cfi", "S7"),
        ("security_type", "S7"),
        ("unit_of_measure", "S31"),
        ("underlying", "S21"),
        ("strike_price_currency", "S4"),
        ("leg_raw_symbol", "S71"),
        ("instrument_class", "u1"),
        ("match_algorithm", "u1"),
        ("main_fraction", "u1"),
        ("price_display_format", "u1"),
        ("sub_fraction", "u1"),
        ("underlying_product", "u1"),
        ("security_update_action", "u1"),
        ("maturity_month", "u1"),
        ("maturity_day", "u1"),
        ("maturity_week", "u1"),
        ("user_defined_instrument", "u1"),
        ("contract_multiplier_unit", "i1"),
        ("flow_schedule_type", "i1"),
        ("tick_rule", "u1"),
        ("leg_instrument_class", "u1"),
        ("leg_side", "u1"),
        ("_reserved", "V17"),
    ]
)


def _packed(fields: list[tuple]) -> np.dtype:
    return np.dtype(fields)  # align=False: offsets as in the C structs (they have no holes)


_SAME = {
    RType.MBO: MBO,
    RType.MBP_0: TRADE,
    RType.MBP_1: MBP1,
    RType.TBBO: MBP1,
    RType.MBP_10: MBP10,
    RType.BBO_1S: BBO,
    RType.BBO_1M: BBO,
    RType.IMBALANCE: IMBALANCE,
    RType.CMBP_1: CMBP1,
    RType.TCBBO: CMBP1,
    RType.CBBO_1S: CBBO,
    RType.CBBO_1M: CBBO,
    RType.STATUS: STATUS,
    **{rtype: OHLCV for rtype in OHLCV_RTYPES},
}

#: (rtype, version) -> packed dtype of the record as that DBN version writes it.
LAYOUTS: dict[tuple[int, int], np.dtype] = {}
for _version in (1, 2, 3):
    for _rtype, _fields in _SAME.items():
        LAYOUTS[(_rtype, _version)] = _packed(_fields)
    LAYOUTS[(RType.INSTRUMENT_DEF, _version)] = _packed((DEF_V1, DEF_V2, DEF_V3)[_version - 1])
    LAYOUTS[(RType.STATISTICS, _version)] = _packed(STAT_V3 if _version == 3 else STAT_V1)

#: Byte offset of ``ts_recv`` per rtype (records without one pace by ``ts_event``, offset 8).
TS_RECV_OFFSET = np.full(256, 8, dtype=np.int64)
for (_rtype, _), _dt in LAYOUTS.items():
    if "ts_recv" in _dt.names:
        TS_RECV_OFFSET[_rtype] = _dt.fields["ts_recv"][1]


def layout(rtype: int, version: int) -> np.dtype | None:
    """The packed dtype of ``rtype`` in DBN ``version``; ``None`` when hftagg does not map it."""
    return LAYOUTS.get((rtype, version))


_CACHE: dict[tuple[int, int, int], np.dtype] = {}


def record_dtype(rtype: int, version: int, length: int) -> np.dtype | None:
    """The layout stretched to ``length`` bytes (``ts_out`` or newer trailing fields ignored).

    ``None`` when the rtype is not mapped or ``length`` is shorter than the layout.
    """
    key = (rtype, version, length)
    dtype = _CACHE.get(key)
    if dtype is None:
        base = layout(rtype, version)
        if base is None or length < base.itemsize:
            return None
        names = list(base.names)
        dtype = np.dtype(
            {
                "names": names,
                "formats": [base.fields[n][0] for n in names],
                "offsets": [base.fields[n][1] for n in names],
                "itemsize": length,
            }
        )
        _CACHE[key] = dtype
    return dtype
