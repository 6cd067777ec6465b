"""Running a graph: one ring per topic, sources and sinks in their own threads, core stages in one.

Threads and their rings:

- each source runs in its own thread and is the single writer of its output rings;
- all core stages run in one thread, in topological order: one pass polls each input reader,
  processes what is there (smart batching: up to ``max_batch``, never waiting to fill) and
  publishes the outputs, so every stage sees every batch exactly once;
- each sink runs in its own thread, reading its rings and doing its I/O.

An idle thread waits on its bell with its wait strategy (:mod:`hftagg.runtime.waits`:
``blocking`` by default, ``yielding``, ``busy_spin``, ``sleeping``; per thread in
``[runtime.waits]``, pinned with ``[runtime.cpus]``). A publish rings the bells of the threads
that read that ring, so no thread polls on a timer while data waits; the timeout a loop passes
(``safety_net_secs``, 1 s) is only a backstop, since parking, stopping and every thread's end
ring the bells concerned too.

``threading = "inline"`` (lowest latency): no core thread. Each source thread, right after it
publishes a batch, runs the core pass and the sinks (except ``threaded_sinks``) until nothing is
left, under one lock shared by all sources -- a lock rather than one thread running all sources
round-robin, so a source keeps its own thread, wait strategy and CPU pinning, and a single
source (the latency case) never waits for another's turn. The lock holder processes every
batch waiting in the core's rings, whichever source published it: each stage still sees each
batch once, in topological order. Parking the core for a live change takes the lock (at a
batch boundary); a publish that finds its ring full runs the readers on its own thread
(``Ring.publish(on_full=...)``), since no other thread will; the last source loop to end drains
and flushes the inline sinks.

Per batch, the core pass walks a plan built once per wiring (stats, bound ``process``,
readers, an emitter binding the output rings): a batch costs ring operations and a few integer
updates, not dictionary lookups (``benchmarks/bench_runtime.py`` says where the rest goes).

Every thread passes a checkpoint between batches where it can be parked: that is the batch
boundary at which live changes are applied (see :mod:`hftagg.runtime.apply`).

Stopping drains: sources stop first, then the core thread processes everything still in its
rings, then sinks send everything still in theirs, then stages are closed. If draining takes
longer than ``drain_timeout_secs`` the pipeline stops hard and says how much was left.

A stage that raises stops the pipeline (crash-only): ``stop()`` re-raises it as
``StageFailed`` naming the thread and stage. A stage configured ``on_error = "isolate"`` is
fenced off instead: its input batch becomes dead letters and the rest runs on
(:mod:`hftagg.runtime.isolate`).
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
from hftagg.errors import BusError, HftaggError, StageFailed
from hftagg.runtime.graph import Graph, Node
from hftagg.runtime.isolate import FailureLog, dead_letters_for, describe
from hftagg.runtime.rings import core_to_core_topics, read_topics, ring_records
from hftagg.runtime.waits import (
    Bell,
    BlockingWait,
    check_threads,
    make_wait,
    pin_current_thread,
)
from hftagg.stages.base import SourceStage, StageContext

__all__ = ["NodeStats", "Pipeline", "StageFailed", "Worker"]

SAFETY_NET_SECS = 1.0  # a waiting thread looks again after this long even if nothing rang
SOURCE_POLL_SECS = 0.0005  # a source with nothing and no next_awake() is asked again after this


def _open_stage(node: Node, ctx: StageContext) -> None:
    """Open one stage; a failure becomes ``StageFailed`` naming the stage (one line when the
    stage raised an HftaggError, which already says what to fix; a traceback otherwise)."""
    try:
        node.stage.open(ctx)
    except HftaggError as exc:
        raise StageFailed(f"stage {node.id!r} ({node.stage.type_name}) cannot open: {exc}") from exc
    except Exception as exc:
        raise StageFailed(
            f"stage {node.id!r} ({node.stage.type_name}) cannot open:\n{traceback.format_exc()}"
        ) from exc


@dataclass
class NodeStats:
    records_in: int = 0
    batches_in: int = 0
    records_out: int = 0
    batches_out: int = 0
    busy_ns: int = 0
    dead_letters: int = 0  # records this stage wrote to dead-letter topics
    failures: int = 0  # batches it raised on while isolated (on_error = "isolate")


class Worker:
    """One thread's controls: its wake-up bell and wait strategy, a stop flag, and parking at
    batch boundaries. ``name`` is ``core``, ``source:<id>`` or ``sink:<id>``."""

    def __init__(self, name: str, wait: Any = None, cpus: list[int] | None = None) -> None:
        self.name = name
        self.bell = Bell()
        self.waiter = wait or BlockingWait()  # hftagg.runtime.waits: blocking, yielding, ...
        self.cpus = cpus or []
        self.stop = threading.Event()
        self.parked = threading.Event()
        self.resume = threading.Event()
        self.park_requested = False
        self.thread: threading.Thread | None = None

    def checkpoint(self) -> None:
        """Called by the thread between batches: wait here while a change is being applied."""
        if self.park_requested:
            self.parked.set()
            self.resume.wait()

    def park(self, timeout: float) -> bool:
        """Ask the thread to stop at its next batch boundary; True once it is there (or dead)."""
        if self.inline:
            return True  # no thread of its own: it runs while the core is held (inline mode)
        self.resume.clear()
        self.parked.clear()
        self.park_requested = True
        self.bell.set()
        deadline = time.monotonic() + timeout
        while not self.parked.wait(0.01):
            if not self.alive or time.monotonic() > deadline:
                return not self.alive
        return True

    def unpark(self) -> None:
        self.park_requested = False
        self.resume.set()

    #: a sink run inline by the source threads (``threading = "inline"``): never has a thread
    inline = False

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def thread_key(self) -> str:
        """How ``[runtime.waits]`` and ``[runtime.cpus]`` name this thread."""
        return self.name.partition(":")[2] or self.name

    @property
    def finished(self) -> bool:
        """Its thread ran and ended. A worker whose thread has not started yet (a source added or
        replaced by a live change, started just after the swap) is not finished."""
        return self.thread is not None and not self.thread.is_alive()


class _CoreLock(Worker):
    """Inline mode's core: no thread; the source threads run the core step under ``lock``.
    Parking it takes the lock (after the step in progress, at a batch boundary)."""

    def __init__(self, lock: threading.Lock, loops) -> None:
        super().__init__("core")
        self.lock = lock
        self._loops = loops  # how many source loops run the core step now
        self._held = False

    @property
    def alive(self) -> bool:
        """The core lives while a source loop runs it, or while a live change holds it (the
        old source may be gone and its replacement not started yet)."""
        return self._held or self._loops() > 0

    def park(self, timeout: float) -> bool:
        self._held = self.lock.acquire(timeout=timeout)
        return self._held

    def unpark(self) -> None:
        if self._held:
            self._held = False
            self.lock.release()


class Pipeline:
    """A built graph wired to rings, ready to ``start()``; or stepped by hand with ``step_core()``."""

    def __init__(
        self,
        graph: Graph,
        runtime: RuntimeSection | None = None,
        host: Any = None,
        telemetry: Any = None,
        durability: Any = None,
    ):
        self.graph = graph
        #: hftagg.runtime.durability.Durability when the write-ahead log is on, else None
        self.durability = durability
        #: sink id -> port -> the offset below which the sink gets nothing (durability: what it
        #: committed, or the live offset for a sink that does not take part)
        self.sink_floors: dict[str, dict[str, int]] = {}
        self.telemetry = telemetry  # hftagg.telemetry.Telemetry, or None: no per-batch cost
        self.runtime = runtime or RuntimeSection()
        self.host = host
        self.max_batch = self.runtime.max_batch
        self.rings: dict[str, Ring] = {}
        self._core_plan: list[tuple] = []
        self._plan_graph: Graph | None = None  # the graph _core_plan was made for
        self._emitters: dict[str, Any] = {}
        self.stats: dict[str, NodeStats] = {}
        self.readers: dict[str, list[tuple[str, Reader]]] = {}
        #: "inline": the source threads run the core step (under this lock) and the sinks
        self.inline = self.runtime.threading == "inline"
        self._core_lock = threading.Lock()
        self._in_core = False  # the lock holder runs the core step and sinks (inline mode)
        self._pumping: set[str] = set()  # inline sinks being pumped on the lock holder's stack
        self._inline_sinks: list[Node] = []
        self._inline_loops = 0  # source loops running (inline mode)
        self._loops_lock = threading.Lock()
        check_threads(self.runtime, [n.id for n in graph.sources], [n.id for n in graph.sinks])
        self.workers: dict[str, Worker] = {
            "core": _CoreLock(self._core_lock, lambda: self._inline_loops)
            if self.inline
            else self._worker("core")
        }
        #: longest a waiting thread sleeps without a ring: only a safety net (every publish,
        #: park, stop and thread end rings the bells of the threads concerned)
        self.safety_net_secs = SAFETY_NET_SECS
        self._takes_port: dict[str, bool] = {}
        self._stop_sources = threading.Event()
        self._hard_stop = threading.Event()
        self.failure: str | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.left_over = 0
        self.discarded = 0  # stage outputs a hard stop kept out of full rings
        #: stage id -> seconds since start when a live change added it
        self.added_at: dict[str, float] = {}
        #: stage id -> the error that isolated it (``on_error = "isolate"``)
        self.isolated: dict[str, str] = {}
        self._failure_log = FailureLog()
        #: stage id -> its summary entry, frozen when a live change removed it
        self.removed: dict[str, dict[str, Any]] = {}
        self._opened = False
        self._started = False
        #: seconds a publish may wait for space (None: forever, the threads make progress)
        self.publish_timeout: float | None = None
        for topic in read_topics(graph.nodes):
            self.ensure_ring(topic, graph.topics[topic])
        for node in graph.nodes:
            self.attach(node)
        self.wire_bells()

    # -- wiring (also used when a live change rebuilds part of the graph) -----------------------

    def ensure_ring(self, topic: str, schema, graph: Graph | None = None) -> Ring:
        """The ring of ``topic`` (made if missing), sized for ``graph`` (default: the running one)
        as :mod:`hftagg.runtime.rings` says."""
        ring = self.rings.get(topic)
        if ring is None or ring.dtype != schema.dtype:
            graph = graph or self.graph
            inner = topic in core_to_core_topics(graph.nodes, graph.producer)
            capacity = ring_records(self.runtime, schema.dtype.itemsize, inner)
            ring = self.rings[topic] = Ring(schema.dtype, capacity, name=topic)
            self._replan()
        return ring

    def ring_memory(self) -> dict[str, Any]:
        """What the rings take: per topic records, record size and bytes; the total; and the
        topics that have no ring because nobody reads them."""
        rings = {
            topic: {"records": r.capacity, "record_bytes": r.itemsize, "bytes": r._nbytes}
            for topic, r in sorted(self.rings.items())
        }
        return {
            "total_bytes": sum(r["bytes"] for r in rings.values()),
            "rings": rings,
            "unread_topics": sorted(set(self.graph.topics) - set(self.rings)),
        }

    def attach(self, node: Node, cursors: dict[str, int] | None = None) -> None:
        """Give ``node`` stats, readers (at ``cursors`` per port when given) and a worker."""
        self._replan()
        self.stats.setdefault(node.id, NodeStats())
        if node.role != "source":
            policy = node.spec.policy or getattr(node.stage, "input_policy", "lossless")
            readers = []
            for port, topic in node.inputs.items():
                start = (cursors or {}).get(port, "next")
                reader = self.rings[topic].subscribe(f"{node.id}:{port}", policy, start=start)
                readers.append((port, reader))
            self.readers[node.id] = readers
        if node.role == "core":
            self._takes_port[node.id] = type(node.stage).process_takes_port()
        else:
            name = self.worker_name(node)
            if name not in self.workers:
                self.workers[name] = self._worker(name, node)
            if node.role == "source":
                node.stage._bell = self.workers[name].bell  # SourceStage.wake() rings it

    def _worker(self, name: str, node: Node | None = None) -> Worker:
        """A worker with the wait strategy and CPUs ``[runtime]`` gives its thread."""
        key = node.id if node is not None else name
        worker = Worker(
            name,
            make_wait(self.runtime.waits.get(key, self.runtime.wait)),
            self.runtime.cpus.get(key),
        )
        worker.inline = node is not None and self._runs_inline(node)
        return worker

    def _runs_inline(self, node: Node) -> bool:
        """A sink that the source threads run (inline mode, not in ``threaded_sinks``)."""
        return self.inline and node.role == "sink" and node.id not in self.runtime.threaded_sinks

    def detach(self, node: Node) -> dict[str, int]:
        """Drop ``node``'s readers; returns their cursors per port (to hand to a successor)."""
        self._replan()
        cursors = {}
        for port, reader in self.readers.pop(node.id, []):
            cursors[port] = reader.cursor
            reader.ring.unsubscribe(reader)
        self._takes_port.pop(node.id, None)
        return cursors

    def wire_bells(self) -> None:
        """Point every ring's wake-ups at the threads that consume it (and only those)."""
        self._replan()
        for ring in self.rings.values():
            for worker in self.workers.values():
                ring.remove_waiter(worker.bell)
        self._inline_sinks = [n for n in self.graph.sinks if self._runs_inline(n)]
        if not self.inline:  # inline: the core runs right after its source publishes
            core_bell = self.workers["core"].bell
            for node in self.graph.core:
                for topic in node.inputs.values():
                    self.rings[topic].add_waiter(core_bell)
        for node in self.graph.sinks:
            if self._runs_inline(node):
                continue
            bell = self.workers[self.worker_name(node)].bell
            for topic in node.inputs.values():
                self.rings[topic].add_waiter(bell)

    @staticmethod
    def worker_name(node: Node) -> str:
        return f"{node.role}:{node.id}"

    def context(self) -> StageContext:
        return StageContext(
            max_batch=self.max_batch,
            topic_schemas=dict(self.graph.topics),
            transports=dict(self.host.transports) if self.host is not None else {},
            telemetry=self.telemetry,
            codecs=dict(self.host.codecs) if self.host is not None else {},
            durable_offsets=self.durability is not None,
        )

    # -- one step of each role (used by the threads and by hftagg.testing) -------------------

    def open(self) -> None:
        if not self._opened:
            ctx = self.context()
            for node in self.graph.nodes:
                _open_stage(node, ctx)
            if self.durability is not None:
                self.durability.prepare(self)
            self._opened = True

    def pump_source(self, node: Node) -> bool:
        """Take one batch from a source and publish it; False if it had nothing."""
        tel = self.telemetry
        if tel is not None and tel.sample():
            return self._pump_source_traced(node, tel)
        out = self._next_batch(node)
        if out is None:
            return False
        return self._emit(node, out) > 0

    def _next_batch(self, node: Node) -> Any:
        """A source's next batch; with durability, replayed or appended to the log first."""
        if self.durability is None:
            return node.stage.next_batch()
        return self.durability.next_batch(node, self)

    def _pump_source_traced(self, node: Node, tel) -> bool:
        t0 = time.time_ns()
        out = self._next_batch(node)
        if out is None:
            return False
        out = self._as_ports(node, out)
        first = next((b for b in out.values() if len(b)), None)
        if first is None:
            return False
        span = tel.start_span(
            f"receive {node.id}",
            None,
            t0,
            tel.batch_attributes(node.id, ",".join(node.outputs.values()), first),
        )
        self._mark_outputs(node, out, span, tel)
        n = self._emit(node, out)
        span.end()
        return n > 0

    def _mark_outputs(self, node: Node, out: dict, span, tel) -> None:
        """Remember the span for the ring ranges these batches will occupy (single writer)."""
        context = span.get_span_context()
        for port, batch in out.items():
            topic = node.outputs.get(port)
            ring = self.rings.get(topic) if topic is not None else None
            if ring is not None and len(batch):
                tel.mark(topic, ring.published, len(batch), context)

    def step_core(self) -> int:  # noqa: C901 - the per-batch path, kept in one frame
        """One pass over the core stages in topological order; returns records consumed."""
        plan = self._core_plan if self._plan_graph is self.graph else self._plan_core()
        max_batch = self.max_batch
        clock = time.perf_counter_ns
        tel = self.telemetry
        done = 0
        for node, stage_id, stats, process, takes_port, readers, emit in plan:
            for port, reader in readers:
                batch = reader.poll(max_batch)
                n = len(batch)
                if not n:
                    continue
                if tel is not None and tel.marks:
                    parent = tel.parent_of(reader.ring.name, reader.cursor, n)
                    if parent is not None:  # a sampled batch: traced, off the lean path
                        self._process_traced(node, takes_port, port, reader, batch, parent, tel)
                        done += n
                        continue
                t0 = clock()
                try:
                    out = process(batch, port) if takes_port else process(batch)
                except Exception as exc:
                    if node.on_error != "isolate":
                        raise
                    self._isolate(node, batch, reader.cursor, reader.ring.name, exc)
                    out = None
                elapsed = clock() - t0
                stats.busy_ns += elapsed
                if out is not None:
                    emit(out)
                if tel is not None:
                    tel.processed(stage_id, elapsed)
                reader.commit(n)
                stats.records_in += n
                stats.batches_in += 1
                done += n
        return done

    def _plan_core(self) -> list[tuple]:
        """What ``step_core`` needs per core stage, looked up once: rebuilt when the graph, a
        ring or a reader changes (a live change), never per batch."""
        self._emitters = {}
        self._core_plan = [
            (
                node,
                node.id,
                self.stats[node.id],
                node.stage.process,
                self._takes_port[node.id],
                tuple(self.readers[node.id]),
                self._emitter(node),
            )
            for node in self.graph.core
        ]
        self._plan_graph = self.graph
        return self._core_plan

    def _replan(self) -> None:
        """Forget the per-stage plans (after wiring changed)."""
        self._plan_graph = None
        self._emitters = {}

    def _process_traced(self, node, takes_port, port, reader, batch, parent, tel) -> None:
        """One sampled batch through a core stage, with its ``process`` span."""
        n = len(batch)
        stats = self.stats[node.id]
        wall0 = time.time_ns()
        t0 = time.perf_counter_ns()
        out = self._process(node, takes_port, port, reader, batch)
        elapsed = time.perf_counter_ns() - t0
        stats.busy_ns += elapsed
        span = tel.start_span(
            f"process {node.id}",
            parent,
            wall0,
            tel.batch_attributes(node.id, reader.ring.name, batch),
        )
        if out is not None:
            out = self._as_ports(node, out)
            self._mark_outputs(node, out, span, tel)
            self._emit(node, out)
        span.end()
        tel.processed(node.id, elapsed)
        reader.commit(n)
        stats.records_in += n
        stats.batches_in += 1

    def _process(self, node: Node, takes_port: bool, port: str, reader: Reader, batch) -> Any:
        try:
            return node.stage.process(batch, port) if takes_port else node.stage.process(batch)
        except Exception as exc:
            if node.on_error != "isolate":
                raise
            self._isolate(node, batch, reader.cursor, reader.ring.name, exc)
            return None

    def pump_sink(self, node: Node) -> int:
        """Hand what is waiting in a sink's rings to the sink; returns records written."""
        done = 0
        stats = self.stats[node.id]
        floors = self.sink_floors.get(node.id)
        for port, reader in self.readers[node.id]:
            offset = reader.cursor
            batch = reader.poll(self.max_batch)
            n = len(batch)
            if not n:
                continue
            if floors and port in floors:
                offset, batch = self._above_floor(node.id, port, offset, batch)
                if not len(batch):
                    reader.commit(n)
                    continue
            tel = self.telemetry
            try:
                if tel is not None:
                    self._write_observed(node, port, batch, offset, tel)
                else:
                    t0 = time.perf_counter_ns()
                    node.stage.write(batch, port, offset)
                    stats.busy_ns += time.perf_counter_ns() - t0
            except Exception as exc:
                if node.on_error != "isolate":
                    raise
                self._isolate(node, batch, offset, node.inputs[port], exc)
            reader.commit(n)
            stats.records_in += n
            stats.batches_in += 1
            done += n
        return done

    def _above_floor(self, node_id: str, port: str, offset: int, batch):
        """Durability: the part of ``batch`` at or above the sink's floor for ``port`` (what it
        already holds, or a replay it does not take part in, is not handed to it)."""
        floor = self.sink_floors[node_id][port]
        if offset + len(batch) >= floor:  # reached: no more checks for this port
            del self.sink_floors[node_id][port]
        if offset >= floor:
            return offset, batch
        skip = min(floor - offset, len(batch))
        return offset + skip, batch[skip:]

    def _write_observed(self, node: Node, port: str, batch, offset: int, tel) -> None:
        topic = node.inputs[port]
        parent = tel.parent_of(topic, offset, len(batch)) if tel.marks else None
        span = None
        if parent is not None:
            span = tel.start_span(
                f"deliver {node.id}",
                parent,
                time.time_ns(),
                tel.batch_attributes(node.id, topic, batch),
            )
            tel.set_current(span.get_span_context())
        t0 = time.perf_counter_ns()
        try:
            node.stage.write(batch, port, offset)
        finally:
            elapsed = time.perf_counter_ns() - t0
            if span is not None:
                tel.set_current(None)
                span.end()
        self.stats[node.id].busy_ns += elapsed
        tel.processed(node.id, elapsed)
        tel.delivered(node.id, batch)

    @staticmethod
    def _as_ports(node: Node, out: Any) -> dict:
        if isinstance(out, np.ndarray):
            if len(node.outputs) != 1:
                raise StageFailed(
                    f"stage {node.id!r} returned one array but has outputs {list(node.outputs)}; "
                    f"return a dict {{port: batch}}"
                )
            return {next(iter(node.outputs)): out}
        return out

    def _emit(self, node: Node, out: Any) -> int:
        """Publish a stage's output (one array, or ``{port: array}``); returns records out.

        Only the node's own emitter is (re)built here: a source's thread must not build the
        core stages' plan, which a live change may be rewiring at that moment (a removed core
        stage's entries are already gone while the graph still names it)."""
        emit = self._emitters.get(node.id)
        if emit is None:
            emit = self._emitter(node)  # every wiring change clears the emitters (_replan)
        return emit(out)

    def _emitter(self, node: Node):  # noqa: C901 - builds the per-batch emit below
        """``emit(out) -> records``: ``node``'s outputs with their rings, schemas and counters
        bound once (per wiring), so a batch costs a ring publish and a few integer updates."""
        emitters = self._emitters
        if node.id in emitters:
            return emitters[node.id]
        stats = self.stats[node.id]
        targets = self._targets(node)
        only = next(iter(node.outputs)) if len(node.outputs) == 1 else None
        hard_stop = self._hard_stop
        relieve = self._relieve if self.inline else None
        tel = self.telemetry
        ndarray = np.ndarray
        fast = fast_ring = fast_dtype = None
        if only is not None:
            _, ring, dtype, dead = targets[only]
            if ring is not None and not dead:
                fast, fast_ring, fast_dtype = ring.publish, ring, ring.dtype

        def emit(out: Any) -> int:  # noqa: C901 - the per-batch path, kept in one frame
            if fast and type(out) is ndarray and out.dtype is fast_dtype:
                # the usual case: one output port with a ring, the port's exact dtype
                n = len(out)
                if n:
                    first = fast(out, stop=hard_stop, timeout=self.publish_timeout, on_full=relieve)
                    if first + n != fast_ring._published:  # a hard stop cut it short
                        self.discarded += first + n - fast_ring._published
                    stats.records_out += n
                    stats.batches_out += 1
                return n
            if isinstance(out, ndarray):
                if only is None:
                    self._as_ports(node, out)  # raises, naming the ports to use
                items: Any = ((only, out),)
            else:
                items = out.items()
            total = 0
            for port, batch in items:
                target = targets.get(port)
                if target is None:
                    continue
                n = len(batch)
                if not n:
                    continue
                topic, ring, dtype, dead = target
                if ring is None:  # nobody reads this topic: counted as records out, not kept
                    if getattr(batch, "dtype", None) != dtype:
                        raise StageFailed(self._wrong_dtype(node, port, topic, batch))
                else:
                    try:
                        first = ring.publish(
                            batch, stop=hard_stop, timeout=self.publish_timeout, on_full=relieve
                        )
                    except BusError as exc:
                        if getattr(batch, "dtype", None) == ring.dtype:
                            raise
                        raise StageFailed(self._wrong_dtype(node, port, topic, batch)) from exc
                    missing = first + n - ring._published
                    if missing > 0:  # a hard stop returned from a full ring early
                        self.discarded += missing
                if dead:
                    stats.dead_letters += n
                    if tel is not None:
                        tel.dead_lettered(topic, batch)
                stats.records_out += n
                stats.batches_out += 1
                total += n
            return total

        emitters[node.id] = emit
        return emit

    def _targets(self, node: Node) -> dict[str, tuple]:
        """Per output port: its topic, ring (None: nobody reads it), dtype, dead-letter flag."""
        targets = {}
        for port, topic in node.outputs.items():
            schema = self.graph.topics[topic]
            targets[port] = (
                topic,
                self.rings.get(topic),
                schema.dtype,
                schema.name == "dead_letter",
            )
        return targets

    def _wrong_dtype(self, node: Node, port: str, topic: str, batch: Any) -> str:
        """The message for a stage whose output batch does not have its port's schema."""
        schema = self.graph.topics[topic]
        type_name = node.stage.type_name
        origin = self.host.plugin_of_stage(type_name) if self.host is not None else "its plugin"
        got = getattr(batch, "dtype", type(batch).__name__)
        return (
            f"stage {node.id!r} (type {type_name!r}, from {origin}) returned a batch of dtype "
            f"{got} on output port {port!r}, which carries schema {schema.key} to topic "
            f"{topic!r}; build its output with that schema (e.g. schemas.get({schema.key!r})"
            f".empty(n)) or declare the port with the schema it produces"
        )

    def _isolate(self, node: Node, batch, offset: int, topic: str, exc: Exception) -> None:
        """``on_error = "isolate"``: the batch becomes dead letters, the stage is marked failed."""
        stats = self.stats[node.id]
        stats.failures += 1
        self.isolated[node.id] = f"{describe(exc)} ({stats.failures} failed batches)"
        dead = dead_letters_for(batch, offset, topic, exc)
        error_topic = node.error_topic
        ring = self.rings.get(error_topic)
        self._failure_log.failed(
            node.id,
            exc,
            stats.failures,
            f"its input batch ({len(batch)} records of {topic}) goes to {error_topic}"
            if ring is not None
            else f"its input batch ({len(batch)} records of {topic}) is counted as dead "
            f"letters (no ring for {error_topic})",
        )
        if ring is not None:
            ring.publish(
                dead,
                stop=self._hard_stop,
                timeout=self.publish_timeout,
                on_full=self._relieve if self.inline else None,
            )
        stats.dead_letters += len(dead)
        if self.telemetry is not None:
            self.telemetry.dead_lettered(error_topic, dead)

    def backlog(self, node_id: str) -> int:
        return sum(r.backlog() for _, r in self.readers.get(node_id, []))

    def drops(self, node_id: str) -> int:
        """Records skipped by lossy readers, plus what a sink says it could not deliver."""
        skipped = sum(r.skipped for _, r in self.readers.get(node_id, []))
        for node in self.graph.sinks:
            if node.id == node_id:
                skipped += node.stage.counters().get("dropped", 0)
        return skipped

    def total_backlog(self, nodes: list[Node]) -> int:
        return sum(self.backlog(n.id) for n in nodes)

    # -- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        self.open()
        if self.durability is not None:
            self.durability.start()
        self.started_at = time.monotonic()
        self._started = True
        for node in self.graph.sources:
            self.spawn(node)
        if not self.inline:
            self._spawn_worker(self.workers["core"], self._core_loop)
        for node in self.graph.sinks:
            self.spawn(node)
        if self.host is not None:
            self.host.pm.hook.hftagg_pipeline_started(pipeline=self)

    def spawn(self, node: Node) -> None:
        """Start the thread of a source or sink node."""
        worker = self.workers[self.worker_name(node)]
        if worker.inline:
            return  # run by the source threads
        loop = self._source_loop if node.role == "source" else self._sink_loop
        self._spawn_worker(worker, loop, node)

    def _spawn_worker(self, worker: Worker, loop, *args) -> None:
        worker.stop.clear()
        worker.thread = threading.Thread(
            target=self._guard,
            args=(worker, loop, *args),
            name=f"hftagg-{worker.name}",
            daemon=True,
        )
        worker.thread.start()

    def retire(self, node: Node, timeout: float) -> None:
        """Stop a (parked) source or sink thread and forget its worker."""
        worker = self.workers.pop(self.worker_name(node), None)
        if worker is None:
            return
        worker.stop.set()
        worker.unpark()
        worker.bell.set()
        if worker.thread is not None:
            worker.thread.join(timeout)

    def _guard(self, worker: Worker, loop, *args) -> None:
        try:
            if worker.cpus:
                pin_current_thread(worker.cpus)
            loop(worker, *args)
        except BaseException:
            if self.failure is None:
                self.failure = f"{worker.name} failed:\n{traceback.format_exc()}"
            self._stop_sources.set()
            self._hard_stop.set()
        finally:  # whoever waits for this thread to end (the core, a sink) looks again now
            for other in list(self.workers.values()):
                other.bell.set()

    def _source_workers(self) -> list[Worker]:
        return [w for name, w in list(self.workers.items()) if name.startswith("source:")]

    def _sources_done(self) -> bool:
        """Every source thread has ended (none is running or about to be started)."""
        return all(w.finished for w in self._source_workers())

    def _source_loop(self, worker: Worker, node: Node) -> None:
        if not self.inline:
            self._run_source(worker, node)
            return
        with self._loops_lock:
            self._inline_loops += 1
        drain = False
        try:
            self._run_source(worker, node)
            # retired by a live change (the core is parked then): the others carry on
            drain = not worker.stop.is_set() or self._stop_sources.is_set()
        finally:
            self._inline_exit(drain)

    def _run_source(self, worker: Worker, node: Node) -> None:
        stage = node.stage
        bell, wait = worker.bell, worker.waiter.wait
        stop, stop_sources = worker.stop, self._stop_sources
        inline = self.inline
        while not (stop.is_set() or stop_sources.is_set()):
            if worker.park_requested:
                worker.checkpoint()
                if stop.is_set():
                    return
            bell.clear()
            try:
                pumped = self.pump_source(node)
            except Exception as exc:
                if node.on_error != "isolate":
                    raise
                self.stats[node.id].failures += 1
                self.isolated[node.id] = describe(exc)
                self._failure_log.failed(node.id, exc, 1, "this source stops")
                return
            if pumped:
                if inline:
                    self._inline_step()
                continue
            if stage.exhausted:
                return
            wake = stage.next_awake()
            delay = SOURCE_POLL_SECS if wake is None else wake - time.monotonic()
            if delay > 0:
                wait(bell, min(delay, self.safety_net_secs))

    # -- inline mode: the source threads run the core step and the inline sinks ---------------

    def _inline_step(self) -> int:
        """Run the core stages and the inline sinks until nothing is left (inline mode).

        Several source threads serialise here on one lock: whoever holds it processes every
        batch waiting in the core's rings, whichever source published it, so each stage still
        sees each batch once, in topological order, and no source waits long for another."""
        with self._core_lock:
            return self._drain_inline()

    def _drain_inline(self) -> int:
        done = 0
        hard_stop = self._hard_stop
        self._in_core = True
        try:
            while not hard_stop.is_set():
                work = self.step_core() + self._pump_inline_sinks()
                if not work:
                    break
                done += work
        finally:
            self._in_core = False
        return done

    def _pump_inline_sinks(self) -> int:
        """Each inline sink once, except one already being pumped further up this thread's
        stack (re-entering it would hand it its uncommitted batch a second time)."""
        done = 0
        busy = self._pumping
        for sink in self._inline_sinks:
            if sink.id in busy:
                continue
            busy.add(sink.id)
            try:
                done += self.pump_sink(sink)
            finally:
                busy.discard(sink.id)
        return done

    def _relieve(self) -> int:
        """A publish found its ring full (inline mode): make room on this thread, since no
        other thread will. Inside the core step only the inline sinks can be run (running the
        core again there would hand a stage a batch it is still processing)."""
        if self._in_core:
            return self._pump_inline_sinks()
        return self._inline_step()

    def _inline_exit(self, drain: bool) -> None:
        """A source loop ends (inline mode): with ``drain`` (it stopped or ran out, rather than
        failed or was retired by a live change while the core is parked), process what is left;
        the last loop to end flushes the inline sinks."""
        try:
            if drain:
                self._inline_step()
        finally:
            with self._loops_lock:
                self._inline_loops -= 1
                last = self._inline_loops == 0
            if last and drain:
                with self._core_lock:
                    for sink in self._inline_sinks:
                        sink.stage.flush()

    def _core_done(self) -> bool:
        """The core stages will write nothing more: the core thread ended, or (inline mode)
        every source loop, which runs the core step, has."""
        return not self.workers["core"].alive and (not self.inline or self._sources_done())

    def _core_loop(self, worker: Worker) -> None:
        bell, wait = worker.bell, worker.waiter.wait
        hard_stop = self._hard_stop
        while not hard_stop.is_set():
            if worker.park_requested:
                worker.checkpoint()
            bell.clear()
            if self.step_core():
                continue
            if self._sources_done() and not self.total_backlog(self.graph.core):
                break  # every source stopped or ran out, and everything is processed
            wait(bell, self.safety_net_secs)

    def _sink_loop(self, worker: Worker, node: Node) -> None:
        bell, wait = worker.bell, worker.waiter.wait
        hard_stop, stop = self._hard_stop, worker.stop
        try:
            while not (hard_stop.is_set() or stop.is_set()):
                if worker.park_requested:
                    worker.checkpoint()
                    if stop.is_set():
                        return
                bell.clear()
                if self.pump_sink(node):
                    continue
                if self._core_done() and self._writers_done(node) and not self.backlog(node.id):
                    break
                wait(bell, self.safety_net_secs)
        finally:
            node.stage.flush()

    def _writers_done(self, node: Node) -> bool:
        """No sink still runs that writes to ``node``'s inputs (an isolated sink writes its
        dead letters from its own thread, possibly after the core thread has ended)."""
        for topic in node.inputs.values():
            writer = self.graph.producer.get(topic)
            worker = self.workers.get(f"sink:{writer}") if writer != node.id else None
            if worker is not None and worker.alive:
                return False
        return True

    def stop(self, drain: bool = True) -> dict[str, Any]:
        """Stop sources, drain (unless ``drain=False``), close stages; return the summary."""
        self._stop_sources.set()
        if not drain:
            self._hard_stop.set()
            self._interrupt_sinks()
        for worker in self.workers.values():
            worker.bell.set()
        self._join_all(time.monotonic() + self.runtime.drain_timeout_secs)
        if self.running:  # the drain timed out: stop hard, say how much was left
            self._hard_stop.set()
            self._interrupt_sinks()
            for worker in list(self.workers.values()):
                worker.bell.set()
            self._join_all(time.monotonic() + 1.0)
            # after the join: a batch a sink was blocked on is its own (counted as dropped)
            self.left_over = self.total_backlog(self.graph.core + self.graph.sinks)
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
        if self.durability is not None:
            self.durability.close()
            # closing takes the last checkpoint and the last release: the summary says so
            summary["durability"] = self.durability.summary()
        if self.failure:
            raise StageFailed(self.failure)
        return summary

    def _interrupt_sinks(self) -> None:
        """Make sinks blocked in I/O (a full push queue) return, counting what they drop."""
        for node in self.graph.sinks:
            node.stage.interrupt()

    def _join_all(self, deadline: float) -> None:
        for worker in list(self.workers.values()):
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> bool:
        return any(w.alive for w in list(self.workers.values()))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every source is exhausted and everything drained; True if it finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.stopped_at or time.monotonic()) - self.started_at

    def note_added(self, node: Node) -> None:
        """A live change added ``node`` (the summary says when)."""
        self.removed.pop(node.id, None)
        self.added_at[node.id] = self.elapsed()

    def note_removed(self, node: Node) -> None:
        """A live change is removing ``node``: keep its summary entry (call before detaching)."""
        elapsed = self.elapsed()
        entry = self._stage_summary(node, elapsed)
        entry["removed_secs"] = elapsed
        entry["state"] = "removed"
        self.removed[node.id] = entry

    def _stage_summary(self, node: Node, elapsed: float) -> dict[str, Any]:
        s = self.stats[node.id]
        records = s.records_out if node.role == "source" else s.records_in
        batches = s.batches_out if node.role == "source" else s.batches_in
        added = self.added_at.get(node.id)
        active = elapsed - (added or 0.0)
        entry = {
            "type": node.stage.type_name,
            "role": node.role,
            "state": "running",
            "records": records,
            "batches": batches,
            "mean_batch": records / batches if batches else 0.0,
            "records_per_sec": records / active if active > 0 else 0.0,
            "records_in": s.records_in,
            "records_out": s.records_out,
            "busy_secs": s.busy_ns / 1e9,
            "backlog": self.backlog(node.id),
            "drops": self.drops(node.id),
            "dead_letters": s.dead_letters,
            "failures": s.failures,
        }
        if added is not None:
            entry["added_secs"] = added
        if node.role == "sink":
            entry.update(node.stage.counters())
        elif node.role == "source" and isinstance(node.stage, SourceStage):
            progress = node.stage.progress()
            if progress:
                entry["progress"] = progress
            metrics = getattr(node.stage, "metrics", None)  # e.g. a WebSocket source's state
            if callable(metrics):
                entry.update(metrics())
        if node.id in self.isolated:
            entry["state"] = "failed"
            entry["error"] = self.isolated[node.id]
        return entry

    def summary(self) -> dict[str, Any]:
        """Per stage id: counts and rates; stages a live change removed are listed too, marked
        ``state = "removed"`` with ``removed_secs`` (and ``added_secs`` for added ones)."""
        elapsed = self.elapsed()
        stages = {node.id: self._stage_summary(node, elapsed) for node in self.graph.nodes}
        for stage_id, entry in self.removed.items():
            stages.setdefault(stage_id, dict(entry))
        out = {
            "elapsed_secs": elapsed,
            "left_over": self.left_over,
            "discarded": self.discarded,
            "stages": stages,
        }
        if self.durability is not None:
            out["durability"] = self.durability.summary()
        return out
