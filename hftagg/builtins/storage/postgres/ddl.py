"""Creating and upgrading the tables (``hftagg store migrate``, and each sink at connect).

Per table: the columns of its record schema (``layout.py``), an index on
``(instrument_id, ts_event)``, and time partitioning on ``ts_event`` (ns since the epoch, UTC):

- a TimescaleDB hypertable (one-day chunks) when the ``timescaledb`` extension is available to
  the server (it is created in the database if needed);
- native declarative partitioning otherwise: ``PARTITION BY RANGE (ts_event)`` with one
  partition per UTC day, ``<table>_pYYYYMMDD``, created ahead as data arrives (the sink makes
  the days of each batch, and the next day, before copying it; see ``Partitions``).

Bookkeeping lives in three tables of the same schema:

- ``hftagg_tables``: per table, the record schema name, version and fingerprint it was made for,
  its columns, and when it was last migrated (the schema version of the table);
- ``hftagg_streams``: topic -> the ``smallint`` stream id used in the rows' key;
- ``hftagg_offsets``: per stream, the next stream offset the database does not hold yet;
  committed in the same transaction as the rows.

Upgrades are additive: a record schema's new version may add fields (``ALTER TABLE ... ADD
COLUMN ... NOT NULL DEFAULT 0``: old rows read as 0) and widen integer types (``ALTER COLUMN
... TYPE``); anything else (a column removed or a type narrowed) is refused with the table,
column and both versions named, since silently dropping data is not a migration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from hftagg.builtins.storage.postgres.layout import TableLayout
from hftagg.errors import ConfigError

__all__ = ["DAY_NS", "MigrationReport", "Partitions", "migrate_table", "timescale_available"]

DAY_NS = 86_400 * 1_000_000_000
_WIDER = {("smallint", "integer"), ("smallint", "bigint"), ("integer", "bigint"),
          ("real", "double precision")}  # fmt: skip


@dataclass
class MigrationReport:
    """What ``migrate_table`` did to one table (for ``hftagg store migrate`` to print)."""

    table: str
    action: str  # "created", "upgraded", "unchanged"
    partitioning: str  # "timescaledb", "native"
    details: list[str]


def _ident(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def ensure_bookkeeping(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, record_schema text NOT "
            "NULL, schema_version int NOT NULL, fingerprint bigint NOT NULL, columns jsonb NOT "
            "NULL, partitioning text NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())"
        ).format(_ident(schema, "hftagg_tables"))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (stream smallint PRIMARY KEY, topic text UNIQUE NOT "
            "NULL)"
        ).format(_ident(schema, "hftagg_streams"))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (stream smallint PRIMARY KEY, next_offset bigint NOT "
            "NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(_ident(schema, "hftagg_offsets"))
    )


def stream_id(conn: psycopg.Connection, schema: str, topic: str) -> int:
    """The stream id of ``topic`` (assigned on first use)."""
    table = _ident(schema, "hftagg_streams")
    row = conn.execute(sql.SQL("SELECT stream FROM {} WHERE topic = %s").format(table), [topic])
    found = row.fetchone()
    if found:
        return int(found[0])
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT coalesce(max(stream), 0) + 1, %s FROM {} "
            "ON CONFLICT (topic) DO NOTHING"
        ).format(table, table),
        [topic],
    )
    return int(
        conn.execute(
            sql.SQL("SELECT stream FROM {} WHERE topic = %s").format(table), [topic]
        ).fetchone()[0]
    )


def timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return row.fetchone() is not None


def migrate_table(
    conn: psycopg.Connection, schema: str, table: str, layout: TableLayout, timescale: str = "auto"
) -> MigrationReport:
    """Create ``schema.table`` for ``layout`` or bring it up to it (in the caller's
    transaction). ``timescale``: ``auto`` (when available), ``on`` (required) or ``off``."""
    ensure_bookkeeping(conn, schema)
    known = conn.execute(
        sql.SQL(
            "SELECT record_schema, schema_version, columns, partitioning FROM {} "
            "WHERE table_name = %s"
        ).format(_ident(schema, "hftagg_tables")),
        [table],
    ).fetchone()
    exists = conn.execute("SELECT to_regclass(%s)", [f'"{schema}"."{table}"']).fetchone()[0]
    if known is None and exists is None:
        report = _create(conn, schema, table, layout, timescale)
    elif known is None:
        raise ConfigError(
            f"PostgreSQL table {schema}.{table} exists but hftagg did not create it (no row in "
            f"{schema}.hftagg_tables): store topic into another table (the sink's `tables` "
            f"parameter) or drop it"
        )
    else:
        report = _upgrade(conn, schema, table, layout, known)
    _create_view(conn, schema, table, layout)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, record_schema, schema_version, fingerprint, columns, "
            "partitioning) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE "
            "SET record_schema = excluded.record_schema, schema_version = "
            "excluded.schema_version, fingerprint = excluded.fingerprint, columns = "
            "excluded.columns, migrated_at = now()"
        ).format(_ident(schema, "hftagg_tables")),
        [
            table,
            layout.schema.name,
            layout.schema.version,
            int(np.int64(np.uint32(layout.schema.schema_id))),
            json.dumps([[c.name, c.sql] for c in layout.columns]),
            report.partitioning,
        ],
    )
    return report


def _create(conn, schema, table, layout, timescale) -> MigrationReport:
    use_ts = timescale == "on" or (timescale == "auto" and timescale_available(conn))
    if timescale == "on" and not timescale_available(conn):
        raise ConfigError(
            "timescale = 'on' but the timescaledb extension is not available on this server: "
            "install it, or set timescale = 'auto' for native partitioning"
        )
    cols = sql.SQL(", ").join(
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(c.name), sql.SQL(c.sql))
        for c in layout.columns
    )
    ident = _ident(schema, table)
    if use_ts:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, cols))
        conn.execute(
            "SELECT create_hypertable(%s, 'ts_event', chunk_time_interval => %s)",
            [f'"{schema}"."{table}"', DAY_NS],
        )
    else:
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE (ts_event)").format(ident, cols)
        )
    conn.execute(
        sql.SQL("CREATE INDEX {} ON {} (instrument_id, ts_event)").format(
            sql.Identifier(f"{table}_instrument_time"), ident
        )
    )
    return MigrationReport(
        table,
        "created",
        "timescaledb" if use_ts else "native",
        [f"{len(layout.columns)} columns for {layout.schema.key}"],
    )


def _upgrade(conn, schema, table, layout, known) -> MigrationReport:
    record_schema, version, columns, partitioning = known
    have = dict(columns)
    ident = _ident(schema, table)
    details = []
    for col in layout.columns:
        old = have.get(col.name)
        if old is None:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {} NOT NULL DEFAULT 0").format(
                    ident, sql.Identifier(col.name), sql.SQL(col.sql)
                )
                if col.sql != "bytea"
                else sql.SQL("ALTER TABLE {} ADD COLUMN {} bytea NOT NULL DEFAULT ''").format(
                    ident, sql.Identifier(col.name)
                )
            )
            details.append(f"added column {col.name} {col.sql}")
        elif old != col.sql:
            if (old, col.sql) not in _WIDER:
                raise ConfigError(
                    f"PostgreSQL table {schema}.{table}: column {col.name} is {old} (for "
                    f"{record_schema}@{version}) and {layout.schema.key} needs {col.sql}; only "
                    f"additions and widenings migrate: store the new version in a new table"
                )
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                    ident, sql.Identifier(col.name), sql.SQL(col.sql)
                )
            )
            details.append(f"widened column {col.name} {old} -> {col.sql}")
    dropped = set(have) - set(layout.column_names)
    if dropped:
        raise ConfigError(
            f"PostgreSQL table {schema}.{table} has columns {sorted(dropped)} that "
            f"{layout.schema.key} no longer has; store the new version in a new table"
        )
    if record_schema != layout.schema.name:
        raise ConfigError(
            f"PostgreSQL table {schema}.{table} holds {record_schema} records, not "
            f"{layout.schema.name}: map the topic to another table"
        )
    action = "upgraded" if details else "unchanged"
    if details:
        details.insert(0, f"{record_schema}@{version} -> {layout.schema.key}")
    return MigrationReport(table, action, partitioning, details)


def _create_view(conn, schema, table, layout) -> None:
    exprs = sql.SQL(", ").join(sql.SQL(c.view_expr) for c in layout.columns)
    view = _ident(schema, f"{table}_v")
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(
        sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(view, exprs, _ident(schema, table))
    )


def _day(yyyymmdd: str) -> int:
    """Days since the epoch of a partition suffix ``YYYYMMDD``."""
    iso = f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}"
    return int(np.datetime64(iso, "D").astype(np.int64))


class Partitions:
    """Daily range partitions of one natively partitioned table, made ahead as data arrives."""

    def __init__(self, conn: psycopg.Connection, schema: str, table: str) -> None:
        self.schema, self.table = schema, table
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [f'"{schema}"."{table}"'],
        ).fetchall()
        prefix = f"{table}_p"
        self.days = {_day(r[0][len(prefix) :]) for r in rows if r[0].startswith(prefix)}

    def name(self, day: int) -> str:
        """The partition holding day ``day`` (days since the epoch, UTC)."""
        return f"{self.table}_p{np.datetime64(day, 'D').astype(str).replace('-', '')}"

    def ensure(self, conn: psycopg.Connection, first_day: int, last_day: int) -> int:
        """Create the partitions of days ``first_day..last_day`` and of the day after (made
        ahead: it exists before its data comes); returns how many were made."""
        made = 0
        for day in range(first_day, last_day + 2):
            if day in self.days:
                continue
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    _ident(self.schema, self.name(day)),
                    _ident(self.schema, self.table),
                    sql.Literal(day * DAY_NS),
                    sql.Literal((day + 1) * DAY_NS),
                )
            )
            self.days.add(day)
            made += 1
        return made
