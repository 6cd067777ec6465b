"""Running a graph: one ring per topic, sources and sinks in their own threads, core stages in one.

Threads and their rings:

- each source runs in its own thread and is the single writer of its output rings;
- all core stages run in one thread, in topological order: one pass polls each input reader,
  processes what is there (smart batching: up to ``max_batch``, never waiting to fill) and
  publishes the outputs, so every stage sees every batch exactly once;
- each sink runs in its own thread, reading its rings and doing its I/O.

Stopping drains: sources stop first, then the core thread processes everything still in its
rings, then sinks send everything still in theirs, then stages are closed. If draining takes
longer than ``drain_timeout_secs`` the pipeline stops hard and says how much was left.

A stage that raises stops the pipeline (crash-only): the error names the stage and is re-raised
from ``stop()``/``join()`` as ``StageFailed``.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from hftagg.bus.ring import Reader, Ring
from hftagg.config.spec import RuntimeSection
from hftagg.errors import HftaggError
from hftagg.runtime.graph import Graph, Node
from hftagg.stages.base import StageContext

__all__ = ["NodeStats", "Pipeline", "StageFailed"]


class StageFailed(HftaggError):
    """A stage raised while processing; the pipeline stopped."""


@dataclass
class NodeStats:
    records_in: int = 0
    batches_in: int = 0
    records_out: int = 0
    batches_out: int = 0
    busy_ns: int = 0


class Pipeline:
    """A built graph wired to rings, ready to ``start()``; or stepped by hand with ``step()``."""

    def __init__(self, graph: Graph, runtime: RuntimeSection | None = None, host: Any = None):
        self.graph = graph
        self.runtime = runtime or RuntimeSection()
        self.host = host
        self.max_batch = self.runtime.max_batch
        self.rings: dict[str, Ring] = {
            topic: Ring(schema.dtype, max(self.runtime.ring_capacity, self.max_batch), name=topic)
            for topic, schema in graph.topics.items()
        }
        self.stats: dict[str, NodeStats] = {n.id: NodeStats() for n in graph.nodes}
        self.readers: dict[str, list[tuple[str, Reader]]] = {}
        for node in graph.core + graph.sinks:
            policy = getattr(node.stage, "input_policy", "lossless")
            self.readers[node.id] = [
                (port, self.rings[topic].subscribe(f"{node.id}:{port}", policy))
                for port, topic in node.inputs.items()
            ]
        self._takes_port = {n.id: type(n.stage).process_takes_port() for n in graph.core}
        self._stop_sources = threading.Event()
        self._hard_stop = threading.Event()
        self._sources_done = threading.Event()
        self._core_done = threading.Event()
        self._core_bell = threading.Event()
        self._sink_bells = {n.id: threading.Event() for n in graph.sinks}
        self._wire_bells()
        self._threads: list[threading.Thread] = []
        self.failure: str | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.left_over = 0
        self._opened = False

    def _wire_bells(self) -> None:
        for node in self.graph.core:
            for topic in node.inputs.values():
                self.rings[topic].add_waiter(self._core_bell)
        for node in self.graph.sinks:
            for topic in node.inputs.values():
                self.rings[topic].add_waiter(self._sink_bells[node.id])

    # -- one step of each role (used by the threads and by hftagg.testing) -------------------

    def open(self) -> None:
        if not self._opened:
            ctx = StageContext(
                max_batch=self.max_batch,
                topic_schemas=dict(self.graph.topics),
                transports=dict(self.host.transports) if self.host is not None else {},
            )
            for node in self.graph.nodes:
                node.stage.open(ctx)
            self._opened = True

    def pump_source(self, node: Node) -> bool:
        """Take one batch from a source and publish it; False if it had nothing."""
        out = node.stage.next_batch()
        if out is None:
            return False
        return self._emit(node, out) > 0

    def step_core(self) -> int:
        """One pass over the core stages in topological order; returns records consumed."""
        done = 0
        for node in self.graph.core:
            stats = self.stats[node.id]
            takes_port = self._takes_port[node.id]
            for port, reader in self.readers[node.id]:
                batch = reader.poll(self.max_batch)
                n = len(batch)
                if not n:
                    continue
                t0 = time.perf_counter_ns()
                out = node.stage.process(batch, port) if takes_port else node.stage.process(batch)
                stats.busy_ns += time.perf_counter_ns() - t0
                if out is not None:
                    self._emit(node, out)
                reader.commit(n)
                stats.records_in += n
                stats.batches_in += 1
                done += n
        return done

    def pump_sink(self, node: Node) -> int:
        """Hand what is waiting in a sink's rings to the sink; returns records written."""
        done = 0
        stats = self.stats[node.id]
        for port, reader in self.readers[node.id]:
            offset = reader.cursor
            batch = reader.poll(self.max_batch)
            n = len(batch)
            if not n:
                continue
            t0 = time.perf_counter_ns()
            node.stage.write(batch, port, offset)
            stats.busy_ns += time.perf_counter_ns() - t0
            reader.commit(n)
            stats.records_in += n
            stats.batches_in += 1
            done += n
        return done

    def _emit(self, node: Node, out: Any) -> int:
        if isinstance(out, np.ndarray):
            if len(node.outputs) != 1:
                raise StageFailed(
                    f"stage {node.id!r} returned one array but has outputs {list(node.outputs)}; "
                    f"return a dict {{port: batch}}"
                )
            out = {next(iter(node.outputs)): out}
        stats = self.stats[node.id]
        total = 0
        for port, batch in out.items():
            topic = node.outputs.get(port)
            if topic is None or not len(batch):
                continue
            self.rings[topic].publish(batch, stop=self._hard_stop)
            stats.records_out += len(batch)
            stats.batches_out += 1
            total += len(batch)
        return total

    def backlog(self, node_id: str) -> int:
        return sum(r.backlog() for _, r in self.readers.get(node_id, []))

    def drops(self, node_id: str) -> int:
        return sum(r.skipped for _, r in self.readers.get(node_id, []))

    def total_backlog(self, nodes: list[Node]) -> int:
        return sum(self.backlog(n.id) for n in nodes)

    # -- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        self.open()
        self.started_at = time.monotonic()
        for node in self.graph.sources:
            self._spawn(f"source:{node.id}", self._source_loop, node)
        self._spawn("core", self._core_loop)
        for node in self.graph.sinks:
            self._spawn(f"sink:{node.id}", self._sink_loop, node)
        self._source_watch = threading.Thread(
            target=self._watch_sources, name="hftagg-source-watch", daemon=True
        )
        self._source_watch.start()
        if self.host is not None:
            self.host.pm.hook.hftagg_pipeline_started(pipeline=self)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(
            target=self._guard, args=(name, target, *args), name=f"hftagg-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _guard(self, name: str, target, *args) -> None:
        try:
            target(*args)
        except BaseException:
            if self.failure is None:
                self.failure = f"{name} failed:\n{traceback.format_exc()}"
            self._stop_sources.set()
            self._hard_stop.set()
            self._core_bell.set()
            for bell in self._sink_bells.values():
                bell.set()

    def _source_loop(self, node: Node) -> None:
        stage = node.stage
        while not self._stop_sources.is_set():
            if self.pump_source(node):
                continue
            if stage.exhausted:
                return
            wake = stage.next_awake()
            delay = 0.0005 if wake is None else max(0.0, wake - time.monotonic())
            if delay:
                self._stop_sources.wait(min(delay, 0.05))

    def _watch_sources(self) -> None:
        for thread in self._threads:
            if thread.name.startswith("hftagg-source:"):
                thread.join()
        self._sources_done.set()
        self._core_bell.set()

    def _core_loop(self) -> None:
        bell = self._core_bell
        while not self._hard_stop.is_set():
            bell.clear()
            if self.step_core():
                continue
            if self._sources_done.is_set() and not self.total_backlog(self.graph.core):
                break
            bell.wait(0.01)
        self._core_done.set()
        for sink_bell in self._sink_bells.values():
            sink_bell.set()

    def _sink_loop(self, node: Node) -> None:
        bell = self._sink_bells[node.id]
        try:
            while not self._hard_stop.is_set():
                bell.clear()
                if self.pump_sink(node):
                    continue
                if self._core_done.is_set() and not self.backlog(node.id):
                    break
                bell.wait(0.01)
        finally:
            node.stage.flush()

    def stop(self, drain: bool = True) -> dict[str, Any]:
        """Stop sources, drain (unless ``drain=False``), close stages; return the summary."""
        self._stop_sources.set()
        if not drain:
            self._hard_stop.set()
        deadline = time.monotonic() + self.runtime.drain_timeout_secs
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self.left_over = sum(self.backlog(n.id) for n in self.graph.core + self.graph.sinks)
            self._hard_stop.set()
            self._core_bell.set()
            for thread in self._threads:
                thread.join(1.0)
        self.stopped_at = time.monotonic()
        summary = self.summary()
        if self.host is not None:
            self.host.pm.hook.hftagg_pipeline_stopping(pipeline=self, summary=summary)
        for node in self.graph.nodes:
            try:
                node.stage.close()
            except Exception:
                if self.failure is None:
                    self.failure = f"closing {node.id} failed:\n{traceback.format_exc()}"
        if self.failure:
            raise StageFailed(self.failure)
        return summary

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every source is exhausted and everything drained; True if it finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.running

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.stopped_at or time.monotonic()) - self.started_at

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        stages = {}
        for node in self.graph.nodes:
            s = self.stats[node.id]
            records = s.records_out if node.role == "source" else s.records_in
            batches = s.batches_out if node.role == "source" else s.batches_in
            stages[node.id] = {
                "type": node.stage.type_name,
                "role": node.role,
                "records": records,
                "batches": batches,
                "mean_batch": records / batches if batches else 0.0,
                "records_per_sec": records / elapsed if elapsed else 0.0,
                "records_out": s.records_out,
                "busy_secs": s.busy_ns / 1e9,
                "backlog": self.backlog(node.id),
                "drops": self.drops(node.id),
            }
        return {"elapsed_secs": elapsed, "left_over": self.left_over, "stages": stages}
