"""Delivery latency at 10 k / 100 k / 1 M events/s and the default pipeline's throughput.

The measuring code ships in the package (``hftagg.bench.latency``, also run by
``hftagg bench latency``); this runs it on the repository's ``config.toml``. Results:
``latency-in-process p99`` (ts_recv -> publisher, the runtime's metrics), ``latency-subscriber
p99`` (ts_recv -> a subscriber process, on its own clock), one pair per wait strategy the
runtime offers, and ``pipeline-default`` (records/s, unthrottled, against the same graph
stepped on one thread).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.harness import Result
from hftagg.bench.latency import run as run_latency

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def run(quick: bool) -> list[Result]:
    def say(text: str) -> None:
        print(f"  latency: {text}", file=sys.stderr, flush=True)

    return [Result(**asdict(figure)) for figure in run_latency(CONFIG, quick, say)]
