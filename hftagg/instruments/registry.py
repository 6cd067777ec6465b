"""The instrument registry: canonical symbols <-> venue spellings <-> ``instrument_id``.

Sources convert at the edge, once per batch::

    ids = ctx.instruments.ids_for("binance", batch_symbols)   # bytes/str array -> uint32 ids

which groups the batch's spellings (as uint64 keys, in one compiled hashing pass:
:mod:`hftagg.instruments.kernels`), looks each distinct one up once in a per-venue dict and
spreads the ids back with one ``np.take``: Python runs once per distinct symbol, never per record. Tools that print data go the other way
(``symbol(id)``, ``symbols_for(ids)``).

Ids come from :func:`hftagg.instruments.ids.hash_id` (stable across processes and runs) unless
pinned. Every id the registry takes is checked against the ones it holds: two instruments with
one id are refused with an :class:`~hftagg.errors.InstrumentError` naming both and the fix.

Thread safety: lookups read plain dicts (safe under the GIL, no lock); ``define`` takes a lock,
so sources in several threads may define what they meet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from hftagg.errors import InstrumentError
from hftagg.instruments.definition import Instrument
from hftagg.instruments.ids import (
    first_sight_symbol,
    hash_id,
    normalize_symbol,
    normalize_venue,
)

__all__ = ["InstrumentRegistry"]

log = logging.getLogger("hftagg.instruments")


class InstrumentRegistry:
    """Instruments by id, by (symbol, venue) and by (venue, venue spelling).

    ``id_bits`` < 32 truncates hashed ids (for tests that need real collisions).
    """

    def __init__(self, instruments: Iterable[Instrument] = (), *, id_bits: int = 32) -> None:
        if not 8 <= id_bits <= 32:
            raise ValueError(f"id_bits = {id_bits}: use 8..32")
        self.id_bits = id_bits
        self._by_id: dict[int, Instrument] = {}
        self._by_key: dict[tuple[str, str], Instrument] = {}  # (venue, symbol)
        self._spelling: dict[str, dict[bytes, int]] = {}  # venue -> venue symbol bytes -> id
        self._lock = threading.Lock()
        self._weak: set[int] = set()  # ids of defaults that a real definition may take over
        self._alias: dict[int, tuple[str, str]] = {}  # earlier ids of (venue, symbol)
        #: instruments defined since the registry was loaded (not yet in a file)
        self.unsaved: list[Instrument] = []
        #: the instruments file it was loaded from (set by ``load_registry``), if any
        self.source: Any = None
        for inst in instruments:
            self.add(inst, unsaved=False)

    @classmethod
    def with_defaults(
        cls, defaults: Iterable[Instrument], *, id_bits: int = 32
    ) -> InstrumentRegistry:
        """A registry holding ``defaults`` (the simulator's) that yield their ids: an
        instrument defined later with one of those ids (a vendor's pinned id, from a file or
        a feed) replaces the default instead of being refused as a collision."""
        registry = cls(id_bits=id_bits)
        for inst in defaults:
            registry.add(inst, unsaved=False)
            registry._weak.add(inst.instrument_id)
        return registry

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(sorted(self._by_id.values(), key=lambda i: (i.symbol, i.venue)))

    def __contains__(self, instrument_id: object) -> bool:
        return isinstance(instrument_id, int | np.integer) and self.get(instrument_id) is not None

    def get(self, instrument_id: int) -> Instrument | None:
        """The instrument with this id (its id now, or an earlier one: :meth:`alias`)."""
        number = int(instrument_id)
        inst = self._by_id.get(number)
        if inst is None and number in self._alias:
            inst = self._by_key.get(self._alias[number])
        return inst

    def symbol(self, instrument_id: int) -> str | None:
        """The canonical symbol of this id, or None when unknown."""
        inst = self.get(instrument_id)
        return None if inst is None else inst.symbol

    def label(self, instrument_id: int) -> str:
        """What a tool prints for an id: ``BTCUSD@binance``, or the number when unknown."""
        inst = self.get(instrument_id)
        return str(int(instrument_id)) if inst is None else f"{inst.symbol}@{inst.venue}"

    def lookup(self, symbol: str, venue: str | None = None) -> list[Instrument]:
        """Instruments by canonical symbol (on one venue, or every venue), or by a venue
        spelling when no canonical symbol matches; a number finds that id."""
        venue = None if venue is None else normalize_venue(venue)
        found = [
            i
            for i in self._by_id.values()
            if i.symbol == symbol and (venue is None or i.venue == venue)
        ]
        if not found:
            found = [
                i
                for i in self._by_id.values()
                if i.venue_symbol == symbol and (venue is None or i.venue == venue)
            ]
        if not found and symbol.isdigit() and self.get(int(symbol)) is not None:
            found = [self.get(int(symbol))]
        return sorted(found, key=lambda i: i.venue)

    def id_of(self, symbol: str, venue: str) -> int | None:
        """The id of canonical ``symbol`` on ``venue``, or None when not defined."""
        inst = self._by_key.get((normalize_venue(venue), symbol))
        return None if inst is None else inst.instrument_id

    def venue_symbol(self, symbol: str, venue: str) -> str:
        """How ``venue`` spells canonical ``symbol`` (for subscribing): its ``venue_symbol``,
        or the symbol itself when the registry does not define it on that venue."""
        inst = self._by_key.get((normalize_venue(venue), symbol))
        return symbol if inst is None else inst.venue_symbol

    def ids_for(self, venue: str, symbols: Any, *, define: bool = True) -> np.ndarray:
        """Venue spellings (a numpy ``S``/``U``/object array or a sequence of bytes/str) ->
        a uint32 id per element, in bulk (one dict look-up per distinct spelling).

        A spelling the registry does not know is defined on the spot when ``define``: its
        canonical symbol by :func:`~hftagg.instruments.ids.first_sight_symbol` (``XBT/USD``
        on kraken -> ``BTCUSD``; mostly the spelling itself), a hashed id (the same in every
        process), listed in ``unsaved``. Otherwise it gets id 0 ("no instrument"), which the
        caller counts.
        """
        arr = _as_bytes_array(symbols)
        if arr.size == 0:
            return np.zeros(0, dtype=np.uint32)
        table = self._spelling.get(normalize_venue(venue), {})
        uniq, inverse = _unique_symbols(np.ascontiguousarray(arr).ravel())
        ids = np.fromiter(
            (self._one(venue, table, s, define) for s in uniq.tolist()),
            dtype=np.uint32,
            count=len(uniq),
        )
        return np.take(ids, inverse).reshape(arr.shape)

    def symbols_for(self, ids: np.ndarray, *, unknown: str | None = None) -> np.ndarray:
        """uint32 ids -> an object array of canonical symbols (``unknown``, default the id
        as text, where the registry does not know the id); bulk, one look-up per distinct id."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return np.empty(ids.shape, dtype=object)
        uniq, inverse = np.unique(ids, return_inverse=True)
        names = np.empty(len(uniq), dtype=object)
        for k, value in enumerate(uniq.tolist()):
            inst = self.get(value)
            names[k] = inst.symbol if inst is not None else (unknown or str(value))
        return np.take(names, inverse).reshape(ids.shape)

    def summary(self, limit: int = 10) -> dict[str, Any]:
        """For a run summary: how many instruments are known, and those defined while running
        (by sources: DBN mappings, venue symbols seen first), which no file holds yet."""
        current = {(i.venue, i.symbol): i for i in self.unsaved}  # redefinitions once
        defined = [
            f"{i.symbol}@{i.venue}"
            for i in current.values()
            if self._by_id.get(i.instrument_id) is not None
            and self._by_key.get((i.venue, i.symbol)) is not None
        ]
        return {"known": len(self), "defined": len(defined), "examples": defined[:limit]}

    # -- defining --------------------------------------------------------------------------

    def define(
        self,
        symbol: str,
        venue: str,
        *,
        venue_symbol: str | None = None,
        instrument_id: int | None = None,
        **definition: Any,
    ) -> Instrument:
        """Define (or redefine) ``symbol`` on ``venue`` and return it.

        The id is the stable hash unless ``instrument_id`` pins another. Redefining keeps
        the id and replaces the definition. Raises :class:`~hftagg.errors.InstrumentError`
        for an invalid value or an id another instrument holds (naming both, and the fix).
        """
        symbol, venue = normalize_symbol(symbol), normalize_venue(venue)
        if instrument_id is None:
            old = self._by_key.get((venue, symbol))
            pinned = old is not None and old.pinned
            instrument_id = old.instrument_id if pinned else hash_id(symbol, venue, self.id_bits)
        else:
            pinned = instrument_id != hash_id(symbol, venue, self.id_bits)
        inst = Instrument.build(
            symbol,
            venue,
            instrument_id,
            venue_symbol=venue_symbol,
            pinned=pinned,
            **definition,
        )
        return self.add(inst)

    def add(self, inst: Instrument, *, unsaved: bool = True) -> Instrument:
        """Take a built :class:`Instrument` (checked for collisions); returns it."""
        with self._lock:
            holder = self.get(inst.instrument_id)
            key = (inst.venue, inst.symbol)
            if holder is not None and (holder.venue, holder.symbol) != key:
                if holder.instrument_id not in self._weak:
                    raise InstrumentError(_collision(inst, holder))
                self._drop(holder)
                log.info(
                    "instrument %s on %s takes id %d from the default %s on %s",
                    inst.symbol,
                    inst.venue,
                    inst.instrument_id,
                    holder.symbol,
                    holder.venue,
                )
            spellings = self._spelling.setdefault(inst.venue, {})
            spelled = spellings.get(inst.venue_symbol.encode())
            if spelled is not None and spelled != inst.instrument_id:
                other = self._by_id[spelled]
                if (other.venue, other.symbol) != key:
                    raise InstrumentError(
                        f"venue {inst.venue!r} spelling {inst.venue_symbol!r} already means "
                        f"{other.symbol!r} (id {other.instrument_id}); one spelling names one "
                        f"instrument: change venue_symbol of {inst.symbol!r} or of "
                        f"{other.symbol!r}"
                    )
            old = self._by_key.get(key)
            if old is not None:
                self._drop(old)
            self._alias.pop(inst.instrument_id, None)  # an earlier id of its own: now its id
            self._by_id[inst.instrument_id] = inst
            self._by_key[key] = inst
            spellings[inst.venue_symbol.encode()] = inst.instrument_id
            if unsaved:
                self.unsaved.append(inst)
        return inst

    def alias(self, instrument_id: int, symbol: str, venue: str) -> None:
        """Keep ``instrument_id`` as an earlier id of ``symbol`` on ``venue`` (defined):
        vendors such as Databento give an instrument a new id each day, so a file's records
        carry several. ``get``/``symbol``/``label`` resolve it; collisions are checked as for
        any id."""
        venue = normalize_venue(venue)
        key = (venue, symbol)
        with self._lock:
            target = self._by_key.get(key)
            if target is None:
                raise InstrumentError(f"alias {instrument_id}: {symbol!r} on {venue!r} is not "
                                      f"defined; define it first")  # fmt: skip
            if target.instrument_id == instrument_id:
                return
            holder = self.get(instrument_id)
            if holder is not None and (holder.venue, holder.symbol) != key:
                if holder.instrument_id not in self._weak or holder.instrument_id != instrument_id:
                    raise InstrumentError(_collision(target, holder, instrument_id))
                self._drop(holder)
            self._alias[int(instrument_id)] = key

    def aliases_of(self, symbol: str, venue: str) -> list[int]:
        """The earlier ids of ``symbol`` on ``venue`` (see :meth:`alias`), ascending."""
        key = (normalize_venue(venue), symbol)
        return sorted(number for number, of in self._alias.items() if of == key)

    def remove(self, instrument_id: int) -> Instrument | None:
        """Forget the instrument with this id (e.g. a vendor reassigned the id); returns it."""
        with self._lock:
            key = self._alias.pop(int(instrument_id), None)
            if key is not None:  # an earlier id: forgotten, the instrument stays
                return self._by_key.get(key)
            inst = self._by_id.get(int(instrument_id))
            if inst is not None:
                self._drop(inst)
        return inst

    def merge(self, other: InstrumentRegistry | Sequence[Instrument]) -> None:
        """Add every instrument of ``other`` (later definitions replace earlier ones)."""
        for inst in other:
            self.add(inst, unsaved=False)

    # -- internals -------------------------------------------------------------------------

    def _drop(self, inst: Instrument) -> None:
        self._by_id.pop(inst.instrument_id, None)
        self._by_key.pop((inst.venue, inst.symbol), None)
        self._spelling.get(inst.venue, {}).pop(inst.venue_symbol.encode(), None)
        self._weak.discard(inst.instrument_id)

    def _one(self, venue: str, table: dict[bytes, int], spelling: bytes, define: bool) -> int:
        found = table.get(spelling)
        if found is not None:
            return found
        if not define:
            return 0
        try:
            spelled = normalize_symbol(spelling, "venue symbol")
            venue = normalize_venue(venue)
            symbol = normalize_symbol(first_sight_symbol(venue, spelled))
        except InstrumentError:
            return 0  # not a symbol at all (binary junk): no instrument, the caller counts 0s
        existing = self._by_key.get((venue, symbol))
        if existing is not None:  # canonical spelled as itself although a venue_symbol exists
            return existing.instrument_id
        inst = self.define(symbol, venue, venue_symbol=spelled)
        log.info(
            "instrument %s on %s defined on first sight (id %d)", symbol, venue, inst.instrument_id
        )
        return inst.instrument_id


def _collision(new: Instrument, holder: Instrument, number: int | None = None) -> str:
    return (
        f"instrument_id {new.instrument_id if number is None else number} collision: {new.symbol!r} on {new.venue!r} and "
        f"{holder.symbol!r} on {holder.venue!r} both map to it; pin one of them to a free id "
        f"with instrument_id = N in its [[instrument]] table of instruments.toml (or "
        f"`hftagg symbols add {new.symbol} --venue {new.venue} --instrument-id N`)"
    )


def _unique_symbols(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct symbols, index into them per element) for a 1-d ``S`` array: the symbols as
    rows of zero-padded uint64 words, grouped exactly in one compiled hashing pass (no sort)."""
    from hftagg.instruments.kernels import group_keys  # compiled on first use (or warm)

    n, width = len(arr), arr.dtype.itemsize
    words = -(-width // 8)
    if width == words * 8 and arr.flags.c_contiguous:
        rows = arr.view("<u8").reshape(n, words)
    else:
        raw = np.zeros((n, words * 8), dtype=np.uint8)
        raw[:, :width] = np.ascontiguousarray(arr).view(np.uint8).reshape(n, width)
        rows = raw.view("<u8")
    inverse = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    groups = group_keys(rows, inverse, first)
    return arr[first[:groups]], inverse


def _as_bytes_array(symbols: Any) -> np.ndarray:
    """Any array/sequence of symbols -> a numpy ``S`` array (str encoded as ASCII)."""
    arr = symbols if isinstance(symbols, np.ndarray) else np.asarray(list(symbols), dtype=object)
    if arr.dtype.kind == "S":
        return arr
    if arr.dtype.kind == "U":
        return np.char.encode(arr, "ascii", "replace")
    if arr.size == 0:
        return np.zeros(arr.shape, dtype="S1")
    return np.array(
        [s.encode("ascii", "replace") if isinstance(s, str) else bytes(s) for s in arr.flat],
        dtype=bytes,
    ).reshape(arr.shape)
