"""``hftagg query "SQL"``: DuckDB SQL over a store's live segments and archived Parquet.

One view per topic (``md.trades`` -> ``md_trades``), and ``instruments``, the config's instrument
registry (:mod:`hftagg.instruments.tables`: join on ``instrument_id`` for ``symbol``, ``venue``
and the definition); times are UTC with nanoseconds, prices
and sizes exact decimals. ``--format table`` (default) aligns columns, ``csv`` writes RFC 4180
CSV with a header, ``json`` a JSON array with one object per row (decimals as exact JSON
numbers, times as text). Values are formatted by DuckDB (cast to text), never through a float.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tomllib
from pathlib import Path

from hftagg.cli.common import add_config_option, config_path
from hftagg.errors import HftaggError

__all__ = ["add_parser", "cmd_query", "store_path"]

DEFAULT_STORE_PATH = "./storage"
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
_NUMERIC += tuple(f"U{t}" for t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"))


def store_path(args: argparse.Namespace) -> Path:
    """``--path``, else the ``path`` of the config's ``store`` stage, else ``./storage``."""
    if getattr(args, "path", None):
        return Path(args.path)
    config = config_path(getattr(args, "config", None))
    if config is not None and Path(config).is_file():
        try:
            data = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        for table in ("stages", "storage"):
            for stage in (data.get(table) or {}).values():
                if isinstance(stage, dict) and stage.get("type") == "store" and "path" in stage:
                    return Path(stage["path"])
    return Path(DEFAULT_STORE_PATH)


def _text_rows(relation) -> tuple[list[str], list[str], list[tuple]]:
    names = list(relation.columns)
    types = [str(t) for t in relation.types]
    if not names:
        return names, types, []
    as_text = relation.project("columns(*)::VARCHAR")
    return names, types, as_text.fetchall()


def _print_table(names, types, rows, out) -> None:
    cells = [["NULL" if v is None else v for v in row] for row in rows]
    widths = [
        max([len(n), len(types[i])] + [len(r[i]) for r in cells]) for i, n in enumerate(names)
    ]
    numeric = [t.split("(")[0] in _NUMERIC for t in types]

    def line(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line(names), file=out)
    print(line(types), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)


def _print_csv(names, rows, out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(["" if v is None else v for v in row] for row in rows)


def _print_json(relation, out) -> None:
    rows = relation.query("q", "SELECT to_json(q)::VARCHAR FROM q").fetchall()
    print("[", file=out)
    for i, (row,) in enumerate(rows):
        print(f"  {row}{',' if i < len(rows) - 1 else ''}", file=out)
    print("]", file=out)


def _add_instruments(session, args: argparse.Namespace) -> None:
    """The config's instrument registry as table ``instruments`` (unless a topic's view has
    that name), to join on ``instrument_id`` for symbols and definitions."""
    from hftagg.config.load import read_layers
    from hftagg.instruments import load_registry
    from hftagg.instruments.tables import instruments_table

    if "instruments" in session.views:
        return
    config = config_path(getattr(args, "config", None))
    try:
        registry = load_registry(config, read_layers(config))
    except HftaggError as exc:
        print(f"hftagg query: warning: no instruments table: {exc}", file=sys.stderr)
        return
    session.connection.register("instruments", instruments_table(registry))


def cmd_query(args: argparse.Namespace) -> int:
    from hftagg.builtins.storage.archive.query import open_query

    path = store_path(args)
    try:
        session = open_query(path)
        try:
            _add_instruments(session, args)
            for problem in session.problems:
                print(f"hftagg query: warning: {problem}", file=sys.stderr)
            relation = session.sql(args.sql)
            if args.format == "json":
                _print_json(relation, sys.stdout)
            else:
                names, types, rows = _text_rows(relation)
                if args.format == "csv":
                    _print_csv(names, rows, sys.stdout)
                else:
                    _print_table(names, types, rows, sys.stdout)
        finally:
            session.close()
    except HftaggError as exc:
        print(f"hftagg query: {exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    query = sub.add_parser(
        "query",
        help="SQL (DuckDB) over stored topics: live segments and archived Parquet",
        description="Run one SQL query over a store. Each topic is a view named after it with "
        "'.' as '_' (md.trades -> md_trades), plus the table 'instruments' (instrument_id, "
        "symbol, venue, venue_symbol, tick_size, ...); times are UTC (ns), prices and sizes "
        "exact decimals.",
        epilog='example: hftagg query "SELECT instrument_id, count(*), avg(price) FROM '
        'md_trades GROUP BY 1 ORDER BY 1"',
    )
    query.add_argument("sql", metavar="SQL", help="one DuckDB SELECT statement")
    query.add_argument(
        "--path",
        default=None,
        help="store folder (default: the config's store stage path, else ./storage)",
    )
    query.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    add_config_option(query, "whose store stage path to query; default: ./config.toml")
    query.set_defaults(func=cmd_query)
