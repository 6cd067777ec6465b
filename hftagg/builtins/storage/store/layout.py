"""The store's folder layout: one folder per topic, segment files named by store position.

::

    <path>/                       the store (``path`` of the ``store`` stage, ``./storage``)
      md.trades/                  one folder per topic (the topic name as is)
        00000000000000000000.seg  segments, name = store position of their first record
        00000000000000349524.seg
        LOCK                      held (flock) by the one process writing this topic
        STATE                     JSON: where the topic stands after its last sealed segment
                                  (position, end offset, epoch, durable), so the numbering and
                                  the committed offset survive the archiving of every segment
      md.book/ ...

What ``catalog`` archives (Parquet partitions) it lists through :func:`archived_partitions`,
the seam :func:`hftagg.read` reads them through.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from hftagg.builtins.storage.store.segment import SEGMENT_SUFFIX, SegmentInfo, read_header
from hftagg.errors import StorageError

__all__ = [
    "TopicLock",
    "archived_end",
    "archived_partitions",
    "list_segments",
    "list_topics",
    "read_state",
    "register_partition_lister",
    "segment_infos",
    "topic_dir",
    "topic_problem",
    "write_state",
]

log = logging.getLogger("hftagg.storage")

_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot name a folder (``None`` when it can)."""
    if not _TOPIC.match(topic) or ".." in topic:
        return (
            f"topic {topic!r} cannot be stored: use letters, digits, '_', '-' and single dots "
            f"(it names a folder)"
        )
    return None


def topic_dir(path: str | Path, topic: str) -> Path:
    problem = topic_problem(topic)
    if problem:
        raise StorageError(problem)
    return Path(path) / topic


def list_topics(path: str | Path) -> list[str]:
    """Topics with a folder in the store at ``path`` (sorted)."""
    root = Path(path)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not topic_problem(p.name))


def list_segments(path: str | Path, topic: str) -> list[Path]:
    """The segment files of ``topic``, in store order."""
    folder = topic_dir(path, topic)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SEGMENT_SUFFIX and p.is_file())


def segment_infos(path: str | Path, topic: str, schemas: Iterable = ()) -> list[SegmentInfo]:
    """The headers of ``topic``'s segments, in store order (problems inside each); a segment
    deleted meanwhile (the archive took it) is left out."""
    infos = []
    for segment in list_segments(path, topic):
        try:
            infos.append(read_header(segment, schemas))
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                continue  # archived and deleted since it was listed: its partition has it
            raise
    return infos


# -- archived partitions (Parquet, owned by the catalog) ----------------------------------------

_partition_listers: list[Callable[[Path, str], list]] = []


def register_partition_lister(lister: Callable[[Path, str], list]) -> None:
    """The catalog registers ``lister(store_path, topic) -> [partition, ...]``.

    A partition has ``path``, ``schema_key`` (``"trade@2"``), ``ts_min``, ``ts_max`` (its
    ``ts_event`` range, ns), ``rows``, ``position`` (store position of its first row) and
    ``read(schema) -> record array``. ``hftagg.read`` reads partitions first, then the segments
    no partition fully covers (by store position), so a segment archived but not yet deleted
    is not read twice."""
    if lister not in _partition_listers:
        _partition_listers.append(lister)


def _load_archive() -> None:
    """Import the built-in archive (Parquet + DuckDB catalog): it registers its lister."""
    try:
        import hftagg.builtins.storage.archive  # noqa: F401
    except ImportError as exc:  # pyarrow or duckdb missing: live segments only
        log.debug("archived partitions not listed: %s", exc)


def archived_partitions(path: str | Path, topic: str) -> list:
    """Archived partitions of ``topic`` (from every registered lister), in store order."""
    _load_archive()
    found = []
    for lister in _partition_listers:
        found.extend(lister(Path(path), topic))
    return sorted(found, key=lambda p: p.position)


def archived_end(path: str | Path, topic: str) -> int:
    """The store position after the last archived row of ``topic`` (0: nothing archived)."""
    rows: dict[int, int] = {}
    for part in archived_partitions(path, topic):
        rows[part.position] = rows.get(part.position, 0) + part.rows
    return max((position + n for position, n in rows.items()), default=0)


# -- the topic's state after its last sealed segment ----------------------------------------------


def read_state(folder: Path) -> dict | None:
    """``STATE`` of a topic folder: ``position``, ``end_offset``, ``epoch``, ``durable``."""
    try:
        state = json.loads((folder / "STATE").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"{folder / 'STATE'}: unreadable ({exc}); delete it: the segments tell the rest"
        ) from exc
    return state if isinstance(state, dict) else None


def write_state(folder: Path, state: dict, fsync: bool) -> None:
    """Replace ``STATE`` atomically (write a temporary file, rename)."""
    temporary = folder / "STATE.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(state, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(temporary, folder / "STATE")


# -- one writer per topic -------------------------------------------------------------------------


class TopicLock:
    """An exclusive ``flock`` on ``<topic>/LOCK``: one process writes a topic at a time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "LOCK"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StorageError(
                f"{folder}: topic is being written by another process (pid {holder}); stop it "
                f"or give this store another path"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
