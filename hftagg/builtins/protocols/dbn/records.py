"""hftagg record schemas for the DBN record types the catalog has no equivalent of.

Registered by the ``dbn`` protocol plugin. Each starts with the common header (``ts_event``,
``ts_recv``, ``seq``, ``instrument_id``); prices are int64 with scale 1e-9 as in DBN (DBN's
"no price", ``UNDEF_PRICE = 2**63 - 1``, is kept as is); quantities (lot sizes, trade volume
limits, imbalance and statistics quantities) are int64 1e-8 fixed-point, DBN's whole units times
``10**8``, with DBN's "undefined" as ``2**63 - 1`` (version 2; version 1 kept DBN's integers). Text fields are DBN's fixed-size,
NUL-padded ASCII (numpy ``S<n>``, sized for the longest DBN version). Single characters are
uint8 ASCII codes, as everywhere in hftagg. DBN timestamps that may be undefined (``expiration``,
``activation``, ``ts_ref``, ``auction_time``) keep DBN's uint64 with ``UNDEF_TIMESTAMP = 2**64 - 1``.
"""

from __future__ import annotations

from hftagg.records.schema import Schema, make_dtype

__all__ = ["DBN_SCHEMAS", "IMBALANCE", "INSTRUMENT_DEFINITION", "STATISTICS", "STATUS"]

INSTRUMENT_DEFINITION = Schema(
    "instrument_definition",
    2,
    make_dtype(
        [
            ("raw_symbol", "S71"),  # v1 files: at most 21 characters
            ("min_price_increment", "<i8"),
            ("display_factor", "<i8"),
            ("expiration", "<u8"),
            ("activation", "<u8"),
            ("high_limit_price", "<i8"),
            ("low_limit_price", "<i8"),
            ("max_price_variation", "<i8"),
            ("unit_of_measure_qty", "<i8"),
            ("min_price_increment_amount", "<i8"),
            ("price_ratio", "<i8"),
            ("strike_price", "<i8"),
            ("raw_instrument_id", "<u8"),  # u32 before DBN 3
            ("underlying_id", "<u4"),
            ("market_depth", "<i4"),
            ("market_segment_id", "<u4"),
            ("max_trade_vol", "<i8"),  # quantities: 1e-8 fixed-point
            ("min_lot_size", "<i8"),
            ("min_lot_size_round_lot", "<i8"),
            ("min_trade_vol", "<i8"),
            ("contract_multiplier", "<i4"),
            ("publisher_id", "<u2"),
            ("channel_id", "<u2"),
            ("maturity_year", "<u2"),
            ("maturity_month", "u1"),
            ("maturity_day", "u1"),
            ("instrument_class", "u1"),  # 'F' future, 'K' stock, 'C' call, 'P' put, ...
            ("match_algorithm", "u1"),
            ("security_update_action", "u1"),  # 'A' add, 'M' modify, 'D' delete
            ("user_defined_instrument", "u1"),  # 'Y' / 'N'
            ("currency", "S4"),
            ("exchange", "S5"),
            ("asset", "S11"),  # 7 bytes before DBN 3
            ("cfi", "S7"),
            ("security_type", "S7"),
            ("group", "S21"),
            ("underlying", "S21"),
            ("unit_of_measure", "S31"),
        ]
    ),
    doc="An instrument definition (DBN definition schema): symbol, tick, expiry, limits. "
    "seq counts definitions per source; ts_recv/ts_event are DBN's.",
)

STATISTICS = Schema(
    "statistics",
    2,
    make_dtype(
        [
            ("ts_ref", "<u8"),  # reference time of the statistic (UNDEF_TIMESTAMP: none)
            ("price", "<i8"),
            ("quantity", "<i8"),  # 1e-8 fixed-point; DBN's undefined (i32/i64 max): i64 max
            ("ts_in_delta", "<i4"),
            ("stat_type", "<u2"),  # DBN StatType: 1 opening price, 3 settlement, 7 low offer...
            ("channel_id", "<u2"),
            ("publisher_id", "<u2"),
            ("update_action", "u1"),  # 1 new, 2 delete
            ("stat_flags", "u1"),
        ]
    ),
    doc="A venue statistic (DBN statistics schema); seq = DBN sequence.",
)

IMBALANCE = Schema(
    "imbalance",
    2,
    make_dtype(
        [
            ("ref_price", "<i8"),
            ("auction_time", "<u8"),
            ("cont_book_clr_price", "<i8"),
            ("auct_interest_clr_price", "<i8"),
            ("ssr_filling_price", "<i8"),
            ("ind_match_price", "<i8"),
            ("upper_collar", "<i8"),
            ("lower_collar", "<i8"),
            ("paired_qty", "<i8"),  # quantities: 1e-8 fixed-point
            ("total_imbalance_qty", "<i8"),
            ("market_imbalance_qty", "<i8"),
            ("unpaired_qty", "<i8"),
            ("publisher_id", "<u2"),
            ("auction_type", "u1"),
            ("side", "u1"),
            ("auction_status", "u1"),
            ("freeze_status", "u1"),
            ("num_extensions", "u1"),
            ("unpaired_side", "u1"),
            ("significant_imbalance", "u1"),
        ]
    ),
    doc="An auction imbalance (DBN imbalance schema); seq counts records per source.",
)

#: Decision: a trading-status change is market state, not an ``alert`` (which carries a code, a
#: severity and free text for humans) and not bad input: it gets its own schema, with DBN's
#: codes kept as they are so downstream stages can halt/resume per instrument.
STATUS = Schema(
    "status",
    1,
    make_dtype(
        [
            ("action", "<u2"),  # DBN StatusAction: 1 pre-open, 3 trading, 4 halt, 5 pause, ...
            ("reason", "<u2"),  # DBN StatusReason: why (scheduled, news pending, ...)
            ("trading_event", "<u2"),  # DBN TradingEvent: e.g. 1 no cancel, 2 implied change
            ("publisher_id", "<u2"),
            ("is_trading", "u1"),  # 'Y' / 'N' / '~' (not available), ASCII
            ("is_quoting", "u1"),
            ("is_short_sell_restricted", "u1"),
        ]
    ),
    doc="A venue's trading-status change for an instrument (DBN status schema): halt, pause, "
    "open, close... with DBN's action/reason/event codes; seq counts records per source.",
)

DBN_SCHEMAS: tuple[Schema, ...] = (INSTRUMENT_DEFINITION, STATISTICS, IMBALANCE, STATUS)
