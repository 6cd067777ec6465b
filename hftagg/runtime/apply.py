"""Applying a validated new graph to a running pipeline, at a batch boundary, all or nothing.

1. Prepare, touching nothing that runs: open every added stage and every replacement of a core
   stage, and hand each replacement its predecessor's state (``restore(old.snapshot())``;
   skipped with a note if the new code refuses it). A failure closes what was opened.
2. Park the threads the change touches at their next batch boundary: affected sources first,
   then the core thread, then affected sinks (so nobody waits on a parked thread). A thread
   that does not get there in time makes the change refused; everything resumes as it was.
3. Swap while parked, fallible steps first so a failure can be undone: live parameters
   (``reconfigure``), then replaced sources and sinks (the old one is closed before the new one
   opens, since they may share an address; if the new one fails the old one is reopened).
   Then the infallible part: replaced stages take over their predecessors' ring cursors, so no
   record is skipped or processed twice; added stages read from the next record; removed ones
   are detached.
4. Start the new source/sink threads, then resume the parked ones, then close retired
   instances. Starting them first matters: the core thread ends when every source thread has
   ended, so it must never run while a replaced source's successor is not yet there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hftagg.errors import ApplyError
from hftagg.runtime.diff import Change
from hftagg.runtime.graph import Graph, Node
from hftagg.runtime.pipeline import Pipeline, Worker
from hftagg.runtime.rings import read_topics
from hftagg.stages.base import StageContext

__all__ = ["Applied", "ApplyError", "apply_changes"]

PARK_TIMEOUT_SECS = 5.0


@dataclass
class Applied:
    changes: list[str]
    notes: list[str] = field(default_factory=list)
    #: stage id -> {port: stream offset of the first record processed under the new config}
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    pause_secs: float = 0.0


def _close_quietly(node: Node) -> None:
    try:
        node.stage.close()
    except Exception:
        pass


def _carry_state(change: Change, state: object, notes: list[str]) -> None:
    if state is None or change.old.stage.type_name != change.new.stage.type_name:
        return
    try:
        change.new.stage.restore(state)
    except Exception as exc:  # the new version does not accept the old state
        notes.append(
            f"{change.stage_id}: new version refused the old state ({exc}); it starts fresh"
        )


class _Transaction:
    def __init__(self, pipeline: Pipeline, graph: Graph, plan: list[Change]) -> None:
        self.pipeline = pipeline
        self.graph = graph
        self.plan = plan
        base = pipeline.context()
        self.ctx = StageContext(
            pipeline.max_batch,
            dict(graph.topics),
            base.transports,
            base.telemetry,
            base.codecs,
            durable_offsets=base.durable_offsets,  # a stage added live keys rows the same way
        )
        self.applied = Applied([c.describe() for c in plan if c.action != "keep"])
        self.opened: list[Node] = []
        self.parked: list[Worker] = []
        self.reconfigured: list[tuple[Change, object]] = []
        self.io_swapped: list[tuple[Change, dict[str, int], object]] = []

    def of(self, *actions: str) -> list[Change]:
        return [c for c in self.plan if c.action in actions]

    # -- 1. prepare -------------------------------------------------------------------------

    def prepare(self) -> None:
        try:
            for change in self.of("add", "replace"):
                if change.action == "replace" and change.new.role != "core":
                    continue  # opened in the swap, after its predecessor let go of its address
                change.new.stage.open(self.ctx)
                self.opened.append(change.new)
        except Exception as exc:
            self.abort()
            raise ApplyError(f"stage {change.stage_id!r} could not start: {exc}") from exc

    # -- 2. park ----------------------------------------------------------------------------

    def park(self) -> None:
        p = self.pipeline
        touched = {
            p.worker_name(c.old)
            for c in self.of("replace", "remove", "reconfigure")
            if c.old.role != "core"
        }
        order = [w for n, w in p.workers.items() if n in touched and n.startswith("source:")]
        order.append(p.workers["core"])
        order += [w for n, w in p.workers.items() if n in touched and n.startswith("sink:")]
        for worker in order:
            if not worker.park(PARK_TIMEOUT_SECS):
                # Withdraw the request from the late thread too: left standing, it would park
                # at its next boundary with nobody to resume it, and the pipeline would freeze.
                worker.unpark()
                self.resume()
                self.abort()
                busy = ApplyError(
                    f"thread {worker.name!r} did not reach a batch boundary within "
                    f"{PARK_TIMEOUT_SECS:g}s (one batch still running: a slow stage, a first "
                    f"batch compiling, or a full lossless ring); change not applied, save the "
                    f"file again to retry"
                )
                busy.retryable = True
                raise busy
            self.parked.append(worker)

    def resume(self) -> None:
        for worker in self.parked:
            worker.unpark()
        self.parked = []

    def abort(self) -> None:
        for node in self.opened:
            _close_quietly(node)

    # -- 3. swap ----------------------------------------------------------------------------

    def swap(self) -> list[Node]:
        try:
            self._reconfigure()
            self._swap_io()
        except Exception as exc:
            self._undo()
            self.abort()
            raise ApplyError(f"change not applied, previous config restored: {exc}") from exc
        return self._rewire()

    def _reconfigure(self) -> None:
        for change in self.of("reconfigure"):
            before = change.old.stage.params
            change.old.stage.reconfigure(change.new.stage.params)
            self.reconfigured.append((change, before))

    def _swap_io(self) -> None:
        p = self.pipeline
        for change in self.of("replace"):
            if change.old.role == "core":
                continue
            state = change.old.stage.snapshot()
            cursors = p.detach(change.old)
            p.retire(change.old, PARK_TIMEOUT_SECS)
            change.old.stage.close()
            self.io_swapped.append((change, cursors, state))
            change.new.stage.open(self.ctx)
            self.opened.append(change.new)
            _carry_state(change, state, self.applied.notes)

    def _undo(self) -> None:
        p = self.pipeline
        for change, before in self.reconfigured:
            change.old.stage.reconfigure(before)
        for change, cursors, state in self.io_swapped:
            change.old.stage.open(p.context())
            if state is not None:
                change.old.stage.restore(state)
            p.attach(change.old, cursors)
            if p._started:
                p.spawn(change.old)

    def _rewire(self) -> list[Node]:
        p = self.pipeline
        retired: list[Node] = []  # still open; io-swapped ones were closed in _swap_io
        swapped_cursors = {c.stage_id: cur for c, cur, _ in self.io_swapped}
        for change in self.of("keep", "reconfigure"):
            change.new.stage = change.old.stage  # the running instance stays
        read = read_topics(self.graph.nodes)
        for topic in read:
            p.ensure_ring(topic, self.graph.topics[topic], self.graph)
        for change in self.of("reconfigure"):
            self.applied.offsets[change.stage_id] = {
                port: r.cursor for port, r in p.readers.get(change.stage_id, [])
            }
        for change in self.of("replace"):
            if change.stage_id in swapped_cursors:
                cursors = swapped_cursors[change.stage_id]
            else:  # a core stage: its predecessor is parked, its state is final
                _carry_state(change, change.old.stage.snapshot(), self.applied.notes)
                cursors = p.detach(change.old)
                retired.append(change.old)
            keep = {
                port: c
                for port, c in cursors.items()
                if change.old.inputs.get(port) == change.new.inputs.get(port)
                and change.new.inputs.get(port) in p.rings
            }
            p.attach(change.new, keep)
            p.isolated.pop(change.stage_id, None)  # a new instance starts with a clean slate
            self.applied.offsets[change.stage_id] = keep
        for change in self.of("remove"):
            p.note_removed(change.old)
            p.detach(change.old)
            if change.old.role != "core":
                p.retire(change.old, PARK_TIMEOUT_SECS)
            retired.append(change.old)
        for change in self.of("add"):
            p.attach(change.new)
            p.note_added(change.new)
        p.graph = self.graph
        for topic in [t for t in p.rings if t not in read]:  # gone, or nobody reads it now
            del p.rings[topic]
        p.wire_bells()
        return retired


def apply_changes(pipeline: Pipeline, new_graph: Graph, plan: list[Change]) -> Applied:
    """Make ``pipeline`` run ``new_graph``; raise ApplyError (nothing changed) if it cannot."""
    tx = _Transaction(pipeline, new_graph, plan)
    if not tx.applied.changes:
        for change in tx.of("keep"):
            change.new.stage = change.old.stage
        pipeline.graph = new_graph
        return tx.applied
    tx.prepare()
    t0 = time.perf_counter()
    tx.park()
    try:
        retired = tx.swap()
        if pipeline._started:  # new threads run before the core resumes: it never sees a gap
            for change in tx.of("add", "replace"):
                if change.new.role != "core":
                    pipeline.spawn(change.new)
    finally:
        tx.resume()
    tx.applied.pause_secs = time.perf_counter() - t0
    for node in retired:
        _close_quietly(node)
    return tx.applied
