"""Records <-> Arrow: exact round trips for every built-in schema, the documented type mapping,
and clear refusals of what a record cannot hold."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from hftagg.errors import SchemaError
from hftagg.records import BUILTIN_SCHEMAS, QUOTE, TRADE
from hftagg.records.arrow import arrow_schema, from_arrow_table, to_arrow_table
from hftagg.records.catalog import ALERT, BAR, DEAD_LETTER, MBP10, RAW_CHUNK
from hftagg.records.fixed import field_decimals

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _random_records(schema, n: int, seed: int = 7) -> np.ndarray:
    """Random bytes in every field (so every bit pattern of every integer occurs), extremes in
    the first rows, NaN/inf in floats, NUL-padded and NUL-containing strings."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * schema.itemsize, dtype=np.uint8)
    out = raw.view(schema.dtype).copy()
    for name in schema.dtype.names:
        dtype = schema.dtype.fields[name][0]
        base = dtype.base
        col = out[name]
        if base.kind in "iu" and len(col) >= 3:
            info = np.iinfo(base)
            col[0] = info.min
            col[1] = info.max
            col[2] = 0
        elif base.kind == "f":
            flat = col.reshape(len(col), -1)
            flat[:] = rng.standard_normal(flat.shape)
            flat[0] = np.nan
            flat[1] = np.inf
            flat[2] = -np.inf
            col[:] = flat.reshape(col.shape)
        elif base.kind == "S":
            col[0] = b""
            col[1] = b"x" * base.itemsize
            col[2] = b"a\0b"  # NUL inside: kept
            col[3:] = [b"v%d" % i for i in range(3, n)]
    return out


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.key)
def test_round_trip_is_exact_for_every_builtin_schema(schema):
    records = _random_records(schema, 257)

    table = to_arrow_table(records, schema)
    back = from_arrow_table(table, schema)

    assert table.num_rows == 257
    assert table.schema.metadata[b"hftagg.schema"] == schema.key.encode()
    assert back.dtype == schema.dtype
    assert back.tobytes() == records.tobytes() or _equal_nan(back, records)


def _equal_nan(a: np.ndarray, b: np.ndarray) -> bool:
    for name in a.dtype.names:
        x, y = a[name], b[name]
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


@pytest.mark.parametrize("schema", BUILTIN_SCHEMAS, ids=lambda s: s.key)
def test_round_trip_through_slices_and_chunks(schema):
    records = _random_records(schema, 50, seed=3)
    table = to_arrow_table(records, schema)
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 30), table.slice(37)])

    back = from_arrow_table(chunked.slice(5, 40), schema)

    assert _equal_nan(back, records[5:45])
    assert from_arrow_table(table.slice(0, 0), schema).shape == (0,)


def test_type_mapping_is_the_documented_one():
    assert arrow_schema(TRADE).field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert arrow_schema(TRADE).field("ts_recv").type == pa.timestamp("ns", tz="UTC")
    assert arrow_schema(TRADE).field("price").type == pa.decimal128(19, 9)
    assert arrow_schema(TRADE).field("size").type == pa.decimal128(19, 8)
    assert arrow_schema(TRADE).field("side").type == pa.uint8()
    assert arrow_schema(TRADE).field("instrument_id").type == pa.uint32()
    assert arrow_schema(BAR).field("timeframe_ns").type == pa.duration("ns")
    assert arrow_schema(BAR).field("vwap").type == pa.float64()
    assert arrow_schema(MBP10).field("bid_px").type == pa.list_(pa.decimal128(19, 9), 10)
    assert arrow_schema(MBP10).field("bid_ct").type == pa.list_(pa.uint32(), 10)
    assert arrow_schema(RAW_CHUNK).field("data").type == pa.binary(4064)
    assert arrow_schema(ALERT).field("text").type == pa.binary()
    assert arrow_schema(DEAD_LETTER).field("detail").type == pa.binary()
    for schema in BUILTIN_SCHEMAS:
        for name in schema.dtype.names:
            decimals = field_decimals(name, schema.dtype.fields[name][0])
            arrow_type = arrow_schema(schema).field(name).type
            if decimals is not None:
                if pa.types.is_fixed_size_list(arrow_type):
                    arrow_type = arrow_type.value_type
                assert arrow_type.scale == decimals


def test_values_read_as_exact_decimals_and_utc_times():
    records = TRADE.empty(3)
    records["ts_event"] = [0, 1_700_000_000_123_456_789, INT64_MAX]
    records["price"] = [INT64_MAX, -1, 123_456_789_012]
    records["size"] = [INT64_MIN, 1, 50_000_000]

    rows = to_arrow_table(records, TRADE).to_pylist()

    assert rows[0]["price"] == Decimal("9223372036.854775807")
    assert rows[1]["price"] == Decimal("-0.000000001")
    assert rows[2]["price"] == Decimal("123.456789012")
    assert rows[0]["size"] == Decimal("-92233720368.54775808")
    assert rows[2]["size"] == Decimal("0.5")
    assert rows[0]["ts_event"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    stamp = to_arrow_table(records, TRADE).column("ts_event")[1]
    assert stamp.value == 1_700_000_000_123_456_789
    assert str(stamp.type.tz) == "UTC"


def test_strings_drop_padding_keep_inner_nuls():
    records = ALERT.empty(3)
    records["text"] = [b"", b"hello", b"a\0b"]

    column = to_arrow_table(records, ALERT).column("text").to_pylist()

    assert column == [b"", b"hello", b"a\0b"]


def test_other_precisions_units_and_zones_convert_exactly():
    records = TRADE.empty(2)
    records["price"] = [1_500_000_000, -2_000_000_000]
    records["ts_event"] = [1_000_000_000_000, 2_000_000_000_000]
    table = to_arrow_table(records, TRADE)
    as_us = table.column("ts_event").cast(pa.timestamp("us", tz="Europe/Paris"))
    as_wide = table.column("price").cast(pa.decimal128(38, 12))
    table = table.set_column(0, "ts_event", as_us).set_column(
        table.schema.get_field_index("price"), "price", as_wide
    )

    back = from_arrow_table(table, TRADE)

    assert back["price"].tolist() == [1_500_000_000, -2_000_000_000]
    assert back["ts_event"].tolist() == [1_000_000_000_000, 2_000_000_000_000]


def test_a_price_needing_rounding_is_refused_naming_the_column():
    records = TRADE.empty(1)
    table = to_arrow_table(records, TRADE)
    wide = pa.array([Decimal("1.0000000001")], type=pa.decimal128(20, 10))
    table = table.set_column(table.schema.get_field_index("price"), "price", wide)

    with pytest.raises(SchemaError, match="'price'"):
        from_arrow_table(table, TRADE)


def test_nulls_refused_in_integers_read_as_nan_in_floats():
    records = QUOTE.empty(2)
    table = to_arrow_table(records, QUOTE)
    index = table.schema.get_field_index("bid_px")
    nulls = pa.array([None, Decimal(1)], type=pa.decimal128(19, 9))

    with pytest.raises(SchemaError, match=r"'bid_px' holds 1 null"):
        from_arrow_table(table.set_column(index, "bid_px", nulls), QUOTE)

    bars = to_arrow_table(BAR.empty(2), BAR)
    vwap = bars.schema.get_field_index("vwap")
    back = from_arrow_table(bars.set_column(vwap, "vwap", pa.array([None, 2.5])), BAR)
    assert np.isnan(back["vwap"][0]) and back["vwap"][1] == 2.5


def test_missing_or_extra_columns_are_named():
    table = to_arrow_table(TRADE.empty(1), TRADE)

    with pytest.raises(SchemaError, match=r"missing columns \['size'\]"):
        from_arrow_table(table.drop_columns(["size"]), TRADE)
    with pytest.raises(SchemaError, match=r"unexpected columns \['extra'\]"):
        from_arrow_table(table.append_column("extra", pa.array([1])), TRADE)


def test_wrong_dtype_is_refused():
    with pytest.raises(SchemaError, match="quote@2"):
        to_arrow_table(TRADE.empty(1), QUOTE)


def test_string_too_long_for_the_field_is_refused():
    table = to_arrow_table(ALERT.empty(1), ALERT)
    index = table.schema.get_field_index("text")
    long = pa.array([b"x" * 49], type=pa.binary())

    with pytest.raises(SchemaError, match="49 bytes do not fit the field's 48"):
        from_arrow_table(table.set_column(index, "text", long), ALERT)
