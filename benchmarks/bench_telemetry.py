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


def _throughput(seconds: float, rounds: int) -> tuple[float, float]:
    from hftagg.telemetry import TelemetrySection, make_telemetry

    off, on = [], []
    for _ in range(rounds):
        off.append(run_hftagg(seconds)[0])
        running = make_telemetry(TelemetrySection(traces="memory", prometheus=False))
        on.append(run_hftagg(seconds, telemetry=running.telemetry)[0])
        running.stop()
    return float(np.median(off)), float(np.median(on))


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
    off, on = _throughput(2.0 if quick else 4.0, 1 if quick else 3)
    ours, independent = _latency(3.0 if quick else 8.0)
    cost = 1 - on / off
    fmt = {k: (f"{v / 1e3:.1f} us" if k != "n" else v) for k, v in ours.items()}
    ind = {k: (f"{v / 1e3:.1f} us" if k != "n" else v) for k, v in independent.items()}
    return [
        Result(
            name="telemetry on (1% traced)",
            hftagg=on,
            baseline=off,
            baseline_name="telemetry off",
            unit="rec/s",
            extra={"cost": f"{cost * 100:.1f}% (target <= 5%)"},
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
