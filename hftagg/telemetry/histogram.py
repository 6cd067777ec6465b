"""Fixed-bucket histograms updated once per batch (numpy), one bucket increment per value.

OpenTelemetry's Python SDK records one value per call (3-5 us each here), so recording a latency
per record is out of the question at millions of records per second. hftagg keeps its own
cumulative bucket counts -- ``np.searchsorted`` + ``np.bincount`` per batch -- and exports them
(Prometheus ``_bucket``/``_sum``/``_count``, ``/metrics.json`` for ``hftagg top``).
"""

from __future__ import annotations

import bisect

import numpy as np

__all__ = ["LATENCY_BOUNDS_NS", "Histogram"]

_FEW = 8  # observe_many goes value by value up to this many (numpy's per-call cost is ~us)

#: 1 us .. 1 s, ten buckets per decade (each bound ~1.26x the last), in nanoseconds; one
#: more bucket catches everything above.
LATENCY_BOUNDS_NS = np.round(np.logspace(3, 9, 61)).astype(np.int64)


class Histogram:
    """Cumulative counts per bucket (upper bounds inclusive, Prometheus ``le`` semantics)."""

    def __init__(self, bounds: np.ndarray = LATENCY_BOUNDS_NS) -> None:
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self._bounds_list = self.bounds.tolist()
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: +Inf
        self.sum = 0
        self.count = 0

    def observe(self, value: int) -> None:
        """One value (e.g. a batch's processing time); about half a microsecond."""
        self.counts[bisect.bisect_left(self._bounds_list, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: np.ndarray, weight: float = 1.0) -> None:
        """Every value of a batch at once (e.g. each record's latency); ``weight`` > 1 when the
        values are a sample, each standing for that many (totals stay whole numbers)."""
        n = len(values)
        if not n:
            return
        if n <= _FEW and weight == 1.0:  # a small batch: cheaper than two numpy calls
            bounds, counts, total = self._bounds_list, self.counts, 0
            for value in values.tolist():
                counts[bisect.bisect_left(bounds, value)] += 1
                total += value
            self.sum += total
            self.count += n
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self.counts))
        if weight != 1.0:
            total = int(round(len(values) * weight))
            scaled = np.floor(counts * weight).astype(np.int64)
            scaled[int(np.argmax(counts))] += total - int(scaled.sum())
            counts = scaled
        self.counts += counts
        self.sum += int(values.sum() * weight)
        self.count += int(counts.sum())

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)

    def quantile(self, q: float) -> float:
        """Quantile ``q`` interpolated within its bucket, as Prometheus' histogram_quantile does
        (nan when empty; the largest bound when it falls past it)."""
        return quantile_from_counts(self.bounds, self.counts, q)

    def as_dict(self) -> dict:
        return {
            "bounds": self._bounds_list,
            "counts": self.counts.tolist(),
            "sum": self.sum,
            "count": self.count,
        }


def quantile_from_counts(bounds: np.ndarray, counts: np.ndarray, q: float) -> float:
    """Linear interpolation inside the bucket that holds rank ``q * total``."""
    total = int(counts.sum())
    if not total:
        return float("nan")
    cumulative = np.cumsum(counts)
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(bounds):
        return float(bounds[-1])
    lower = float(bounds[i - 1]) if i else 0.0
    below = float(cumulative[i - 1]) if i else 0.0
    in_bucket = float(counts[i])
    fraction = (rank - below) / in_bucket if in_bucket else 1.0
    return lower + (float(bounds[i]) - lower) * fraction
