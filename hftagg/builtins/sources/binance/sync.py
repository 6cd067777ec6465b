"""Binance depth synchronisation: REST snapshot plus diff stream, joined by update ids.

Binance's procedure ("How to manage a local order book correctly", spot API docs):

1. Open the stream ``<symbol>@depth`` and buffer the events (``U`` first and ``u`` last update
   id of each event).
2. Get a snapshot: ``GET /api/v3/depth?symbol=...&limit=...`` (``lastUpdateId``).
3. If ``lastUpdateId`` is below the first buffered event's ``U``, get another snapshot.
4. Drop buffered events with ``u <= lastUpdateId``.
5. The first remaining event must have ``U <= lastUpdateId + 1 <= u``.
6. From then on each event's ``U`` must equal the previous event's ``u + 1``; otherwise the
   book is out of sync: drop it and start again from 2 (hftagg: from 1 -- the events after the
   gap are buffered while the new snapshot is fetched).
7. A quantity of 0 removes the level; removing a level that is not there is normal.

The checks are done per batch on arrays of ``U``/``u`` (:func:`check_updates`), never per
event in Python; :class:`DepthSync` holds one symbol's state between batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DepthEvents", "DepthSync", "check_updates"]

#: DepthSync states
WAITING = 0  # no snapshot applied: buffering diffs, a snapshot requested or to be requested
SYNCED = 1  # snapshot applied and every event since continuous


def check_updates(first: np.ndarray, last: np.ndarray, prev_u: int, fresh: bool) -> tuple[int, int]:
    """Which events of a run continue a book whose last applied update id is ``prev_u``.

    ``first``/``last``: int64 arrays of the events' ``U``/``u``, in arrival order. ``fresh``: the
    book was just built from a snapshot whose ``lastUpdateId`` is ``prev_u`` (rules 4 and 5),
    else it is synced up to ``prev_u`` (rule 6).

    Returns ``(start, stop)``: events ``[:start]`` are stale (already in the book: dropped),
    ``[start:stop]`` apply, and if ``stop < len(first)`` event ``stop`` does not follow -- a gap
    (the book is out of sync from there). ``start == stop == len`` with nothing to apply is not a
    gap: every event was stale.
    """
    n = len(first)
    if n == 0:
        return 0, 0
    if fresh:
        stale = last <= prev_u
        start = n if stale.all() else int(np.argmin(stale))
        if start == n:
            return n, n
        if not first[start] <= prev_u + 1 <= last[start]:
            return start, start
    else:
        start = 0
        if first[0] != prev_u + 1:
            # a replayed (already applied) event is stale, anything else is a gap
            stale = last <= prev_u
            start = int(np.argmin(stale)) if not stale.all() else n
            if start == n:
                return n, n
            if first[start] != prev_u + 1:
                return start, start
    follows = first[start + 1 :] == last[start:-1] + 1
    if follows.all():
        return start, n
    return start, start + 1 + int(np.argmin(follows))


@dataclass
class DepthEvents:
    """Decoded diff events of one symbol: per event ``U``, ``u``, event time, receive time, and
    the levels flattened (``level_event``: the event each level belongs to; ``side``: ord('B') or
    ord('A'); ``price`` 1e-9 and ``size`` 1e-8 fixed-point)."""

    first: np.ndarray
    last: np.ndarray
    ts_event: np.ndarray
    ts_recv: np.ndarray
    level_event: np.ndarray
    side: np.ndarray
    price: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def select(self, start: int, stop: int) -> DepthEvents:
        """Events ``start:stop`` (their levels with them; ``level_event`` renumbered)."""
        lo, hi = np.searchsorted(self.level_event, [start, stop])
        return DepthEvents(
            self.first[start:stop], self.last[start:stop], self.ts_event[start:stop],
            self.ts_recv[start:stop], self.level_event[lo:hi] - start, self.side[lo:hi],
            self.price[lo:hi], self.size[lo:hi],
        )  # fmt: skip

    @staticmethod
    def concat(parts: list[DepthEvents]) -> DepthEvents:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        return DepthEvents(
            *(np.concatenate([getattr(p, f) for p in parts])
              for f in ("first", "last", "ts_event", "ts_recv")),
            np.concatenate([p.level_event + o for p, o in zip(parts, offsets, strict=True)]),
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("side", "price", "size")),
        )  # fmt: skip


@dataclass
class Snapshot:
    """A REST depth snapshot: ``lastUpdateId``, bids and asks as ``(k, 2)`` int64 fixed-point
    ``(price, size)`` arrays, and when it was received (ns)."""

    last_update_id: int
    bids: np.ndarray
    asks: np.ndarray
    ts_recv: int


@dataclass
class DepthSync:
    """One symbol's synchronisation state between batches.

    ``feed(events)`` -> what to publish now: a list of ``("snapshot", Snapshot)``,
    ``("events", DepthEvents)`` and ``("gap", text)`` items in order. ``snapshot(s)`` hands it
    a fetched snapshot; ``need_snapshot`` says whether one should be requested now.
    """

    symbol: str
    max_buffered: int = 10_000
    state: int = WAITING
    prev_u: int = 0
    connection: int = 0
    fresh: bool = False  # synced from a snapshot no event has followed yet (rule 5 applies)
    buffer: list[DepthEvents] = field(default_factory=list)
    buffered: int = 0
    requested: bool = False
    pending: Snapshot | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {"gaps": 0, "resyncs": 0, "stale_dropped": 0,
                                 "buffer_dropped": 0, "snapshots_refetched": 0}
    )  # fmt: skip

    @property
    def need_snapshot(self) -> bool:
        return self.state == WAITING and not self.requested and self.buffered > 0

    def invalidate(self, why: str) -> list[tuple[str, object]]:
        """The book is no longer known good (gap, reconnect): wait for a new snapshot."""
        was = self.state
        self.state, self.buffer, self.buffered = WAITING, [], 0
        self.requested, self.pending = False, None
        return [("gap", why)] if was == SYNCED else []

    def feed(self, events: DepthEvents) -> list[tuple[str, object]]:
        if self.state == WAITING:
            self._buffer(events)
            return self._try_join()
        return self._continue(events)

    def snapshot(self, snap: Snapshot) -> list[tuple[str, object]]:
        self.requested = False
        if self.state != WAITING:
            return []
        self.pending = snap
        return self._try_join()

    # -- internals -----------------------------------------------------------------------------

    def _buffer(self, events: DepthEvents) -> None:
        self.buffer.append(events)
        self.buffered += len(events)
        if self.buffered > self.max_buffered:  # keep the newest: older ones predate any snapshot
            events = DepthEvents.concat(self.buffer)
            keep = events.select(self.buffered - self.max_buffered, self.buffered)
            self.counters["buffer_dropped"] += self.buffered - len(keep)
            self.buffer, self.buffered = [keep], len(keep)

    def _try_join(self) -> list[tuple[str, object]]:
        snap = self.pending
        if snap is None or not self.buffer:
            return []
        events = DepthEvents.concat(self.buffer)
        if snap.last_update_id + 1 < int(events.first[0]):
            # rule 3: the snapshot is older than the first buffered event: fetch another
            self.pending = None
            self.counters["snapshots_refetched"] += 1
            return []
        start, stop = check_updates(events.first, events.last, snap.last_update_id, fresh=True)
        self.counters["stale_dropped"] += start
        if start == len(events):
            # every buffered event is in the snapshot already (a quiet market): the snapshot is
            # the book; the next event must straddle lastUpdateId + 1 (rule 5)
            self.state, self.fresh, self.pending = SYNCED, True, None
            self.buffer, self.buffered = [], 0
            self.prev_u = snap.last_update_id
            self.counters["resyncs"] += 1
            return [("snapshot", snap)]
        if stop == start:  # the first event after the snapshot does not join it
            self.pending = None
            self.buffer, self.buffered = [events.select(start, len(events))], len(events) - start
            self.counters["snapshots_refetched"] += 1
            return []
        self.state, self.fresh, self.pending = SYNCED, False, None
        self.buffer, self.buffered = [], 0
        self.prev_u = int(events.last[stop - 1])
        self.counters["resyncs"] += 1
        out: list[tuple[str, object]] = [("snapshot", snap), ("events", events.select(start, stop))]
        if stop < len(events):
            out += self._gap(events, stop)
        return out

    def _continue(self, events: DepthEvents) -> list[tuple[str, object]]:
        start, stop = check_updates(events.first, events.last, self.prev_u, fresh=self.fresh)
        self.counters["stale_dropped"] += start
        out: list[tuple[str, object]] = []
        if stop > start:
            self.fresh = False
            out.append(("events", events.select(start, stop)))
            self.prev_u = int(events.last[stop - 1])
        if stop < len(events):
            out += self._gap(events, stop)
        return out

    def _gap(self, events: DepthEvents, at: int) -> list[tuple[str, object]]:
        self.counters["gaps"] += 1
        why = (f"{self.symbol}: update id gap, expected U={self.prev_u + 1} got "
               f"U={int(events.first[at])}")  # fmt: skip
        out = self.invalidate(why)
        self._buffer(events.select(at, len(events)))
        return out
