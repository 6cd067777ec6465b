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

__all__ = ["RegistryFeed", "mapping_records", "metadata_pairs", "symbol_mapping_dtype"]

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

    ``counters`` (a dict) gets ``symbol_mappings`` (pairs defined or already known) and
    ``symbol_conflicts`` (pairs refused: the id belongs to another instrument).
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
            if known is not None and known.venue == venue and known.pinned:
                self.registry.remove(number)  # the vendor reassigned its id: the newer mapping
            earlier = self.registry.id_of(symbol, venue)
            try:
                self.registry.define(symbol, venue, instrument_id=number)
                if earlier is not None and earlier != number:
                    self.registry.alias(earlier, symbol, venue)  # yesterday's id, same symbol
            except InstrumentError as exc:
                self.counters["symbol_conflicts"] += 1
                if number not in self._warned:
                    self._warned.add(number)
                    log.warning("DBN symbol mapping %s -> %d on %s not registered: %s",
                                symbol, number, venue, exc)  # fmt: skip
                continue
            self.counters["symbol_mappings"] += 1


def _venue(dataset: str) -> str:
    from hftagg.instruments import normalize_venue

    try:
        return normalize_venue(dataset or "dbn")
    except InstrumentError:
        return "dbn"
