"""Telemetry: metrics on every batch, sampled OpenTelemetry spans, Prometheus, ``hftagg top``."""

from __future__ import annotations

import logging
from typing import Any

from hftagg.telemetry.core import Telemetry
from hftagg.telemetry.histogram import LATENCY_BOUNDS_NS, Histogram
from hftagg.telemetry.otel import OtelHandles, register_observables, setup_otel
from hftagg.telemetry.settings import TelemetrySection

__all__ = [
    "LATENCY_BOUNDS_NS",
    "Histogram",
    "OtelHandles",
    "Telemetry",
    "TelemetryRunning",
    "TelemetrySection",
    "make_telemetry",
]

log = logging.getLogger("hftagg.telemetry")


class TelemetryRunning:
    """What ``make_telemetry`` started: the Telemetry object, OTel providers, metrics server."""

    def __init__(self, telemetry: Telemetry, handles: OtelHandles) -> None:
        self.telemetry = telemetry
        self.handles = handles
        self.server: Any = None

    def serve(self, pipeline: Any, reloader: Any = None) -> None:
        """Start the metrics endpoint and OTel observables for a started pipeline."""
        from hftagg.telemetry.prometheus import MetricsServer

        settings = self.telemetry.settings
        register_observables(self.handles, pipeline, reloader)
        self.telemetry.otel_latency = self.handles.latency_histogram
        if settings.prometheus:
            try:
                self.server = MetricsServer(
                    pipeline,
                    settings.prometheus_address,
                    reloader=reloader,
                    allow_remote=settings.allow_remote,
                ).start()
                log.info("metrics on http://%s/metrics (and /metrics.json)", self.server.address)
            except OSError as exc:
                log.warning(
                    "metrics endpoint %s unavailable (%s); running without it",
                    settings.prometheus_address,
                    exc,
                )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.handles.shutdown()


def make_telemetry(settings: TelemetrySection) -> TelemetryRunning:
    handles = setup_otel(settings)
    return TelemetryRunning(Telemetry(settings, tracer=handles.tracer), handles)
