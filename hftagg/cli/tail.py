"""``hftagg tail``: print the records a running pipeline delivers on one topic."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from hftagg.cli.common import add_config_option, config_path, non_negative_int, positive_float

__all__ = ["add_parser", "cmd_tail"]


def cmd_tail(args: argparse.Namespace) -> int:
    from hftagg.client import subscribe
    from hftagg.config.load import read_layers

    address = args.address
    if address is None:
        raw = read_layers(config_path(args.config))
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


def add_parser(sub) -> None:
    tail = sub.add_parser("tail", help="print records a running pipeline delivers on TOPIC")
    tail.add_argument("topic")
    tail.add_argument("--address", help="publisher address (default: delivery.target of config)")
    add_config_option(tail, "its delivery.target is the default address")
    tail.add_argument("--pattern", default="pub", choices=["pub", "push"])
    tail.add_argument(
        "--count", type=non_negative_int, default=0, help="stop after N records (0: never)"
    )
    tail.add_argument(
        "--timeout", type=positive_float, metavar="SECS", help="give up after SECS without data"
    )
    tail.set_defaults(func=cmd_tail)
