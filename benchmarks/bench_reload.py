"""Live change latency: from the config write to the first output batch that reflects it.

hftagg: a pipeline under load (simulator at 200 k events/s -> EMA -> a timing sink) watches its
config.toml; the benchmark writes a new ``ema_window`` and measures until the sink receives the
first EMA record computed with it (the reload reports the exact stream offset where the new
window starts). Same for a Consul KV change when the Consul layer is enabled (a local server
speaking Consul's KV HTTP API, since Consul itself cannot be installed here).
Baseline: the usual way to change a parameter -- stop the pipeline, rebuild it from the edited
config, start it again -- timed from the write to the first output batch of the new pipeline.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Result

SINK_PLUGIN = """
import time
from hftagg import Params, Port, SinkStage, hookimpl

ARRIVALS = []  # (perf_counter, first offset, count)


class TimingSink(SinkStage):
    type_name = "timing_sink"
    inputs = {"input": Port(None, "ind.ema")}

    def write(self, batch, port, offset):
        ARRIVALS.append((time.perf_counter(), offset, len(batch)))


@hookimpl
def hftagg_register_stage_types(register):
    register(TimingSink)
"""

CONFIG = """
[runtime]
plugin_paths = ["plugins"]
max_batch = 4096

[data_sources.sim]
type = "simulator"
instruments = 8
rate = 200000

[processing]
ema_window = {window}

[stages.timing]
type = "timing_sink"

[delivery]
enabled = false
"""


def _workdir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="hftagg-bench-reload-"))
    (root / "plugins").mkdir()
    (root / "plugins" / "timing_sink.py").write_text(SINK_PLUGIN)
    (root / "config.toml").write_text(CONFIG.format(window=20))
    return root


def _arrivals() -> list:
    return sys.modules["hftagg_plugins.timing_sink"].ARRIVALS


def _first_arrival_at_or_after(offset: int, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        arrivals = _arrivals()
        for t, first, n in arrivals[seen:]:
            if first + n > offset:
                return t
        seen = max(0, len(arrivals) - 1)
        time.sleep(0.0002)
    raise TimeoutError(f"no output at offset {offset} within {timeout}s")


def _percentiles(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1e3
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "n": len(a),
    }


def _live(edits: int, consul_edits: int) -> tuple[list[float], list[float]]:
    from hftagg.runtime.assemble import assemble, plugin_dirs
    from hftagg.runtime.reload import Reloader

    root = _workdir()
    config = root / "config.toml"
    assembled = assemble(config, environ={})
    pipeline = assembled.pipeline()
    reloader = Reloader(
        pipeline,
        assembled.host,
        config,
        plugin_dirs=plugin_dirs(assembled.spec.raw, config),
        environ={},
    )
    pipeline.start()
    reloader.start()
    file_lat: list[float] = []
    consul_lat: list[float] = []
    try:
        time.sleep(0.5)
        rng = np.random.default_rng(1)
        window = 20
        for _ in range(edits):
            window = int(rng.choice([w for w in range(2, 300) if w != window]))
            before = len(reloader.history)
            t0 = time.perf_counter()
            config.write_text(CONFIG.format(window=window))
            while len(reloader.history) == before:
                time.sleep(0.0002)
            event = reloader.history[-1]
            file_lat.append(_first_arrival_at_or_after(event.offsets["ema"]["input"]) - t0)
            time.sleep(rng.uniform(0.005, 0.02))
        consul_lat = _consul(reloader, consul_edits, rng)
    finally:
        reloader.stop()
        pipeline.stop()
    return file_lat, consul_lat


def _consul(reloader, edits: int, rng) -> list[float]:
    """The same measurement for Consul KV changes, through the real long-polling source."""
    try:
        from hftagg.config.consul import ConsulSource
        from tests.consul_fake import FakeConsul
    except ImportError:
        return []
    latencies = []
    server = FakeConsul().start()
    if True:
        source = ConsulSource(server.address, prefix="hftagg/", on_change=reloader.set_consul_layer)
        source.start()
        try:
            window = 20
            for _ in range(edits):
                window = int(rng.choice([w for w in range(2, 300) if w != window]))
                before = len(reloader.history)
                t0 = time.perf_counter()
                server.put("hftagg/processing/ema_window", str(window))
                while len(reloader.history) == before:
                    time.sleep(0.0002)
                event = reloader.history[-1]
                latencies.append(_first_arrival_at_or_after(event.offsets["ema"]["input"]) - t0)
                time.sleep(rng.uniform(0.005, 0.02))
        finally:
            source.stop()
            server.stop()
    return latencies


def _restart(restarts: int) -> list[float]:
    from hftagg.runtime.assemble import assemble

    root = _workdir()
    config = root / "config.toml"
    latencies = []
    pipeline = assemble(config, environ={}).pipeline()
    pipeline.start()
    for i in range(restarts):
        time.sleep(0.2)
        t0 = time.perf_counter()
        config.write_text(CONFIG.format(window=21 + i))
        pipeline.stop()
        _arrivals().clear()
        pipeline = assemble(config, environ={}).pipeline()
        pipeline.start()
        _first_arrival_at_or_after(0)
        latencies.append(time.perf_counter() - t0)
    pipeline.stop()
    return latencies


def run(quick: bool) -> list[Result]:
    file_lat, consul_lat = _live(40 if quick else 220, 20 if quick else 200)
    restart = _restart(5 if quick else 20)
    live = _percentiles(file_lat)
    base = _percentiles(restart)
    results = [
        Result(
            name="reload-file p99",
            hftagg=live["p99_ms"],
            baseline=base["p99_ms"],
            baseline_name="stop + rebuild + start",
            unit="ms",
            target=100.0,
            lower_is_better=True,
            extra={"hftagg": live, "baseline (restart)": base},
        )
    ]
    if consul_lat:
        c = _percentiles(consul_lat)
        results.append(
            Result(
                name="reload-consul p99",
                hftagg=c["p99_ms"],
                baseline=base["p99_ms"],
                baseline_name="stop + rebuild + start",
                unit="ms",
                target=100.0,
                lower_is_better=True,
                extra={"hftagg": c},
            )
        )
    return results
