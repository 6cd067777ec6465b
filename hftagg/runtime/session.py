"""A running session: pipeline + live reload + Consul + telemetry, started and stopped together.

``hftagg run`` is a thin shell around this: build a Session from an assembled config, ``start``,
``run_until`` a stop signal or a duration (printing status lines), ``stop`` for the summary.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hftagg.runtime.assemble import Assembled, plugin_dirs
from hftagg.runtime.reload import Reloader
from hftagg.runtime.status import StatusReporter
from hftagg.telemetry import make_telemetry

__all__ = ["Session"]

log = logging.getLogger("hftagg.status")


class Session:
    def __init__(
        self,
        assembled: Assembled,
        config_path: Path | None,
        *,
        consul: Any = None,
        sources: list[Any] = (),
        watch: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.assembled = assembled
        self.telemetry = make_telemetry(assembled.spec.telemetry)
        self.pipeline = assembled.pipeline(telemetry=self.telemetry.telemetry)
        self.consul = consul
        #: config sources (hftagg.config.sources), already read once; watched from start()
        self.sources = list(sources)
        self.reloader: Reloader | None = None
        if watch:
            self.reloader = Reloader(
                self.pipeline,
                assembled.host,
                config_path,
                plugin_dirs=plugin_dirs(assembled.spec.raw, config_path),
                environ=environ,
            )
            self.reloader.consul_layer = consul.layer if consul is not None else None
            self.reloader.remote_layers = {s.name: dict(s.layer) for s in self.sources}
        self.stop_requested = threading.Event()

    def start(self) -> None:
        self.pipeline.start()
        if self.reloader is not None:
            self.reloader.start()
            if self.consul is not None:
                self.consul.on_change = self.reloader.set_consul_layer
                self.consul.start()
            for source in self.sources:
                source.on_change = functools.partial(self.reloader.set_remote_layer, source.name)
                source.start()
        self.telemetry.serve(self.pipeline, self.reloader)

    def run_until(
        self,
        duration: float | None,
        interval: float | None,
        on_status: Callable[[str], None] | None,
        *,
        table: bool = False,
    ) -> None:
        """Until a stop request, the duration, a failure, or every source has finished.

        ``on_status`` gets the status every interval: one plain line, or with ``table`` a
        multi-line table (for a terminal). The status is only a view: if producing it fails,
        that is logged once with its traceback and the pipeline runs on without it.
        """
        reporter = StatusReporter(self.pipeline)
        deadline = time.monotonic() + duration if duration else None
        while not self.stop_requested.is_set() and self.pipeline.failure is None:
            step = interval or self.pipeline.runtime.status_interval_secs
            timeout = step if deadline is None else min(step, deadline - time.monotonic())
            if timeout <= 0 or self.stop_requested.wait(timeout) or not self.pipeline.running:
                break
            if on_status is None:
                continue
            try:
                on_status(reporter.table() if table else reporter.line())
            except Exception:
                log.exception("status output failed; the pipeline runs on without status lines")
                on_status = None

    def stop(self) -> dict[str, Any]:
        """Stop watching, drain and stop the pipeline; returns its summary (StageFailed raises)."""
        if self.consul is not None:
            self.consul.stop()
        for source in self.sources:
            source.stop()
        if self.reloader is not None:
            self.reloader.stop()
        try:
            return self.pipeline.stop()
        finally:
            self.telemetry.stop()
