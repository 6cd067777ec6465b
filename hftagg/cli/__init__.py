"""The ``hftagg`` command: one module per command group.

``run``, ``plugins``, ``config`` (validate, params, set, show), ``tail``, ``top``, ``warm``.
Each module has an ``add_parser(subparsers)`` that wires its commands; ``main`` is the entry
point (``hftagg = "hftagg.cli:main"``).
"""

from __future__ import annotations

import argparse
import sys

from hftagg.cli import config, plugins, run, tail, top, warm
from hftagg.errors import HftaggError

__all__ = ["build_parser", "main"]

COMMAND_GROUPS = (run, plugins, config, tail, top, warm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hftagg", description="High-frequency market-data pipelines"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HftaggError as exc:
        print(f"hftagg: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
