"""How an idle pipeline thread waits for work: a bell rung by the publish it waits for, and the
Disruptor's four wait strategies, chosen per thread in ``[runtime]``.

The bell
    Every consumer thread (the core thread, each sink, each source) owns one :class:`Bell`. A
    ring rings the bells of the threads that read it on every publish (``Ring.add_waiter``); a
    source's own I/O can ring its bell with ``SourceStage.wake()``; parking, stopping and a
    thread's end ring it too. A loop clears its bell, looks for work, and only if there was none
    waits on the bell, so a publish between the look and the wait is never missed.

    Ringing is cheap when nobody sleeps: ``set`` stores a Python bool, and touches the lock a
    blocked thread sleeps on (or the cell a spinner watches) only when a thread is actually
    blocked (or spinning) on this bell. Under the GIL the flag/``_blocked`` pair is a Dekker
    handshake: the waiter raises ``_blocked`` then re-reads the flag; the ringer raises the flag
    then reads ``_blocked``; one of them always sees the other.

Wait strategies (``blocking`` is the default)
    ``blocking``   sleep on the bell until a publish rings it (no timed polling while data waits:
                   the timeout a loop passes is only a safety net for stop and checkpoints).
    ``yielding``   re-check the bell ``YIELD_SPINS`` times, then ``os.sched_yield()`` (which
                   releases the GIL, letting the writer run) ``YIELD_YIELDS`` times, then block.
                   Lower wake-up latency than blocking for bursts, at some CPU cost.
    ``busy_spin``  spin in compiled code *without the GIL* on the bell's cell (an int64 in a
                   numpy array, read with an acquire load and a ``pause`` hint), returning to
                   Python every ``SPIN_CHUNK`` spins to see stop and checkpoints. Burns one
                   core per spinning thread: only for threads pinned to their own cores
                   (``[runtime.cpus]``). A pure-Python spin would hold the GIL for its whole
                   switch interval (5 ms) and starve the very writer it waits for.
    ``sleeping``   low power: sleep 50 us, doubling to at most 1 ms, re-checking the bell.

Whatever the strategy, taking the GIL back after a wake-up can wait for the thread that holds
it (up to ``sys.getswitchinterval()`` when that thread computes in Python): the hand-off floor
the issue measured. ``threading = "inline"`` removes hand-offs from the latency path instead.

CPU pinning: ``[runtime.cpus]`` maps a thread (``core`` or a source/sink stage id) to CPUs;
the thread pins itself with ``os.sched_setaffinity`` when it starts.
"""

from __future__ import annotations

import difflib
import os
import platform
import threading
import time
from collections.abc import Iterable

import numpy as np

from hftagg.errors import ConfigError, Problem

__all__ = [
    "WAIT_STRATEGIES",
    "Bell",
    "BlockingWait",
    "BusySpinWait",
    "SleepingWait",
    "YieldingWait",
    "make_wait",
    "pin_current_thread",
    "thread_problems",
]

_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))  # releases the GIL
YIELD_SPINS = 64  # GIL-holding re-checks of the bell (a few microseconds) before yielding
YIELD_YIELDS = 256  # sched_yield rounds (each lets the writer run) before blocking
SPIN_CHUNK = 20_000  # compiled spins between returns to Python (~0.1-1 ms)
SLEEP_FIRST_SECS = 50e-6
SLEEP_MAX_SECS = 1e-3


class Bell:
    """A wake-up signal with ``threading.Event``'s interface (``set``, ``is_set``, ``clear``,
    ``wait``) that costs a bool store to ring when nobody waits on it.

    ``cell`` is a 64-byte int64 array whose first element a ``busy_spin`` waiter watches from
    compiled code without the GIL; ``set`` writes it only while such a waiter spins.
    """

    __slots__ = ("_flag", "_blocked", "_spinning", "_gate", "cell", "timeouts")
    cheap_set = True  # a ring calls set() on every publish without checking is_set() first

    def __init__(self) -> None:
        self._flag = False
        self._blocked = False
        self._spinning = False
        self._gate = threading.Lock()  # held while nobody is being woken; released to wake
        self._gate.acquire()
        self.cell = np.zeros(8, np.int64)  # one cache line; [0] != 0: rung while spinning
        #: waits that ended by their timeout (the safety net), not by a ring
        self.timeouts = 0

    def set(self) -> None:
        self._flag = True
        if self._spinning:
            self.cell[0] = 1
        if self._blocked:
            self._blocked = False
            try:
                self._gate.release()
            except RuntimeError:  # another ringer released it first
                pass

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until rung or ``timeout`` seconds pass; True if rung (maybe spuriously: a
        caller re-checks its work, as with any condition variable)."""
        if self._flag:
            return True
        self._blocked = True
        if self._flag:
            self._blocked = False
            return True
        rung = self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        self._blocked = False
        if not rung and not self._flag:
            self.timeouts += 1
            return False
        return True


class BlockingWait:
    """Sleep on the bell until a publish rings it (the default)."""

    name = "blocking"

    def wait(self, bell: Bell, timeout: float) -> bool:
        return bell.wait(timeout)


class YieldingWait:
    """Re-check, then yield the CPU (and the GIL) a bounded number of times, then block."""

    name = "yielding"

    def __init__(self, spins: int = YIELD_SPINS, yields: int = YIELD_YIELDS) -> None:
        self.spins, self.yields = spins, yields

    def wait(self, bell: Bell, timeout: float) -> bool:
        for _ in range(self.spins):
            if bell._flag:
                return True
        deadline = time.monotonic() + timeout
        yield_ = _yield
        for _ in range(self.yields):
            yield_()
            if bell._flag:
                return True
        return bell.wait(max(0.0, deadline - time.monotonic()))


class SleepingWait:
    """Low power: sleep with backoff (50 us doubling to 1 ms), re-checking the bell."""

    name = "sleeping"

    def __init__(self, first: float = SLEEP_FIRST_SECS, most: float = SLEEP_MAX_SECS) -> None:
        self.first, self.most = first, most

    def wait(self, bell: Bell, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pause = self.first
        while not bell._flag:
            left = deadline - time.monotonic()
            if left <= 0:
                bell.timeouts += 1
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, self.most)
        return True


class BusySpinWait:
    """Spin in compiled code without the GIL on the bell's cell; for pinned cores."""

    name = "busy_spin"

    def __init__(self, chunk: int = SPIN_CHUNK) -> None:
        self.chunk = chunk
        self._spin = spin_kernel()
        self._spin(
            np.ones(8, np.int64), 1
        )  # compiled (or loaded from cache) now, not on first wait

    def wait(self, bell: Bell, timeout: float) -> bool:
        if bell._flag:
            return True
        cell = bell.cell
        cell[0] = 0
        bell._spinning = True  # from here on a ring writes the cell
        try:
            deadline = time.monotonic() + timeout
            spin, chunk = self._spin, self.chunk
            while not bell._flag:
                if spin(cell, chunk):
                    return True
                if time.monotonic() >= deadline:
                    bell.timeouts += 1
                    return False
            return True
        finally:
            bell._spinning = False


WAIT_STRATEGIES = {
    "blocking": BlockingWait,
    "yielding": YieldingWait,
    "busy_spin": BusySpinWait,
    "sleeping": SleepingWait,
}


def make_wait(name: str):
    """A new wait strategy object by its config name."""
    try:
        return WAIT_STRATEGIES[name]()
    except KeyError:
        raise ConfigError(
            [Problem("runtime.wait", name, f"unknown wait strategy; use one of {_names()}")]
        ) from None


def _names() -> str:
    return ", ".join(WAIT_STRATEGIES)


# -- the compiled spin ------------------------------------------------------------------------

_SPIN = None


def spin_kernel():
    """``spin(cell, n) -> bool``: True as soon as ``cell[0] != 0``, False after ``n`` spins.
    Compiled with ``nogil=True``: the GIL is released for the whole spin."""
    global _SPIN
    if _SPIN is None:
        _SPIN = _build_spin()
    return _SPIN


def _build_spin():
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from hftagg.kernels.options import NJIT

    @intrinsic
    def load_acquire(typingctx, cell):
        """``cell[0]`` read with an atomic acquire load: the compiler cannot hoist it out of
        the loop (a plain load may be, since nothing in the loop writes it)."""
        if not (isinstance(cell, types.Array) and cell.dtype == types.int64):
            return None

        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.load_atomic(array.data, "acquire", 8)

        return types.int64(cell), codegen

    pause = platform.machine() in ("x86_64", "AMD64")

    @intrinsic
    def cpu_relax(typingctx):
        """The spin-wait hint (x86 ``pause``: saves power, frees the sibling hyper-thread, and
        avoids a pipeline flush when the cell changes); nothing on other machines."""

        def codegen(context, builder, signature, args):
            if pause:
                fnty = ir.FunctionType(ir.VoidType(), [])
                fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause")
                builder.call(fn, [])
            return context.get_dummy_value()

        return types.none(), codegen

    @numba.njit(**NJIT)
    def spin(cell, spins):
        for _ in range(spins):
            if load_acquire(cell) != 0:
                return True
            cpu_relax()
        return False

    return spin


# -- pinning and validation -------------------------------------------------------------------


def available_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: every CPU the machine reports
        return set(range(os.cpu_count() or 1))


def pin_current_thread(cpus: Iterable[int]) -> None:
    """Pin the calling thread to ``cpus`` (Linux: ``sched_setaffinity(0)`` is this thread)."""
    os.sched_setaffinity(0, set(cpus))


def thread_problems(runtime, sources: list[str], sinks: list[str], src: str = "") -> list[Problem]:
    """What is wrong with ``runtime.waits`` / ``runtime.cpus`` for a graph with these source
    and sink stage ids: thread names that do not exist, CPUs this process may not use."""
    if runtime is None:
        return []
    inline = runtime.threading == "inline"
    inline_sinks = {s for s in sinks if s not in runtime.threaded_sinks} if inline else set()
    threads = set(sources) | (set(sinks) - inline_sinks) | ({"core"} if not inline else set())
    known = ", ".join(sorted(threads)) or "none"
    problems = []
    for table in ("waits", "cpus"):
        for name, value in getattr(runtime, table).items():
            if name == "core" and inline:
                problems.append(
                    Problem(
                        f"runtime.{table}.core",
                        value,
                        'threading = "inline" runs the core stages on the source threads; '
                        f"set runtime.{table} for the sources instead (threads: {known})",
                        src,
                    )
                )
            elif name in inline_sinks:
                problems.append(
                    Problem(
                        f"runtime.{table}.{name}",
                        value,
                        f'threading = "inline" runs sink {name!r} on the source threads; list '
                        f"it in runtime.threaded_sinks to give it a thread of its own",
                        src,
                    )
                )
            elif name not in threads:
                problems.append(
                    Problem(
                        f"runtime.{table}.{name}",
                        value,
                        f"no thread named {name!r}{_did_you_mean(name, threads)}; threads are "
                        f"'core' and the source and sink stage ids: {known}",
                        src,
                    )
                )
    for name in runtime.threaded_sinks:
        if name not in sinks:
            problems.append(
                Problem(
                    "runtime.threaded_sinks",
                    name,
                    f"no sink named {name!r}; sinks: {', '.join(sorted(sinks)) or 'none'}",
                    src,
                )
            )
    cpus = available_cpus()
    if runtime.cpus and not hasattr(os, "sched_setaffinity"):
        problems.append(
            Problem("runtime.cpus", runtime.cpus, "CPU pinning needs Linux; remove it", src)
        )
    for name, wanted in runtime.cpus.items():
        bad = sorted(set(wanted) - cpus)
        if bad or not wanted:
            problems.append(
                Problem(
                    f"runtime.cpus.{name}",
                    wanted,
                    f"CPU(s) {bad} are not available to this process; use some of {sorted(cpus)}"
                    if bad
                    else f"an empty CPU list; use some of {sorted(cpus)}",
                    src,
                )
            )
    return problems


def _did_you_mean(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_threads(runtime, sources: list[str], sinks: list[str]) -> None:
    """Raise ConfigError if :func:`thread_problems` finds anything."""
    problems = thread_problems(runtime, sources, sinks)
    if problems:
        raise ConfigError(problems)
