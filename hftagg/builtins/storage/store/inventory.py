"""What a store holds, per topic: records, time range, instruments, bytes, segments live and
sealed, archived partitions (what ``hftagg store ls`` prints).

Instruments of live segments are found by scanning their ``instrument_id`` column (memory-mapped,
one ``np.unique`` per segment); archived partitions list theirs in the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hftagg.builtins.storage.store.layout import (
    archived_partitions,
    list_segments,
    list_topics,
    segment_infos,
)
from hftagg.builtins.storage.store.segment import open_records

__all__ = ["TopicSummary", "summarize", "summarize_topic"]


@dataclass
class TopicSummary:
    topic: str
    schemas: list[str] = field(default_factory=list)
    records: int = 0
    ts_min: int | None = None
    ts_max: int | None = None
    instruments: list[int] = field(default_factory=list)
    segment_bytes: int = 0
    segments_live: int = 0
    segments_sealed: int = 0
    archived_files: int = 0
    archived_records: int = 0
    archived_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.segment_bytes + self.archived_bytes

    def _range(self, low: int, high: int) -> None:
        self.ts_min = low if self.ts_min is None else min(self.ts_min, low)
        self.ts_max = high if self.ts_max is None else max(self.ts_max, high)


def summarize_topic(path: str | Path, topic: str) -> TopicSummary:
    """Everything ``hftagg store ls`` says about one topic."""
    out = TopicSummary(topic)
    instruments: set[int] = set()
    live = []
    for info in segment_infos(path, topic):
        live.append((info.position, info.position + max(info.count, 1)))
        out.problems.extend(info.problems)
        if info.schema.key not in out.schemas:
            out.schemas.append(info.schema.key)
        out.records += info.count
        out.segment_bytes += info.file_bytes
        if info.sealed:
            out.segments_sealed += 1
        else:
            out.segments_live += 1
        if not info.count:
            continue
        records = open_records(info)
        if info.ts_min or info.ts_max:
            out._range(info.ts_min, info.ts_max)
        elif "ts_event" in records.dtype.names:  # format 0 kept no range
            out._range(int(records["ts_event"].min()), int(records["ts_event"].max()))
        if "instrument_id" in records.dtype.names:
            instruments.update(np.unique(records["instrument_id"]).tolist())
    for part in archived_partitions(path, topic):
        if any(a <= part.position < b for a, b in live):
            continue  # being archived right now: counted as a segment
        schema = getattr(getattr(part, "entry", None), "schema", "")
        if schema and schema not in out.schemas:
            out.schemas.append(schema)
        out.archived_files += 1
        out.archived_records += part.rows
        out.records += part.rows
        out.archived_bytes += part.path.stat().st_size if part.path.exists() else 0
        out._range(part.ts_min, part.ts_max)
        instruments.update(getattr(part, "instruments", ()))
    out.instruments = sorted(instruments)
    return out


def summarize(path: str | Path) -> list[TopicSummary]:
    """One summary per topic with segments or archived partitions under ``path``."""
    found = []
    for topic in list_topics(path):
        summary = summarize_topic(path, topic)
        if summary.records or list_segments(path, topic) or summary.archived_files:
            found.append(summary)
    return found
