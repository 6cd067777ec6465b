"""``hftagg top``: a live view of a running pipeline's metrics."""

from __future__ import annotations

import argparse

from hftagg.cli.common import add_config_option, config_path, non_negative_int, positive_float

__all__ = ["add_parser", "cmd_top"]


def cmd_top(args: argparse.Namespace) -> int:
    from hftagg.telemetry.top import run_top

    address = args.address
    if address is None:
        from hftagg.config.load import read_layers

        raw = read_layers(config_path(args.config))
        address = raw.get("telemetry", {}).get("prometheus_address", "127.0.0.1:9464")
    return run_top(address, args.interval, args.iterations)


def add_parser(sub) -> None:
    top = sub.add_parser("top", help="live view of a running pipeline (rates, latency, backlog)")
    top.add_argument("--address", help="metrics endpoint host:port (default: from config)")
    add_config_option(top, "its telemetry.prometheus_address is the default address")
    top.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="SECS",
        help="seconds between refreshes",
    )
    top.add_argument(
        "--iterations", type=non_negative_int, default=0, help="stop after N refreshes (0: never)"
    )
    top.set_defaults(func=cmd_top)
