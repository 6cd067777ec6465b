"""The k-way merge of stored topics by ``ts_event``, vectorised per batch.

Each topic is a stream in store order (the order the live pipeline published it). The merged
order is the order of the key ``(ts_event, topic index, stream position)``, with one refinement
so that a topic's own order is never changed: a topic's merge key is the running maximum of its
``ts_event`` (:func:`merge_keys`). For a topic whose ``ts_event`` never decreases (the usual
case, flagged in each segment's header) that is ``ts_event`` itself; a record whose ``ts_event``
steps back stays right behind its predecessor, exactly where ``heapq.merge`` would put it.

One merge step (:func:`merge_step`) takes a window of the next records of every topic (the
keys only), concatenates them in topic order, and sorts them with ``np.argsort(kind="stable")``
(timsort finds the sorted runs, so this is a merge of k runs, O(n log k)): ties on the key are
then broken by topic order, then by stream position. A record may be emitted only when no record
still unread can sort before it: for a topic with records beyond its window, everything after
the window sorts after the window's last record, so the merged prefix up to the first such
"boundary" record is final. At least one record is always final, so every step makes progress.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MergedRun", "merge_keys", "merge_step"]


def merge_keys(ts_event: np.ndarray, floor: int) -> np.ndarray:
    """The merge keys of consecutive records of one topic: the running maximum of ``ts_event``,
    starting from ``floor`` (the key of the topic's previous record; ``INT64_MIN`` at first)."""
    keys = np.maximum.accumulate(ts_event.astype(np.int64, copy=True))
    if len(keys) and keys[0] < floor:
        np.maximum(keys, floor, out=keys)
    return keys


class MergedRun:
    """A final stretch of the merged order: ``keys`` (non-decreasing) and ``topic`` (the index of
    the topic each merged record comes from), consumed from the front by :meth:`take`."""

    __slots__ = ("keys", "topic", "pos", "topics")

    def __init__(self, keys: np.ndarray, topic: np.ndarray, topics: int) -> None:
        self.keys = keys
        self.topic = topic
        self.topics = topics
        self.pos = 0

    def __len__(self) -> int:
        return len(self.keys) - self.pos

    def take(self, n: int) -> np.ndarray:
        """Consume the next ``n`` merged records; returns how many come from each topic (each
        topic's records are the next ones of its stream, in stream order)."""
        part = self.topic[self.pos : self.pos + n]
        self.pos += len(part)
        return np.bincount(part, minlength=self.topics)

    def peek_keys(self) -> np.ndarray:
        return self.keys[self.pos :]


def merge_step(windows: list[np.ndarray], more: list[bool]) -> MergedRun:
    """Merge the key windows of every topic (``windows[t]``: the keys of topic ``t``'s next
    records; ``more[t]``: whether records follow the window) into the longest final prefix.

    A topic with ``more[t]`` must have a non-empty window. Returns at least one record when any
    window is non-empty."""
    k = len(windows)
    lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=k)
    live = np.flatnonzero(lengths)
    if len(live) == 1:  # one topic has records: its window is final as it is
        t = int(live[0])
        return MergedRun(windows[t], np.full(len(windows[t]), t, dtype=np.intp), k)
    keys = np.concatenate(windows)
    topic = np.repeat(np.arange(k, dtype=np.intp), lengths)
    order = np.argsort(keys, kind="stable")
    final = len(keys)
    ends = np.cumsum(lengths)
    bounded = [t for t in range(k) if more[t]]
    if bounded:
        rank = np.empty(len(order), dtype=np.intp)
        rank[order] = np.arange(len(order), dtype=np.intp)
        final = int(rank[ends[bounded] - 1].min()) + 1
    order = order[:final]
    return MergedRun(keys[order], topic[order], k)
