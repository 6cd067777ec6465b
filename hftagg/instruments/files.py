"""Where instruments come from: built-in defaults, ``instruments.toml``, ``[instruments]``.

A registry is loaded in this order, later definitions of the same (symbol, venue) replacing
earlier ones, every id checked for collisions:

1. built-in defaults: the simulator's instruments (venue ``sim``, pinned ids 1..8, the ids the
   simulator emits with ``first_instrument_id = 1``), unless ``[instruments] builtin = false``.
   They yield: an instrument defined later with one of these ids (a DBN file's, a pinned one)
   replaces the default rather than collide with it;
2. the instruments file, ``instruments.toml`` next to the config (``[instruments] file``
   names another; a relative path is relative to the config's folder). One ``[[instrument]]``
   table per instrument, edited by ``hftagg symbols add`` with tomlkit (comments kept) and
   replaced atomically;
3. ``[[instruments.define]]`` tables in the config itself (same keys).

``[[instrument]]`` keys: ``symbol``, ``venue`` (required), ``venue_symbol``, ``instrument_id``
(pins the id; without it the stable hash is used), ``aliases`` (earlier ids of the same
instrument, e.g. a vendor's id of each day), and the definition fields of
:class:`~hftagg.instruments.definition.Instrument` (decimals as strings: ``tick_size = "0.01"``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import tomlkit

from hftagg.errors import InstrumentError
from hftagg.instruments.definition import Instrument
from hftagg.instruments.registry import InstrumentRegistry
from hftagg.stages.params import Params, restart

__all__ = [
    "BUILTIN_INSTRUMENTS",
    "FILE_NAME",
    "InstrumentsSection",
    "builtin_instruments",
    "default_registry",
    "instruments_file",
    "load_registry",
    "read_file",
    "save_instruments",
    "set_default_registry",
]

FILE_NAME = "instruments.toml"
_HEADER = """\
# hftagg instrument registry: one [[instrument]] table per canonical symbol and venue.
# Keys: symbol, venue, venue_symbol (the venue's spelling), instrument_id (pins the id; by
# default it is a stable hash of symbol and venue), aliases, asset_class, tick_size, lot_size,
# price_precision, size_precision, multiplier, currency, expiry, description.
# Decimals are strings ("0.01"). Edit by hand or with `hftagg symbols add`.
"""

#: the simulator's instruments: (id, canonical symbol, asset class, currency); venue "sim",
#: the simulator's defaults (tick 0.01, lot 1)
BUILTIN_INSTRUMENTS = (
    (1, "BTCUSD", "spot", "USD"),
    (2, "ETHUSD", "spot", "USD"),
    (3, "SOLUSD", "spot", "USD"),
    (4, "ESZ6", "future", "USD"),
    (5, "NQZ6", "future", "USD"),
    (6, "AAPL", "equity", "USD"),
    (7, "MSFT", "equity", "USD"),
    (8, "EURUSD", "fx", "USD"),
)


class InstrumentsSection(Params):
    """``[instruments]``: where the registry is loaded from."""

    file: str = restart(FILE_NAME, description="instruments file, relative to the config's folder")
    builtin: bool = restart(
        True, description="include the simulator's instruments (venue 'sim', ids 1..8)"
    )
    define: list[dict[str, Any]] = restart(
        [], description="[[instruments.define]] tables, each like an [[instrument]] table"
    )


def builtin_instruments() -> list[Instrument]:
    """The simulator's instruments (see :data:`BUILTIN_INSTRUMENTS`)."""
    return [
        Instrument.build(
            symbol,
            "sim",
            number,
            pinned=True,
            asset_class=asset_class,
            tick_size="0.01",
            lot_size="1",
            currency=currency,
            description="simulated by the built-in simulator",
        )
        for number, symbol, asset_class, currency in BUILTIN_INSTRUMENTS
    ]


def instruments_file(config: Path | None, section: dict[str, Any] | None = None) -> Path:
    """The instruments file for a config (``None``: the current folder's)."""
    name = Path((section or {}).get("file", FILE_NAME))
    if name.is_absolute():
        return name
    base = config.parent if config is not None else Path(".")
    return base / name


def from_table(table: dict[str, Any], registry: InstrumentRegistry, where: str) -> None:
    """Define one ``[[instrument]]`` table in ``registry``; errors name ``where``."""
    if not isinstance(table, dict):
        raise InstrumentError(f"{where}: expected a table with symbol and venue, got {table!r}")
    values = {k: _plain(v) for k, v in table.items()}
    missing = [k for k in ("symbol", "venue") if not values.get(k)]
    if missing:
        raise InstrumentError(f"{where}: required key(s) {missing} missing in {values!r}")
    aliases = values.pop("aliases", [])
    try:
        inst = registry.define(values.pop("symbol"), values.pop("venue"), **values)
        if not isinstance(aliases, list) or not all(isinstance(a, int) for a in aliases):
            raise InstrumentError(f"aliases = {aliases!r}: write a list of earlier ids")
        for number in aliases:
            registry.alias(number, inst.symbol, inst.venue)
    except InstrumentError as exc:
        raise InstrumentError(f"{where}: {exc}") from None
    except TypeError as exc:  # a key define() does not take
        raise InstrumentError(f"{where}: {exc}") from None


def read_file(path: Path, registry: InstrumentRegistry) -> int:
    """Define every ``[[instrument]]`` of ``path`` in ``registry``; returns how many."""
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.ParseError as exc:
        raise InstrumentError(f"{path}: not valid TOML ({exc}); fix the line it names") from exc
    tables = doc.get("instrument", [])
    unknown = sorted(set(doc) - {"instrument"})
    if unknown:
        raise InstrumentError(
            f"{path}: unknown top-level key(s) {unknown}; write each instrument as an "
            f"[[instrument]] table"
        )
    for k, table in enumerate(tables):
        from_table(table, registry, f"{path}: [[instrument]] #{k + 1}")
    return len(tables)


def load_registry(
    config: Path | None = None, raw: dict[str, Any] | None = None, *, id_bits: int = 32
) -> InstrumentRegistry:
    """The registry for a config: builtins, its instruments file, its ``[instruments]``."""
    section = dict((raw or {}).get("instruments") or {})
    registry = InstrumentRegistry.with_defaults(
        builtin_instruments() if section.get("builtin", True) else (), id_bits=id_bits
    )
    path = instruments_file(config, section)
    if path.is_file():
        read_file(path, registry)
    elif section.get("file", FILE_NAME) != FILE_NAME:
        raise InstrumentError(
            f"[instruments] file = {section['file']!r}: {path} does not exist; create it with "
            f"`hftagg symbols add` or fix the path"
        )
    for k, table in enumerate(section.get("define") or []):
        from_table(table, registry, f"[[instruments.define]] #{k + 1}")
    registry.unsaved.clear()
    registry.source = path if path.is_file() else None
    return registry


def save_instruments(
    path: Path, instruments: list[Instrument], registry: InstrumentRegistry | None = None
) -> None:
    """Add or replace ``instruments`` in the file at ``path`` (created if missing), keeping
    everything else in it, comments included; written atomically. With ``registry``, each
    one's earlier ids are written too (``aliases = [...]``)."""
    from hftagg.config.edit import write_atomic

    text = path.read_text(encoding="utf-8") if path.is_file() else _HEADER
    doc = tomlkit.parse(text)
    tables = doc.get("instrument")
    if tables is None:
        tables = tomlkit.aot()
        doc.append("instrument", tables)
    for inst in instruments:
        fresh = tomlkit.table()
        for key, value in inst.as_table().items():
            fresh[key] = value
        aliases = registry.aliases_of(inst.symbol, inst.venue) if registry is not None else []
        if aliases:
            fresh["aliases"] = aliases
        for k, old in enumerate(tables):
            if (str(old.get("venue", "")).lower(), old.get("symbol")) == (inst.venue, inst.symbol):
                tables[k] = fresh
                break
        else:
            tables.append(fresh)
    text = tomlkit.dumps(doc)
    write_atomic(path, (text if text.endswith("\n") else text + "\n").encode("utf-8"))


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


_default: InstrumentRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> InstrumentRegistry:
    """This process's registry (``StageContext.instruments``): set by ``hftagg run`` from its
    config, else loaded on first use from the built-ins and ``./instruments.toml``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load_registry(None)
        return _default


def set_default_registry(registry: InstrumentRegistry | None) -> None:
    """Make ``registry`` this process's registry (``None``: load afresh on next use)."""
    global _default
    with _default_lock:
        _default = registry
