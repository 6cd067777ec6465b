"""Fast FIX market-data decoding: byte stream in, ``book_update``/``trade``/``dead_letter`` out.

:class:`Framer` cuts a byte stream (split at any point) into validated messages and keeps the
incomplete tail as its residual. :class:`MarketDataDecoder` frames and decodes 35=W/35=X in
compiled code (:mod:`hftagg.builtins.protocols.fix.kernels`, which documents the mapping) and returns record
batches; Python runs once per ``feed`` and once per dead letter (to write its detail text).

    decoder = MarketDataDecoder({"EURUSD": 1, "GBPUSD": 2})
    out = decoder.feed(chunk, ts_recv=time.time_ns())
    out.book, out.trades, out.dead_letters

The tag numbers and enum values the decoder reads come from a data dictionary
(:func:`md_tables`; default ``protocols/fix/FIX44.xml``), handed to the compiled code as arrays
once: the fields are looked up by name (``NoMDEntries``, ``MDUpdateAction``, ``MDEntryType``,
``MDEntryPx``, ``MDEntrySize``, ``MDPriceLevel``, ``RptSeq``, ``Symbol``, ``SecurityID``,
``TransactTime``; a name the dictionary lacks keeps its standard number, e.g. MDPriceLevel 1023
in FIX 4.4) and the entry delimiters are those of the W and X NoMDEntries groups. MDEntryType
values map by their description: ``BID`` -> bid, ``OFFER``/``ASK`` -> offer, ``TRADE`` -> trade,
anything else is skipped (counted); values 0/1/2 are bid/offer/trade unless the dictionary says
otherwise. MDUpdateAction: ``NEW`` -> ``A``, ``CHANGE``/``OVERLAY`` -> ``M``, ``DELETE`` ->
``D`` (0/1/2/5 by default); other values are dead letters (``bad_value``), including 3 (Delete
Thru) and 4 (Delete From): see :mod:`hftagg.builtins.protocols.fix.kernels`. A venue dictionary with its own tag
numbers or entry types is used by pointing ``dictionary`` at it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hftagg.builtins.protocols.fix import kernels
from hftagg.builtins.protocols.fix.dictionary import DEFAULT_DICTIONARY, Dictionary, load_dictionary
from hftagg.instruments import InstrumentRegistry, normalize_venue
from hftagg.kernels.slots import SlotTable
from hftagg.records.catalog import BOOK_UPDATE, DEAD_LETTER, TRADE
from hftagg.records.fixed import detail as fixed_detail
from hftagg.records.reasons import REASONS

__all__ = [
    "Decoded",
    "Framer",
    "MarketDataDecoder",
    "build_symbol_table",
    "md_tables",
    "reason_name",
]

_SPANS_PER_BYTE = 1 / 16
#: Per-instrument state: the next book seq, trade seq and the last RptSeq (83).
_COLUMNS = {"seq": ((3,), np.int64)}


def reason_name(code: int) -> str:
    """The short name of a FIX dead-letter reason code (``"bad_checksum"``)."""
    entry = kernels.REASONS.get(int(code))
    if entry is not None:
        return entry[0]
    reason = REASONS.get(code)  # the records layer's (a price or size it cannot represent)
    return reason.name if reason is not None else f"reason_{code}"


def build_symbol_table(symbols: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted FNV-1a hashes and their ids; raises ``ValueError`` on a bad id or a collision."""
    pairs = {}
    for symbol, iid in symbols.items():
        if not isinstance(iid, int) or not 0 <= iid <= 0xFFFFFFFF:
            raise ValueError(f"symbol {symbol!r}: instrument id must be a uint32, got {iid!r}")
        h = kernels.symbol_hash(symbol)
        if h in pairs:
            raise ValueError(f"symbols {symbol!r} and {pairs[h][0]!r} hash alike; rename one")
        pairs[h] = (symbol, iid)
    hashes = np.array(sorted(pairs), dtype=np.uint64)
    ids = np.array([pairs[int(h)][1] for h in hashes], dtype=np.uint32)
    return hashes, ids


_TAG_NAMES = ("NoMDEntries", "MDUpdateAction", "MDEntryType", "MDEntryPx", "MDEntrySize",
              "MDPriceLevel", "RptSeq", "Symbol", "SecurityID", "TransactTime")  # fmt: skip
_KIND_OF = {"BID": kernels.KIND_BID, "OFFER": kernels.KIND_OFFER, "ASK": kernels.KIND_OFFER,
            "TRADE": kernels.KIND_TRADE}  # fmt: skip
_ACTION_OF = {"NEW": ord("A"), "CHANGE": ord("M"), "OVERLAY": ord("M"), "DELETE": ord("D")}


def md_tables(dictionary: Dictionary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tags, kinds, actions)`` for :func:`hftagg.builtins.protocols.fix.kernels.decode_md` from a dictionary:
    tag numbers (``kernels.T_*`` order), MDEntryType byte -> kind, MDUpdateAction byte ->
    book action (-1: invalid)."""
    tags = np.array(kernels.STANDARD_TAGS, dtype=np.int64)
    for i, name in enumerate(_TAG_NAMES):
        tags[i] = dictionary.tag(name, default=int(tags[i]))
    for i, msg_type, fallback in ((kernels.T_X_DELIMITER, "X", kernels.T_ACTION),
                                  (kernels.T_W_DELIMITER, "W", kernels.T_TYPE)):  # fmt: skip
        group = dictionary.group(msg_type, int(tags[kernels.T_COUNT]))
        tags[i] = group.delimiter if group is not None else tags[fallback]
    entry_types = dictionary.values("MDEntryType")
    # with the enum in the dictionary, any other value is invalid; without it, unmapped
    kinds = np.full(256, kernels.KIND_INVALID if entry_types else kernels.KIND_OTHER, np.int64)
    kinds[ord("0")], kinds[ord("1")], kinds[ord("2")] = 0, 1, 2
    for value, description in entry_types.items():
        if len(value.encode()) == 1:
            kinds[ord(value)] = _KIND_OF.get(description.upper(), kernels.KIND_OTHER)
    actions = np.full(256, -1, dtype=np.int64)
    for value, action in (("0", "A"), ("1", "M"), ("2", "D"), ("5", "M")):
        actions[ord(value)] = ord(action)
    for value, description in dictionary.values("MDUpdateAction").items():
        if len(value.encode()) == 1:
            actions[ord(value)] = _ACTION_OF.get(description.upper(), -1)
    return tags, kinds, actions


class _Stream:
    """A growable byte buffer: residual plus new data, with its absolute stream offset."""

    def __init__(self) -> None:
        self.buf = np.zeros(1 << 16, dtype=np.uint8)
        self.n = 0
        self.offset = 0  # stream offset of buf[0]

    def append(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        chunk = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        need = self.n + chunk.shape[0]
        if need > self.buf.shape[0]:
            grown = np.zeros(max(need, 2 * self.buf.shape[0]), dtype=np.uint8)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : need] = chunk
        self.n = need

    def consume(self, k: int) -> None:
        rest = self.n - k
        if rest:
            self.buf[:rest] = self.buf[k : self.n]
        self.n = rest
        self.offset += k


class Framer:
    """Validated framing of a FIX byte stream; yields ``(status, bytes)`` per span.

    ``status`` is 0 for a good message, else a reason code (``REASONS``). Used by the session
    layer, which parses the good messages with simplefix.
    """

    def __init__(self, begin_string: str = "FIX.4.4", max_body: int = 1 << 20) -> None:
        self._begin = np.frombuffer(begin_string.encode(), dtype=np.uint8).copy()
        self._max_body = max_body
        self._stream = _Stream()
        self._spans = np.zeros((256, 3), dtype=np.int64)

    @property
    def residual(self) -> int:
        """Bytes held back: an incomplete message waiting for the rest."""
        return self._stream.n

    def feed(self, data: bytes, final: bool = False) -> list[tuple[int, bytes]]:
        s = self._stream
        s.append(data)
        out = []
        at = 0
        while True:
            count, stop = kernels.frame(s.buf, at, s.n, self._begin, self._max_body, final,
                                        self._spans)  # fmt: skip
            for a, z, status in self._spans[:count].tolist():
                out.append((status, s.buf[a:z].tobytes()))
            at = stop
            if count < self._spans.shape[0] or at == s.n:
                s.consume(at)
                return out


@dataclass
class Decoded:
    """One ``feed``'s output: record batches (views into the decoder's buffers until the next
    call; copy to keep) and the number of messages framed."""

    book: np.ndarray
    trades: np.ndarray
    dead_letters: np.ndarray
    messages: int


class MarketDataDecoder:
    """Frames and decodes a FIX market-data byte stream into record batches.

    ``symbols`` maps Symbol (55) to instrument id; with ``instrument_key="security_id"`` the
    numeric SecurityID (48) is the id and ``symbols`` is not needed.

    With an instrument ``registry`` (:class:`~hftagg.instruments.InstrumentRegistry`) ids come
    from it instead: every ``feed`` finds the distinct Symbol (55) values of the buffered bytes
    in one numpy pass (SecurityID (48) text with ``instrument_key="security_id"``), maps them
    with ``registry.ids_for(venue, values)`` (defining a spelling on first sight) and adds the
    new ones to the compiled look-up table; Python runs once per distinct new value, never per
    entry. A ``symbols`` entry with a non-zero id pins that id in the registry. ``dictionary`` (a path,
    relative to ``protocols/``, or a loaded :class:`Dictionary`) gives the tag numbers and
    enum values (module docstring). ``counters`` has running totals: messages, dead letters by
    reason name, skipped entries. Not thread-safe.
    """

    COUNTER_NAMES = ("md_messages", "other_messages", "other_entry_types",
                     "unknown_instrument_entries", "duplicate_rptseq", "rptseq_gaps")  # fmt: skip

    def __init__(
        self,
        symbols: Mapping[str, int] | None = None,
        *,
        instrument_key: Literal["symbol", "security_id"] = "symbol",
        begin_string: str = "FIX.4.4",
        source_id: int = 0,
        max_body: int = 1 << 20,
        dictionary: str | Path | Dictionary = DEFAULT_DICTIONARY,
        registry: InstrumentRegistry | None = None,
        venue: str = "fix",
    ) -> None:
        if not isinstance(dictionary, Dictionary):
            dictionary = load_dictionary(dictionary)
        self.dictionary = dictionary
        self._tags, self._kinds, self._actions = md_tables(dictionary)
        if instrument_key not in ("symbol", "security_id"):
            raise ValueError(f"instrument_key must be 'symbol' or 'security_id', got "
                             f"{instrument_key!r}")  # fmt: skip
        self._by_security_id = instrument_key == "security_id"
        self.registry = registry
        self.venue = venue
        if registry is not None:
            self.venue = normalize_venue(venue)  # a bad venue fails here, naming the value
            key_tag = int(self._tags[kernels.T_SECURITY_ID if self._by_security_id
                                     else kernels.T_SYMBOL])  # fmt: skip
            # the compiled code hashes the T_SYMBOL tag's value: point it at the key tag
            self._tags[kernels.T_SYMBOL] = key_tag
            self._tags[kernels.T_SECURITY_ID] = -1
            self._by_security_id = False
            self._key_pattern = np.frombuffer(b"\x01%d=" % key_tag, dtype=np.uint8)
            self._table: dict[str, int] = {}
            self._handled: set[int] = set()  # value keys looked up (ids and no-symbol 0s)
            self._seen = np.zeros(0, dtype=np.uint64)  # the same, sorted, for _tag_values
            self._hashes, self._ids = build_symbol_table({})
            for symbol, iid in (symbols or {}).items():
                if iid and registry.ids_for(venue, [symbol], define=False)[0] != iid:
                    registry.define(symbol, venue, venue_symbol=symbol, instrument_id=int(iid))
            self._learn([symbol.encode() for symbol in symbols or {}])
        else:
            self._hashes, self._ids = build_symbol_table(symbols or {})
        self._begin = np.frombuffer(begin_string.encode(), dtype=np.uint8).copy()
        self._max_body = int(max_body)
        self.source_id = int(source_id)
        self._stream = _Stream()
        self._spans = np.zeros((1024, 3), dtype=np.int64)
        self._book = BOOK_UPDATE.empty(4096)
        self._trades = TRADE.empty(4096)
        self._dead = DEAD_LETTER.empty(256)
        self._aux = np.zeros((256, 2), dtype=np.int64)
        self._counts = np.zeros(3, dtype=np.int64)
        self._counters = np.zeros(len(self.COUNTER_NAMES), dtype=np.int64)
        # [status, slots in use, last instrument looked up (-1: none), its slot]
        self._meta = np.array([0, 0, -1, 0], dtype=np.int64)
        self._slots = SlotTable(_COLUMNS, meta=self._meta, count_at=1, name="FIX decoder")
        self.dead_letter_counts: dict[str, int] = {}

    # ----------------------------------------------------------------- state

    @property
    def counters(self) -> dict[str, int]:
        out = dict(zip(self.COUNTER_NAMES, self._counters.tolist(), strict=True))
        out.update({f"dead_{k}": v for k, v in self.dead_letter_counts.items()})
        return out

    @property
    def residual(self) -> int:
        return self._stream.n

    def snapshot(self) -> dict:
        ids, rows = self._slots.snapshot()
        return {"instrument_id": ids, "seq": rows["seq"]}

    def restore(self, state: dict) -> None:
        self._slots.load(state["instrument_id"], {"seq": state["seq"]})
        self._meta[2] = -1  # the cached last lookup may name a slot that moved

    # ----------------------------------------------------------------- hot path

    def feed(self, data: bytes | bytearray | memoryview | np.ndarray, ts_recv: int | None = None,
             final: bool = False) -> Decoded:  # fmt: skip
        """Decode whatever complete messages ``data`` (after the residual) holds."""
        s = self._stream
        s.append(data)
        if self.registry is not None:
            self._learn(_tag_values(s.buf[: s.n], self._key_pattern, self._seen))
        ts = time.time_ns() if ts_recv is None else int(ts_recv)
        self._counts[:] = 0
        messages = 0
        at = 0
        while True:
            count, stop = kernels.frame(s.buf, at, s.n, self._begin, self._max_body, final,
                                        self._spans)  # fmt: skip
            messages += count
            self._decode_spans(count, ts)
            at = stop
            if count < self._spans.shape[0] or at == s.n:
                break
        s.consume(at)
        nb, nt, nd = self._counts.tolist()
        return Decoded(self._book[:nb], self._trades[:nt], self._dead[:nd], messages)

    def finish(self, ts_recv: int | None = None) -> Decoded:
        """End of stream: whatever is left is a truncated message (or garbage)."""
        return self.feed(b"", ts_recv, final=True)

    def _learn(self, values: list[bytes]) -> None:
        """Registry ids for the wire ``values`` (Symbol or SecurityID spellings) not yet
        handled; Python once per distinct new value."""
        keys = {value_key(v): v for v in values}
        new = [v for key, v in keys.items() if key not in self._handled]
        if not new:
            return
        ids = self.registry.ids_for(self.venue, new)
        for value, iid in zip(new, ids.tolist(), strict=True):
            # id 0: not a symbol at all; its entries stay unknown_instrument (counted)
            if iid:
                self._table[value.decode("utf-8", "replace")] = int(iid)
            self._handled.add(value_key(value))
        self._hashes, self._ids = build_symbol_table(self._table)
        self._seen = np.array(sorted(self._handled), dtype=np.uint64)

    def _decode_spans(self, count: int, ts: int) -> None:
        s = self._stream
        nd_before = int(self._counts[2])
        i = 0
        while i < count:
            i = kernels.decode_md(
                s.buf, self._spans, i, count, s.offset, ts, self.source_id, self._by_security_id,
                self._hashes, self._ids, self._slots.table, self._slots.shift, self._slots.ids,
                self._slots["seq"], self._meta, self._book, self._trades, self._dead, self._aux, self._counts,
                self._counters, self._tags, self._kinds, self._actions,
            )  # fmt: skip
            if i < count:
                if self._meta[0] == 2:
                    self._slots.grow()
                else:
                    self._grow_outputs(int(self._spans[i, 1] - self._spans[i, 0]))
        self._describe(nd_before, int(self._counts[2]))

    def _grow_outputs(self, message_bytes: int) -> None:
        need = message_bytes // 8 + 2
        nb, nt, nd = self._counts.tolist()
        self._book = _grown(self._book, nb + need)
        self._trades = _grown(self._trades, nt + need)
        self._dead = _grown(self._dead, nd + 2)
        if self._aux.shape[0] < self._dead.shape[0]:
            aux = np.zeros((self._dead.shape[0], 2), dtype=np.int64)
            aux[: self._aux.shape[0]] = self._aux
            self._aux = aux

    def _describe(self, first: int, stop: int) -> None:
        """Fill the detail text of dead letters ``first..stop`` (the rare path)."""
        s = self._stream
        for k in range(first, stop):
            rec = self._dead[k]
            reason = int(rec["reason"])
            name = reason_name(reason)
            self.dead_letter_counts[name] = self.dead_letter_counts.get(name, 0) + 1
            start = int(rec["raw_offset"]) - s.offset
            raw = s.buf[start : start + min(int(rec["raw_length"]), 24)].tobytes()
            a0, a1 = self._aux[k].tolist()
            if reason in _VALUE_REASONS:  # name the tag and its value
                end = start + int(rec["raw_length"])
                value = s.buf[start + a1 // 8 : end].tobytes().split(b"\x01", 1)[0]
                rec["detail"] = fixed_detail(str(a0), value, a1 % 8)
                continue
            rec["detail"] = _detail(reason, name, a0, a1, raw).encode()[:64]


_MAX_VALUE = 64  # longest Symbol/SecurityID value learnt from the bytes


def _tag_values(buf: np.ndarray, pattern: np.ndarray, known: np.ndarray) -> list[bytes]:
    """The distinct values of the tag ``pattern`` (``SOH tag =``) in ``buf`` whose key
    (:func:`_value_keys`) is not in the sorted ``known``, as ``bytes``. Vectorised: SOH
    positions, the tag bytes after them, the values' keys in one matrix product, so a buffer
    of known symbols costs a few numpy calls and no Python per occurrence. Values
    longer than 64 bytes are not learnt (their entries stay ``unknown_instrument``)."""
    soh = np.flatnonzero(buf == 1)
    k = len(pattern)
    at = soh[soh + k < len(buf)]
    hit = np.ones(len(at), dtype=bool)
    for j in range(1, k):
        hit &= buf[at + j] == pattern[j]
    starts = at[hit] + k
    if not len(starts):
        return _NO_VALUES
    nxt = np.searchsorted(soh, starts)
    complete = nxt < len(soh)  # a value still being received is learnt on the next feed
    starts, lengths = starts[complete], soh[nxt[complete]] - starts[complete]
    keep = (lengths > 0) & (lengths <= _MAX_VALUE)
    starts, lengths = starts[keep], lengths[keep]
    if not len(starts):
        return _NO_VALUES
    width = int(lengths.max())
    cols = np.arange(width)
    grid = buf[np.minimum(starts[:, None] + cols, len(buf) - 1)]
    grid[cols >= lengths[:, None]] = 0
    h = _value_keys(grid, lengths)
    if len(known):
        pos = np.minimum(np.searchsorted(known, h), len(known) - 1)
        fresh = known[pos] != h
        if not fresh.any():
            return _NO_VALUES
        grid = grid[fresh]
    return np.unique(np.ascontiguousarray(grid).view(f"S{width}").ravel()).tolist()


_NO_VALUES: list[bytes] = []
#: odd 64-bit weights per byte position (fixed: splitmix64 of the position) for value keys
_KEY_WEIGHTS = np.array(
    [((k + 1) * 0x9E3779B97F4A7C15 ^ 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF | 1
     for k in range(_MAX_VALUE + 1)], dtype=np.uint64,
)  # fmt: skip


def _value_keys(grid: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit key per zero-padded value row (``sum(byte_j * w_j) + len * w_last`` mod
    2**64): one matrix product, for the "already handled?" test only (a false match, about
    2**-64 per pair, would leave a new symbol's entries ``unknown_instrument``, counted)."""
    width = grid.shape[1]
    keys = grid.astype(np.uint64) @ _KEY_WEIGHTS[:width]
    return keys + lengths.astype(np.uint64) * _KEY_WEIGHTS[_MAX_VALUE]


def value_key(value: bytes) -> int:
    """:func:`_value_keys` of one value, in Python."""
    w = _KEY_WEIGHTS.tolist()
    return (sum(b * w[j] for j, b in enumerate(value)) + len(value) * w[_MAX_VALUE]) % 2**64


def _grown(batch: np.ndarray, need: int) -> np.ndarray:
    if need <= batch.shape[0]:
        return batch
    out = np.zeros(max(need, 2 * batch.shape[0]), dtype=batch.dtype)
    out[: batch.shape[0]] = batch
    return out


_VALUE_REASONS = (kernels._TOO_PRECISE, kernels._OUT_OF_RANGE)


def _detail(reason: int, name: str, a0: int, a1: int, raw: bytes) -> str:
    snippet = raw.replace(b"\x01", b"|").decode("latin-1")
    if reason == kernels.BAD_GROUP:
        return f"{name}: 268={a0} but {a1} entries"
    if reason == kernels.RPTSEQ_GAP:
        return f"{name}: {a1} update(s) missing"
    if reason == kernels.UNKNOWN_INSTRUMENT and a1:
        return f"{name}: {a1} entr(y/ies) skipped; {snippet}"
    if reason in (kernels.BAD_VALUE, kernels.BAD_FIELD, kernels.MISSING_FIELD):
        return f"{name} tag {a0}: {snippet}"
    return f"{name}: {snippet}"
