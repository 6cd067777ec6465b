"""Telemetry cost and truthfulness.

1. Throughput of the end-to-end pipeline (see bench_pipeline) with telemetry off vs on
   (metrics on every batch + spans for the default 1% of batches, in-memory exporter), in the
   same run, alternating to spread machine noise. Target: <= 5% cost.
2. End-to-end latency at 100 k records/s offered load: the percentiles hftagg's own histograms
   report (ts_recv -> publisher) against an independent measurement by a subscriber process
   that checks each record's ts_recv against its own clock on arrival (so it also includes the
   hop through pynng; the two should agree up to that hop).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import run_hftagg
from benchmarks.harness import Result

LATENCY_SUBSCRIBER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from hftagg.client import subscribe
    lat = []
    print("ready", flush=True)
    measure_from = int(sys.argv[2])
    with subscribe(sys.argv[1], "ind.ema", pattern="push", timeout_secs=3) as sub:
        for batch in sub:
            now = time.time_ns()
            recv = batch["ts_recv"]
            lat.append(now - recv[recv >= measure_from])
    a = np.concatenate(lat) if lat else np.zeros(1)
    print(json.dumps({q: float(np.percentile(a, q)) for q in (50, 99, 99.9)} | {"n": len(a)}))
    """
)

PACED = """
[runtime]
plugin_paths = []
[data_sources.sim]
type = "simulator"
fields = ["trades"]
rate = 100000
trade_probability = 1.0
[processing]
ema_window = 20
[delivery]
target = "{address}"
pattern = "push"
topics = ["ind.ema"]
"""


def _throughput(seconds: float, rounds: int) -> tuple[float, float, list[float]]:
    """Pairs of runs (off, on), alternating which goes first; medians and per-pair costs."""
    from hftagg.telemetry import TelemetrySection, make_telemetry

    def with_telemetry() -> float:
        running = make_telemetry(TelemetrySection(traces="memory", prometheus=False))
        try:
            return run_hftagg(seconds, telemetry=running.telemetry)[0]
        finally:
            running.stop()

    off, on, costs = [], [], []
    for i in range(rounds):
        if i % 2:
            b, a = with_telemetry(), run_hftagg(seconds)[0]
        else:
            a, b = run_hftagg(seconds)[0], with_telemetry()
        off.append(a)
        on.append(b)
        costs.append(1 - b / a)
    return float(np.median(off)), float(np.median(on)), costs


def _per_batch_work_us(batch_records: int = 65536, stages: int = 3) -> float:
    """What the runtime's telemetry calls cost per batch (unsampled path), timed in isolation:
    a low-noise cross-check of the paired-run cost above."""
    from hftagg.records import INDICATOR
    from hftagg.telemetry import Telemetry, TelemetrySection

    tel = Telemetry(TelemetrySection(prometheus=False))
    batch = INDICATOR.empty(batch_records)
    batch["ts_recv"] = time.time_ns()
    batch["ts_event"] = batch["ts_recv"] - 1000
    tel.mark("t", 0, 1, None)  # a mark exists, so every poll looks one up (the common case)

    def one_batch() -> None:
        tel.sample()
        for i in range(stages):
            tel.parent_of("t", 10 + i * batch_records, batch_records)
            tel.processed(f"s{i}", 12_345)
        tel.delivered("sink", batch)

    for _ in range(50):
        one_batch()
    t0 = time.perf_counter()
    for _ in range(500):
        one_batch()
    return (time.perf_counter() - t0) / 500 * 1e6


def _latency(seconds: float) -> tuple[dict, dict]:
    from benchmarks.bench_pipeline import _address
    from hftagg.runtime.assemble import assemble
    from hftagg.telemetry import TelemetrySection, make_telemetry

    address = _address()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(PACED.format(address=address))
        assembled = assemble(path, environ={})
        running = make_telemetry(TelemetrySection(prometheus=False))
        pipeline = assembled.pipeline(telemetry=running.telemetry)
        pipeline.open()
        # both sides see exactly the same records (push is lossless), from first to last
        sub = subprocess.Popen(
            [sys.executable, "-c", LATENCY_SUBSCRIBER, address, "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sub.stdout.readline().strip() == "ready"
        pipeline.start()
        time.sleep(seconds)
        pipeline.stop()
        independent = json.loads(sub.communicate(timeout=60)[0].strip().splitlines()[-1])
    hist = running.telemetry.latency_recv["delivery"]
    ours = {q: hist.quantile(q / 100) for q in (50, 99, 99.9)} | {"n": hist.count}
    return ours, independent


def run(quick: bool) -> list[Result]:
    off, on, costs = _throughput(2.0 if quick else 3.0, 2 if quick else 6)
    ours, independent = _latency(3.0 if quick else 8.0)
    cost = float(np.median(costs))
    work_us = _per_batch_work_us()
    batch_us = 65536 / off * 1e6
    fmt = {k: (f"{v / 1e3:.1f} us" if k != "n" else v) for k, v in ours.items()}
    ind = {k: (f"{v / 1e3:.1f} us" if k != "n" else v) for k, v in independent.items()}
    return [
        Result(
            name="telemetry on (1% traced)",
            hftagg=on,
            baseline=off,
            baseline_name="telemetry off",
            unit="rec/s",
            extra={
                "cost (median of paired runs)": f"{cost * 100:.1f}% (target <= 5%)",
                "cost per pair": " ".join(f"{c * 100:+.1f}%" for c in costs),
                "telemetry work per 64k batch (isolated)": f"{work_us:.0f} us = "
                f"{work_us / batch_us * 100:.1f}% of the {batch_us:.0f} us a batch takes",
            },
        ),
        Result(
            name="e2e latency p99 @100k/s",
            hftagg=ours[99],
            baseline=independent["99"],
            baseline_name="subscriber's own clock",
            unit="ns",
            lower_is_better=True,
            extra={
                "hftagg metrics (ts_recv -> publisher)": fmt,
                "independent (ts_recv -> subscriber process)": ind,
            },
        ),
    ]
