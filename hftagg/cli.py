"""The ``hftagg`` command: run, plugins, config validate, tail, warm."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np

from hftagg.cli_config import add_config_commands
from hftagg.errors import ConfigError, HftaggError

__all__ = ["main"]

DEFAULT_CONFIG = Path("config.toml")


def _config_path(value: str | None) -> Path | None:
    """The config to use: the one given, else ./config.toml if present, else built-in defaults."""
    if value:
        return Path(value)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)


# -- run ------------------------------------------------------------------------------------------


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="hftagg: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _start_consul_layer():
    """A Consul KV config source when ``CONSUL_HTTP_ADDR`` is set; unreachable is not fatal."""
    from hftagg.config.consul import ConsulSource, consul_settings

    settings = consul_settings()
    if settings is None:
        return None
    address, prefix = settings
    source = ConsulSource(address, prefix)
    try:
        source.fetch_once()
        logging.getLogger("hftagg.consul").info("Consul %s: using keys under %r", address, prefix)
    except ConfigError as exc:
        logging.getLogger("hftagg.consul").warning(
            "%s; running on the other layers and retrying in the background", exc
        )
    return source


def _report_failed_plugins(host) -> None:
    for record in host.failed:
        last = record.error.strip().splitlines()[-1] if record.error else ""
        print(
            f"hftagg: plugin {record.name!r} ({record.location}) failed to load, skipped: {last}",
            file=sys.stderr,
        )


def cmd_run(args: argparse.Namespace) -> int:
    from hftagg.runtime.assemble import assemble
    from hftagg.runtime.session import Session
    from hftagg.runtime.status import format_summary

    _setup_logging()
    path = _config_path(args.config)
    consul = _start_consul_layer()
    try:
        assembled = assemble(path, consul=consul.layer if consul else None)
    except ConfigError as exc:
        _print_problems(exc)
        print(
            f"hftagg: {path or 'defaults'}: not started ({len(exc.problems)} problem(s))",
            file=sys.stderr,
        )
        return 1
    _report_failed_plugins(assembled.host)
    session = Session(assembled, path, consul=consul, watch=not args.no_watch)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: session.stop_requested.set())
    print(f"hftagg: running {path or 'built-in defaults'}", flush=True)
    for line in assembled.graph.describe():
        print(f"  {line}", flush=True)
    session.start()
    session.run_until(
        args.duration,
        args.status_interval,
        None if args.quiet else lambda line: print(line, flush=True),
    )
    try:
        summary = session.stop()
    except HftaggError as exc:
        print(f"hftagg: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary), flush=True)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 0


# -- plugins --------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    path = _config_path(args.config)
    try:
        raw = read_layers(path)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    dirs = plugin_dirs(raw, path) + [Path(p) for p in args.plugin_dir]
    host = load_plugins(dirs)
    if args.json:
        print(json.dumps([r.as_dict() for r in host.records], indent=2))
        return 0
    for record in host.records:
        status = "FAILED" if record.error else "ok"
        print(f"{record.name}  [{record.origin}] {record.location}  {status}")
        for what, names in record.provides.items():
            print(f"    {what.replace('_', ' ')}: {', '.join(names)}")
        if record.error:
            for line in record.error.rstrip().splitlines():
                print(f"    | {line}")
    return 0


# -- config ---------------------------------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    from hftagg.runtime.assemble import assemble

    path = Path(args.file) if args.file else _config_path(None)
    try:
        assembled = assemble(path)
    except ConfigError as exc:
        _print_problems(exc)
        print(f"{path or '(defaults)'}: invalid, {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{path or '(defaults)'}: valid, {len(assembled.graph.nodes)} stages")
    for line in assembled.graph.describe():
        print(f"  {line}")
    return 0


def cmd_config_params(args: argparse.Namespace) -> int:
    """Every stage type's parameters: type, default, live or restart, description."""
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    path = _config_path(args.config)
    host = load_plugins(plugin_dirs(read_layers(path), path))
    types = [args.type] if args.type else sorted(host.stage_types)
    for name in types:
        cls = host.stage_type(name)
        print(f"{name} ({cls.kind}, from {host.stage_origin[name]})")
        for p in cls.Params.describe():
            mode = "live" if p["live"] else "restart"
            print(
                f"    {p['name']:<22} {p['type']:<10} default {p['default']!r:<14} {mode:<8}"
                f"{p['description']}"
            )
    return 0


# -- tail -----------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from hftagg.client import subscribe
    from hftagg.config.load import read_layers

    address = args.address
    if address is None:
        raw = read_layers(_config_path(args.config))
        address = raw.get("delivery", {}).get("target", "tcp://127.0.0.1:5555")
    seen = 0
    np.set_printoptions(linewidth=160)
    with subscribe(address, args.topic, pattern=args.pattern, timeout_secs=args.timeout) as sub:
        for batch in sub:
            names = batch.dtype.names
            for record in batch[: max(0, args.count - seen) if args.count else None]:
                print(f"{args.topic} " + " ".join(f"{k}={record[k]}" for k in names), flush=True)
            seen += len(batch)
            if args.count and seen >= args.count:
                break
        gaps = sub.gaps
    if args.timeout and seen == 0:
        print(
            f"hftagg tail: nothing on {args.topic!r} at {address} within {args.timeout}s "
            f"(is the pipeline running and delivering that topic?)",
            file=sys.stderr,
        )
        return 1
    if gaps:
        print(f"hftagg tail: {gaps} records were lost between frames", file=sys.stderr)
    return 0


# -- top ----------------------------------------------------------------------------------------


def cmd_top(args: argparse.Namespace) -> int:
    from hftagg.telemetry.top import run_top

    address = args.address
    if address is None:
        from hftagg.config.load import read_layers

        raw = read_layers(_config_path(args.config))
        address = raw.get("telemetry", {}).get("prometheus_address", "127.0.0.1:9464")
    return run_top(address, args.interval, args.iterations)


# -- warm -----------------------------------------------------------------------------------------


def cmd_warm(args: argparse.Namespace) -> int:
    from hftagg.kernels import warm_all

    t0 = time.perf_counter()
    warm_all()
    print(f"hftagg: compiled kernels warmed in {time.perf_counter() - t0:.1f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hftagg", description="High-frequency market-data pipelines"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline from config.toml (or built-in defaults)")
    run.add_argument("--config", "-c", help="config file (default: ./config.toml if present)")
    run.add_argument(
        "--duration", type=float, help="stop after SECS seconds (default: until Ctrl-C)"
    )
    run.add_argument("--status-interval", type=float, help="seconds between status lines")
    run.add_argument("--quiet", action="store_true", help="no status lines, only the summary")
    run.add_argument("--summary-json", help="also write the summary as JSON to this file")
    run.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch config.toml and plugin folders for live changes",
    )
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser(
        "plugins", help="list plugins, where they came from, what they provide"
    )
    plugins.add_argument("--json", action="store_true")
    plugins.add_argument("--config", "-c")
    plugins.add_argument("--plugin-dir", action="append", default=[], help="extra plugin folder")
    plugins.set_defaults(func=cmd_plugins)

    config = sub.add_parser("config", help="work with config files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    validate = config_sub.add_parser("validate", help="check a config; one line per problem")
    validate.add_argument("file", nargs="?")
    validate.set_defaults(func=cmd_config_validate)
    add_config_commands(config_sub)
    params = config_sub.add_parser(
        "params",
        help="list stage types' parameters and whether each is live or restart-only",
        description="live: applied to the running stage from its next batch when the config "
        "changes; restart: the stage is rebuilt (state carried by snapshot/restore).",
    )
    params.add_argument("type", nargs="?", help="one stage type (default: all)")
    params.add_argument("--config", "-c")
    params.set_defaults(func=cmd_config_params)

    tail = sub.add_parser("tail", help="print records a running pipeline delivers on TOPIC")
    tail.add_argument("topic")
    tail.add_argument("--address", help="publisher address (default: delivery.target of config)")
    tail.add_argument("--config", "-c")
    tail.add_argument("--pattern", default="pub", choices=["pub", "push"])
    tail.add_argument("--count", type=int, default=0, help="stop after N records")
    tail.add_argument("--timeout", type=float, help="give up after SECS without data")
    tail.set_defaults(func=cmd_tail)

    top = sub.add_parser("top", help="live view of a running pipeline (rates, latency, backlog)")
    top.add_argument("--address", help="metrics endpoint host:port (default: from config)")
    top.add_argument("--config", "-c")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=0, help="stop after N refreshes")
    top.set_defaults(func=cmd_top)

    warm = sub.add_parser("warm", help="compile and cache the numba kernels")
    warm.set_defaults(func=cmd_warm)
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
