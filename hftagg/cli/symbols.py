"""``hftagg symbols``: the instrument registry from the command line.

``list`` shows every instrument (filters: ``--venue``, ``--asset-class``, a glob on symbols);
``show SYMBOL`` one instrument on every venue it is defined on (by canonical symbol, venue
spelling or id) with its id, spellings and definition; ``add SYMBOL --venue V ...`` validates a
definition against the whole registry (an id collision is refused) and stores it in the
instruments file next to the config (``instruments.toml``, comments kept). Adding an instrument
that exists updates the fields given and keeps the others. ``import FILE.dbn ...`` stores a DBN
file's symbol mappings and definitions there (vendor ids pinned, earlier ids as aliases).

The registry is the config's: built-in simulator instruments, its instruments file and its
``[[instruments.define]]`` tables (:mod:`hftagg.instruments.files`).
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

from hftagg.cli.common import add_config_option, config_path

__all__ = ["add_parser"]

_COLUMNS = ("symbol", "venue", "venue_symbol", "instrument_id", "asset_class", "tick_size",
            "lot_size", "multiplier", "currency", "expiry")  # fmt: skip


def _registry(args: argparse.Namespace):
    from hftagg.config.load import read_layers
    from hftagg.instruments import instruments_file, load_registry

    path = config_path(getattr(args, "config", None))
    raw = read_layers(path)
    registry = load_registry(path, raw)
    target = Path(args.file) if getattr(args, "file", None) else None
    return registry, target or instruments_file(path, raw.get("instruments"))


def _cell(value: Any) -> str:
    return (
        "-" if value is None else format(value, "f") if hasattr(value, "as_tuple") else str(value)
    )


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    registry, _ = _registry(args)
    venue = args.venue.lower() if args.venue else None
    found = [
        i
        for i in registry
        if (venue is None or i.venue == venue)
        and (args.asset_class is None or i.asset_class == args.asset_class)
        and (args.pattern is None or fnmatch.fnmatchcase(i.symbol, args.pattern)
             or fnmatch.fnmatchcase(i.venue_symbol, args.pattern))
    ]  # fmt: skip
    if args.json:
        print(json.dumps([i.as_json() for i in found], indent=2))
        return 0
    if not found:
        print(f"no instruments match (of {len(registry)}); add one with `hftagg symbols add`")
        return 0
    _table(
        [[_cell(getattr(i, c)) for c in _COLUMNS] for i in found],
        [c.replace("_", " ") for c in _COLUMNS],
    )
    print(f"{len(found)} of {len(registry)} instruments")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    registry, _ = _registry(args)
    found = registry.lookup(args.symbol, args.venue)
    if not found:
        names = sorted({i.symbol for i in registry} | {i.venue_symbol for i in registry})
        close = difflib.get_close_matches(args.symbol, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = f" on {args.venue!r}" if args.venue else ""
        print(
            f"hftagg symbols: no instrument {args.symbol!r}{where}{hint}; list them with "
            f"`hftagg symbols list`, define one with `hftagg symbols add {args.symbol} "
            f"--venue VENUE`",
            file=sys.stderr,
        )
        return 1
    if args.json:
        rows = [{**i.as_json(), "aliases": registry.aliases_of(i.symbol, i.venue)} for i in found]
        print(json.dumps(rows, indent=2))
        return 0
    for k, inst in enumerate(found):
        if k:
            print()
        _show_one(inst, registry.aliases_of(inst.symbol, inst.venue))
    return 0


def _show_one(inst, aliases: list[int]) -> None:
    how = "pinned" if inst.pinned else "hash of symbol and venue"
    lines = [
        ("symbol", inst.symbol),
        ("venue", inst.venue),
        ("venue symbol", inst.venue_symbol),
        ("instrument_id", f"{inst.instrument_id} ({how})"),
    ]
    if aliases:
        shown = ", ".join(map(str, aliases[:8])) + (", ..." if len(aliases) > 8 else "")
        lines.append(("earlier ids", f"{len(aliases)} ({shown})"))
    for name in ("asset_class", "tick_size", "lot_size", "price_precision", "size_precision",
                 "multiplier", "currency", "expiry", "description"):  # fmt: skip
        value = getattr(inst, name)
        if value is None:
            continue
        text = _cell(value)
        if name == "tick_size":
            text += f" ({inst.tick_size_fixed} price units of 1e-9)"
        elif name == "lot_size":
            text += f" ({inst.lot_size_fixed} quantity units of 1e-8)"
        lines.append((name.replace("_", " "), text))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")


_DEFINITION_OPTIONS = {
    "venue_symbol": "how the venue spells it (default: the symbol)",
    "instrument_id": "pin this id (1..4294967295) instead of the stable hash",
    "asset_class": "spot, future, option, equity, fx, index or other",
    "tick_size": "price step, a decimal (0.01)",
    "lot_size": "size step, a decimal (0.00001)",
    "price_precision": "price decimals (default: from the tick size)",
    "size_precision": "size decimals (default: from the lot size)",
    "multiplier": "contract multiplier, a decimal (50)",
    "currency": "quote or settlement currency (USD)",
    "expiry": "ISO 8601 date or UTC time (2026-12-18, 2026-12-18T14:30:00Z)",
    "description": "free text",
}
_INTS = ("instrument_id", "price_precision", "size_precision")


def cmd_add(args: argparse.Namespace) -> int:
    from hftagg.instruments import save_instruments

    registry, target = _registry(args)
    venue = args.venue.lower()
    old = next((i for i in registry.lookup(args.symbol, venue) if i.symbol == args.symbol), None)
    values = dict(old.as_table()) if old is not None else {}
    values.pop("symbol", None)
    values.pop("venue", None)
    for name in _DEFINITION_OPTIONS:
        given = getattr(args, name)
        if given is not None:
            values[name] = given
    inst = registry.define(args.symbol, venue, **values)
    save_instruments(target, [inst])
    verb = "updated" if old is not None else "added"
    spelled = f", venue symbol {inst.venue_symbol}" if inst.venue_symbol != inst.symbol else ""
    print(f"{verb} {inst.symbol} on {inst.venue}: instrument_id {inst.instrument_id}{spelled} "
          f"-> {target}")  # fmt: skip
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from hftagg.builtins.protocols.dbn import expand_paths
    from hftagg.builtins.protocols.dbn.symbols import import_file
    from hftagg.instruments import save_instruments

    registry, target = _registry(args)
    paths = [p for pattern in args.files for p in expand_paths(pattern)]
    if not paths:
        print(f"hftagg symbols: no DBN file matches {' '.join(args.files)}", file=sys.stderr)
        return 1
    for path in paths:
        counts = import_file(path, registry)
        print(
            f"{path}: {counts.get('symbol_mappings', 0):,} symbol mappings, "
            f"{counts['definitions']:,} definitions, {counts.get('symbol_conflicts', 0):,} "
            f"refused (id held by another instrument)"
            + (f"; {counts['dead_letters']:,} undecodable part(s) skipped (dead letters)" if counts["dead_letters"]
               else "")
        )  # fmt: skip
    latest = {(i.venue, i.symbol): i for i in registry.unsaved}
    fresh = [registry.get(i.instrument_id) or i for i in latest.values()]
    fresh = [i for i in fresh if registry.id_of(i.symbol, i.venue) == i.instrument_id]
    if fresh:
        save_instruments(target, fresh, registry)
    print(f"{len(fresh)} instruments written to {target}")
    return 0


def _add_parsers(commands) -> None:
    ls = commands.add_parser(
        "list",
        help="list instruments (--venue, --asset-class, a symbol glob)",
        description="List the registry's instruments: symbol, venue, venue spelling, id and "
        "definition. PATTERN is a glob on canonical or venue symbols ('BTC*').",
    )
    ls.add_argument("pattern", nargs="?", metavar="PATTERN", help="symbol glob, e.g. 'BTC*'")
    ls.add_argument("--venue", help="only this venue")
    ls.add_argument("--asset-class", help="only this asset class (spot, future, ...)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list)

    show = commands.add_parser(
        "show",
        help="one instrument: id, venue spellings, definition",
        description="Show an instrument on every venue it is defined on, found by canonical "
        "symbol, venue spelling or instrument_id.",
    )
    show.add_argument("symbol", metavar="SYMBOL", help="canonical symbol, venue spelling or id")
    show.add_argument("--venue", help="only this venue")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)

    add = commands.add_parser(
        "add",
        help="define an instrument (validated) in the instruments file",
        description="Define SYMBOL on --venue and store it in the instruments file next to the "
        "config (instruments.toml). Values are checked (decimals exact on the records' "
        "fixed-point scales, ids free); an existing instrument keeps the fields not given.",
    )
    add.add_argument("symbol", metavar="SYMBOL", help="canonical symbol, e.g. BTCUSD")
    add.add_argument("--venue", required=True, help="venue name, e.g. binance")
    for name, text in _DEFINITION_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        add.add_argument(flag, dest=name, type=int if name in _INTS else str, help=text)
    add.add_argument("--file", metavar="FILE", help="instruments file (default: next to config)")
    add.set_defaults(func=cmd_add)
    imp = commands.add_parser(
        "import",
        help="define the instruments of DBN files (symbol mappings and definitions)",
        description="Read DBN files (.dbn, .dbn.zst, globs) and store their symbol mappings "
        "and instrument definitions in the instruments file, so every tool shows their "
        "symbols (the vendor's ids pinned, a symbol's earlier ids as aliases).",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="DBN file or glob")
    imp.add_argument("--file", metavar="FILE", help="instruments file (default: next to config)")
    imp.set_defaults(func=cmd_import)
    for parser in (ls, show, add, imp):
        add_config_option(parser, "whose instruments; default: ./config.toml if present")


def add_parser(sub) -> None:
    symbols = sub.add_parser(
        "symbols",
        help="the instrument registry: list, show, add, import",
        description="Canonical symbols, their venue spellings, instrument ids and definitions.",
    )
    commands = symbols.add_subparsers(dest="symbols_command", required=True, metavar="COMMAND")
    _add_parsers(commands)
