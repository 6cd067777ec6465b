"""The ``postgres`` sink: topics into PostgreSQL tables with binary COPY, through outages.

::

    [stages.pg]
    type = "postgres"
    dsn_env = "HFTAGG_PG_DSN"       # the variable holding the DSN (secrets only from the env)
    topics = ["md.trades", "md.quotes"]
    tables = { "md.trades" = "trades" }   # default: the topic with dots as underscores
    schema = "public"

Each batch is one transaction: the partitions its days need (native partitioning), one binary
``COPY`` of the rows built in bulk by ``layout.TableLayout``, and the stream's next offset in
``hftagg_offsets``. Retries, the memory budget, the spill and the offset bookkeeping come from
``ExternalSink`` (``hftagg.builtins.storage._external``). The tables are created or upgraded at
connect (``auto_migrate``, default on) exactly as ``hftagg store migrate`` does.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import psycopg
from psycopg import sql

from hftagg.builtins.storage._external import ExternalParams, ExternalSink
from hftagg.builtins.storage.postgres.ddl import DAY_NS, Partitions, migrate_table, stream_id
from hftagg.builtins.storage.postgres.layout import COPY_HEADER, COPY_TRAILER, TableLayout
from hftagg.errors import ConfigError
from hftagg.stages import StageContext, restart

__all__ = ["PostgresParams", "PostgresSink", "default_table", "dsn_from_env"]


# ``schema`` (the parameter users know from PostgreSQL) shadows pydantic's deprecated
# BaseModel.schema(); nothing here calls that, so the warning is silenced for this class only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class PostgresParams(ExternalParams):
        dsn_env: str = restart(
            "HFTAGG_PG_DSN",
            min_length=1,
            description="environment variable holding the PostgreSQL DSN (never the DSN itself)",
        )
        tables: dict[str, str] = restart(
            {}, description="topic -> table name (default: the topic with '.' as '_')"
        )
        schema: str = restart("public", min_length=1, description="PostgreSQL schema of the tables")
        timescale: Literal["auto", "on", "off"] = restart(
            "auto", description="hypertables: when available (auto), required (on), never (off)"
        )
        auto_migrate: bool = restart(True, description="create/upgrade the tables at connect")
        connect_timeout_secs: float = restart(
            5.0,
            ge=0,
            le=600,
            description="at start, wait this long for the backend before running on",
        )


def default_table(topic: str) -> str:
    return topic.replace(".", "_").replace("-", "_")


def dsn_from_env(var: str, what: str = "postgres sink") -> str:
    dsn = os.environ.get(var)
    if not dsn:
        raise ConfigError(
            f"{what}: environment variable {var} is not set; put the PostgreSQL DSN in it "
            f"(export {var}=postgresql://user@host/db), or name another one with dsn_env"
        )
    return dsn


class PostgresSink(ExternalSink):
    type_name = "postgres"
    Params = PostgresParams

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        problems = []
        if not os.environ.get(self.params.dsn_env):
            problems.append(
                (
                    "dsn_env",
                    f"environment variable {self.params.dsn_env} is not set; export it with "
                    f"the PostgreSQL DSN",
                )
            )
        unknown = set(self.params.tables) - set(self.params.topics)
        if unknown:
            problems.append(("tables", f"{sorted(unknown)} are not in topics"))
        return problems

    def open(self, ctx: StageContext) -> None:
        self.dsn = dsn_from_env(self.params.dsn_env, f"stage {self.stage_id!r}")
        self.layouts = {
            port: TableLayout(ctx.topic_schemas[topic]) for port, topic in self.input_topics.items()
        }
        self.table_names = {
            port: self.params.tables.get(topic, default_table(topic))
            for port, topic in self.input_topics.items()
        }
        self._conn: psycopg.Connection | None = None
        super().open(ctx)

    def retryable(self, exc: BaseException) -> bool:
        """The server away (connection refused or cut, shutting down) is retried; a refusal
        of the data or the statement is not."""
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
            return True
        return isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow)

    def backend_name(self) -> str:
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "PostgreSQL"
        return f"PostgreSQL {info.get('user', '')}@{info.get('host', '')}/{info.get('dbname', '')}"

    # -- writer thread ---------------------------------------------------------------------------

    def connect(self) -> dict[str, int]:
        conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=5)
        p = self.params
        try:
            self._streams: dict[str, int] = {}
            self._partitions: dict[str, Partitions | None] = {}
            with conn.transaction():
                for port, topic in self.input_topics.items():
                    table = self.table_names[port]
                    if p.auto_migrate:
                        report = migrate_table(
                            conn, p.schema, table, self.layouts[port], p.timescale
                        )
                        native = report.partitioning == "native"
                    else:
                        native = True
                    self._streams[topic] = stream_id(conn, p.schema, topic)
                    self._partitions[port] = Partitions(conn, p.schema, table) if native else None
            held = {}
            rows = conn.execute(
                sql.SQL("SELECT s.topic, o.next_offset FROM {}.hftagg_offsets o JOIN "
                        "{}.hftagg_streams s USING (stream)").format(
                    sql.Identifier(p.schema), sql.Identifier(p.schema)
                )
            ).fetchall()  # fmt: skip
            conn.commit()
            for topic, next_offset in rows:
                held[topic] = int(next_offset)
        except BaseException:
            conn.close()
            raise
        self._copy_cache: dict[tuple[str, str], sql.Composed] = {}
        self._offset_sql = sql.SQL(
            "INSERT INTO {}.hftagg_offsets (stream, next_offset) VALUES (%s, %s) "
            "ON CONFLICT (stream) DO UPDATE SET next_offset = excluded.next_offset, "
            "updated_at = now()"
        ).format(sql.Identifier(p.schema))
        self._conn = conn
        return held

    def send(self, port: str, records: np.ndarray, offset: int) -> None:
        """One transaction: the partitions the batch's days need, one binary COPY (straight
        into the day's partition when the batch is within one day: no per-row routing), and
        the stream's next offset."""
        conn = self._conn
        stream = self._streams[self.input_topics[port]]
        rows = self.layouts[port].encode(records, stream, offset)
        target = self.table_names[port]
        with conn.transaction():
            partitions = self._partitions[port]
            if partitions is not None:
                ts = records["ts_event"]
                first, last = int(ts.min()) // DAY_NS, int(ts.max()) // DAY_NS
                partitions.ensure(conn, first, last)
                if first == last:
                    target = partitions.name(first)
            with conn.cursor() as cur:
                with cur.copy(self._copy_sql(port, target)) as copy:
                    copy.write(COPY_HEADER)
                    copy.write(memoryview(rows.view(np.uint8)))
                    copy.write(COPY_TRAILER)
                cur.execute(self._offset_sql, [stream, offset + len(records)])

    def _copy_sql(self, port: str, table: str) -> sql.Composed:
        key = (port, table)
        statement = self._copy_cache.get(key)
        if statement is None:
            statement = self._copy_cache[key] = sql.SQL(
                "COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)"
            ).format(
                sql.Identifier(self.params.schema),
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Identifier(c) for c in self.layouts[port].column_names),
            )
        return statement

    def cancel(self) -> None:
        """Cancel the COPY in progress (PostgreSQL's cancel request, on its own connection)."""
        conn = self._conn
        if conn is not None:
            conn.cancel_safe(timeout=2.0)

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
