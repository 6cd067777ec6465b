"""The in-process ring bus: one preallocated ring of records per topic (the Disruptor pattern).

One writer publishes batches of records into a power-of-two ring; any number of readers, each
owned by one thread, follow it with their own cursor. Everything is per batch: no Python work
is done per record.

Stream offsets: every record published gets the next integer offset (0, 1, 2, ...); record
``s`` lives in slot ``s & (capacity - 1)``. The ring keeps three plain-int counters:

- ``_claimed``: the writer has reserved every offset below it. It is raised *before* data is
  copied in, so a lossy reader that read it after copying knows what may have been overwritten.
- ``_published``: every offset below it is fully written. It is raised *after* the data copy,
  so a reader never sees a half-written record.
- each reader's ``cursor``: the next offset that reader will read.

Policies decide what a slow reader costs. A ``LOSSLESS`` reader holds the writer back (the
writer never reserves past ``min(lossless cursors) + capacity``): backpressure. A ``DROP_OLDEST``
or ``LATEST_ONLY`` reader never holds the writer back; it copies records out and re-checks
``_claimed`` afterwards (seqlock-style) to drop anything the writer lapped meanwhile, counting
every record it never delivered in ``skipped``.

Cursors are Python ints: under the GIL a single attribute load or store is atomic and
sequentially consistent, which is all the protocol needs. A lock is taken only to reserve
space (one uncontended acquire per publish) and to (un)subscribe, so that a reader starting at
``"earliest"`` or at an explicit offset is never overtaken by a write already in flight.
"""

from __future__ import annotations

import enum
import mmap
import operator
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hftagg.errors import BusError, BusTimeout

__all__ = ["Policy", "Reader", "Ring"]

_STOP_POLL_SECS = 0.005  # how often a blocked publish looks at its ``stop`` event
_SPINS = 2  # GIL-yielding re-checks before a blocked writer sleeps on its event
_BYTES = np.dtype(np.uint8)
# Releases the GIL and the CPU. time.sleep(0) releases the GIL too, but re-taking it while a
# reader runs Python waits out the whole switch interval (5 ms); sched_yield measured ~25 us,
# and the threaded runtime at batch 1024 went from ~0.8x to ~1.3x of stepping (median of 9
# noisy runs each, benchmarks/bench_runtime.py).
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
_NUMPY_COPY_MAX = 500  # numpy releases the GIL for copies of more elements than this


def _ringer(event) -> Callable[[], object]:
    """What a publish calls for ``event``: ``event.set`` when setting is cheap (the runtime's
    Bell says so with ``cheap_set``), else set-if-not-set."""
    if getattr(event, "cheap_set", False):
        return event.set
    return lambda: event.is_set() or event.set()


class Policy(enum.StrEnum):
    """What a reader that falls behind costs: the writer's time, or records."""

    LOSSLESS = "lossless"  # the writer waits for this reader (backpressure)
    DROP_OLDEST = "drop_oldest"  # overwritten records are skipped and counted
    LATEST_ONLY = "latest_only"  # each poll returns only the newest record


class Reader:
    """One subscription to a ring: a cursor, a policy and a count of skipped records.

    Owned by one thread. Get one from :meth:`Ring.subscribe`.
    """

    __slots__ = (
        "name",
        "policy",
        "ring",
        "cursor",
        "skipped",
        "_lossless",
        "_polled",
        "_records",
        "_empty",
        "_mask",
        "_capacity",
    )

    def __init__(self, ring: Ring, name: str, policy: Policy, cursor: int):
        self.name = name
        self.policy = policy
        self.ring = ring
        self.cursor = cursor  # stream offset of the next record this reader will read
        self.skipped = 0  # records never delivered (lossy policies only)
        self._lossless = policy is Policy.LOSSLESS
        self._polled = 0
        self._records = ring._view
        self._empty = ring._view[:0]
        self._mask = ring.capacity - 1
        self._capacity = ring.capacity

    def __repr__(self) -> str:
        return (
            f"Reader({self.name!r}, ring={self.ring.name!r}, policy={self.policy.value}, "
            f"cursor={self.cursor}, skipped={self.skipped})"
        )

    def backlog(self) -> int:
        """Records published but not yet read, not counting what a lossy reader already lost."""
        ring = self.ring
        published = ring._published
        if self._lossless:
            return published - self.cursor
        return published - max(self.cursor, ring._claimed - self._capacity, 0)

    def poll(self, max_records: int) -> np.ndarray:
        """Return up to ``max_records`` available records, never waiting (empty if none).

        LOSSLESS: a read-only zero-copy view into the ring, valid until :meth:`commit`; at the
        end of the buffer it stops there and the rest comes on the next poll.
        DROP_OLDEST / LATEST_ONLY: a copy; the cursor advances at once and whatever was
        overwritten (or, for LATEST_ONLY, everything but the newest record) is added to
        ``skipped``.
        """
        if not self._lossless:
            return self._poll_lossy(max_records)
        cursor = self.cursor
        available = self.ring._published - cursor
        if available <= 0 or max_records <= 0:
            self._polled = 0
            return self._empty
        start = cursor & self._mask
        n = available if available < max_records else max_records
        to_end = self._capacity - start
        if to_end < n:
            n = to_end
        self._polled = n
        return self._records[start : start + n]

    def commit(self, n: int | None = None) -> None:
        """Advance past ``n`` records of the last poll (default: all); wakes a blocked writer."""
        if not self._lossless:
            return
        polled = self._polled
        if n is None:
            n = polled
        elif not 0 <= n <= polled:
            raise BusError(
                f"reader {self.name!r} on ring {self.ring.name!r}: commit({n}) but the last poll "
                f"returned {polled} records; commit between 0 and {polled}"
            )
        self.cursor += n
        self._polled = 0
        ring = self.ring
        if ring._writer_waiting:  # one Event.set per wait, not one per commit
            ring._writer_waiting = False
            ring._space.set()

    def read(self, max_records: int) -> np.ndarray:
        """Poll, copy and commit in one call: the records are the caller's to keep."""
        if not self._lossless:
            return self._poll_lossy(max_records)
        out = self.poll(max_records).copy()
        self.commit()
        return out

    def _poll_lossy(self, max_records: int) -> np.ndarray:
        ring = self.ring
        capacity = self._capacity
        published = ring._published
        cursor = max(self.cursor, ring._claimed - capacity)
        if self.policy is Policy.LATEST_ONLY and published - cursor > 1:
            cursor = published - 1
        self.skipped += cursor - self.cursor
        n = min(published - cursor, max_records)
        if n <= 0:
            self.cursor = cursor
            return self._empty
        out = np.empty(n, ring.dtype)
        raw = out.view(np.uint8)  # copy raw bytes, not field by field
        ring_bytes = ring._bytes
        size = ring.itemsize
        start = (cursor & self._mask) * size
        first = min(n * size, ring_bytes.nbytes - start)
        raw[:first] = ring_bytes[start : start + first]
        if n * size > first:
            raw[first:] = ring_bytes[: n * size - first]
        # Seqlock check: the writer reserves (raises _claimed) before it copies, so anything
        # below _claimed - capacity may have been overwritten while we copied it.
        lost = min(max(ring._claimed - capacity - cursor, 0), n)
        self.skipped += lost
        self.cursor = cursor + n
        return out[lost:] if lost else out


class Ring:
    """A preallocated ring of ``capacity`` records of ``dtype``: one writer, many readers.

    ``buffer`` may be a writable buffer of at least ``capacity * itemsize`` bytes (for example
    ``multiprocessing.shared_memory.SharedMemory.buf``) to hold the records instead of a private
    array; the layout is the same, the cursors stay in this process.
    """

    def __init__(
        self, dtype: npt.DTypeLike, capacity: int, *, name: str = "", buffer: object = None
    ) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.itemsize = self.dtype.itemsize
        if self.itemsize == 0:
            raise BusError(f"ring {name!r}: dtype {self.dtype} has no size; use a record dtype")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise BusError(f"ring {name!r}: capacity = {capacity!r}; use a positive int")
        self.capacity = max(2, 1 << (capacity - 1).bit_length())
        self._mask = self.capacity - 1
        self._bytes = self._allocate(buffer)
        self._view = self._bytes.view(self.dtype)
        self._view.flags.writeable = False  # what lossless readers get: no writing by mistake
        self._records = self._bytes.view(self.dtype)
        self._memory = memoryview(self._bytes)  # format "B": slices copy as one memcpy
        self._nbytes = self._bytes.nbytes
        self._published = 0
        self._claimed = 0
        self._claim_len = 0
        self._gate = 0  # a lower bound of every lossless cursor (exact after a recompute)
        self._readers: tuple[Reader, ...] = ()
        self._lossless: tuple[Reader, ...] = ()
        self._waiters: tuple[threading.Event, ...] = ()
        self._ringers: tuple[Callable[[], object], ...] = ()  # one call per waiter
        self._lock = threading.Lock()
        self._space = threading.Event()  # set by a lossless reader's commit when the writer waits
        self._writer_waiting = False

    def _allocate(self, buffer: object) -> np.ndarray:
        nbytes = self.capacity * self.itemsize
        if buffer is None:
            raw = np.empty(nbytes, np.uint8)
            raw[:] = 0  # pre-touch every page now, not on the hot path
            return raw
        try:
            raw = np.frombuffer(buffer, np.uint8)  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise BusError(f"ring {self.name!r}: buffer is not a usable buffer: {exc}") from exc
        if raw.nbytes < nbytes or not raw.flags.writeable:
            raise BusError(
                f"ring {self.name!r}: buffer must be writable and hold {nbytes} bytes "
                f"({self.capacity} x {self.itemsize}); got {raw.nbytes} bytes, "
                f"writable={raw.flags.writeable}"
            )
        raw = raw[:nbytes]
        raw[:: mmap.PAGESIZE] = raw[:: mmap.PAGESIZE]  # pre-touch, keeping what is there
        return raw

    def __repr__(self) -> str:
        return (
            f"Ring({self.name!r}, dtype={self.dtype}, capacity={self.capacity}, "
            f"published={self._published}, readers={[r.name for r in self._readers]})"
        )

    @property
    def published(self) -> int:
        """Total records ever published: the stream offset the next record will get."""
        return self._published

    @property
    def readers(self) -> list[Reader]:
        """The current subscriptions."""
        return list(self._readers)

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self, name: str, policy: Policy | str = Policy.LOSSLESS, *, start: str | int = "next"
    ) -> Reader:
        """Add a reader starting at ``"next"``, ``"earliest"`` or an explicit stream offset."""
        try:
            policy = Policy(policy)
        except ValueError:
            choices = ", ".join(p.value for p in Policy)
            raise BusError(
                f"ring {self.name!r}: reader {name!r} has policy {policy!r}; use one of {choices}"
            ) from None
        with self._lock:  # no reservation can happen while we pick the cursor
            oldest = max(self._claimed - self.capacity, 0)
            if start == "next":
                cursor = self._published
            elif start == "earliest":
                cursor = oldest
            else:
                cursor = self._offset(name, start, oldest)
            reader = Reader(self, name, policy, cursor)
            if policy is Policy.LOSSLESS:
                self._gate = min(self._gate, cursor) if self._lossless else cursor
                self._lossless = (*self._lossless, reader)
            self._readers = (*self._readers, reader)
        return reader

    def _offset(self, name: str, start: object, oldest: int) -> int:
        """Validate an explicit start offset."""
        try:
            if isinstance(start, str | bool):
                raise TypeError
            offset = operator.index(start)  # type: ignore[arg-type]
        except TypeError:
            raise BusError(
                f"ring {self.name!r}: reader {name!r} has start={start!r}; "
                "use 'next', 'earliest' or a stream offset (int)"
            ) from None
        if not oldest <= offset <= self._published:
            raise BusError(
                f"ring {self.name!r}: reader {name!r} cannot start at offset {offset}; "
                f"the oldest available is {oldest} and the next is {self._published}"
            )
        return offset

    def unsubscribe(self, reader: Reader) -> None:
        """Remove a reader; a writer it was holding back resumes."""
        with self._lock:
            if not any(r is reader for r in self._readers):
                raise BusError(
                    f"ring {self.name!r}: reader {getattr(reader, 'name', reader)!r} is not "
                    f"subscribed; subscribed: {[r.name for r in self._readers]}"
                )
            self._readers = tuple(r for r in self._readers if r is not reader)
            self._lossless = tuple(r for r in self._lossless if r is not reader)
        self._space.set()

    def start_at(self, offset: int) -> None:
        """Number this stream from ``offset`` instead of 0, before anything is published (the
        write-ahead log continues a topic's offsets across restarts); every reader moves there."""
        with self._lock:
            if self._claimed or self._published:
                raise BusError(
                    f"ring {self.name!r}: start_at({offset}) after {self._published} records "
                    "were published; call it before the first publish"
                )
            self._claimed = self._published = self._gate = offset
            for reader in self._readers:
                reader.cursor = offset

    def add_waiter(self, event: threading.Event) -> None:
        """Set ``event`` on every publish (a consumer thread sleeps on it when idle): a
        ``threading.Event`` or anything with its interface, such as the runtime's Bell."""
        with self._lock:
            self._waiters = (*self._waiters, event)
            self._ringers = tuple(_ringer(e) for e in self._waiters)

    def remove_waiter(self, event: threading.Event) -> None:
        """Stop setting ``event``; unknown events are ignored."""
        with self._lock:
            self._waiters = tuple(e for e in self._waiters if e is not event)
            self._ringers = tuple(_ringer(e) for e in self._waiters)

    def free_space(self) -> int:
        """Records the writer can publish now without waiting."""
        lossless = self._lossless
        if not lossless:
            return self.capacity
        return self.capacity - (self._published - min(r.cursor for r in lossless))

    # -- writing ------------------------------------------------------------------------------

    def publish(  # noqa: C901 - the per-batch path: the usual case reserves inline
        self,
        batch: np.ndarray,
        *,
        timeout: float | None = None,
        stop: threading.Event | None = None,
        on_full: Callable[[], int] | None = None,
    ) -> int:
        """Copy ``batch`` into the ring and publish it; returns the offset of its first record.

        Blocks while lossless readers leave no room, in chunks, so a batch larger than the ring
        goes through as they consume; the waiters are set once per chunk (once per call when
        it fits). Raises :class:`BusTimeout` when blocked ``timeout`` seconds after the call;
        returns early, publishing nothing further, once ``stop`` is set while blocked.
        ``on_full()`` is called before waiting for space and returns how much work it did: the
        runtime's inline mode passes one that runs the readers on the writer's own thread.
        """
        dtype = batch.dtype
        if dtype is not self.dtype and dtype != self.dtype:
            raise BusError(
                f"ring {self.name!r}: batch dtype {dtype} does not match; "
                f"expected {self.dtype} (convert the batch or publish to the right topic)"
            )
        try:
            src = batch.view(_BYTES)  # raw bytes: one memcpy, not a field-by-field copy
        except ValueError:  # not contiguous
            src = np.ascontiguousarray(batch).reshape(-1).view(_BYTES)
        first_offset = self._published
        self._claim_len = 0  # a publish cancels an uncommitted claim
        size = self.itemsize
        total = src.size // size
        if 0 < total <= self.capacity:  # the usual case: reserve inline (one lock, no call)
            with self._lock:
                lossless = self._lossless
                if lossless and self.capacity - (first_offset - self._gate) < total:
                    gate = first_offset
                    for reader in lossless:
                        if reader.cursor < gate:
                            gate = reader.cursor
                    self._gate = gate
                fits = not lossless or self.capacity - (first_offset - self._gate) >= total
                if fits:
                    self._claimed = first_offset + total
            if fits:
                self._write(src, total)
                return first_offset
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        while done < total:
            n = self._reserve(total - done)
            if n == 0:
                if on_full is not None and on_full():
                    continue  # the readers ran on this thread: try again
                if not self._wait_for_space(deadline, stop, total - done):
                    break
                continue
            self._write(src[done * size : (done + n) * size], n)
            done += n
        return first_offset

    def claim(self, n: int) -> np.ndarray:
        """A writable view of up to ``n`` free slots (fewer at the wrap or when short; never
        blocks). Fill it, then :meth:`commit` how many records to publish."""
        start = self._published & self._mask
        n = self._reserve(min(n, self.capacity - start)) if n > 0 else 0
        self._claim_len = n
        return self._records[start : start + n]

    def commit(self, n: int) -> None:
        """Publish the first ``n`` records of the last :meth:`claim`."""
        if not 0 <= n <= self._claim_len:
            raise BusError(
                f"ring {self.name!r}: commit({n}) but the last claim gave {self._claim_len} "
                f"slots; commit between 0 and {self._claim_len}"
            )
        self._claim_len = 0
        if n:
            self._published += n
            self._wake()

    def _reserve(self, want: int) -> int:
        """Reserve up to ``want`` slots from the next offset; how many (0 when full)."""
        with self._lock:
            published = self._published
            capacity = self.capacity
            if self._lossless:
                free = capacity - (published - self._gate)
                if free < want:
                    gate = published
                    for reader in self._lossless:
                        cursor = reader.cursor
                        if cursor < gate:
                            gate = cursor
                    self._gate = gate
                    free = capacity - (published - gate)
                n = min(want, free)
            else:
                n = min(want, capacity)
            self._claimed = published + n
        return n

    def _write(self, src: np.ndarray, n: int) -> None:
        """Copy ``n`` records (``src``, raw bytes) in after the reservation, then publish them.

        Up to ``_NUMPY_COPY_MAX`` bytes numpy copies (the cheapest call for a small batch, and
        numpy keeps the GIL for so few elements); above, a memoryview copy: one memcpy that
        keeps the GIL, where numpy would drop and re-take it, handing the GIL to a reader
        thread in the middle of a publish.
        """
        published = self._published
        start = (published & self._mask) * self.itemsize
        length = src.size
        room = self._nbytes - start
        if length <= _NUMPY_COPY_MAX:
            ring = self._bytes
        else:
            ring = self._memory
            src = src.data
        if length <= room:
            ring[start : start + length] = src
        else:
            ring[start:] = src[:room]
            ring[: length - room] = src[room:]
        self._published = published + n
        for wake in self._ringers:  # _wake, inlined: this runs once per batch
            wake()

    def _wake(self) -> None:
        """Ring every waiter: a Bell's ``set`` directly (a bool store when nobody sleeps); a
        ``threading.Event`` only when not set already (its ``set`` costs a lock and a notify)."""
        for ring in self._ringers:
            ring()

    def _wait_for_space(
        self, deadline: float | None, stop: threading.Event | None, pending: int
    ) -> bool:
        """Block until a slot is free; False if ``stop`` was set first."""
        space = self._space
        for _ in range(_SPINS):
            _yield()  # let a reader thread run (releases the GIL)
            if self.free_space() > 0:
                return True
        while True:
            if stop is not None and stop.is_set():
                return False
            space.clear()
            self._writer_waiting = True  # readers' commits set ``space`` from now on
            try:
                if self.free_space() > 0:
                    return True
                wait = _STOP_POLL_SECS if stop is not None else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._timeout_error(pending)
                    wait = left if wait is None else min(wait, left)
                space.wait(wait)
                if stop is not None and stop.is_set():
                    return False
            finally:
                self._writer_waiting = False

    def _timeout_error(self, pending: int) -> BusTimeout:
        slowest = min(self._lossless, key=lambda r: r.cursor, default=None)
        who = (
            f"slowest reader {slowest.name!r} is {self._published - slowest.cursor} records "
            f"behind (cursor {slowest.cursor})"
            if slowest is not None
            else "no lossless reader is left"
        )
        return BusTimeout(
            f"ring {self.name!r}: publish timed out with {pending} records pending; {who}. "
            "Make that reader keep up, give publish a longer timeout, or subscribe it with a "
            "lossy policy (drop_oldest / latest_only)"
        )
