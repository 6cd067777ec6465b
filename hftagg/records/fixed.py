"""Fixed-point scales and ranges of prices and quantities, and exact decimal conversions.

Every price and every quantity in hftagg's records is a signed 64-bit integer counting a fixed
unit. The scales are constants (one for prices, one for quantities), never per-record or
per-instrument, so any two records can be compared and summed without knowing where they came
from, and a kernel never looks a scale up.

========== ================ ====== ============================================================
what       field dtype      scale  range (both signs; the raw int64 limit is 2**63 - 1)
========== ================ ====== ============================================================
price      int64            1e-9   +-9,223,372,036.854775807
quantity   int64            1e-8   +-92,233,720,368.54775807
========== ================ ====== ============================================================

Quantities are sizes (trade, quote, book levels, MBO orders), bar ``volume``, order and fill
sizes (filled / leaves), positions and every input of VWAP and notional computations. Counts
(``trade_count``, ``bid_ct``) stay unsigned integers; derived values (VWAP, notional, P&L,
indicators) are float64.

Why these scales
----------------
*Prices: 1e-9.* DBN's convention (``FIXED_PRICE_SCALE``), which hftagg's DBN, SBE and CME
MDP 3.0 (PRICE9) mappings copy with no arithmetic. It covers sub-satoshi token prices
(0.000001234 USDT) and, at 9.2e9, every real price in any quote currency we know of; a price
above that is dead-lettered.

*Quantities: 1e-8.* What real venues need, against what an int64 holds:

- Crypto lots go down to 1e-8 (one satoshi of BTC on Coinbase, Kraken and Bitstamp; Binance's
  ``stepSize`` is at most 8 decimals and its balances are 8-decimal fixed point). Equities,
  futures and options trade integers; FX in units. Nothing we have seen needs 1e-9.
- Single levels and orders of tens of billions of units occur for low-priced tokens
  (SHIB, PEPE: 1e10+ per order). With int64, 1e-8 leaves 9.2e10 units; 1e-9 (DBN's price
  scale, NautilusTrader's default 64-bit precision 9) would leave 9.2e9, too little for those
  tokens. The largest ``LOT_SIZE.maxQty`` values Binance publishes (4.6e10 for such tokens)
  fit 1e-8 and would not fit 1e-9.
- NautilusTrader solves the same trade-off with a compile-time choice between 64-bit raw
  values at precision 9 and 128-bit ones at precision 16. numba and numpy have no 128-bit
  integer, and two words per quantity would halve the throughput of every kernel, so hftagg
  takes the one 64-bit scale that covers both ends.
- DBN's integer sizes (uint32) become ``size * 10**8``: at most 4.3e17 raw, always exact.
  CME MDP3 int32 sizes likewise. FIX and JSON decimal strings convert digit by digit.

Signed, so a position or a change can be negative; a size below zero is a validation matter
(``validation`` dead-letters it), not a representation one. ``-2**63`` is not used (the range is
symmetric).

Accumulators have the same range: a bar's ``volume`` and a position hold at most 9.2e10 units.
That is about a day of SHIB on the busiest venue; a trade that would take a bar's volume past
it is dead-lettered by the bar stage (use a shorter timeframe), never wrapped.

Conversions
-----------
Decimal text converts to fixed-point exactly, with no float anywhere (:func:`parse_decimals`
for a batch, :func:`parse_fixed` inside compiled kernels, :func:`to_fixed` for one value): a
sign, digits with an optional point, an optional exponent (``1.5e-3``). More decimals than
the scale holds are accepted only when the extra digits are zeros (``"0.100000000000"``);
otherwise the value is *rejected* as too precise, never rounded. A value outside the range is
rejected as out of range. :func:`format_fixed` writes the shortest exact decimal back.

Wherever a decoder or mapping meets a value it cannot represent, it dead-letters the record
with one of :class:`FixedReason`'s codes and a detail naming the field and the value
(:func:`detail`), and counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numba
import numpy as np

from hftagg.errors import FixedPointError
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.records.reasons import REASONS

__all__ = [
    "PRICE_FIELDS",
    "QTY_FIELDS",
    "field_decimals",
    "EMPTY",
    "INT64_MAX",
    "OK",
    "OUT_OF_RANGE",
    "PRICE_DECIMALS",
    "PRICE_MAX",
    "PRICE_UNITS",
    "QTY_DECIMALS",
    "QTY_MAX",
    "QTY_SCALE",
    "QTY_UNITS",
    "STATUS_TEXT",
    "SYNTAX",
    "TOO_PRECISE",
    "FixedPointError",
    "FixedReason",
    "detail",
    "format_fixed",
    "from_fixed",
    "parse_decimals",
    "parse_fixed",
    "parse_spans",
    "scale_integers",
    "to_fixed",
    "warm",
]


INT64_MAX = 2**63 - 1
PRICE_DECIMALS = 9
PRICE_UNITS = 10**PRICE_DECIMALS  # raw units per 1.0
QTY_DECIMALS = 8
QTY_UNITS = 10**QTY_DECIMALS
QTY_SCALE = 1e-8
PRICE_MAX = Decimal(INT64_MAX).scaleb(-PRICE_DECIMALS)  # 9223372036.854775807
QTY_MAX = Decimal(INT64_MAX).scaleb(-QTY_DECIMALS)  # 92233720368.54775807

# parse status (uint8)
OK = 0
EMPTY = 1  # no characters
SYNTAX = 2  # not a decimal number (letters, spaces, two points, a bare sign or exponent)
TOO_PRECISE = 3  # a non-zero digit beyond the scale's decimals
OUT_OF_RANGE = 4  # beyond +-(2**63 - 1) raw units

STATUS_TEXT = {
    OK: "ok",
    EMPTY: "empty",
    SYNTAX: "not a decimal number",
    TOO_PRECISE: "more decimals than the scale holds",
    OUT_OF_RANGE: "outside the int64 range",
}


class FixedReason:
    """Dead-letter reason codes (``dead_letter.reason``) for values that cannot be represented.

    Codes 0x0200..0x02FF belong to the records layer (owner ``records`` in
    :data:`hftagg.records.reasons.REASONS`), whichever decoder found the value.
    """

    NOT_A_NUMBER = 0x0201  # the text is not a decimal number (or is empty)
    TOO_PRECISE = 0x0202  # more decimals than the field's scale (would need rounding)
    OUT_OF_RANGE = 0x0203  # beyond the field's range (would wrap or truncate)

    NAMES = {
        NOT_A_NUMBER: "not_a_number",
        TOO_PRECISE: "too_precise",
        OUT_OF_RANGE: "out_of_range",
    }

    @staticmethod
    def of_status(status: int) -> int:
        """The reason code for a parse status (``OK`` has none: 0)."""
        return {OK: 0, EMPTY: 0x0201, SYNTAX: 0x0201, TOO_PRECISE: 0x0202}.get(status, 0x0203)


REASONS.register_all("records", {
    FixedReason.NOT_A_NUMBER: ("not_a_number", "a price or quantity that is not a decimal number"),
    FixedReason.TOO_PRECISE: ("too_precise", "more decimals than the field's fixed-point scale"),
    FixedReason.OUT_OF_RANGE: ("out_of_range", "beyond the field's int64 fixed-point range"),
})  # fmt: skip


# --------------------------------------------------------------------------- parsing


@numba.njit(inline="always", **_NJIT)
def _digit(c):
    return 48 <= c <= 57


@numba.njit(**_NJIT)
def parse_fixed(buf, a, b, decimals):  # noqa: C901 - one pass, early exits
    """Decimal text in ``buf[a:b]`` (uint8 or uint32 code points) as int64 units of
    ``10**-decimals``: ``(status, value)``, status one of ``OK``, ``EMPTY``, ``SYNTAX``,
    ``TOO_PRECISE``, ``OUT_OF_RANGE`` (value 0 unless ``OK``). Trailing NUL bytes (numpy's
    fixed-width padding) end the text.
    """
    while b > a and buf[b - 1] == 0:
        b -= 1
    if a >= b:
        return EMPTY, np.int64(0)
    p = a
    neg = False
    if buf[p] == 45 or buf[p] == 43:
        neg = buf[p] == 45
        p += 1
    int_a = p
    while p < b and _digit(buf[p]):
        p += 1
    int_b = p
    frac_a = p
    frac_b = p
    if p < b and buf[p] == 46:
        p += 1
        frac_a = p
        while p < b and _digit(buf[p]):
            p += 1
        frac_b = p
    n_digits = (int_b - int_a) + (frac_b - frac_a)
    if n_digits == 0:
        return SYNTAX, np.int64(0)
    exp = 0
    if p < b and (buf[p] == 101 or buf[p] == 69):
        p += 1
        exp_neg = False
        if p < b and (buf[p] == 45 or buf[p] == 43):
            exp_neg = buf[p] == 45
            p += 1
        exp_a = p
        while p < b and _digit(buf[p]):
            exp = min(exp * 10 + (buf[p] - 48), 1_000_000)
            p += 1
        if p == exp_a:
            return SYNTAX, np.int64(0)
        if exp_neg:
            exp = -exp
    if p != b:
        return SYNTAX, np.int64(0)
    # value = mantissa digits * 10**shift
    shift = exp - (frac_b - frac_a) + decimals
    keep = n_digits + shift if shift < 0 else n_digits
    v = np.int64(0)
    over = False
    k = 0
    for q in range(int_a, frac_b):
        if q == int_b:
            continue  # the point
        d = np.int64(buf[q] - 48)
        if k < keep:
            if not over:
                if v > (INT64_MAX - d) // 10:
                    over = True
                else:
                    v = v * 10 + d
        elif d != 0:
            return TOO_PRECISE, np.int64(0)
        k += 1
    if over:
        return OUT_OF_RANGE, np.int64(0)
    if v != 0:
        for _ in range(max(shift, 0)):
            if v > INT64_MAX // 10:
                return OUT_OF_RANGE, np.int64(0)
            v *= 10
    return OK, -v if neg else v


@numba.njit(**_NJIT)
def _parse_rows(mat, decimals, out, status):
    for i in range(mat.shape[0]):
        s, v = parse_fixed(mat[i], 0, mat.shape[1], decimals)
        status[i] = s
        out[i] = v


@numba.njit(**_NJIT)
def parse_spans(buf, starts, ends, decimals, out, status):
    """Parse ``buf[starts[i]:ends[i]]`` for every ``i`` (e.g. values located in a raw JSON or
    FIX buffer) into ``out`` (int64) and ``status`` (uint8)."""
    for i in range(starts.shape[0]):
        s, v = parse_fixed(buf, starts[i], ends[i], decimals)
        status[i] = s
        out[i] = v


def _as_code_matrix(strings) -> np.ndarray:
    """A 2-D uint8 (bytes) or uint32 (str) matrix, one row per string."""
    arr = np.asarray(strings)
    if arr.dtype.kind not in "SU":
        if arr.dtype.kind == "O" or arr.size == 0:
            items = list(arr.ravel())
            if all(isinstance(x, bytes) for x in items):
                arr = np.array(items, dtype="S") if items else np.zeros(0, dtype="S1")
            else:
                arr = np.array([x if isinstance(x, str) else str(x) for x in items], dtype="U")
        else:
            raise TypeError(f"expected strings (numpy S/U array or a sequence), got {arr.dtype}")
    arr = np.ascontiguousarray(arr.ravel())
    width = max(arr.dtype.itemsize // (1 if arr.dtype.kind == "S" else 4), 1)
    if arr.dtype.itemsize == 0:
        return np.zeros((len(arr), 1), dtype=np.uint8)
    codes = np.uint8 if arr.dtype.kind == "S" else np.uint32
    return arr.view(codes).reshape(len(arr), width)


def parse_decimals(
    strings: np.ndarray | Sequence[str | bytes], decimals: int = QTY_DECIMALS
) -> tuple[np.ndarray, np.ndarray]:
    """Decimal strings -> ``(values int64, status uint8)``, exactly, in one compiled pass.

    ``strings``: a numpy ``S`` (bytes) or ``U`` (str) array, or a sequence of str/bytes.
    ``decimals``: 8 for quantities (:data:`QTY_DECIMALS`), 9 for prices. Where ``status`` is not
    ``OK`` the value is 0 and the string was rejected (see :data:`STATUS_TEXT`).
    """
    if not 0 <= decimals <= 18:
        raise ValueError(f"decimals = {decimals}: expected 0..18")
    mat = _as_code_matrix(strings)
    out = np.zeros(mat.shape[0], dtype=np.int64)
    status = np.zeros(mat.shape[0], dtype=np.uint8)
    if mat.shape[0]:
        _parse_rows(mat, decimals, out, status)
    return out, status


def to_fixed(text: str | bytes | int | Decimal, decimals: int = QTY_DECIMALS, field: str = "value"):
    """One value -> int units of ``10**-decimals``; raises :class:`FixedPointError` naming the
    field and the value when it cannot be represented exactly."""
    if isinstance(text, (int, Decimal)) and not isinstance(text, bool):
        text = str(text)
    values, status = parse_decimals([text], decimals)
    if status[0] != OK:
        raise FixedPointError(
            f"{field} = {text!r}: {STATUS_TEXT[int(status[0])]} (fixed-point with {decimals} "
            f"decimals holds +-{Decimal(INT64_MAX).scaleb(-decimals)} in steps of "
            f"1e-{decimals}); send it in the field's unit or fix the source"
        )
    return int(values[0])


# --------------------------------------------------------------------------- formatting

_WIDTH = 22  # sign, 19 digits, point, one leading zero


@numba.njit(**_NJIT)
def _format_rows(values, decimals, out):
    buf = np.zeros(_WIDTH, dtype=np.uint8)
    for i in range(values.shape[0]):
        v = values[i]
        neg = v < 0
        u = np.uint64(-(v + 1)) + np.uint64(1) if neg else np.uint64(v)
        p = _WIDTH
        k = 0
        started = False  # a non-zero fraction digit (or the point) was written
        while u != 0 or k <= decimals:
            d = np.uint8(u % np.uint64(10))
            u = u // np.uint64(10)
            if k < decimals:
                if started or d != 0:
                    p -= 1
                    buf[p] = 48 + d
                    started = True
            else:
                if k == decimals and started:
                    p -= 1
                    buf[p] = 46
                p -= 1
                buf[p] = 48 + d
            k += 1
        if neg:
            p -= 1
            buf[p] = 45
        n = _WIDTH - p
        for j in range(n):
            out[i, j] = buf[p + j]


def format_fixed(values: np.ndarray, decimals: int = QTY_DECIMALS) -> np.ndarray:
    """int64 fixed-point -> the shortest exact decimal strings (numpy ``S22``): ``12000000`` at
    8 decimals -> ``b"0.12"``; ``-5`` -> ``b"-0.00000005"``; no exponent, no float."""
    values = np.ascontiguousarray(values, dtype=np.int64).ravel()
    out = np.zeros((len(values), _WIDTH), dtype=np.uint8)
    if len(values):
        _format_rows(values, decimals, out)
    return out.view(f"S{_WIDTH}").ravel()


def from_fixed(value: int, decimals: int = QTY_DECIMALS) -> Decimal:
    """One raw value as an exact :class:`~decimal.Decimal` (for display and tests)."""
    return Decimal(int(value)).scaleb(-decimals)


# --------------------------------------------------------------------------- integers


def scale_integers(values: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Integers in whole units (DBN's uint32 sizes, MDP3's int32) -> ``(values * factor as
    int64, ok)``; ``ok`` is False (and the value 0) where the product would leave the int64
    range. Exact: integer arithmetic only."""
    values = np.asarray(values)
    if values.dtype.kind not in "iub":
        raise TypeError(f"scale_integers takes integers, got {values.dtype}")
    limit = INT64_MAX // int(factor)
    if values.dtype.kind == "u":
        ok = values <= np.uint64(limit)
    else:
        ok = (values <= limit) & (values >= -limit)
    out = np.where(ok, values, 0).astype(np.int64) * np.int64(factor)
    return out, ok


# --------------------------------------------------------------------------- dead letters


def detail(field: str, value: object, status: int) -> bytes:
    """A ``dead_letter.detail`` (at most 64 bytes) naming the field and the value:
    ``b"size='1e-9': more decimals than the scale holds"``."""
    if isinstance(value, bytes):
        value = value.rstrip(b"\0").decode("latin-1")
    text = f"{field}={str(value)[:24]!r}: {STATUS_TEXT.get(int(status), 'bad value')}"
    return text.encode()[:64]


#: the catalog's fixed-point fields (int64) by name: prices at 1e-9, quantities at 1e-8.
#: One list for every tool that prints or exports records (``hftagg tail`` today).
PRICE_FIELDS = frozenset({"price", "bid_px", "ask_px", "open", "high", "low", "close"})
QTY_FIELDS = frozenset({"size", "bid_sz", "ask_sz", "volume", "filled", "leaves", "position"})


def field_decimals(name: str, dtype: np.dtype) -> int | None:
    """The decimals of a fixed-point field (prices 9, quantities 8), or None if it is not one.

    Only int64 fields are fixed-point: while a quantity is still a plain integer count
    (uint32 sizes), it prints as that integer.
    """
    base = dtype.base if dtype.shape else dtype
    if base != np.dtype("<i8"):
        return None
    if name in PRICE_FIELDS:
        return PRICE_DECIMALS
    if name in QTY_FIELDS:
        return QTY_DECIMALS
    return None


def warm() -> None:
    """Compile the parsers and the formatter for bytes and str input."""
    parse_decimals(np.array([b"1.5"]), QTY_DECIMALS)
    parse_decimals(np.array(["1.5"]), PRICE_DECIMALS)
    buf = np.frombuffer(b"1.5", dtype=np.uint8)
    parse_spans(buf, np.zeros(1, np.int64), np.full(1, 3, np.int64), QTY_DECIMALS,
                np.zeros(1, np.int64), np.zeros(1, np.uint8))  # fmt: skip
    format_fixed(np.array([1], dtype=np.int64))
