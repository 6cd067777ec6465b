"""The ``[telemetry]`` config section."""

from __future__ import annotations

from typing import Literal

from hftagg.stages.params import Params, live, restart

__all__ = ["TelemetrySection"]


class TelemetrySection(Params):
    """Traces are sampled per batch; metrics are always on (they are cheap: once per batch).

    Each field is marked live or restart, as stage parameters are."""

    traces: Literal["none", "console", "otlp_grpc", "otlp_http", "memory"] = restart(
        "none", description="span exporter; OTLP honours OTEL_EXPORTER_OTLP_* variables"
    )
    sample_ratio: float = live(0.01, ge=0.0, le=1.0, description="share of batches traced")
    metrics_export: Literal["none", "console", "otlp_grpc", "otlp_http"] = restart(
        "none", description="OpenTelemetry metric exporter (Prometheus is separate)"
    )
    export_interval_secs: float = restart(10.0, gt=0, le=3600)
    prometheus: bool = restart(True, description="serve /metrics (and /metrics.json for top)")
    prometheus_address: str = restart("127.0.0.1:9464", description="host:port, loopback default")
    allow_remote: bool = restart(
        False, description="let the metrics endpoint listen beyond loopback"
    )
    service_name: str = restart("", description="default: OTEL_SERVICE_NAME or 'hftagg'")
