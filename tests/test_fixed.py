"""Exact decimal <-> fixed-point conversions (hftagg.records.fixed), checked against ``decimal``."""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext

import numpy as np
import pytest

from hftagg.records.fixed import (
    EMPTY,
    INT64_MAX,
    OK,
    OUT_OF_RANGE,
    PRICE_DECIMALS,
    QTY_DECIMALS,
    QTY_MAX,
    SYNTAX,
    TOO_PRECISE,
    FixedPointError,
    FixedReason,
    detail,
    format_fixed,
    parse_decimals,
    parse_spans,
    scale_integers,
    to_fixed,
)

_GRAMMAR = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z", re.ASCII)  # ASCII digits only


def reference(text: str, decimals: int) -> tuple[int, int]:
    """What the parser must answer, computed with Python's decimal at unlimited precision."""
    if text == "":
        return EMPTY, 0
    if not _GRAMMAR.match(text):
        return SYNTAX, 0
    with localcontext() as ctx:
        ctx.prec = 100_000
        ctx.Emax, ctx.Emin = MAX_EMAX, MIN_EMIN
        scaled = Decimal(text).scaleb(decimals)
        if scaled != scaled.to_integral_value():
            return TOO_PRECISE, 0
        if abs(scaled) > INT64_MAX:
            return OUT_OF_RANGE, 0
        return OK, int(scaled)


def random_strings(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        s = rng.choice(["", "", "-", "+"])
        s += "0" * int(rng.integers(0, 3)) if rng.random() < 0.2 else ""
        s += "".join(rng.choice(list("0123456789"), int(rng.integers(0, 14))))
        if rng.random() < 0.7:
            s += "." + "".join(rng.choice(list("0123456789"), int(rng.integers(0, 13))))
        if rng.random() < 0.1:
            s += "0" * int(rng.integers(1, 6))  # trailing zeros past the scale
        if rng.random() < 0.2:
            s += rng.choice(["e", "E"]) + rng.choice(["", "-", "+"])
            s += str(int(rng.integers(0, 25)))
        if rng.random() < 0.05 and s:  # a stray character somewhere
            k = int(rng.integers(0, len(s) + 1))
            s = s[:k] + str(rng.choice(list(" x._e-+,"))) + s[k:]
        out.append(s)
    return out


EDGES = [
    "0", "-0", "+0", "0.0", ".5", "5.", "007", "000.00012", "0.00000001", "0.000000001",
    "0.000000010", "0.100000000000", "22000000", "22,000,000", "1e-8", "1e-9", "1E+10",
    "1.5e-3", "0e999999999", "1e-999999999", "1e999999999", "92233720368.54775807",
    "92233720368.54775808", "-92233720368.54775807", "-92233720368.54775808",
    "9223372036854775807", "99999999999999999999999", "12345678901234567890.1", "1e", "1e+",
    "e5", ".", "-", "+", "--1", "1.2.3", " 1", "1 ", "1_000", "inf", "nan", "NaN", "Infinity",
    "0x10", "١", "1\u00a0", "",
]  # fmt: skip


@pytest.mark.parametrize("decimals", [QTY_DECIMALS, PRICE_DECIMALS, 0])
def test_parse_matches_decimal_on_random_and_edge_strings(decimals):
    strings = random_strings(np.random.default_rng(decimals), 20_000) + EDGES

    values, status = parse_decimals(strings, decimals)

    expected = [reference(s, decimals) for s in strings]
    mismatches = [
        (s, int(st), int(v), e)
        for s, st, v, e in zip(strings, status, values, expected, strict=True)
        if (int(st), int(v)) != e
    ]
    assert mismatches == []
    assert {int(s) for s in status} == {OK, EMPTY, SYNTAX, TOO_PRECISE, OUT_OF_RANGE}


def test_bytes_str_and_object_arrays_parse_alike():
    texts = ["0.00012", "22000000", "-1.5", "1e-9", "x"]
    as_str, st_str = parse_decimals(np.array(texts))
    as_bytes, st_bytes = parse_decimals(np.array([t.encode() for t in texts]))
    as_list, st_list = parse_decimals(texts)

    assert as_str.tolist() == as_bytes.tolist() == as_list.tolist()
    assert as_str.tolist() == [12_000, 2_200_000_000_000_000, -150_000_000, 0, 0]
    assert st_str.tolist() == st_bytes.tolist() == st_list.tolist() == [0, 0, 0, 3, 2]


def test_crypto_quantities_that_uint32_could_not_hold_are_exact():
    values, status = parse_decimals(["0.00012", "22000000", "46116860414.12345678"])

    assert status.tolist() == [OK, OK, OK]
    assert values.tolist() == [12_000, 22_000_000 * 10**8, 4_611_686_041_412_345_678]


def test_spans_in_a_raw_buffer_parse_in_place():
    raw = b'{"p":"65000.12","q":"0.00012"}'
    buf = np.frombuffer(raw, dtype=np.uint8)
    starts = np.array([raw.index(b"65"), raw.index(b"0.0")], dtype=np.int64)
    ends = starts + np.array([8, 7])
    out, status = np.zeros(2, np.int64), np.zeros(2, np.uint8)

    parse_spans(buf, starts, ends, QTY_DECIMALS, out, status)

    assert status.tolist() == [OK, OK]
    assert out.tolist() == [6_500_012_000_000, 12_000]


def test_format_is_the_shortest_exact_decimal_and_round_trips():
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.integers(-(2**63) + 1, 2**63 - 1, 20_000, dtype=np.int64),
        rng.integers(-10**10, 10**10, 20_000, dtype=np.int64),
        np.array([0, 1, -1, 10**8, -(10**8), 12_000, INT64_MAX, -INT64_MAX], dtype=np.int64),
    ])  # fmt: skip

    text = format_fixed(values, QTY_DECIMALS)
    back, status = parse_decimals(text, QTY_DECIMALS)

    assert (status == OK).all()
    assert np.array_equal(back, values)
    expected = [str(Decimal(int(v)).scaleb(-8).normalize()) for v in values[:2000]]
    expected = [format(Decimal(e), "f") for e in expected]
    assert [t.decode() for t in text[:2000]] == expected
    assert format_fixed(np.array([12_000, 2_200_000_000_000_000, -5])).tolist() == [
        b"0.00012",
        b"22000000",
        b"-0.00000005",
    ]


def test_to_fixed_names_the_field_the_value_and_the_range():
    assert to_fixed("0.00012", field="size") == 12_000

    with pytest.raises(FixedPointError) as err:
        to_fixed("0.000000001", field="size")
    assert "size = '0.000000001'" in str(err.value)
    assert "more decimals" in str(err.value)
    with pytest.raises(FixedPointError, match=re.escape(str(QTY_MAX))):
        to_fixed("1e11", field="size")


def test_scale_integers_is_exact_and_flags_overflow():
    sizes = np.array([0, 1, 2**32 - 1], dtype=np.uint32)
    volume = np.array([1, 2**63 // 10**8 + 1, 2**64 - 1], dtype=np.uint64)

    scaled, ok = scale_integers(sizes, 10**8)
    big, big_ok = scale_integers(volume, 10**8)

    assert ok.all()
    assert scaled.tolist() == [0, 10**8, (2**32 - 1) * 10**8]
    assert big_ok.tolist() == [True, False, False]
    assert big.tolist() == [10**8, 0, 0]


def test_dead_letter_detail_names_field_and_value():
    assert detail("size", b"0.000000001\0\0", TOO_PRECISE) == (
        b"size='0.000000001': more decimals than the scale holds"
    )
    assert FixedReason.of_status(OUT_OF_RANGE) == FixedReason.OUT_OF_RANGE
    assert FixedReason.of_status(SYNTAX) == FixedReason.NOT_A_NUMBER


def test_every_catalog_price_and_quantity_field_is_int64_fixed_point_by_its_name():
    """``field_decimals`` (what ``hftagg tail`` prints by) covers the catalog: each field it
    names is int64 wherever it appears, and trade/quote/bar/order prices and sizes are found."""
    from hftagg.records import catalog
    from hftagg.records.fixed import PRICE_FIELDS, QTY_FIELDS, field_decimals

    schemas = [v for v in vars(catalog).values() if isinstance(v, catalog.Schema)]
    seen = set()
    for schema in schemas:
        for name in schema.dtype.names:
            if name in PRICE_FIELDS | QTY_FIELDS:
                assert schema.dtype[name].base == np.dtype("<i8"), (schema.name, name)
                seen.add(name)
    assert {"price", "size", "bid_px", "ask_sz", "volume", "filled", "leaves"} <= seen
    trade = catalog.TRADE.dtype
    assert field_decimals("price", trade["price"]) == 9
    assert field_decimals("size", trade["size"]) == 8
    assert field_decimals("ts_event", trade["ts_event"]) is None
