"""``hftagg run``: run the pipeline until Ctrl-C, SIGTERM or ``--duration``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from hftagg.cli.common import (
    add_config_option,
    config_path,
    load_plugins_reported,
    output_file,
    positive_float,
    print_problems,
    setup_logging,
)
from hftagg.errors import ConfigError, HftaggError, InstrumentError

__all__ = ["add_parser", "cmd_run"]


def _run_with_status(session, args: argparse.Namespace) -> None:
    """Status while running: a table redrawn in place on a terminal, plain lines otherwise."""
    from hftagg.runtime.status import TableRedraw

    if args.quiet:
        session.run_until(args.duration, args.status_interval, None)
        return
    table = sys.stdout.isatty() and not args.status_lines
    redraw = TableRedraw()

    def show(text: str) -> None:
        print(redraw(text) if table else text, flush=True)

    session.run_until(args.duration, args.status_interval, show, table=table)


def cmd_run(args: argparse.Namespace) -> int:
    from hftagg.config.sources import open_config_sources, source_layers
    from hftagg.instruments import load_registry, set_default_registry
    from hftagg.runtime.assemble import assemble
    from hftagg.runtime.session import Session
    from hftagg.runtime.status import format_ring_memory, format_summary

    setup_logging()
    path = config_path(args.config)
    sources: list = []
    try:
        host = load_plugins_reported(path)
        sources = open_config_sources(host)
        assembled = assemble(path, host=host, remote=source_layers(sources))
    except ConfigError as exc:
        for source in sources:
            source.stop()
        print_problems(exc)
        print(
            f"hftagg: {path or 'defaults'}: not started ({len(exc.problems)} problem(s))",
            file=sys.stderr,
        )
        return 1
    try:
        registry = load_registry(path, assembled.spec.raw)
        set_default_registry(registry)
    except InstrumentError as exc:
        print(f"hftagg: {path or 'defaults'}: not started: {exc}", file=sys.stderr)
        return 1
    session = Session(assembled, path, sources=sources, watch=not args.no_watch)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: session.stop_requested.set())
    print(f"hftagg: running {path or 'built-in defaults'}", flush=True)
    for line in assembled.graph.describe():
        print(f"  {line}", flush=True)
    for line in format_ring_memory(session.pipeline.ring_memory()):
        print(f"hftagg: {line}" if not line.startswith(" ") else line, flush=True)
    for note in assembled.spec.notes:
        print(f"hftagg: note: {note}", flush=True)
    try:
        session.start()
    except HftaggError as exc:
        print(f"hftagg: {path or 'defaults'}: not started: {exc}", file=sys.stderr)
        return 1
    broken = False
    try:
        _run_with_status(session, args)
    except Exception:  # whatever broke while running: still drain, stop and say what ran
        logging.getLogger("hftagg").exception("hftagg run failed while running; stopping")
        broken = True
    try:
        summary = session.stop()
        summary["instruments"] = registry.summary()
    except HftaggError as exc:
        print(f"hftagg: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary), flush=True)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 1 if broken else 0


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run the pipeline from config.toml (or built-in defaults)")
    add_config_option(run, "default: ./config.toml if present, else built-in defaults")
    run.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECS",
        help="stop after SECS seconds (default: until Ctrl-C)",
    )
    run.add_argument(
        "--status-interval",
        type=positive_float,
        metavar="SECS",
        help="seconds between status lines (default: runtime.status_interval_secs)",
    )
    run.add_argument("--quiet", action="store_true", help="no status lines, only the summary")
    run.add_argument(
        "--status-lines",
        action="store_true",
        help="plain status lines even on a terminal (default there: a table redrawn in place)",
    )
    run.add_argument(
        "--summary-json",
        type=output_file,
        metavar="FILE",
        help="also write the summary as JSON to FILE",
    )
    run.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch config.toml and plugin folders for live changes",
    )
    run.set_defaults(func=cmd_run)
