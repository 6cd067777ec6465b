"""From DBN records (numpy views over the decoded bytes, one rtype at a time) to hftagg records.

Common header, for every output:

- ``ts_event``: DBN ``ts_event`` (venue time, UNIX ns); for OHLCV bars, DBN's bar *open* time
  plus the timeframe, i.e. the bar's close time (hftagg's bar convention).
- ``ts_recv``: DBN ``ts_recv`` (the capture server's receive time); OHLCV records have none and
  get their close time.
- ``seq``: DBN ``sequence`` (the venue's message sequence number, as DBN gives it: per channel,
  not contiguous per instrument) where the record has one (mbo, trades, mbp-1/tbbo, mbp-10,
  bbo, statistics); elsewhere (bars, definitions, imbalance) a running count per output from 0.
- ``instrument_id``: DBN ``instrument_id``.

DBN's unsigned timestamps become int64 (DBN's ``UNDEF_TIMESTAMP`` reads as -1). Prices are
int64 1e-9 fixed-point in both; DBN's ``UNDEF_PRICE`` (i64 max) is kept. Quantities (sizes,
volumes, lot sizes, imbalance and statistics quantities) are whole units in DBN and int64 1e-8
fixed-point in hftagg: ``value * 10**8``, exact. DBN's uint32 sizes always fit; a bar volume or a
statistics quantity that would not (above 92,233,720,368 units) is not wrapped: the record is
dead-lettered (``FixedReason.OUT_OF_RANGE``, the detail names the field and value). DBN's
"undefined" quantity sentinels (i32/u32/i64 max) become i64 max. ``side`` and
``action`` are DBN's ASCII characters as uint8 (``ord("B")``); ``flags`` is DBN's bit field
(``F_LAST`` 0x80, ``F_TOB`` 0x40, ``F_SNAPSHOT`` 0x20, ``F_MBP`` 0x10, ...).

Per DBN schema:

- ``mbo`` -> ``mbo`` (order_id, price, size, action A/C/M/R/T/F/N, side, flags).
- ``trades`` -> ``trade`` (price, size, side = aggressor, flags), one per record.
- ``mbp-1`` -> ``quote`` (the book's best bid and offer *after* the event) for every record,
  ``trade`` for every action ``T`` record, and ``book_update`` for every record (below).
- ``tbbo`` -> ``trade`` and ``quote`` for every record (DBN: the BBO *just before* the trade).
- ``mbp-10`` -> ``mbp10`` (the 10 levels after the event, with order counts) and
  ``book_update`` for every record, ``trade`` for every action ``T`` record.
- ``bbo-1s``/``bbo-1m`` -> ``quote`` (the BBO at the end of the interval).
- ``cbbo-1s``/``cbbo-1m`` -> ``quote`` (the consolidated BBO across venues at the end of the
  interval); ``cmbp-1`` -> ``quote`` (consolidated BBO after the event) and ``trade`` for every
  action ``T``; ``tcbbo`` -> ``trade`` and ``quote`` (consolidated BBO just before the trade).
  Consolidated records carry no ``sequence``: ``seq`` is a running count per output. No
  ``book_update`` from ``cmbp-1``: a consolidated top of book is not one venue's book. The
  per-side publisher (``bid_pb``/``ask_pb``) has no place in ``quote`` and is not kept.
- ``status`` -> ``status`` (a hftagg schema added by this plugin, see
  :mod:`hftagg.builtins.protocols.dbn.records`: DBN's action, reason, trading_event codes and
  the is_trading/is_quoting/is_short_sell_restricted characters; ``seq`` a running count).
- ``ohlcv-1s/1m/1h/1d/eod`` -> ``bar`` with ``timeframe_ns`` from the rtype (1 s, 1 min, 1 h,
  1 d; EOD counts as 1 d), volume, ``trade_count`` 0 and ``vwap`` NaN (DBN has neither),
  ``synthetic`` 0.
- ``definition`` -> ``instrument_definition``, ``statistics`` -> ``statistics`` (DBN 1/2's
  i32 quantity is widened and its "undefined" i32 max becomes i64 max, as DBN's own upgrade
  does), ``imbalance`` -> ``imbalance`` (see :mod:`hftagg.builtins.protocols.dbn.records`).

``book_update`` from MBP records: DBN's MBP ``price``/``size`` are those of the *order event*
(an add of 1 lot says size 1) while hftagg's ``book_update`` sets a *level* (the book stage
makes the level at price/side that size). The level's new size is read from the record's own
levels (the book after the event): an ``A``/``M``/``C`` whose price is among the levels of its
side becomes ``A`` (for an add) or ``M`` with that level's size; one whose level is gone becomes
``D`` with size 0. ``R`` (clear), ``T`` (trade), ``F`` and ``N`` pass unchanged with the
event's price and size; ``depth`` and ``flags`` are DBN's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hftagg.builtins.protocols.dbn.layouts import OHLCV_RTYPES, RType
from hftagg.builtins.protocols.dbn.records import (
    IMBALANCE,
    INSTRUMENT_DEFINITION,
    STATISTICS,
    STATUS,
)
from hftagg.records.catalog import BAR, BOOK_UPDATE, MBP10, QUOTE, TRADE
from hftagg.records.catalog import MBO as MBO_SCHEMA
from hftagg.records.fixed import QTY_UNITS, scale_integers

__all__ = ["PORTS", "REJECTED", "SCHEMA_PORTS", "Counters", "map_records"]

#: The key under which a mapper returns the rows it could not represent: ``(rows, details)``.
REJECTED = "_rejected"

#: Output port -> hftagg schema name.
PORTS: dict[str, str] = {
    "trades": TRADE.name,
    "quotes": QUOTE.name,
    "book": BOOK_UPDATE.name,
    "mbo": MBO_SCHEMA.name,
    "depth": MBP10.name,
    "ohlcv": BAR.name,
    "definitions": INSTRUMENT_DEFINITION.name,
    "statistics": STATISTICS.name,
    "imbalance": IMBALANCE.name,
    "status": STATUS.name,
}

#: DBN schema name -> the ports its records feed.
SCHEMA_PORTS: dict[str, tuple[str, ...]] = {
    "mbo": ("mbo",),
    "mbp-1": ("trades", "quotes", "book"),
    "tbbo": ("trades", "quotes"),
    "mbp-10": ("trades", "book", "depth"),
    "trades": ("trades",),
    "bbo-1s": ("quotes",),
    "bbo-1m": ("quotes",),
    "cbbo-1s": ("quotes",),
    "cbbo-1m": ("quotes",),
    "cmbp-1": ("trades", "quotes"),
    "tcbbo": ("trades", "quotes"),
    "status": ("status",),
    "ohlcv-1s": ("ohlcv",),
    "ohlcv-1m": ("ohlcv",),
    "ohlcv-1h": ("ohlcv",),
    "ohlcv-1d": ("ohlcv",),
    "ohlcv-eod": ("ohlcv",),
    "definition": ("definitions",),
    "statistics": ("statistics",),
    "imbalance": ("imbalance",),
}

_TRADE = ord("T")
_ADD, _MODIFY, _CANCEL, _DELETE = ord("A"), ord("M"), ord("C"), ord("D")
_BID = ord("B")
_I32_MAX = np.iinfo(np.int32).max
_I64_MAX = np.iinfo(np.int64).max
_SCHEMA_TIMEFRAME = {
    "ohlcv-1s": OHLCV_RTYPES[RType.OHLCV_1S],
    "ohlcv-1m": OHLCV_RTYPES[RType.OHLCV_1M],
    "ohlcv-1h": OHLCV_RTYPES[RType.OHLCV_1H],
    "ohlcv-1d": OHLCV_RTYPES[RType.OHLCV_1D],
    "ohlcv-eod": OHLCV_RTYPES[RType.OHLCV_EOD],
}

#: One port's output: the rows of the input it came from (``None``: all, in order) and the batch.
Output = tuple[np.ndarray | None, np.ndarray]


class Counters:
    """Running ``seq`` for outputs whose DBN records carry no sequence number."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def take(self, port: str, n: int) -> np.ndarray:
        start = self.next.get(port, 0)
        self.next[port] = start + n
        return np.arange(start, start + n, dtype=np.uint64)


def _header(schema, rec: np.ndarray, seq, ts_recv=None) -> np.ndarray:
    out = np.zeros(len(rec), dtype=schema.dtype)  # zeroed padding: same bytes every run
    out["ts_event"] = rec["ts_event"]
    out["ts_recv"] = rec["ts_recv"] if ts_recv is None else ts_recv
    out["seq"] = rec["sequence"] if seq is None else seq(len(rec)) if callable(seq) else seq
    out["instrument_id"] = rec["instrument_id"]
    return out


def _copy(out: np.ndarray, rec: np.ndarray, names) -> np.ndarray:
    for name in names:
        if name in _QUANTITIES:
            out[name] = rec[name].astype(np.int64) * QTY_UNITS  # uint32 / int32: always fits
        else:
            out[name] = rec[name]
    return out


#: Record fields that are quantities: whole units in DBN, 1e-8 fixed-point in hftagg.
_QUANTITIES = frozenset(
    ("size", "bid_sz", "ask_sz", "paired_qty", "total_imbalance_qty", "market_imbalance_qty",
     "unpaired_qty")
)  # fmt: skip


def _scaled(values: np.ndarray, undefined: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Whole units -> 1e-8 fixed-point, checked; DBN's ``undefined`` sentinel -> i64 max."""
    out, ok = scale_integers(values, QTY_UNITS)
    if undefined is not None:
        undef = values == undefined
        out[undef] = _I64_MAX
        ok |= undef
    return out, ok


def _keep(mapped: dict, port: str, out: np.ndarray, ok: np.ndarray, what: str, values) -> dict:
    """Drop the rows of ``out`` that are not ``ok`` into ``mapped[REJECTED]``."""
    if ok.all():
        mapped[port] = (None, out)
        return mapped
    rows = np.flatnonzero(ok)
    bad = np.flatnonzero(~ok)
    mapped[port] = (rows, out[rows])
    details = [f"{what}={int(values[k])} units: above 92233720368.54775807".encode()[:64]
               for k in bad]  # fmt: skip
    mapped[REJECTED] = (bad, details)
    return mapped


def _mbo(rec, ctx) -> dict[str, Output]:
    out = _copy(
        _header(MBO_SCHEMA, rec, None),
        rec,
        ("order_id", "price", "size", "action", "side", "flags"),
    )
    return {"mbo": (None, out)}


def _trades(rec, rows: np.ndarray | None, seq=None) -> Output:
    sub = rec if rows is None else rec[rows]
    out = _copy(_header(TRADE, sub, seq), sub, ("side", "flags", "price", "size"))
    return rows, out


def _quotes(rec, levels, seq=None) -> Output:
    out = _header(QUOTE, rec, seq)
    _copy(out, levels[:, 0], ("bid_px", "ask_px", "bid_sz", "ask_sz"))
    return None, out


def _book(rec, levels) -> Output:
    """Event records to level updates, the new level size read from the record's levels."""
    out = _copy(_header(BOOK_UPDATE, rec, None), rec, ("side", "depth", "flags", "price"))
    action = rec["action"]
    bid = (rec["side"] == _BID)[:, None]
    px = np.where(bid, levels["bid_px"], levels["ask_px"])
    hit = px == rec["price"][:, None]
    found = hit.any(axis=1)
    sizes = np.where(bid, levels["bid_sz"], levels["ask_sz"])
    level_size = sizes[np.arange(len(rec)), hit.argmax(axis=1)]
    level = (action == _ADD) | (action == _MODIFY) | (action == _CANCEL)
    new_action = np.where(found, np.where(action == _ADD, _ADD, _MODIFY), _DELETE)
    out["action"] = np.where(level, new_action, action)
    size = np.where(level, np.where(found, level_size, 0), rec["size"])
    out["size"] = size.astype(np.int64) * QTY_UNITS
    return None, out


def _trade_rows(rec) -> np.ndarray | None:
    mask = rec["action"] == _TRADE
    if mask.all():
        return None
    return np.flatnonzero(mask)


def _mbp1(rec, ctx) -> dict[str, Output]:
    levels = rec["levels"]
    if ctx.tbbo:
        return {"trades": _trades(rec, None), "quotes": _quotes(rec, levels)}
    return {
        "trades": _trades(rec, _trade_rows(rec)),
        "quotes": _quotes(rec, levels),
        "book": _book(rec, levels),
    }


def _mbp10(rec, ctx) -> dict[str, Output]:
    levels = rec["levels"]
    depth = _header(MBP10, rec, None)
    for name in ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct"):
        depth[name] = levels[name]
    depth["bid_sz"] *= QTY_UNITS  # uint32 sizes: always fit
    depth["ask_sz"] *= QTY_UNITS
    return {
        "trades": _trades(rec, _trade_rows(rec)),
        "book": _book(rec, levels),
        "depth": (None, depth),
    }


def _bbo(rec, ctx) -> dict[str, Output]:
    return {"quotes": _quotes(rec, rec["levels"])}


def _running(ctx, port: str):
    """``seq`` for records without a DBN sequence: a running count per output port."""
    return lambda n: ctx.counters.take(port, n)


def _cbbo(rec, ctx) -> dict[str, Output]:
    return {"quotes": _quotes(rec, rec["levels"], _running(ctx, "quotes"))}


def _cmbp1(rec, ctx) -> dict[str, Output]:
    rows = None if ctx.rtype == RType.TCBBO else _trade_rows(rec)
    return {
        "trades": _trades(rec, rows, _running(ctx, "trades")),
        "quotes": _quotes(rec, rec["levels"], _running(ctx, "quotes")),
    }


_STATUS_FIELDS = tuple(
    n for n in STATUS.dtype.names if n not in ("ts_event", "ts_recv", "seq", "instrument_id")
)


def _status(rec, ctx) -> dict[str, Output]:
    out = _header(STATUS, rec, ctx.counters.take("status", len(rec)))
    _copy(out, rec, _STATUS_FIELDS)
    return {"status": (None, out)}


def _trades_only(rec, ctx) -> dict[str, Output]:
    return {"trades": _trades(rec, None)}


def _ohlcv(rec, ctx) -> dict[str, Output]:
    timeframe = OHLCV_RTYPES.get(ctx.rtype) or _SCHEMA_TIMEFRAME.get(ctx.schema or "", 0)
    close = rec["ts_event"].astype(np.int64) + np.int64(timeframe)
    out = _header(BAR, rec, ctx.counters.take("ohlcv", len(rec)), ts_recv=close)
    out["ts_event"] = close
    _copy(out, rec, ("open", "high", "low", "close"))
    out["volume"], ok = _scaled(rec["volume"], None)
    out["timeframe_ns"] = timeframe
    out["trade_count"] = 0
    out["synthetic"] = 0
    out["vwap"] = np.nan
    return _keep({}, "ohlcv", out, ok, "volume", rec["volume"])


_DEF_FIELDS = tuple(
    n
    for n in INSTRUMENT_DEFINITION.dtype.names
    if n not in ("ts_event", "ts_recv", "seq", "instrument_id")
)


#: Definition quantities and DBN's "undefined" for each (u32 max / i32 max).
_DEF_QUANTITIES = {
    "max_trade_vol": 2**32 - 1,
    "min_trade_vol": 2**32 - 1,
    "min_lot_size": _I32_MAX,
    "min_lot_size_round_lot": _I32_MAX,
}


def _definition(rec, ctx) -> dict[str, Output]:
    out = _header(INSTRUMENT_DEFINITION, rec, ctx.counters.take("definitions", len(rec)))
    _copy(out, rec, [n for n in _DEF_FIELDS if n not in _DEF_QUANTITIES])
    for name, undefined in _DEF_QUANTITIES.items():
        out[name] = _scaled(rec[name], undefined)[0]  # 32-bit: always fits
    return {"definitions": (None, out)}


_STAT_FIELDS = (
    "ts_ref",
    "price",
    "ts_in_delta",
    "stat_type",
    "channel_id",
    "publisher_id",
    "update_action",
    "stat_flags",
)


def _statistics(rec, ctx) -> dict[str, Output]:
    out = _copy(_header(STATISTICS, rec, None), rec, _STAT_FIELDS)
    quantity = rec["quantity"]
    undefined = _I32_MAX if quantity.dtype.itemsize == 4 else _I64_MAX  # DBN 1/2: i32
    out["quantity"], ok = _scaled(quantity, undefined)
    return _keep({}, "statistics", out, ok, "quantity", quantity)


_IMBALANCE_FIELDS = tuple(
    n for n in IMBALANCE.dtype.names if n not in ("ts_event", "ts_recv", "seq", "instrument_id")
)


def _imbalance(rec, ctx) -> dict[str, Output]:
    out = _header(IMBALANCE, rec, ctx.counters.take("imbalance", len(rec)))
    _copy(out, rec, _IMBALANCE_FIELDS)
    return {"imbalance": (None, out)}


_MAPPERS: dict[int, Callable] = {
    RType.MBO: _mbo,
    RType.MBP_0: _trades_only,
    RType.MBP_1: _mbp1,
    RType.TBBO: _mbp1,
    RType.MBP_10: _mbp10,
    RType.BBO_1S: _bbo,
    RType.BBO_1M: _bbo,
    RType.CBBO_1S: _cbbo,
    RType.CBBO_1M: _cbbo,
    RType.CMBP_1: _cmbp1,
    RType.TCBBO: _cmbp1,
    RType.STATUS: _status,
    RType.INSTRUMENT_DEF: _definition,
    RType.STATISTICS: _statistics,
    RType.IMBALANCE: _imbalance,
    **{rtype: _ohlcv for rtype in OHLCV_RTYPES},
}


class MapContext:
    """What a mapper needs besides the records: rtype, the file's schema, running counters."""

    def __init__(self, rtype: int, schema: str | None, counters: Counters) -> None:
        self.rtype = rtype
        self.schema = schema
        self.counters = counters
        self.tbbo = rtype == RType.TBBO or (rtype == RType.MBP_1 and schema == "tbbo")


def map_records(
    rec: np.ndarray, rtype: int, schema: str | None, counters: Counters
) -> dict[str, Output]:
    """hftagg batches for DBN records ``rec`` of one ``rtype``; ``{port: (rows, batch)}``."""
    return _MAPPERS[rtype](rec, MapContext(rtype, schema, counters))
