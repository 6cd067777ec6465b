"""What every sink into an external database shares: never block ingest, retry, spill, catch up.

A subclass (the ``postgres`` and ``mongodb`` sinks) implements four methods, all called from one
writer thread the base class owns (so a client that is not thread-safe, or an asyncio loop,
lives there alone)::

    connect() -> dict[str, int]   open the connection; per stream (topic), the next stream offset
                                  the backend already holds (0 or absent: none)
    send(port, records, offset)   write ``records`` as stream offsets offset, offset+1, ...
                                  atomically together with the stream's new held offset
                                  (one transaction / one ordered bulk write); raise on failure
    disconnect()                  drop the connection (also after a failure; must not raise)
    backend_name() -> str         "PostgreSQL postgres@/db" -- for status and error messages
    retryable(exc) -> bool        whether a failure is the backend being away (retry) or a
                                  refusal that retrying cannot fix (default: OSError is retried)

What the base class does:

- ``write`` (the sink's pipeline thread) only copies the batch into memory, up to
  ``memory_bytes``; past that it appends the batch to the local spill (``_spill.py``), and once
  anything is spilled every later batch goes there too, so the order is kept. ``write`` never
  waits for the backend, so ingest and the other sinks run at full rate during an outage.
- The writer thread sends the oldest batches first (consecutive batches of one port coalesced up
  to ``send_records``), memory before spill. A failed send drops the connection and retries the
  same records with capped exponential backoff and full jitter (``retry_initial_ms`` doubling up
  to ``retry_max_ms``), forever: the cursor stays where it was, nothing is skipped. A failure
  that is not ``retryable`` (the backend refuses the data, or a bug) stops the writer; the next
  ``write`` or ``flush`` raises it (crash-only) and the backlog is kept in the spill.
- Stream offsets and idempotency. Rows are keyed by (stream, offset). When the runtime says ring
  offsets are durable across runs (the write-ahead log is on: ``StageContext.durable_offsets``),
  the stored offset is the ring offset, and records below what the backend holds are trimmed
  before sending -- a replay after a crash writes nothing twice, at full COPY speed (no staging
  table, no ON CONFLICT: the held offset is committed in the same transaction as the rows, so
  it is exact). Without the log, offsets restart with every run, so the sink numbers records on
  after what the backend holds: the (stream, offset) key stays unique across runs.
- ``committed()`` (the write-ahead log's question): per port, the next ring offset not yet
  durably in the backend: the first one still in memory, spilled or being sent, else the end of
  what was sent, else (nothing written this run) what the backend held at open. A backend not
  reachable at open holds, as far as the sink knows, nothing: the runtime replays the whole log
  to it, and what the backend turns out to hold is trimmed when it connects.
- ``flush`` (the end of a run) waits up to ``flush_timeout_secs`` for the backlog to reach the
  backend; what is still unsent then is moved to the spill, said in a warning with the count and
  the folder, and sent first at the next start.
- ``counters()``: ``pending`` (records accepted, not yet in the backend), ``spilled`` (records
  that went to disk, since start), ``spill_bytes`` (on disk now), ``retries``, ``connected``
  (1/0), ``written`` (records in the backend, since start), ``dropped`` (spilled records lost to a corrupt spill file: logged with file and
  byte offset). Status lines, the summary, ``/metrics`` and ``hftagg top`` show them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hftagg.builtins.storage._spill import Spill, SpillFrame
from hftagg.errors import StageFailed
from hftagg.stages import Params, Port, SinkStage, StageContext, restart

__all__ = ["ExternalParams", "ExternalSink"]

log = logging.getLogger("hftagg.storage")


class ExternalParams(Params):
    """Parameters every external sink has (a subclass adds its own)."""

    topics: list[str] = restart(["md.trades"], min_length=1, description="topics to store")
    memory_bytes: int = restart(
        64 << 20, ge=1 << 16, description="unsent records kept in memory before spilling to disk"
    )
    spill_path: str = restart(
        "./storage/spill", description="folder for the spill (a sub-folder per stage id)"
    )
    retry_initial_ms: float = restart(100.0, gt=0, le=60_000, description="first retry delay")
    retry_max_ms: float = restart(5_000.0, gt=0, le=600_000, description="longest retry delay")
    send_records: int = restart(
        65_536, ge=1, le=16 << 20, description="most records written in one send"
    )
    connect_timeout_secs: float = restart(
        5.0, ge=0, le=600, description="at start, wait this long for the backend before running on"
    )
    flush_timeout_secs: float = restart(
        10.0,
        ge=0,
        le=3600,
        description="at stop, wait this long for the backlog to be sent (the pipeline stops "
        "waiting at runtime.drain_timeout_secs first)",
    )


class _Item:
    """A batch waiting in memory (or being sent): its port, first ring offset, records."""

    __slots__ = ("port", "offset", "records")

    def __init__(self, port: str, offset: int, records: np.ndarray) -> None:
        self.port, self.offset, self.records = port, offset, records


class ExternalSink(SinkStage):
    """Base of sinks into external databases; see the module docstring."""

    kind: ClassVar[str] = "storage"
    Params: ClassVar[type[Params]] = ExternalParams

    # -- what a subclass implements (called from the writer thread only) ----------------------

    def connect(self) -> dict[str, int]:
        raise NotImplementedError

    def send(self, port: str, records: np.ndarray, offset: int) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        """Drop the connection; must not raise."""

    def backend_name(self) -> str:
        return type(self).__name__

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    def cancel(self) -> None:
        """Make a ``send`` in progress return soon (called from another thread when the pipeline
        stops hard or the writer does not end at close; best effort, must not raise)."""

    # -- stage API -----------------------------------------------------------------------------

    @classmethod
    def ports(cls, params: ExternalParams) -> tuple[dict[str, Port], dict[str, Port]]:
        return {topic: Port(None, topic) for topic in params.topics}, {}

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self.durable = ctx.durable_offsets
        self.dtypes = {
            port: ctx.topic_schemas[topic].dtype
            for port, topic in self.input_topics.items()
            if topic in ctx.topic_schemas
        }
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._memory: deque[_Item] = deque()
        self._memory_bytes = 0
        self._memory_records = 0
        self._inflight: list[Any] = []  # what the writer is sending now
        self._inflight_records = 0
        self.spill = Spill(Path(p.spill_path) / self.stage_id, self.dtypes)
        if self.spill.records:
            log.warning(
                "stage %r: %d records left in the spill %s by an earlier run are sent first",
                self.stage_id, self.spill.records, self.spill.folder,
            )  # fmt: skip
        self._spilling = self.spill.records > 0
        self._held: dict[str, int] = {}  # stream -> next offset the backend holds
        self._sent_end: dict[str, int] = {}  # port -> ring offset after the last batch sent
        self._stop = threading.Event()  # the writer ends (close)
        self._interrupted = threading.Event()  # the pipeline stops hard
        self._first_connect = threading.Event()
        self.tally = {"spilled": 0, "retries": 0, "sent": 0}
        self.connected = False
        self.last_error = ""
        self._fatal: str | None = None
        self._writer = threading.Thread(
            target=self._run, name=f"hftagg-{self.stage_id}-writer", daemon=True
        )
        self._writer.start()
        self._first_connect.wait(p.connect_timeout_secs)
        if not self.connected and not self._fatal:
            log.warning(
                "stage %r: %s is not reachable (%s); running on: records are kept in memory, "
                "then spilled to %s, and sent when it is back",
                self.stage_id, self.backend_name(), self.last_error, self.spill.folder,
            )  # fmt: skip

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        """Queue ``batch`` (copied: the ring slot is reused); never waits for the backend."""
        if self._fatal:
            raise StageFailed(self._fatal)
        with self._lock:
            if not self._spilling and self._memory_bytes + batch.nbytes <= self.params.memory_bytes:
                self._memory.append(_Item(port, offset, batch.copy()))
                self._memory_bytes += batch.nbytes
                self._memory_records += len(batch)
            else:
                self._spilling = True
                self.spill.append(port, offset, batch)
                self.tally["spilled"] += len(batch)
            self._wake.notify()

    def flush(self) -> None:
        """Wait (up to ``flush_timeout_secs``) for the backlog to reach the backend; keep what
        is left in the spill for the next run, and say so."""
        deadline = time.monotonic() + self.params.flush_timeout_secs
        with self._lock:
            while self._backlog() and not self._interrupted.is_set() and not self._fatal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(min(remaining, 0.05))
            left = self._backlog()
            if left:
                self._keep_for_next_run()
                log.warning(
                    "stage %r: %s did not take %d records before the stop (%s); they are kept "
                    "in the spill %s and sent first at the next start",
                    self.stage_id, self.backend_name(), left, self.last_error or "still sending",
                    self.spill.folder,
                )  # fmt: skip
        if self._fatal:
            raise StageFailed(self._fatal)

    def interrupt(self) -> None:
        self._interrupted.set()
        with self._lock:
            self._wake.notify_all()
        if self._inflight_records:
            self._cancel_quietly()

    def _cancel_quietly(self) -> None:
        try:
            self.cancel()
        except Exception:  # best effort: the connection may be gone already
            log.debug("stage %r: cancel failed", self.stage_id, exc_info=True)

    def close(self) -> None:
        if not hasattr(self, "_writer"):
            return
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        self._writer.join(1.0)
        if self._writer.is_alive():  # stuck in a send (a server that hangs): cancel it
            self._cancel_quietly()
            self._writer.join(self.params.retry_max_ms / 1000 + 30)
        with self._lock:
            if self._backlog():
                self._keep_for_next_run()
            self.spill.close()

    def committed(self) -> dict[str, int] | None:
        """Per port: the next ring offset not yet durably in the backend (see module doc);
        ``None`` without durable offsets (ring offsets then mean nothing across runs)."""
        if not self.durable:
            return None
        with self._lock:
            out: dict[str, int] = {}
            pending = list(self._inflight) + list(self._memory)
            for item in pending:
                if item.port not in out or item.offset < out[item.port]:
                    out[item.port] = item.offset
            for port, offset in self.spill.first_offsets().items():
                if port not in out or offset < out[port]:
                    out[port] = offset
            for port, topic in self.input_topics.items():
                if port in out:
                    continue
                if port in self._sent_end:
                    out[port] = self._sent_end[port]
                elif self.connected:
                    out[port] = self._held.get(topic, 0)
            return out

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "pending": self._backlog(),
                "spilled": self.tally["spilled"],
                "spill_bytes": self.spill.bytes,
                "retries": self.tally["retries"],
                "connected": int(self.connected),
                "written": self.tally["sent"],
                "dropped": self.spill.lost_records,
            }

    # -- the writer thread ---------------------------------------------------------------------

    def _backlog(self) -> int:
        return self._memory_records + self.spill.records + self._inflight_records

    def _keep_for_next_run(self) -> None:
        """Move what is in memory to the front of the spill (under the lock: it is older than
        what was spilled), so it survives the stop and is sent first next time."""
        self.spill.prepend([(i.port, i.offset, i.records) for i in self._memory])
        self._memory.clear()
        self._memory_bytes = self._memory_records = 0

    def _run(self) -> None:
        delay = self.params.retry_initial_ms / 1000
        while not self._stop.is_set():
            try:
                if not self.connected:
                    self._connect()
                work = self._take()
                if work is None:
                    continue
                self._send(work)
                delay = self.params.retry_initial_ms / 1000
            except Exception as exc:  # the backend failed: back off, keep the cursor, retry
                if not self.retryable(exc):
                    self._refused(exc)
                    break
                self._failed(exc)
                # full jitter (AWS architecture blog): spread reconnects of many sinks
                self._stop.wait(random.uniform(0, delay))
                delay = min(delay * 2, self.params.retry_max_ms / 1000)
        self._disconnect()

    def _connect(self) -> None:
        held = self.connect()
        with self._lock:
            self._held = {k: int(v) for k, v in held.items()}
            self.connected = True
            self.last_error = ""
        self._first_connect.set()
        log.info("stage %r: connected to %s", self.stage_id, self.backend_name())

    def _refused(self, exc: Exception) -> None:
        """A failure retrying cannot fix: the writer ends; ``write``/``flush`` raise it."""
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        self._fatal = (
            f"stage {self.stage_id!r}: {self.backend_name()} refused a write ({first}); "
            f"retrying cannot fix this, so the stage stops; the {self._backlog()} records not "
            f"written are kept in the spill {self.spill.folder} for the next start\n"
            f"{traceback.format_exc()}"
        )
        log.error("%s", self._fatal)
        self._failed(exc, quiet=True)
        with self._lock:
            self._wake.notify_all()

    def _failed(self, exc: Exception, quiet: bool = False) -> None:
        with self._lock:
            was = self.connected
            self.connected = False
            self.last_error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            self.tally["retries"] += 1
            self._release_inflight()
        self._first_connect.set()
        if was and not quiet:
            log.warning(
                "stage %r: %s failed (%s); retrying with backoff, records are kept",
                self.stage_id, self.backend_name(), self.last_error,
            )  # fmt: skip
        self._disconnect()

    def _disconnect(self) -> None:
        try:
            self.disconnect()
        except Exception:  # a broken connection may fail to close: it is gone either way
            log.debug("stage %r: disconnect failed", self.stage_id, exc_info=True)

    def _take(self) -> list[tuple[str, list]] | None:
        """The oldest queued batches, up to ``send_records`` records, grouped per port (order
        kept within a port; a gap in offsets starts a new group): ``[(port, items)]``."""
        with self._lock:
            while not self._memory and not self.spill.records:
                if self._stop.is_set():
                    return None
                self._wake.wait(0.1)
            limit = self.params.send_records
            if self._memory:
                items = [self._memory.popleft()]
                count = len(items[0].records)
                while self._memory and count + len(self._memory[0].records) <= limit:
                    items.append(self._memory.popleft())
                    count += len(items[-1].records)
                self._memory_bytes -= sum(i.records.nbytes for i in items)
                self._memory_records -= sum(len(i.records) for i in items)
            else:
                items = self.spill.peek(limit)
            self._inflight = items
            self._inflight_records = sum(len(i.records) for i in items)
        groups: dict[str, list[list]] = {}
        for item in items:
            runs = groups.setdefault(item.port, [])
            last = runs[-1][-1] if runs else None
            if last is not None and item.offset == last.offset + len(last.records):
                runs[-1].append(item)
            else:
                runs.append([item])
        return [(port, run) for port, runs in groups.items() for run in runs]

    def _send(self, groups: list[tuple[str, list]]) -> None:
        for port, items in groups:
            records = (
                items[0].records if len(items) == 1 else np.concatenate([i.records for i in items])
            )
            self._send_run(port, items, records, items[0].offset)

    def _send_run(self, port: str, items: list, records: np.ndarray, offset: int) -> None:
        stream = self.input_topics[port]
        end = offset + len(records)
        held = self._held.get(stream, 0)
        if self.durable:
            if offset < held:  # a replay: the backend holds these already
                records = records[min(held - offset, len(records)) :]
                offset = held
            if len(records):
                self.send(port, records, offset)
            new_held = max(held, end)
        else:  # offsets restart each run: number on after what the backend holds
            self.send(port, records, held)
            new_held = held + len(records)
        with self._lock:
            self._held[stream] = new_held
            self._sent_end[port] = end
            self.tally["sent"] += len(records)
            done = {id(i) for i in items}
            self._inflight = [i for i in self._inflight if id(i) not in done]
            self._inflight_records = sum(len(i.records) for i in self._inflight)
            if isinstance(items[0], SpillFrame):
                self.spill.consume(items)
                if not self.spill.records:
                    self._spilling = False
            self._wake.notify_all()

    def _release_inflight(self) -> None:
        """A send failed: memory items go back to the front (spill frames were only peeked)."""
        if self._inflight and isinstance(self._inflight[0], _Item):
            self._memory.extendleft(reversed(self._inflight))
            self._memory_bytes += sum(i.records.nbytes for i in self._inflight)
            self._memory_records += sum(len(i.records) for i in self._inflight)
        self._inflight = []
        self._inflight_records = 0
