"""OpenTelemetry SDK set-up: tracer and meter providers from the ``[telemetry]`` section.

Exporters: ``console``, ``otlp_grpc``, ``otlp_http`` (the OTLP exporters read the standard
``OTEL_EXPORTER_OTLP_*`` variables; the resource reads ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``), and ``memory`` (for tests). Providers are created per pipeline
and not installed globally, so several pipelines (or tests) never share exporters.
"""

from __future__ import annotations

import os
from typing import Any

from hftagg.errors import ConfigError
from hftagg.telemetry.settings import TelemetrySection

__all__ = ["OtelHandles", "setup_otel"]


class OtelHandles:
    def __init__(self) -> None:
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.tracer: Any = None
        self.memory_exporter: Any = None
        self.latency_histogram: Any = None

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def _resource(settings: TelemetrySection):
    from opentelemetry.sdk.resources import Resource

    attrs = {"service.name": settings.service_name} if settings.service_name else {}
    if not settings.service_name and "OTEL_SERVICE_NAME" not in os.environ:
        attrs["service.name"] = "hftagg"
    return Resource.create(attrs)


def _span_exporter(kind: str):
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ConfigError(f"telemetry.traces = {kind!r}: unknown exporter")


def _metric_exporter(kind: str):
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if kind == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def setup_otel(settings: TelemetrySection) -> OtelHandles:
    handles = OtelHandles()
    resource = _resource(settings)
    if settings.traces != "none":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=resource)
        if settings.traces == "memory":
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            handles.memory_exporter = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(handles.memory_exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings.traces)))
        handles.tracer_provider = provider
        handles.tracer = provider.get_tracer("hftagg")
    if settings.metrics_export != "none":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(
            _metric_exporter(settings.metrics_export),
            export_interval_millis=settings.export_interval_secs * 1e3,
        )
        handles.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return handles


def _per_stage(pipeline: Any, field: str):
    from opentelemetry.metrics import Observation

    def callback(_options):
        for node in list(pipeline.graph.nodes):
            stats = pipeline.stats.get(node.id)
            if stats is not None:
                yield Observation(getattr(stats, field), {"stage": node.id, "role": node.role})

    return callback


def _per_reader(pipeline: Any, value):
    from opentelemetry.metrics import Observation

    def callback(_options):
        for node in list(pipeline.graph.nodes):
            for port, reader in list(pipeline.readers.get(node.id, [])):
                yield Observation(value(reader), {"stage": node.id, "port": port})

    return callback


def _reloads(reloader: Any):
    from opentelemetry.metrics import Observation

    def callback(_options):
        yield Observation(reloader.applied, {"result": "applied"})
        yield Observation(reloader.rejected, {"result": "rejected"})

    return callback


def register_observables(handles: OtelHandles, pipeline: Any, reloader: Any = None) -> None:
    """OTel instruments that read the pipeline's own counters when the exporter collects."""
    if handles.meter_provider is None:
        return
    meter = handles.meter_provider.get_meter("hftagg")
    meter.create_observable_counter("hftagg.stage.records_in", [_per_stage(pipeline, "records_in")])
    meter.create_observable_counter(
        "hftagg.stage.records_out", [_per_stage(pipeline, "records_out")]
    )
    meter.create_observable_counter("hftagg.stage.batches", [_per_stage(pipeline, "batches_in")])
    meter.create_observable_gauge(
        "hftagg.reader.backlog", [_per_reader(pipeline, lambda r: r.backlog())]
    )
    meter.create_observable_counter(
        "hftagg.reader.dropped", [_per_reader(pipeline, lambda r: r.skipped)]
    )
    if reloader is not None:
        meter.create_observable_counter("hftagg.reloads", [_reloads(reloader)])
    handles.latency_histogram = meter.create_histogram(
        "hftagg.e2e.latency",
        unit="s",
        description="ts_recv to sink, three records sampled per delivered batch "
        "(exact histograms: the Prometheus endpoint)",
    )
