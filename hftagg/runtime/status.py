"""Human-readable status while running, and the summary at the end.

Every interval the reporter computes one row per stage, over the interval just ended:

====================  =========================================================================
``in/s``              records read per second (sources: ``-``)
``out/s``             records emitted per second (sinks: ``-``); a decoder reads raw chunks
                      and emits records, so both are shown
``batch``             mean batch size read (sources: emitted)
``backlog``           records waiting in its input rings now
``drops``             records its lossy readers skipped, since start
``dead``              records it wrote to dead-letter topics, since start
``p99``               99th percentile of its per-batch processing time over the interval
                      (from the telemetry histograms; ``-`` when there is none)
====================  =========================================================================

On a terminal (``hftagg run`` with stdout a tty) it is a compact table redrawn in place; when
not (a pipe, a log file, CI) it is one plain line per interval. Stages come and go with live
changes: an added stage appears at the next interval, a removed one disappears (the summary still
lists it). A stage isolated after an exception (``on_error = "isolate"``) is marked ``FAILED``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hftagg.runtime.pipeline import Pipeline
from hftagg.telemetry.histogram import quantile_from_counts

__all__ = [
    "StageRow",
    "StatusReporter",
    "TableRedraw",
    "format_ring_memory",
    "format_summary",
]


def _progress(stage: Any) -> str:
    """A source's ``progress()`` as text: ``42.0% at <clock>`` (empty when it has none)."""
    progress = stage.progress() if hasattr(stage, "progress") else None
    if not progress:
        return ""
    clock = progress.get("clock")
    return f"{progress['percent']:.1f}%" + (f" at {clock}" if clock and clock != "-" else "")


def _rate(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def _duration(ns: float) -> str:
    if math.isnan(ns):
        return "-"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f}s"
    if ns >= 1e6:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e3:.0f}us"


@dataclass
class StageRow:
    """One stage over one interval."""

    stage_id: str
    role: str
    in_per_sec: float | None  # None: not applicable (a source reads nothing)
    out_per_sec: float | None  # None: not applicable (a sink emits nothing)
    mean_batch: float
    backlog: int
    drops: int
    dead_letters: int
    p99_ns: float  # nan: unknown
    failed: bool = False
    frames_lost: int = 0  # a sink's frames its transport could not deliver, since start
    backend: str = ""  # an external sink's state when not plainly caught up (external_note)
    progress: str = ""  # a bounded source's progress ("42.0% at 2026-01-02T09:41:00Z")


def external_note(counters: dict[str, int]) -> str:
    """An external sink's (PostgreSQL, MongoDB) state for a status line, when it is not plainly
    caught up: ``retrying (12) pending 1.2M spilled 800.0k (52.1 MiB on disk)``; "" otherwise."""
    if "connected" not in counters:
        return ""
    backlog, spill = counters.get("pending", 0), counters.get("spill_bytes", 0)
    if counters["connected"] and not spill and backlog < 100_000:
        return ""
    state = "connected" if counters["connected"] else f"retrying ({counters.get('retries', 0)})"
    text = f"{state} pending {_rate(backlog)}"
    if counters.get("spilled"):
        text += f" spilled {_rate(counters['spilled'])} ({_bytes(spill)} on disk)"
    if counters.get("dropped"):
        text += f" LOST {counters['dropped']}"
    return text


class StatusReporter:
    """Rows per stage since the previous call; ``line()`` plain, ``table()`` for a terminal."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        # the first interval runs from the pipeline's start (everything so far counts), or from
        # now for a pipeline not started yet
        self._last_time = pipeline.started_at or time.monotonic()
        self._last: dict[str, tuple[int, int, int]] = {}
        self._last_hist: dict[str, np.ndarray] = {}

    def _counts(self) -> dict[str, tuple[int, int, int]]:
        """(records read or emitted by a source, batches, records out) per stage id now."""
        out = {}
        for node in list(self.pipeline.graph.nodes):
            s = self.pipeline.stats.get(node.id)
            if s is None:
                continue
            if node.role == "source":
                out[node.id] = (s.records_out, s.batches_out, s.records_out)
            else:
                out[node.id] = (s.records_in, s.batches_in, s.records_out)
        self._last, previous = out, self._last
        return previous

    def _p99(self, stage_id: str) -> float:
        tel = self.pipeline.telemetry
        hist = tel.processing.get(stage_id) if tel is not None else None
        if hist is None:
            return math.nan
        counts = hist.counts.copy()
        last = self._last_hist.get(stage_id)
        self._last_hist[stage_id] = counts
        delta = counts - last if last is not None else counts
        return quantile_from_counts(hist.bounds, delta, 0.99)

    def rows(self) -> list[StageRow]:
        """One row per stage in the running graph, over the interval since the last call."""
        now = time.monotonic()
        dt = max(now - self._last_time, 1e-9)
        self._last_time = now
        previous = self._counts()
        isolated = self.pipeline.isolated
        rows = []
        for node in list(self.pipeline.graph.nodes):
            if node.id not in self._last:
                continue
            records, batches, out = self._last[node.id]
            # a stage added since the last interval starts from zero
            last_records, last_batches, last_out = previous.get(node.id, (0, 0, 0))
            d_records, d_batches = records - last_records, batches - last_batches
            stats = self.pipeline.stats[node.id]
            counters = node.stage.counters() if node.role == "sink" else {}
            rows.append(
                StageRow(
                    stage_id=node.id,
                    role=node.role,
                    in_per_sec=None if node.role == "source" else d_records / dt,
                    out_per_sec=None if node.role == "sink" else (out - last_out) / dt,
                    mean_batch=d_records / d_batches if d_batches else 0.0,
                    backlog=self.pipeline.backlog(node.id),
                    drops=self.pipeline.drops(node.id),
                    dead_letters=stats.dead_letters,
                    p99_ns=self._p99(node.id),
                    failed=node.id in isolated,
                    frames_lost=counters.get("frames_lost", 0),
                    backend=external_note(counters),
                    progress=_progress(node.stage) if node.role == "source" else "",
                )
            )
        return rows

    def _stamp(self) -> str:
        return f"[{self.pipeline.elapsed():7.1f}s]"

    def line(self) -> str:
        """One plain line (for pipes and logs)."""
        parts = []
        for r in self.rows():
            if r.in_per_sec is None:
                text = f"{r.stage_id} {_rate(r.out_per_sec)} rec/s batch {r.mean_batch:.1f}"
            else:
                text = f"{r.stage_id} {_rate(r.in_per_sec)} rec/s"
                if r.out_per_sec is not None:
                    text += f" out {_rate(r.out_per_sec)}/s"
                text += f" batch {r.mean_batch:.1f} backlog {r.backlog} drops {r.drops}"
            if r.dead_letters:
                text += f" dead {r.dead_letters}"
            if not math.isnan(r.p99_ns):
                text += f" p99 {_duration(r.p99_ns)}"
            if r.frames_lost:
                text += f" lost {r.frames_lost} frames"
            if r.backend:
                text += f" {r.backend}"
            if r.progress:
                text += f" {r.progress}"
            if r.failed:
                text += " FAILED"
            parts.append(text)
        return f"{self._stamp()} " + " | ".join(parts)

    def table(self) -> str:
        """A compact table, one row per stage (for a terminal, redrawn each interval)."""
        head = ("stage", "in/s", "out/s", "batch", "backlog", "drops", "dead", "p99", "")
        body = []
        for r in self.rows():
            body.append(
                (
                    r.stage_id,
                    "-" if r.in_per_sec is None else _rate(r.in_per_sec),
                    "-" if r.out_per_sec is None else _rate(r.out_per_sec),
                    f"{r.mean_batch:.1f}",
                    str(r.backlog),
                    str(r.drops),
                    str(r.dead_letters),
                    _duration(r.p99_ns),
                    " ".join(
                        (["FAILED"] if r.failed else [])
                        + ([f"lost {r.frames_lost} frames"] if r.frames_lost else [])
                        + ([r.backend] if r.backend else [])
                        + ([r.progress] if r.progress else [])
                    ),
                )
            )
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        lines = [f"hftagg {self._stamp()}"]
        for row in [head, *body]:
            cells = [row[0].ljust(widths[0])]
            cells += [
                cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)
            ]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
        return "\n".join(lines)


class TableRedraw:
    """Turns successive tables into terminal output that overwrites the previous one."""

    def __init__(self) -> None:
        self._height = 0

    def __call__(self, table: str) -> str:
        # cursor up over the last table, then clear to the end of the screen
        prefix = f"\x1b[{self._height}F\x1b[J" if self._height else ""
        self._height = table.count("\n") + 1
        return prefix + table


def _bytes(n: float) -> str:
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def format_ring_memory(memory: dict[str, Any]) -> list[str]:
    """What the rings take, for the start of ``hftagg run``: the total, each ring, and the
    topics that have no ring because nobody reads them."""
    rings = memory["rings"]
    lines = [f"ring memory: {_bytes(memory['total_bytes'])} in {len(rings)} rings"]
    for topic, r in rings.items():
        lines.append(
            f"  {topic:<24} {_bytes(r['bytes']):>10}  "
            f"({r['records']:,} records of {r['record_bytes']} B)"
        )
    if memory["unread_topics"]:
        lines.append(
            f"  no ring (nobody reads them; records written there are counted, not kept): "
            f"{', '.join(memory['unread_topics'])}"
        )
    return lines


def _external_summary(s: dict[str, Any]) -> str:
    line = (
        f"  {'':<16} written {s['written']:,}; spilled {s['spilled']:,} to disk; "
        f"retries {s['retries']}"
    )
    if s["pending"]:
        line += f"; NOT YET WRITTEN {s['pending']:,} (kept in the spill for the next run)"
    if s.get("dropped"):
        line += f"; LOST {s['dropped']:,} (a damaged spill file: see the log)"
    return line


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"hftagg summary: ran {summary['elapsed_secs']:.2f}s"]
    for stage_id, s in summary["stages"].items():
        line = (
            f"  {stage_id:<16} {s['type']:<14} {s['records']:>12,} records "
            f"{s['batches']:>9,} batches  mean batch {s['mean_batch']:8.1f}  "
            f"{_rate(s['records_per_sec']):>7} rec/s  backlog {s['backlog']}  drops {s['drops']}"
        )
        if s.get("role") == "core" and s.get("records_out", 0) != s["records"]:
            line += f"  out {s['records_out']:,}"  # a decoder: chunks in, records out
        if s.get("dead_letters"):
            line += f"  dead letters {s['dead_letters']}"
        if s.get("progress"):
            line += f"  replayed {s['progress']['percent']:.1f}%"
            clock = s["progress"].get("clock")
            line += f" (up to {clock})" if clock and clock != "-" else ""
        if "added_secs" in s:
            line += f"  (added at {s['added_secs']:.1f}s)"
        if s.get("state") == "removed":
            line += f"  (removed at {s['removed_secs']:.1f}s)"
        elif s.get("state") == "failed":
            line += f"  FAILED: {s['error']}"
        lines.append(line)
        if "frames_sent" in s:  # a publisher: what reached its peers
            lines.append(
                f"  {'':<16} frames sent {s['frames_sent']:,}; never reached a peer "
                f"{s['frames_lost']:,}; still queued {s['frames_queued']:,}; "
                f"peers {s['peers']}"
            )
        if "connected" in s:  # an external sink (PostgreSQL, MongoDB): outages and spill
            lines.append(_external_summary(s))
    return "\n".join(lines + _run_notes(summary))


def _run_notes(summary: dict[str, Any]) -> list[str]:
    """Lines after the stages: what a stop left behind, the write-ahead log."""
    lines = []
    if summary.get("left_over"):
        lines.append(f"  drain timed out: {summary['left_over']} records were not processed")
    if summary.get("discarded"):
        lines.append(
            f"  stopped hard: {summary['discarded']} records stages produced were discarded "
            f"(their rings were full)"
        )
    if summary.get("durability"):
        lines.append(_durability_summary(summary["durability"]))
    if summary.get("instruments", {}).get("defined"):
        lines.append(_instruments_summary(summary["instruments"]))
    return lines


def _instruments_summary(s: dict[str, Any]) -> str:
    """Instruments sources defined while running (not in any file yet), and how to keep them."""
    more = s["defined"] - len(s["examples"])
    names = ", ".join(s["examples"]) + (f" and {more} more" if more > 0 else "")
    return (
        f"  instruments: {s['known']:,} known; {s['defined']:,} defined by sources while "
        f"running ({names}); keep them with `hftagg symbols add`"
    )


def _durability_summary(d: dict[str, Any]) -> str:
    """One line on the write-ahead log: what was logged and replayed, what is missing."""
    line = (
        f"  write-ahead log {d['path']} (fsync {d['fsync']}): {d['logged_batches']:,} batches, "
        f"{d['logged_bytes'] / 1e6:,.1f} MB logged, {d['replayed']:,} records replayed"
    )
    if d.get("restored"):
        line += f"; core restored from its checkpoint ({', '.join(d['restored'])})"
    if d.get("unavailable"):
        line += f"; {d['unavailable']:,} records a sink needed were not in the log"
    if d.get("cut"):
        line += f"; {d['cut']}"
    return line
