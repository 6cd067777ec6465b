"""A/B line arbitration and packet gap detection, one compiled pass per batch of packets.

Exchanges publish each packet twice, on line A and line B (two multicast groups), with the
same packet sequence number. :class:`Arbiter` takes packets from both lines in arrival order
and keeps the first copy of each sequence number:

- a copy of a sequence number already delivered is a **duplicate**: dropped and counted;
- a packet below the highest delivered one that was missing is **recovered** (the other line,
  or the same line reordered, filled the hole): delivered (out of order) and counted;
- a sequence number is **lost** once every live line has passed it without delivering it
  (both lines dropped it): the missing range is reported as a gap (an alert row with the
  first and last missing number) and counted. A line silent for ``line_timeout_ns`` is not
  waited for, so a dead line B does not hold gap decisions back; with ``reorder`` = k a hole
  is decided only once every live line is k numbers past it (tolerates reordering within a
  line; a single line with ``reorder`` 0 reports a hole at once, and its late fill as late);
- a packet arriving after its number was declared lost is **late**: delivered and counted;
- holes are tracked in a window of ``window`` sequence numbers: a packet more than ``window``
  ahead of the oldest undecided number forces the decision on the numbers that fall out;
- a packet ``window`` or more below the highest delivered number is a sequence **reset**
  (an exchange restarting its numbering): the state restarts from it, and it is reported.

State lives in small arrays with named columns (``S_*``, ``C_*``); the seen-set is a ring of
``window`` slots holding the sequence number last seen there, so deciding a number never has
to clear anything.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT

__all__ = ["COUNTERS", "GAP", "RESET", "Arbiter"]

# state columns
S_BASE, S_HI, S_STARTED = 0, 1, 2
# counter columns (after the state ones)
C_DELIVERED, C_DUPLICATES, C_RECOVERED, C_LOST, C_GAPS, C_LATE, C_RESETS, C_FORCED = range(3, 11)
N_STATE = 11
COUNTERS = ("delivered", "duplicates", "recovered", "lost", "gaps", "late", "resets",
            "window_forced")  # fmt: skip
GAP, RESET = 0, 1  # event kinds (column 2 of the event rows)


@numba.njit(inline="always", **_NJIT)
def _settle(state, slots, mask, bound, events, n_events):
    """Decide every number up to ``bound``: seen ones pass, unseen runs become gap events."""
    base = state[S_BASE]
    while base <= bound:
        if slots[base & mask] == base:
            base += 1
            continue
        start = base
        while base <= bound and slots[base & mask] != base:
            base += 1
        events[n_events, 0] = start
        events[n_events, 1] = base - 1
        events[n_events, 2] = GAP
        n_events += 1
        state[C_LOST] += base - start
        state[C_GAPS] += 1
    state[S_BASE] = base
    return n_events


@numba.njit(inline="always", **_NJIT)
def _reset(state, slots, line_hi, s, events, n_events):
    events[n_events, 0] = state[S_HI]
    events[n_events, 1] = s
    events[n_events, 2] = RESET
    slots[:] = -1
    line_hi[:] = s - 1
    state[S_BASE] = s
    state[S_HI] = s - 1
    state[C_RESETS] += 1
    return n_events + 1


@numba.njit(inline="always", **_NJIT)
def _bound(state, line_hi, alive, reorder):
    bound = state[S_HI]
    waiting = False
    for line in range(line_hi.shape[0]):
        if alive[line]:
            waiting = True
            if line_hi[line] < bound:
                bound = line_hi[line]
    return bound - reorder if waiting else bound


@numba.njit(**_NJIT)
def arbitrate(seqs, lines, ok, state, slots, line_hi, alive, reorder, keep, events):
    """One pass over a batch: ``keep[i]`` for the packets to deliver; gap and reset rows in
    ``events`` (``(first, last, kind)``); returns how many event rows were written."""
    mask = slots.shape[0] - 1
    window = slots.shape[0]
    n_events = 0
    for i in range(seqs.shape[0]):
        keep[i] = False
        if not ok[i]:
            continue
        s = seqs[i]
        line = lines[i]
        if state[S_STARTED] == 0:
            state[S_STARTED] = 1
            state[S_BASE] = s
            state[S_HI] = s - 1
            line_hi[:] = s - 1
        elif s <= state[S_HI] - window:
            n_events = _reset(state, slots, line_hi, s, events, n_events)
        if s - state[S_BASE] >= window:  # the window is full: decide what falls out of it
            before = state[C_LOST]
            n_events = _settle(state, slots, mask, s - window, events, n_events)
            state[C_FORCED] += state[C_LOST] - before
        if slots[s & mask] == s:
            state[C_DUPLICATES] += 1
        else:
            slots[s & mask] = s
            keep[i] = True
            state[C_DELIVERED] += 1
            if s < state[S_BASE]:
                state[C_LATE] += 1
            elif s < state[S_HI]:
                state[C_RECOVERED] += 1
            else:
                state[S_HI] = s
        if s > line_hi[line]:
            line_hi[line] = s
        n_events = _settle(
            state, slots, mask, _bound(state, line_hi, alive, reorder), events, n_events
        )
    if seqs.shape[0] == 0 and state[S_STARTED]:
        n_events = _settle(
            state, slots, mask, _bound(state, line_hi, alive, reorder), events, n_events
        )
    return n_events


class Arbiter:
    """A/B arbitration state for one feed (``lines`` lines, 1 for a single line)."""

    def __init__(self, lines: int = 2, window: int = 1 << 16,
                 line_timeout_ns: int = 1_000_000_000, reorder: int = 0) -> None:  # fmt: skip
        if window < 2 or window & (window - 1):
            raise ValueError(f"arbitration window = {window}: use a power of two >= 2")
        self.lines = lines
        self.window = window
        self.line_timeout_ns = int(line_timeout_ns)
        self.reorder = int(reorder)
        self.state = np.zeros(N_STATE, dtype=np.int64)
        self.slots = np.full(window, -1, dtype=np.int64)
        self.line_hi = np.full(lines, -1, dtype=np.int64)
        self.last_seen_ns = np.full(lines, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._events = np.zeros((window + 64, 3), dtype=np.int64)
        self._keep = np.zeros(0, dtype=np.bool_)
        self.alive = np.zeros(lines, dtype=np.bool_)  # as of the last batch

    def process(self, seqs: np.ndarray, lines: np.ndarray, ts_recv: np.ndarray, now_ns: int,
                ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``(keep, events)`` for a batch in arrival order; ``ok`` False rows are skipped
        (unsequenceable packets the caller dead-letters). ``now_ns`` decides which lines are
        alive (capture time in a replay, the clock live)."""
        n = len(seqs)
        if len(ts_recv):
            np.maximum.at(self.last_seen_ns, lines, ts_recv)
        alive = (now_ns - self.last_seen_ns) <= self.line_timeout_ns
        self.alive = alive
        if len(self._keep) < n:
            self._keep = np.zeros(max(n, 2 * len(self._keep)), dtype=np.bool_)
        if len(self._events) < n + self.window + 64:
            self._events = np.zeros((n + self.window + 64, 3), dtype=np.int64)
        keep = self._keep[:n]
        if ok is None:
            ok = np.ones(n, dtype=np.bool_)
        count = arbitrate(seqs.astype(np.int64, copy=False), lines.astype(np.int64, copy=False),
                          ok, self.state, self.slots, self.line_hi, alive, self.reorder, keep,
                          self._events)  # fmt: skip
        return keep, self._events[:count].copy()

    def flush(self) -> np.ndarray:
        """At the end of a bounded feed: decide every number up to the highest seen."""
        alive = np.zeros(self.lines, dtype=np.bool_)
        count = arbitrate(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.bool_),
                          self.state, self.slots, self.line_hi, alive, 0, self._keep[:0],
                          self._events)  # fmt: skip
        return self._events[:count].copy()

    @property
    def undecided(self) -> bool:
        """Whether some numbers below the highest delivered one are still waited for."""
        return bool(self.state[S_STARTED]) and self.state[S_BASE] <= self.state[S_HI]

    @property
    def counters(self) -> dict[str, int]:
        return {name: int(self.state[C_DELIVERED + k]) for k, name in enumerate(COUNTERS)}

    def snapshot(self) -> dict:
        return {"state": self.state.tolist(), "line_hi": self.line_hi.tolist(),
                "slots": self.slots.tolist()}  # fmt: skip

    def restore(self, state: dict) -> None:
        self.state[:] = state["state"]
        self.line_hi[:] = state["line_hi"]
        self.slots[:] = state["slots"]


def warm() -> None:
    """Compile the arbitration kernel into the on-disk cache."""
    arb = Arbiter(window=16)
    seqs = np.array([1, 1, 3, 2, 2, 4], dtype=np.int64)
    arb.process(seqs, np.array([0, 1, 0, 1, 0, 1]), np.zeros(6, np.int64), 0)
    arb.flush()
