"""The ``[telemetry]`` config section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TelemetrySection"]


class TelemetrySection(BaseModel):
    """Traces are sampled per batch; metrics are always on (they are cheap: once per batch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    traces: Literal["none", "console", "otlp_grpc", "otlp_http", "memory"] = Field(
        "none", description="span exporter; OTLP honours OTEL_EXPORTER_OTLP_* variables"
    )
    sample_ratio: float = Field(0.01, ge=0.0, le=1.0, description="share of batches traced")
    metrics_export: Literal["none", "console", "otlp_grpc", "otlp_http"] = Field(
        "none", description="OpenTelemetry metric exporter (Prometheus is separate)"
    )
    export_interval_secs: float = Field(10.0, gt=0, le=3600)
    prometheus: bool = Field(True, description="serve /metrics (and /metrics.json for top)")
    prometheus_address: str = Field("127.0.0.1:9464", description="host:port, loopback default")
    allow_remote: bool = Field(False, description="let the metrics endpoint listen beyond loopback")
    service_name: str = Field("", description="default: OTEL_SERVICE_NAME or 'hftagg'")
