"""``hftagg store``: look after what the ``store`` stage keeps.

``hftagg store ls`` lists each stored topic: schema, records, time range (UTC), instruments
(as symbols where the config's instrument registry knows them; ids otherwise),
bytes on disk, segments live and sealed, archived Parquet files. The store is ``--path``, else
the ``path`` of the config's ``store`` stage, else ``./storage``.

The group is built to grow: each subcommand is an ``add_<name>(commands)`` function listed in
``_subcommands`` (``verify`` in ``store_verify``, ``migrate`` in ``store_migrate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hftagg.cli.common import add_config_option
from hftagg.cli.query import store_path
from hftagg.errors import StorageError

__all__ = ["add_parser", "cmd_ls", "store_path"]


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    import numpy as np

    return str(np.datetime64(int(ns), "ns")).replace("T", " ") + "Z"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _instruments(ids: list[int], registry=None) -> str:
    """``3 (BTCUSD, ESZ6, 99)``: symbols where the instrument registry knows the id."""
    names = [_name(i, registry) for i in ids[: 6 if len(ids) <= 6 else 5]]
    if len(ids) <= 6:
        return f"{len(ids)} ({', '.join(names)})" if ids else "0"
    return f"{len(ids)} ({', '.join(names)}, ...)"


def _name(instrument_id: int, registry) -> str:
    symbol = None if registry is None else registry.symbol(instrument_id)
    return str(instrument_id) if symbol is None else symbol


def _registry(args: argparse.Namespace):
    """The config's instrument registry, or None (with a warning) when it cannot be loaded."""
    from hftagg.cli.common import config_path
    from hftagg.config.load import read_layers
    from hftagg.errors import HftaggError
    from hftagg.instruments import load_registry

    path = config_path(getattr(args, "config", None))
    try:
        return load_registry(path, read_layers(path))
    except HftaggError as exc:
        print(f"hftagg: instruments not loaded, showing ids: {exc}", file=sys.stderr)
        return None


def cmd_ls(args: argparse.Namespace) -> int:
    from hftagg.builtins.storage.store.inventory import summarize

    root = store_path(args)
    if not root.is_dir():
        print(
            f"hftagg: no store at {root}: run a pipeline with a 'store' stage first "
            f"(./run_main.sh --duration 10), or give --path",
            file=sys.stderr,
        )
        return 1
    try:
        topics = summarize(root)
    except StorageError as exc:
        print(f"hftagg: {exc}", file=sys.stderr)
        return 1
    for topic in topics:
        for problem in topic.problems:
            print(f"hftagg: {problem}", file=sys.stderr)
    registry = _registry(args)
    if args.json:
        rows = [
            {**vars(t), "bytes": t.bytes, "symbols": [_name(i, registry) for i in t.instruments]}
            for t in topics
        ]
        print(json.dumps({"path": str(root), "topics": rows}, indent=2))
        return 0
    if not topics:
        print(f"{root}: no stored topics")
        return 0
    _print_table(root, topics, registry)
    return 0


def _print_table(root: Path, topics: list, registry=None) -> None:
    header = ("topic", "schema", "records", "from (UTC)", "to (UTC)", "instruments", "on disk",
              "segments live/sealed", "parquet")  # fmt: skip
    rows = [
        (
            t.topic,
            ",".join(t.schemas),
            f"{t.records:,}",
            _utc(t.ts_min),
            _utc(t.ts_max),
            _instruments(t.instruments, registry),
            _size(t.bytes),
            f"{t.segments_live}/{t.segments_sealed}",
            f"{t.archived_files} ({t.archived_records:,} records)" if t.archived_files else "0",
        )
        for t in topics
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"store {root.resolve()}")
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    total = sum(t.records for t in topics)
    size = sum(t.bytes for t in topics)
    print(f"{len(topics)} topics, {total:,} records, {_size(size)} on disk")


def add_ls(commands) -> None:
    ls = commands.add_parser(
        "ls",
        help="list stored topics: records, time range, instruments, bytes, segments",
        description="List each stored topic: schema, records, time range (UTC), instruments, "
        "bytes on disk, segments live/sealed and archived Parquet files. The store is --path, "
        "else the path of the config's 'store' stage, else ./storage.",
    )
    add_config_option(ls, "whose 'store' stage path to list; default: ./config.toml if present")
    ls.add_argument("--path", metavar="DIR", help="the store folder (overrides the config)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_ls)


def _subcommands() -> list:
    """``add_<name>(commands)`` of every ``hftagg store`` subcommand, in help order."""
    from hftagg.cli.store_migrate import add_migrate
    from hftagg.cli.store_verify import add_verify

    return [add_ls, add_verify, add_migrate]


def add_parser(sub) -> None:
    store = sub.add_parser(
        "store",
        help="the stored data: ls, verify, migrate",
        description="Look after stored data: `hftagg store ls` lists stored topics, `verify` "
        "checks every segment and Parquet file, `migrate` creates or upgrades PostgreSQL tables.",
    )
    commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    for add in _subcommands():
        add(commands)
