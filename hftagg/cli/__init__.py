"""The ``hftagg`` command: one module per command group.

``init``, ``run``, ``plugins``, ``config`` (validate, params, set, add-stage, remove, show),
``graph``, ``tail``, ``top``, ``warm``, ``query``, ``store`` (ls), ``symbols`` (list, show,
add), ``bench``. Each module has an
``add_parser(subparsers)`` that wires
its commands; ``main`` is the entry point (``hftagg = "hftagg.cli:main"``).

Every command that reads a config takes ``-c/--config FILE`` (also accepted before the command:
``hftagg -c my.toml run``). Mistyped commands, choices and flags get a "did you mean" hint;
bad values (``--duration -1``, a missing ``--plugin-dir``) are refused before anything runs.
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from hftagg.cli import (
    bench,
    config,
    graph,
    init,
    plugins,
    query,
    run,
    store,
    symbols,
    tail,
    top,
    warm,
)
from hftagg.cli.common import Parser
from hftagg.errors import HftaggError

__all__ = ["build_parser", "main"]

COMMAND_GROUPS = (init, run, plugins, config, graph, tail, top, warm, query, store, symbols, bench)


def version_text() -> str:
    """``hftagg 0.1.0 (Python 3.11.7, numpy 2.1.3, numba 0.60.0, pynng 0.8.0)``."""
    from hftagg import __version__

    parts = [f"Python {platform.python_version()}"]
    for dist in ("numpy", "numba", "pynng"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} missing")
    return f"hftagg {__version__} ({', '.join(parts)})"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _tag_leaves(parser: argparse.ArgumentParser) -> None:
    """Each sub-parser records itself in the namespace, so errors about unknown arguments come
    from (and suggest the flags of) the command that was actually given."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(_parser=sub)
                _tag_leaves(sub)


def build_parser() -> Parser:
    parser = Parser(
        prog="hftagg",
        description="High-frequency market-data pipelines",
        epilog="Start with: hftagg init (a starter config and plugin), hftagg run, hftagg graph. "
        "Each command has --help.",
    )
    parser.add_argument(
        "--version", action=_Version, help="print hftagg's version (and its key libraries')"
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="config file for the command (default: ./config.toml if present)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    parser.set_defaults(_parser=parser)
    _tag_leaves(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extras = build_parser().parse_known_args(argv)
    if extras:
        args._parser.reject_unknown(extras)
    try:
        return args.func(args)
    except HftaggError as exc:
        print(f"hftagg: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file or folder the user named: one line, not a traceback
        print(f"hftagg: {_os_error_text(exc)}", file=sys.stderr)
        return 1


def _os_error_text(exc: OSError) -> str:
    """``cannot write '/x/y.json': No such file or directory`` (or the error as it is)."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{exc.filename!s}: {exc.strerror}"


if __name__ == "__main__":
    sys.exit(main())
