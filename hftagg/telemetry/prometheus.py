"""The metrics endpoint: Prometheus text at ``/metrics``, the same as JSON at ``/metrics.json``.

Bound to loopback unless ``telemetry.allow_remote``. Rendering reads the pipeline's counters and
hftagg's histograms (exact over every record); nothing is computed on the hot path for it.

The server holds at most ``max_connections`` connections at once, one thread each (a scrape
takes milliseconds); one more is answered ``503`` and closed. A connection that sends nothing
(or stops reading) for ``idle_timeout_secs`` is closed. A client that hangs up early is not an
error worth a traceback: it is counted at debug level and forgotten.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hftagg.bus.transport import check_loopback
from hftagg.telemetry.histogram import Histogram

__all__ = ["MetricsServer", "render_json", "render_prometheus", "snapshot"]

log = logging.getLogger("hftagg.telemetry")


def _hist_json(hist: Histogram | None) -> dict | None:
    return None if hist is None else hist.as_dict()


def snapshot(pipeline: Any, reloader: Any = None) -> dict:
    """Everything the endpoint serves, as plain data."""
    tel = pipeline.telemetry
    stages = []
    for node in list(pipeline.graph.nodes):
        s = pipeline.stats.get(node.id)
        if s is None:
            continue
        readers = [
            {"port": port, "topic": r.ring.name, "backlog": r.backlog(), "dropped": r.skipped}
            for port, r in list(pipeline.readers.get(node.id, []))
        ]
        stages.append(
            {
                "stage": node.id,
                "type": node.stage.type_name,
                "role": node.role,
                "records_in": s.records_in,
                "batches_in": s.batches_in,
                "records_out": s.records_out,
                "batches_out": s.batches_out,
                "busy_ns": s.busy_ns,
                "failed": node.id in pipeline.isolated,  # on_error = "isolate" caught a raise
                "failures": s.failures,
                "readers": readers,
                "counters": _counters(node),
                "processing_ns": _hist_json(tel.processing.get(node.id)) if tel else None,
                "latency_recv_ns": _hist_json(tel.latency_recv.get(node.id)) if tel else None,
                "latency_event_ns": _hist_json(tel.latency_event.get(node.id)) if tel else None,
            }
        )
    out = {
        "time": time.time(),
        "elapsed_secs": pipeline.elapsed(),
        "stages": stages,
        "dead_letters": [],
        "reloads": None,
    }
    if tel is not None:
        out["dead_letters"] = [
            {"topic": t, "reason": r, "count": c} for (t, r), c in sorted(tel.dead_letters.items())
        ]
    if reloader is not None:
        out["reloads"] = {"applied": reloader.applied, "rejected": reloader.rejected}
    return out


def render_json(pipeline: Any, reloader: Any = None) -> str:
    return json.dumps(snapshot(pipeline, reloader))


def _label(**labels: Any) -> str:
    inner = ",".join(f'{k}="{str(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _histogram_lines(name: str, hist: dict, labels: dict) -> list[str]:
    lines = []
    running = 0
    for bound, count in zip(hist["bounds"], hist["counts"], strict=False):
        running += count
        lines.append(f"{name}_bucket{_label(**labels, le=f'{bound / 1e9:.9g}')} {running}")
    lines.append(f"{name}_bucket{_label(**labels, le='+Inf')} {hist['count']}")
    lines.append(f"{name}_sum{_label(**labels)} {hist['sum'] / 1e9:.9f}")
    lines.append(f"{name}_count{_label(**labels)} {hist['count']}")
    return lines


_HELP = {
    "hftagg_stage_records_total": ("counter", "records processed (sources: produced) per stage"),
    "hftagg_stage_batches_total": ("counter", "batches processed (sources: produced) per stage"),
    "hftagg_stage_processing_seconds": ("histogram", "processing time per batch"),
    "hftagg_stage_failed": ("gauge", "1: the stage raised and was isolated (on_error)"),
    "hftagg_stage_failures_total": ("counter", "batches an isolated stage raised on"),
    "hftagg_reader_backlog_records": ("gauge", "records waiting in a ring for this reader"),
    "hftagg_reader_dropped_records_total": ("counter", "records a lossy reader skipped"),
    "hftagg_e2e_latency_seconds": ("histogram", "per record, from ts_recv or ts_event to a sink"),
    "hftagg_sink_dropped_records_total": (
        "counter",
        "records a sink accepted but could not deliver (push: never reached a puller)",
    ),
    "hftagg_delivery_frames_total": (
        "counter",
        "publisher frames: sent, lost (pub: a lower bound of what subscribers missed)",
    ),
    "hftagg_delivery_frames_queued": ("gauge", "publisher frames sent, not yet written to a peer"),
    "hftagg_delivery_peers": ("gauge", "connected pullers or subscribers"),
    "hftagg_sink_pending_records": (
        "gauge",
        "external sink (PostgreSQL, MongoDB): records accepted, not yet in the database",
    ),
    "hftagg_sink_spilled_records_total": ("counter", "external sink: records spilled to disk"),
    "hftagg_sink_spill_bytes": ("gauge", "external sink: spill bytes on disk now"),
    "hftagg_sink_retries_total": ("counter", "external sink: failed attempts, retried"),
    "hftagg_sink_connected": ("gauge", "external sink: 1 connected to its database, 0 retrying"),
    "hftagg_sink_written_records_total": ("counter", "external sink: records in the database"),
    "hftagg_source_connection_state": (
        "gauge",
        "network source: 0 disconnected, 1 connecting, 2 connected, 3 stale, 4 stopped",
    ),
    "hftagg_source_messages_total": ("counter", "network source: messages received"),
    "hftagg_source_reconnects_total": ("counter", "network source: connections after the first"),
    "hftagg_source_stale_reconnects_total": (
        "counter",
        "network source: connections dropped as stale (no message for stale_after_s)",
    ),
    "hftagg_dead_letters_total": ("counter", "records sent to a dead-letter topic, by reason"),
    "hftagg_reloads_total": ("counter", "config changes applied or rejected"),
    "hftagg_uptime_seconds": ("gauge", "seconds since the pipeline started"),
}


def _counters(node: Any) -> dict:
    """A sink's ``counters()``; a source's ``metrics()`` when it has them (WebSocket sources:
    connection state, messages, reconnects)."""
    if node.role == "sink":
        return node.stage.counters()
    metrics = getattr(node.stage, "metrics", None)
    return metrics() if node.role == "source" and callable(metrics) else {}


def _source_series(series: dict[str, list[str]], stage: str, counters: dict) -> None:
    """A network source's connection: state gauge, messages and reconnects."""
    for key, name in (("connection_state", "hftagg_source_connection_state"),
                      ("messages", "hftagg_source_messages_total"),
                      ("reconnects", "hftagg_source_reconnects_total"),
                      ("stale_reconnects", "hftagg_source_stale_reconnects_total")):  # fmt: skip
        if key in counters:
            series[name].append(f"{name}{_label(stage=stage)} {counters[key]}")


def _sink_series(series: dict[str, list[str]], stage: str, counters: dict[str, int]) -> None:
    """A sink's own counters (the publisher's: frames sent, lost, queued, peers, dropped)."""
    if "dropped" in counters:
        series["hftagg_sink_dropped_records_total"].append(
            f"hftagg_sink_dropped_records_total{_label(stage=stage)} {counters['dropped']}"
        )
    for state in ("sent", "lost"):
        if f"frames_{state}" in counters:
            series["hftagg_delivery_frames_total"].append(
                f"hftagg_delivery_frames_total{_label(stage=stage, state=state)} "
                f"{counters[f'frames_{state}']}"
            )
    for key, name in (("frames_queued", "hftagg_delivery_frames_queued"),
                      ("peers", "hftagg_delivery_peers"),
                      ("pending", "hftagg_sink_pending_records"),
                      ("spilled", "hftagg_sink_spilled_records_total"),
                      ("spill_bytes", "hftagg_sink_spill_bytes"),
                      ("retries", "hftagg_sink_retries_total"),
                      ("connected", "hftagg_sink_connected"),
                      ("written", "hftagg_sink_written_records_total")):  # fmt: skip
        if key in counters:
            series[name].append(f"{name}{_label(stage=stage)} {counters[key]}")


def render_prometheus(pipeline: Any, reloader: Any = None) -> str:
    data = snapshot(pipeline, reloader)
    series: dict[str, list[str]] = {name: [] for name in _HELP}
    for st in data["stages"]:
        out = st["role"] == "source"
        lab = {"stage": st["stage"], "type": st["type"], "role": st["role"]}
        series["hftagg_stage_records_total"].append(
            f"hftagg_stage_records_total{_label(**lab)} "
            f"{st['records_out'] if out else st['records_in']}"
        )
        series["hftagg_stage_batches_total"].append(
            f"hftagg_stage_batches_total{_label(**lab)} "
            f"{st['batches_out'] if out else st['batches_in']}"
        )
        series["hftagg_stage_failed"].append(
            f"hftagg_stage_failed{_label(stage=st['stage'])} {int(st['failed'])}"
        )
        series["hftagg_stage_failures_total"].append(
            f"hftagg_stage_failures_total{_label(stage=st['stage'])} {st['failures']}"
        )
        if st["processing_ns"]:
            series["hftagg_stage_processing_seconds"] += _histogram_lines(
                "hftagg_stage_processing_seconds", st["processing_ns"], {"stage": st["stage"]}
            )
        for r in st["readers"]:
            rl = _label(stage=st["stage"], port=r["port"], topic=r["topic"])
            series["hftagg_reader_backlog_records"].append(
                f"hftagg_reader_backlog_records{rl} {r['backlog']}"
            )
            series["hftagg_reader_dropped_records_total"].append(
                f"hftagg_reader_dropped_records_total{rl} {r['dropped']}"
            )
        if st["role"] == "source":
            _source_series(series, st["stage"], st["counters"])
        else:
            _sink_series(series, st["stage"], st["counters"])
        for origin, key in (("ts_recv", "latency_recv_ns"), ("ts_event", "latency_event_ns")):
            if st[key]:
                series["hftagg_e2e_latency_seconds"] += _histogram_lines(
                    "hftagg_e2e_latency_seconds", st[key], {"sink": st["stage"], "origin": origin}
                )
    for d in data["dead_letters"]:
        series["hftagg_dead_letters_total"].append(
            f"hftagg_dead_letters_total{_label(topic=d['topic'], reason=d['reason'])} {d['count']}"
        )
    if data["reloads"] is not None:
        for result, count in data["reloads"].items():
            series["hftagg_reloads_total"].append(
                f"hftagg_reloads_total{_label(result=result)} {count}"
            )
    series["hftagg_uptime_seconds"].append(f"hftagg_uptime_seconds {data['elapsed_secs']:.3f}")
    lines = []
    for name, (kind, text) in _HELP.items():
        if series[name]:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *series[name]]
    return "\n".join(lines) + "\n"


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent connections and quiet hang-ups."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # the listen backlog

    def __init__(self, address, handler, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0  # connections turned away because max_connections were open
        self.hangups = 0  # clients that closed or timed out mid-request
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(0.05)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 1\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            self.hangups += 1
            log.debug("metrics client %s went away: %r", client_address, exc)
            return
        log.warning("metrics endpoint: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """A tiny HTTP server on loopback serving ``/metrics`` and ``/metrics.json``."""

    def __init__(
        self,
        pipeline: Any,
        address: str = "127.0.0.1:9464",
        *,
        reloader: Any = None,
        allow_remote: bool = False,
        max_connections: int = 16,
        idle_timeout_secs: float = 5.0,
    ) -> None:
        host, _, port = address.rpartition(":")
        check_loopback(f"tcp://{host}:{port}", allow_remote, key="telemetry.prometheus_address")
        self.pipeline = pipeline
        self.reloader = reloader
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout_secs  # for reading the request and writing the answer

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body = render_prometheus(server.pipeline, server.reloader).encode()
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif path == "/metrics.json":
                    body = render_json(server.pipeline, server.reloader).encode()
                    ctype = "application/json"
                else:
                    self.send_error(404, "try /metrics or /metrics.json")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = _BoundedServer((host, int(port)), Handler, max_connections)
        self.address = f"{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hftagg-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
