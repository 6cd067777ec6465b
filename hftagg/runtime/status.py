"""Human-readable status: one line per interval while running, and a summary at the end."""

from __future__ import annotations

import time
from typing import Any

from hftagg.runtime.pipeline import Pipeline

__all__ = ["StatusReporter", "format_summary"]


def _rate(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


class StatusReporter:
    """Per stage, since the previous line: records/s, mean batch size, ring backlog, drops."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._last_time = time.monotonic()
        self._last = self._counts()

    def _counts(self) -> dict[str, tuple[int, int]]:
        out = {}
        for node in self.pipeline.graph.nodes:
            s = self.pipeline.stats[node.id]
            if node.role == "source":
                out[node.id] = (s.records_out, s.batches_out)
            else:
                out[node.id] = (s.records_in, s.batches_in)
        return out

    def line(self) -> str:
        now = time.monotonic()
        counts = self._counts()
        dt = max(now - self._last_time, 1e-9)
        parts = []
        for node in self.pipeline.graph.nodes:
            records, batches = counts[node.id]
            last_records, last_batches = self._last[node.id]
            d_records, d_batches = records - last_records, batches - last_batches
            mean = d_records / d_batches if d_batches else 0.0
            text = f"{node.id} {_rate(d_records / dt)} rec/s batch {mean:.1f}"
            if node.role != "source":
                text += f" backlog {self.pipeline.backlog(node.id)}"
                text += f" drops {self.pipeline.drops(node.id)}"
            if node.role == "sink":
                lost = node.stage.counters().get("frames_lost", 0)
                text += f" lost {lost} frames" if lost else ""
            parts.append(text)
        self._last, self._last_time = counts, now
        return f"[{self.pipeline.elapsed():7.1f}s] " + " | ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"hftagg summary: ran {summary['elapsed_secs']:.2f}s"]
    for stage_id, s in summary["stages"].items():
        lines.append(
            f"  {stage_id:<16} {s['type']:<14} {s['records']:>12,} records "
            f"{s['batches']:>9,} batches  mean batch {s['mean_batch']:8.1f}  "
            f"{_rate(s['records_per_sec']):>7} rec/s  backlog {s['backlog']}  drops {s['drops']}"
        )
        if "frames_sent" in s:  # a publisher: what reached its peers
            lines.append(
                f"  {'':<16} frames sent {s['frames_sent']:,}, lost {s['frames_lost']:,} "
                f"(never reached a peer), still queued {s['frames_queued']:,}, "
                f"peers {s['peers']}"
            )
    if summary.get("left_over"):
        lines.append(f"  drain timed out: {summary['left_over']} records were not processed")
    return "\n".join(lines)
