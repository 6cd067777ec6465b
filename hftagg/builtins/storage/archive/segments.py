"""The archive's view of the store's segments (format owned by ``store``: ``segment.py``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hftagg.builtins.storage.store.layout import list_segments, list_topics
from hftagg.builtins.storage.store.segment import SegmentInfo, open_records, read_header
from hftagg.errors import StorageError

__all__ = ["SETTLE_NS", "all_segments", "records", "sealed_segments"]

log = logging.getLogger("hftagg.store.compact")

#: a segment sealed less than this long ago may still be being truncated by its writer (the
#: sealed flag is set before the truncation): it is left for the next pass
SETTLE_NS = 2 * 10**9


def all_segments(root: Path) -> Iterator[tuple[Path, SegmentInfo | None, str]]:
    """Every segment file of every topic: ``(file, header or None, error)``."""
    for topic in list_topics(root):
        for path in list_segments(root, topic):
            try:
                info = read_header(path)
            except StorageError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue  # archived and deleted since it was listed
                yield path, None, str(exc)
                continue
            yield path, info, ""


def sealed_segments(
    root: Path, now_ns: int | None = None, settle_ns: int = SETTLE_NS
) -> Iterator[SegmentInfo]:
    """The sealed segments ready to archive, oldest first per topic; live ones are skipped, and
    a file that is not a readable segment is logged and left for ``hftagg store verify``."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    for path, info, error in all_segments(root):
        if info is None:
            log.warning("not archiving %s: %s", path, error)
        elif info.sealed and now_ns - info.sealed_ns >= settle_ns:
            yield info


def records(info: SegmentInfo) -> np.ndarray:
    """The segment's usable records (memory-mapped)."""
    return open_records(info)
