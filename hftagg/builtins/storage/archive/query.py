"""SQL over a store: DuckDB views over live segments and archived Parquet alike.

:func:`open_query` gives an in-memory DuckDB connection with one view per topic, named after
the topic with every character other than a letter, digit or ``_`` turned into ``_``
(``md.trades`` -> ``md_trades``). A view is the union of:

- the topic's archived partitions, read by DuckDB itself with ``read_parquet`` (row groups
  skipped by their statistics); a partition whose source segment still exists is left out,
  the segment (being archived at this moment) is read instead;
- the topic's segments (live and sealed), converted with :func:`hftagg.records.arrow
  .to_arrow_table` into Arrow tables DuckDB scans in place.

Both sides have the same column types (see :mod:`hftagg.records.arrow`): ``TIMESTAMPTZ_NS``
(UTC, nanoseconds) for times, ``DECIMAL(19, 9)`` prices and ``DECIMAL(19, 8)`` quantities, so
``avg(price)`` or ``max(ts_event)`` mean what they say. The session's time zone is UTC.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from hftagg.builtins.storage.archive import segments
from hftagg.builtins.storage.archive.catalog import (
    CATALOG_FILE,
    QUARANTINE_DIR,
    Catalog,
    CatalogUnusable,
)
from hftagg.errors import StorageError
from hftagg.records.arrow import to_arrow_table

__all__ = ["QuerySession", "TopicView", "open_query", "view_name"]

log = logging.getLogger("hftagg.store.query")


def view_name(topic: str) -> str:
    """``md.trades`` -> ``md_trades``."""
    return re.sub(r"\W", "_", topic, flags=re.ASCII)


@dataclass
class TopicView:
    topic: str
    view: str
    schemas: set[str] = field(default_factory=set)
    live_rows: int = 0
    archived_rows: int = 0
    files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        schemas = ", ".join(sorted(self.schemas)) or "no records"
        return (
            f"{self.view} (topic {self.topic}, {schemas}: {self.live_rows} live + "
            f"{self.archived_rows} archived rows)"
        )


@dataclass
class QuerySession:
    """A DuckDB connection with the store's views, and what they hold."""

    connection: duckdb.DuckDBPyConnection
    views: dict[str, TopicView]
    problems: list[str]

    def view_list(self) -> str:
        return "; ".join(v.describe() for v in self.views.values()) or "none (the store is empty)"

    def sql(self, text: str) -> duckdb.DuckDBPyRelation:
        """Run ``text``; a DuckDB error becomes a :class:`StorageError` listing the views."""
        try:
            relation = self.connection.sql(text)
        except duckdb.Error as exc:
            raise StorageError(
                f"query failed: {exc}\nviews: {self.view_list()}\nquote a view or column "
                f'whose name needs it ("md_trades"); DuckDB SQL reference: '
                f"https://duckdb.org/docs/sql/introduction"
            ) from exc
        if relation is None:
            raise StorageError(
                f"{text!r} returns no rows (a statement, not a query); the store's views are "
                f"read-only: {self.view_list()}"
            )
        return relation

    def close(self) -> None:
        self.connection.close()


def _topics(root: Path, catalogued: list[str]) -> list[str]:
    on_disk = [
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and p.name != QUARANTINE_DIR
        and (any(p.glob("*.seg")) or any(p.glob("date=*/*.parquet")))
    ]
    return sorted(set(on_disk) | set(catalogued))


def _live(root: Path, problems: list[str]) -> dict[str, dict[str, list]]:
    """topic -> schema key -> [(segment info, records)] for every readable segment."""
    live: dict[str, dict[str, list]] = {}
    for path, info, error in segments.all_segments(root):
        if info is None:
            problems.append(error)
            continue
        try:
            records = segments.records(info)
        except FileNotFoundError:
            continue  # archived and deleted since it was listed: the catalog, read next, has it
        problems.extend(info.problems)
        by_schema = live.setdefault(path.parent.name, {})
        by_schema.setdefault(info.schema.key, []).append((info, records))
    return live


def _archived(root: Path, problems: list[str]) -> list | None:
    """The catalogued partitions; None when there is no usable catalog (then every Parquet
    file found under a topic is read)."""
    if not (root / CATALOG_FILE).exists():
        return None
    try:
        return Catalog(root).partitions()
    except CatalogUnusable as exc:
        problems.append(f"{exc}; archived partitions are read from the files found instead")
        return None


def open_query(path: str | Path) -> QuerySession:
    """A query session over the store at ``path`` (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise StorageError(
            f"{root}: no store here; give --path the store stage's path (./storage by default)"
        )
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    problems: list[str] = []
    live = _live(root, problems)  # first: a segment archived meanwhile is then in the catalog
    archived = _archived(root, problems)
    live_sources = {
        Path(info.path).relative_to(root).as_posix()
        for schemas in live.values()
        for pieces in schemas.values()
        for info, _ in pieces
    }
    catalogued = sorted({p.topic for p in archived}) if archived is not None else []
    views: dict[str, TopicView] = {}
    for topic in _topics(root, catalogued):
        view = TopicView(topic, view_name(topic))
        parts = []
        if archived is None:
            # a file whose segment is still there (a crash before the catalog had it): the
            # segment is read instead, as with a catalog, so no record is counted twice
            files = sorted((root / topic).glob("date=*/*.parquet"))
            live_stems = {Path(s).stem for s in live_sources if Path(s).parent.name == topic}
            view.files = [f.as_posix() for f in files if f.stem not in live_stems]
        else:
            mine = [p for p in archived if p.topic == topic and p.source not in live_sources]
            view.files = [(root / p.file).as_posix() for p in mine]
            view.archived_rows = sum(p.rows for p in mine)
            view.schemas.update(p.schema for p in mine)
        if view.files:
            parts.append(f"SELECT * FROM read_parquet({view.files!r}, hive_partitioning=false)")
        for n, (key, pieces) in enumerate(sorted(live.get(topic, {}).items())):
            records = np.concatenate([r for _, r in pieces])
            table = to_arrow_table(records, pieces[0][0].schema)
            name = f"{view.view}__live{n}"
            con.register(name, table)
            parts.append(f'SELECT * FROM "{name}"')
            view.live_rows += len(records)
            view.schemas.add(key)
        if not parts:
            continue
        if view.view in views:
            raise StorageError(
                f"topics {views[view.view].topic!r} and {topic!r} both map to view "
                f"{view.view!r}; rename one of the topics"
            )
        con.execute(f'CREATE VIEW "{view.view}" AS ' + " UNION ALL BY NAME ".join(parts))
        views[view.view] = view
    return QuerySession(con, views, problems)
