"""Helpers for testing stages and pipelines, shipped with the package::

    from hftagg.testing import TestingSink, TestingSource, run_pipeline, run_stage

    out = []
    run_pipeline(stages=[TestingSource(batches), Ema(window=3), TestingSink(out)])
    values = np.concatenate(out)["value"]

    produced = run_stage(Ema(window=3), trades, splits=7)   # {port: array}
    produced["output"]["value"]

- ``run_pipeline`` wires a list of stages in order (each single-input stage reads the previous
  stage's output unless its input topic is already produced) and runs it to completion through
  the real runtime: rings, readers and the topological core pass. ``threaded=False`` (the
  default) steps it deterministically in the calling thread; ``threaded=True`` starts the real
  threads.
- ``run_stage`` feeds one stage's input ports and returns everything it produced, per output
  port, as one array each; ``splits=SEED`` cuts the input into random batch sizes first
  (:func:`random_splits`), so a test can show a result does not depend on batch boundaries.
- ``ScriptedSource`` emits batches and runs ``on_batch(index, batch)`` before each (and any
  callables in its script between them): change a parameter, advance a :class:`FakeClock`,
  or assert on what has arrived so far, at an exact point of the stream.
- ``FakeClock`` stands in for the ``time`` module of the modules it patches, so pacing and
  timestamps follow the test, not the wall clock.
- ``TestingSink`` is also a stage type (``testing_sink``, registered by a built-in plugin), so a
  ``config.toml`` run by ``hftagg run`` or a reloader test can collect records by key::

      [stages.out]
      type = "testing_sink"
      streams = ["md.trades", "ind.ema"]   # one input port per topic (or topics = {input = ...})
      key = "run1"

  and the test reads ``collected("run1", "ind.ema")`` -- contiguous, in stream order.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from hftagg.config.spec import RuntimeSection
from hftagg.errors import BusTimeout
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.runtime.graph import graph_from_stages
from hftagg.runtime.pipeline import Pipeline
from hftagg.stages import Params, Port, SinkStage, SourceStage, Stage, restart

__all__ = [
    "FakeClock",
    "ScriptedSource",
    "TestingSink",
    "TestingSource",
    "clear_collected",
    "collected",
    "random_splits",
    "run_pipeline",
    "run_stage",
]

_HOST: PluginHost | None = None


def _host() -> PluginHost:
    global _HOST
    if _HOST is None:
        _HOST = load_plugins([], entry_points=False)
    return _HOST


def random_splits(records: np.ndarray, seed: int, max_size: int = 64) -> list[np.ndarray]:
    """``records`` cut into consecutive batches of random sizes 1..``max_size`` (reproducible)."""
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < len(records):
        size = int(rng.integers(1, max_size + 1))
        out.append(records[start : start + size])
        start += size
    return out


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
        self.script = list(batches)
        self.batches = [np.asarray(b) for b in self.script if not callable(b)]
        if schema is None:
            if not self.batches:
                raise ValueError(f"{type(self).__name__}: pass schema= when giving no batches")
            schema = _host().schemas.by_dtype(self.batches[0].dtype).key
        super().__init__(
            TestingSourceParams(schema_name=schema), stage_id=stage_id, topics={"output": topic}
        )
        self._next = 0
        self._emitted = 0

    @classmethod
    def ports(cls, params: TestingSourceParams):
        return {}, {"output": Port(params.schema_name, "test.source")}

    def next_batch(self) -> np.ndarray | None:
        while self._next < len(self.script):
            item = self.script[self._next]
            self._next += 1
            if callable(item):
                item()
                continue
            batch = np.asarray(item)
            self.before_batch(self._emitted, batch)
            self._emitted += 1
            return batch
        return None

    def before_batch(self, index: int, batch: np.ndarray) -> None:
        """Called just before batch ``index`` is emitted (ScriptedSource runs its hook here)."""

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self.script)


class ScriptedSource(TestingSource):
    """A testing source with a script: batches, and callables run between them, in order.

    ``on_batch(index, batch)`` runs just before each batch is emitted (``index`` counts batches
    from 0). Both run in the source's thread at that exact point of the stream: with
    ``run_pipeline``'s default single-threaded stepping, everything emitted before has already
    gone through every stage. Example -- change a parameter between two batches::

        ScriptedSource([b0, lambda: ema.reconfigure(ema.Params(window=5)), b1])
    """

    def __init__(
        self,
        script: Iterable[np.ndarray | Callable[[], None]],
        *,
        on_batch: Callable[[int, np.ndarray], None] | None = None,
        schema: str | None = None,
        stage_id: str = "source",
        topic: str = "test.source",
    ) -> None:
        super().__init__(script, schema=schema, stage_id=stage_id, topic=topic)
        self.on_batch = on_batch

    def before_batch(self, index: int, batch: np.ndarray) -> None:
        if self.on_batch is not None:
            self.on_batch(index, batch)


# -- collecting sink (also a stage type for config.toml) -------------------------------------------

_COLLECTED: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
_COLLECTED_LOCK = threading.Lock()


def collected(key: str, topic: str | None = None) -> np.ndarray:
    """Every record a config-built ``testing_sink`` with ``key`` received from ``topic`` (or its
    only topic), in stream order. Raises if batches overlap or leave a gap."""
    with _COLLECTED_LOCK:
        streams = {t: list(chunks) for (k, t), chunks in _COLLECTED.items() if k == key}
    if topic is None:
        if len(streams) != 1:
            raise KeyError(
                f"testing_sink key {key!r} collected from {sorted(streams) or 'nothing'}; "
                f"name the topic: collected({key!r}, topic)"
            )
        topic = next(iter(streams))
    if topic not in streams:
        raise KeyError(f"testing_sink key {key!r} has no topic {topic!r}; it has {sorted(streams)}")
    chunks = sorted(streams[topic], key=lambda c: c[0])
    expected = chunks[0][0] if chunks else 0
    for offset, batch in chunks:
        if offset != expected:
            raise AssertionError(
                f"testing_sink {key!r} {topic}: records {expected}..{offset - 1} are missing"
                if offset > expected
                else f"testing_sink {key!r} {topic}: records from {offset} arrived twice"
            )
        expected = offset + len(batch)
    if not chunks:
        return np.empty(0)
    return np.concatenate([b for _, b in chunks])


def clear_collected(key: str | None = None) -> None:
    """Forget what ``testing_sink`` stages collected (under ``key``, or everything)."""
    with _COLLECTED_LOCK:
        for k in [k for k in _COLLECTED if key is None or k[0] == key]:
            del _COLLECTED[k]


class TestingSinkParams(Params):
    key: str = restart("", description="collected(key, topic) reads it back (default: stage id)")
    streams: list[str] = restart(
        [], description="topics to collect, one input port each (empty: the 'input' port)"
    )


class TestingSink(SinkStage):
    """Keeps a copy of every batch it receives.

    In Python: ``TestingSink(out)`` appends to ``out`` (a list the test owns). From config (type
    ``testing_sink``): collects under its ``key``, read back with :func:`collected`.
    """

    __test__ = False
    type_name = "testing_sink"
    Params = TestingSinkParams
    inputs = {"input": Port(None, "test.sink")}

    def __init__(
        self,
        out: list | Params | None = None,
        *,
        stage_id: str = "sink",
        topic: str | None = None,
        topics: dict[str, str] | None = None,
        key: str | None = None,
    ) -> None:
        params = out if isinstance(out, Params) else None
        self.out = None if isinstance(out, Params) else out
        if params is None:
            params = TestingSinkParams(key=key or stage_id)
        topics = topics or ({"input": topic} if topic else None)
        super().__init__(params, stage_id=stage_id, topics=topics)
        self.key = self.params.key or self.stage_id
        self.offsets: list[int] = []

    @classmethod
    def ports(cls, params: TestingSinkParams):
        if params.streams:
            return {t: Port(None, t) for t in params.streams}, {}
        return dict(cls.inputs), {}

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        copy = batch.copy()
        self.offsets.append(offset)
        if self.out is not None:
            self.out.append(copy)
            return
        topic = self.input_topics[port]
        with _COLLECTED_LOCK:
            _COLLECTED.setdefault((self.key, topic), []).append((offset, copy))


# -- fake clock ------------------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves: ``time()``, ``time_ns()``, ``monotonic()``, ``monotonic_ns()``,
    ``perf_counter()``, ``sleep(secs)`` (advances instead of waiting) and ``advance(secs=, ns=)``.

    ``with clock.patch("hftagg.builtins.sources.simulator.stages"):`` makes those modules' ``time``
    this clock for the block (only modules that ``import time``). Any attribute it does not
    define falls through to the real ``time`` module.
    """

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._ns = int(start_ns)
        self._lock = threading.Lock()

    def advance(self, secs: float = 0.0, *, ns: int = 0) -> int:
        """Move the clock forward; returns the new ``time_ns()``."""
        step = int(round(secs * 1e9)) + int(ns)
        if step < 0:
            raise ValueError(f"FakeClock.advance: {secs=} {ns=} would move the clock back")
        with self._lock:
            self._ns += step
            return self._ns

    def time_ns(self) -> int:
        return self._ns

    def time(self) -> float:
        return self._ns / 1e9

    monotonic_ns = perf_counter_ns = time_ns
    monotonic = perf_counter = time

    def sleep(self, secs: float) -> None:
        self.advance(max(0.0, secs))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @contextlib.contextmanager
    def patch(self, *modules: str | ModuleType) -> Iterator[FakeClock]:
        """Make ``module.time`` this clock inside the block, for each module given."""
        swapped = []
        try:
            for module in modules:
                mod = importlib.import_module(module) if isinstance(module, str) else module
                if getattr(mod, "time", None) is not _time:
                    raise ValueError(
                        f"FakeClock.patch: {mod.__name__} has no 'import time' to replace"
                    )
                mod.time = self  # type: ignore[attr-defined]
                swapped.append(mod)
            yield self
        finally:
            for mod in swapped:
                mod.time = _time  # type: ignore[attr-defined]


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
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``stages`` until every source is exhausted and everything drained; return the summary.

    ``runtime``: more ``[runtime]`` keys for a threaded run, e.g. ``{"threading": "inline"}`` or
    ``{"wait": "busy_spin"}``."""
    if wire:
        _wire_linear(stages)
    host = host or _host()
    graph = graph_from_stages(stages, host)
    if not threaded:  # one thread: a ring must hold what a source batch produces before it drains
        largest = max(
            (len(b) for s in stages if isinstance(s, TestingSource) for b in s.batches), default=0
        )
        ring_capacity = max(ring_capacity, 4 * largest)
    section = RuntimeSection(
        max_batch=max_batch,
        ring_capacity=min(ring_capacity, 1 << 26),
        drain_timeout_secs=timeout_secs,
        **(runtime or {}),
    )
    pipeline = Pipeline(graph, section, host=host, telemetry=telemetry)
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


def run_stage(
    stage: Stage,
    inputs: np.ndarray | dict[str, np.ndarray | list[np.ndarray]],
    *,
    splits: int | None = None,
    max_split: int = 64,
    max_batch: int = 4096,
    host: PluginHost | None = None,
) -> dict[str, np.ndarray]:
    """Run one stage on ``inputs`` through the real runtime; returns ``{output port: records}``.

    ``inputs``: one array (a single-input stage) or ``{port: array or list of batches}``.
    ``splits``: a seed -- cut each input array into random batches of 1..``max_split`` records.
    Ports that produced nothing map to an empty array of their schema.
    """
    host = host or _host()
    if not isinstance(inputs, dict):
        if len(stage.input_topics) != 1:
            raise ValueError(
                f"stage {stage.stage_id!r} has input ports {sorted(stage.input_topics)}; "
                f"pass inputs as {{port: records}}"
            )
        inputs = {next(iter(stage.input_topics)): inputs}
    unknown = set(inputs) - set(stage.input_topics)
    if unknown:
        raise ValueError(
            f"stage {stage.stage_id!r} has no input port(s) {sorted(unknown)}; "
            f"its ports: {sorted(stage.input_topics)}"
        )
    in_ports, out_ports = type(stage).ports(stage.params)
    sources: list[Stage] = []
    for port, data in inputs.items():
        if isinstance(data, np.ndarray):
            batches = random_splits(data, splits, max_split) if splits is not None else [data]
        else:
            batches = list(data)
        schema = in_ports[port].schema
        if schema is None:
            first = batches[0] if batches else None
            schema = host.schemas.by_dtype(first.dtype).key if first is not None else None
        sources.append(
            TestingSource(
                batches, schema=schema, stage_id=f"in_{port}", topic=stage.input_topics[port]
            )
        )
    outs: dict[str, list] = {port: [] for port in stage.output_topics}
    sinks = [
        TestingSink(outs[port], stage_id=f"out_{port}", topic=topic)
        for port, topic in stage.output_topics.items()
    ]
    run_pipeline([*sources, stage, *sinks], wire=False, max_batch=max_batch, host=host)
    result = {}
    for port, chunks in outs.items():
        if chunks:
            result[port] = np.concatenate(chunks)
        else:
            schema = out_ports[port].schema
            result[port] = host.schemas.get(schema).empty(0) if schema else np.empty(0)
    return result
