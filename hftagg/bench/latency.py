"""Delivery latency and throughput of a pipeline config (the shipped ``config.toml`` by default).

What is measured, on the config as written except for what a benchmark must control (every
simulator source's ``rate``, a free loopback ``delivery.target``, no Prometheus server, no
status lines; plugin and protocol folders stay those of the config's folder):

- **Latency at an offered load** (10 k, 100 k and 1 M simulator events/s, paced): from each
  record's ``ts_recv`` (when the simulator received it) to the publisher handing it to pynng --
  the runtime's own end-to-end histogram (``Telemetry.latency_recv``) -- and to a subscriber in
  another process, measured by that subscriber on its own clock the moment a frame arrives
  (``hftagg.client``'s ``LatencyStats``, every delivered topic, the shipped ``pub`` pattern;
  its ``gaps`` say whether it kept up). The first ``warmup`` seconds are left out on both sides.
  Run once per wait strategy the runtime offers (``[runtime] wait``, read from the config spec)
  and once in the inline threading mode when the runtime has one.
- **Throughput**: the config unthrottled (``rate = 0``), threaded as ``hftagg run`` runs it,
  simulator records per second including the final drain; against the same graph stepped on one
  thread (source, core pass, sinks in turn: no hand-offs, no waits).
- **Floors**, measured in the same run: a hand-off between two Python threads through a
  ``threading.Event`` (the cheapest wake-up a threaded Python runtime can use) and bare pynng
  pub/sub of one frame-sized message between two processes at the same message rate.

Percentiles come from log-bucket histograms (ten buckets per decade: a quantile is good to its
bucket, ~26 %); the subscriber's max is exact, the runtime's max is its top bucket's bound.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomlkit

from hftagg.telemetry.histogram import LATENCY_BOUNDS_NS, quantile_from_counts

__all__ = [
    "LOADS",
    "Figure",
    "bench_config",
    "handoff_floor",
    "measure_latency",
    "measure_throughput",
    "pynng_floor",
    "run",
    "runtime_variants",
]

LOADS = (10_000, 100_000, 1_000_000)
HEADLINE_LOAD = 100_000
TARGET_IN_PROCESS_NS = 200_000
TARGET_INLINE_NS = 50_000
TARGET_SUBSCRIBER_NS = 1_000_000
TARGET_PIPELINE = 5e6


@dataclass
class Figure:
    """One named result (the shape of ``benchmarks.harness.Result``)."""

    name: str
    hftagg: float
    baseline: float
    baseline_name: str
    unit: str
    target: float | None = None
    lower_is_better: bool = False
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- configs


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def bench_config(base: Path, *, rate: float, address: str, runtime: dict | None = None) -> str:
    """``base``'s TOML with what a benchmark controls set (see the module docstring)."""
    doc = tomlkit.parse(base.read_text())
    folder = base.resolve().parent
    rt = doc.setdefault("runtime", tomlkit.table())
    for key, default in (("plugin_paths", ["plugins"]), ("protocol_paths", ["protocols"])):
        rt[key] = [str(folder / p) for p in rt.get(key, default)]
    rt["status_interval_secs"] = 3600.0
    for key, value in (runtime or {}).items():
        rt[key] = value
    sims = [
        s for s in doc.get("data_sources", {}).values() if s.get("type", "simulator") == "simulator"
    ]
    if not sims:
        raise ValueError(f"{base}: no simulator source to pace; the benchmark needs one")
    for source in sims:
        source["rate"] = rate
    delivery = doc.setdefault("delivery", tomlkit.table())
    delivery["target"] = address
    telemetry = doc.setdefault("telemetry", tomlkit.table())
    telemetry["prometheus"] = False
    return tomlkit.dumps(doc)


def runtime_variants() -> list[tuple[str, dict]]:
    """``("default", {})``, then one per other ``[runtime] wait`` choice and the inline mode,
    as the runtime's config spec offers them."""
    from hftagg.config.spec import RuntimeSection

    fields = RuntimeSection.model_fields
    variants: list[tuple[str, dict]] = [("default", {})]
    wait = fields.get("wait")
    if wait is not None:
        for choice in typing.get_args(wait.annotation):
            if isinstance(choice, str) and choice != wait.default:
                variants.append((f"wait={choice}", {"wait": choice}))
    for name, info in fields.items():
        choices = typing.get_args(info.annotation)
        if "inline" in choices and info.default != "inline":
            variants.append((f"{name}=inline", {name: "inline"}))
        elif name == "inline" and info.annotation is bool:
            variants.append(("inline", {"inline": True}))
    return variants


# --------------------------------------------------------------------------- latency

SUBSCRIBER = textwrap.dedent(
    """
    import json, sys
    from hftagg.client import subscribe
    address, topics, measure_from = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    started = False
    with subscribe(address, topics, timeout_secs=float(sys.argv[4])) as sub:
        print("ready", flush=True)
        for batch in sub:
            if not started and len(batch) and int(batch["ts_recv"].min()) >= measure_from:
                started = True  # everything before (warm-up) is left out
                sub.latency.interval()
        figures = sub.latency.interval()
        figures.update(gaps=sub.gaps, records=sub.records, bad_frames=sub.bad_frames)
    print(json.dumps(figures), flush=True)
    """
)


def _hist_figures(counts: np.ndarray) -> dict:
    bounds = LATENCY_BOUNDS_NS
    total = int(counts.sum())
    top = np.flatnonzero(counts)
    return {
        "count": total,
        "p50_ns": quantile_from_counts(bounds, counts, 0.5),
        "p99_ns": quantile_from_counts(bounds, counts, 0.99),
        "p99_9_ns": quantile_from_counts(bounds, counts, 0.999),
        "max_ns": float(bounds[min(int(top[-1]), len(bounds) - 1)]) if len(top) else float("nan"),
    }


def _publisher(pipeline) -> Any:
    for node in pipeline.graph.sinks:
        if hasattr(node.stage, "counters") and node.stage.type_name == "publisher":
            return node
    raise ValueError("the config delivers nothing ([delivery] topics): no latency to measure")


def measure_latency(
    config: Path, rate: float, seconds: float, warmup: float = 1.0, runtime: dict | None = None
) -> dict:
    """One paced run: ``in_process`` and ``subscriber`` figures, and ``achieved``: records/s
    out of the sources (an event is a trade or a book update, plus a quote when it changes the
    touch, so records/s exceed events/s)."""
    from hftagg.runtime.assemble import assemble
    from hftagg.telemetry import Telemetry, TelemetrySection

    address = free_address()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(bench_config(config, rate=rate, address=address, runtime=runtime))
        assembled = assemble(path, environ={})
        telemetry = Telemetry(TelemetrySection(prometheus=False))
        pipeline = assembled.pipeline(telemetry=telemetry)
        pipeline.open()
        node = _publisher(pipeline)
        topics = ",".join(node.inputs.values())
        measure_from = time.time_ns() + int(warmup * 1e9)
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, address, topics, str(measure_from), "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if sub.stdout.readline().strip() != "ready":
                raise RuntimeError("the subscriber process did not start")
            deadline = time.monotonic() + 30
            while node.stage.counters()["peers"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            pipeline.start()
            time.sleep(max(0.0, (measure_from - time.time_ns()) / 1e9))
            hist = telemetry.latency_recv.get(node.id)
            before = hist.counts.copy() if hist is not None else 0
            time.sleep(seconds)
            hist = telemetry.latency_recv.get(node.id)
            after = hist.counts.copy() if hist is not None else np.zeros(len(LATENCY_BOUNDS_NS) + 1)
            summary = pipeline.stop()
            out = sub.communicate(timeout=120)[0]
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()
    subscriber = json.loads(out.strip().splitlines()[-1])
    in_process = _hist_figures(np.asarray(after - before, dtype=np.int64))
    sources = [s for s in summary["stages"].values() if s["role"] == "source"]
    achieved = sum(s["records"] for s in sources) / max(summary["elapsed_secs"], 1e-9)
    return {
        "offered": rate,
        "achieved": achieved,
        "in_process": in_process,
        "subscriber": subscriber,
    }


# --------------------------------------------------------------------------- throughput


def measure_throughput(config: Path, seconds: float) -> tuple[float, dict]:
    """Unthrottled, threaded: simulator records/s over the run and its drain; the summary."""
    from hftagg.runtime.assemble import assemble

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(bench_config(config, rate=0, address=free_address()))
        pipeline = assemble(path, environ={}).pipeline()
        pipeline.open()
        pipeline.start()
        time.sleep(seconds)
        summary = pipeline.stop()
    records = sum(s["records"] for s in summary["stages"].values() if s["role"] == "source")
    return records / summary["elapsed_secs"], summary


def measure_single_thread(config: Path, seconds: float) -> float:
    """The same graph stepped on the calling thread: each source, the core pass, each sink."""
    from hftagg.runtime.assemble import assemble

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(bench_config(config, rate=0, address=free_address()))
        pipeline = assemble(path, environ={}).pipeline()
        pipeline.open()
        sources = [n for n in pipeline.graph.nodes if n.role == "source"]
        sinks = [n for n in pipeline.graph.nodes if n.role == "sink"]
        records = 0
        try:
            for measured in (False, True):  # a short unmeasured round first (first batches)
                before = sum(pipeline.stats[n.id].records_out for n in sources)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < (seconds if measured else 0.3):
                    for node in sources:
                        pipeline.pump_source(node)
                    pipeline.step_core()
                    for node in sinks:
                        pipeline.pump_sink(node)
                records = sum(pipeline.stats[n.id].records_out for n in sources) - before
                elapsed = time.perf_counter() - t0
        finally:
            for node in pipeline.graph.nodes:
                node.stage.close()
    return records / elapsed


# --------------------------------------------------------------------------- floors


def handoff_floor(handoffs: int = 3000) -> dict:
    """One thread stamps the time and sets an Event; another wakes and reads the clock."""
    ready, done = threading.Event(), threading.Event()
    lat = np.zeros(handoffs, dtype=np.int64)
    stamp = [0]

    def waiter() -> None:
        for i in range(handoffs):
            ready.wait()
            ready.clear()
            lat[i] = time.perf_counter_ns() - stamp[0]
            done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    for _ in range(handoffs):
        time.sleep(0.0001)
        done.clear()
        stamp[0] = time.perf_counter_ns()
        ready.set()
        done.wait(5)
    thread.join(5)
    return _exact_figures(lat)


def _exact_figures(values: np.ndarray) -> dict:
    return {
        "count": len(values),
        "p50_ns": float(np.percentile(values, 50)),
        "p99_ns": float(np.percentile(values, 99)),
        "p99_9_ns": float(np.percentile(values, 99.9)),
        "max_ns": float(values.max()),
    }


PYNNG_FLOOR_SUBSCRIBER = textwrap.dedent(
    """
    import json, sys, time, pynng, numpy as np
    sock = pynng.Sub0(recv_buffer_size=8192)
    sock.subscribe(b"")
    sock.dial(sys.argv[1], block=False)
    sock.recv_timeout = 2000
    print("ready", flush=True)
    lat = []
    while True:
        try:
            msg = sock.recv()
        except pynng.Timeout:
            if lat:
                break
            continue
        lat.append(time.time_ns() - int.from_bytes(msg[:8], "little"))
    a = np.array(lat[len(lat) // 10:] or [0])  # the first tenth: connection warm-up
    print(json.dumps({"count": len(a), "p50_ns": float(np.percentile(a, 50)),
                      "p99_ns": float(np.percentile(a, 99)),
                      "p99_9_ns": float(np.percentile(a, 99.9)), "max_ns": float(a.max())}))
    """
)


def pynng_floor(messages_per_sec: float, seconds: float, size: int = 128 + 48 * 8) -> dict:
    """Bare pynng pub -> sub between processes, one ``size``-byte message at a time."""
    import pynng

    address = free_address()
    pub = pynng.Pub0(listen=address, send_buffer_size=1024)
    sub = subprocess.Popen(
        [sys.executable, "-c", PYNNG_FLOOR_SUBSCRIBER, address], stdout=subprocess.PIPE, text=True
    )
    try:
        sub.stdout.readline()
        time.sleep(0.5)  # the subscription reaches the publisher
        pad = bytes(size - 8)
        gap = 1.0 / messages_per_sec
        end = time.perf_counter() + seconds
        due = time.perf_counter()
        while due < end:
            now = time.perf_counter()
            if now < due:
                time.sleep(max(0.0, due - now - 0.0001))
                continue
            pub.send(time.time_ns().to_bytes(8, "little") + pad)
            due += gap
        out = sub.communicate(timeout=60)[0]
    finally:
        pub.close()
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the suite


def _us(figures: dict) -> str:
    from hftagg.client import format_ns

    return (
        " / ".join(format_ns(figures[k]) for k in ("p50_ns", "p99_ns", "p99_9_ns", "max_ns"))
        + f" (n={figures['count']:,})"
    )


def run(
    config: Path,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Figure]:
    """Everything in the module docstring; ``quick``: 100 k/s only, default runtime, short."""
    say = progress or (lambda text: None)
    loads = (HEADLINE_LOAD,) if quick else LOADS
    seconds, warmup = (2.0, 1.0) if quick else (5.0, 1.5)
    variants = runtime_variants()[:1] if quick else runtime_variants()
    figures: list[Figure] = []
    say("floors: thread hand-off and bare pynng")
    handoff = handoff_floor(1000 if quick else 3000)
    frame_rate = 1000.0  # about one frame a millisecond at 100 k/s (smart batching)
    floor = pynng_floor(frame_rate, 1.5 if quick else 4.0)
    headline: dict[str, dict] = {}
    for label, runtime in variants:
        table = {}
        for load in loads:
            say(f"latency: {label}, {load:,} events/s for {seconds:g}s")
            got = measure_latency(config, load, seconds, warmup, runtime)
            table[load] = got
        at = table[HEADLINE_LOAD]
        headline[label] = at
        inline = "inline" in label
        suffix = "" if label == "default" else f" ({label})"
        details = {
            f"{load // 1000:,}k/s p50/p99/p99.9/max": (
                f"in-process {_us(got['in_process'])}; subscriber {_us(got['subscriber'])}; "
                f"source records {got['achieved'] / 1e3:,.0f}k/s; subscriber gaps "
                f"{got['subscriber'].get('gaps', 0):,}"
            )
            for load, got in table.items()
        }
        figures.append(
            Figure(
                name=f"latency-in-process p99{suffix}",
                hftagg=at["in_process"]["p99_ns"],
                baseline=handoff["p99_ns"],
                baseline_name="threading.Event hand-off",
                unit="ns",
                target=TARGET_INLINE_NS if inline else TARGET_IN_PROCESS_NS,
                lower_is_better=True,
                extra={"at": f"{HEADLINE_LOAD:,} events/s, ts_recv -> publisher"} | details,
            )
        )
        figures.append(
            Figure(
                name=f"latency-subscriber p99{suffix}",
                hftagg=at["subscriber"]["p99_ns"],
                baseline=floor["p99_ns"],
                baseline_name=f"bare pynng pub/sub, {frame_rate:,.0f} msg/s",
                unit="ns",
                target=TARGET_SUBSCRIBER_NS,
                lower_is_better=True,
                extra={
                    "at": f"{HEADLINE_LOAD:,} events/s, ts_recv -> subscriber process",
                    "bare pynng p50/p99/p99.9/max": _us(floor),
                },
            )
        )
    say(f"throughput: unthrottled, threaded and on one thread ({seconds:g}s each)")
    threaded, summary = measure_throughput(config, seconds)
    single = measure_single_thread(config, seconds)
    figures.append(
        Figure(
            name="pipeline-default",
            hftagg=threaded,
            baseline=single,
            baseline_name="same graph stepped on one thread",
            unit="rec/s",
            target=TARGET_PIPELINE,
            extra={
                "busy secs per stage": ", ".join(
                    f"{k} {v['busy_secs']:.2f}" for k, v in summary["stages"].items()
                ),
                "elapsed secs (with drain)": round(summary["elapsed_secs"], 2),
                "thread hand-off floor p50/p99/p99.9/max": _us(handoff),
            },
        )
    )
    return figures
