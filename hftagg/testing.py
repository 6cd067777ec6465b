"""Helpers for testing stages and pipelines, shipped with the package::

    from hftagg.testing import TestingSink, TestingSource, run_pipeline

    out = []
    run_pipeline(stages=[TestingSource(batches), Ema(window=3), TestingSink(out)])
    values = np.concatenate(out)["value"]

``run_pipeline`` wires a list of stages in order (each single-input stage reads the previous
stage's output unless its input topic is already produced) and runs it to completion through the
real runtime: rings, readers and the topological core pass. ``threaded=False`` (the default)
steps it deterministically in the calling thread; ``threaded=True`` starts the real threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from hftagg.config.spec import RuntimeSection
from hftagg.errors import BusTimeout
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.runtime.graph import graph_from_stages
from hftagg.runtime.pipeline import Pipeline
from hftagg.stages import Params, Port, SinkStage, SourceStage, Stage

__all__ = ["TestingSink", "TestingSource", "run_pipeline"]

_HOST: PluginHost | None = None


def _host() -> PluginHost:
    global _HOST
    if _HOST is None:
        _HOST = load_plugins([], entry_points=False)
    return _HOST


class TestingSourceParams(Params):
    schema_name: str = "trade"


class TestingSource(SourceStage):
    """Emits the given batches, one per call, then is exhausted."""

    __test__ = False  # not a pytest test class
    type_name = "testing_source"
    Params = TestingSourceParams

    def __init__(
        self,
        batches: Iterable[np.ndarray],
        *,
        schema: str | None = None,
        stage_id: str = "source",
        topic: str = "test.source",
    ) -> None:
        self.batches = [np.asarray(b) for b in batches]
        if schema is None:
            if not self.batches:
                raise ValueError("TestingSource: pass schema= when giving no batches")
            schema = _host().schemas.by_dtype(self.batches[0].dtype).key
        super().__init__(
            TestingSourceParams(schema_name=schema), stage_id=stage_id, topics={"output": topic}
        )
        self._next = 0

    @classmethod
    def ports(cls, params: TestingSourceParams):
        return {}, {"output": Port(params.schema_name, "test.source")}

    def next_batch(self) -> np.ndarray | None:
        if self._next >= len(self.batches):
            return None
        batch = self.batches[self._next]
        self._next += 1
        return batch

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self.batches)


class TestingSink(SinkStage):
    """Appends a copy of every batch it receives to ``out`` (a list the test owns)."""

    __test__ = False
    type_name = "testing_sink"
    inputs = {"input": Port(None, "test.sink")}

    def __init__(self, out: list, *, stage_id: str = "sink", topic: str | None = None) -> None:
        super().__init__(stage_id=stage_id, topics={"input": topic} if topic else None)
        self.out = out
        self.offsets: list[int] = []

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        self.out.append(batch.copy())
        self.offsets.append(offset)


def _wire_linear(stages: list[Stage]) -> None:
    produced: list[str] = []
    previous: Stage | None = None
    for stage in stages:
        if previous is not None and len(stage.input_topics) == 1 and previous.output_topics:
            port, topic = next(iter(stage.input_topics.items()))
            if topic not in produced:
                stage.input_topics[port] = next(iter(previous.output_topics.values()))
        produced.extend(stage.output_topics.values())
        if stage.output_topics:
            previous = stage


def run_pipeline(
    stages: list[Stage],
    *,
    max_batch: int = 4096,
    ring_capacity: int = 1 << 16,
    threaded: bool = False,
    timeout_secs: float = 60.0,
    wire: bool = True,
    telemetry: Any = None,
    host: PluginHost | None = None,
) -> dict[str, Any]:
    """Run ``stages`` until every source is exhausted and everything drained; return the summary."""
    if wire:
        _wire_linear(stages)
    host = host or _host()
    graph = graph_from_stages(stages, host)
    if not threaded:  # one thread: a ring must hold what a source batch produces before it drains
        largest = max(
            (len(b) for s in stages if isinstance(s, TestingSource) for b in s.batches), default=0
        )
        ring_capacity = max(ring_capacity, 4 * largest)
    runtime = RuntimeSection(
        max_batch=max_batch,
        ring_capacity=min(ring_capacity, 1 << 26),
        drain_timeout_secs=timeout_secs,
    )
    pipeline = Pipeline(graph, runtime, host=host, telemetry=telemetry)
    if threaded:
        pipeline.start()
        pipeline.wait(timeout_secs)
        return pipeline.stop()
    pipeline.open()
    pipeline.publish_timeout = timeout_secs  # a full ring here would never drain: fail instead
    try:
        _step_until_done(pipeline)
    except BusTimeout as exc:
        raise BusTimeout(
            f"{exc} -- run_pipeline steps everything in one thread, so a ring "
            f"smaller than what one source batch produces cannot drain; raise "
            f"ring_capacity or use threaded=True"
        ) from exc
    summary = pipeline.summary()
    for node in graph.nodes:
        node.stage.close()
    return summary


def _step_until_done(pipeline: Pipeline) -> None:
    graph = pipeline.graph
    active = list(graph.sources)
    while active:
        for node in list(active):
            if not pipeline.pump_source(node) and node.stage.exhausted:
                active.remove(node)
            _drain(pipeline)
    _drain(pipeline)


def _drain(pipeline: Pipeline) -> None:
    while True:
        work = pipeline.step_core()
        for sink in pipeline.graph.sinks:
            work += pipeline.pump_sink(sink)
        if not work:
            return
