"""``hftagg store migrate``: create or upgrade the PostgreSQL tables of the config's ``postgres``
stages (what each sink also does when it connects, with ``auto_migrate`` on).

For every ``postgres`` stage and topic: the table (from the topic's record schema), its daily
partitioning or TimescaleDB hypertable, the ``(instrument_id, ts_event)`` index, the ``<table>_v``
view, and the schema version in ``hftagg_tables``; a newer record schema version that adds fields
becomes ``ALTER TABLE ... ADD COLUMN``. The DSN comes from the environment variable the stage
names (``dsn_env``), or from ``--dsn-env VAR`` for every stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

from hftagg.cli.common import add_config_option, config_path
from hftagg.errors import ConfigError, HftaggError

__all__ = ["add_migrate", "cmd_migrate"]


def _postgres_stages(raw: dict) -> dict[str, dict]:
    stages = raw.get("stages") or {}
    return {
        sid: spec
        for sid, spec in stages.items()
        if isinstance(spec, dict) and spec.get("type") == "postgres"
    }


def cmd_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from hftagg.builtins.storage.postgres.ddl import migrate_table
    from hftagg.builtins.storage.postgres.layout import TableLayout
    from hftagg.builtins.storage.postgres.sink import default_table, dsn_from_env
    from hftagg.runtime.assemble import assemble

    path = config_path(args.config)
    if path is None or not path.is_file():
        print(
            f"hftagg: no config at {args.config or './config.toml'}: give -c FILE", file=sys.stderr
        )
        return 1
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    if not _postgres_stages(raw):
        print(
            f"hftagg: {path} has no stage of type 'postgres': nothing to migrate", file=sys.stderr
        )
        return 1
    if args.dsn_env:
        dsn = dsn_from_env(args.dsn_env, "hftagg store migrate --dsn-env")
        for spec in _postgres_stages(raw).values():  # this process only: the stages' variables
            os.environ[spec.get("dsn_env", "HFTAGG_PG_DSN")] = dsn
    graph = assemble(path).graph
    failed = 0
    for node in graph.sinks:
        stage = node.stage
        if stage.type_name != "postgres":
            continue
        p = stage.params
        dsn = dsn_from_env(p.dsn_env, f"stage {node.id!r}")
        try:
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                for topic in node.inputs.values():
                    table = p.tables.get(topic, default_table(topic))
                    layout = TableLayout(graph.topics[topic])
                    with conn.transaction():
                        report = migrate_table(conn, p.schema, table, layout, p.timescale)
                    extra = f": {'; '.join(report.details)}" if report.details else ""
                    print(
                        f"{node.id}: {p.schema}.{table} ({topic}) {report.action}, "
                        f"{report.partitioning} partitioning{extra}"
                    )
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(
                f"hftagg: stage {node.id!r}: cannot reach PostgreSQL ({first}); check the DSN in "
                f"${p.dsn_env} and that the server is running",
                file=sys.stderr,
            )
            failed += 1
        except (ConfigError, HftaggError, psycopg.Error) as exc:
            print(f"hftagg: stage {node.id!r}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def add_migrate(commands) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the PostgreSQL tables of the config's postgres stages",
        description="Create or upgrade the tables of every 'postgres' stage in the config: "
        "partitioning (TimescaleDB when available), index, view, schema version. Adding fields "
        "to a record schema becomes ALTER TABLE ADD COLUMN. The DSN is read from the stage's "
        "dsn_env variable, or from --dsn-env.",
    )
    add_config_option(migrate, "whose postgres stages to migrate; default: ./config.toml")
    migrate.add_argument(
        "--dsn-env",
        metavar="VAR",
        help="environment variable holding the DSN, for every stage (default: each stage's "
        "dsn_env)",
    )
    migrate.set_defaults(func=cmd_migrate)
