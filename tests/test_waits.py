"""Wait strategies, the bell a publish rings, CPU pinning and the inline threading mode.

Nothing here depends on speed: a wait that was not woken by the publish it waits for shows up
as a timeout counted on its bell (the safety net is set to an hour), and a spin that held the
GIL shows up as another thread that made no progress meanwhile.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest

from hftagg import Port, SinkStage, SourceStage
from hftagg.builtins.core.indicators.stages import Ema
from hftagg.bus.ring import Ring
from hftagg.config.spec import RuntimeSection
from hftagg.errors import ConfigError
from hftagg.records import TRADE
from hftagg.runtime.graph import graph_from_stages
from hftagg.runtime.pipeline import Pipeline
from hftagg.runtime.waits import (
    WAIT_STRATEGIES,
    Bell,
    BusySpinWait,
    make_wait,
    spin_kernel,
    thread_problems,
)
from hftagg.testing import TestingSink, TestingSource, _host, _wire_linear

HOUR = 3600.0


def trades_for(instruments: int, n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    trades = TRADE.empty(n)
    trades["instrument_id"] = rng.integers(1, instruments + 1, n)
    trades["price"] = (100 + np.cumsum(rng.normal(0, 0.05, n))) * 1e9
    for iid in np.unique(trades["instrument_id"]):
        mask = trades["instrument_id"] == iid
        trades["seq"][mask] = np.arange(mask.sum())
    return trades


def random_batches(records: np.ndarray, seed: int = 4, most: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < len(records):
        size = int(rng.integers(1, most))
        out.append(records[start : start + size])
        start += size
    return out


def build(stages, wire: bool = True, **runtime) -> Pipeline:
    if wire:
        _wire_linear(stages)
    graph = graph_from_stages(stages, _host())
    settings = {"max_batch": 128, "ring_bytes": 1 << 16, "drain_timeout_secs": 60, **runtime}
    section = RuntimeSection(**settings)
    pipeline = Pipeline(graph, section, host=_host())
    pipeline.safety_net_secs = HOUR  # a thread that waits for anything but a ring would hang
    return pipeline


def run(pipeline: Pipeline) -> dict:
    pipeline.start()
    finished = pipeline.wait(120)
    summary = pipeline.stop(drain=finished)
    assert finished, "the pipeline did not finish: a thread waited for a ring that never came"
    return summary


def bells(pipeline: Pipeline) -> dict[str, Bell]:
    return {name: w.bell for name, w in pipeline.workers.items()}


# -- the bell --------------------------------------------------------------------------------


def test_a_blocked_reader_is_woken_by_each_publish_not_by_its_timeout():
    ring = Ring(TRADE.dtype, 64, name="md.trades")
    reader = ring.subscribe("reader")
    bell = Bell()
    ring.add_waiter(bell)
    received: list[int] = []
    acknowledged = Bell()

    def consume() -> None:
        while len(received) < 50:
            bell.clear()
            batch = reader.poll(64)
            if len(batch):
                received.extend(int(s) for s in batch["seq"])
                reader.commit()
                acknowledged.set()
                continue
            bell.wait(HOUR)  # only a publish can end this wait

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for seq in range(50):
        batch = TRADE.empty(1)
        batch["seq"] = seq
        acknowledged.clear()
        ring.publish(batch)
        assert acknowledged.wait(60), f"the reader was not woken by publish {seq}"
    thread.join(60)
    assert not thread.is_alive()
    assert received == list(range(50))  # each publish woke it, in order
    assert bell.timeouts == 0


def test_a_bell_rung_before_the_wait_is_not_missed():
    bell = Bell()
    bell.set()
    assert bell.wait(HOUR) is True
    bell.clear()
    assert bell.wait(0) is False and bell.timeouts == 1


@pytest.mark.parametrize("name", list(WAIT_STRATEGIES))
def test_every_wait_strategy_returns_when_rung_from_another_thread(name):
    strategy = make_wait(name)
    bell = Bell()
    progress = [0]

    def ring_after_work() -> None:
        for _ in range(100_000):
            progress[0] += 1
        bell.set()

    thread = threading.Thread(target=ring_after_work)
    thread.start()
    assert strategy.wait(bell, HOUR) is True
    thread.join()
    assert progress[0] == 100_000  # the ringer ran to its end while this thread waited
    assert bell.timeouts == 0


def test_busy_spin_releases_the_gil_while_it_spins():
    """The only way out of the spin is a Python thread counting to two million and then
    writing the cell: were the GIL held while spinning, that thread could not run at all and
    the spin would end (after minutes) unrung."""
    spin = spin_kernel()
    cell = np.zeros(8, np.int64)
    spin(cell, 1)  # compiled before the race
    counter = [0]
    go = threading.Event()

    def count_then_ring() -> None:
        go.wait()
        for _ in range(2_000_000):
            counter[0] += 1
        cell[0] = 1

    thread = threading.Thread(target=count_then_ring)
    thread.start()
    go.set()  # this thread keeps the GIL from here into the spin
    rung = spin(cell, 10**11)
    thread.join()
    assert rung is True
    assert counter[0] == 2_000_000


def test_busy_spin_wait_returns_on_the_cell_a_ring_writes():
    bell = Bell()
    strategy = BusySpinWait()
    thread = threading.Timer(0.05, bell.set)
    thread.start()
    assert strategy.wait(bell, HOUR) is True
    thread.join()
    assert bell.timeouts == 0 and not bell._spinning


# -- pipelines -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("threading_mode", ["threaded", "inline"])
@pytest.mark.parametrize("wait", list(WAIT_STRATEGIES))
def test_every_wait_strategy_keeps_seq_contiguous_and_exactly_once(wait, threading_mode):
    trades = trades_for(4, 20_000)
    out: list[np.ndarray] = []
    source = TestingSource(random_batches(trades))
    pipeline = build([source, Ema(window=9), TestingSink(out)], wait=wait, threading=threading_mode)
    summary = run(pipeline)
    result = np.concatenate(out)
    assert len(result) == len(trades)  # nothing lost, nothing twice
    np.testing.assert_array_equal(result["seq"], trades["seq"])
    for iid in np.unique(result["instrument_id"]):
        seq = result["seq"][result["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    assert summary["left_over"] == 0 and summary["stages"]["ema"]["records"] == len(trades)
    assert {name: b.timeouts for name, b in bells(pipeline).items()} == dict.fromkeys(
        pipeline.workers, 0
    )  # every wake-up came from a ring


class WokenSource(SourceStage):
    """Data arrives on another thread (as from a socket); ``next_awake`` is infinite, so only
    ``wake()`` brings the source's thread back."""

    type_name = "woken_source"
    outputs = {"output": Port("trade", "md.trades")}

    def __init__(self, batches: list[np.ndarray], **kw) -> None:
        super().__init__(**kw)
        self.inbox: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.expected = len(batches)
        self.given = 0
        self.feeder = threading.Thread(target=self._feed, args=(batches,), daemon=True)

    def _feed(self, batches) -> None:
        for batch in batches:
            with self.lock:
                self.inbox.append(batch)
            self.wake()

    def next_batch(self):
        with self.lock:
            if not self.inbox:
                return None
            batch = np.concatenate(self.inbox)
            self.given += len(self.inbox)
            self.inbox.clear()
        return batch

    def next_awake(self) -> float:
        return math.inf

    @property
    def exhausted(self) -> bool:
        return self.given == self.expected


@pytest.mark.slow
@pytest.mark.parametrize("threading_mode", ["threaded", "inline"])
def test_a_source_woken_by_its_io_thread_delivers_everything_without_polling(threading_mode):
    trades = trades_for(2, 5_000)
    source = WokenSource(random_batches(trades, most=50), stage_id="feed")
    out: list[np.ndarray] = []
    pipeline = build([source, TestingSink(out, topic="md.trades")], threading=threading_mode)
    pipeline.start()
    source.feeder.start()
    assert pipeline.wait(120), "the source thread was not woken by wake()"
    pipeline.stop()
    np.testing.assert_array_equal(np.concatenate(out)["seq"], trades["seq"])
    assert bells(pipeline)["source:feed"].timeouts == 0


class AffinitySink(SinkStage):
    type_name = "affinity_sink"
    inputs = {"input": Port("trade", "md.trades")}

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.seen: set[frozenset[int]] = set()

    def write(self, batch, port, offset) -> None:
        self.seen.add(frozenset(os.sched_getaffinity(0)))


@pytest.mark.slow
def test_a_thread_pinned_by_runtime_cpus_runs_on_those_cpus():
    cpu = min(os.sched_getaffinity(0))
    sink = AffinitySink(stage_id="pinned")
    source = TestingSource(random_batches(trades_for(1, 2_000)), topic="md.trades")
    summary = run(build([source, sink], cpus={"pinned": [cpu]}, waits={"pinned": "yielding"}))
    assert sink.seen == {frozenset({cpu})}
    assert summary["stages"]["pinned"]["records"] == 2_000


def test_inline_mode_runs_core_and_sinks_on_the_source_thread():
    threads: set[str] = set()

    class Where(TestingSink):
        def write(self, batch, port, offset):
            threads.add(threading.current_thread().name)
            super().write(batch, port, offset)

    source = TestingSource(random_batches(trades_for(2, 3_000)))
    out: list[np.ndarray] = []
    pipeline = build([source, Ema(window=5), Where(out)], threading="inline")
    run(pipeline)
    assert threads == {"hftagg-source:source"}  # no hand-off to a core or sink thread
    assert sum(len(b) for b in out) == 3_000
    assert pipeline.workers["core"].thread is None


def test_inline_mode_keeps_a_threaded_sink_on_its_own_thread():
    threads: dict[str, set[str]] = {"fast": set(), "slow": set()}

    class Where(TestingSink):
        def write(self, batch, port, offset):
            threads[self.stage_id].add(threading.current_thread().name)
            super().write(batch, port, offset)

    source = TestingSource(random_batches(trades_for(2, 3_000)), topic="md.trades")
    fast, slow = [], []
    stages = [
        source,
        Where(fast, stage_id="fast", topic="md.trades"),
        Where(slow, stage_id="slow", topic="md.trades"),
    ]
    run(build(stages, threading="inline", threaded_sinks=["slow"]))
    assert threads == {"fast": {"hftagg-source:source"}, "slow": {"hftagg-sink:slow"}}
    assert sum(map(len, fast)) == sum(map(len, slow)) == 3_000


def test_inline_mode_makes_room_in_a_full_ring_on_its_own_thread():
    """An isolated inline sink turns each batch into dead letters, more than their ring holds;
    nobody else runs the sink reading them, so the publishing thread must, without running
    the failing sink again on the batch it is still handling."""
    calls = []

    class Failing(TestingSink):
        on_error = "isolate"

        def write(self, batch, port, offset):
            calls.append(offset)
            raise ValueError("refused")

    trades = trades_for(1, 2_000)
    dead: list[np.ndarray] = []
    stages = [
        TestingSource(random_batches(trades, most=120), topic="md.trades"),
        Failing([], stage_id="failing", topic="md.trades"),
        TestingSink(dead, stage_id="catcher", topic="dead_letters.isolated.failing"),
    ]
    pipeline = build(stages, wire=False, threading="inline", ring_bytes=4096)
    assert pipeline.rings["dead_letters.isolated.failing"].capacity < 120
    summary = run(pipeline)
    assert sum(map(len, dead)) == len(trades)  # every record, once, as a dead letter
    assert len(calls) == len(set(calls))  # no batch handed to the failing sink twice
    assert summary["stages"]["failing"]["failures"] == len(calls)


# -- config ----------------------------------------------------------------------------------


def test_wait_settings_naming_a_missing_thread_or_cpu_are_config_errors():
    runtime = RuntimeSection(
        waits={"core": "busy_spin", "pubilsher": "yielding"},
        cpus={"core": [10_000]},
        threaded_sinks=["nope"],
    )
    problems = [str(p) for p in thread_problems(runtime, ["sim"], ["publisher"])]
    assert any("runtime.waits.pubilsher" in p and "'publisher'" in p for p in problems)
    assert any("runtime.cpus.core" in p and "not available" in p for p in problems)
    assert any("runtime.threaded_sinks" in p and "'nope'" in p for p in problems)
    inline = RuntimeSection(threading="inline", waits={"core": "yielding"})
    (problem,) = thread_problems(inline, ["sim"], ["publisher"])
    assert problem.key == "runtime.waits.core" and "source threads" in problem.expected


def test_an_unknown_wait_strategy_is_refused_naming_the_choices():
    with pytest.raises(Exception) as info:
        RuntimeSection(wait="spinning")
    assert "busy_spin" in str(info.value)
    with pytest.raises(ConfigError, match="use one of blocking, yielding, busy_spin, sleeping"):
        make_wait("spinning")


def test_a_graph_with_a_bad_thread_setting_does_not_build():
    source = TestingSource([trades_for(1, 10)], topic="md.trades")
    with pytest.raises(ConfigError, match="runtime.waits.snk"):
        build(
            [source, TestingSink([], stage_id="sink", topic="md.trades")], waits={"snk": "sleeping"}
        )
