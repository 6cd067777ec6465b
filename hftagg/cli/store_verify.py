"""``hftagg store verify``: check a store's segments and archived Parquet, change nothing.

One line per problem on stdout -- file, byte offset, what is wrong -- then a summary; exit
status 1 when anything is wrong, 0 when all is well (2 when the store cannot be read at all).
What is checked is described in :mod:`hftagg.builtins.storage.archive.verify`.
"""

from __future__ import annotations

import argparse
import sys

from hftagg.cli.common import add_config_option
from hftagg.errors import HftaggError

__all__ = ["add_verify", "cmd_verify"]


def cmd_verify(args: argparse.Namespace) -> int:
    from hftagg.builtins.storage.archive.verify import verify_store
    from hftagg.cli.query import store_path

    root = store_path(args)
    try:
        report = verify_store(root)
    except HftaggError as exc:
        print(f"hftagg store verify: {exc}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem)
    print(f"{root}: {report.summary()}")
    return 0 if report.ok else 1


def add_verify(commands) -> None:
    verify = commands.add_parser(
        "verify",
        help="check every segment and archived Parquet file; name file, offset and problem",
        description="Check every segment (header, record count, torn tail, time order) and "
        "every archived Parquet file (size, CRC32C, row count against the catalog; damage "
        "located by row group, column and byte). Changes nothing. Exit status 1 on problems.",
    )
    add_config_option(verify, "whose 'store' stage path to check; default: ./config.toml")
    verify.add_argument("--path", metavar="DIR", help="the store folder (overrides the config)")
    verify.set_defaults(func=cmd_verify)
