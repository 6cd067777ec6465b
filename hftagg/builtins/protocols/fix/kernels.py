"""FIX tag=value kernels: stream framing with validation, and the market-data batch decoder.

Two compiled passes over a ``uint8`` buffer, Python once per buffer:

``frame`` cuts a byte stream into messages. A message is ``8=<BeginString>|9=<BodyLength>|``,
exactly ``BodyLength`` bytes of body, then ``10=<ddd>|`` where ``ddd`` is the sum of every byte
before the ``10=`` modulo 256 (``|`` is SOH, byte 1). Each span gets a status: ``OK`` or a
reason code (see :data:`REASONS`). Bytes that are not a message (garbage between messages) are
a span of their own; after any error the scan resynchronises on the next ``8=FIX``. A message
that is not complete at the end of the buffer, and a bad span no ``8=FIX`` follows yet, are
left unconsumed (the caller keeps them as the residual and calls again with more bytes),
unless ``final`` is set: every span depends only on the stream, never on how it was chunked.

``decode_md`` turns the ``OK`` spans that are market-data messages -- ``35=W`` snapshot full
refresh and ``35=X`` incremental refresh, repeating group 268 NoMDEntries -- into ``book_update``
and ``trade`` records, with no float arithmetic: prices are parsed digit by digit to int64
fixed-point 1e-9, sizes to int64 fixed-point 1e-8 (:func:`hftagg.records.fixed.parse_fixed`),
SendingTime (52) / TransactTime (60) to UNIX nanoseconds. A price or size that is a number but
cannot be represented -- more decimals than its scale (``271=0.000000001``) or beyond its range
-- makes the message a dead letter with ``FixedReason.TOO_PRECISE`` / ``OUT_OF_RANGE``; the
detail names the tag and the value. Never rounded, never wrapped.
Other message types are skipped (counted). Malformed messages become dead letters as a whole
(no partial output); an entry for an unknown instrument is skipped and reported once per
message while the rest of the message is decoded.

Mapping (DBN's MBP vocabulary):

- W: a clear (``R``, ``F_SNAPSHOT``) for the instrument, then one ``A`` per bid/offer entry
  (``F_SNAPSHOT``); the last book record of the message has ``F_LAST``. Trade entries in a
  snapshot are counted (``other_entry_types``) and not emitted, whatever the dictionary calls
  them: a snapshot's trade entry is the last trade, repeated in every snapshot of the
  instrument, not a new print; emitting it would double-count volume in bars and VWAP.
- X: 279 MDUpdateAction 0/1/2/5 -> ``A``/``M``/``D``/``M``; 269 MDEntryType 0 -> side ``B``,
  1 -> side ``A``, 2 -> a ``trade`` record (side ``N``); the dictionary's other entry types
  are counted and skipped. An entry's instrument (55 Symbol or 48 SecurityID) defaults to the
  previous entry's.
- Well-framed but unusable content makes the message a dead letter, never a guess: an empty or
  undefined MDEntryType (``bad_value``), a bid/offer/trade without MDEntryPx or MDEntrySize (a
  delete may omit the size), a message without SendingTime (52) (``missing_field``, the tag in
  the detail). ``ts_event`` is TransactTime (60) when present, else SendingTime.
  Tag numbers and the two enums come in as arrays built from the data dictionary
  (``tags``/``kinds``/``actions``, see :func:`hftagg.builtins.protocols.fix.decoder.md_tables`); the
  numbers above are FIX 4.4's.
- 279=3 Delete Thru and 279=4 Delete From are dead letters (``bad_value``) unless a dictionary
  maps them otherwise: they delete book *levels by position* (1..n, n..end), and a
  ``book_update`` delete names a price, which this decoder does not know for a level (it keeps
  no book); mapping them needs a per-instrument level ladder here or a delete-by-depth action in
  the book.
- ``depth`` is MDPriceLevel (1023) - 1 (0 when absent); ``seq`` is a contiguous per-instrument
  counter per output. When entries carry RptSeq (83), a jump in it (a lost update) is a dead
  letter and the book ``seq`` skips one, so a downstream book turns invalid until the next
  snapshot; an RptSeq at or below the last one seen (a duplicate) is dropped and counted.

Instruments: either SecurityID (48) read as a uint32, or Symbol (55) looked up by its FNV-1a 64
hash in a sorted table built from a symbol -> id map (see :func:`symbol_hash`).
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import build_table, slot_of
from hftagg.records.fixed import OUT_OF_RANGE, TOO_PRECISE, FixedReason, parse_fixed
from hftagg.records.reasons import REASONS as REGISTRY

__all__ = [
    "KIND_BID",
    "KIND_INVALID",
    "KIND_OFFER",
    "KIND_OTHER",
    "KIND_TRADE",
    "N_TAGS",
    "OK",
    "REASONS",
    "STANDARD_TAGS",
    "decode_md",
    "frame",
    "parse_decimal",
    "symbol_hash",
    "warm",
]


SOH = 1
OK = 0
# Dead-letter reason codes 0x0F00..0x0FFF belong to FIX (hftagg.records.reasons).
# Framing (a span that is not a usable message).
GARBAGE = 0x0F01
BAD_BEGIN_STRING = 0x0F02
BAD_BODY_LENGTH = 0x0F03
BAD_CHECKSUM = 0x0F04
TRUNCATED = 0x0F05
TOO_LARGE = 0x0F06
# Decoding (a well-framed message whose content is unusable).
BAD_FIELD = 0x0F11
BAD_VALUE = 0x0F12
UNKNOWN_INSTRUMENT = 0x0F13
RPTSEQ_GAP = 0x0F14
MISSING_FIELD = 0x0F15
BAD_GROUP = 0x0F16
# A price or size that is a number hftagg cannot represent: the records layer's codes.
_TOO_PRECISE = FixedReason.TOO_PRECISE
_OUT_OF_RANGE = FixedReason.OUT_OF_RANGE

#: reason code -> (name, description) for dead-letter details, logs and metrics.
REASONS: dict[int, tuple[str, str]] = {
    GARBAGE: ("garbage", "bytes between messages that are not a FIX message"),
    BAD_BEGIN_STRING: ("bad_begin_string", "BeginString (8=) missing or not the expected one"),
    BAD_BODY_LENGTH: ("bad_body_length", "BodyLength (9=) missing, not a number or wrong"),
    BAD_CHECKSUM: ("bad_checksum", "CheckSum (10=) does not match the message bytes"),
    TRUNCATED: ("truncated", "message cut short: the next message or the end came first"),
    TOO_LARGE: ("too_large", "BodyLength above the configured maximum"),
    BAD_FIELD: ("bad_field", "a field is not tag=value (tag not a number, no '=')"),
    BAD_VALUE: ("bad_value", "a value is not valid for its tag (price, size, time, action)"),
    UNKNOWN_INSTRUMENT: ("unknown_instrument", "Symbol/SecurityID not in the symbol table"),
    RPTSEQ_GAP: ("rptseq_gap", "RptSeq (83) jumped: updates were lost"),
    MISSING_FIELD: ("missing_field", "a required field is missing"),
    BAD_GROUP: ("bad_group", "NoMDEntries (268) does not match the entries present"),
}
REGISTRY.register_all("fix", REASONS)
# Besides these, a price or size that is a number but cannot be represented is dead-lettered
# with the records layer's FixedReason.TOO_PRECISE / OUT_OF_RANGE (registered by it).

# The tag numbers decode_md reads (``tags[T_*]``), taken from the data dictionary.
T_COUNT = 0  # NoMDEntries (268)
T_ACTION = 1  # MDUpdateAction (279)
T_TYPE = 2  # MDEntryType (269)
T_PRICE = 3  # MDEntryPx (270)
T_SIZE = 4  # MDEntrySize (271)
T_LEVEL = 5  # MDPriceLevel (1023)
T_RPTSEQ = 6  # RptSeq (83)
T_SYMBOL = 7  # Symbol (55)
T_SECURITY_ID = 8  # SecurityID (48)
T_TIME = 9  # TransactTime (60)
T_X_DELIMITER = 10  # first field of an X entry (279)
T_W_DELIMITER = 11  # first field of a W entry (269)
N_TAGS = 12
#: Standard FIX numbers, used for what a dictionary does not define.
STANDARD_TAGS = (268, 279, 269, 270, 271, 1023, 83, 55, 48, 60, 279, 269)
# kinds[byte of MDEntryType] and actions[byte of MDUpdateAction]
KIND_BID = 0
KIND_OFFER = 1
KIND_TRADE = 2
KIND_OTHER = 9  # a valid entry type hftagg does not map: counted and skipped
KIND_INVALID = 10  # not a value of the dictionary's MDEntryType: the message is a dead letter

#: The longest span of bytes that are not a message: one with no ``8=FIX`` after it is held back
#: until one comes, up to this many bytes; then its first ``MAX_SPAN`` bytes go out as a span of
#: their own (a cut at a fixed offset, so still the same whatever the chunking).
MAX_SPAN = 1 << 16

# decode_md status (meta[0]) and aux for detail text
_DONE = 0
_NEED_OUTPUT = 1
_NEED_SLOTS = 2

_ACT_ADD = ord("A")
_ACT_MODIFY = ord("M")
_ACT_DELETE = ord("D")
_ACT_CLEAR = ord("R")
_SIDE_BID = ord("B")
_SIDE_ASK = ord("A")
_SIDE_NONE = ord("N")
F_LAST = 0x80
F_SNAPSHOT = 0x20

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_INT64_MAX = np.int64(0x7FFFFFFFFFFFFFFF)
_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)


def symbol_hash(symbol: str | bytes) -> int:
    """FNV-1a 64 of the symbol's bytes: what the decoder looks a Symbol (55) up by."""
    data = symbol.encode() if isinstance(symbol, str) else symbol
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# --------------------------------------------------------------------------- framing


@numba.njit(inline="always", **_NJIT)
def _is_begin(buf, p, n):
    """``8=FIX`` starts at ``p``."""
    return (p + 5 <= n and buf[p] == 56 and buf[p + 1] == 61 and buf[p + 2] == 70
            and buf[p + 3] == 73 and buf[p + 4] == 88)  # fmt: skip


@numba.njit(**_NJIT)
def _find_begin(buf, p, n):
    """First index >= p where ``8=FIX`` starts, or -1."""
    for q in range(p, n - 4):
        if buf[q] == 56 and _is_begin(buf, q, n):
            return q
    return -1


@numba.njit(**_NJIT)
def _find_inner_begin(buf, a, b, n):
    """First message start inside ``[a, b)``: ``8=FIX`` followed by ``SOH 9=`` within its
    BeginString (so a stray ``8=FIX`` inside a value is not taken for one); -1 if none; -2 if
    the buffer ends before that can be told (a candidate too close to ``n``)."""
    for q in range(a, min(b, n)):
        if buf[q] != 56:
            continue
        if q + 5 > n:
            return -2
        if not _is_begin(buf, q, n):
            continue
        for k in range(q + 5, q + 24):
            if k + 2 >= n:
                return -2
            if buf[k] == SOH:
                if buf[k + 1] == 57 and buf[k + 2] == 61:
                    return q
                break
    return -1


@numba.njit(**_NJIT)
def _is_trailer(buf, q, n):
    """``10=ddd SOH`` at ``q``; returns the checksum value or -1."""
    if q + 7 > n or buf[q] != 49 or buf[q + 1] != 48 or buf[q + 2] != 61 or buf[q + 6] != SOH:
        return -1
    v = 0
    for k in range(3):
        d = buf[q + 3 + k] - 48
        if d < 0 or d > 9:
            return -1
        v = v * 10 + d
    return v


@numba.njit(**_NJIT)
def _read_uint(buf, p, n, limit):
    """Digits from ``p`` up to SOH: ``(value, index of SOH)``; value -1 if not digits, -2 if
    the SOH is not within ``limit`` bytes yet and the buffer ends first."""
    v = np.int64(0)
    q = p
    while q < n and q - p <= limit:
        c = buf[q]
        if c == SOH:
            return (v, q) if q > p else (np.int64(-1), q)
        d = np.int64(c) - 48
        if d < 0 or d > 9:
            return np.int64(-1), q
        v = v * 10 + d
        q += 1
    if q >= n and q - p <= limit:
        return np.int64(-2), q
    return np.int64(-1), q


@numba.njit(**_NJIT)
def _span_end(buf, p, first, n, final):
    """Where a span of bytes that are not a message, starting at ``p``, ends: at the first
    ``8=FIX`` from ``first`` on, but at most ``MAX_SPAN`` bytes from ``p``; at the end if
    ``final``; -1 if that is not known yet (wait for more bytes). It depends only on the stream,
    not on where the buffer ends, so spans are the same whatever the chunking."""
    limit = p + MAX_SPAN
    q = _find_begin(buf, first, min(n, limit + 4))
    if q >= 0:
        return q
    if final:
        return min(n, limit)
    if n >= limit + 4:
        return limit
    return -1


@numba.njit(**_NJIT)
def _resync(buf, p, n, final):
    """Where the span of a bad message at ``p`` ends: the next ``8=FIX`` (-1: wait)."""
    return _span_end(buf, p, p + 1, n, final)


@numba.njit(**_NJIT)
def _frame_one(buf, p, n, begin, max_body, final):  # noqa: C901 - one pass, early exits
    """Frame the message at ``p`` (which starts with ``8=FIX``): ``(status, end)``.

    ``end`` is where the span ends; ``end == -1`` means incomplete: wait for more bytes.
    """
    # BeginString
    q = p + 2
    while q < n and buf[q] != SOH and q - p < 40:
        q += 1
    if q >= n:
        return (TRUNCATED, n) if final else (OK, -1)
    if buf[q] != SOH or (begin.shape[0] and (q - p - 2 != begin.shape[0])):
        return BAD_BEGIN_STRING, _resync(buf, p, n, final)
    for k in range(begin.shape[0]):
        if buf[p + 2 + k] != begin[k]:
            return BAD_BEGIN_STRING, _resync(buf, p, n, final)
    # BodyLength
    q += 1
    if q + 2 > n:
        return (TRUNCATED, n) if final else (OK, -1)
    if buf[q] != 57 or buf[q + 1] != 61:
        return BAD_BODY_LENGTH, _resync(buf, p, n, final)
    length, soh = _read_uint(buf, q + 2, n, 10)
    if length == -2:
        return (TRUNCATED, n) if final else (OK, -1)
    if length < 0:
        return BAD_BODY_LENGTH, _resync(buf, p, n, final)
    if length > max_body:
        return TOO_LARGE, _resync(buf, p, n, final)
    body = soh + 1
    stop = body + length
    if stop + 7 > n:
        inner = _find_inner_begin(buf, body, n, n)
        if inner >= 0:
            return _overshoot(buf, p, inner)
        return (TRUNCATED, n) if final else (OK, -1)
    checksum = _is_trailer(buf, stop, n)
    if checksum < 0 or length == 0 or buf[stop - 1] != SOH:
        inner = _find_inner_begin(buf, body, stop + 7, n)
        if inner >= 0:
            return _overshoot(buf, p, inner)
        if inner == -2 and not final:
            return OK, -1
        return BAD_BODY_LENGTH, _resync(buf, p, n, final)
    total = 0
    for k in range(p, stop):
        total += buf[k]
    if (total & 255) != checksum:
        return BAD_CHECKSUM, stop + 7
    return OK, stop + 7


@numba.njit(**_NJIT)
def _overshoot(buf, p, inner):
    """BodyLength reaches into the next message at ``inner``: a wrong BodyLength if this one
    ends with a complete trailer just before it, else a truncated message."""
    if inner - p >= 8 and buf[inner - 8] == SOH and _is_trailer(buf, inner - 7, inner) >= 0:
        return BAD_BODY_LENGTH, inner
    return TRUNCATED, inner


@numba.njit(**_NJIT)
def frame(buf, start, n, begin, max_body, final, spans):
    """Cut ``buf[start:n]`` into spans ``(start, end, status)`` (indices into ``buf``); returns
    ``(spans written, stop)``.

    Stops early when ``spans`` is full (call again from ``stop``). Bytes from ``stop`` on are an
    incomplete message, or bytes that are not one and no ``8=FIX`` follows yet, to keep for the
    next call.
    """
    p = start
    count = 0
    cap = spans.shape[0]
    while p < n and count < cap:
        if not _is_begin(buf, p, n):
            q = _span_end(buf, p, p, n, final)
            if q < 0:
                break  # garbage so far: one span once the next "8=FIX" (or MAX_SPAN) is known
            spans[count, 0] = p
            spans[count, 1] = q
            spans[count, 2] = GARBAGE
            count += 1
            p = q
            continue
        status, end = _frame_one(buf, p, n, begin, max_body, final)
        if end < 0:
            break
        spans[count, 0] = p
        spans[count, 1] = end
        spans[count, 2] = status
        count += 1
        p = end
    return count, p


# --------------------------------------------------------------------------- value parsers


@numba.njit(**_NJIT)
def parse_decimal(buf, a, b):
    """Decimal text in ``buf[a:b]`` as int64 fixed-point 1e-9: ``(ok, value)``.

    Optional sign, digits, optional ``.`` and up to 9 significant fraction digits (more are
    accepted only if they are zeros). No exponent, no float arithmetic.
    """
    p = a
    neg = False
    if p < b and (buf[p] == 45 or buf[p] == 43):
        neg = buf[p] == 45
        p += 1
    whole = np.int64(0)
    digits = 0
    while p < b and buf[p] != 46:
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9 or whole > 922337203:
            return False, np.int64(0)
        whole = whole * 10 + d
        digits += 1
        p += 1
    frac = np.int64(0)
    fdigits = 0
    if p < b:  # at '.'
        p += 1
        while p < b:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                return False, np.int64(0)
            if fdigits < 9:
                frac = frac * 10 + d
            elif d != 0:
                return False, np.int64(0)
            fdigits += 1
            p += 1
    if digits + fdigits == 0 or whole > 9223372035:
        return False, np.int64(0)
    if fdigits < 9:
        frac *= _POW10[9 - min(fdigits, 9)]
    value = whole * 1_000_000_000 + frac
    if value < 0:
        return False, np.int64(0)
    return True, -value if neg else value


@numba.njit(inline="always", **_NJIT)
def _parse_uint(buf, a, b, limit):
    """Digits only (``0 <= value <= limit``), optionally followed by ``.0...``; -1 if not."""
    if a >= b:
        return np.int64(-1)
    v = np.int64(0)
    p = a
    while p < b and buf[p] != 46:
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            return np.int64(-1)
        v = v * 10 + d
        if v > limit:
            return np.int64(-1)
        p += 1
    if p == a:
        return np.int64(-1)
    for q in range(p + 1, b):
        if buf[q] != 48:
            return np.int64(-1)
    return v


@numba.njit(inline="always", **_NJIT)
def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(inline="always", **_NJIT)
def _digits(buf, a, k):
    v = np.int64(0)
    for q in range(a, a + k):
        d = np.int64(buf[q]) - 48
        if d < 0 or d > 9:
            return np.int64(-1)
        v = v * 10 + d
    return v


@numba.njit(inline="always", **_NJIT)
def _parse_utc(buf, a, b):
    """``YYYYMMDD-HH:MM:SS[.f{1,9}]`` as UNIX ns; -1 if malformed."""
    if b - a < 17 or buf[a + 8] != 45 or buf[a + 11] != 58 or buf[a + 14] != 58:
        return np.int64(-1)
    y = _digits(buf, a, 4)
    mo = _digits(buf, a + 4, 2)
    d = _digits(buf, a + 6, 2)
    hh = _digits(buf, a + 9, 2)
    mi = _digits(buf, a + 12, 2)
    ss = _digits(buf, a + 15, 2)
    if min(y, mo, d, hh, mi, ss) < 0 or mo < 1 or mo > 12 or d < 1 or d > 31:
        return np.int64(-1)
    if hh > 23 or mi > 59 or ss > 60:
        return np.int64(-1)
    frac = np.int64(0)
    if b - a > 17:
        k = b - a - 18
        if buf[a + 17] != 46 or k < 1 or k > 9:
            return np.int64(-1)
        frac = _digits(buf, a + 18, k)
        if frac < 0:
            return np.int64(-1)
        frac *= _POW10[9 - k]
    secs = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
    return secs * 1_000_000_000 + frac


@numba.njit(inline="always", **_NJIT)
def _lookup(hashes, ids, h):
    """Binary search of ``h`` in sorted ``hashes``: its id, or -1."""
    lo = 0
    hi = hashes.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if hashes[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    if lo < hashes.shape[0] and hashes[lo] == h:
        return np.int64(ids[lo])
    return np.int64(-1)


# --------------------------------------------------------------------------- decoder


@numba.njit(inline="always", **_NJIT)
def _dead(dead, nd, aux, reason, start, end, base, ts_recv, source_id, a0, a1):
    rec = dead[nd]
    rec["ts_event"] = ts_recv
    rec["ts_recv"] = ts_recv
    rec["seq"] = 0
    rec["instrument_id"] = 0
    rec["reason"] = reason
    rec["raw_offset"] = base + start
    rec["raw_length"] = end - start
    rec["source_id"] = source_id
    aux[nd, 0] = a0
    aux[nd, 1] = a1
    return nd + 1


@numba.njit(inline="always", **_NJIT)
def _instrument(buf, a, b, is_symbol, by_security_id, hashes, ids):
    """Instrument id of a Symbol/SecurityID value, or -1 (unknown), -2 (this tag is not the
    key)."""
    if by_security_id:
        if is_symbol:
            return np.int64(-2)
        return _parse_uint(buf, a, b, np.int64(0xFFFFFFFF))
    if not is_symbol:
        return np.int64(-2)
    h = _FNV_OFFSET
    for q in range(a, b):
        h = (h ^ np.uint64(buf[q])) * _FNV_PRIME
    return _lookup(hashes, ids, h)


@numba.njit(inline="always", **_NJIT)
def _value_reason(status):
    """The dead-letter reason of a price/size parse status: not a number is ``BAD_VALUE``."""
    if status == TOO_PRECISE:
        return _TOO_PRECISE
    if status == OUT_OF_RANGE:
        return _OUT_OF_RANGE
    return BAD_VALUE


@numba.njit(inline="always", **_NJIT)
def _emit_entry(e, book, nb, trades, nt, slot_seq, slot, snapshot, ts_event, ts_recv):
    """Write one entry (``e`` = [kind, action, side, price, size, depth, instrument, extra_gap])
    as a book update or a trade; returns the new counts."""
    if e[0] == 2:
        slot_seq[slot, 1] += 1
        rec = trades[nt]
        rec["ts_event"] = ts_event
        rec["ts_recv"] = ts_recv
        rec["seq"] = slot_seq[slot, 1]
        rec["instrument_id"] = e[6]
        rec["side"] = _SIDE_NONE
        rec["flags"] = 0
        rec["price"] = e[3]
        rec["size"] = e[4]
        return nb, nt + 1
    slot_seq[slot, 0] += 1 + e[7]
    rec = book[nb]
    rec["ts_event"] = ts_event
    rec["ts_recv"] = ts_recv
    rec["seq"] = slot_seq[slot, 0]
    rec["instrument_id"] = e[6]
    rec["action"] = e[1]
    rec["side"] = e[2]
    rec["depth"] = e[5]
    rec["flags"] = F_SNAPSHOT if snapshot else 0
    rec["price"] = e[3]
    rec["size"] = e[4]
    return nb + 1, nt


@numba.njit(inline="always", **_NJIT)
def _entry_fail(e, msg):
    """Why a finished entry cannot be used (0: it can): missing type/action, price or size.

    A delete may leave its size out (it removes the level); a snapshot's trade entry is not
    emitted, so it needs neither."""
    if e[0] < 0:
        return MISSING_FIELD, 269
    if e[0] == 0 or e[0] == 1:
        if e[1] < 0:
            return MISSING_FIELD, 279
        if e[8] == 0:
            return MISSING_FIELD, 270
        if e[4] < 0 and e[1] != _ACT_DELETE:
            return MISSING_FIELD, 271
        return 0, 0
    if e[0] == 2 and msg == 2:
        if e[8] == 0:
            return MISSING_FIELD, 270
        if e[4] < 0:
            return MISSING_FIELD, 271
    return 0, 0


@numba.njit(inline="always", **_NJIT)
def _decode_one(buf, a, z, by_security_id, hashes, ids, table, shift, slot_ids, meta,  # noqa: C901
                slot_seq, book, nb, trades, nt, ts_recv, counters, info, e, tg, kinds,
                actions):  # fmt: skip
    """Decode one framed message ``buf[a:z]``; ``e`` is scratch space for the current entry.

    Returns ``(status, nb, nt)``: status 0 = records written (or message skipped), > 0 = a
    reason code (``info`` holds the tag and a detail value), -1 = slots full. ``info[2]`` is set
    to the number of entries skipped for an unknown instrument, ``info[3]`` to a RptSeq gap.
    """
    nb0 = nb
    nt0 = nt
    msg = 0  # 0 unknown, 1 W, 2 X, 3 other
    ts_event = ts_recv
    have_time = False
    have_sending_time = False
    declared = np.int64(-1)
    entries = 0
    # e, the current entry: kind, action, side, price, size, depth, instrument, extra_gap,
    # has_price
    top_instrument = np.int64(-1)
    cur_instrument = np.int64(-1)
    have_cur = False  # an entry named its instrument: later entries default to it
    rpt = np.int64(-1)
    in_entry = False
    snapshot_cleared = False
    info[2] = 0
    info[3] = 0
    last_book = -1
    p = a
    while p < z:
        tag = np.int64(0)
        q = p
        while q < z and buf[q] != 61:
            d = np.int64(buf[q]) - 48
            if d < 0 or d > 9 or q - p > 9:
                info[0] = tag
                return BAD_FIELD, nb0, nt0
            tag = tag * 10 + d
            q += 1
        if q == p or q >= z:
            info[0] = tag
            return BAD_FIELD, nb0, nt0
        v = q + 1
        w = v
        while w < z and buf[w] != SOH:
            w += 1
        p = w + 1
        if tag == 35:
            if w - v == 1 and buf[v] == 87:
                msg = 1
            elif w - v == 1 and buf[v] == 88:
                msg = 2
            else:
                counters[1] += 1
                return 0, nb0, nt0
            continue
        if tag == 10 or tag == 8 or tag == 9:
            continue
        if msg == 0:
            continue
        if tag == 52 or tag == tg[T_TIME]:
            t = _parse_utc(buf, v, w)
            if t < 0:
                info[0] = tag
                return BAD_VALUE, nb0, nt0
            if tag == tg[T_TIME] or not have_time:
                ts_event = t
                have_time = True
            have_sending_time |= tag == 52
            continue
        if tag == tg[T_COUNT]:
            declared = _parse_uint(buf, v, w, np.int64(1_000_000))
            if declared < 0:
                info[0] = tag
                return BAD_VALUE, nb0, nt0
            if msg == 1:
                if top_instrument < 0:
                    info[0] = 48 if by_security_id else 55
                    return MISSING_FIELD, nb0, nt0
            continue
        if declared < 0:
            if tag == tg[T_SYMBOL] or tag == tg[T_SECURITY_ID]:
                inst = _instrument(buf, v, w, tag == tg[T_SYMBOL], by_security_id, hashes, ids)
                if inst == -1:
                    info[0] = tag
                    return UNKNOWN_INSTRUMENT, nb0, nt0
                if inst >= 0:
                    top_instrument = inst
            continue
        # inside the group
        if (msg == 2 and tag == tg[T_X_DELIMITER]) or (msg == 1 and tag == tg[T_W_DELIMITER]):
            if in_entry:
                status, nb, nt, last_book = _finish_entry(
                    e,
                    rpt,
                    msg,
                    table,
                    shift,
                    slot_ids,
                    meta,
                    slot_seq,
                    book,
                    nb,
                    trades,
                    nt,
                    ts_event,
                    ts_recv,
                    counters,
                    info,
                    last_book,
                )
                if status != 0:
                    return status, nb0, nt0
            elif msg == 1 and not snapshot_cleared:
                status, nb, last_book = _snapshot_clear(top_instrument, table, shift, slot_ids,
                                                        meta, slot_seq, book, nb, ts_event,
                                                        ts_recv)  # fmt: skip
                if status != 0:
                    return status, nb0, nt0
                snapshot_cleared = True
            entries += 1
            in_entry = True
            e[:] = -1
            e[5] = 0
            e[7] = 0
            e[8] = 0
            e[6] = cur_instrument if have_cur else top_instrument
            rpt = -1
        if not in_entry:
            continue
        if tag == tg[T_ACTION]:
            act = actions[buf[v]] if w - v == 1 else np.int64(-1)
            if act < 0:
                info[0] = tag
                info[1] = np.int64(buf[v]) - 48 if w > v else -1
                return BAD_VALUE, nb0, nt0
            e[1] = _ACT_ADD if msg == 1 else act
        elif tag == tg[T_TYPE]:
            # an empty, multi-character or undefined entry type is a bad value
            kind = kinds[buf[v]] if w - v == 1 else np.int64(KIND_INVALID)
            if kind == KIND_INVALID:
                info[0] = tag
                return BAD_VALUE, nb0, nt0
            e[0] = kind
            e[2] = _SIDE_BID if kind == 0 else (_SIDE_ASK if kind == 1 else _SIDE_NONE)
            if msg == 1:
                e[1] = _ACT_ADD
        elif tag == tg[T_PRICE] or tag == tg[T_SIZE]:
            is_price = tag == tg[T_PRICE]
            status, value = parse_fixed(buf, v, w, 9 if is_price else 8)
            if status != 0:
                info[0] = tag
                info[1] = (v - a) * 8 + status  # where the value is, and why (for the detail)
                return _value_reason(status), nb0, nt0
            if is_price:
                e[3] = value
                e[8] = 1
            else:
                e[4] = value
        elif tag == tg[T_LEVEL]:
            level = _parse_uint(buf, v, w, np.int64(256))
            if level < 0:
                info[0] = tag
                return BAD_VALUE, nb0, nt0
            e[5] = level - 1 if level > 0 else 0
        elif tag == tg[T_RPTSEQ]:
            rpt = _parse_uint(buf, v, w, _INT64_MAX)
            if rpt < 0:
                info[0] = tag
                return BAD_VALUE, nb0, nt0
        elif tag == tg[T_SYMBOL] or tag == tg[T_SECURITY_ID]:
            inst = _instrument(buf, v, w, tag == tg[T_SYMBOL], by_security_id, hashes, ids)
            if inst != -2:
                cur_instrument = inst
                have_cur = True
                e[6] = inst
    if in_entry:
        status, nb, nt, last_book = _finish_entry(
            e,
            rpt,
            msg,
            table,
            shift,
            slot_ids,
            meta,
            slot_seq,
            book,
            nb,
            trades,
            nt,
            ts_event,
            ts_recv,
            counters,
            info,
            last_book,
        )
        if status != 0:
            return status, nb0, nt0
    elif msg == 1 and declared == 0 and top_instrument >= 0:
        status, nb, last_book = _snapshot_clear(top_instrument, table, shift, slot_ids, meta,
                                                slot_seq, book, nb, ts_event, ts_recv)  # fmt: skip
        if status != 0:
            return status, nb0, nt0
    if msg == 0:
        info[0] = 35
        return MISSING_FIELD, nb0, nt0
    if not have_sending_time:  # required in every header; never replaced by ts_recv
        info[0] = 52
        return MISSING_FIELD, nb0, nt0
    if declared < 0:
        info[0] = tg[T_COUNT]
        return MISSING_FIELD, nb0, nt0
    if declared != entries:
        info[0] = declared
        info[1] = entries
        return BAD_GROUP, nb0, nt0
    if last_book >= 0:
        book[last_book]["flags"] |= F_LAST
    counters[0] += 1
    return 0, nb, nt


@numba.njit(inline="always", **_NJIT)
def _slot(inst, table, shift, slot_ids, meta):
    """State slot of instrument ``inst`` (``meta[2:4]`` caches the last one looked up)."""
    if inst == meta[2]:
        return meta[3]
    slot = slot_of(inst, table, shift, slot_ids, meta[1])
    if slot == meta[1] and slot >= 0:
        meta[1] += 1
    if slot >= 0:
        meta[2] = inst
        meta[3] = slot
    return slot


@numba.njit(inline="always", **_NJIT)
def _snapshot_clear(inst, table, shift, slot_ids, meta, slot_seq, book, nb, ts_event, ts_recv):
    slot = _slot(inst, table, shift, slot_ids, meta)
    if slot < 0:
        return -1, nb, -1
    slot_seq[slot, 0] += 1
    slot_seq[slot, 2] = 0  # a snapshot restarts the RptSeq check
    rec = book[nb]
    rec["ts_event"] = ts_event
    rec["ts_recv"] = ts_recv
    rec["seq"] = slot_seq[slot, 0]
    rec["instrument_id"] = inst
    rec["action"] = _ACT_CLEAR
    rec["side"] = _SIDE_NONE
    rec["depth"] = 0
    rec["flags"] = F_SNAPSHOT
    rec["price"] = 0
    rec["size"] = 0
    return 0, nb + 1, nb


@numba.njit(inline="always", **_NJIT)
def _finish_entry(e, rpt, msg, table, shift, slot_ids, meta, slot_seq, book, nb, trades, nt,
                  ts_event, ts_recv, counters, info, last_book):  # fmt: skip
    """Validate and emit the entry in ``e``; ``(status, nb, nt, index of last book record)``."""
    status, tag = _entry_fail(e, msg)
    if status != 0:
        info[0] = tag
        return status, nb, nt, last_book
    if e[6] == -1:
        info[2] += 1
        counters[3] += 1
        return 0, nb, nt, last_book
    if e[6] < 0:
        info[0] = 55
        return MISSING_FIELD, nb, nt, last_book
    skip = e[0] > 2 or (msg == 1 and e[0] == 2)
    if skip and rpt < 0:
        counters[2] += 1
        return 0, nb, nt, last_book
    slot = _slot(e[6], table, shift, slot_ids, meta)
    if slot < 0:
        return -1, nb, nt, last_book
    if rpt >= 0:
        last = slot_seq[slot, 2]
        if last > 0 and rpt <= last:
            counters[4] += 1  # duplicate / stale update
            return 0, nb, nt, last_book
        if last > 0 and rpt != last + 1:
            info[3] = rpt - last - 1
            counters[5] += 1
            e[7] = 1
        slot_seq[slot, 2] = rpt
    if skip:  # a skipped entry still advances RptSeq; a gap before it skips a book seq
        counters[2] += 1
        slot_seq[slot, 0] += e[7]
        return 0, nb, nt, last_book
    if e[4] < 0:  # a delete without MDEntrySize
        e[4] = 0
    if e[0] == 2:
        nb, nt = _emit_entry(e, book, nb, trades, nt, slot_seq, slot, False, ts_event, ts_recv)
        return 0, nb, nt, last_book
    nb, nt = _emit_entry(e, book, nb, trades, nt, slot_seq, slot, msg == 1, ts_event, ts_recv)
    return 0, nb, nt, nb - 1


@numba.njit(**_NJIT)
def decode_md(
    buf,
    spans,
    first,
    count,
    base,
    ts_recv,
    source_id,
    by_security_id,
    hashes,
    ids,
    table,
    shift,
    slot_ids,
    slot_seq,
    meta,
    book,
    trades,
    dead,
    aux,
    counts,
    counters,
    tags,
    kinds,
    actions,
):
    """Decode spans ``first..count`` of ``buf``; ``counts = [book, trades, dead]`` written so far.

    Framing errors (span status != OK) become dead letters; OK spans are decoded by
    ``_decode_one``. Stops before a span that might not fit the outputs (``meta[0] =
    _NEED_OUTPUT``) or when the instrument slots are full (``_NEED_SLOTS``); returns the index of
    the next span to decode. ``counters``: [md messages, other messages, other entry types,
    unknown-instrument entries, duplicate RptSeq, RptSeq gaps]. ``tags``, ``kinds`` and
    ``actions`` come from the data dictionary (:func:`md_tables`).
    """
    nb = counts[0]
    nt = counts[1]
    nd = counts[2]
    info = np.zeros(4, dtype=np.int64)
    entry = np.zeros(9, dtype=np.int64)
    meta[0] = _DONE
    i = first
    while i < count:
        a = spans[i, 0]
        z = spans[i, 1]
        status = spans[i, 2]
        room = (z - a) // 8 + 2
        if nb + room > book.shape[0] or nt + room > trades.shape[0] or nd + 2 > dead.shape[0]:
            meta[0] = _NEED_OUTPUT
            break
        if status != OK:
            nd = _dead(dead, nd, aux, status, a, z, base, ts_recv, source_id, 0, 0)
            i += 1
            continue
        info[:] = 0
        status, nb2, nt2 = _decode_one(buf, a, z, by_security_id, hashes, ids, table, shift,
                                       slot_ids, meta, slot_seq, book, nb, trades, nt, ts_recv,
                                       counters, info, entry, tags, kinds, actions)  # fmt: skip
        if status < 0:
            meta[0] = _NEED_SLOTS
            break
        if status > 0:
            nd = _dead(dead, nd, aux, status, a, z, base, ts_recv, source_id, info[0], info[1])
        else:
            nb = nb2
            nt = nt2
            if info[2] > 0:
                nd = _dead(dead, nd, aux, UNKNOWN_INSTRUMENT, a, z, base, ts_recv, source_id,
                           0, info[2])  # fmt: skip
            if info[3] > 0:
                nd = _dead(dead, nd, aux, RPTSEQ_GAP, a, z, base, ts_recv, source_id, 83, info[3])
        i += 1
    counts[0] = nb
    counts[1] = nt
    counts[2] = nd
    return i


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile (and cache on disk) the framing and decoding kernels."""
    from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder

    msg = b"8=FIX.4.4\x019=%d\x01%s10=%03d\x01"
    body = (
        b"35=X\x0134=2\x0152=20260101-00:00:00.000\x01268=2\x01279=0\x01269=0\x0155=A\x01"
        b"270=1.5\x01271=3\x011023=1\x0183=1\x01279=0\x01269=2\x01270=1.5\x01271=1\x01"
    )
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    raw = msg % (len(body), body, sum(head + body) % 256)
    for by_security_id in (False, True):
        decoder = MarketDataDecoder(
            {"A": 1}, instrument_key="security_id" if by_security_id else "symbol"
        )
        decoder.feed(raw + b"xx" + raw[:20])
        decoder.finish()
    parse_decimal(np.frombuffer(b"1.5", dtype=np.uint8), 0, 3)
    table = np.zeros(16, dtype=np.int64)
    build_table(np.zeros(1, dtype=np.uint32), 0, table, 60)
