"""DBN symbol mappings -> the instrument registry.

Two places in a DBN stream say which symbol an ``instrument_id`` is:

- the metadata's symbology mappings (historical files): ``raw symbol -> [(start_date,
  end_date, mapped)]``; with ``stype_out = instrument_id`` the mapped value is the id. A symbol
  mapped to several ids over the file's dates keeps the last one (the registry holds one id
  per symbol and venue); the earlier ids then show as numbers;
- ``SymbolMappingMsg`` records (rtype 0x16, live streams): the header's ``instrument_id`` is
  ``stype_out_symbol`` (the raw symbol) from ``start_ts`` on.

Both are defined in the registry as instruments of venue ``<dataset>`` lower-cased
(``glbx.mdp3``) with the vendor's id pinned; :class:`RegistryFeed` does it. A later mapping of
an id the same dataset mapped before wins (the vendor reassigned it: Databento ids are stable
within a day, not forever); an id another venue's or a hashed instrument holds is refused and
counted (a warning naming both, once per id).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hftagg.errors import InstrumentError

__all__ = [
    "RegistryFeed",
    "import_file",
    "mapping_records",
    "metadata_pairs",
    "symbol_mapping_dtype",
]

log = logging.getLogger("hftagg.dbn")

_HEADER = [
    ("length", "u1"),
    ("rtype", "u1"),
    ("publisher_id", "<u2"),
    ("instrument_id", "<u4"),
    ("ts_event", "<u8"),
]
#: SymbolMappingMsg: 80 bytes in v1 (22-character symbols, no stype fields), 176 in v2/v3
_V1 = np.dtype(
    _HEADER
    + [
        ("stype_in_symbol", "S22"),
        ("stype_out_symbol", "S22"),
        ("_reserved", "V4"),
        ("start_ts", "<u8"),
        ("end_ts", "<u8"),
    ]
)
_V2 = np.dtype(
    _HEADER
    + [
        ("stype_in", "u1"),
        ("stype_in_symbol", "S71"),
        ("stype_out", "u1"),
        ("stype_out_symbol", "S71"),
        ("start_ts", "<u8"),
        ("end_ts", "<u8"),
    ]
)


def symbol_mapping_dtype(version: int) -> np.dtype:
    """The SymbolMappingMsg layout of DBN ``version`` (1: 80 bytes; 2 and 3: 176)."""
    return _V1 if version == 1 else _V2


def mapping_records(rec: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """SymbolMappingMsg records -> (ids, raw symbols), one pair per distinct mapping, in the
    order of their last appearance (a later mapping of an id replaces an earlier one)."""
    ids = rec["instrument_id"].astype(np.uint32)
    names = rec["stype_out_symbol"]
    pairs = dict(zip(zip(ids.tolist(), names.tolist(), strict=True), range(len(ids)), strict=True))
    order = sorted(pairs, key=pairs.__getitem__)
    return (
        np.array([i for i, _ in order], dtype=np.uint32),
        [n.decode("ascii", "replace") for _, n in order],
    )


def metadata_pairs(metadata: Any) -> tuple[np.ndarray, list[str]]:
    """The metadata's mappings -> (ids, symbols) when they map to instrument ids: every
    interval of each symbol, oldest first (so the newest id is the symbol's id and the
    earlier ones its aliases), else nothing."""
    if metadata.stype_out != "instrument_id":
        return np.zeros(0, dtype=np.uint32), []
    ids, names = [], []
    for symbol, intervals in metadata.mappings.items():
        for _, _, mapped in sorted(intervals, key=lambda iv: (iv[0], iv[1])):
            if str(mapped).isdigit() and 0 < int(mapped) <= 0xFFFFFFFF:
                ids.append(int(mapped))
                names.append(symbol)
    return np.array(ids, dtype=np.uint32), names


class RegistryFeed:
    """Defines DBN symbol mappings in an instrument registry (see the module docstring).

    ``counters`` (a dict) gets ``symbol_mappings`` (pairs defined or already known),
    ``definitions`` (definition records taken) and ``symbol_conflicts`` (refused: the id
    belongs to another instrument).
    """

    def __init__(self, registry: Any, counters: dict[str, int]) -> None:
        self.registry = registry
        self.counters = counters
        counters.setdefault("symbol_mappings", 0)
        counters.setdefault("symbol_conflicts", 0)
        self._warned: set[int] = set()

    def __call__(self, dataset: str, ids: np.ndarray, symbols: list[str]) -> None:
        venue = _venue(dataset)
        for number, symbol in zip(ids.tolist(), symbols, strict=True):
            known = self.registry.get(number)
            if known is not None and (known.symbol, known.venue) == (symbol, venue):
                self.counters["symbol_mappings"] += 1
                continue
            if self._define(venue, symbol, number, {}):
                self.counters["symbol_mappings"] += 1

    def definitions(self, dataset: str, batch: np.ndarray) -> None:
        """Instrument definition records (port ``definitions``) -> registry definitions: tick
        size (``min_price_increment``), round lot (``min_lot_size_round_lot``), multiplier,
        expiry, currency and asset class, each only when DBN defines it. Deletions are
        skipped. A Python step per definition: definitions come once per instrument and day."""
        venue = _venue(dataset)
        for row in batch:
            symbol = bytes(row["raw_symbol"]).rstrip(b"\0").decode("ascii", "replace")
            if not symbol or row["security_update_action"] == ord("D"):
                continue
            if self._define(venue, symbol, int(row["instrument_id"]), _definition(row)):
                self.counters["definitions"] = self.counters.get("definitions", 0) + 1

    def _define(self, venue: str, symbol: str, number: int, definition: dict) -> bool:
        known = self.registry.get(number)
        if known is not None and (known.venue, known.symbol) == (venue, symbol):
            number = known.instrument_id  # an alias of it: define it, keep its current id
        elif known is not None and known.venue == venue and known.pinned:
            self.registry.remove(number)  # the vendor reassigned its id: the newer mapping
        earlier = self.registry.id_of(symbol, venue)
        try:
            self.registry.define(symbol, venue, instrument_id=number, **definition)
            if earlier is not None and earlier != number:
                self.registry.alias(earlier, symbol, venue)  # yesterday's id, same symbol
        except InstrumentError as exc:
            self.counters["symbol_conflicts"] += 1
            if number not in self._warned:
                self._warned.add(number)
                log.warning("DBN symbol %s -> %d on %s not registered: %s",
                            symbol, number, venue, exc)  # fmt: skip
            return False
        return True


_INT64_UNDEF = 2**63 - 1
_INT32_UNDEF = 2**31 - 1
_TS_UNDEF = 2**64 - 1
_CLASSES = {"F": "future", "K": "equity", "C": "option", "P": "option", "X": "fx"}


def _exact(value: Any) -> Any:
    """``100.00000000`` -> ``100``, ``0.01000`` -> ``0.01`` (same value, no exponent)."""
    plain = value.normalize()
    return plain.quantize(1) if plain.as_tuple().exponent > 0 else plain


def _definition(row: Any) -> dict[str, Any]:
    """The registry fields a DBN definition record defines (DBN's undefined values left out)."""
    from decimal import Decimal

    out: dict[str, Any] = {}
    tick = int(row["min_price_increment"])
    if 0 < tick < _INT64_UNDEF:
        out["tick_size"] = _exact(Decimal(tick).scaleb(-9))
    lot = int(row["min_lot_size_round_lot"])
    if 0 < lot < _INT64_UNDEF:
        out["lot_size"] = _exact(Decimal(lot).scaleb(-8))
    multiplier = int(row["contract_multiplier"])
    if 0 < multiplier < _INT32_UNDEF:
        out["multiplier"] = multiplier
    expiration = int(row["expiration"])
    if 0 < expiration < _TS_UNDEF:
        out["expiry"] = str(np.datetime64(expiration, "ns")) + "Z"
    currency = bytes(row["currency"]).rstrip(b"\0").decode("ascii", "replace")
    if currency.isalnum() and 2 <= len(currency) <= 12:
        out["currency"] = currency
    out["asset_class"] = _CLASSES.get(chr(int(row["instrument_class"])), "other")
    return out


def _venue(dataset: str) -> str:
    from hftagg.instruments import normalize_venue

    try:
        return normalize_venue(dataset or "dbn")
    except InstrumentError:
        return "dbn"


def import_file(path: str, registry: Any) -> dict[str, int]:
    """Define every symbol mapping and definition of the DBN file at ``path`` in ``registry``
    (``hftagg symbols import``); returns the counters, ``records`` and ``dead_letters`` too."""
    from hftagg.builtins.protocols.dbn.decoder import DEAD_LETTER_PORT, DbnDecoder
    from hftagg.builtins.protocols.dbn.reader import DbnFile

    counters: dict[str, int] = {"records": 0, "dead_letters": 0, "definitions": 0}
    feed = RegistryFeed(registry, counters)
    decoder = DbnDecoder(name=str(path), on_symbols=feed)
    with DbnFile(path) as file:
        while not decoder.done:
            piece = file.read()
            if piece is None:
                decoder.finish(file.truncated_frame)
            else:
                decoder.feed(piece)
            while decoder.available or decoder.has_dead_letters:
                out = decoder.take(1 << 16)
                if "definitions" in out:
                    feed.definitions(decoder.metadata.dataset, out["definitions"])
                counters["dead_letters"] += len(out.get(DEAD_LETTER_PORT, ()))
                counters["records"] += sum(
                    len(b) for port, b in out.items() if port != DEAD_LETTER_PORT
                )
    return counters
