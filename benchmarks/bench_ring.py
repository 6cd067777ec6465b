"""The ring bus: records/s from a producer thread to consumer threads, against queue.Queue.

hftagg: 32-byte records, the producer publishes pre-generated batches of 1024, each consumer
polls up to 1024 zero-copy, checks the last ``seq`` of every batch it gets, and commits.
Baseline: the same stream as one tuple per event through a ``queue.Queue``.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from benchmarks.harness import Result
from hftagg.bus import Ring

DTYPE = np.dtype([("seq", "<u8"), ("a", "<i8"), ("b", "<f8"), ("c", "<i8")])
BATCH = 1024
POOL_BATCHES = 64  # pre-generated batches the producer cycles through (2 MiB)
CAPACITY = 1 << 16  # 2 MiB of records
TARGET = 200e6
ready = threading.Event()  # consumers subscribed: start the clock


def _pool() -> list[np.ndarray]:
    records = np.zeros(BATCH * POOL_BATCHES, DTYPE)
    records["seq"] = np.arange(len(records))
    records["a"] = 7
    records["b"] = 1.5
    return [records[i : i + BATCH] for i in range(0, len(records), BATCH)]


def _consume(ring: Ring, name: str, total: int, errors: list[str]) -> None:
    reader = ring.subscribe(name)
    wake = threading.Event()
    ring.add_waiter(wake)
    ready.wait()
    modulus = BATCH * POOL_BATCHES
    poll, commit = reader.poll, reader.commit
    seen = 0
    while seen < total:
        batch = poll(BATCH)
        n = len(batch)
        if not n:  # idle: clear the event, look once more, then sleep until a publish
            wake.clear()
            if not len(poll(BATCH)):
                wake.wait(0.1)
            continue
        seen += n
        if batch["seq"][-1] != (seen - 1) % modulus:  # touch the data: last seq of the batch
            errors.append(f"{name}: seq {batch['seq'][-1]} at offset {seen - 1}")
            return
        commit()
    ring.remove_waiter(wake)


def ring_rate(total: int, consumers: int = 1) -> float:
    """Records/s through a Ring from one producer thread to ``consumers`` threads."""
    total -= total % BATCH
    ring = Ring(DTYPE, CAPACITY, name="bench")
    pool = _pool()
    errors: list[str] = []
    ready.clear()
    threads = [
        threading.Thread(target=_consume, args=(ring, f"c{i}", total, errors))
        for i in range(consumers)
    ]
    for t in threads:
        t.start()
    while len(ring.readers) < consumers:
        time.sleep(0.001)
    publish = ring.publish
    batches = total // BATCH
    ready.set()
    t0 = time.perf_counter()
    for i in range(batches):
        publish(pool[i % POOL_BATCHES], timeout=30)
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise AssertionError(f"ring benchmark delivered wrong data: {errors}")
    return batches * BATCH / dt


def queue_rate(total: int) -> float:
    """Events/s of per-event tuples through a queue.Queue between two threads."""
    q: queue.Queue = queue.Queue(maxsize=CAPACITY)
    errors: list[str] = []

    def consume() -> None:
        get = q.get
        for i in range(total):
            event = get()
            if event[0] != i:
                errors.append(f"seq {event[0]} at {i}")
                return

    t = threading.Thread(target=consume)
    t0 = time.perf_counter()
    t.start()
    put = q.put
    for i in range(total):
        put((i, 7, 1.5, 0))
    t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise AssertionError(f"queue baseline delivered wrong data: {errors}")
    return total / dt


def run(quick: bool) -> list[Result]:
    total = 5_000_000 if quick else 50_000_000
    events = 200_000 if quick else 1_000_000
    baseline = queue_rate(events)
    single = max(ring_rate(total) for _ in range(3))
    fan_out = max(ring_rate(total // 2, consumers=3) for _ in range(3))
    return [
        Result(
            name="ring",
            hftagg=single,
            baseline=baseline,
            baseline_name="queue.Queue per-event tuples",
            unit="rec/s",
            target=TARGET,
            extra={"records": total, "batch": BATCH, "capacity": CAPACITY},
        ),
        Result(
            name="ring fan-out 1->3 lossless",
            hftagg=fan_out,
            baseline=baseline,
            baseline_name="queue.Queue per-event tuples",
            unit="rec/s",
            extra={"records": total // 2, "note": "records/s published, each seen by 3"},
        ),
    ]
