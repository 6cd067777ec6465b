"""Telemetry: span trees per batch, sampling, trace context across processes, Prometheus, top."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hftagg import Port, Stage
from hftagg.builtins.core.indicators.stages import Ema
from hftagg.records import INDICATOR, TRADE
from hftagg.telemetry import TelemetrySection, make_telemetry
from hftagg.testing import TestingSink, TestingSource, run_pipeline

from .conftest import PYTHON, free_port, hftagg_cmd


def trades(n: int, first_seq: int = 0) -> np.ndarray:
    t = TRADE.empty(n)
    t["seq"] = np.arange(first_seq, first_seq + n)
    t["instrument_id"] = np.arange(n) % 3
    t["price"] = 100 * 10**9
    t["ts_recv"] = time.time_ns()
    t["ts_event"] = t["ts_recv"] - 1000
    return t


class Double(Stage):
    type_name = "double"
    inputs = {"input": Port("indicator", "ind.ema")}
    outputs = {"output": Port("indicator", "ind.double")}

    def process(self, batch):
        out = batch.copy()
        out["value"] *= 2
        return out


def traced(ratio: float):
    return make_telemetry(TelemetrySection(traces="memory", sample_ratio=ratio, prometheus=False))


def test_span_tree_of_one_batch_through_three_stages():
    running = traced(1.0)
    out: list[np.ndarray] = []
    run_pipeline(
        [TestingSource([trades(50)]), Ema(window=3), Double(), TestingSink(out)],
        telemetry=running.telemetry,
    )
    spans = running.handles.memory_exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["deliver sink", "process double", "process ema", "receive source"]
    root, ema, double, sink = (
        by_name[n] for n in ("receive source", "process ema", "process double", "deliver sink")
    )
    assert root.parent is None
    assert ema.parent.span_id == root.context.span_id
    assert double.parent.span_id == ema.context.span_id
    assert sink.parent.span_id == double.context.span_id
    assert len({s.context.trace_id for s in spans}) == 1
    assert dict(ema.attributes) == {
        "hftagg.stage": "ema",
        "hftagg.topic": "test.source",
        "hftagg.records": 50,
        "hftagg.seq.first": 0,
        "hftagg.seq.last": 49,
        "hftagg.instruments": 3,
    }
    assert sink.attributes["hftagg.topic"] == "ind.double"
    assert all(s.end_time >= s.start_time for s in spans)
    assert running.telemetry.processing["ema"].count == 1
    assert running.telemetry.latency_recv["sink"].count == 50  # every record, not a sample


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_sampling_ratio_is_respected(ratio):
    running = traced(ratio)
    batches = [trades(4, 4 * i) for i in range(800)]
    run_pipeline(
        [TestingSource(batches), Ema(window=3), TestingSink([])],
        telemetry=running.telemetry,
        max_batch=4,
    )
    spans = running.handles.memory_exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "receive source"]
    if ratio in (0.0, 1.0):
        assert len(roots) == ratio * 800
    else:
        assert 140 <= len(roots) <= 260  # binomial(800, 0.25): mean 200, sd 12
    # every traced batch has its whole tree; no untraced batch has any span
    assert len([s for s in spans if s.name == "process ema"]) == len(roots)
    assert len([s for s in spans if s.name == "deliver sink"]) == len(roots)


SUBSCRIBER = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from hftagg.client import subscribe

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("subscriber")
print("ready", flush=True)
with subscribe(sys.argv[1], "ind.ema", pattern="push", timeout_secs=5) as sub:
    while (frame := sub.next_frame()) is not None:
        parent = frame.span_context()
        if parent is None:
            continue
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        with tracer.start_as_current_span("consume", context=ctx):
            pass
spans = exporter.get_finished_spans()
print(json.dumps([[format(s.context.trace_id, "032x"), format(s.parent.span_id, "016x")]
                  for s in spans]), flush=True)
"""


@pytest.mark.slow
def test_subscriber_in_another_process_continues_the_publishers_trace(tmp_path):
    from hftagg.runtime.assemble import assemble

    address = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(f"""
[runtime]
plugin_paths = []
[data_sources.sim]
type = "simulator"
rate = 20000
fields = ["trades"]
[delivery]
target = "{address}"
pattern = "push"
topics = ["ind.ema"]
[telemetry]
traces = "memory"
sample_ratio = 0.2
prometheus = false
""")
    assembled = assemble(config, environ={})
    running = make_telemetry(assembled.spec.telemetry)
    pipeline = assembled.pipeline(telemetry=running.telemetry)
    pipeline.open()
    sub = subprocess.Popen([PYTHON, "-c", SUBSCRIBER, address], stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "ready"
    pipeline.start()
    time.sleep(2.0)
    pipeline.stop()
    remote = json.loads(sub.communicate(timeout=60)[0].strip().splitlines()[-1])
    delivered = [
        s
        for s in running.handles.memory_exporter.get_finished_spans()
        if s.name == "deliver delivery"
    ]
    assert len(delivered) >= 5 and len(remote) >= 5
    ours = {
        (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in delivered
    }
    for trace_id, parent_span in remote:
        assert (trace_id, parent_span) in ours  # same trace, parented on our delivery span


def scrape(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_endpoint_exposes_histograms_and_counters_after_a_run(tmp_path):
    from hftagg.runtime.assemble import assemble

    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[runtime]
plugin_paths = []
[data_sources.sim]
type = "simulator"
rate = 50000
[delivery]
enabled = false
[stages.out]
type = "publisher"
target = "ipc://{tmp_path}/x.ipc"
topics = ["ind.ema", "md.trades"]
[telemetry]
prometheus_address = "127.0.0.1:{port}"
""")
    assembled = assemble(config, environ={})
    running = make_telemetry(assembled.spec.telemetry)
    pipeline = assembled.pipeline(telemetry=running.telemetry)
    pipeline.start()
    running.serve(pipeline)
    try:
        time.sleep(1.5)
        live = scrape(f"127.0.0.1:{port}")  # while running
        pipeline.stop()
        families = scrape(f"127.0.0.1:{port}")  # after the drain: every counter final
    finally:
        if pipeline.running:
            pipeline.stop()
        running.stop()
    assert live["hftagg_stage_records"].samples[0].value > 0
    records = {s.labels["stage"]: s.value for s in families["hftagg_stage_records"].samples}
    assert records["sim"] > 30_000 and records["ema"] > 5_000
    assert records["out"] >= records["ema"]  # ind.ema and md.trades both reach the sink
    lat = [
        s
        for s in families["hftagg_e2e_latency_seconds"].samples
        if s.labels.get("origin") == "ts_recv"
    ]
    count = next(s.value for s in lat if s.name.endswith("_count"))
    total = next(s.value for s in lat if s.name.endswith("_sum"))
    inf = next(s.value for s in lat if s.labels.get("le") == "+Inf")
    assert count == inf == records["out"]  # every delivered record observed once
    assert 0 < total / count < 1.0  # a mean latency between 0 and 1 s
    buckets = [s.value for s in lat if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)  # cumulative
    proc = families["hftagg_stage_processing_seconds"].samples
    assert {s.labels["stage"] for s in proc} == {"ema", "out"}
    backlog = families["hftagg_reader_backlog_records"].samples
    assert all(s.value >= 0 for s in backlog)
    assert families["hftagg_uptime_seconds"].samples[0].value > 1.0


def test_metrics_endpoint_refuses_non_loopback_without_allow_remote():
    from hftagg.errors import TransportError
    from hftagg.telemetry.prometheus import MetricsServer

    with pytest.raises(TransportError, match="telemetry.prometheus_address"):
        MetricsServer(None, "0.0.0.0:9999")


@pytest.mark.slow
def test_top_renders_against_a_running_pipeline(tmp_path):
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[runtime]
plugin_paths = []
[data_sources.sim]
type = "simulator"
rate = 50000
[delivery]
target = "ipc://{tmp_path}/x.ipc"
[telemetry]
prometheus_address = "127.0.0.1:{port}"
""")
    pipeline = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--duration", "30", "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until the pipeline is up and EMA is flowing
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics.json", timeout=1
                ) as response:
                    stages = json.loads(response.read())["stages"]
                if any(st["stage"] == "ema" and st["records_in"] > 0 for st in stages):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        top = subprocess.run(
            hftagg_cmd(
                "top", "--address", f"127.0.0.1:{port}", "--iterations", "3", "--interval", "0.5"
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
        )
    finally:
        pipeline.terminate()
        pipeline.communicate(timeout=60)
    assert top.returncode == 0, top.stderr
    assert top.stdout.count(f"hftagg 127.0.0.1:{port}") == 3  # three refreshes
    lines = top.stdout.splitlines()
    ema = [line for line in lines if line.startswith("│ ema ")]
    assert len(ema) == 3
    rate = ema[-1].split("│")[3].strip()
    assert rate.endswith("k") and float(rate[:-1]) > 1
    assert sum(1 for line in lines if line.startswith("│ delivery ")) >= 6  # stage + latency rows


@pytest.mark.slow
def test_top_says_when_nothing_is_there():
    result = subprocess.run(
        hftagg_cmd("top", "--address", f"127.0.0.1:{free_port()}", "--iterations", "1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot read" in result.stdout and "telemetry.prometheus = true" in result.stdout


def test_frames_carry_no_trace_context_when_not_sampled():
    from hftagg.bus.frame import FrameEncoder, decode_frame
    from hftagg.plugins.manager import load_plugins

    schemas = load_plugins([], entry_points=False).schemas
    (frame,) = FrameEncoder("ind.ema", INDICATOR).encode(INDICATOR.empty(2), 0)
    assert decode_frame(frame, schemas).span_context() is None


class _Collector:
    """A minimal OTLP/HTTP collector: decodes the protobuf requests the real exporters send."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list = []
        self.metrics: list = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    req = ExportTraceServiceRequest.FromString(body)
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            collector.spans.extend((rs.resource, span) for span in ss.spans)
                elif self.path == "/v1/metrics":
                    req = ExportMetricsServiceRequest.FromString(body)
                    for rm in req.resource_metrics:
                        for sm in rm.scope_metrics:
                            collector.metrics.extend(m.name for m in sm.metrics)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_otlp_http_export_reaches_a_collector_with_standard_env_vars(tmp_path, monkeypatch):
    from hftagg.runtime.assemble import assemble

    collector = _Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "hftagg-test")
    config = tmp_path / "config.toml"
    config.write_text(f"""
[runtime]
plugin_paths = []
[data_sources.sim]
type = "simulator"
rate = 20000
[delivery]
target = "ipc://{tmp_path}/x.ipc"
[telemetry]
traces = "otlp_http"
sample_ratio = 0.5
metrics_export = "otlp_http"
export_interval_secs = 0.5
prometheus = false
""")
    assembled = assemble(config, environ={})
    running = make_telemetry(assembled.spec.telemetry)
    pipeline = assembled.pipeline(telemetry=running.telemetry)
    pipeline.start()
    running.serve(pipeline)
    time.sleep(1.5)
    pipeline.stop()
    running.stop()  # flushes both exporters
    names = {span.name for _, span in collector.spans}
    assert {"receive sim", "process ema", "deliver delivery"} <= names
    resource = collector.spans[0][0]
    service = next(a.value.string_value for a in resource.attributes if a.key == "service.name")
    assert service == "hftagg-test"
    assert {"hftagg.stage.records_in", "hftagg.reader.backlog", "hftagg.e2e.latency"} <= set(
        collector.metrics
    )


def test_histogram_counts_small_batches_value_by_value_as_numpy_does():
    from hftagg.telemetry.histogram import Histogram

    rng = np.random.default_rng(3)
    values = rng.integers(0, 2_000_000_000, 5_000)
    by_batch, whole = Histogram(), Histogram()
    start = 0
    while start < len(values):  # batches of 1..12: both sides of the small-batch path
        size = int(rng.integers(1, 13))
        by_batch.observe_many(values[start : start + size])
        start += size
    whole.observe_many(values)
    np.testing.assert_array_equal(by_batch.counts, whole.counts)
    assert (by_batch.sum, by_batch.count) == (whole.sum, whole.count) == (values.sum(), 5_000)
