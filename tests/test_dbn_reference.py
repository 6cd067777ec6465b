"""DBN decoding against the reference reader, the PyPI package ``databento-dbn``.

Every file in ``../shared/data/dbn/`` (DBN 3) is decoded by hftagg and by ``databento_dbn``;
the expected hftagg records are derived from the reference's records, field by field, by the
mapping rules of :mod:`hftagg.builtins.protocols.dbn.mapping`. DBN 1 and 2 files are written with the
reference package's own record classes and metadata encoder (same values, older layouts) and
compared the same way. The reference upgrades older versions to DBN 3 (as hftagg's records are
version-independent), so the comparison is the same for every version. DBN's whole-unit
quantities are expected times ``QTY_UNITS`` (hftagg's 1e-8 fixed point), "undefined" as i64 max.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.protocols.dbn import LAYOUTS, RType, decode_file
from hftagg.builtins.protocols.dbn.layouts import OHLCV_RTYPES
from hftagg.records import QTY_UNITS as Q

dbn_ref = pytest.importorskip("databento_dbn", reason="the reference reader databento-dbn")
zstandard = pytest.importorskip("zstandard", reason="zstandard reads the .dbn.zst test files")

DATA = Path(__file__).parents[1].parent / "shared" / "data" / "dbn"
FILES = sorted(DATA.glob("*.dbn.zst")) if DATA.is_dir() else []
needs_data = pytest.mark.skipif(not FILES, reason=f"shared DBN test data not found at {DATA}")

#: Schemas in the shared folder that hftagg does not map (none at present: all are supported).
UNMAPPED: dict[str, str] = {}

_U64 = (1 << 64) - 1
_I32_MAX, _I64_MAX = 2**31 - 1, 2**63 - 1
_HEADER = ("ts_event", "ts_recv", "seq", "instrument_id")
#: Quantity fields of the generic records and DBN's "undefined" for each (None: no sentinel).
_QUANTITY = {"max_trade_vol": 2**32 - 1, "min_trade_vol": 2**32 - 1, "min_lot_size": _I32_MAX,
             "min_lot_size_round_lot": _I32_MAX, "quantity": _I64_MAX, "paired_qty": None,
             "total_imbalance_qty": None, "market_imbalance_qty": None, "unpaired_qty": None}  # fmt: skip


def _qty(value, undefined=None) -> int:
    """A DBN whole-unit quantity as hftagg's 1e-8 fixed point."""
    return _I64_MAX if undefined is not None and value == undefined else int(value) * Q


def _code(value) -> int:
    """A reference enum / char / int as hftagg's uint8 or integer code."""
    value = getattr(value, "value", value)
    if isinstance(value, str):
        return ord(value) if value else 0
    return int(value)


def _reference(path: Path, raw: bytes | None = None) -> tuple[object, list]:
    if raw is None:
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    decoder = dbn_ref.DBNDecoder()  # upgrades DBN 1/2 to 3, like hftagg's version-free records
    decoder.write(raw)
    records = decoder.decode()
    return records[0], records[1:]


def _ours(path: Path) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for out in decode_file(path, batch_records=3):  # several batches per file
        for port, batch in out.items():
            parts.setdefault(port, []).append(batch)
    return {port: np.concatenate(b) for port, b in parts.items()}


# --------------------------------------------------------------------------- expected records


def _head(r, seq=None, ts_event=None, ts_recv=None) -> dict:
    return {
        "ts_event": r.ts_event if ts_event is None else ts_event,
        "ts_recv": (getattr(r, "ts_recv", None) if ts_recv is None else ts_recv),
        "seq": r.sequence if seq is None else seq,
        "instrument_id": r.instrument_id,
    }


def _trade(r, seq=None) -> dict:
    return {**_head(r, seq=seq), "side": _code(r.side), "flags": r.flags, "price": r.price,
            "size": _qty(r.size)}  # fmt: skip


def _quote(r, seq=None) -> dict:
    return {
        **_head(r, seq=seq),
        "bid_px": r.bid_px_00,
        "ask_px": r.ask_px_00,
        "bid_sz": _qty(r.bid_sz_00),
        "ask_sz": _qty(r.ask_sz_00),
    }


def _book(r, depth: int) -> dict:
    """The level update the mapping documents, computed record by record from the reference."""
    side, action = _code(r.side), _code(r.action)
    out = {
        **_head(r),
        "side": side,
        "depth": r.depth,
        "flags": r.flags,
        "price": r.price,
        "action": action,
        "size": _qty(r.size),
    }
    if chr(action) in "AMC":
        prefix = "bid" if chr(side) == "B" else "ask"
        level = [i for i in range(depth) if getattr(r, f"{prefix}_px_{i:02d}") == r.price]
        if level:
            out["action"] = ord("A") if chr(action) == "A" else ord("M")
            out["size"] = _qty(getattr(r, f"{prefix}_sz_{level[0]:02d}"))
        else:
            out["action"], out["size"] = ord("D"), 0
    return out


def _mbp10(r) -> dict:
    out = _head(r)
    for name in ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct"):
        scale = Q if name.endswith("_sz") else 1
        out[name] = [getattr(r, f"{name}_{i:02d}") * scale for i in range(10)]
    return out


def _bar(r, seq: int, schema: str) -> dict:
    rtype = _code(r.rtype)
    timeframe = OHLCV_RTYPES[rtype]
    close = r.ts_event + timeframe
    return {
        **_head(r, seq=seq, ts_event=close, ts_recv=close),
        "timeframe_ns": timeframe,
        "open": r.open,
        "high": r.high,
        "low": r.low,
        "close": r.close,
        "volume": _qty(r.volume),
        "trade_count": 0,
        "synthetic": 0,
    }


def _fields_of(schema_dtype) -> list[str]:
    return [n for n in schema_dtype.names if n not in _HEADER]


def _generic(r, names, seq=None) -> dict:
    out = _head(r, seq=seq)
    for name in names:
        value = getattr(r, name)
        if name.startswith("is_"):  # the reference reads DBN's TriState as True/False/None
            value = {True: "Y", False: "N", None: "~"}[value]
        text = isinstance(value, str) and len(value) != 1
        out[name] = value if text else _code(value)
        if name in _QUANTITY:
            out[name] = _qty(out[name], _QUANTITY[name])
    return out


def _market_data(r, rtype: int, schema: str, add, count) -> None:
    if rtype == RType.MBO:
        add(
            "mbo",
            {
                **_head(r),
                "order_id": r.order_id,
                "price": r.price,
                "size": _qty(r.size),
                "action": _code(r.action),
                "side": _code(r.side),
                "flags": r.flags,
            },
        )
    elif rtype == RType.MBP_0:
        add("trades", _trade(r))
    elif rtype == RType.MBP_1:
        if schema == "tbbo" or _code(r.action) == ord("T"):
            add("trades", _trade(r))
        add("quotes", _quote(r))
        if schema != "tbbo":
            add("book", _book(r, 1))
    elif rtype == RType.MBP_10:
        if _code(r.action) == ord("T"):
            add("trades", _trade(r))
        add("book", _book(r, 10))
        add("depth", _mbp10(r))
    elif rtype in (RType.CMBP_1, RType.TCBBO):
        if rtype == RType.TCBBO or _code(r.action) == ord("T"):
            add("trades", _trade(r, seq=count("trades")))
        add("quotes", _quote(r, seq=count("quotes")))
    elif rtype in (RType.CBBO_1S, RType.CBBO_1M):
        add("quotes", _quote(r, seq=count("quotes")))
    else:
        add("quotes", _quote(r))  # bbo-1s / bbo-1m


def expected(metadata, records) -> dict[str, list[dict]]:
    """hftagg records per port, derived from the reference's records."""
    from hftagg.builtins.protocols.dbn import IMBALANCE, INSTRUMENT_DEFINITION, STATISTICS, STATUS

    schema = str(getattr(metadata.schema, "value", metadata.schema))
    out: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}

    def add(port, row):
        out.setdefault(port, []).append(row)

    def count(port):
        counts[port] = counts.get(port, 0) + 1
        return counts[port] - 1

    market = (RType.MBO, RType.MBP_0, RType.MBP_1, RType.MBP_10, RType.BBO_1S, RType.BBO_1M,
              RType.CMBP_1, RType.TCBBO, RType.CBBO_1S, RType.CBBO_1M)  # fmt: skip
    for r in records:
        rtype = _code(r.rtype)
        if rtype in market:
            _market_data(r, rtype, schema, add, count)
        elif rtype in OHLCV_RTYPES:
            add("ohlcv", _bar(r, count("ohlcv"), schema))
        elif rtype == RType.INSTRUMENT_DEF:
            add(
                "definitions",
                _generic(r, _fields_of(INSTRUMENT_DEFINITION.dtype), seq=count("definitions")),
            )
        elif rtype == RType.STATISTICS:
            add("statistics", _generic(r, _fields_of(STATISTICS.dtype)))
        elif rtype == RType.IMBALANCE:
            add("imbalance", _generic(r, _fields_of(IMBALANCE.dtype), seq=count("imbalance")))
        elif rtype == RType.STATUS:
            add("status", _generic(r, _fields_of(STATUS.dtype), seq=count("status")))
        else:
            raise AssertionError(f"test has no expectation for rtype {rtype}")
    return out


def _same(ours, theirs) -> bool:
    if isinstance(ours, bytes):
        return ours.decode() == theirs
    if isinstance(ours, np.ndarray):
        return [int(x) for x in ours] == [int(x) for x in theirs]
    if isinstance(ours, float) and np.isnan(ours):
        return False
    return (int(ours) & _U64) == (int(theirs) & _U64)  # DBN u64 stamps are int64 in hftagg


def assert_matches(ours: dict[str, np.ndarray], want: dict[str, list[dict]], label: str):
    dead = ours.pop("dead_letters", None)
    assert dead is None, f"{label}: unexpected dead letters {dead}"
    assert sorted(ours) == sorted(want), f"{label}: ports {sorted(ours)} != {sorted(want)}"
    for port, rows in want.items():
        batch = ours[port]
        assert len(batch) == len(rows), f"{label} {port}: {len(batch)} records, want {len(rows)}"
        for i, row in enumerate(rows):
            for name, value in row.items():
                got = batch[i][name]
                assert _same(got, value), f"{label} {port}[{i}].{name}: {got!r} != {value!r}"
        if port == "ohlcv":
            assert np.isnan(batch["vwap"]).all()


# --------------------------------------------------------------------------- tests


@needs_data
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_shared_file_decodes_like_the_reference(path):
    metadata, records = _reference(path)
    schema = getattr(metadata.schema, "value", metadata.schema)
    if schema in UNMAPPED:
        pytest.skip(f"{path.name}: {UNMAPPED[schema]}")
    assert records, f"{path.name}: reference decoded no records"
    assert_matches(_ours(path), expected(metadata, records), path.name)


@needs_data
def test_every_shared_schema_is_mapped_or_listed_as_skipped():
    from hftagg.builtins.protocols.dbn import SCHEMA_PORTS

    for path in FILES:
        schema = str(getattr(_reference(path)[0].schema, "value", ""))
        assert schema in SCHEMA_PORTS or schema in UNMAPPED, path.name


@needs_data
def test_plain_file_decodes_like_the_compressed_one(tmp_path):
    path = DATA / "test_data.mbp-10.v3.dbn.zst"
    plain = tmp_path / "mbp10.dbn"
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read())
    ours_plain, ours_zstd = _ours(plain), _ours(path)
    assert sorted(ours_plain) == sorted(ours_zstd)
    for port, batch in ours_plain.items():
        for name in batch.dtype.names:
            assert np.array_equal(batch[name], ours_zstd[port][name], equal_nan=True), name


def test_layouts_match_the_reference_record_sizes():
    classes = {
        (RType.MBO, 3): "MBOMsg", (RType.MBP_0, 3): "TradeMsg", (RType.MBP_1, 3): "MBP1Msg",
        (RType.MBP_10, 3): "MBP10Msg", (RType.OHLCV_1S, 3): "OHLCVMsg",
        (RType.BBO_1S, 3): "BBOMsg", (RType.INSTRUMENT_DEF, 1): "InstrumentDefMsgV1",
        (RType.INSTRUMENT_DEF, 2): "InstrumentDefMsgV2", (RType.INSTRUMENT_DEF, 3): "InstrumentDefMsg",
        (RType.STATISTICS, 1): "StatMsgV1", (RType.STATISTICS, 3): "StatMsg",
        (RType.IMBALANCE, 3): "ImbalanceMsg", (RType.CMBP_1, 3): "CMBP1Msg",
        (RType.CBBO_1S, 3): "CBBOMsg", (RType.STATUS, 3): "StatusMsg",
    }  # fmt: skip
    for key, name in classes.items():
        cls = getattr(dbn_ref, name)
        assert LAYOUTS[key].itemsize == cls.size_hint, name
        theirs = np.dtype([(n, t) for n, t in cls._dtypes])
        for field in LAYOUTS[key].names:
            if field.startswith("_") or field == "levels":
                continue
            assert LAYOUTS[key].fields[field][1] == theirs.fields[field][1], f"{name}.{field}"


# --------------------------------------------------------------------------- DBN 1 and 2


def _old_definition(cls, r, version: int, i: int):
    """The reference's v1/v2 definition record with the v3 record's values."""
    kwargs = {}
    for field in cls._ordered_fields:
        if field in ("rtype", "length") or field.startswith("_"):
            continue
        if hasattr(r, field):
            value = getattr(r, field)
        else:  # fields DBN 3 dropped
            value = {
                "trading_reference_price": 12_345 + i,
                "trading_reference_date": 19000 + i,
                "md_security_trading_status": 17,
                "settl_price_type": 3,
            }[field]
        if field == "raw_instrument_id":
            value = value & 0xFFFFFFFF
        if field == "raw_symbol" and version == 1:
            value = value[:21]
        if field == "asset":
            value = value[:6]
        kwargs[field] = value
    return cls(**kwargs)


@needs_data
@pytest.mark.parametrize("version", [1, 2])
def test_older_dbn_versions_decode_like_the_reference(tmp_path, version):
    source = _reference(DATA / "test_data.definition.v3.dbn.zst")[1]
    trades = _reference(DATA / "test_data.trades.v3.dbn.zst")[1]
    def_cls = dbn_ref.InstrumentDefMsgV1 if version == 1 else dbn_ref.InstrumentDefMsgV2
    definitions = [_old_definition(def_cls, r, version, i) for i, r in enumerate(source)]
    stats = [
        dbn_ref.StatMsgV1(
            publisher_id=1,
            instrument_id=7 + i,
            ts_event=1_000 + i,
            ts_recv=2_000 + i,
            ts_ref=3_000,
            price=4_000 * (i + 1),
            quantity=(_I32_MAX if i == 0 else -5 * i),
            stat_type=dbn_ref.StatType.SETTLEMENT_PRICE,
            sequence=40 + i,
            ts_in_delta=11,
            channel_id=2,
            update_action=dbn_ref.StatUpdateAction.NEW,
            stat_flags=i,
        )
        for i in range(3)
    ]
    metadata = dbn_ref.Metadata(
        dataset="GLBX.MDP3",
        start=1,
        stype_in=dbn_ref.SType.RAW_SYMBOL,
        stype_out=dbn_ref.SType.INSTRUMENT_ID,
        schema=None,
        symbols=["ESH1"],
        version=version,
    )
    raw = bytes(metadata) + b"".join(bytes(r) for r in definitions + stats + list(trades))
    path = tmp_path / f"mixed.v{version}.dbn"
    path.write_bytes(raw)
    ref_metadata, ref_records = _reference(path, raw)
    assert ref_metadata.version in (version, 3)
    assert len(ref_records) == len(definitions) + len(stats) + len(trades)
    ours = _ours(path)
    assert ours["statistics"]["quantity"][0] == _I64_MAX  # DBN 1/2 "undefined", upgraded
    assert_matches(ours, expected(ref_metadata, ref_records), f"v{version}")


# --------------------------------------------------------------------------- crafted schemas


def _px(i: int) -> int:
    return (4_500 + i) * 10**9 // 4


def _crafted(schema: str, n: int = 7) -> list:
    """``n`` records of ``schema`` built with the reference's own record classes."""
    pair = dbn_ref.ConsolidatedBidAskPair
    out = []
    for i in range(n):
        head = {"publisher_id": 1 + i % 3, "instrument_id": 100 + i % 2,
                "ts_event": 1_700_000_000_000_000_000 + i * 10**9}  # fmt: skip
        ts_recv = head["ts_event"] + 1_000 + i
        levels = pair(bid_px=_px(i), ask_px=_px(i + 1), bid_sz=10 + i, ask_sz=20 + i,
                      bid_pb=1 + i % 3, ask_pb=2 + i % 2)  # fmt: skip
        side = dbn_ref.Side("BAN"[i % 3])
        if schema == "status":
            out.append(dbn_ref.StatusMsg(
                **head, ts_recv=ts_recv, action=dbn_ref.StatusAction([1, 3, 4, 5, 7][i % 5]),
                reason=dbn_ref.StatusReason([0, 1, 3][i % 3]),
                trading_event=dbn_ref.TradingEvent(i % 3),
                is_trading=dbn_ref.TriState("YN~"[i % 3]),
                is_quoting=dbn_ref.TriState("NY~"[i % 3]),
                is_short_sell_restricted=dbn_ref.TriState("~YN"[i % 3])))  # fmt: skip
        elif schema in ("cbbo-1s", "cbbo-1m"):
            rtype = RType.CBBO_1S if schema == "cbbo-1s" else RType.CBBO_1M
            out.append(dbn_ref.CBBOMsg(
                rtype, head["publisher_id"], head["instrument_id"], head["ts_event"], _px(i) + 1,
                5 + i, side, ts_recv, flags=0x80 if i % 2 else 0, levels=levels))  # fmt: skip
        elif schema == "bbo-1m":
            bidask = dbn_ref.BidAskPair(bid_px=_px(i), ask_px=_px(i + 1), bid_sz=10 + i,
                                        ask_sz=20 + i, bid_ct=i, ask_ct=2 * i)  # fmt: skip
            out.append(dbn_ref.BBOMsg(
                RType.BBO_1M, head["publisher_id"], head["instrument_id"], head["ts_event"],
                _px(i), 5 + i, side, ts_recv, flags=0x80, sequence=900 + i,
                levels=bidask))  # fmt: skip
        elif schema in ("ohlcv-1d", "ohlcv-eod"):
            rtype = RType.OHLCV_1D if schema == "ohlcv-1d" else RType.OHLCV_EOD
            out.append(dbn_ref.OHLCVMsg(
                rtype, head["publisher_id"], head["instrument_id"], head["ts_event"], _px(i),
                _px(i + 3), _px(i - 2), _px(i + 1), 1_000 * i))  # fmt: skip
        else:  # cmbp-1, tcbbo
            rtype = RType.CMBP_1 if schema == "cmbp-1" else RType.TCBBO
            action = dbn_ref.Action("T" if schema == "tcbbo" else "ATCMR"[i % 5])
            out.append(dbn_ref.CMBP1Msg(
                rtype, head["publisher_id"], head["instrument_id"], head["ts_event"], _px(i) + 2,
                3 + i, action, side, ts_recv, flags=0x80, ts_in_delta=-i,
                levels=levels))  # fmt: skip
    return out


#: Schemas the reference decodes that the shared data has no file of: crafted here.
CRAFTED = ("status", "cbbo-1s", "cbbo-1m", "cmbp-1", "tcbbo", "bbo-1m", "ohlcv-1d", "ohlcv-eod")


@pytest.mark.parametrize("schema", CRAFTED)
def test_crafted_schema_decodes_like_the_reference(tmp_path, schema):
    metadata = dbn_ref.Metadata(
        dataset="XNAS.ITCH" if schema == "status" else "EQUS.MINI",
        start=1,
        stype_in=dbn_ref.SType.RAW_SYMBOL,
        stype_out=dbn_ref.SType.INSTRUMENT_ID,
        schema=dbn_ref.Schema.from_str(schema),
        symbols=["AAPL"],
    )
    records = _crafted(schema)
    raw = bytes(metadata) + b"".join(bytes(r) for r in records)
    path = tmp_path / f"crafted.{schema}.dbn"
    path.write_bytes(raw)
    ref_metadata, ref_records = _reference(path, raw)
    assert len(ref_records) == len(records)
    want = expected(ref_metadata, ref_records)
    assert want, schema
    assert_matches(_ours(path), want, schema)


def test_every_schema_the_reference_decodes_is_mapped():
    """The reference package's whole list of schemas, not only those with a shared file."""
    from hftagg.builtins.protocols.dbn import SCHEMA_PORTS

    schemas = {str(s.value) for s in dbn_ref.Schema.variants()}
    assert "status" in schemas and "cbbo-1s" in schemas
    missing = sorted(schemas - set(SCHEMA_PORTS) - set(UNMAPPED))
    assert not missing, f"schemas the reference decodes but dbn_replay does not map: {missing}"
    shared = {p.name.split(".")[1] for p in FILES}
    assert schemas - set(UNMAPPED) <= shared | set(CRAFTED)
