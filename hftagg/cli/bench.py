"""``hftagg bench latency``: delivery latency and throughput of a config, on this machine.

Runs ``hftagg.bench.latency`` (the code behind ``python -m benchmarks latency``) on the config
(``-c FILE``, default ./config.toml): latency from ``ts_recv`` to the publisher and to a
subscriber process at 10 k, 100 k and 1 M events/s for each wait strategy, and the unthrottled
throughput. ``--quick``: 100 k/s with the default runtime only. ``--json``: one object a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from hftagg.cli.common import add_config_option, config_path

__all__ = ["add_parser", "cmd_bench_latency", "format_figure"]


def _quantity(value: float, unit: str) -> str:
    from hftagg.client import format_ns

    if unit == "ns":
        return format_ns(value)
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def format_figure(figure) -> str:
    """``NAME  hftagg VALUE | BASELINE VALUE | target T: met`` plus indented details."""
    line = (
        f"{figure.name:<36} hftagg {_quantity(figure.hftagg, figure.unit):<12} | "
        f"{figure.baseline_name} {_quantity(figure.baseline, figure.unit)}"
    )
    if figure.target is not None:
        met = (
            figure.hftagg <= figure.target
            if figure.lower_is_better
            else figure.hftagg >= figure.target
        )
        line += f" | target {_quantity(figure.target, figure.unit)}: {'met' if met else 'MISSED'}"
    return line + "".join(f"\n      {k}: {v}" for k, v in figure.extra.items())


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from hftagg.bench.latency import run
    from hftagg.errors import ConfigError

    path = config_path(args.config)
    if path is None or not path.exists():
        raise ConfigError(
            f"no config to measure ({path or './config.toml'} not found); pass -c FILE or run "
            "from a folder with a config.toml (hftagg init writes one)"
        )

    def say(text: str) -> None:
        print(f"hftagg bench: {text}", file=sys.stderr, flush=True)

    say(f"measuring {path} (other work on this machine shows in the figures)")
    for figure in run(path, quick=args.quick, progress=say):
        print(json.dumps(asdict(figure)) if args.json else format_figure(figure), flush=True)
    return 0


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="measure latency and throughput on this machine")
    kinds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    latency = kinds.add_parser(
        "latency",
        help="ts_recv -> publisher and -> subscriber latency at 10k/100k/1M events/s; throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(latency, "the pipeline to measure (default ./config.toml)")
    latency.add_argument("--quick", action="store_true", help="100k events/s only, short runs")
    latency.add_argument("--json", action="store_true", help="one JSON object per result")
    latency.set_defaults(func=cmd_bench_latency)
